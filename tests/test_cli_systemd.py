"""The server as systemd runs it (Type=notify, WatchdogSec): READY=1 once listening, WATCHDOG=1 pings while
healthy, STOPPING=1 on SIGTERM. The test binds its own $NOTIFY_SOCKET; the server listens on 127.0.0.1 only."""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import time
from pathlib import Path

from test_cli import clean_env, command, free_port, write_config


def test_notify_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    notify_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    sock.settimeout(10)
    port = free_port()
    env = clean_env(tmp_path)
    env.update(NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC="400000")
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(command("--config", str(write_config(tmp_path, port))), stdout=log,
                            stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        messages: list[str] = []
        while "READY=1" not in messages:
            messages.append(sock.recv(4096).decode())
        # READY means the API already answers
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/management/apiversions")
        assert conn.getresponse().status == 200
        # watchdog pings keep coming at about half of WATCHDOG_USEC
        started = time.monotonic()
        pings = 0
        while time.monotonic() - started < 1.0:
            if sock.recv(4096).decode() == "WATCHDOG=1":
                pings += 1
        assert 2 <= pings <= 8, pings
        proc.send_signal(signal.SIGTERM)
        while "STOPPING=1" not in messages:
            messages.append(sock.recv(4096).decode())
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
        log.close()
