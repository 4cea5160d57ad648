"""Alpaca request parameters: where they come from, their casing rules, and their value parsers.

GET parameters come from the query string and their keys are case-insensitive; PUT parameters come from the
form body and their keys are case-sensitive (the Alpaca API reference, as enforced by ConformU). A value that
does not parse is a malformed request (HTTP 400), raised here as ``BadRequest``.
"""

from __future__ import annotations

import re
from typing import Callable
from urllib.parse import parse_qsl

import falcon

UINT32_MAX = 4294967295
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

_UNSIGNED = re.compile(r"[0-9]+")
_SIGNED = re.compile(r"[+-]?[0-9]+")
MAX_BODY = 64 * 1024  # an Alpaca form body is a few dozen bytes; refuse to buffer anything silly


class BadRequest(Exception):
    """A malformed request: answered with HTTP 400 and this message as a plain-text body."""


def parse_uint32(text: str, name: str) -> int:
    """An unsigned 32-bit integer written in decimal digits only (no sign, spaces or decimals)."""
    if not _UNSIGNED.fullmatch(text):
        raise BadRequest(f"{name}: {text!r} is not an unsigned 32-bit integer")
    value = int(text)
    if value > UINT32_MAX:
        raise BadRequest(f"{name}: {text!r} is larger than {UINT32_MAX}")
    return value


def parse_int32(text: str, name: str) -> int:
    """A signed 32-bit integer in decimal. ``1.5`` and ``abc`` are malformed, not rounded."""
    stripped = text.strip()
    if not _SIGNED.fullmatch(stripped):
        raise BadRequest(f"{name}: {text!r} is not an integer")
    value = int(stripped)
    if not INT32_MIN <= value <= INT32_MAX:
        raise BadRequest(f"{name}: {text!r} is outside the 32-bit integer range")
    return value


def parse_bool(text: str, name: str) -> bool:
    """``true`` or ``false`` in any case; anything else (``yes``, ``1``, empty) is malformed."""
    lowered = text.strip().lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    raise BadRequest(f"{name}: {text!r} is not a boolean (use true or false)")


def parse_str(text: str, name: str) -> str:
    return text


Parser = Callable[[str, str], object]


class Params:
    """The parameters of one request, with the lookup rule of its verb."""

    def __init__(self, pairs: list[tuple[str, str]], case_sensitive: bool) -> None:
        self.case_sensitive = case_sensitive
        self._values: dict[str, str] = {}
        for key, value in pairs:
            k = key if case_sensitive else key.lower()
            self._values.setdefault(k, value)  # the first occurrence wins

    @classmethod
    def from_request(cls, req: falcon.Request) -> "Params":
        if req.method == "PUT":
            return cls(read_form(req), case_sensitive=True)
        return cls(parse_qsl(req.query_string, keep_blank_values=True), case_sensitive=False)

    def raw(self, name: str) -> str | None:
        return self._values.get(name if self.case_sensitive else name.lower())

    def required(self, name: str, parse: Parser) -> object:
        text = self.raw(name)
        if text is None:
            hint = ""
            if self.case_sensitive:
                for key in self._values:
                    if key.lower() == name.lower():
                        hint = f" (found {key!r}: PUT parameter names are case-sensitive)"
                        break
            raise BadRequest(f"Missing parameter {name}{hint}")
        return parse(text, name)

    def client_ids(self) -> tuple[int, int]:
        """ClientID and ClientTransactionID: 0 when absent; present but malformed is a bad request."""
        ids = []
        for name in ("ClientID", "ClientTransactionID"):
            text = self.raw(name)
            ids.append(0 if text is None else parse_uint32(text, name))
        return ids[0], ids[1]


def read_form(req: falcon.Request) -> list[tuple[str, str]]:
    """The urlencoded form body of a PUT, read without Falcon's media handlers so casing is preserved."""
    length = req.content_length or 0
    if length > MAX_BODY:
        raise BadRequest(f"Request body of {length} bytes is too large")
    body = req.bounded_stream.read(MAX_BODY + 1) if length or req.content_length is None else b""
    if len(body) > MAX_BODY:
        raise BadRequest("Request body is too large")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("Request body is not UTF-8 text") from None
    ctype = (req.content_type or "").split(";")[0].strip().lower()
    if text and ctype not in ("", "application/x-www-form-urlencoded"):
        raise BadRequest(f"PUT parameters must be sent as application/x-www-form-urlencoded, not {ctype}")
    return parse_qsl(text, keep_blank_values=True)
