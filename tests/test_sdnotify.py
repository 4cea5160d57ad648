"""systemd notify protocol: a real AF_UNIX datagram socket plays systemd."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from alpaca_focuser import sdnotify
from alpaca_focuser.sdnotify import Watchdog, notify


@pytest.fixture
def fake_systemd(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    # A short directory of our own: AF_UNIX paths are limited to 108 bytes, and pytest's tmp_path can be long.
    directory = tempfile.mkdtemp(prefix="sdn")
    path = os.path.join(directory, "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(1.0)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        yield sock
    shutil.rmtree(directory, ignore_errors=True)


def _received(sock: socket.socket, within: float) -> list[tuple[float, bytes]]:
    """Every datagram that arrives within ``within`` seconds, with its arrival time."""
    got: list[tuple[float, bytes]] = []
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(1024)
        except TimeoutError:
            break
        got.append((time.monotonic(), data))
    return got


def test_notify_reaches_the_socket(fake_systemd: socket.socket) -> None:
    assert notify("READY=1") is True
    assert fake_systemd.recv(1024) == b"READY=1"
    assert notify("STOPPING=1") is True
    assert fake_systemd.recv(1024) == b"STOPPING=1"


def test_notify_abstract_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"alpaca-focuser-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(1.0)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("READY=1") is True
        assert sock.recv(1024) == b"READY=1"


def test_notify_without_systemd_is_false(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False


def test_notify_to_a_missing_socket_does_not_raise(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/dir/notify")
    assert notify("READY=1") is False
    not_a_socket = tmp_path / "plain-file"
    not_a_socket.write_text("")
    monkeypatch.setenv("NOTIFY_SOCKET", str(not_a_socket))
    assert notify("READY=1") is False


def test_watchdog_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert Watchdog.from_environment() is None
    for bad in ("0", "-5", "soon"):
        monkeypatch.setenv("WATCHDOG_USEC", bad)
        assert Watchdog.from_environment() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    watchdog = Watchdog.from_environment()
    assert watchdog is not None and watchdog.interval_s == pytest.approx(15.0)
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Watchdog.from_environment() is not None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # systemd meant another process
    assert Watchdog.from_environment() is None


def test_watchdog_pings_at_half_the_period_only_while_healthy(fake_systemd: socket.socket,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    watchdog = Watchdog.from_environment()
    assert watchdog is not None and watchdog.interval_s == pytest.approx(0.1)
    healthy = threading.Event()
    healthy.set()
    watchdog.start(healthy.is_set)
    try:
        assert any(t.name == "systemd-watchdog" and t.daemon for t in threading.enumerate())
        pings = _received(fake_systemd, 0.65)
        assert {data for _, data in pings} == {b"WATCHDOG=1"}
        assert 4 <= len(pings) <= 8  # one at start, then every 0.1 s (slack for a loaded CI machine)
        gaps = [b[0] - a[0] for a, b in zip(pings, pings[1:], strict=False)]
        assert all(0.06 < gap < 0.25 for gap in gaps), gaps

        healthy.clear()
        time.sleep(0.15)  # a ping already decided before the change may still arrive
        _received(fake_systemd, 0.0)
        assert _received(fake_systemd, 0.4) == []  # withheld: systemd would restart us

        healthy.set()
        assert len(_received(fake_systemd, 0.35)) >= 2  # recovers on its own
    finally:
        watchdog.stop()
    assert not any(t.name == "systemd-watchdog" for t in threading.enumerate())
    _received(fake_systemd, 0.0)
    assert _received(fake_systemd, 0.25) == []


def test_watchdog_survives_a_broken_health_probe(fake_systemd: socket.socket,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    def probe() -> bool:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError("probe exploded")
        return True

    watchdog = Watchdog(0.05)
    watchdog.start(probe)
    try:
        pings = _received(fake_systemd, 0.4)
    finally:
        watchdog.stop()
    assert calls >= 3 and pings, "the thread must outlive a raising probe and ping once healthy again"
    assert any("Health probe failed" in r.getMessage() for r in caplog.records)
    assert sdnotify.log.name == "alpaca_focuser.sdnotify"
