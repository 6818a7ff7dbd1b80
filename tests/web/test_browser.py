"""The dashboard in a real browser: Debian's Chromium, headless, driven through Playwright.

The server is the ``flowkit web`` command in a process of its own, on a free
local port, over an SQLite logbook holding a flow that succeeded, one that
failed with a traceback and one waiting for a signal.  The test clicks from
the list to the failed flow and opens its failure, as a person would, and
saves a screenshot of each step (in the test's tmp dir and, when
``$FLOWKIT_ARTIFACTS_DIR`` is set, there too); another logs in with the
token, signals the waiting flow and resumes it through the forms (with their
CSRF tokens, under the pages' Content-Security-Policy).  Mode-independent:
each runs once.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import ROOT, unavailable, wait_until

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium; without it: a failure under CI=true, else a skip naming it."""
    found = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if found is None:
        unavailable("Chromium is not installed (apt-get install -y chromium)")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Dashboard:
    """``flowkit web`` serving a logbook in a child process, on a free local port."""

    def __init__(self, url: str, log_path: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        port = free_port()
        self.base = "http://127.0.0.1:%d" % (port,)
        self.log = open(log_path, "w+", encoding="utf-8")  # noqa: SIM115 - closed by stop()
        command = [
            sys.executable, "-m", "flowkit.cli", "web", "--backend", url, "--port", str(port),
            "--import", "tests.web.flows", "--mask-key", "password", "--refresh", "0", *extra,
        ]  # fmt: skip
        self.child = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self.up, "flowkit web to answer on port %d" % (port,), detail=self.output)

    def up(self) -> bool:
        if self.child.poll() is not None:
            raise AssertionError("flowkit web exited with %s:\n%s" % (self.child.returncode, self.output()))
        try:
            return httpx.get(self.base + "/api/flows", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        self.child.terminate()
        self.child.wait(30)
        self.log.close()


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[Callable[..., Dashboard]]:
    """``dashboard(url, *options, env=...)`` starts ``flowkit web``; each is stopped after the test."""
    started: list[Dashboard] = []

    def start(url: str, *extra: str, env: dict[str, str] | None = None) -> Dashboard:
        started.append(Dashboard(url, tmp_path / ("web-%d.log" % len(started)), *extra, env=env))
        return started[-1]

    yield start
    for served in started:
        served.stop()


@pytest.fixture
def console_errors() -> list[str]:
    """The errors the browser's console reported (a test removes the ones it caused on purpose)."""
    return []


@pytest.fixture
def browser(chromium: str, console_errors: list[str]) -> Iterator[Any]:
    """A headless Chromium page (Debian's Chromium, no download), failing the test on a console error."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright is not installed (pip install playwright; it is in the test extra)")

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = launched.new_page(viewport={"width": 1280, "height": 900})
            errors = console_errors
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            yield page
            assert errors == [], errors  # the page asked for nothing the server or its policy refused
        finally:
            launched.close()


def screenshot(page: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 0
    target = os.environ.get("FLOWKIT_ARTIFACTS_DIR")
    if target:
        os.makedirs(target, exist_ok=True)
        shutil.copy(path, os.path.join(target, name))
    return path


def test_list_then_flow_then_failure_in_chromium(
    browser: Any, dashboard: Callable[..., Dashboard], logbook: Any, tmp_path: Path, dot_program: str
) -> None:
    from playwright.sync_api import expect

    url, uuids = logbook
    base = dashboard(url, "--board", "sql").base
    page = browser
    page.goto(base + "/")
    expect(page).to_have_url(base + "/flows")
    expect(page.locator("#counts")).to_contain_text("REVERTED 1")
    expect(page.locator("#counts")).to_contain_text("SUCCESS 1")
    expect(page.locator("#counts")).to_contain_text("WAITING 1")
    rows = page.locator("#flows tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text("order-approval")
    expect(rows.nth(0)).to_contain_text("signal approval")
    screenshot(page, tmp_path, "web-flows.png")

    page.get_by_role("link", name="order-declined").click()
    expect(page).to_have_url(base + "/flows/" + uuids["failed"])
    expect(page.locator("#flow-state")).to_have_text("REVERTED")
    graph = page.locator("#graph")
    expect(graph).to_be_visible()
    assert graph.evaluate("img => img.complete && img.naturalWidth > 0"), "the graph did not render"
    atoms = page.locator("#atoms")
    expect(atoms).to_contain_text('{"password": "***", "seat": "12A"}')
    expect(atoms).not_to_contain_text("hunter2")
    traceback = page.locator("#failures pre.traceback").first
    expect(traceback).to_be_hidden()  # folded until asked for

    page.get_by_role("link", name="tests.web.flows.CardDeclined").click()
    page.locator("#failures summary").first.click()
    expect(traceback).to_be_visible()
    expect(traceback).to_contain_text('raise CardDeclined("card 4242 declined by the bank")')
    expect(page.locator("#failures summary").first).to_contain_text(
        "charge (execute): tests.web.flows.CardDeclined: card 4242 declined by the bank"
    )
    screenshot(page, tmp_path, "web-failure.png")

    page.get_by_role("link", name="Jobs and conductors").click()
    expect(page).to_have_url(base + "/jobs")
    expect(page.locator("#jobs")).to_contain_text("no jobs")


def test_log_in_signal_and_resume_in_chromium(
    browser: Any, dashboard: Callable[..., Dashboard], logbook: Any, tmp_path: Path, console_errors: list[str]
) -> None:
    from playwright.sync_api import expect

    url, uuids = logbook
    base = dashboard(url, "--allow-actions", env={"FLOWKIT_WEB_TOKEN": "browser-token"}).base
    page = browser
    page.goto(base + "/flows/" + uuids["waiting"])
    expect(page.locator("#flow-state")).to_have_text("WAITING")
    page.get_by_role("link", name="Log in", exact=True).click()
    page.get_by_label("Token").fill("wrong")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#login-failed")).to_be_visible()
    assert console_errors == ["Failed to load resource: the server responded with a status of 403 (Forbidden)"]
    console_errors.clear()
    page.get_by_label("Token").fill("browser-token")
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(base + "/flows/" + uuids["waiting"])

    page.get_by_placeholder("signal name").fill("approval")
    page.get_by_placeholder("JSON value").fill('{"by": "ann"}')
    page.get_by_role("button", name="Send signal").click()
    expect(page.locator("#flash")).to_contain_text("sent signal 'approval' to flow 'order-approval'")
    page.get_by_role("button", name="Resume").click()
    expect(page.locator("#flash")).to_contain_text("resuming flow 'order-approval'")
    wait_until(
        lambda: httpx.get(base + "/api/flows/" + uuids["waiting"]).json()["state"] == "SUCCESS",
        "the flow resumed from the browser to finish",
    )
    page.reload()
    expect(page.locator("#flow-state")).to_have_text("SUCCESS")
    expect(page.locator("#atoms")).to_contain_text('{"by": "ann"}')
    screenshot(page, tmp_path, "web-actions.png")


def test_resources_then_a_broken_one_then_its_operations_flow_in_chromium(
    browser: Any, dashboard: Callable[..., Dashboard], reconciled: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    url, found = reconciled
    base = dashboard(url, "--import", "tests.reconcile.flows").base
    page = browser
    page.goto(base + "/flows")
    page.get_by_role("link", name="Resources", exact=True).click()
    expect(page).to_have_url(base + "/resources")
    counts = page.locator("#counts")
    for text in ("converging 1", "converged 1", "broken 1", "unreachable 0"):
        expect(counts).to_contain_text(text)
    rows = page.locator("#resources tbody tr")
    expect(rows).to_have_count(3)
    broken = rows.filter(has_text="ip-broken")
    expect(broken).to_have_class("bad")
    expect(broken).to_contain_text("attach=3")
    expect(rows.filter(has_text="ip-ok")).not_to_have_class("bad")
    # The broken row stands out: its cells are not on the page's background.
    background = broken.locator("td").first.evaluate("td => getComputedStyle(td).backgroundColor")
    plain = rows.filter(has_text="ip-ok").locator("td").first.evaluate("td => getComputedStyle(td).backgroundColor")
    assert background != plain, (background, plain)
    screenshot(page, tmp_path, "web-resources.png")

    page.get_by_role("link", name="broken 1").click()
    expect(page).to_have_url(base + "/resources?status=broken&kind=")
    expect(rows).to_have_count(1)
    page.get_by_role("link", name="ip-broken").click()
    expect(page).to_have_url(base + "/resources/public_ip/ip-broken")
    expect(page.locator("#resource-status")).to_have_text("broken")
    expect(page.locator("#errors")).to_have_text("attach=3")
    expect(page.locator("#reason")).to_contain_text("attach failed 3 time(s) in a row")
    operations = page.locator("#operations tbody tr")
    expect(operations).to_have_count(3)
    expect(operations.first).to_contain_text("REVERTED")
    screenshot(page, tmp_path, "web-resource.png")

    first = operations.first.locator("a.flow-link")
    flow_uuid = first.inner_text()
    first.click()
    expect(page).to_have_url(base + "/flows/" + flow_uuid)
    expect(page.locator("h1")).to_contain_text("public_ip/ip-broken: attach")
    expect(page.locator("#flow-state")).to_have_text("REVERTED")
    expect(page.locator("#failures")).to_contain_text("attach of public_ip/ip-broken failed (injected)")
    screenshot(page, tmp_path, "web-resource-flow.png")
