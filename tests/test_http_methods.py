"""HEAD and OPTIONS on device paths, through a real server on 127.0.0.1, consistent with GET and PUT.

``Allow`` lists exactly the verbs a member takes, plus HEAD where GET is (HEAD is GET without the body) and
OPTIONS (every device path answers it). HEAD answers as GET would, status and headers included, without a body;
unknown devices and members get the same 400 as GET, whatever the verb. Every request here goes over one
keep-alive connection, so a reply that closed it would fail the next request.
"""

from __future__ import annotations

import http.client
import json
from typing import Iterator

import pytest

from alpaca_focuser.alpaca.members import VERBS
from alpaca_focuser.app import FocuserServer
from alpaca_http import FORM


@pytest.fixture
def conn(server: FocuserServer) -> Iterator[http.client.HTTPConnection]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    yield connection
    connection.close()


def request(conn: http.client.HTTPConnection, method: str, path: str, body: str | None = None
            ) -> tuple[int, dict[str, str], bytes]:
    conn.request(method, path, body=body, headers=FORM if body is not None else {})
    reply = conn.getresponse()
    data = reply.read()
    assert not reply.will_close, f"{method} {path} closed the keep-alive connection"
    return reply.status, {k.lower(): v for k, v in reply.getheaders()}, data


def allow(headers: dict[str, str]) -> list[str]:
    return [v.strip() for v in headers["allow"].split(",")]


EXPECTED_ALLOW = {
    "position": ["GET", "HEAD", "OPTIONS"],
    "devicestate": ["GET", "HEAD", "OPTIONS"],
    "move": ["PUT", "OPTIONS"],
    "halt": ["PUT", "OPTIONS"],
    "connected": ["GET", "HEAD", "PUT", "OPTIONS"],
    "tempcomp": ["GET", "HEAD", "PUT", "OPTIONS"],
}


@pytest.mark.parametrize("member,expected", sorted(EXPECTED_ALLOW.items()))
def test_options_lists_the_members_verbs(conn: http.client.HTTPConnection, member: str,
                                         expected: list[str]) -> None:
    status, headers, body = request(conn, "OPTIONS", f"/api/v1/focuser/0/{member}")
    assert status == 200 and body == b"" and headers["content-length"] == "0"
    assert allow(headers) == expected


def test_every_member_allows_what_it_answers_and_refuses_the_rest(conn: http.client.HTTPConnection) -> None:
    """For every member in the table: the verbs OPTIONS names are answered, the others get 405 with the same
    Allow; nothing is acted on (the focuser stays disconnected, so no PUT here can move anything)."""
    for member, verbs in VERBS.items():
        path = f"/api/v1/focuser/0/{member}"
        _, headers, _ = request(conn, "OPTIONS", path)
        allowed = allow(headers)
        assert set(allowed) == {*verbs, "OPTIONS", *(["HEAD"] if "GET" in verbs else [])}, member
        for method in ("GET", "HEAD", "PUT", "POST", "DELETE", "PATCH"):
            if method in allowed:
                continue
            status, headers, _ = request(conn, method, path, body="" if method in ("PUT", "POST", "PATCH") else None)
            assert status == 405 and allow(headers) == allowed, (method, member, status)


def test_head_answers_like_get_without_a_body(conn: http.client.HTTPConnection) -> None:
    for member in ("name", "position", "devicestate", "interfaceversion"):
        path = f"/api/v1/focuser/0/{member}?ClientTransactionID=9"
        get_status, get_headers, get_body = request(conn, "GET", path)
        head_status, head_headers, head_body = request(conn, "HEAD", path)
        assert head_status == get_status == 200 and head_body == b""
        assert head_headers["content-type"] == get_headers["content-type"] == "application/json"
        # the same reply but for the ServerTransactionID, whose digits may differ in number
        assert abs(int(head_headers["content-length"]) - len(get_body)) <= 1
        assert json.loads(get_body)["ClientTransactionID"] == 9


@pytest.mark.parametrize("path,reason", [
    ("/api/v1/focuser/0/notamember", "Unknown focuser member"),
    ("/api/v1/focuser/7/position", "not configured"),
    ("/api/v1/focuser/x/position", "device number"),
    ("/api/v1/camera/0/position", "only focusers"),
])
def test_unknown_devices_and_members_answer_as_get_does(conn: http.client.HTTPConnection, path: str,
                                                        reason: str) -> None:
    status, headers, body = request(conn, "GET", path)
    assert status == 400 and reason in body.decode()
    for method in ("HEAD", "OPTIONS", "POST"):
        m_status, m_headers, m_body = request(conn, method, path, body="" if method == "POST" else None)
        assert m_status == 400, (method, path)
        assert m_headers["content-type"] == headers["content-type"]
        assert m_body == (b"" if method == "HEAD" else body)


def test_head_on_a_put_member_is_405_like_get(conn: http.client.HTTPConnection) -> None:
    get_status, get_headers, _ = request(conn, "GET", "/api/v1/focuser/0/move")
    head_status, head_headers, head_body = request(conn, "HEAD", "/api/v1/focuser/0/move")
    assert get_status == head_status == 405 and head_body == b""
    assert allow(get_headers) == allow(head_headers) == ["PUT", "OPTIONS"]
