"""The dashboard over HTTP: uvicorn serves it on a free port, httpx asks what a browser or a script would.

Mode-independent (the dashboard reads logbooks; it runs no engine of its own
except for the resume and retry actions, in serial mode): each test runs once.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowkit import states
from flowkit.cli import main
from flowkit.engines import load_from_factory
from flowkit.exceptions import Broken, Cancelled
from flowkit.factories import flow_factory
from flowkit.patterns import linear_flow
from flowkit.persistence.backends import fetch
from flowkit.persistence.models import AtomDetail, FlowDetail, LogBook
from flowkit.policies import RetryPolicy
from flowkit.task import Task
from flowkit.web import INTERRUPTED, LIMITS, SESSION_COOKIE, create_app
from flowkit.web._resources import statuses
from tests.support import ROOT, stored_states, wait_until

TOKEN = "s3cret-token-for-tests"


def read_only(url: str) -> Any:
    return fetch({"connection": url, "read_only": True})


def test_the_list_counts_states_and_filters_by_state_name_and_age(logbook: Any, serve: Any) -> None:
    url, uuids = logbook
    with read_only(url) as backend:
        site = serve(create_app(backend))
        listing = httpx.get(site.url + "/api/flows").json()
        assert listing["counts"] == {"REVERTED": 1, "SUCCESS": 1, "WAITING": 1}
        assert listing["total"] == 3
        # Newest first: populate() ran them in the order ok, failed, waiting.
        assert [f["uuid"] for f in listing["flows"]] == [uuids["waiting"], uuids["failed"], uuids["ok"]]
        waiting = listing["flows"][0]
        assert waiting["state"] == states.WAITING
        assert waiting["wake"] == {"due": None, "signals": ["approval"]}
        assert waiting["engine_alive"] is False  # parked: no engine holds it

        only = httpx.get(site.url + "/api/flows", params={"state": "REVERTED,WAITING"}).json()
        assert {f["name"] for f in only["flows"]} == {"order-declined", "order-approval"}
        assert only["counts"] == listing["counts"]  # counts stay over every state
        named = httpx.get(site.url + "/api/flows", params={"name": "order-d*"}).json()
        assert [f["name"] for f in named["flows"]] == ["order-declined"]
        assert httpx.get(site.url + "/api/flows", params={"since": "1h"}).json()["total"] == 3
        tomorrow = (datetime.date.today() + datetime.timedelta(days=2)).isoformat()
        assert httpx.get(site.url + "/api/flows", params={"since": tomorrow}).json()["flows"] == []

        page = httpx.get(site.url + "/flows", params={"state": "WAITING"})
        assert page.status_code == 200
        assert "order-approval" in page.text and "order-declined" not in page.text
        assert '<meta http-equiv="refresh" content="5">' in page.text
        assert "script-src" not in page.headers["content-security-policy"]  # no script is allowed at all
        assert "default-src 'none'" in page.headers["content-security-policy"]

        bad = httpx.get(site.url + "/api/flows", params={"since": "last tuesday"})
        assert bad.status_code == 400
        assert "since must be a duration like 30m" in bad.json()["error"]

        # A flow that ended does not reload (an opened traceback stays open); one that waits does.
        assert 'http-equiv="refresh"' not in httpx.get(site.url + "/flows/" + uuids["failed"]).text
        assert '<meta http-equiv="refresh" content="5">' in httpx.get(site.url + "/flows/" + uuids["waiting"]).text


def test_a_dashboard_on_this_machine_answers_only_requests_naming_it(logbook: Any, serve: Any) -> None:
    url, _ = logbook
    with read_only(url) as backend:
        site = serve(create_app(backend, allowed_hosts=["127.0.0.1", "localhost"]))
        assert httpx.get(site.url + "/api/flows").status_code == 200
        rebound = httpx.get(site.url + "/api/flows", headers={"Host": "evil.example"})
        assert rebound.status_code == 400
        assert "order-" not in rebound.text


def test_one_flow_shows_its_failure_with_traceback_masked_results_and_waits(
    logbook: Any, serve: Any, dot_program: str
) -> None:
    url, uuids = logbook
    with read_only(url) as backend:
        site = serve(create_app(backend, mask_keys=["password"]))
        failed = httpx.get(site.url + "/api/flows/" + uuids["failed"][:8]).json()  # a unique prefix will do
        assert failed["uuid"] == uuids["failed"]
        assert failed["state"] == states.REVERTED
        [failure] = failed["failures"]
        assert failure["atom"] == "charge" and failure["during"] == "execute"
        assert failure["type"] == "tests.web.flows.CardDeclined"
        assert failure["message"] == "card 4242 declined by the bank"
        assert 'raise CardDeclined("card 4242 declined by the bank")' in failure["traceback"]
        reserve = next(a for a in failed["atoms"] if a["name"] == "reserve")
        assert reserve["result"] == '{"password": "***", "seat": "12A"}'
        assert failed["graph"]["available"] is True

        page = httpx.get(site.url + "/flows/" + uuids["failed"]).text
        assert "hunter2" not in page
        assert "CardDeclined: card 4242 declined by the bank" in page
        assert "raise CardDeclined(&#34;card 4242 declined by the bank&#34;)" in page
        assert 'src="data:image/svg+xml;base64,' in page

        svg = httpx.get(site.url + "/api/flows/%s/graph.svg" % (uuids["failed"],))
        assert svg.headers["content-type"] == "image/svg+xml"
        assert b"charge" in svg.content and b"REVERTED" in svg.content

        waiting = httpx.get(site.url + "/api/flows/" + uuids["waiting"]).json()
        [wait] = waiting["waits"]
        assert wait["atom"] == "approval" and wait["signal"] == "approval" and wait["until"] is None
        assert "for signal approval" in httpx.get(site.url + "/flows/" + uuids["waiting"]).text

        ok = httpx.get(site.url + "/api/flows/" + uuids["ok"]).json()
        pack = next(a for a in ok["atoms"] if a["name"] == "pack")
        [attempt] = pack["attempts"]
        assert attempt["failure"]["message"] == "the warehouse did not answer"
        assert "the warehouse did not answer" in httpx.get(site.url + "/flows/" + uuids["ok"]).text
        # Timed by a clock that ticks one second per reading: 8 s in all, pack from 4 s to 5 s.
        timeline = ok["timeline"]
        assert timeline["total"] == 8.0
        bars = {bar["atom"]: bar for bar in timeline["bars"]}
        assert bars["pack"] == {"atom": "pack", "start": 4.0, "duration": 1.0, "left": 50.0, "width": 12.5}
        assert "margin-left: 50.0%; width: 12.5%" in httpx.get(site.url + "/flows/" + uuids["ok"]).text

        missing = httpx.get(site.url + "/api/flows/ffffffff")
        assert missing.status_code == 404
        assert "no flow detail 'ffffffff'" in missing.json()["error"]


def test_the_graph_degrades_to_a_reason_without_graphviz(
    logbook: Any, serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, uuids = logbook
    monkeypatch.setenv("PATH", "")  # the server runs in this process: no 'dot' on its PATH
    with read_only(url) as backend:
        site = serve(create_app(backend))
        page = httpx.get(site.url + "/flows/" + uuids["failed"])
        assert page.status_code == 200
        assert "no graph: Graphviz&#39;s &#39;dot&#39; program is not installed" in page.text
        assert "card 4242 declined by the bank" in page.text  # the rest of the page is there
        graph = httpx.get(site.url + "/api/flows/" + uuids["failed"]).json()["graph"]
        assert graph["available"] is False and "not installed" in graph["reason"]


def test_values_from_the_database_are_escaped_and_cut(tmp_path: Path, serve: Any) -> None:
    url = "sqlite:///%s" % (tmp_path / "evil.db",)
    evil = "<script>alert('flow')</script>"
    with fetch(url) as backend:
        book = LogBook("<b>book</b>")
        fd = FlowDetail(evil, state=states.FAILURE)
        ad = AtomDetail("<img src=x onerror=alert(1)>", state=states.SUCCESS)
        ad.results = {"blob": "x" * 10_000}
        fd.add(ad)
        book.add(fd)
        with backend.get_connection() as conn:
            conn.save_logbook(book)
    with read_only(url) as backend:
        site = serve(create_app(backend))
        listing = httpx.get(site.url + "/flows").text
        assert evil not in listing and "&lt;script&gt;alert(&#39;flow&#39;)&lt;/script&gt;" in listing
        assert "<b>book</b>" not in listing
        page = httpx.get(site.url + "/flows/" + fd.uuid).text
        assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
        assert "x" * (LIMITS["result"] + 1) not in page
        assert "more characters]" in page
        # The graph cannot be built from data: the record names no registered factory.
        assert "no graph:" in page


def test_a_running_flow_whose_process_died_reads_interrupted(tmp_path: Path, serve: Any) -> None:
    url = "sqlite:///%s" % (tmp_path / "crash.db",)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.run(
        [sys.executable, "-m", "tests.web.crash_child", url],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 17, child.stderr
    doomed = child.stdout.split()[0]
    with fetch(url) as backend:
        with backend.get_connection() as conn:
            assert conn.get_flow_details(doomed, lazy=True).state == states.RUNNING  # as the crash left it
        site = serve(create_app(backend))
        flow = httpx.get(site.url + "/api/flows/" + doomed).json()
        assert flow["state"] == INTERRUPTED and flow["stored_state"] == states.RUNNING
        assert flow["engine_alive"] is False
        assert "resume with <code>flowkit resume %s</code>" % (doomed,) in httpx.get(site.url + "/flows").text
        # While an engine holds the flow's lock, it is running, not interrupted.
        with backend.get_connection() as conn:
            lock = conn.lock_flow(conn.get_flow_details(doomed, lazy=True))
        try:
            flow = httpx.get(site.url + "/api/flows/" + doomed).json()
            assert flow["state"] == states.RUNNING and flow["engine_alive"] is True
        finally:
            lock.release()


@pytest.mark.parametrize("server", ["postgresql", "mysql"])
def test_liveness_on_database_servers(server: str, serve: Any) -> None:
    from tests.persistence.conftest import MYSQL_URL, POSTGRES_URL, drop_tables, server_url, unique_prefix

    if server == "postgresql":
        url = server_url(POSTGRES_URL, "PostgreSQL", "FLOWKIT_TEST_POSTGRES_URL")
    else:
        url = server_url(MYSQL_URL, "MySQL", "FLOWKIT_TEST_MYSQL_URL")
    prefix = unique_prefix()
    try:
        with fetch({"connection": url, "table_prefix": prefix}) as backend:
            book = LogBook("left running")
            fd = FlowDetail("stale", state=states.RUNNING)
            book.add(fd)
            with backend.get_connection() as conn:
                conn.save_logbook(book)
            site = serve(create_app(backend))
            assert flow_state(site, fd.uuid) == INTERRUPTED
            with backend.get_connection() as conn:
                lock = conn.lock_flow(fd)
            try:
                assert flow_state(site, fd.uuid) == states.RUNNING
            finally:
                lock.release()
            assert flow_state(site, fd.uuid) == INTERRUPTED
    finally:
        drop_tables(url, prefix)


def test_a_read_only_dashboard_refuses_every_action(logbook: Any, serve: Any) -> None:
    url, uuids = logbook
    with read_only(url) as backend:
        site = serve(create_app(backend))
        page = httpx.get(site.url + "/flows/" + uuids["waiting"]).text
        assert "read-only" in page and '<form method="post"' not in page
        for action in ("resume", "cancel", "retry", "signal"):
            answer = httpx.post(
                site.url + "/api/flows/%s/%s" % (uuids["waiting"], action),
                headers={"Authorization": "Bearer anything"},
                json={"name": "approval"},
            )
            assert answer.status_code == 403, action
            assert "read-only" in answer.json()["error"]
        assert httpx.post(site.url + "/flows/%s/cancel" % (uuids["waiting"],), data={}).status_code == 403
    with pytest.raises(ValueError, match="actions need a token"):
        create_app(fetch("memory://"), allow_actions=True)


@contextlib.contextmanager
def log_in(site: Any, token: str = TOKEN) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site.url) as client:
        answer = client.post("/login", data={"token": token, "next": "/flows"})
        if token == TOKEN:
            assert answer.status_code == 303 and SESSION_COOKIE in client.cookies
        yield client


def csrf_of(client: httpx.Client, uuid: str) -> str:
    page = client.get("/flows/" + uuid).text
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found, "no CSRF token in the flow's page"
    return found.group(1)


def flow_state(site: Any, uuid: str) -> str:
    return str(httpx.get(site.url + "/api/flows/" + uuid).json()["state"])


def test_a_logged_in_browser_signals_and_resumes_a_waiting_flow(logbook: Any, serve: Any) -> None:
    url, uuids = logbook
    waiting = uuids["waiting"]
    with fetch(url) as backend:
        site = serve(create_app(backend, allow_actions=True, token=TOKEN))
        with log_in(site, "not-the-token") as wrong:
            assert wrong.post("/login", data={"token": "nope"}).status_code == 403
            assert SESSION_COOKIE not in wrong.cookies
            assert wrong.post("/flows/%s/signal" % (waiting,), data={"name": "approval"}).status_code == 403
        with log_in(site) as client:
            signal_and_resume(site, client, waiting)


def signal_and_resume(site: Any, client: httpx.Client, waiting: str) -> None:
    csrf = csrf_of(client, waiting)
    sent = client.post(
        "/flows/%s/signal" % (waiting,), data={"csrf": csrf, "name": "approval", "value": '{"by": "ann"}'}
    )
    assert sent.status_code == 303
    assert (
        "sent signal &#39;approval&#39; to flow &#39;order-approval&#39;" in client.get(sent.headers["location"]).text
    )
    resumed = client.post("/flows/%s/resume" % (waiting,), data={"csrf": csrf})
    assert resumed.status_code == 303
    wait_until(lambda: flow_state(site, waiting) == states.SUCCESS, "the resumed flow to finish")
    flow = httpx.get(site.url + "/api/flows/" + waiting).json()
    approval = next(a for a in flow["atoms"] if a["name"] == "approval")
    assert approval["result"] == '{"by": "ann"}'
    again = client.post("/flows/%s/resume" % (waiting,), data={"csrf": csrf})
    assert again.status_code == 409 and "already ended SUCCESS" in again.text


def test_forms_without_the_sessions_csrf_token_or_from_elsewhere_are_refused(logbook: Any, serve: Any) -> None:
    url, uuids = logbook
    with fetch(url) as backend:
        site = serve(create_app(backend, allow_actions=True, token=TOKEN))
        with log_in(site) as client, log_in(site) as other:
            refuse_forged_forms(site, client, other, uuids["waiting"])


def refuse_forged_forms(site: Any, client: httpx.Client, other: httpx.Client, waiting: str) -> None:
    target = "/flows/%s/cancel" % (waiting,)
    assert client.post(target, data={}).status_code == 403
    assert client.post(target, data={"csrf": "0" * 64}).status_code == 403
    csrf = csrf_of(client, waiting)
    foreign = client.post(target, data={"csrf": csrf}, headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403
    assert "CSRF" in foreign.text
    # Another session's token is no good either.
    assert other.post(target, data={"csrf": csrf}).status_code == 403
    assert flow_state(site, waiting) == states.WAITING  # nothing was done
    assert client.post(target, data={"csrf": csrf}).status_code == 303


def test_the_api_acts_with_the_bearer_token_only(logbook: Any, serve: Any) -> None:
    url, uuids = logbook
    waiting = uuids["waiting"]
    with fetch(url) as backend:
        site = serve(create_app(backend, allow_actions=True, token=TOKEN))
        cancel = site.url + "/api/flows/%s/cancel" % (waiting,)
        assert httpx.post(cancel).status_code == 403
        assert httpx.post(cancel, headers={"Authorization": "Bearer wrong"}).status_code == 403
        auth = {"Authorization": "Bearer " + TOKEN}
        done = httpx.post(cancel, headers=auth, json={"mode": "revert"})
        assert done.status_code == 200
        assert done.json()["done"].startswith("asked flow 'order-approval'")
        assert httpx.post(site.url + "/api/flows/%s/resume" % (waiting,), headers=auth).status_code == 200
        wait_until(lambda: flow_state(site, waiting) == states.REVERTED, "the cancelled flow to revert")
        huge = httpx.post(site.url + "/api/flows/%s/signal" % (waiting,), headers=auth, content=b"{" + b" " * 100_000)
        assert huge.status_code == 400 and "larger than 65536 bytes" in huge.json()["error"]
        unknown = httpx.post(site.url + "/api/flows/%s/explode" % (waiting,), headers=auth)
        assert unknown.status_code == 404 and "no action 'explode'" in unknown.json()["error"]


class Patient(Task):
    """Runs until its run is stopped, then says so (the attempt counts as interrupted)."""

    def execute(self) -> None:
        if self.context.cancelled.wait(60):
            raise Cancelled("stopped while working")
        raise AssertionError("nobody stopped the run within a minute")


@flow_factory
def make_patient() -> Any:
    return linear_flow.Flow("patient").add(Patient("work"))


def test_runs_the_server_started_are_suspended_when_it_stops(tmp_path: Path, serve: Any) -> None:
    url = "sqlite:///%s" % (tmp_path / "patient.db",)
    with fetch(url) as backend:
        uuid = load_from_factory(make_patient, backend=backend).storage.flow_detail.uuid  # saved, never run
        site = serve(create_app(backend, allow_actions=True, token=TOKEN))
        auth = {"Authorization": "Bearer " + TOKEN}
        answer = httpx.post(site.url + "/api/flows/%s/resume" % (uuid,), headers=auth)
        assert answer.status_code == 200
        assert "in the dashboard's process" in answer.json()["done"]

        def running() -> bool:
            flow = httpx.get(site.url + "/api/flows/" + uuid).json()
            return flow["state"] == states.RUNNING and flow["engine_alive"] is True

        wait_until(running, "the resumed run to hold its flow's lock")
        busy = httpx.post(site.url + "/api/flows/%s/resume" % (uuid,), headers=auth)
        assert busy.status_code == 409 and "being run by another engine" in busy.json()["error"]
        site.stop()
        with backend.get_connection() as conn:
            fd = conn.get_flow_details(uuid)
        assert fd.state == states.SUSPENDED
        assert fd.find_by_name("work").state == states.PENDING  # interrupted, runs again on resume


def test_a_resumed_flow_that_comes_to_a_wait_is_parked(logbook: Any, serve: Any) -> None:
    url, uuids = logbook
    waiting = uuids["waiting"]
    with fetch(url) as backend:
        site = serve(create_app(backend, allow_actions=True, token=TOKEN))
        auth = {"Authorization": "Bearer " + TOKEN}
        assert httpx.post(site.url + "/api/flows/%s/resume" % (waiting,), headers=auth).status_code == 200
        # No signal yet: the run parks the flow again and ends; no thread waits for the signal.
        wait_until(
            lambda: not any(t.name == "flowkit-web-" + waiting for t in threading.enumerate()),
            "the resumed run to park the flow",
        )
        flow = httpx.get(site.url + "/api/flows/" + waiting).json()
        assert flow["state"] == states.WAITING and flow["engine_alive"] is False
        assert "(parked: no engine holds it)" in httpx.get(site.url + "/flows/" + waiting).text


class Fragile(Task):
    """Fails while its flow's count of failures to come is above zero."""

    to_fail: dict[str, int] = {}

    def execute(self) -> str:
        left = Fragile.to_fail.get(self.context.flow_uuid, 0)
        if left:
            Fragile.to_fail[self.context.flow_uuid] = left - 1
            raise ConnectionError("the registry is down")
        return "registered"


@flow_factory
def make_fragile() -> Any:
    return linear_flow.Flow("fragile").add(
        Fragile("register", retry_policy=RetryPolicy(max_attempts=1, on_exhausted="broken"))
    )


def test_retry_runs_a_broken_flows_atoms_again(tmp_path: Path, serve: Any) -> None:
    url = "sqlite:///%s" % (tmp_path / "broken.db",)
    with fetch(url) as backend:
        engine = load_from_factory(make_fragile, backend=backend)
        uuid = engine.storage.flow_detail.uuid
        Fragile.to_fail[uuid] = 1
        with pytest.raises(Broken, match="atom 'register' failed 1 times"):
            engine.run()
        assert engine.storage.get_flow_state() == states.BROKEN
        site = serve(create_app(backend, allow_actions=True, token=TOKEN))
        assert flow_state(site, uuid) == states.BROKEN
        auth = {"Authorization": "Bearer " + TOKEN}
        answer = httpx.post(site.url + "/api/flows/%s/retry" % (uuid,), headers=auth)
        assert answer.status_code == 200, answer.text
        wait_until(lambda: flow_state(site, uuid) == states.SUCCESS, "the retried flow to succeed")
        refused = httpx.post(site.url + "/api/flows/%s/retry" % (uuid,), headers=auth)
        assert refused.status_code == 409 and "not BROKEN" in refused.json()["error"]


def test_jobs_and_the_conductors_holding_claims(tmp_path: Path, serve: Any) -> None:
    from flowkit.conductors.posting import post_flow
    from flowkit.jobs.backends import fetch as fetch_board
    from tests.web.flows import make_order

    url = "sqlite:///%s" % (tmp_path / "jobs.db",)
    with fetch(url) as backend:
        with fetch_board("web", {"board": "sql", "url": url}, persistence=backend) as board:
            claimed = post_flow(board, make_order, name="claimed-job")
            post_flow(board, make_order, name="later-job", delay=3600)
            board.claim(claimed, "condA")
            site = serve(create_app(backend, board=board))
            jobs = httpx.get(site.url + "/api/jobs").json()
            assert jobs["board"] == "web"
            by_name = {job["name"]: job for job in jobs["jobs"]}
            assert by_name["claimed-job"]["state"] == "CLAIMED" and by_name["claimed-job"]["owner"] == "condA"
            assert by_name["later-job"]["state"] == "UNCLAIMED" and by_name["later-job"]["due"] is not None
            assert jobs["conductors"] == [{"name": "condA", "claims": [claimed.uuid]}]
            page = httpx.get(site.url + "/jobs").text
            assert "condA" in page and "later-job" in page
    with read_only(url) as backend:
        site = serve(create_app(backend))
        answer = httpx.get(site.url + "/api/jobs")
        assert answer.status_code == 404 and "--board URL" in answer.json()["error"]


def test_the_command_reads_the_database_before_serving(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "none.db"
    assert main(["web", "--backend", "sqlite:///%s" % (missing,), "--port", "0"]) == 2
    assert "no database at" in capsys.readouterr().err
    assert not missing.exists()  # read-only: nothing was created


def test_the_command_refuses_actions_without_a_token(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["web", "--backend", "memory://", "--allow-actions"]) == 2
    assert "--allow-actions needs a token" in capsys.readouterr().err
    assert main(["web", "--backend", "memory://", "--token", "x"]) == 2
    assert "only used with --allow-actions" in capsys.readouterr().err


def test_the_resources_list_counts_statuses_filters_and_marks_the_broken_one(reconciled: Any, serve: Any) -> None:
    url, found = reconciled
    assert {r.id: r.status.value for r in found.values()} == {
        "ip-ok": "converged", "ip-broken": "broken", "ip-later": "converging",
    }  # fmt: skip
    with read_only(url) as backend:
        site = serve(create_app(backend))
        listing = httpx.get(site.url + "/api/resources").json()
        assert [(r["kind"], r["id"], r["status"]) for r in listing] == [
            ("public_ip", "ip-broken", "broken"),
            ("public_ip", "ip-later", "converging"),
            ("public_ip", "ip-ok", "converged"),
        ]
        broken = httpx.get(site.url + "/api/resources", params={"status": "broken"}).json()
        assert [r["id"] for r in broken] == ["ip-broken"]
        assert broken[0]["errors"] == {"attach": 3} and broken[0]["reason"].startswith("attach failed 3 time(s)")
        assert httpx.get(site.url + "/api/resources", params={"status": "BROKEN"}).json() == broken
        assert httpx.get(site.url + "/api/resources", params={"kind": "dns_record"}).json() == []
        assert len(httpx.get(site.url + "/api/resources", params={"limit": "2"}).json()) == 2
        bad = httpx.get(site.url + "/api/resources", params={"status": "melted"})
        assert bad.status_code == 400
        assert "status must be one of converging, converged, broken, unreachable" in bad.json()["error"]

        page = httpx.get(site.url + "/resources")
        assert page.status_code == 200
        counts = re.search(r'<p class="counts" id="counts">(.*?)</p>', page.text, re.S)
        assert counts is not None
        assert re.findall(r'class="state (\w+)"[^>]*>(\w+ \d+)<', counts.group(1)) == [
            ("live", "converging 1"), ("ok", "converged 1"), ("bad", "broken 1"), ("warn", "unreachable 0"),
        ]  # fmt: skip
        rows = re.findall(
            r'<tr class="(\w*)">\s*<td>public_ip</td>\s*<td><a [^>]*href="([^"]+)">([^<]+)</a>', page.text
        )
        assert rows == [
            ("bad", "/resources/public_ip/ip-broken", "ip-broken"),
            ("live", "/resources/public_ip/ip-later", "ip-later"),
            ("ok", "/resources/public_ip/ip-ok", "ip-ok"),
        ]
        assert 'href="/resources" class="here">Resources</a>' in page.text
        only = httpx.get(site.url + "/resources", params={"status": "broken"}).text
        assert "ip-broken" in only and "ip-ok" not in only
        assert "broken 1" in only and "converged 1" in only  # counts stay over every status
        assert 'href="/resources">Resources</a>' in httpx.get(site.url + "/flows").text  # in the nav


def test_one_resource_shows_its_fields_and_operations_linked_to_their_flows(
    reconciled: Any, serve: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = reconciled
    with read_only(url) as backend:
        site = serve(create_app(backend))
        shown = httpx.get(site.url + "/api/resources/public_ip/ip-broken").json()
        # The command's JSON, field for field.
        assert main(["resources", "show", "public_ip", "ip-broken", "--json", "--backend", url]) == 0
        assert shown == json.loads(capsys.readouterr().out)
        assert main(["resources", "list", "--json", "--backend", url]) == 0
        assert httpx.get(site.url + "/api/resources").json() == json.loads(capsys.readouterr().out)

        operations = shown["operations"]
        assert [(op["rule"], op["outcome"]) for op in operations] == [("attach", "REVERTED")] * 3
        assert all(op["flow"] and op["job"] for op in operations)
        page = httpx.get(site.url + "/resources/public_ip/ip-broken")
        assert page.status_code == 200
        assert '<span class="state bad" id="resource-status">broken</span>' in page.text
        for field in ("Kind", "Id", "Current", "Target", "Status", "Reason", "Errors", "Generation", "Updated"):
            assert "<dt>%s</dt>" % (field,) in page.text
        assert '<dd id="errors">attach=3 </dd>' in page.text
        assert '<dd id="generation">1 (observed 1)</dd>' in page.text
        for op in operations:
            assert '<a class="flow-link" href="/flows/%s">' % (op["flow"],) in page.text
            assert "<code>%s</code>" % (op["job"],) in page.text
        assert "attach of public_ip/ip-broken failed (injected)" in page.text
        # The link leads to the operation's flow detail.
        flow = httpx.get(site.url + "/api/flows/" + operations[0]["flow"]).json()
        assert flow["name"] == "public_ip/ip-broken: attach" and flow["state"] == states.REVERTED
        assert httpx.get(site.url + "/flows/" + operations[0]["flow"]).status_code == 200

        converged = httpx.get(site.url + "/api/resources/public_ip/ip-ok").json()
        assert [(op["rule"], op["outcome"]) for op in converged["operations"]] == [
            ("allocate_for_attach", "SUCCESS"), ("attach", "SUCCESS"),
        ]  # fmt: skip
        later = httpx.get(site.url + "/resources/public_ip/ip-later").text
        assert "no operations" in later

        missing = httpx.get(site.url + "/api/resources/public_ip/ip-none")
        assert missing.status_code == 404 and missing.json() == {"error": "no resource public_ip/ip-none"}
        page = httpx.get(site.url + "/resources/public_ip/ip-none")
        assert page.status_code == 404 and "no resource public_ip/ip-none" in page.text


def test_resource_facts_are_masked_and_odd_ids_are_linked(reconciled: Any, serve: Any) -> None:
    from flowkit.reconcile import ReconcilerRegistry, Resources
    from tests.reconcile.conftest import public_ip

    url, _ = reconciled
    registry = ReconcilerRegistry()
    registry.add(public_ip())
    odd = "eu/west ip?#1<b>"
    with Resources(url, reconcilers=registry) as store:
        store.create("public_ip", odd)
    with read_only(url) as backend:
        site = serve(create_app(backend, mask_keys=["password"]))
        ok = httpx.get(site.url + "/api/resources/public_ip/ip-ok").json()
        assert ok["facts"] == {"password": "***", "server": "vm-1"}
        page = httpx.get(site.url + "/resources/public_ip/ip-ok").text
        assert "hunter2" not in page and "&#34;password&#34;: &#34;***&#34;" in page
        assert "hunter2" not in httpx.get(site.url + "/api/resources").text
        listing = httpx.get(site.url + "/resources").text
        assert "<b>" not in listing
        link = re.search(r'href="(/resources/public_ip/eu/[^"]+)"', listing)
        assert link is not None and link.group(1) == "/resources/public_ip/eu/west%20ip%3F%231%3Cb%3E"
        odd_page = httpx.get(site.url + link.group(1))
        assert odd_page.status_code == 200 and "<code>eu/west ip?#1&lt;b&gt;</code>" in odd_page.text
        assert httpx.get(site.url + "/api/" + link.group(1)[1:]).json()["id"] == odd


def test_a_database_without_resource_tables_lists_none_and_says_why(logbook: Any, serve: Any) -> None:
    url, _ = logbook
    path = url[len("sqlite:///") :]
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        # A logbook whose database never got the reconciler's tables.
        db.execute("DROP TABLE flowkit_resource_operations")
        db.execute("DROP TABLE flowkit_resources")
    with read_only(url) as backend:
        site = serve(create_app(backend))
        answer = httpx.get(site.url + "/api/resources")
        assert answer.status_code == 200 and answer.json() == []
        page = httpx.get(site.url + "/resources")
        assert page.status_code == 200
        assert "this database has no resource tables" in page.text and "no resource matches" in page.text
        assert "broken 0" in page.text
        one = httpx.get(site.url + "/api/resources/public_ip/ip-1")
        assert one.status_code == 404 and "has no resource tables" in one.json()["error"]
        assert httpx.get(site.url + "/api/flows").json()["total"] == 3  # the flows are all there
    with fetch("memory://") as backend:
        site = serve(create_app(backend))
        assert httpx.get(site.url + "/api/resources").json() == []
        assert "resources are kept in a SQL database" in httpx.get(site.url + "/resources").text
        assert httpx.get(site.url + "/api/resources/public_ip/ip-1").status_code == 404


def test_a_logbook_that_never_reconciled_lists_no_resources(logbook: Any, serve: Any) -> None:
    url, _ = logbook
    with read_only(url) as backend:
        site = serve(create_app(backend))
        assert httpx.get(site.url + "/api/resources").json() == []
        page = httpx.get(site.url + "/resources").text
        assert "no resource matches" in page and "resources-note" not in page


def test_every_state_a_flow_or_atom_is_shown_in_has_a_colour(logbook: Any, serve: Any) -> None:
    url, _ = logbook
    with read_only(url) as backend:
        app = create_app(backend)
        site = serve(app)
        css = httpx.get(site.url + "/static/web.css").text
        coloured = set(re.findall(r"^\.state\.([a-z]+) \{[^}]*background:", css, re.M))
        state_class = app.state.dashboard.templates.globals["state_class"]
        shown = {str(state) for state in stored_states()} | {INTERRUPTED}
        assert {state for state in shown if state_class(state) not in coloured} == set()
        status_class = app.state.dashboard.templates.globals["status_class"]
        assert {status for status in statuses() if status_class(status) not in coloured} == set()
        assert status_class("broken") == "bad"
        # Bad states stand apart from the rest.
        assert {state for state in shown if state_class(state) == "bad"} == {
            states.FAILURE, states.REVERT_FAILURE, states.BROKEN,
        }  # fmt: skip


def test_the_documented_constants_are_the_real_ones() -> None:
    # doc/api.rst spells these out (they are loaded lazily, so autodoc cannot read them).
    from flowkit.web import ACTIONS

    text = (ROOT / "doc" / "api.rst").read_text(encoding="utf-8")
    assert repr(ACTIONS).replace("'", '"') in text
    assert json.dumps(LIMITS) in text
    assert '``"%s"``' % (INTERRUPTED,) in text and '``"%s"``' % (SESSION_COOKIE,) in text
