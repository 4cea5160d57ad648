"""The Alpaca reply envelope and the process-wide ServerTransactionID."""

from __future__ import annotations

import itertools
import json
import threading
from typing import Any

import falcon

from alpaca_focuser.alpaca.params import UINT32_MAX


class TransactionCounter:
    """ServerTransactionID: starts at 1, never repeats (until it wraps past 4294967295), thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counter = itertools.count(1)

    def next(self) -> int:
        with self._lock:
            value = next(self._counter)
            if value > UINT32_MAX:  # after four billion replies, start again at 1 rather than overflow
                self._counter = itertools.count(2)
                value = 1
            return value


# The zero value of each reply type, sent as Value on error replies so every reply matches the schema.
ZERO_VALUES: dict[str, Any] = {"bool": False, "int": 0, "float": 0.0, "str": "", "list": []}


def envelope(client_transaction_id: int, server_transaction_id: int, *, error_number: int = 0,
             error_message: str = "", value: Any = None, has_value: bool = False) -> dict[str, Any]:
    reply: dict[str, Any] = {}
    if has_value:
        reply["Value"] = value
    reply["ClientTransactionID"] = client_transaction_id
    reply["ServerTransactionID"] = server_transaction_id
    reply["ErrorNumber"] = error_number
    reply["ErrorMessage"] = error_message
    return reply


# One encoder for every reply: json.dumps with options builds a new JSONEncoder on every call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def send_json(resp: falcon.Response, body: dict[str, Any]) -> None:
    resp.status = falcon.HTTP_200
    resp.content_type = "application/json"
    resp.text = _ENCODER.encode(body)


def send_text(resp: falcon.Response, status: str, message: str) -> None:
    """Malformed requests get a plain-text body that says what is wrong (the Alpaca rule for HTTP 4xx)."""
    resp.status = status
    resp.content_type = "text/plain; charset=utf-8"
    resp.text = message.rstrip("\n") + "\n"
