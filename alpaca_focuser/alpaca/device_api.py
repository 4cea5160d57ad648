"""The device API resource: ``/api/v1/{device_type}/{device_number}/{member}``.

One resource serves every member from the member table, so the Alpaca rules are written once: malformed
requests get HTTP 400 with a plain-text reason; ASCOM errors go inside a 200 with their number and the value
type's zero value; every reply carries the exact-case transaction IDs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import falcon

from alpaca_focuser.alpaca.members import BY_ROUTE, VERBS, Member
from alpaca_focuser.alpaca.params import BadRequest, Params, parse_uint32
from alpaca_focuser.alpaca.responses import ZERO_VALUES, TransactionCounter, envelope, send_json, send_text
from alpaca_focuser.errors import AscomError, NotConnectedError
from alpaca_focuser.focuser.device import FocuserDevice

if TYPE_CHECKING:
    from alpaca_focuser.alpaca.metrics import RequestMetrics

log = logging.getLogger(__name__)

DEVICE_TYPE = "focuser"
DEVICE_ROUTE = "/api/v1/{device_type}/{device_number}/{member}"


def allowed_methods(verbs: tuple[str, ...]) -> list[str]:
    """The ``Allow`` list of a member that accepts ``verbs``: HEAD wherever GET is (RFC 9110 9.3.2: HEAD is GET
    without the body), and OPTIONS everywhere, since every device path answers it."""
    return [m for m in ("GET", "HEAD", "PUT") if m in verbs or (m == "HEAD" and "GET" in verbs)] + ["OPTIONS"]


ALLOW: dict[str, list[str]] = {name: allowed_methods(verbs) for name, verbs in VERBS.items()}
ALLOW_HEADER: dict[str, str] = {name: ", ".join(methods) for name, methods in ALLOW.items()}


def find_device(devices: dict[int, FocuserDevice], device_type: str, device_number: str) -> FocuserDevice:
    """The device a URL's ``{device_type}/{device_number}`` names, or BadRequest saying what is wrong."""
    if device_type != DEVICE_TYPE:
        hint = " (device types are lower case)" if device_type.lower() == DEVICE_TYPE else ""
        raise BadRequest(f"Unknown device type {device_type!r}{hint}: this server has only focusers")
    number = parse_uint32(device_number, "device number")
    device = devices.get(number)
    if device is None:
        configured = ", ".join(str(n) for n in sorted(devices)) or "none"
        raise BadRequest(f"Focuser {number} is not configured (configured: {configured})")
    return device


class DeviceResource:
    """Every member of every focuser. GET, HEAD, PUT and OPTIONS are answered per member (405 with ``Allow`` for
    a verb the member does not take); unknown devices and members are malformed requests (400) whatever the
    verb, as for GET."""

    def __init__(self, devices: dict[int, FocuserDevice], counter: TransactionCounter,
                 metrics: RequestMetrics | None = None) -> None:
        self.devices = devices
        self.counter = counter
        self.metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response, device_type: str, device_number: str,
               member: str) -> None:
        self._handle(req, resp, "GET", device_type, device_number, member)

    # HEAD answers exactly as GET (status, headers, Content-Length); Falcon leaves the body out.
    on_head = on_get

    def on_put(self, req: falcon.Request, resp: falcon.Response, device_type: str, device_number: str,
               member: str) -> None:
        self._handle(req, resp, "PUT", device_type, device_number, member)

    def on_options(self, req: falcon.Request, resp: falcon.Response, device_type: str, device_number: str,
                   member: str) -> None:
        """200 with ``Allow`` naming the verbs this member takes and an empty body. (Not 204: waitress closes the
        connection after a 204, and a keep-alive client should not pay for a new one.)"""
        try:
            self._check(device_type, device_number, member)
        except BadRequest as exc:
            send_text(resp, falcon.HTTP_400, str(exc))
            return
        resp.status = falcon.HTTP_200
        resp.content_type = "text/plain; charset=utf-8"
        resp.text = ""
        resp.set_header("Allow", ALLOW_HEADER[member])

    def on_other(self, req: falcon.Request, resp: falcon.Response, device_type: str, device_number: str,
                 member: str) -> None:
        """POST, DELETE, PATCH: 405 with the member's own ``Allow`` (400 for unknown devices and members)."""
        self._handle(req, resp, req.method, device_type, device_number, member)

    on_post = on_delete = on_patch = on_other

    def _check(self, device_type: str, device_number: str, member_name: str) -> FocuserDevice:
        """The device, after checking it and the member exist (BadRequest otherwise), whatever the verb."""
        device = find_device(self.devices, device_type, device_number)
        if member_name not in VERBS:
            raise BadRequest(f"Unknown focuser member {member_name!r} (member names are lower case)")
        return device

    def _resolve(self, verb: str, device_type: str, device_number: str, member_name: str
                 ) -> tuple[FocuserDevice, Member]:
        device = self._check(device_type, device_number, member_name)
        member = BY_ROUTE.get((member_name, verb))
        if member is None:
            raise falcon.HTTPMethodNotAllowed(ALLOW[member_name], description=f"{member_name} does not accept {verb}")
        return device, member

    def _handle(self, req: falcon.Request, resp: falcon.Response, verb: str, device_type: str,
                device_number: str, member_name: str) -> None:
        try:
            device, member = self._resolve(verb, device_type, device_number, member_name)
            params = Params.from_request(req)
            client_id, client_transaction_id = params.client_ids()
            args = [params.required(p.name, p.parse) for p in member.params]
        except BadRequest as exc:
            log.info("400 %s %s: %s", verb, req.relative_uri, exc)
            send_text(resp, falcon.HTTP_400, str(exc))
            return
        server_transaction_id = self.counter.next()
        has_value = member.value_type is not None
        try:
            if member.needs_connection and not device.connected():
                raise NotConnectedError(f"{member.name}: focuser {device.device_number} ({device.name()}) is not "
                                        f"connected")
            value: Any = member.call(device, *args)
            body = envelope(client_transaction_id, server_transaction_id, value=value, has_value=has_value)
        except AscomError as exc:
            message = exc.message or type(exc).__name__
            if self.metrics is not None:
                self.metrics.ascom_error(member.path, exc.number)
            log.log(logging.WARNING if exc.number >= 0x500 else logging.INFO, "%s %s on focuser %d: 0x%X %s",
                    verb, member.name, device.device_number, exc.number, message)
            zero = ZERO_VALUES[member.value_type] if member.value_type else None
            body = envelope(client_transaction_id, server_transaction_id, error_number=exc.number,
                            error_message=message, value=zero, has_value=has_value)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s %s client=%d -> %s", verb, req.relative_uri, args, client_id, body)
        send_json(resp, body)
