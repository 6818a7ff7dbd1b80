"""Finding an object by its ``module:qualname`` name, and the errors that name what is missing."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from flowkit import _imports
from flowkit.decorators import as_task
from flowkit.engines.helpers import factory_name


class Outer:
    """A class whose nested attribute is looked up by a dotted qualified name."""

    class Inner:
        value = 42


@as_task
def doubled(x: int) -> int:
    return 2 * x


def test_a_dotted_qualified_name_is_followed() -> None:
    assert _imports.resolve("tests.test_imports:Outer.Inner.value") == 42
    assert _imports.resolve("tests.test_imports:Outer") is Outer


@pytest.mark.parametrize("spec", ["no_colon", ":name", "module:", ""])
def test_a_name_without_both_parts_is_a_value_error(spec: str) -> None:
    with pytest.raises(ValueError, match="is not a 'module:qualname' name"):
        _imports.resolve(spec)


@pytest.mark.parametrize(
    "spec,missing,reason",
    [
        ("tests.test_imports:Nope", "Nope", "module 'tests.test_imports' has no attribute 'Nope'"),
        ("tests.test_imports:Outer.Inner.nope", "nope", "'tests.test_imports:Outer.Inner' has no attribute 'nope'"),
        (
            "tests.no_such_module:f",
            "tests.no_such_module",
            "ModuleNotFoundError: No module named 'tests.no_such_module'",
        ),
    ],
)
def test_the_error_names_the_spec_and_the_missing_part(spec: str, missing: str, reason: str) -> None:
    with pytest.raises(_imports.ResolveError) as caught:
        _imports.resolve(spec)
    assert (caught.value.spec, caught.value.missing, caught.value.reason) == (spec, missing, reason)
    assert str(caught.value) == "cannot import %r: %s" % (spec, reason)
    # An ImportError, as ``from module import name`` raises for a missing name.
    assert isinstance(caught.value, ImportError)


def test_an_error_inside_the_module_is_not_a_wrong_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "flowkit_broken_module.py").write_text("raise RuntimeError('broken at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RuntimeError, match="broken at import"):
        _imports.resolve("flowkit_broken_module:anything")


def test_factory_name_says_why_a_factory_cannot_be_found_again() -> None:
    def make() -> None:
        return None

    make.__qualname__ = "not_defined_here"  # looks importable, but the module has no such name
    with pytest.raises(ValueError, match="has no attribute 'not_defined_here'") as caught:
        factory_name(make)
    assert "cannot be imported again as 'tests.test_imports:not_defined_here'" in str(caught.value)


def test_a_decorated_function_task_survives_pickling() -> None:
    # @as_task rebinds the module-level name; pickling finds the function through the factory.
    task = doubled()
    copy = pickle.loads(pickle.dumps(task))
    assert copy.execute(x=4) == 8
