"""The Alpaca discovery responder, over real UDP on loopback (and, as root, across two network namespaces).

Every datagram here goes to 127.0.0.1 / ::1, except in the namespace test, whose broadcast and multicast stay
on a veth pair inside two namespaces the test creates and deletes. Responders are started with
``multicast_interfaces=()`` so that joining the IPv6 group sends no MLD report onto a real interface.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from alpaca_focuser.alpaca import discovery
from alpaca_focuser.alpaca.discovery import DiscoveryResponder, is_discovery_request
from conftest import started_until_teardown, wait_until

REQUEST = b"alpacadiscovery1"


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback (::1) on this host")
FAMILIES = [
    pytest.param((socket.AF_INET, "127.0.0.1"), id="ipv4"),
    pytest.param((socket.AF_INET6, "::1"), id="ipv6", marks=needs_ipv6),
]

Factory = Callable[..., DiscoveryResponder]


@pytest.fixture
def make_responder() -> Iterator[Factory]:
    def start(alpaca_port: int = 11111, **kwargs: object) -> DiscoveryResponder:
        kwargs.setdefault("port", 0)
        kwargs.setdefault("multicast_interfaces", ())
        responder = DiscoveryResponder(alpaca_port, **kwargs)  # type: ignore[arg-type]
        responder.start()
        return responder

    yield from started_until_teardown(start, DiscoveryResponder.stop)


def _port(responder: DiscoveryResponder, family: int) -> int:
    port = responder.ipv4_port if family == socket.AF_INET else responder.ipv6_port
    assert port is not None
    return port


def _client(family: int, timeout: float = 1.0) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.settimeout(timeout)
    return sock


def _ask(family: int, host: str, port: int, payload: bytes = REQUEST, timeout: float = 1.0) -> bytes | None:
    with _client(family, timeout) as sock:
        sock.sendto(payload, (host, port))
        try:
            return sock.recv(2048)
        except TimeoutError:
            return None


@pytest.mark.parametrize("family_host", FAMILIES)
def test_valid_request_gets_exactly_the_alpaca_port(make_responder: Factory,
                                                     family_host: tuple[int, str]) -> None:
    family, host = family_host
    responder = make_responder(alpaca_port=4567)
    with _client(family) as sock:
        sock.sendto(REQUEST, (host, _port(responder, family)))
        reply, source = sock.recvfrom(2048)
    assert reply == b'{"AlpacaPort":4567}'
    assert source[1] == _port(responder, family)  # answered from the discovery socket itself
    wait_until(lambda: responder.replies_sent == 1, timeout=1.0, interval=0.01)  # counted just after the reply left


@pytest.mark.parametrize("family_host", FAMILIES)
@pytest.mark.parametrize("payload", [b"alpacadiscovery1", b"alpacadiscovery2", b"alpacadiscovery9",
                                     b"alpacadiscovery1\n", b"alpacadiscovery1 trailing \xff\xfe bytes"])
def test_version_variants_are_answered(make_responder: Factory, family_host: tuple[int, str],
                                       payload: bytes) -> None:
    family, host = family_host
    responder = make_responder()
    assert _ask(family, host, _port(responder, family), payload) == b'{"AlpacaPort":11111}'


GARBAGE = [
    b"",
    b"hello",
    b"alpacadiscovery",
    b"alpacadiscovery0",
    b"alpacadiscoveryX",
    b"ALPACADISCOVERY1",
    b" alpacadiscovery1",
    b"\xff\xfe\xfd\x80alpacadiscovery1",
    b"\xc3\x28\xa0\xa1" * 8,  # invalid UTF-8
    REQUEST * 4062,  # 64992 bytes with a valid start: truncated by the 1024-byte buffer, so ignored
    bytes(range(256)) * 253,  # 64768 bytes of everything
]


@pytest.mark.parametrize("family_host", FAMILIES)
def test_garbage_is_ignored_and_the_responder_keeps_answering(make_responder: Factory,
                                                               family_host: tuple[int, str]) -> None:
    family, host = family_host
    responder = make_responder(max_replies_per_second=100)
    port = _port(responder, family)
    with _client(family) as sock:
        for payload in GARBAGE:
            sock.sendto(payload, (host, port))
        sock.sendto(REQUEST, (host, port))
        # Datagrams are handled in order, so a reply to any garbage would arrive before this one.
        assert sock.recv(2048) == b'{"AlpacaPort":11111}'
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(2048)
    assert responder.replies_sent == 1
    assert responder.requests_ignored == len(GARBAGE)


def test_is_discovery_request_compares_bytes() -> None:
    assert is_discovery_request(b"alpacadiscovery1")
    assert is_discovery_request(b"alpacadiscovery7\x00\xff")
    assert not is_discovery_request(b"alpacadiscovery")
    assert not is_discovery_request(b"\xff" * 20)


def test_flood_is_rate_limited_and_logged_once(make_responder: Factory,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=discovery.__name__)
    responder = make_responder(max_replies_per_second=10)
    port = _port(responder, socket.AF_INET)
    replies = 0
    with _client(socket.AF_INET, timeout=0.5) as sock:
        started = time.monotonic()
        for _ in range(500):
            sock.sendto(REQUEST, ("127.0.0.1", port))
        try:
            while sock.recv(2048):
                replies += 1
        except TimeoutError:
            pass
        elapsed = time.monotonic() - started
    # Token bucket: a full bucket of 10, then 10 per second; the 0.5 s quiet wait adds to elapsed.
    assert 1 <= replies <= 10 + 10 * elapsed
    assert responder.replies_sent == replies
    warnings = [r for r in caplog.records if "more than" in r.getMessage()]
    assert len(warnings) == 1  # once per sender, not once per datagram
    time.sleep(1.1)  # let the bucket refill
    assert _ask(socket.AF_INET, "127.0.0.1", port) == b'{"AlpacaPort":11111}'


def test_rate_table_stays_bounded() -> None:
    limiter = discovery._RateLimiter(rate=10, max_entries=100, idle_s=5.0)
    for i in range(5000):
        assert limiter.allow(f"10.0.{i // 256}.{i % 256}", now=1.0)
    assert len(limiter._buckets) <= 100
    limiter.allow("192.0.2.1", now=100.0)  # everyone else is long idle and is dropped
    assert len(limiter._buckets) == 1


@pytest.mark.parametrize("family_host", FAMILIES)
def test_two_responders_share_one_port(make_responder: Factory, family_host: tuple[int, str]) -> None:
    family, host = family_host
    first = make_responder(alpaca_port=1111, max_replies_per_second=1000)
    port = _port(first, family)
    second = make_responder(alpaca_port=2222, port=first.ipv4_port, max_replies_per_second=1000)
    assert _port(second, family) == port
    seen: set[bytes] = set()
    # For unicast the kernel picks one SO_REUSEPORT socket by a hash of the source, so vary the source port.
    for _ in range(64):
        reply = _ask(family, host, port, timeout=0.5)
        assert reply is not None
        seen.add(reply)
        if len(seen) == 2:
            break
    assert seen == {b'{"AlpacaPort":1111}', b'{"AlpacaPort":2222}'}


def test_bind_address_ipv4_loopback(make_responder: Factory) -> None:
    responder = make_responder(bind_address="127.0.0.1")
    assert _ask(socket.AF_INET, "127.0.0.1", _port(responder, socket.AF_INET)) == b'{"AlpacaPort":11111}'
    if responder.ipv6_port is not None:  # an IPv4 HTTP address is never advertised over IPv6
        assert _ask(socket.AF_INET6, "::1", responder.ipv6_port, timeout=0.3) is None
        wait_until(lambda: responder.requests_ignored == 1, timeout=1.0, interval=0.01)


@needs_ipv6
def test_bind_address_ipv6_loopback(make_responder: Factory) -> None:
    responder = make_responder(bind_address="::1")
    with _client(socket.AF_INET6) as sock:
        sock.sendto(REQUEST, ("::1", _port(responder, socket.AF_INET6)))
        reply, source = sock.recvfrom(2048)
    assert reply == b'{"AlpacaPort":11111}'
    assert source[0] == "::1"  # the reply's source is the HTTP address: clients take the server address from it
    assert _ask(socket.AF_INET, "127.0.0.1", _port(responder, socket.AF_INET), timeout=0.3) is None


def test_bind_address_must_be_an_ip() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        DiscoveryResponder(11111, bind_address="focuser.example")


def test_stop_is_quick_idempotent_and_frees_the_port(make_responder: Factory) -> None:
    responder = make_responder()
    port = _port(responder, socket.AF_INET)
    assert any(t.name == "alpaca-discovery" and t.daemon for t in threading.enumerate())
    started = time.monotonic()
    responder.stop()
    assert time.monotonic() - started < 1.0
    responder.stop()
    assert responder.ipv4_port is None and responder.ipv6_port is None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", port))  # no SO_REUSE*: succeeds only if the responder really closed its socket


def test_ipv4_bind_failure_is_a_clear_oserror() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocker:
        blocker.bind(("0.0.0.0", 0))  # without SO_REUSEPORT, so nobody may share it
        port = blocker.getsockname()[1]
        responder = DiscoveryResponder(11111, port=port, multicast_interfaces=())
        with pytest.raises(OSError, match=f"cannot bind UDP 0.0.0.0:{port}"):
            responder.start()
        responder.stop()


def test_host_without_ipv6_carries_on_with_ipv4(make_responder: Factory, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    real_socket = socket.socket

    def no_ipv6(family: int = socket.AF_INET, *args: object, **kwargs: object) -> socket.socket:
        if family == socket.AF_INET6:
            raise OSError(97, "Address family not supported by protocol")
        return real_socket(family, *args, **kwargs)  # type: ignore[arg-type]

    caplog.set_level(logging.INFO, logger=discovery.__name__)
    monkeypatch.setattr(socket, "socket", no_ipv6)  # the module the responder uses
    responder = make_responder()
    monkeypatch.undo()
    assert responder.ipv6_port is None
    assert len([r for r in caplog.records if "IPv4 only" in r.getMessage()]) == 1
    assert _ask(socket.AF_INET, "127.0.0.1", _port(responder, socket.AF_INET)) == b'{"AlpacaPort":11111}'


# -- across two network namespaces: alpyca's own discovery client finds us by broadcast and multicast ---------

REPO = Path(__file__).resolve().parent.parent

# Three responders share port 32227 in namespace A; broadcast and multicast reach every one of them.
RESPONDER_SCRIPT = """
import sys
from alpaca_focuser.alpaca.discovery import DiscoveryResponder
rs = [DiscoveryResponder(11111), DiscoveryResponder(22222, bind_address=sys.argv[1]),
      DiscoveryResponder(33333, bind_address="127.0.0.1")]
for r in rs:
    r.start()
print("ready", flush=True)
sys.stdin.read()  # the test closes our stdin to stop us
for r in rs:
    r.stop()
"""

SEARCH_SCRIPT = """
import json, sys
from alpaca import discovery
if sys.argv[1] == "4":
    print(json.dumps(discovery.search_ipv4(numquery=2, timeout=1)))
else:
    print(json.dumps(discovery.search_ipv6(numquery=1, timeout=1)))
"""


@dataclass
class NetnsPair:
    ns_a: str
    ns_b: str
    veth_a: str
    address_a: str
    link_local_a: str | None  # None when IPv6 is off inside the namespaces


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=check)


def _link_local(ns: str, dev: str) -> str | None:
    # Duplicate address detection is off, but give the kernel a moment to assign the address.
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        for entry in json.loads(_ip("-j", "-n", ns, "-6", "addr", "show", "dev", dev).stdout or "[]"):
            for info in entry.get("addr_info", []):
                if info.get("scope") == "link" and not info.get("tentative"):
                    return str(info["local"])
        time.sleep(0.1)
    return None


@pytest.fixture
def netns_pair() -> Iterator[NetnsPair]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to create network namespaces")
    tag = os.getpid() % 100000
    ns_a, ns_b, veth_a, veth_b = f"afA{tag}", f"afB{tag}", f"afva{tag}", f"afvb{tag}"
    net = f"10.213.{tag % 254 + 1}"  # exists only inside the two namespaces below
    probe = _ip("netns", "add", ns_a, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {probe.stderr.strip()}")
    try:
        _ip("netns", "add", ns_b)
        # Created directly inside the namespaces: the veth never exists on the host.
        _ip("-n", ns_a, "link", "add", veth_a, "type", "veth", "peer", "name", veth_b, "netns", ns_b)
        for ns, veth, host in ((ns_a, veth_a, 1), (ns_b, veth_b, 2)):
            subprocess.run(["ip", "netns", "exec", ns, "sh", "-c",
                            f"echo 0 > /proc/sys/net/ipv6/conf/{veth}/accept_dad"], capture_output=True, timeout=10)
            _ip("-n", ns, "addr", "add", f"{net}.{host}/24", "dev", veth)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", veth, "up")
        _link_local(ns_b, veth_b)
        yield NetnsPair(ns_a, ns_b, veth_a, f"{net}.1", _link_local(ns_a, veth_a))
    finally:
        for ns in (ns_a, ns_b):
            _ip("netns", "del", ns, check=False)


@pytest.mark.slow
def test_alpyca_discovers_us_across_namespaces(netns_pair: NetnsPair) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    responder = subprocess.Popen(["ip", "netns", "exec", netns_pair.ns_a, sys.executable, "-c", RESPONDER_SCRIPT,
                                  netns_pair.address_a], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert responder.stdout is not None
        assert responder.stdout.readline().strip() == "ready", responder.stderr.read() if responder.stderr else ""
        # Both searches at once: alpyca waits a full timeout per local address, about 10 s for IPv4.
        searches = {family: subprocess.Popen(["ip", "netns", "exec", netns_pair.ns_b, sys.executable, "-c",
                                              SEARCH_SCRIPT, family], stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, text=True, env=env)
                    for family in ("4", "6")}
        found: dict[str, list[str]] = {}
        for family, search in searches.items():
            out, err = search.communicate(timeout=40)
            assert search.returncode == 0, err
            found[family] = json.loads(out)
    finally:
        if responder.stdin:
            responder.stdin.close()
        try:
            responder.wait(timeout=5)
        except subprocess.TimeoutExpired:
            responder.kill()
            responder.wait()
    a = netns_pair.address_a
    assert f"{a}:11111" in found["4"]  # wildcard-bound server
    assert f"{a}:22222" in found["4"]  # bound to the veth's address, asked on that interface
    assert f"{a}:33333" not in found["4"]  # bound to 127.0.0.1: unreachable from namespace B, so silent
    if netns_pair.link_local_a is None:
        pytest.skip("IPv4 part passed; no IPv6 link-local address inside the namespaces")
    assert any(netns_pair.link_local_a in entry and entry.endswith(":11111") for entry in found["6"]), found["6"]
    assert not any(entry.endswith((":22222", ":33333")) for entry in found["6"]), found["6"]
