"""The setup pages' own endpoints: saving settings, adding a focuser, the chart's history; and the two
protections around them (same origin only, optional password) plus CORS for the Alpaca API.

Status and motion never come through here: the pages use the ordinary Alpaca API for those, like any client.
Only settings writes are protected, because Alpaca clients send no credentials and must keep working.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import falcon

from alpaca_focuser.alpaca.device_api import find_device
from alpaca_focuser.alpaca.params import BadRequest
from alpaca_focuser.focuser.device import FocuserDevice
from alpaca_focuser.history import HistorySampler
from alpaca_focuser.passwords import verify_password
from alpaca_focuser.settings import Settings, SettingsRejected

log = logging.getLogger(__name__)

MAX_SETTINGS_BODY = 16 * 1024  # a full settings form is well under 2 KiB
REALM = "alpaca-focuser setup"
API_PREFIXES = ("/api/", "/management/")


def send(resp: falcon.Response, status: int, body: dict[str, Any]) -> None:
    resp.status = falcon.code_to_http_status(status)
    resp.content_type = "application/json"
    resp.text = json.dumps(body)
    resp.cache_control = ["no-store"]


class Guard:
    """Checks for requests that change settings: same origin, the password when one is set, a small body."""

    def __init__(self, password_hash: str | None) -> None:
        self.password_hash = password_hash

    def check(self, req: falcon.Request) -> None:
        """Raises falcon.HTTPError (403, 401, 413) for a request that may not change settings."""
        origin = req.get_header("Origin")
        # Host only, not the scheme: behind a TLS proxy the page is https while waitress sees http.
        if origin is not None and urlsplit(origin).netloc.lower() != (req.get_header("Host") or "").lower():
            log.warning("Setup: refused %s %s from %s: foreign Origin %r", req.method, req.path, req.remote_addr,
                        origin)
            raise falcon.HTTPForbidden(title="Forbidden",
                                       description="settings can only be changed from this server's own pages")
        if (req.get_header("Sec-Fetch-Site") or "same-origin") not in ("same-origin", "none"):
            raise falcon.HTTPForbidden(title="Forbidden", description="cross-site requests cannot change settings")
        if self.password_hash is not None:
            self._authenticate(req)

    def _authenticate(self, req: falcon.Request) -> None:
        challenge = [f'Basic realm="{REALM}", charset="UTF-8"']
        header = req.get_header("Authorization")
        if header is None:
            raise falcon.HTTPUnauthorized(title="Unauthorized", description="the setup password is required",
                                          challenges=challenge)
        scheme, _, encoded = header.partition(" ")
        password = None
        if scheme.lower() == "basic":
            try:
                _, _, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                password = None
        if password is None or not verify_password(password, self.password_hash or ""):
            log.warning("Setup: wrong password for %s %s from %s", req.method, req.path, req.remote_addr)
            raise falcon.HTTPUnauthorized(title="Unauthorized", description="wrong setup password",
                                          challenges=challenge)


def read_body(req: falcon.Request) -> dict[str, Any]:
    """A JSON object or an urlencoded form, at most MAX_SETTINGS_BODY bytes."""
    length = req.content_length
    if length is not None and length > MAX_SETTINGS_BODY:
        raise falcon.HTTPContentTooLarge(title="Too large",
                                         description=f"at most {MAX_SETTINGS_BODY} bytes of settings")
    data = req.bounded_stream.read(MAX_SETTINGS_BODY + 1)
    if len(data) > MAX_SETTINGS_BODY:
        raise falcon.HTTPContentTooLarge(title="Too large",
                                         description=f"at most {MAX_SETTINGS_BODY} bytes of settings")
    ctype = (req.content_type or "").split(";")[0].strip().lower()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise falcon.HTTPBadRequest(title="Bad request", description="the body is not UTF-8 text") from None
    if ctype == "application/json":
        try:
            body = json.loads(text or "{}")
        except ValueError as exc:
            raise falcon.HTTPBadRequest(title="Bad request", description=f"invalid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise falcon.HTTPBadRequest(title="Bad request", description="send a JSON object of key: value")
        return body
    if ctype in ("application/x-www-form-urlencoded", ""):
        pairs = parse_qsl(text, keep_blank_values=True)
        if len({k for k, _ in pairs}) != len(pairs):
            raise falcon.HTTPBadRequest(title="Bad request", description="a field is given twice")
        return dict(pairs)
    raise falcon.HTTPUnsupportedMediaType(title="Unsupported media type",
                                          description="send application/json or a urlencoded form")


class FocuserSettingsResource:
    """``POST /setup/v1/focuser/{n}/settings``: change keys of one ``[[focuser]]`` table."""

    def __init__(self, settings: Settings, guard: Guard) -> None:
        self.settings = settings
        self.guard = guard

    def on_post(self, req: falcon.Request, resp: falcon.Response, device_type: str, device_number: str) -> None:
        self.guard.check(req)
        if device_type != "focuser" or not device_number.isdigit():
            raise falcon.HTTPNotFound()
        body = read_body(req)
        try:
            result = self.settings.save_focuser(int(device_number), body)
        except SettingsRejected as exc:
            send(resp, exc.status, {"ok": False, "error": exc.message, "key": exc.key})
            return
        send(resp, 200, result.as_json())


class AddFocuserResource:
    """``POST /setup/focusers``: append a focuser, served from the next start."""

    def __init__(self, settings: Settings, guard: Guard) -> None:
        self.settings = settings
        self.guard = guard

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.guard.check(req)
        body = read_body(req)
        try:
            result = self.settings.add_focuser(body)
        except SettingsRejected as exc:
            send(resp, exc.status, {"ok": False, "error": exc.message, "key": exc.key})
            return
        body_out = result.as_json()
        body_out["message"] = (f"Focuser {result.device} ({body.get('name', '')}) saved to {result.path}. It is "
                               f"served from the next start of the server, as device number {result.device}.")
        send(resp, 200, body_out)


class HistoryResource:
    """``GET /setup/v1/focuser/{n}/history``: the chart's last hour."""

    def __init__(self, devices: dict[int, FocuserDevice], sampler: HistorySampler) -> None:
        self.devices = devices
        self.sampler = sampler

    def on_get(self, req: falcon.Request, resp: falcon.Response, device_type: str, device_number: str) -> None:
        try:
            device = find_device(self.devices, device_type, device_number)
        except BadRequest as exc:
            raise falcon.HTTPNotFound(description=str(exc)) from None
        send(resp, 200, self.sampler.history(device.device_number))


class ApiCorsMiddleware(falcon.CORSMiddleware):
    """Falcon's CORS policy (preflight included), for the Alpaca API only: the setup endpoints stay
    same-origin whatever ``cors_origins`` says."""

    def __init__(self, origins: tuple[str, ...]) -> None:
        super().__init__(allow_origins="*" if "*" in origins else list(origins), allow_private_network=True)

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: object,
                         req_succeeded: bool) -> None:
        if req.path.startswith(API_PREFIXES):
            super().process_response(req, resp, resource, req_succeeded)
