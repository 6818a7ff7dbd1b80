"""The porting suite: each test is written as TaskFlow code, with only the package renamed.

``package`` is ``"flowkit"`` and, where TaskFlow is installed (the ``bench``
extra), ``"taskflow"``: the same test body then proves the expectation is
TaskFlow's real behaviour.
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings

import pytest

PACKAGES = ("flowkit", "taskflow")


@pytest.fixture(params=PACKAGES)
def package(request: pytest.FixtureRequest) -> str:
    """The package the test imports from: ``flowkit``, or ``taskflow`` when installed."""
    if request.param == "taskflow" and importlib.util.find_spec("taskflow") is None:
        pytest.skip("TaskFlow is not installed (pip install flowkit[bench])")
    if request.param == "taskflow":
        # TaskFlow's engines import futurist's deprecated eventlet helpers (and eventlet
        # itself where it is installed): import them once with their warnings silenced
        # (the suite makes warnings errors).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importlib.import_module("taskflow.engines")
    return request.param
