"""Fixtures shared with the conductor tests: conductor processes (killed at the end if still alive)."""

from tests.conductors.conftest import conductors  # noqa: F401 (a fixture, used by name)
