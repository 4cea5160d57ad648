"""The setup pages in a real browser: Debian's Chromium, headless, driven by Playwright, against a real server.

The live panel of ``/setup/v1/focuser/{n}/setup`` is JavaScript talking to the ordinary Alpaca API, so these
tests cover the page, its script and the API together. Every test also fails on any console error, uncaught
page error or failed request. The whole module is skipped when /usr/bin/chromium is missing (CI installs it with
``apt-get install chromium``); no browser is ever downloaded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from alpaca_focuser.app import FocuserServer
from conftest import wait_until

CHROMIUM = "/usr/bin/chromium"
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium); the browser tests need it",
                allow_module_level=True)

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
SCREENSHOT = "/tmp/setup-page.png"
TIMEOUT_MS = 10_000

FAST = {"name": "Fast focuser", "speed": 2000, "step_size": 4.5}
SLOW = {"name": "Slow focuser", "speed": 500}  # 3000 steps take 6 s: plenty of time to press Halt


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def server(server_factory: Callable[..., FocuserServer]) -> FocuserServer:
    return server_factory(FAST, SLOW)


@pytest.fixture
def page(browser: Browser, server: FocuserServer) -> Iterator[Page]:
    """A fresh page that records console errors, page errors and failed requests; none are allowed.
    (It depends on ``server`` so that it is closed before the server stops.)"""
    context = browser.new_context(viewport={"width": 1000, "height": 700})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []

    def on_console(msg: Any) -> None:
        url = msg.location.get("url", "")
        if msg.type not in ("error", "assert"):
            return
        problems.append(f"console.{msg.type}: {msg.text} ({url})")

    pg.on("console", on_console)
    pg.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    pg.on("requestfailed", lambda req: problems.append(f"request failed: {req.method} {req.url} {req.failure}"))
    pg.problems = problems  # type: ignore[attr-defined]
    yield pg
    context.close()
    assert problems == [], problems


def api(server: FocuserServer, member: str, device: int = 0) -> Any:
    reply = requests.get(f"http://127.0.0.1:{server.port}/api/v1/focuser/{device}/{member}", timeout=5).json()
    assert reply["ErrorNumber"] == 0, reply
    return reply["Value"]


def open_device_page(page: Page, server: FocuserServer, device: int) -> None:
    page.goto(f"http://127.0.0.1:{server.port}/setup/v1/focuser/{device}/setup")
    expect(page.locator("#connected")).to_have_text("no")  # the script has run its first refresh


def connect(page: Page) -> None:
    page.click("#connect")
    expect(page.locator("#connected")).to_have_text("yes")
    expect(page.locator("#position")).to_have_text(re.compile(r"^\d+$"))


def test_server_page_lists_the_focusers_and_links_to_their_pages(page: Page, server: FocuserServer) -> None:
    page.goto(f"http://127.0.0.1:{server.port}/setup")
    links = page.locator("#devices li a")
    expect(links).to_have_count(2)
    expect(links.nth(0)).to_contain_text("Fast focuser")
    expect(links.nth(1)).to_contain_text("Slow focuser")
    assert links.nth(1).get_attribute("href") == "/setup/v1/focuser/1/setup"

    links.nth(0).click()
    page.wait_for_url(re.compile(r"/setup/v1/focuser/0/setup$"))
    expect(page.locator("h1")).to_contain_text("Fast focuser")
    info = page.locator("table.info")
    expect(info.locator("tr", has_text="Name").locator("td")).to_have_text("Fast focuser")
    # The UniqueID shown is the one the management API gives clients
    configured = requests.get(f"http://127.0.0.1:{server.port}/management/v1/configureddevices", timeout=5).json()
    unique_id = configured["Value"][0]["UniqueID"]
    assert unique_id
    expect(info.locator("tr", has_text="UniqueID").locator("td")).to_have_text(unique_id)
    expect(page.locator("#connected")).to_have_text("no")


def test_connect_then_move_to_a_typed_target(page: Page, server: FocuserServer) -> None:
    open_device_page(page, server, 0)
    expect(page.locator("#position")).to_have_text("-")
    connect(page)
    assert api(server, "connected") is True
    start = int(page.locator("#position").text_content() or "")
    expect(page.locator("#moving")).to_have_text("no")
    expect(page.locator("#temperature")).to_have_text(re.compile(r"^-?\d+\.\d °C$"))

    target = start + 1500
    page.fill("#target", str(target))
    page.click("#move")
    # the page shows the position changing, then arriving exactly at the target
    expect(page.locator("#position")).not_to_have_text(str(start))
    expect(page.locator("#position")).to_have_text(str(target))
    expect(page.locator("#moving")).to_have_text("no")
    expect(page.locator("#message")).to_have_text("")
    assert api(server, "position") == target
    page.screenshot(path=SCREENSHOT, full_page=True)


def test_halt_stops_a_slow_move(page: Page, server: FocuserServer) -> None:
    open_device_page(page, server, 1)
    connect(page)
    start = int(page.locator("#position").text_content() or "")
    target = start + 3000
    page.fill("#target", str(target))
    page.click("#move")
    expect(page.locator("#moving")).to_have_text("yes")
    wait_until(lambda: api(server, "position", 1) > start + 100, timeout=5)
    page.click("#halt")
    expect(page.locator("#moving")).to_have_text("no")
    assert api(server, "ismoving", 1) is False
    stopped = api(server, "position", 1)
    assert start < stopped < target
    # the page shows where it stopped, and it stays there
    expect(page.locator("#position")).to_have_text(str(stopped))
    page.wait_for_timeout(700)
    assert api(server, "position", 1) == stopped
    expect(page.locator("#position")).to_have_text(str(stopped))
    expect(page.locator("#message")).to_have_text("")


def test_bad_entries_show_an_error_and_move_nothing(page: Page, server: FocuserServer) -> None:
    moves: list[str] = []
    page.on("request", lambda req: moves.append(req.url) if req.url.endswith("/move") else None)
    open_device_page(page, server, 0)
    connect(page)
    start = api(server, "position")

    # Not a number at all: the page refuses it before calling the API
    page.fill("#target", "")
    page.locator("#target").press_sequentially("abc")
    page.click("#move")
    expect(page.locator("#message")).to_have_text("Enter a whole number of steps")
    # A fraction is not a whole number of steps either
    page.fill("#target", "1.5")
    page.click("#move")
    expect(page.locator("#message")).to_have_text("Enter a whole number of steps")
    assert moves == []

    # Passes the page's check but not the server's (beyond 32 bits): the API's 400 text reaches the user
    page.fill("#target", "99999999999")
    page.click("#move")
    expect(page.locator("#message")).to_contain_text("HTTP 400")
    expect(page.locator("#message")).to_contain_text("Position")
    assert len(moves) == 1
    # Chromium logs every 4xx fetch as a console error; this one was provoked on purpose, anything else fails
    problems: list[str] = page.problems  # type: ignore[attr-defined]
    provoked = [p for p in problems if "status of 400" in p and p.endswith("/api/v1/focuser/0/move)")]
    assert len(provoked) == 1, problems
    problems.remove(provoked[0])

    page.wait_for_timeout(300)
    assert api(server, "ismoving") is False
    assert api(server, "position") == start
    expect(page.locator("#moving")).to_have_text("no")
    expect(page.locator("#position")).to_have_text(str(start))


def test_no_favicon_404_in_the_console(browser: Browser, server: FocuserServer) -> None:
    context = browser.new_context()
    pg = context.new_page()
    errors: list[str] = []
    pg.on("console", lambda msg: errors.append(f"{msg.text} ({msg.location.get('url')})")
          if msg.type == "error" else None)
    try:
        pg.goto(f"http://127.0.0.1:{server.port}/setup")
        pg.goto(f"http://127.0.0.1:{server.port}/setup/v1/focuser/0/setup")
        expect(pg.locator("#connected")).to_have_text("no")
        pg.wait_for_timeout(300)
    finally:
        context.close()
    assert errors == []
