"""``flowkit.listeners.claims.CheckingClaimListener``: an engine stops once its job's claim is gone.

TaskFlow's boards need ZooKeeper or Redis, so these run on flowkit's memory
board only; the listener's behaviour is TaskFlow's (suspend by default, or
call ``on_job_loss(engine, state, details)``).
"""

from __future__ import annotations

from typing import Any

import pytest

from flowkit import states
from flowkit.jobs.backends import impl_memory
from flowkit.listeners.claims import CheckingClaimListener
from flowkit.patterns import linear_flow
from flowkit.task import Task


class _Step(Task):
    def execute(self) -> str:
        return self.name


# The tasks below hand the job of an in-process memory board back: they run where the board is
# (serial and parallel modes), not on a Dask worker.
class _GiveUp(Task):
    """Gives the job back in the middle of the flow: the claim is lost from here on."""

    def __init__(self, name: str, board: Any, job: Any) -> None:
        super().__init__(name=name)
        self.board = board
        self.job = job

    def execute(self) -> str:
        self.board.abandon(self.job, "worker-1")
        return self.name


def _claimed(board: Any) -> Any:
    job = board.post("porting-job")
    board.claim(job, "worker-1")
    return job


@pytest.mark.modes("serial", "parallel")
def test_an_engine_whose_claim_is_lost_is_suspended(load: Any) -> None:
    board = impl_memory.MemoryJobBoard("porting")
    job = _claimed(board)
    flow = linear_flow.Flow("claimed").add(_Step("first"), _GiveUp("give-up", board, job), _Step("last"))
    engine = load(flow)
    with CheckingClaimListener(engine, job, board, "worker-1"):
        engine.run()
    assert engine.storage.get_flow_state() == states.SUSPENDED
    assert engine.storage.get_atom_state("give-up") == states.SUCCESS
    assert engine.storage.get_atom_state("last") == states.PENDING


@pytest.mark.modes("serial", "parallel")
def test_a_held_claim_lets_the_flow_finish(load: Any) -> None:
    board = impl_memory.MemoryJobBoard("porting")
    job = _claimed(board)
    engine = load(linear_flow.Flow("claimed").add(_Step("first"), _Step("last")))
    with CheckingClaimListener(engine, job, board, "worker-1"):
        engine.run()
    assert engine.storage.get_flow_state() == states.SUCCESS


@pytest.mark.modes("serial", "parallel")
def test_on_job_loss_is_called_with_the_engine_state_and_details(load: Any) -> None:
    board = impl_memory.MemoryJobBoard("porting")
    job = _claimed(board)
    losses: list[tuple[Any, Any, str]] = []
    flow = linear_flow.Flow("claimed").add(_GiveUp("give-up", board, job), _Step("last"))
    engine = load(flow)
    with CheckingClaimListener(
        engine, job, board, "worker-1", on_job_loss=lambda e, state, details: losses.append((e, state, details))
    ):
        engine.run()
    # Not suspended: the handler decides, here only recording each event seen after the loss.
    assert engine.storage.get_flow_state() == states.SUCCESS
    assert losses and all(seen is engine for seen, _, _ in losses)
    assert (states.SUCCESS, "give-up") in [(state, details.get("task_name")) for _, state, details in losses]


def test_on_job_loss_must_be_callable() -> None:
    from flowkit import engines

    board = impl_memory.MemoryJobBoard("porting")
    job = _claimed(board)
    engine = engines.load(linear_flow.Flow("claimed").add(_Step("first")))
    with pytest.raises(ValueError, match="on_job_loss must be callable"):
        CheckingClaimListener(engine, job, board, "worker-1", on_job_loss="suspend")  # type: ignore[arg-type]
