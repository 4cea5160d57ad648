"""The setup pages: ``/setup`` (the server) and ``/setup/v1/focuser/{n}/setup`` (one focuser).

Pages are plain HTML rendered here with every value escaped; the live panel is a small script in ``web/`` that
talks to the ordinary Alpaca API, so the page exercises exactly what clients use.
"""

from __future__ import annotations

from html import escape
from importlib import resources

import falcon

from alpaca_focuser import __version__
from alpaca_focuser.alpaca.device_api import find_device
from alpaca_focuser.alpaca.params import BadRequest
from alpaca_focuser.focuser.device import FocuserDevice

STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(title)}</title><link rel=\"icon\" href=\"data:,\"><link rel=\"stylesheet\" href=\"/static/style.css\"></head>"
            f"<body><header><h1>{escape(title)}</h1><p>alpaca-focuser {escape(__version__)}</p></header>"
            f"<main>{body}</main></body></html>\n")


def _table(rows: list[tuple[str, object]]) -> str:
    def shown(v: object) -> str:
        return ("yes" if v else "no") if isinstance(v, bool) else str(v)

    cells = "".join(f"<tr><th>{escape(k)}</th><td>{escape(shown(v))}</td></tr>" for k, v in rows)
    return f"<table class=\"info\">{cells}</table>"


class ServerSetupPage:
    def __init__(self, devices: dict[int, FocuserDevice], location: str) -> None:
        self.devices = devices
        self.location = location

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        items = "".join(
            f"<li><a href=\"/setup/v1/focuser/{n}/setup\">Focuser {n}: {escape(d.name())}</a> "
            f"({escape(d.cfg.driver)})</li>" for n, d in sorted(self.devices.items()))
        body = (f"<p>Location: {escape(self.location)}</p><h2>Focusers</h2><ul id=\"devices\">{items}</ul>"
                "<p>Settings live in <code>config.toml</code>; restart the service after editing it.</p>")
        resp.content_type = "text/html; charset=utf-8"
        resp.text = _page("Alpaca focuser server", body)


class FocuserSetupPage:
    def __init__(self, devices: dict[int, FocuserDevice]) -> None:
        self.devices = devices

    def on_get(self, req: falcon.Request, resp: falcon.Response, device_type: str, device_number: str) -> None:
        try:
            device = find_device(self.devices, device_type, device_number)
        except BadRequest as exc:
            # The Management API: "an HTTP status code of 403 indicates that an invalid URL was sent to the
            # /setup browser interface", with an HTML body like every other /setup reply.
            resp.status = falcon.HTTP_403
            resp.content_type = "text/html; charset=utf-8"
            resp.text = _page("No such device", f"<p>{escape(str(exc))}</p><p><a href=\"/setup\">All devices</a></p>")
            return
        cfg, number = device.cfg, device.device_number
        info = _table([
            ("Name", cfg.name), ("Driver", cfg.driver), ("Description", device.description()),
            ("UniqueID", device.unique_id), ("MaxStep", cfg.max_step), ("MaxIncrement", cfg.max_increment),
            ("StepSize (µm)", cfg.step_size if cfg.step_size is not None else "unknown"),
            ("Absolute", cfg.absolute), ("Serial port", cfg.port or "-"),
        ])
        panel = f"""
<section id="control" data-device="{number}">
  <h2>Live</h2>
  <p>Connected: <output id="connected">?</output> &middot; Moving: <output id="moving">?</output>
     &middot; Position: <output id="position">?</output> &middot; Temperature: <output id="temperature">?</output></p>
  <p><button id="connect">Connect</button> <button id="disconnect">Disconnect</button></p>
  <p><label>{'Target position' if cfg.absolute else 'Steps (negative: inward)'}
     <input id="target" type="number" step="1" value="0"></label>
     <button id="move">Move</button> <button id="halt">Halt</button></p>
  <p id="message" role="status"></p>
</section>
<script src="/static/focuser.js"></script>"""
        resp.content_type = "text/html; charset=utf-8"
        back = "<p><a href=\"/setup\">All devices</a></p>"
        resp.text = _page(f"Focuser {number}: {cfg.name}", info + panel + back)


class StaticResource:
    """Files of the setup page, from the package's ``web`` folder."""

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


def add_setup_routes(app: falcon.App, devices: dict[int, FocuserDevice], location: str) -> None:
    app.add_route("/setup", ServerSetupPage(devices, location))
    app.add_route("/setup/v1/{device_type}/{device_number}/setup", FocuserSetupPage(devices))
    app.add_route("/static/{filename}", StaticResource())
