"""Failure: an exception captured as a value that survives pickling and storage."""

from __future__ import annotations

import json
import pickle

import pytest

import flowkit
from flowkit import exceptions
from flowkit.types.failure import Failure


class AppError(Exception):
    """A user exception type defined at module level (so it pickles)."""


class DerivedAppError(AppError):
    pass


class Unpicklable(Exception):
    """An exception whose arguments cannot be pickled."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.callback = lambda: None


def capture(exc: BaseException) -> Failure:
    """A failure captured the usual way: inside the except block of a raise."""
    try:
        raise exc
    except BaseException:
        return Failure()


def raise_from_helper() -> None:
    raise AppError("deep inside")


def test_failure_is_exported_at_top_level() -> None:
    assert flowkit.Failure is Failure


def test_failure_captures_current_exception() -> None:
    failure = capture(AppError("it broke"))
    assert isinstance(failure.exception, AppError)
    assert failure.exception_str == "it broke"


def test_failure_outside_except_block_is_an_error() -> None:
    with pytest.raises(Exception):
        Failure()


def test_from_exception() -> None:
    error = KeyError("missing")
    failure = Failure.from_exception(error)
    assert failure.exception is error
    assert failure.exception_str == str(error)
    assert failure.check(KeyError) is KeyError


def test_traceback_str_names_where_it_was_raised() -> None:
    try:
        raise_from_helper()
    except AppError:
        failure = Failure()
    assert "raise_from_helper" in failure.traceback_str
    assert failure.exception_str == "deep inside"


def test_check_by_type_and_by_name() -> None:
    failure = capture(DerivedAppError("x"))
    assert failure.check(DerivedAppError) is DerivedAppError
    # base classes match too, and the first match is returned
    assert failure.check(KeyError, AppError) is AppError
    assert failure.check(Exception) is Exception
    assert failure.check("DerivedAppError") == "DerivedAppError"
    assert failure.check("AppError") == "AppError"
    assert failure.check(KeyError, ValueError) is None
    assert failure.check("KeyError") is None


def test_exc_type_names_most_specific_first() -> None:
    failure = capture(DerivedAppError("x"))
    short = [name.rsplit(".", 1)[-1] for name in failure.exc_type_names]
    assert short[0] == "DerivedAppError"
    assert short.index("AppError") < short.index("Exception")


def test_to_dict_is_json_and_round_trips() -> None:
    failure = capture(AppError("stored"))
    data = failure.to_dict()
    data = json.loads(json.dumps(data))  # storable as JSON
    rebuilt = Failure.from_dict(data)
    assert rebuilt.exception_str == "stored"
    assert rebuilt.traceback_str == failure.traceback_str
    assert tuple(rebuilt.exc_type_names) == tuple(failure.exc_type_names)
    assert rebuilt.to_dict() == failure.to_dict()
    assert rebuilt == Failure.from_dict(data)
    assert rebuilt == failure


def test_check_works_without_the_exception_object() -> None:
    rebuilt = Failure.from_dict(capture(DerivedAppError("x")).to_dict())
    # the object may be gone, the type information is not
    assert rebuilt.check(AppError) is AppError
    assert rebuilt.check(Exception) is Exception
    assert rebuilt.check("DerivedAppError") == "DerivedAppError"
    assert rebuilt.check(ValueError) is None


def test_failures_differ_by_message_and_type() -> None:
    assert capture(AppError("a")) != capture(AppError("b"))
    first = Failure.from_dict(capture(AppError("a")).to_dict())
    data = first.to_dict()
    data["exc_type_names"] = ["builtins.KeyError", "builtins.LookupError", "builtins.Exception"]
    assert Failure.from_dict(data) != first
    assert first != "not a failure"


def test_pickle_round_trip_keeps_everything() -> None:
    failure = capture(AppError("pickled"))
    restored = pickle.loads(pickle.dumps(failure))
    assert restored.exception_str == "pickled"
    assert restored.traceback_str == failure.traceback_str
    assert tuple(restored.exc_type_names) == tuple(failure.exc_type_names)
    assert restored.check(AppError) is AppError
    assert restored == failure
    # the exception object survives when it pickles
    assert isinstance(restored.exception, AppError)


def test_pickle_with_an_unpicklable_exception_keeps_the_description() -> None:
    failure = capture(Unpicklable("holds a lambda"))
    restored = pickle.loads(pickle.dumps(failure))
    assert restored.exception_str == "holds a lambda"
    assert restored.check(Unpicklable) is Unpicklable


def test_reraise_raises_the_original_exception() -> None:
    failure = capture(AppError("again"))
    with pytest.raises(AppError, match="again") as info:
        failure.reraise()
    assert info.value is failure.exception


def test_reraise_without_the_exception_object() -> None:
    rebuilt = Failure.from_dict(capture(AppError("gone")).to_dict())
    # TaskFlow raises a WrappedFailure holding the failure when the object is gone
    with pytest.raises(exceptions.WrappedFailure) as info:
        rebuilt.reraise()
    assert len(info.value) == 1
    assert info.value.check(AppError) is AppError
    assert list(info.value)[0].exception_str == "gone"


def test_wrapped_failure_is_iterable_and_checkable() -> None:
    first = capture(AppError("one"))
    second = capture(KeyError("two"))
    wrapped = exceptions.WrappedFailure([first, second])
    assert isinstance(wrapped, exceptions.FlowkitError)
    assert len(wrapped) == 2
    assert list(wrapped) == [first, second]
    assert wrapped.check(KeyError) is KeyError
    assert wrapped.check(ValueError, AppError) is AppError
    assert wrapped.check(ValueError) is None
