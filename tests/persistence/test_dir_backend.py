"""The directory backend across real processes: crash and resume, one engine per flow detail.

The contract suite (``test_conformance.py``) checks one process; here a child process
dies mid-flow (the harness of ``test_crash_resume.py``) and this one resumes from the
JSON files, and a second process is refused a flow detail whose lock file another holds.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from flowkit import states
from flowkit.exceptions import FlowDetailLocked
from flowkit.persistence.backends import fetch
from flowkit.persistence.backends.impl_dir import DirBackend
from flowkit.persistence.models import FlowDetail, LogBook
from tests.persistence.test_crash_resume import LINEAR, _child_env, run_crash_case

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("crash", ["start:b", "sigkill:c", "success:d"])
def test_a_flow_killed_mid_run_resumes_from_the_files(
    tmp_path: Path, engine_options: dict[str, Any], crash: str
) -> None:
    conf = {"connection": "dir", "path": str(tmp_path / "logbooks")}
    result, after, state, values, raised = run_crash_case(tmp_path, conf, engine_options, "linear", crash, LINEAR)
    assert raised is None
    assert state == states.SUCCESS
    assert values["after_d"] == ["a", "b", "c", "d"]
    if not crash.startswith("success:"):
        crashed = crash.split(":")[1]
        assert result.at_crash[crashed] == (states.RUNNING, states.EXECUTE)


def test_a_flow_detail_locked_by_another_process_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "logbooks"
    backend = DirBackend(folder)
    book = LogBook("locks")
    flow_detail = FlowDetail("held")
    book.add(flow_detail)
    with backend.get_connection() as conn:
        conn.save_logbook(book)
    holder = textwrap.dedent(
        """
        import sys
        from flowkit.persistence.backends.impl_dir import DirBackend
        backend = DirBackend(sys.argv[1])
        with backend.get_connection() as conn:
            lock = conn.lock_flow(conn.get_flow_details(sys.argv[2]))
            print("locked", flush=True)
            sys.stdin.read()  # hold it until the parent closes stdin
            lock.release()
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", holder, str(folder), flow_detail.uuid],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_child_env(),
        cwd=str(REPO_ROOT),
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
            with backend.get_connection() as conn:
                with pytest.raises(FlowDetailLocked, match="another process"):
                    conn.lock_flow(flow_detail)
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=60)
    with backend.get_connection() as conn:
        conn.lock_flow(flow_detail).release()  # free once the holder is gone


def test_a_second_backend_on_the_folder_sees_what_the_first_wrote(tmp_path: Path) -> None:
    first = fetch({"connection": "dir://%s" % (tmp_path / "shared",)})
    second = fetch({"connection": "file", "path": str(tmp_path / "shared")})
    book = LogBook("shared")
    book.add(FlowDetail("one"))
    with first.get_connection() as conn:
        conn.save_logbook(book)
    with second.get_connection() as conn:
        assert [fd.name for fd in conn.get_logbook(book.uuid)] == ["one"]
        conn.destroy_logbook(book.uuid)
    with first.get_connection() as conn:
        assert list(conn.get_logbooks()) == []


def test_a_file_that_is_not_a_logbook_is_reported(tmp_path: Path) -> None:
    from flowkit.exceptions import CorruptLogbook

    backend = DirBackend(tmp_path / "broken")
    (tmp_path / "broken" / "logbooks" / "x.json").write_text('{"format": 1, "logbook": "not a record"}')
    (tmp_path / "broken" / "generation").write_text("7")
    with backend.get_connection() as conn:
        with pytest.raises(CorruptLogbook, match="x.json"):
            list(conn.get_logbooks())
