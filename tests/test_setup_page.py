"""The setup pages in a real browser: Debian's Chromium, headless, driven by Playwright, against a real server on
127.0.0.1 started from a real, commented config file.

The pages are JavaScript talking to the ordinary Alpaca API (status, motion) and to the settings endpoint, so these
tests cover the pages, their scripts, the API and the config writer together. Every test also fails on any
console error, uncaught page error or failed request (errors a test provokes on purpose are removed by that
test). Screenshots of both pages, desktop and phone, are saved under ``test-artifacts/`` (or $TEST_ARTIFACTS).
The whole module is skipped when /usr/bin/chromium is missing (CI installs it); no browser is ever downloaded.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from alpaca_focuser.app import FocuserServer
from alpaca_focuser.config import load_config
from conftest import REPO, started_until_teardown, wait_until

CHROMIUM = "/usr/bin/chromium"
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium); the browser tests need it",
                allow_module_level=True)

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", REPO / "test-artifacts"))
TIMEOUT_MS = 10_000
DESKTOP = {"width": 1100, "height": 800}
PHONE = {"width": 390, "height": 844}

CONFIG = """# Observatory focusers (this comment must survive saving from the page)
[server]
bind = "127.0.0.1"
port = 0
state_dir = "{state}"     # test state

[discovery]
enabled = false

[[focuser]]               # the fast one
name = "Fast focuser"
speed = 2000              # steps per second
step_size = 4.5
temp_comp_available = true

[[focuser]]
name = "Slow focuser"
speed = 500               # 3000 steps take 6 s: plenty of time to press Halt
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(state=tmp_path / "state"), encoding="utf-8")
    return path


@pytest.fixture
def start_server() -> Iterator[Callable[[Path], FocuserServer]]:
    def start(path: Path) -> FocuserServer:
        server = FocuserServer(load_config(path), multicast_interfaces=(), history_interval=0.5)
        server.start()
        return server

    yield from started_until_teardown(start, FocuserServer.stop)


@pytest.fixture
def server(start_server: Callable[[Path], FocuserServer], config_file: Path) -> FocuserServer:
    return start_server(config_file)


@pytest.fixture
def new_page(browser: Browser, server: FocuserServer) -> Iterator[Callable[..., Page]]:
    """Pages that record console errors, page errors and failed requests; none may be left at the end.
    (It depends on ``server`` so that its pages are closed before the server stops.)"""
    contexts: list[Any] = []
    pages: list[Page] = []

    def make(viewport: dict[str, int] = DESKTOP, **options: Any) -> Page:
        context = browser.new_context(viewport=viewport, **options)
        contexts.append(context)
        pg = context.new_page()
        pg.set_default_timeout(TIMEOUT_MS)
        problems: list[str] = []
        pg.on("console", lambda msg: problems.append(f"console.{msg.type}: {msg.text} "
                                                     f"({msg.location.get('url', '')})")
              if msg.type in ("error", "assert") else None)
        pg.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        # ERR_ABORTED is a poll cut short by the test's own reload or navigation, not a failure
        pg.on("requestfailed", lambda req: problems.append(f"request failed: {req.method} {req.url} {req.failure}")
              if "ERR_ABORTED" not in str(req.failure) else None)
        pg.problems = problems  # type: ignore[attr-defined]
        pages.append(pg)
        return pg

    yield make
    for context in contexts:
        context.close()
    for pg in pages:
        assert pg.problems == [], pg.problems  # type: ignore[attr-defined]


@pytest.fixture
def page(new_page: Callable[..., Page]) -> Page:
    return new_page()


def url(server: FocuserServer, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


def api(server: FocuserServer, member: str, device: int = 0) -> Any:
    reply = requests.get(url(server, f"/api/v1/focuser/{device}/{member}"), timeout=5).json()
    assert reply["ErrorNumber"] == 0, reply
    return reply["Value"]


def open_device_page(page: Page, server: FocuserServer, device: int) -> None:
    page.goto(url(server, f"/setup/v1/focuser/{device}/setup"))
    expect(page.locator("#connected")).to_have_text("no")  # the script has run its first refresh


def connect(page: Page) -> int:
    page.get_by_role("button", name="Connect", exact=True).click()
    expect(page.locator("#connected")).to_have_text("yes")
    expect(page.locator("#position")).to_have_text(re.compile(r"^\d+$"))
    return int(page.locator("#position").text_content() or "")


def forgive(page: Page, status: int, path_end: str) -> None:
    """Chromium logs every 4xx fetch as a console error: remove the one a test provoked, exactly once."""
    problems: list[str] = page.problems  # type: ignore[attr-defined]
    provoked = [p for p in problems if f"status of {status}" in p and p.endswith(f"{path_end})")]
    assert len(provoked) == 1, problems
    problems.remove(provoked[0])


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


# --- the server page --------------------------------------------------------------------------------------------

def test_server_page_lists_the_focusers_live_and_links_to_their_pages(page: Page, server: FocuserServer) -> None:
    server.devices[0].set_connected(True)
    page.goto(url(server, "/setup"))
    links = page.locator("#devices li a")
    expect(links).to_have_count(2)
    expect(links.nth(0)).to_have_text("Focuser 0: Fast focuser")
    expect(links.nth(1)).to_have_text("Focuser 1: Slow focuser")
    assert links.nth(1).get_attribute("href") == "/setup/v1/focuser/1/setup"
    first = page.locator("#devices li").nth(0)
    expect(first.locator('[data-field="connected"]')).to_have_text("yes")
    expect(first.locator('[data-field="position"]')).to_have_text("0")
    expect(page.locator("#devices li").nth(1).locator('[data-field="connected"]')).to_have_text("no")
    expect(page.locator("footer")).to_contain_text("alpaca-focuser 0.")
    expect(page.locator("main")).to_contain_text("Location: Backyard observatory")
    screenshot(page, "server-desktop.png")

    links.nth(0).click()
    page.wait_for_url(re.compile(r"/setup/v1/focuser/0/setup$"))
    expect(page.locator("h1")).to_have_text("Focuser 0: Fast focuser")
    configured = requests.get(url(server, "/management/v1/configureddevices"), timeout=5).json()["Value"]
    expect(page.locator("table.info tr", has_text="UniqueID").locator("td")).to_have_text(configured[0]["UniqueID"])


def test_adding_and_removing_focusers_waits_for_the_next_start(page: Page, server: FocuserServer,
                                                               config_file: Path,
                                                               start_server: Callable[[Path], FocuserServer]) -> None:
    page.goto(url(server, "/setup"))
    expect(page.locator("#add-port-field")).to_be_hidden()
    page.select_option("#add-driver", "moonlite")
    expect(page.locator("#add-port-field")).to_be_visible()
    page.fill("#add-name", "Main scope")
    page.get_by_role("button", name="Add").click()
    expect(page.locator("#add-e-port")).to_contain_text("[focuser #2] port: must not be empty")  # the loader's
    forgive(page, 422, "/setup/focusers")
    page.fill("#add-port", "/dev/serial/by-id/usb-test-port0")
    page.get_by_role("button", name="Add").click()
    expect(page.locator("#add-message")).to_contain_text("served from the next start of the server, as device "
                                                         "number 2")
    card = page.locator('#devices li[data-device="2"]')
    expect(card).to_contain_text("Added: served from the next start.")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator('#devices li[data-device="0"] button.enable').click()
    expect(page.locator('#devices li[data-device="0"]')).to_contain_text("Removed: no longer served")
    assert api(server, "name", 0) == "Fast focuser", "still served until the restart"

    page.goto("about:blank")  # stop its polling before the server goes away
    server.stop()
    again = start_server(config_file)
    configured = requests.get(url(again, "/management/v1/configureddevices"), timeout=5).json()["Value"]
    assert [(d["DeviceNumber"], d["DeviceName"]) for d in configured] == [(1, "Slow focuser"), (2, "Main scope")]
    assert "# the fast one" in config_file.read_text()


# --- the focuser page: control ----------------------------------------------------------------------------------

def test_out_100_moves_exactly_100_steps_and_in_1_back_one(page: Page, server: FocuserServer) -> None:
    open_device_page(page, server, 0)
    start = connect(page)
    page.get_by_role("button", name="Out 100", exact=True).click()
    expect(page.locator("#position")).to_have_text(str(start + 100))
    expect(page.locator("#moving")).to_have_text("no")
    assert api(server, "position") == start + 100
    page.get_by_role("button", name="In 1", exact=True).click()
    expect(page.locator("#position")).to_have_text(str(start + 99))
    assert api(server, "position") == start + 99
    # every step button is there with its accessible name; the visible text is short
    for name in ("In 1000", "In 100", "In 10", "In 1", "Out 1", "Out 10", "Out 100", "Out 1000"):
        expect(page.get_by_role("button", name=name, exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Out 1000", exact=True)).to_have_text("+1000")
    expect(page.locator("#message")).to_have_text("")


def test_halt_is_large_while_moving_and_stops_a_long_move(page: Page, server: FocuserServer) -> None:
    open_device_page(page, server, 1)
    start = connect(page)
    halt = page.get_by_role("button", name="Halt", exact=True)
    normal = halt.bounding_box()
    page.fill("#target", str(start + 3000))
    page.get_by_role("button", name="Move", exact=True).click()
    expect(page.locator("#moving")).to_have_text("yes")
    expect(page.locator("#target-shown")).to_have_text(str(start + 3000))
    wait_until(lambda: api(server, "position", 1) > start + 100, timeout=5)
    big = halt.bounding_box()
    assert normal is not None and big is not None and big["height"] >= 70 > normal["height"]
    assert big["y"] + big["height"] <= DESKTOP["height"] + 1, "pinned inside the viewport"
    halt.click()
    expect(page.locator("#moving")).to_have_text("no")
    stopped = api(server, "position", 1)
    assert start < stopped < start + 3000
    expect(page.locator("#position")).to_have_text(str(stopped))
    page.wait_for_timeout(700)
    assert api(server, "position", 1) == stopped
    expect(page.locator("#target-shown")).to_have_text("-")


def test_chart_is_full_on_open_and_gains_points_while_moving(page: Page, server: FocuserServer) -> None:
    server.devices[1].set_connected(True)
    wait_until(lambda: len(server.history.history(1)["samples"]) >= 4, timeout=10)
    open_device_page_connected = url(server, "/setup/v1/focuser/1/setup")
    page.goto(open_device_page_connected)
    chart = page.locator("svg#chart[role='img']")
    expect(chart).to_have_attribute("aria-label", re.compile(r"Position.*temperature", re.I))
    expect(chart).to_have_attribute("data-points", re.compile(r"^([4-9]|\d\d+)$"))  # the server's history
    expect(chart.locator("path.pos-line")).to_have_attribute("d", re.compile(r"^M"))
    expect(chart.locator("path.temp-line")).to_have_attribute("d", re.compile(r"^M"))
    expect(page.locator("#connected")).to_have_text("yes")
    before = int(chart.get_attribute("data-points") or 0)
    page.get_by_role("button", name="Out 1000", exact=True).click()  # 2 s at 500 steps/s
    expect(page.locator("#moving")).to_have_text("yes")
    page.wait_for_timeout(1200)
    during = int(chart.get_attribute("data-points") or 0)
    assert during >= before + 2, (before, during)
    expect(page.locator("#moving")).to_have_text("no")
    assert int(chart.get_attribute("data-points") or 0) > during


LEARNING_CONFIG = """# learning test
[server]
bind = "127.0.0.1"
port = 0
state_dir = "{state}"

[discovery]
enabled = false

[[focuser]]
name = "Learning focuser"
speed = 20000
temp_comp_coefficient = -5      # to be replaced by the learned one
temp_comp_threshold = 0.2
temp_comp_window_s = 1
temp_comp_learn_idle_s = 1
"""


def test_chart_marks_compensation_and_the_learned_coefficient_can_be_applied(
        new_page: Callable[..., Page], start_server: Callable[[Path], FocuserServer], tmp_path: Path) -> None:
    """Three autofocus results 1 C apart (true slope -20 steps/C) teach the server a coefficient; a cool-down with
    TempComp on makes corrections. The page marks them on the chart, shows the learned coefficient, and its
    button puts it into the running focuser and the config file, comments kept."""
    path = tmp_path / "config.toml"
    path.write_text(LEARNING_CONFIG.format(state=tmp_path / "state"), encoding="utf-8")
    server = start_server(path)
    device = server.devices[0]
    device.set_connected(True)
    base_url = url(server, "/api/v1/focuser/0")

    def put(member: str, **form: str) -> Any:
        reply = requests.put(f"{base_url}/{member}", data=form, timeout=10).json()
        assert reply["ErrorNumber"] == 0, reply
        return reply.get("Value")

    for temperature, position in ((12.0, 10000), (11.0, 10020), (10.0, 10040)):
        put("action", Action="SimulatorSetTemperature", Parameters=str(temperature))
        time.sleep(1.2)  # the averaging window fills with the new temperature
        put("move", Position=str(position))
        wait_until(lambda: api(server, "ismoving") is False)
        time.sleep(1.3)  # idle for temp_comp_learn_idle_s: the pair is recorded
    learned = json.loads(put("action", Action="TempCompLearned", Parameters=""))
    assert learned["points"] == 3 and learned["coefficient"] == pytest.approx(-20.0)
    put("tempcomp", TempComp="true")
    put("action", Action="SimulatorSetTemperature", Parameters="9")
    wait_until(lambda: device.temp_comp_corrections >= 1 and api(server, "ismoving") is False, timeout=15)

    page = new_page()
    page.goto(url(server, "/setup/v1/focuser/0/setup"))
    expect(page.locator("#connected")).to_have_text("yes")
    # TempCompAvailable comes from the simulator's sensor (the config leaves it unset): the switch shows, and is on
    expect(page.get_by_role("checkbox", name="Temperature compensation", exact=True)).to_be_checked()
    expect(page.locator("#tempcomp")).to_have_text("on")
    chart = page.locator("svg#chart")
    expect(chart.locator("path.mark")).to_have_count(device.temp_comp_corrections)
    expect(chart.locator("path.mark title").first).to_contain_text("Temperature compensation: +")
    expect(page.locator(".legend .mark")).to_be_visible()
    expect(page.locator("#learned-value")).to_contain_text("-20.0 steps/°C from 3 points over 2.0 °C")
    page.get_by_role("button", name="Use learned coefficient").click()
    expect(page.locator("#message")).to_contain_text("Learned coefficient applied and saved")
    assert device.cfg.temp_comp_coefficient == pytest.approx(-20.0)
    text = path.read_text(encoding="utf-8")
    assert "temp_comp_coefficient = -20.0" in text and "# learning test" in text
    assert "# to be replaced by the learned one" in text
    page.reload()
    expect(page.locator("input[name='temp_comp_coefficient']")).to_have_value(re.compile(r"^-20(\.0)?$"))


# --- the focuser page: settings ---------------------------------------------------------------------------------

def test_a_saved_setting_survives_a_restart_and_the_file_keeps_its_comments(
        page: Page, server: FocuserServer, config_file: Path, start_server: Callable[[Path], FocuserServer],
        new_page: Callable[..., Page]) -> None:
    comments = [line for line in config_file.read_text().splitlines() if "#" in line]
    open_device_page(page, server, 0)
    page.get_by_label("Name", exact=True).fill("Renamed focuser")
    page.get_by_label("Maximum step (MaxStep)").fill("42000")
    page.get_by_label("Speed").fill("1500")
    page.get_by_role("button", name="Save").click()
    message = page.locator("#settings-message")
    expect(message).to_contain_text(f"Saved to {config_file}.")
    expect(message).to_contain_text("Applied now: name, max_step")
    expect(message).to_contain_text("Takes effect when the focuser reconnects (Disconnect, then Connect): speed")
    expect(page.locator("h1")).to_have_text("Focuser 0: Renamed focuser")
    assert api(server, "name") == "Renamed focuser" and server.devices[0].max_step() == 42000
    text = config_file.read_text()
    for line in comments:
        assert line.split("#", 1)[1] in text, line
    assert 'name = "Renamed focuser"' in text and "speed = 1500              # steps per second" in text

    page.goto("about:blank")  # stop its polling before the server goes away
    server.stop()
    again = start_server(config_file)
    fresh = new_page()
    open_device_page(fresh, again, 0)
    expect(fresh.get_by_label("Name", exact=True)).to_have_value("Renamed focuser")
    expect(fresh.get_by_label("Maximum step (MaxStep)")).to_have_value("42000")
    expect(fresh.get_by_label("Speed")).to_have_value("1500")
    assert api(again, "name") == "Renamed focuser" and again.devices[0].max_step() == 42000
    assert again.devices[0].cfg.speed == 1500


def test_an_invalid_value_shows_the_loaders_message_next_to_the_field(page: Page, server: FocuserServer,
                                                                      config_file: Path) -> None:
    before = config_file.read_bytes()
    open_device_page(page, server, 0)
    field = page.get_by_label("Maximum increment (MaxIncrement)")
    field.fill("60000")
    page.get_by_label("Name", exact=True).fill("Should not be saved")
    page.get_by_role("button", name="Save").click()
    error = page.locator("#e-max_increment")
    expect(error).to_contain_text("max_increment: must not exceed max_step (50000), got 60000")
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(field).to_be_focused()
    expect(page.locator("#settings-message")).to_contain_text("Nothing was changed")
    forgive(page, 422, "/setup/v1/focuser/0/settings")
    assert config_file.read_bytes() == before
    assert api(server, "name") == "Fast focuser" and server.devices[0].max_increment() == 50000
    # fixing it clears the message and saves
    field.fill("40000")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#settings-message")).to_contain_text("Applied now:")
    expect(error).to_have_text("")
    assert server.devices[0].max_increment() == 40000


def test_a_hostile_name_is_shown_as_text(new_page: Callable[..., Page], tmp_path: Path,
                                         start_server: Callable[[Path], FocuserServer]) -> None:
    hostile = '<script>window.pwned = 1</script><b>bold</b>"'
    path = tmp_path / "hostile.toml"
    path.write_text(f'[server]\nbind = "127.0.0.1"\nport = 0\nstate_dir = "{tmp_path / "st"}"\n'
                    f"[discovery]\nenabled = false\n[[focuser]]\nname = '{hostile}'\n", encoding="utf-8")
    server = start_server(path)
    page = new_page()
    page.goto(url(server, "/setup"))
    expect(page.locator("#devices li a")).to_have_text(f"Focuser 0: {hostile}")
    open_device_page(page, server, 0)
    expect(page.locator("h1")).to_have_text(f"Focuser 0: {hostile}")
    expect(page.get_by_label("Name", exact=True)).to_have_value(hostile)
    assert page.evaluate("window.pwned") is None
    assert page.locator("main b, header b").count() == 0
    # and one saved from the page is kept as text too
    page.get_by_label("Name", exact=True).fill("<img src=x onerror=window.pwned=2>")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("h1")).to_have_text("Focuser 0: <img src=x onerror=window.pwned=2>")
    page.reload()
    expect(page.locator("h1")).to_have_text("Focuser 0: <img src=x onerror=window.pwned=2>")
    assert page.evaluate("window.pwned") is None and page.locator("img").count() == 0


def test_with_a_setup_password_the_browser_asks_and_saving_works(
        new_page: Callable[..., Page], tmp_path: Path, start_server: Callable[[Path], FocuserServer]) -> None:
    from alpaca_focuser.passwords import hash_password

    path = tmp_path / "locked.toml"
    path.write_text(f'[server]\nbind = "127.0.0.1"\nport = 0\nstate_dir = "{tmp_path / "st"}"\n'
                    f'setup_password_hash = "{hash_password("night sky 42")}"\n'
                    '[discovery]\nenabled = false\n[[focuser]]\nname = "Locked"\n', encoding="utf-8")
    server = start_server(path)
    page = new_page(http_credentials={"username": "me", "password": "night sky 42"})
    open_device_page(page, server, 0)  # the page itself needs no password
    page.get_by_label("Name", exact=True).fill("Unlocked")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#settings-message")).to_contain_text("Applied now: name")
    assert api(server, "name") == "Unlocked"
    wrong = new_page(http_credentials={"username": "me", "password": "guess"})
    open_device_page(wrong, server, 0)
    wrong.get_by_label("Name", exact=True).fill("Intruder")
    wrong.get_by_role("button", name="Save").click()
    expect(wrong.locator("#settings-message")).to_contain_text("Not saved: HTTP 401")
    forgive(wrong, 401, "/setup/v1/focuser/0/settings")
    assert api(server, "name") == "Unlocked"


# --- phone, night mode, screenshots -----------------------------------------------------------------------------

def _overflowing_controls(page: Page) -> list[str]:
    """Visible controls that are not wholly inside the viewport's width, and the page's horizontal overflow."""
    return page.evaluate("""() => {
        const width = document.documentElement.clientWidth;
        const bad = [];
        if (document.documentElement.scrollWidth > width) bad.push('page scrollWidth ' +
            document.documentElement.scrollWidth + ' > ' + width);
        for (const el of document.querySelectorAll('button, input, select, a, svg, output')) {
            const r = el.getBoundingClientRect();
            if (r.width === 0 && r.height === 0) continue;  // hidden
            if (r.left < 0 || r.right > width + 0.5) bad.push((el.id || el.getAttribute('aria-label') ||
                el.textContent.trim().slice(0, 20)) + ' ' + r.left + '..' + r.right);
        }
        return bad;
    }""")


def test_phone_layout_shows_every_control_without_horizontal_scrolling(new_page: Callable[..., Page],
                                                                      server: FocuserServer) -> None:
    page = new_page(PHONE)
    open_device_page(page, server, 0)
    connect(page)
    page.get_by_role("button", name="Out 1000", exact=True).click()
    expect(page.locator("#position")).to_have_text(re.compile(r"^\d+$"))
    expect(page.locator("#moving")).to_have_text("no")
    assert _overflowing_controls(page) == []
    for name in ("Connect", "Disconnect", "In 1000", "Out 1000", "Move", "Halt", "Save", "Night mode"):
        button = page.get_by_role("button", name=name, exact=True)
        button.scroll_into_view_if_needed()
        expect(button).to_be_visible()
        box = button.bounding_box()
        assert box is not None and box["height"] >= 44 and box["width"] >= 44, (name, box)
    expect(page.get_by_role("checkbox", name="Temperature compensation", exact=True)).to_be_enabled()
    screenshot(page, "device-phone.png")
    page.goto(url(server, "/setup"))
    expect(page.locator("#devices li")).to_have_count(2)
    assert _overflowing_controls(page) == []
    screenshot(page, "server-phone.png")


def test_night_mode_is_remembered_across_a_reload(page: Page, server: FocuserServer) -> None:
    open_device_page(page, server, 0)
    connect(page)
    html = page.locator("html")
    expect(html).not_to_have_attribute("data-night", "1")
    night = page.get_by_role("button", name="Night mode")
    night.click()
    expect(html).to_have_attribute("data-night", "1")
    expect(night).to_have_attribute("aria-pressed", "true")
    page.reload()
    expect(html).to_have_attribute("data-night", "1")
    expect(page.get_by_role("button", name="Night mode")).to_have_attribute("aria-pressed", "true")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    color = page.evaluate("getComputedStyle(document.querySelector('#position')).color")
    assert background == "rgb(0, 0, 0)"
    red, green, blue = (int(x) for x in re.findall(r"\d+", color)[:3])
    assert red >= 180 and green == 0 and blue == 0, color
    page.goto(url(server, "/setup"))  # the other page too
    expect(html).to_have_attribute("data-night", "1")
    page.get_by_role("button", name="Night mode").click()
    page.reload()
    expect(html).not_to_have_attribute("data-night", "1")


def test_desktop_screenshot_of_the_device_page(page: Page, server: FocuserServer) -> None:
    server.devices[0].set_connected(True)
    open_device_page_url = url(server, "/setup/v1/focuser/0/setup")
    page.goto(open_device_page_url)
    expect(page.locator("#connected")).to_have_text("yes")
    page.get_by_role("button", name="Out 100", exact=True).click()
    expect(page.locator("#position")).to_have_text("100")
    assert _overflowing_controls(page) == []
    screenshot(page, "device-desktop.png")


def test_bad_move_entries_show_an_error_and_move_nothing(page: Page, server: FocuserServer) -> None:
    moves: list[str] = []
    page.on("request", lambda req: moves.append(req.url) if req.url.endswith("/move") else None)
    open_device_page(page, server, 0)
    start = connect(page)
    for text in ("abc", "1.5", ""):
        page.fill("#target", text)
        page.get_by_role("button", name="Move", exact=True).click()
        expect(page.locator("#message")).to_have_text("Enter a whole number of steps")
    assert moves == []
    page.fill("#target", "99999999999")  # passes the page's check, not the server's: the API's 400 text shows
    page.get_by_role("button", name="Move", exact=True).click()
    expect(page.locator("#message")).to_contain_text("HTTP 400")
    forgive(page, 400, "/api/v1/focuser/0/move")
    page.wait_for_timeout(300)
    assert api(server, "ismoving") is False and api(server, "position") == start
