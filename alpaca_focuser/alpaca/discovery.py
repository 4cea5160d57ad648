"""ASCOM Alpaca UDP discovery responder (Alpaca API reference, section 4).

A datagram whose bytes start with ``alpacadiscovery`` followed by a version digit 1-9 is answered, unicast to
the sender's address and port, with ``{"AlpacaPort":<port>}``. Anything else is ignored silently (debug log).

Sockets: IPv4 is bound to ``0.0.0.0`` (only wildcard-bound sockets receive broadcasts) with SO_REUSEADDR,
SO_REUSEPORT and SO_BROADCAST, so several Alpaca servers on one Pi can share port 32227. IPv6 is bound to ``::``
on the same port (IPV6_V6ONLY) and joins the Alpaca multicast group ``ff12::a1:9aca`` on every interface that
supports multicast, re-checked every 30 s for interfaces that come up later (Wi-Fi, USB Ethernet).

Bind-address rule (``bind_address`` is the address the HTTP server listens on; a reply must point the client at
an address it can actually reach):

* Wildcard (``""``, ``"0.0.0.0"``, ``"::"``, ``"*"``): every valid request on both families is answered.
* A specific IPv4 address A: IPv4 requests are answered only when IP_PKTINFO shows that the datagram arrived on
  the interface holding A (its ifindex is found with ioctl SIOCGIFADDR over ``socket.if_nameindex()``, looked
  up again at most every 10 s while not found), or that it was addressed to A itself. The reply is sent with A
  as its source address, because clients take the server's address from the reply's source. IPv6 requests
  are never answered.
* A specific IPv6 address: the same with IPV6_PKTINFO and ``/proc/net/if_inet6``; IPv4 requests are never
  answered.
* ``127.0.0.1`` / ``::1``: the interface is ``lo``, so only clients on the Pi itself get an answer;
  ``"localhost"`` means both of them.

Each sender IP gets at most ``max_replies_per_second`` answers per second (token bucket); the excess is ignored
and logged once per sender until that sender has been quiet for 10 s.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import logging
import selectors
import socket
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DISCOVERY_PORT = 32227
MULTICAST_GROUP = "ff12::a1:9aca"
_PREFIX = b"alpacadiscovery"
_RECV_BUFFER = 1024  # a real request is 16 bytes; anything larger than this is truncated and ignored
_ANC_BUFFER = socket.CMSG_SPACE(64)
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux value; CPython only exposes it on some builds
_SIOCGIFADDR = 0x8915
_IFF_MULTICAST = 0x1000
_WILDCARDS = ("", "0.0.0.0", "::", "*")
_HOUSEKEEPING_S = 1.0
_REJOIN_S = 30.0
_LOOKUP_RETRY_S = 10.0
_BATCH = 32  # datagrams read per wake-up, so a flood cannot starve the stop check

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_discovery_request(data: bytes) -> bool:
    """True for ``alpacadiscovery`` + a digit 1-9 (+ anything). Bytes only: non-UTF-8 input cannot raise."""
    return len(data) > len(_PREFIX) and data.startswith(_PREFIX) and 0x31 <= data[len(_PREFIX)] <= 0x39


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    warned: bool = False


class _RateLimiter:
    """Per-sender token bucket. The table is bounded: idle senders are dropped, then the oldest beyond the cap."""

    def __init__(self, rate: int, max_entries: int = 1024, idle_s: float = 10.0) -> None:
        self._rate = float(rate)
        self._max_entries = max_entries
        self._idle_s = idle_s
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def allow(self, sender: str, now: float) -> bool:
        self._prune(now)
        bucket = self._buckets.pop(sender, None)
        if bucket is None:
            bucket = _Bucket(tokens=self._rate, stamp=now)
        bucket.tokens = min(self._rate, bucket.tokens + (now - bucket.stamp) * self._rate)
        bucket.stamp = now
        self._buckets[sender] = bucket  # re-insert at the end: the dict stays ordered by last activity
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        if not bucket.warned:
            bucket.warned = True
            log.warning("Alpaca discovery: %s sends more than %d requests/s; ignoring the excess", sender,
                        int(self._rate))
        return False

    def _prune(self, now: float) -> None:
        while self._buckets:
            sender, oldest = next(iter(self._buckets.items()))
            if now - oldest.stamp <= self._idle_s and len(self._buckets) < self._max_entries:
                break
            del self._buckets[sender]


def _parse_bind_address(bind_address: str) -> list[tuple[IPAddress, int | None]]:
    """[(address, scope ifindex)] for a specific address; [] for a wildcard; both loopbacks for "localhost"."""
    host = bind_address.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host in _WILDCARDS:
        return []
    if host == "localhost":  # the HTTP server may listen on either loopback address
        return [(ipaddress.ip_address("127.0.0.1"), None), (ipaddress.ip_address("::1"), None)]
    host, _, scope = host.partition("%")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"discovery bind_address {bind_address!r} is not an IP address") from None
    scope_index: int | None = None
    if scope:
        scope_index = int(scope) if scope.isdigit() else socket.if_nametoindex(scope)
    return [(address, scope_index)]


class _BoundAddress:
    """A specific HTTP address and the index of the interface holding it (looked up lazily, see docstring)."""

    def __init__(self, address: IPAddress, scope: int | None) -> None:
        self.address = address
        self.scope = scope
        self._ifindex = scope
        self._next_lookup = 0.0

    @property
    def family(self) -> int:
        return socket.AF_INET if self.address.version == 4 else socket.AF_INET6

    def ifindex(self) -> int | None:
        # Retried while unknown: at boot the address may appear after we start (DHCP, Wi-Fi).
        if self._ifindex is None and time.monotonic() >= self._next_lookup:
            self._next_lookup = time.monotonic() + _LOOKUP_RETRY_S
            if isinstance(self.address, ipaddress.IPv4Address):
                self._ifindex = _ipv4_ifindex(self.address)
            else:
                self._ifindex = _ipv6_ifindex(self.address)
        return self._ifindex

    def source_pktinfo(self) -> tuple[int, int, bytes]:
        """Ancillary data that makes a reply's source this address (clients take the server address from it)."""
        if self.family == socket.AF_INET:
            return socket.IPPROTO_IP, _IP_PKTINFO, struct.pack("=i4s4s", 0, self.address.packed, bytes(4))
        return socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, struct.pack("=16sI", self.address.packed, self.scope or 0)


def _ipv4_ifindex(address: ipaddress.IPv4Address) -> int | None:
    """Index of the interface whose (primary) IPv4 address is ``address``, via SIOCGIFADDR."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for index, name in socket.if_nameindex():
            try:
                ifreq = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue  # no IPv4 address on this interface
            if ifreq[20:24] == address.packed:
                return index
    return None


def _ipv6_ifindex(address: ipaddress.IPv6Address) -> int | None:
    """Index of the interface holding ``address``, from /proc/net/if_inet6 (no subprocess, no netlink)."""
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and bytes.fromhex(fields[0]) == address.packed:
            return int(fields[1], 16)
    return None


def _supports_multicast(name: str) -> bool:
    try:
        return bool(int(Path(f"/sys/class/net/{name}/flags").read_text().strip(), 16) & _IFF_MULTICAST)
    except (OSError, ValueError):
        return True  # cannot tell: try to join and let the kernel decide


def _pktinfo(family: int, ancdata: list[tuple[int, int, bytes]]) -> tuple[int, set[bytes]] | None:
    """(arrival ifindex, local addresses the datagram was for) from IP_PKTINFO / IPV6_PKTINFO."""
    for level, kind, data in ancdata:
        if family == socket.AF_INET and level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(data) >= 12:
            ifindex, spec_dst, header_dst = struct.unpack("=i4s4s", data[:12])
            return ifindex, {spec_dst, header_dst}
        if family == socket.AF_INET6 and level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO \
                and len(data) >= 20:
            header_dst, ifindex = struct.unpack("=16sI", data[:20])
            return ifindex, {header_dst}
    return None


class DiscoveryResponder:
    """Answers Alpaca discovery requests on UDP (IPv4 broadcast/unicast, IPv6 multicast/unicast)."""

    def __init__(self, alpaca_port: int, port: int = DISCOVERY_PORT, bind_address: str = "0.0.0.0",
                 ipv6: bool = True, max_replies_per_second: int = 10,
                 multicast_interfaces: Iterable[str] | None = None) -> None:
        """``multicast_interfaces``: names to join the IPv6 group on; None means every capable interface.
        Tests pass ``()`` so that no MLD report leaves the machine on a real interface."""
        if not 0 < alpaca_port < 65536 or not 0 <= port < 65536:
            raise ValueError(f"bad port: alpaca_port={alpaca_port}, discovery port={port}")
        if max_replies_per_second < 1:
            raise ValueError("max_replies_per_second must be at least 1")
        self._alpaca_port = alpaca_port
        self._port = port
        self._ipv6 = ipv6
        self._binds = [_BoundAddress(a, scope) for a, scope in _parse_bind_address(bind_address)]  # []: wildcard
        self._multicast_interfaces = None if multicast_interfaces is None else frozenset(multicast_interfaces)
        self._joined: set[int] = set()
        self._reply = json.dumps({"AlpacaPort": alpaca_port}, separators=(",", ":")).encode()
        self._limiter = _RateLimiter(max_replies_per_second)
        self._sock4: socket.socket | None = None
        self._sock6: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._ports: tuple[int | None, int | None] = (None, None)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.replies_sent = 0
        self.requests_ignored = 0  # every datagram not answered: malformed, rate-limited, wrong interface
        self.requests_rate_limited = 0  # of those, the ones the per-sender rate limit dropped

    @property
    def ipv4_port(self) -> int | None:
        """The bound IPv4 port while started (useful with port=0), else None."""
        return self._ports[0]

    @property
    def ipv6_port(self) -> int | None:
        """The bound IPv6 port while started; None when stopped, disabled or IPv6 is unavailable."""
        return self._ports[1]

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("DiscoveryResponder already started")
            self._stopping.clear()
            self._joined.clear()
            self._sock4 = self._open_ipv4()
            port4 = self._sock4.getsockname()[1]
            self._sock6 = self._open_ipv6(port4) if self._ipv6 else None
            try:
                self._wake_r, self._wake_w = socket.socketpair()
            except OSError:
                self._close_sockets()
                raise
            self._wake_r.setblocking(False)
            self._ports = (port4, self._sock6.getsockname()[1] if self._sock6 else None)
            self._thread = threading.Thread(target=self._run, name="alpaca-discovery", daemon=True)
            self._thread.start()
        log.info("Alpaca discovery listening on UDP port %s (IPv4)%s, answering AlpacaPort %d%s", self.ipv4_port,
                 f" and {self.ipv6_port} (IPv6)" if self._sock6 else "", self._alpaca_port,
                 f" for clients that can reach {' or '.join(str(b.address) for b in self._binds)}"
                 if self._binds else "")

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._stopping.set()
            if self._wake_w is not None:
                try:
                    self._wake_w.send(b"x")  # wakes select() at once instead of after the housekeeping timeout
                except OSError:
                    pass
        if thread is not None:
            thread.join(timeout=1.0)
            if thread.is_alive():
                log.warning("Alpaca discovery thread did not stop within 1 s")
        with self._lock:
            self._close_sockets()

    def _close_sockets(self) -> None:
        for sock in (self._sock4, self._sock6, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._sock4 = self._sock6 = self._wake_r = self._wake_w = None
        self._ports = (None, None)

    # -- sockets -------------------------------------------------------------------------------------------------

    def _open_ipv4(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
            sock.bind(("0.0.0.0", self._port))
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"Alpaca discovery cannot bind UDP 0.0.0.0:{self._port}: {exc.strerror} "
                                     "(another program holds the port without SO_REUSEPORT?)") from exc
        sock.setblocking(False)
        return sock

    def _open_ipv6(self, port: int) -> socket.socket | None:
        # Same port as IPv4; with port=0 (tests) fall back to any free port if that one is taken on IPv6.
        last_error: OSError | None = None
        for attempt in (port, 0) if self._port == 0 else (port,):
            try:
                sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            except OSError as exc:
                log.info("Alpaca discovery: no IPv6 on this host (%s); IPv4 only", exc)
                return None
            try:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
                sock.bind(("::", attempt))
            except OSError as exc:
                sock.close()
                last_error = exc
                continue
            sock.setblocking(False)
            self._join_multicast(sock)
            return sock
        log.info("Alpaca discovery: cannot bind IPv6 UDP [::]:%d (%s); IPv4 only", port, last_error)
        return None

    def _join_multicast(self, sock: socket.socket) -> None:
        group = socket.inet_pton(socket.AF_INET6, MULTICAST_GROUP)
        for index, name in socket.if_nameindex():
            if index in self._joined or not _supports_multicast(name):
                continue
            if self._multicast_interfaces is not None and name not in self._multicast_interfaces:
                continue
            try:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group + struct.pack("@I", index))
            except OSError as exc:
                log.debug("Alpaca discovery: cannot join %s on %s: %s", MULTICAST_GROUP, name, exc)
                continue
            self._joined.add(index)
            log.debug("Alpaca discovery: joined %s on %s", MULTICAST_GROUP, name)

    # -- receive loop --------------------------------------------------------------------------------------------

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        for sock in (self._sock4, self._sock6, self._wake_r):
            if sock is not None:
                selector.register(sock, selectors.EVENT_READ)
        next_rejoin = time.monotonic() + _REJOIN_S
        try:
            while not self._stopping.is_set():
                try:
                    for key, _events in selector.select(timeout=_HOUSEKEEPING_S):
                        if key.fileobj is not self._wake_r:
                            self._drain(key.fileobj)  # type: ignore[arg-type]
                    if self._sock6 is not None and time.monotonic() >= next_rejoin:
                        next_rejoin = time.monotonic() + _REJOIN_S
                        self._join_multicast(self._sock6)
                except Exception:  # the thread must outlive anything; a short pause avoids a hot error loop
                    log.exception("Alpaca discovery loop error")
                    self._stopping.wait(0.1)
        finally:
            selector.close()

    def _drain(self, sock: socket.socket) -> None:
        for _ in range(_BATCH):
            try:
                data, ancdata, flags, addr = sock.recvmsg(_RECV_BUFFER, _ANC_BUFFER)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("Alpaca discovery recvmsg: %s", exc)
                return
            try:
                if not self._handle(sock, data, ancdata, flags, addr):
                    self.requests_ignored += 1
            except Exception:  # whatever a datagram holds, log it and carry on with the next one
                self.requests_ignored += 1
                log.exception("Alpaca discovery: error handling a datagram from %s", addr)

    def _handle(self, sock: socket.socket, data: bytes, ancdata: list[tuple[int, int, bytes]], flags: int,
                addr: Any) -> bool:
        """Answer one datagram; False when it is ignored."""
        if flags & socket.MSG_TRUNC or not is_discovery_request(data):
            log.debug("Alpaca discovery: ignoring %d bytes from %s: %r", len(data), addr, data[:32])
            return False
        bound = self._reachable(sock.family, ancdata)
        if bound is False:
            log.debug("Alpaca discovery: %s asked on an interface without the HTTP address; not answering", addr)
            return False
        if not self._limiter.allow(str(addr[0]), time.monotonic()):
            self.requests_rate_limited += 1
            return False
        try:
            if bound is True:
                sock.sendto(self._reply, addr)
            else:
                sock.sendmsg([self._reply], [bound.source_pktinfo()], 0, addr)
        except OSError as exc:
            log.warning("Alpaca discovery: cannot reply to %s: %s", addr, exc)
            return False
        self.replies_sent += 1
        log.debug("Alpaca discovery: answered %s", addr)
        return True

    def _reachable(self, family: int, ancdata: list[tuple[int, int, bytes]]) -> _BoundAddress | bool:
        """True: answer (wildcard); a _BoundAddress: answer from that address; False: stay silent."""
        if not self._binds:
            return True
        candidates = [bound for bound in self._binds if bound.family == family]
        info = _pktinfo(family, ancdata)
        if not candidates or info is None:
            return False  # wrong family, or cannot tell where it came from: never advertise an unreachable address
        ifindex, local_addresses = info
        for bound in candidates:
            if bound.address.packed in local_addresses or ifindex == bound.ifindex():
                return bound
        return False
