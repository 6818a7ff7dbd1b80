"""Shares the allowed prefix's first characters, not its dotted components: never imported."""

from __future__ import annotations

from typing import Any

IMPORTED = True


def make_pair() -> Any:
    raise AssertionError("tests.factory_modules.allowed_evil must never be imported through an allowlist")
