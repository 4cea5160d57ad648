"""The setup pages: ``/setup`` (the server and its focusers) and ``/setup/v1/focuser/{n}/setup`` (one focuser).

Pages are plain HTML rendered here with every value escaped; the live parts are small JavaScript modules in
``web/`` that talk to the ordinary Alpaca API, so the pages exercise exactly what clients use. Settings writes
go to the endpoints in ``setup_api``.
"""

from __future__ import annotations

from html import escape
from importlib import resources
from typing import Callable

import falcon

from alpaca_focuser import __version__
from alpaca_focuser.alpaca.device_api import find_device
from alpaca_focuser.alpaca.params import BadRequest
from alpaca_focuser.alpaca.setup_api import (
    AddFocuserResource,
    FocuserSettingsResource,
    Guard,
    HistoryResource,
)
from alpaca_focuser.alpaca.setup_form import render_settings_form
from alpaca_focuser.config_keys import DRIVERS, PORT_DRIVERS
from alpaca_focuser.focuser.device import FocuserDevice
from alpaca_focuser.history import HistorySampler
from alpaca_focuser.settings import Settings

STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
STEPS = (1000, 100, 10, 1)

#: (path, description) of each serial port, for the add-focuser form; app assembly passes the drivers' listing.
PortLister = Callable[[], list[tuple[str, str]]]


def _page(title: str, body: str, script: str | None, back: bool = True) -> str:
    nav = '<a class="back" href="/setup">All focusers</a>' if back else ""
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<meta name=\"color-scheme\" content=\"dark\">"
            f"<title>{escape(title)}</title><link rel=\"icon\" href=\"data:,\">"
            f"<link rel=\"stylesheet\" href=\"/static/style.css\"><script src=\"/static/night.js\"></script>"
            + (f"<script type=\"module\" src=\"/static/{script}\"></script>" if script else "") + "</head>"
            f"<body><header><div class=\"bar\">{nav}<button type=\"button\" id=\"night\" aria-pressed=\"false\">"
            f"Night mode</button></div><h1>{escape(title)}</h1></header>"
            f"<main>{body}</main><footer>alpaca-focuser {escape(__version__)}</footer></body></html>\n")


def _table(rows: list[tuple[str, object]]) -> str:
    def shown(v: object) -> str:
        return ("yes" if v else "no") if isinstance(v, bool) else str(v)

    cells = "".join(f"<tr><th scope=\"row\">{escape(k)}</th><td>{escape(shown(v))}</td></tr>" for k, v in rows)
    return f"<table class=\"info\">{cells}</table>"


def _html(resp: falcon.Response, text: str, status: str = falcon.HTTP_200) -> None:
    resp.status = status
    resp.content_type = "text/html; charset=utf-8"
    resp.cache_control = ["no-store"]
    resp.text = text


class ServerSetupPage:
    def __init__(self, devices: dict[int, FocuserDevice], settings: Settings, location: str,
                 list_ports: PortLister) -> None:
        self.devices = devices
        self.settings = settings
        self.location = location
        self.list_ports = list_ports

    def _card(self, number: int) -> str:
        cfg = self.settings.saved.focusers[number]
        device = self.devices.get(number)
        running = device is not None
        name = device.name() if device is not None else cfg.name
        title = f"Focuser {number}: {name}"
        link = (f'<a href="/setup/v1/focuser/{number}/setup">{escape(title)}</a>' if running
                else f"<span class=\"name\">{escape(title)}</span>")
        if running and cfg.enabled:
            state, action = "", ("Remove at next start", "false")
        elif running:
            state, action = "Removed: no longer served from the next start.", ("Keep serving", "true")
        elif cfg.enabled:
            state, action = "Added: served from the next start.", ("Do not add", "false")
        else:
            state, action = "Disabled: its table keeps device number " f"{number}.", ("Serve from next start", "true")
        port = cfg.port or "-"
        live = ('<p class="live">Connected <output data-field="connected">?</output> · Position '
                '<output data-field="position">-</output> · Moving <output data-field="moving">-</output></p>'
                if running else "")
        note = f'<p class="note">{escape(state)}</p>' if state else ""
        return (f'<li class="card" data-device="{number}" data-running="{"1" if running else "0"}">{link}'
                f'<p class="meta">{escape(cfg.driver)} · port {escape(port)}</p>{live}{note}'
                f'<button type="button" class="secondary enable" data-enable="{action[1]}">{escape(action[0])}'
                f"</button></li>")

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        cards = "".join(self._card(n) for n in range(len(self.settings.saved.focusers)))
        driver_options = "".join(f'<option value="{escape(d)}">{escape(d)}</option>' for d in DRIVERS)
        ports = "".join(f'<option value="{escape(path)}">{escape(text)}</option>' for path, text in self.list_ports())
        serial = escape(" ".join(PORT_DRIVERS))
        body = (
            f"<section><p>Location: {escape(self.location)} · Settings file: <code>{escape(str(self.settings.path))}"
            f"</code></p><h2>Focusers</h2><ul id=\"devices\">{cards}</ul>"
            "<p id=\"list-message\" role=\"status\" aria-live=\"polite\"></p>"
            "<p class=\"note\">Adding or removing a focuser takes effect at the next start of the server; device "
            "numbers of the other focusers never change.</p></section>"
            "<section><h2>Add a focuser</h2><form id=\"add-form\" novalidate>"
            f"<div class=\"field\"><label for=\"add-driver\">Driver</label><select id=\"add-driver\" name=\"driver\" "
            f"data-serial=\"{serial}\">{driver_options}</select></div>"
            "<div class=\"field\"><label for=\"add-name\">Name</label><input id=\"add-name\" name=\"name\" "
            "type=\"text\" autocomplete=\"off\" aria-describedby=\"add-e-name\">"
            "<span id=\"add-e-name\" class=\"field-error\" aria-live=\"polite\"></span></div>"
            "<div class=\"field\" id=\"add-port-field\" hidden><label for=\"add-port\">Serial port</label>"
            "<input id=\"add-port\" name=\"port\" type=\"text\" list=\"ports\" autocomplete=\"off\" "
            "spellcheck=\"false\" aria-describedby=\"add-h-port add-e-port\">"
            f"<datalist id=\"ports\">{ports}</datalist><small id=\"add-h-port\" class=\"help\">Ports found now "
            "(as <code>alpaca-focuser ports</code> lists them); prefer a /dev/serial/by-id path</small>"
            "<span id=\"add-e-port\" class=\"field-error\" aria-live=\"polite\"></span></div>"
            "<div class=\"save-row\"><button type=\"submit\" class=\"primary\">Add</button>"
            "<p id=\"add-message\" role=\"status\" aria-live=\"polite\"></p></div></form></section>")
        _html(resp, _page("Alpaca focuser server", body, "server.js", back=False))


def _status_panel(device: FocuserDevice) -> str:
    cfg = device.cfg
    steps = "".join(
        f'<button type="button" class="step" data-steps="{sign * n}" aria-label="{label} {n}">'
        f'{"−" if sign < 0 else "+"}{n}</button>'
        for sign, label, order in ((-1, "In", STEPS), (1, "Out", tuple(reversed(STEPS)))) for n in order)
    move = ("" if not cfg.absolute else
            '<form id="move-form" class="inline"><label for="target">Move to</label>'
            '<input id="target" type="text" inputmode="numeric" autocomplete="off">'
            '<button type="submit" id="move">Move</button></form>')
    # Shown once connected when TempCompAvailable says so (it may depend on the hardware's sensor).
    tempcomp = ('<label class="toggle" id="tempcomp-control" hidden><input type="checkbox" id="tempcomp-toggle" '
                'disabled> Temperature compensation</label>')
    return f"""
<section id="control" data-device="{device.device_number}" data-absolute="{'1' if cfg.absolute else '0'}">
  <div class="readout">
    <div class="big"><span class="label">Position</span><output id="position">-</output></div>
    <div><span class="label">Target</span><output id="target-shown">-</output></div>
    <div><span class="label">Moving</span><output id="moving">?</output></div>
    <div><span class="label">Temperature</span><output id="temperature">-</output></div>
    <div><span class="label">Temp. comp.</span><output id="tempcomp">-</output></div>
    <div><span class="label">Connected</span><output id="connected">?</output></div>
  </div>
  <div class="row"><button type="button" id="connect">Connect</button>
    <button type="button" id="disconnect" class="secondary">Disconnect</button></div>
  <div class="steps" role="group" aria-label="Step in (−) or out (+)">{steps}</div>
  {move}
  {tempcomp}
  <button type="button" id="halt" class="halt">Halt</button>
  <p id="message" role="status" aria-live="polite"></p>
</section>"""


class FocuserSetupPage:
    def __init__(self, devices: dict[int, FocuserDevice], settings: Settings) -> None:
        self.devices = devices
        self.settings = settings

    def on_get(self, req: falcon.Request, resp: falcon.Response, device_type: str, device_number: str) -> None:
        try:
            device = find_device(self.devices, device_type, device_number)
        except BadRequest as exc:
            # The Management API: "an HTTP status code of 403 indicates that an invalid URL was sent to the
            # /setup browser interface", with an HTML body like every other /setup reply.
            body = f"<p>{escape(str(exc))}</p>"
            _html(resp, _page("No such device", body, None), falcon.HTTP_403)
            return
        cfg, number = device.cfg, device.device_number
        info = _table([
            ("Name", cfg.name), ("Driver", cfg.driver), ("Description", device.description()),
            ("UniqueID", device.unique_id), ("MaxStep", cfg.max_step), ("MaxIncrement", cfg.max_increment),
            ("StepSize (µm)", cfg.step_size if cfg.step_size is not None else "unknown"),
            ("Absolute", cfg.absolute), ("Serial port", cfg.port or "-"),
        ])
        chart = ("<section id=\"history\"><h2>Last hour</h2>"
                 "<svg id=\"chart\" role=\"img\" aria-label=\"Position (steps) and temperature (°C) over the last "
                 "hour\" viewBox=\"0 0 640 260\" preserveAspectRatio=\"none\"></svg>"
                 "<p class=\"legend\"><span class=\"key pos\">Position</span> <span class=\"key temp\">Temperature"
                 "</span> <span class=\"key mark\" hidden>Temp. comp. correction</span></p>"
                 "<div id=\"learned\" hidden><p>Learned coefficient: <output id=\"learned-value\">-</output></p>"
                 "<button type=\"button\" id=\"learned-apply\" class=\"secondary\">Use learned coefficient</button>"
                 "</div></section>")
        saved = self.settings.saved.focusers[number] if number < len(self.settings.saved.focusers) else cfg
        form = render_settings_form(number, saved, self.settings.raw_table(number), self.settings.pending(number),
                                    device.reconnect_applies_settings)
        settings = (f"<section id=\"settings\"><h2>Settings</h2><p class=\"note\">Saved to "
                    f"<code>{escape(str(self.settings.path))}</code>, keeping its comments.</p>{form}</section>")
        about = f"<section id=\"about\"><h2>About</h2>{info}</section>"
        _html(resp, _page(f"Focuser {number}: {cfg.name}", _status_panel(device) + chart + settings + about,
                          "focuser.js"))


class StaticResource:
    """Files of the setup pages, from the package's ``web`` folder."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, filename: str) -> None:
        suffix = filename[filename.rfind("."):] if "." in filename else ""
        if "/" in filename or filename.startswith(".") or suffix not in STATIC_TYPES:
            raise falcon.HTTPNotFound()
        try:
            data = resources.files("alpaca_focuser.web").joinpath(filename).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise falcon.HTTPNotFound() from None
        resp.content_type = STATIC_TYPES[suffix]
        resp.data = data
        resp.cache_control = ["max-age=300"]


def add_setup_routes(app: falcon.App, devices: dict[int, FocuserDevice], location: str, settings: Settings,
                     sampler: HistorySampler, password_hash: str | None, list_ports: PortLister) -> None:
    guard = Guard(password_hash)
    app.add_route("/setup", ServerSetupPage(devices, settings, location, list_ports))
    app.add_route("/setup/focusers", AddFocuserResource(settings, guard))
    app.add_route("/setup/v1/{device_type}/{device_number}/setup", FocuserSetupPage(devices, settings))
    app.add_route("/setup/v1/{device_type}/{device_number}/settings", FocuserSettingsResource(settings, guard))
    app.add_route("/setup/v1/{device_type}/{device_number}/history", HistoryResource(devices, sampler))
    app.add_route("/static/{filename}", StaticResource())
