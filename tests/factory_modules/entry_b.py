"""An entry point whose name is registered already: must not be loaded."""

from __future__ import annotations

from typing import Any


def make_other() -> Any:
    raise AssertionError("tests.factory_modules.entry_b must not be loaded")
