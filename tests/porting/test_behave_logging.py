"""Each public module that logs has a module-level LOG that user code configures or patches."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import pkgutil
from unittest import mock

import pytest

import flowkit


def test_a_task_warns_on_task_log_when_its_progress_is_out_of_range(package: str) -> None:
    task = importlib.import_module(package + ".task")

    class Step(task.Task):
        def execute(self) -> None:
            pass

    step = Step("a")
    with mock.patch.object(task, "LOG") as log:
        step.update_progress(0.5)
        assert not log.warning.called
        step.update_progress(1.5)
        assert log.warning.called


def test_task_log_is_a_logger_named_for_its_module(package: str) -> None:
    task = importlib.import_module(package + ".task")
    logger = getattr(task.LOG, "logger", task.LOG)  # TaskFlow's is an adapter around the logger
    assert isinstance(logger, logging.Logger)
    assert logger.name == package + ".task"


def _public_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(flowkit.__path__, "flowkit."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        names.append(info.name)
    return names


@pytest.mark.parametrize("name", _public_modules())
def test_every_public_module_that_logs_has_its_own_log(name: str) -> None:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin is not None
    with open(spec.origin, encoding="utf-8") as source:
        text = source.read()
    if "getLogger(__name__)" not in text:
        return  # it has no logger of its own: it does not log
    try:
        module = importlib.import_module(name)
    except ImportError as error:  # an optional extra (web, redis) that is not installed
        pytest.skip("%s needs an optional dependency: %s" % (name, error))
    log = getattr(module, "LOG", None)
    assert isinstance(log, logging.Logger), "%s logs but has no module-level LOG" % (name,)
    assert log.name == name


def test_the_modules_that_log_include_task_and_signals() -> None:
    from flowkit import signals, task

    assert task.LOG.name == "flowkit.task"
    assert signals.LOG.name == "flowkit.signals"


def test_a_clamped_progress_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    from flowkit import task

    class Step(task.Task):
        def execute(self) -> None:
            pass

    with caplog.at_level(logging.WARNING, logger="flowkit.task"):
        Step("a").update_progress(-2)
    assert caplog.messages == ["task 'a' reported progress -2.0, outside [0.0, 1.0]: clamped to 0.0"]
