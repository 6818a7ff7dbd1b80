"""Porting tests: each body is TaskFlow code with the package renamed, run on flowkit and on TaskFlow.

The ``package`` fixture is the top-level package the test imports from: ``"flowkit"``, and
``"taskflow"`` where TaskFlow is installed (the ``bench`` extra), which proves that what the
test expects is what TaskFlow really does.
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings

import pytest


@pytest.fixture(params=["flowkit", "taskflow"])
def package(request: pytest.FixtureRequest) -> str:
    """The package under test: ``flowkit``, or ``taskflow`` (skipped when it is not installed)."""
    if request.param == "taskflow" and importlib.util.find_spec("taskflow") is None:
        pytest.skip("TaskFlow is not installed (pip install -e '.[bench]')")
    if request.param == "taskflow":
        # TaskFlow's engines import oslo_utils.eventletutils, deprecated: TaskFlow's warning, not ours.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            importlib.import_module("taskflow.engines")
            importlib.import_module("taskflow.engines.action_engine.engine")
    return str(request.param)
