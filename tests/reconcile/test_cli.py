"""``flowkit resources list/show/set-target/retry``: what an operator sees and does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from flowkit.cli import main
from flowkit.reconcile import Resources, ResourceStatus, default_reconcilers, register


@pytest.fixture
def url(tmp_path: Path) -> str:
    return "sqlite:///%s" % (tmp_path / "flowkit.db")


@pytest.fixture
def registered() -> Iterator[None]:
    """The public_ip reconciler in the process-wide registry (as ``--import tests.reconcile.kinds`` leaves it)."""
    from tests.reconcile import kinds

    register(kinds.RECONCILER)
    yield
    default_reconcilers.remove("public_ip")


def test_set_target_needs_the_kinds_reconciler(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    default_reconcilers.remove("public_ip")
    assert main(["resources", "set-target", "public_ip", "ip-1", "attached", "--backend", url]) == 2
    assert "flowkit: no reconciler is registered for kind 'public_ip'" in capsys.readouterr().err


def test_list_show_set_target_and_retry(url: str, capsys: pytest.CaptureFixture[str], registered: None) -> None:
    store = Resources(url)
    store.create("public_ip", "ip-1", target="attached", facts={"server": "vm-1"})
    store.create("public_ip", "ip-2", current="detached")
    t = store.tables.resources
    with store.begin() as conn:  # as the driver leaves a resource whose operation failed for good
        conn.execute(
            sa.update(t)
            .where(t.c.id == "ip-2")
            .values(status="broken", errors='{"attach":3}', reason="attach failed 3 time(s) in a row")
        )
    store.close()

    assert main(["resources", "list", "--backend", url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["KIND", "ID", "CURRENT", "TARGET", "STATUS", "OBSERVED", "RUNNING", "ERRORS", "REASON"]
    assert out[1].split()[:7] == ["public_ip", "ip-1", "absent", "attached", "converging", "0/1", "-"]
    assert out[2].split()[:8] == ["public_ip", "ip-2", "detached", "detached", "broken", "1/1", "-", "attach=3"]

    assert main(["resources", "list", "--state", "broken", "--json", "--backend", url]) == 0
    (broken,) = json.loads(capsys.readouterr().out)
    assert (broken["id"], broken["errors"]) == ("ip-2", {"attach": 3})

    assert main(["resources", "show", "public_ip", "ip-1", "--backend", url]) == 0
    shown = capsys.readouterr().out
    assert "  target      attached (generation 1, observed 0)" in shown and '{"server": "vm-1"}' in shown
    assert shown.endswith("no operations\n")

    argv = ["--backend", url, "--import", "tests.reconcile.kinds"]
    assert main(["resources", "set-target", "public_ip", "ip-1", "detached", *argv]) == 0
    assert capsys.readouterr().out == "public_ip/ip-1: absent -> detached, converging (generation 2)\n"
    assert main(["resources", "set-target", "public_ip", "ip-1", "nowhere", *argv]) == 2
    assert "'nowhere' is not a state of kind 'public_ip' (absent, detached, attached)" in capsys.readouterr().err
    assert main(["resources", "retry", "public_ip", "ip-2", *argv]) == 0
    assert capsys.readouterr().out == "public_ip/ip-2: detached -> detached, converged (generation 1)\n"
    with Resources(url) as store:
        assert store.get("public_ip", "ip-2").status is ResourceStatus.CONVERGED
        assert dict(store.get("public_ip", "ip-2").errors) == {}


def test_reading_a_missing_database_creates_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "typo.db"
    assert main(["resources", "list", "--backend", "sqlite:///%s" % path]) == 2
    assert "no database at" in capsys.readouterr().err and not path.exists()
