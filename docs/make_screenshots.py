"""Make the README's screenshots of the focuser page (docs/device-*.png) with Debian's Chromium.

    .venv/bin/python docs/make_screenshots.py

A server with a simulated focuser on 127.0.0.1 (ephemeral port, discovery off, state in a temp folder). The
chart's hour of history is made up for the picture (a 2 °C cooling, with temperature compensation moving the
focuser out 24 steps every ten minutes, marked on the chart); everything else on the page is live. 
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from alpaca_focuser.app import FocuserServer
from alpaca_focuser.config import load_config

DOCS = Path(__file__).resolve().parent
CONFIG = """[server]
bind = "127.0.0.1"
port = 0
state_dir = "{state}"
[discovery]
enabled = false
[[focuser]]
name = "Refractor focuser"
speed = 2000
step_size = 4.5
max_step = 60000
temp_comp_coefficient = -12       # steps per degree C
"""


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="alpaca-focuser-") as tmp:
        path = Path(tmp) / "config.toml"
        path.write_text(CONFIG.format(state=Path(tmp) / "state"), encoding="utf-8")
        server = FocuserServer(load_config(path), multicast_interfaces=())
        server.start()
        try:
            device = server.devices[0]
            device.driver.sync(31240)
            device.set_connected(True)
            device.set_temp_comp(True)
            now_temp = device.driver.status().temperature or 8.0
            now = time.time()
            history = server.history
            for i in range(720, 0, -1):  # an hour at 5 s, oldest first
                t = now - i * 5
                temp = now_temp + 2.0 * i / 720 + 0.02 * ((i * 7919) % 13 - 6) / 6
                position = 31240 - 24 * (i // 120)  # compensation every 10 minutes as the tube cooled
                history.record(0, (round(t, 1), position, round(temp, 2), False))
                if i % 120 == 0:  # the picture's made-up corrections, as the focuser itself would record them
                    device.focusing.comp._events.append({"time": t, "temperature": round(temp, 2), "delta_c": -2.0,
                                                         "steps": 24, "target": position + 24})
            base = f"http://127.0.0.1:{server.port}/setup/v1/focuser/0/setup"
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
                shots = (("device-desktop.png", {"width": 1100, "height": 1040}, 1, False),
                         ("device-phone.png", {"width": 390, "height": 844}, 2, False),
                         ("device-phone-night.png", {"width": 390, "height": 844}, 2, True))
                for name, viewport, scale, night in shots:
                    context = browser.new_context(viewport=viewport, device_scale_factor=scale)
                    page = context.new_page()
                    page.goto(base)
                    page.wait_for_function("document.getElementById('connected').textContent === 'yes'")
                    if night:
                        page.click("#night")
                    page.wait_for_timeout(1500)
                    page.screenshot(path=str(DOCS / name))
                    context.close()
                browser.close()
        finally:
            server.stop()
    print("wrote", ", ".join(str(DOCS / n) for n in ("device-desktop.png", "device-phone.png",
                                                     "device-phone-night.png")))


if __name__ == "__main__":
    main()
