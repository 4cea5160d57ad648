"""A small keep-alive Alpaca HTTP client for the tests and the benchmarks (no Alpaca library in between).

One ``AlpacaHttp`` holds one ``http.client.HTTPConnection``; use one per thread (connections are not thread-safe).
Failures raise plain ``AssertionError`` (no pytest needed), so bench/ scripts can use it too: they put this
folder on ``sys.path``.
"""

from __future__ import annotations

import http.client
import json
from typing import Any, Mapping
from urllib.parse import urlencode

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class AlpacaHttp:
    """Alpaca requests over one keep-alive connection.

    ``member`` is a member of focuser ``device`` (``"position"``) or, starting with ``/``, a whole path
    (``"/management/apiversions"``, ``"/api/v1/focuser/1/name"``). ClientID and ClientTransactionID (counting up
    from 1) are added unless the caller passes its own, or ``add_ids=False`` to send exactly ``params``.
    """

    def __init__(self, host: str, port: int, device: int = 0, timeout: float = 10.0, client_id: int = 1) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self.device = device
        self.client_id = client_id
        self.transaction = 0

    def call(self, verb: str, member: str, params: Mapping[str, Any] | None = None, *, add_ids: bool = True,
             **more: Any) -> dict[str, Any]:
        """The parsed JSON reply, after checking HTTP 200 and a JSON content type (ErrorNumber unchecked)."""
        path = member if member.startswith("/") else f"/api/v1/focuser/{self.device}/{member}"
        fields = {**(params or {}), **more}
        if add_ids:
            self.transaction += 1
            fields.setdefault("ClientID", self.client_id)
            fields.setdefault("ClientTransactionID", self.transaction)
        encoded = urlencode(fields)
        try:
            if verb == "GET":
                self.conn.request("GET", f"{path}?{encoded}" if encoded else path)
            else:
                self.conn.request(verb, path, body=encoded, headers=FORM)
            reply = self.conn.getresponse()
            data = reply.read()
        except BaseException:
            self.conn.close()  # a failed connect or read leaves the connection unusable: reconnect next time
            raise
        if reply.status != 200:
            raise AssertionError(f"{verb} {path}: HTTP {reply.status} {data!r}")
        content_type = reply.getheader("Content-Type", "")
        if not content_type.startswith("application/json"):
            raise AssertionError(f"{verb} {path}: Content-Type {content_type!r}, not JSON: {data!r}")
        return json.loads(data)

    def value(self, member: str, **params: Any) -> Any:
        """GET ``member``: its Value, after checking ErrorNumber is 0."""
        return self._ok("GET", member, self.call("GET", member, params))

    def put(self, member: str, **params: Any) -> Any:
        """PUT ``member`` with ``params`` as the form: its Value (None for most), after checking ErrorNumber is 0."""
        return self._ok("PUT", member, self.call("PUT", member, params))

    @staticmethod
    def _ok(verb: str, member: str, body: dict[str, Any]) -> Any:
        if body["ErrorNumber"] != 0:
            raise AssertionError(f"{verb} {member}: 0x{body['ErrorNumber']:X} {body['ErrorMessage']} ({body})")
        return body.get("Value")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> AlpacaHttp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
