"""The dashboard in a real browser: Debian's Chromium, headless, driven through Playwright.

The server is the ``flowkit web`` command in a process of its own, on a free
local port, over an SQLite logbook holding a flow that succeeded, one that
failed with a traceback and one waiting for a signal.  The test clicks from
the list to the failed flow and opens its failure, as a person would, and
saves a screenshot of each step (in the test's tmp dir and, when
``$FLOWKIT_ARTIFACTS_DIR`` is set, there too).  Mode-independent: runs once.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
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


@pytest.fixture
def dashboard(logbook: Any, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """``flowkit web`` serving the logbook in a child process; its base URL and the flows' uuids."""
    url, uuids = logbook
    port = free_port()
    log = open(tmp_path / "web.log", "w+", encoding="utf-8")  # noqa: SIM115 - closed below
    child = subprocess.Popen(
        [
            sys.executable, "-m", "flowkit.cli", "web", "--backend", url, "--port", str(port),
            "--import", "tests.web.flows", "--mask-key", "password", "--refresh", "0",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = "http://127.0.0.1:%d" % (port,)

    def up() -> bool:
        if child.poll() is not None:
            raise AssertionError("flowkit web exited with %s" % (child.returncode,))
        try:
            return httpx.get(base + "/api/flows", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def output() -> str:
        log.seek(0)
        return log.read()

    try:
        wait_until(up, "flowkit web to answer on port %d" % (port,), detail=output)
        yield base, uuids
    finally:
        child.terminate()
        child.wait(30)
        log.close()


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
    chromium: str, dashboard: tuple[str, dict[str, str]], tmp_path: Path, dot_program: str
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, uuids = dashboard
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
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
            assert errors == [], errors  # the page asked for nothing the policy refuses
        finally:
            browser.close()
