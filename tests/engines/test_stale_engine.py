"""An engine never runs from a flow detail that another engine changed after it was read.

The flow lock is taken when ``run()`` starts, but an engine reads its flow detail when it
is loaded. Two engines loaded from the same logbook (two operators resuming one flow, a
resume started while a crashed run's lock was still held) must not both run it: the one
that takes the lock second finds the stored atoms changed and refuses, naming the flow,
instead of running again the atoms the first one finished.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flowkit import states
from flowkit.engines import load_from_detail, load_from_factory
from flowkit.exceptions import InvalidState
from flowkit.factories import flow_factory
from flowkit.patterns import linear_flow
from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend
from flowkit.task import Task
from tests.persistence.conftest import postgres_url, sql_backend_factory, unique_prefix  # noqa: F401  (fixtures)


class Counted(Task):
    """Appends its name to the ``journal`` file each time it executes."""

    def execute(self, journal: str) -> str:
        with open(journal, "a") as out:
            out.write(self.name + "\n")
        return self.name


@flow_factory
def counted_chain() -> Any:
    """a -> b -> c, each recording its executions."""
    return linear_flow.Flow("counted").add(Counted("a"), Counted("b"), Counted("c"))


def executions(journal: Path) -> list[str]:
    return journal.read_text().split() if journal.exists() else []


@pytest.fixture(params=["sqlite", "postgresql"])
def open_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], SQLAlchemyBackend]:
    """``open()``: a new backend object (as in another process) on the same logbook."""
    make: Callable[..., SQLAlchemyBackend] = request.getfixturevalue("sql_backend_factory")
    if request.param == "sqlite":
        url = "sqlite:///%s" % (tmp_path / "flows.db")
    else:
        request.applymarker(pytest.mark.postgres)
        url = request.getfixturevalue("postgres_url")
    prefix = unique_prefix()
    return lambda: make(url, table_prefix=prefix)


def test_an_engine_loaded_before_another_ran_the_flow_refuses_to_run_it_again(
    open_backend: Callable[[], SQLAlchemyBackend], tmp_path: Path, engine_options: dict[str, Any]
) -> None:
    journal = tmp_path / "journal.txt"
    first = load_from_factory(counted_chain, store={"journal": str(journal)}, backend=open_backend())
    first.prepare()  # the atom details are stored; nothing has run
    uuid = first.flow_detail.uuid

    def load() -> Any:
        backend = open_backend()
        with backend.get_connection() as conn:
            flow_detail = conn.get_flow_details(uuid)
        return load_from_detail(flow_detail, backend=backend, **engine_options)

    one, other = load(), load()  # both read the logbook before either runs
    one.run()
    assert executions(journal) == ["a", "b", "c"]

    with pytest.raises(InvalidState, match=r"flow 'counted' \(flow detail %s\) was changed in the logbook" % uuid):
        other.run()
    assert executions(journal) == ["a", "b", "c"]  # nothing ran twice
    assert other.storage.get_flow_state() != states.RUNNING

    # Loaded again, it sees what is stored: the flow is done.
    again = load()
    assert again.storage.get_flow_state() == states.SUCCESS
