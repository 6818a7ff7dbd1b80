"""The ``flowkit`` command: ``logbooks``, ``show`` and ``resume`` against an SQLite logbook."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import flowkit
from flowkit import states
from flowkit.cli import main
from flowkit.engines import load_from_factory
from flowkit.factories import flow_factory
from flowkit.patterns import linear_flow
from flowkit.persistence.backends import fetch
from flowkit.task import Task
from tests.support import run_flowkit


class Record(Task):
    """Return ``[*trail, name]``."""

    def execute(self, trail: list[str]) -> list[str]:
        return [*trail, self.name]


class Decline(Task):
    """Always fail, like a card that is declined."""

    def execute(self) -> None:
        raise RuntimeError("card declined")


@flow_factory
def make_order(fail: bool = False) -> Any:
    """reserve -> charge -> ship (-> decline when ``fail``)."""
    flow = linear_flow.Flow("order").add(
        Record(name="reserve", provides="reserved", rebind={"trail": "start"}),
        Record(name="charge", provides="charged", rebind={"trail": "reserved"}),
        Record(name="ship", provides="shipped", rebind={"trail": "charged"}),
    )
    if fail:
        flow.add(Decline(name="decline"))
    return flow


def make_flow(url: str, fail: bool = False, suspend_after: str | None = None) -> str:
    """Run an order flow into ``url`` (suspended after ``suspend_after``); return its uuid."""
    with fetch(url) as backend:
        engine = load_from_factory(make_order, factory_kwargs={"fail": fail}, store={"start": []}, backend=backend)

        def suspend(state: Any, details: dict[str, Any]) -> None:
            if details["atom_name"] == suspend_after and state == states.SUCCESS:
                engine.suspend()

        engine.atom_notifier.register("*", suspend)
        try:
            engine.run()
        except RuntimeError:
            pass
        return engine.flow_detail.uuid


@pytest.fixture
def url(tmp_path: Path) -> str:
    return "sqlite:///%s" % (tmp_path / "cli.db",)


def test_logbooks_lists_flow_details_and_states(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    done = make_flow(url)
    reverted = make_flow(url, fail=True)
    assert main(["logbooks", "--backend", url]) == 0
    out = capsys.readouterr().out
    header, *rows = out.splitlines()
    assert header.split() == ["LOGBOOK", "NAME", "CREATED", "FLOW", "DETAIL", "FLOW", "STATE"]
    assert any(done in row and row.endswith(" SUCCESS") for row in rows)
    assert any(reverted in row and row.endswith(" REVERTED") for row in rows)


def test_logbooks_on_an_empty_backend(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with fetch(url) as backend, backend.get_connection() as conn:
        conn.upgrade()  # a flowkit database with no logbook in it (the command itself creates nothing)
    assert main(["--backend", url, "logbooks"]) == 0
    assert capsys.readouterr().out == "no logbooks\n"


def test_show_prints_an_aligned_table_of_atoms(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    uuid = make_flow(url, fail=True)
    with fetch(url) as backend, backend.get_connection() as conn:
        detail = conn.get_flow_details(uuid)
        ship = detail.find_by_name("ship")
        assert ship is not None
        ship.meta["duration"] = 0.25  # what a timing listener records
        conn.update_atom_details(ship)
        conn.flush()

    assert main(["show", uuid, "--backend", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == [
        "flow detail %s" % uuid,
        "  flow:    order",
        "  state:   REVERTED",
        "  factory: tests.test_cli:make_order",
    ]
    table = lines[5 : lines.index("", 5)]  # a timeline follows the table after a blank line
    header = table[0]
    assert header.split() == ["ATOM", "TYPE", "VERSION", "STATE", "INTENTION", "RESULT", "FAILURE", "DURATION"]
    rows = {line.split()[0]: line for line in table[1:]}
    assert set(rows) == {"reserve", "charge", "ship", "decline"}
    # Aligned: every column starts where its header does.
    for column in ("VERSION", "STATE", "RESULT", "FAILURE"):
        start = header.index(column)
        assert all(row[start - 2 : start] == "  " and row[start] != " " for row in rows.values())
    assert rows["ship"].split()[2:5] == ["1.0", "REVERTED", "REVERT"]  # the version each atom ran with
    assert '["reserve", "charge", "ship"]' in rows["ship"]
    assert rows["ship"].endswith("0.250s")
    assert "RuntimeError: card declined" in rows["decline"]
    assert rows["decline"].split()[3] == "REVERTED"  # a failed task is reverted too


def test_resume_runs_what_is_left(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    uuid = make_flow(url, suspend_after="reserve")
    assert main(["resume", uuid, "--backend", url]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "resuming flow 'order' (%s) from SUSPENDED" % uuid,
        "  charge: SUCCESS",
        "  ship: SUCCESS",
        "flow 'order' (%s): SUCCESS" % uuid,
    ]
    with fetch(url) as backend, backend.get_connection() as conn:
        detail = conn.get_flow_details(uuid)
        assert detail.state == states.SUCCESS
        assert detail.find_by_name("ship").results == ["reserve", "charge", "ship"]  # type: ignore[union-attr]


def test_resume_in_parallel_mode(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    uuid = make_flow(url, suspend_after="charge")
    assert main(["resume", uuid, "--backend", url, "--engine", "parallel", "--max-workers", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "flow 'order' (%s): SUCCESS" % uuid


def test_resume_exits_non_zero_when_the_flow_reverts(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    uuid = make_flow(url, fail=True, suspend_after="charge")
    assert main(["resume", uuid, "--backend", url]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == [
        "  ship: SUCCESS",
        "  decline: FAILURE",
        "  decline: REVERTED",
        "  ship: REVERTED",
        "  charge: REVERTED",
        "  reserve: REVERTED",
        "flow 'order' (%s): REVERTED" % uuid,
        "  failure: RuntimeError: card declined",
    ]


def test_resume_of_a_finished_flow_runs_nothing(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    done = make_flow(url)
    reverted = make_flow(url, fail=True)
    assert main(["resume", done, "--backend", url]) == 0
    assert main(["resume", reverted, "--backend", url]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "flow 'order' (%s) already ended SUCCESS; nothing to resume" % done,
        "flow 'order' (%s) already ended REVERTED; nothing to resume" % reverted,
    ]


def test_unknown_flow_detail_is_a_clear_error(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    make_flow(url)
    assert main(["show", "no-such-uuid", "--backend", url]) == 2
    assert main(["resume", "no-such-uuid", "--backend", url]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["flowkit: no flow detail 'no-such-uuid' in this backend (try 'flowkit flows')"] * 2


def test_a_flow_without_a_factory_cannot_be_resumed(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with fetch(url) as backend:
        engine = flowkit.load(make_order(), store={"start": []}, backend=backend)
        uuid = engine.flow_detail.uuid
    assert main(["resume", uuid, "--backend", url]) == 2
    assert "it has no factory record" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["show"]) == 2
    assert "usage: flowkit" in capsys.readouterr().err


def test_backend_defaults_to_env_then_flowkit_db(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLOWKIT_BACKEND", raising=False)
    uuid = make_flow("sqlite:///flowkit.db")
    assert main(["logbooks"]) == 0
    assert uuid in capsys.readouterr().out

    other = tmp_path / "other.db"
    monkeypatch.setenv("FLOWKIT_BACKEND", "sqlite:///%s" % other)
    assert main(["logbooks"]) == 2
    assert capsys.readouterr().err == "flowkit: no database at %s\n" % (other,)
    assert not other.exists()


def test_the_command_in_a_subprocess(url: str, tmp_path: Path) -> None:
    uuid = make_flow(url, suspend_after="reserve")
    # The child knows make_order because it imports the module that registers it.
    proc = run_flowkit("--backend", url, "resume", uuid, "--import", "tests.test_cli", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "flow 'order' (%s): SUCCESS" % uuid


# --- resume --retry-reverts ------------------------------------------------------------


class Refund(Task):
    """Succeed; the first revert fails (counted in the file ``tally``), as if the bank were down."""

    def execute(self, tally: str) -> str:
        return "charged"

    def revert(self, tally: str, **kwargs: Any) -> None:
        with open(tally, "a+", encoding="utf-8") as handle:
            handle.seek(0)
            before = len(handle.read().splitlines())
            handle.write("refund\n")
        if before == 0:
            raise ConnectionError("bank unreachable")


@flow_factory
def make_refund_order() -> Any:
    """reserve -> charge (first revert fails) -> decline."""
    return linear_flow.Flow("order").add(
        Record(name="reserve", provides="reserved", rebind={"trail": "start"}),
        Refund(name="charge"),
        Decline(name="decline"),
    )


def make_failed_revert(url: str, tally: Path) -> str:
    """Run the refund order into ``url``: it ends FAILURE, its revert of charge failing; return its uuid."""
    with fetch(url) as backend:
        engine = load_from_factory(make_refund_order, store={"start": [], "tally": str(tally)}, backend=backend)
        with pytest.raises(ConnectionError, match="bank unreachable"):
            engine.run()
        assert engine.storage.get_flow_state() == states.FAILURE
        return engine.flow_detail.uuid


def test_resume_of_a_failed_revert_says_how_to_retry_it(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uuid = make_failed_revert(url, tmp_path / "tally")
    assert main(["resume", uuid, "--backend", url]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "flow 'order' (%s) already ended FAILURE; nothing to resume (a revert failed: "
        "'flowkit resume --retry-reverts %s' tries the reverts again)" % (uuid, uuid)
    ]


def test_resume_retry_reverts_in_a_subprocess(url: str, tmp_path: Path) -> None:
    uuid = make_failed_revert(url, tmp_path / "tally")
    proc = run_flowkit("--backend", url, "resume", "--retry-reverts", uuid, "--import", "tests.test_cli", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # REVERTED
    assert proc.stdout.splitlines() == [
        "retrying the failed reverts of flow 'order' (%s)" % uuid,
        "resuming flow 'order' (%s) from REVERTING" % uuid,
        "  charge: REVERTED",
        "  reserve: REVERTED",
        "flow 'order' (%s): REVERTED" % uuid,
        "  failure: WrappedFailure: WrappedFailure(1 failure in flow 'order': atom 'decline': "
        "Failure: builtins.RuntimeError: card declined)",
    ]
    assert (tmp_path / "tally").read_text().splitlines() == ["refund", "refund"]
    with fetch(url) as backend, backend.get_connection() as conn:
        detail = conn.get_flow_details(uuid)
        assert detail.state == states.REVERTED
        assert {ad.name: ad.state for ad in detail} == {
            "reserve": states.REVERTED,
            "charge": states.REVERTED,
            "decline": states.REVERTED,
        }


def test_resume_retry_reverts_of_a_flow_without_a_failed_revert_is_an_error(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    done = make_flow(url)
    assert main(["resume", "--retry-reverts", done, "--backend", url]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "flowkit: flow 'order' (%s) has no failed revert to retry: it is SUCCESS" % done
    ]


# -- flowkit signal -------------------------------------------------------------------------------


def test_signal_stores_a_signal_and_a_repeat_with_its_key_is_a_no_op(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from flowkit import signals

    uuid = make_flow(url)
    assert main(["signal", uuid, "approved", "--value", '{"by": "ann"}', "--key", "t-7", "--backend", url]) == 0
    assert capsys.readouterr().out == "sent signal 'approved' to flow detail %s\n" % uuid
    assert main(["--backend", url, "signal", uuid, "approved", "--value", '{"by": "bob"}', "--key", "t-7"]) == 0
    out = capsys.readouterr().out
    assert out == "signal 'approved' was already sent to flow detail %s with key 't-7'; nothing changed\n" % uuid
    assert main(["signal", uuid, "poked", "--backend", url]) == 0  # no --value: null
    with fetch(url) as backend:
        assert signals.get(backend, uuid) == {"approved": {"by": "ann"}, "poked": None}


def test_signal_sent_already_is_refused_in_one_line(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    uuid = make_flow(url)
    assert main(["signal", uuid, "approved", "--backend", url]) == 0
    capsys.readouterr()
    assert main(["signal", uuid, "approved", "--value", "1", "--key", "k", "--backend", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("flowkit: flow detail %s already got signal 'approved' (sent at " % uuid)
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    "value, shown",
    [("{'by': 'ann'}", "--value is not JSON: Expecting property name"), ("NaN", "--value is not JSON: NaN")],
    ids=["not-json", "nan"],
)
def test_signal_with_a_value_that_is_not_json_exits_2(
    url: str, capsys: pytest.CaptureFixture[str], value: str, shown: str
) -> None:
    from flowkit import signals

    uuid = make_flow(url)
    assert main(["signal", uuid, "approved", "--value", value, "--backend", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flowkit: " + shown) and err.count("\n") == 1
    with fetch(url) as backend:
        assert signals.get(backend, uuid) == {}


def test_signal_to_an_unknown_flow_detail_exits_2(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    make_flow(url)
    assert main(["signal", "no-such-uuid", "approved", "--backend", url]) == 2
    assert capsys.readouterr().err == (
        "flowkit: no flow detail 'no-such-uuid' in this backend (try 'flowkit flows')\n"
    )


def test_signal_with_an_empty_key_exits_2(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    uuid = make_flow(url)
    assert main(["signal", uuid, "approved", "--key", "", "--backend", url]) == 2
    assert "idempotency_key must be None or a non-empty str" in capsys.readouterr().err


def test_signal_from_the_installed_command(url: str, tmp_path: Path) -> None:
    uuid = make_flow(url)
    done = run_flowkit("signal", uuid, "approved", "--value", "[1, 2]", "--backend", url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "sent signal 'approved' to flow detail %s\n" % uuid


class FailUnlessFixed(Task):
    """Fail with RuntimeError until the file at the injected ``fixed`` exists."""

    def execute(self, fixed: str) -> str:
        if not Path(fixed).exists():
            raise RuntimeError("upstream down")
        return "ok"


@flow_factory
def make_fragile(fixed: str) -> Any:
    """reserve -> call (a policy that gives up BROKEN after 2 attempts, no delay)."""
    policy = flowkit.RetryPolicy(max_attempts=2, initial_delay=0, on_exhausted="broken")
    return linear_flow.Flow("fragile").add(
        Record(name="reserve", provides="reserved", rebind={"trail": "start"}),
        FailUnlessFixed(name="call", inject={"fixed": fixed}, retry_policy=policy),
    )


def make_broken(url: str, tmp_path: Path) -> str:
    with fetch(url) as backend:
        engine = load_from_factory(
            make_fragile, factory_kwargs={"fixed": str(tmp_path / "fixed")}, store={"start": []}, backend=backend
        )
        with pytest.raises(flowkit.exceptions.Broken):
            engine.run()
        return engine.flow_detail.uuid


def test_a_broken_flow_is_listed_shown_with_its_attempts_and_retried(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uuid = make_broken(url, tmp_path)
    assert main(["logbooks", "--backend", url]) == 0
    assert "BROKEN" in capsys.readouterr().out
    assert main(["show", uuid, "--backend", url]) == 0
    out = capsys.readouterr().out
    assert "failed attempts (retry policies):" in out
    assert "  call (errors since last success: 2)" in out
    assert out.count("RuntimeError: upstream down") >= 2
    assert [line.split()[:2] for line in out.splitlines() if line.startswith("    attempt")] == [
        ["attempt", "1"],
        ["attempt", "2"],
    ]
    # still broken: retrying runs it again and it breaks again (exit 4)
    assert main(["retry", uuid, "--backend", url]) == 4
    last = capsys.readouterr().out.splitlines()[-2:]
    assert last[0] == "flow 'fragile' (%s): BROKEN" % uuid
    assert last[1].startswith(
        "  failure: Broken: flow 'fragile' is BROKEN: atom 'call' failed 2 times, last with RuntimeError: "
        "upstream down (its retry policy gives up with on_exhausted='broken'); nothing was reverted"
    )
    assert main(["retry", uuid, "nope", "--backend", url]) == 2
    assert "no BROKEN atom 'nope'" in capsys.readouterr().err
    (tmp_path / "fixed").write_text("")
    assert main(["retry", uuid, "call", "--backend", url]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "retrying atom 'call' of flow 'fragile' (%s)" % uuid,
        "  call: SUCCESS",
        "flow 'fragile' (%s): SUCCESS" % uuid,
    ]
    assert main(["revert", uuid, "--backend", url]) == 2
    assert "is SUCCESS, not BROKEN" in capsys.readouterr().err


def test_revert_of_a_broken_flow(url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uuid = make_broken(url, tmp_path)
    assert main(["revert", uuid, "--backend", url]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "reverting flow 'fragile' (%s)" % uuid
    assert out[-2] == "flow 'fragile' (%s): REVERTED" % uuid
    assert out[-1].startswith("  failure: ") and "RuntimeError: upstream down" in out[-1]
    with fetch(url) as backend, backend.get_connection() as conn:
        assert conn.get_flow_details(uuid).find_by_name("reserve").state == states.REVERTED  # type: ignore[union-attr]


def test_cancel_of_a_suspended_flow_reverts_it_when_resumed(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    uuid = make_flow(url, suspend_after="reserve")
    assert main(["cancel", uuid, "--reason", "out of stock", "--backend", url]) == 0
    assert capsys.readouterr().out == "asked flow detail %s to stop and revert\n" % uuid
    assert main(["cancel", uuid, "--backend", url]) == 0
    assert capsys.readouterr().out == "flow detail %s has a cancel request pending already; nothing changed\n" % uuid
    assert main(["resume", uuid, "--backend", url]) == 1
    out = capsys.readouterr().out
    assert "out of stock (cancel request 1)" in out and "ship: " not in out
    with fetch(url) as backend, backend.get_connection() as conn:
        fd = conn.get_flow_details(uuid)
    assert fd.state == states.REVERTED
    assert {ad.name: ad.state for ad in fd} == {
        "reserve": states.REVERTED,
        "charge": states.PENDING,
        "ship": states.PENDING,
    }


def test_cancel_no_revert_of_a_suspended_flow_keeps_it_suspended_and_resumable(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    uuid = make_flow(url, suspend_after="reserve")
    assert main(["cancel", uuid, "--no-revert", "--backend", url]) == 0
    assert capsys.readouterr().out == "asked flow detail %s to stop and suspend\n" % uuid
    assert main(["resume", uuid, "--backend", url]) == 3  # suspended again, nothing ran
    assert "charge: " not in capsys.readouterr().out
    assert main(["resume", uuid, "--backend", url]) == 0  # the request was acted on once
    assert "flow 'order' (%s): SUCCESS" % uuid in capsys.readouterr().out


def test_signal_and_cancel_take_a_unique_start_of_the_id(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    from flowkit import cancellation, signals

    make_flow(url)  # another flow detail, so the start has to pick one
    uuid = make_flow(url, suspend_after="reserve")
    assert main(["signal", uuid[:8], "approved", "--backend", url]) == 0
    assert capsys.readouterr().out == "sent signal 'approved' to flow detail %s\n" % uuid
    assert main(["cancel", uuid[:8].upper(), "--no-revert", "--backend", url]) == 0
    assert capsys.readouterr().out == "asked flow detail %s to stop and suspend\n" % uuid
    with fetch(url) as backend, backend.get_connection() as conn:
        assert signals.get(backend, uuid, ["approved"]) == {"approved": None}
        meta = conn.get_flow_details(uuid).meta
        assert cancellation.pending_request(conn, uuid, meta) is not None


def test_cancel_of_an_ended_or_unknown_flow_is_refused(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    uuid = make_flow(url)
    assert main(["cancel", uuid, "--backend", url]) == 1
    err = capsys.readouterr().err
    assert err == "flowkit: flow 'order' (flow detail %s) has ended SUCCESS; there is nothing to cancel\n" % uuid
    assert main(["cancel", "no-such-uuid", "--backend", url]) == 2
    assert (
        capsys.readouterr().err == "flowkit: no flow detail 'no-such-uuid' in this backend (try 'flowkit flows')\n"
    )
