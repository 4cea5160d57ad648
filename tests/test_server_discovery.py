"""Discovery inside the real server: the responder answers with the HTTP port the server really listens on.

Datagrams go unicast to 127.0.0.1 and ::1 only.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from dataclasses import replace

import pytest


def _ask(family: int, address: str, port: int, payload: bytes = b"alpacadiscovery1") -> bytes | None:
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        sock.sendto(payload, (address, port))
        try:
            return sock.recvfrom(1024)[0]
        except socket.timeout:
            return None


def test_server_answers_discovery_with_its_http_port(server_factory) -> None:
    server = server_factory(discovery=True)
    port = server.discovery.ipv4_port
    reply = _ask(socket.AF_INET, "127.0.0.1", port)
    assert reply == json.dumps({"AlpacaPort": server.port}, separators=(",", ":")).encode()
    # and the port it names really serves the Alpaca management API
    with urllib.request.urlopen(f"http://127.0.0.1:{json.loads(reply)['AlpacaPort']}/management/apiversions") as r:
        assert json.load(r)["Value"] == [1]
    # garbage does not disturb it
    assert _ask(socket.AF_INET, "127.0.0.1", port, b"\xff\xfe garbage") is None
    assert _ask(socket.AF_INET, "127.0.0.1", port) is not None


def test_server_answers_discovery_on_ipv6_loopback(server_factory) -> None:
    if not socket.has_ipv6:
        pytest.skip("this Python has no IPv6")
    server = server_factory(discovery=True, server={"bind": "::"})
    if server.discovery.ipv6_port is None:
        pytest.skip("no IPv6 on this host: the responder runs IPv4 only")
    reply = _ask(socket.AF_INET6, "::1", server.discovery.ipv6_port)
    assert reply is not None and json.loads(reply) == {"AlpacaPort": server.port}


def test_discovery_port_in_use_does_not_stop_the_server(tmp_path) -> None:
    """Another program holds the port without SO_REUSEPORT: discovery is off, the API still serves."""
    from alpaca_focuser.app import FocuserServer
    from conftest import make_config

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocker:
        blocker.bind(("0.0.0.0", 0))
        config = make_config(tmp_path, discovery=True)
        config = replace(config, discovery=replace(config.discovery, port=blocker.getsockname()[1]))
        server = FocuserServer(config, multicast_interfaces=())
        server.start()
        try:
            assert server.discovery is None
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/management/apiversions") as r:
                assert json.load(r)["Value"] == [1]
        finally:
            server.stop()
