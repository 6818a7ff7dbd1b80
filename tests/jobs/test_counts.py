"""What every board counts: jobs not final, and jobs parked now."""

from __future__ import annotations

from flowkit.jobs.base import JobBoard, JobState


def test_every_board_counts_the_jobs_parked_now(any_board: JobBoard) -> None:
    assert any_board.parked_count == 0
    napping = any_board.post("napping")
    waiting = any_board.post("waiting")
    any_board.post("ready")
    for job, due in ((napping, any_board.clock() + 3600), (waiting, None)):
        claim = any_board.claim(job, "c1")
        any_board.park(job, "c1", due=due, token=claim.token)
    assert (any_board.job_count, any_board.parked_count) == (3, 2)

    # Woken: still parked (unclaimed, not run since) but due now; claimed: not parked any more.
    assert any_board.wake(waiting)
    assert any_board.parked_count == 2
    claim = any_board.claim(waiting, "c2")
    assert any_board.parked_count == 1
    any_board.consume(waiting, "c2", token=claim.token)
    assert waiting.state is JobState.COMPLETE
    assert (any_board.job_count, any_board.parked_count) == (2, 1)
