"""The command line, run as a real process: ``python -m alpaca_focuser`` (what the console script calls).

Servers started here listen on 127.0.0.1 (or ::1) on a free port, with discovery disabled and state in tmp.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from alpaca_focuser import __version__
from alpaca_http import AlpacaHttp

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "config.toml"
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "alpaca_focuser", *args]


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "STATE_DIRECTORY", "XDG_STATE_HOME")}
    env["TZ"] = "Asia/Kathmandu"  # UTC+05:45: local time stamps would be caught
    env["XDG_STATE_HOME"] = str(tmp_path / "xdg")  # never the user's real state
    return env


def run(tmp_path: Path, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(*args), capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
                          env=clean_env(tmp_path))


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def write_config(tmp_path: Path, port: int, bind: str = "127.0.0.1", speed: int = 2000) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[server]\nbind = "{bind}"\nport = {port}\nstate_dir = "{tmp_path / "state"}"\nthreads = 4\n'
        f"[discovery]\nenabled = false\n"
        f'[[focuser]]\nname = "CLI focuser"\ndriver = "simulator"\nmax_step = 50000\nspeed = {speed}\n'
        f"step_size = 4.5\n",
        encoding="utf-8")
    return path


class Server:
    """A server process with its log in a file (no pipe to fill up); ``http`` talks to its focuser 0."""

    def __init__(self, tmp_path: Path, args: list[str], host: str, port: int, name: str = "server") -> None:
        self.http = AlpacaHttp(host, port, timeout=5)
        self.log_path = tmp_path / f"{name}.log"
        self._log = self.log_path.open("w", encoding="utf-8")
        self.proc = subprocess.Popen(command(*args), stdout=self._log, stderr=subprocess.STDOUT, cwd=tmp_path,
                                     env=clean_env(tmp_path))

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8")

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.http.call("GET", "/management/apiversions")
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"server did not answer within {timeout} s:\n{self.log()}") from None
                time.sleep(0.05)

    def terminate(self, timeout: float = 5.0) -> int:
        self.http.close()
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    started: list[Server] = []

    def factory(*args: str, host: str = "127.0.0.1", port: int, name: str = "server") -> Server:
        server = Server(tmp_path, list(args), host, port, name)
        started.append(server)
        server.wait_ready()
        return server

    yield factory
    for server in started:
        server.close()


# --- one-shot commands ----------------------------------------------------------------------------------------------

def test_version(tmp_path: Path) -> None:
    result = run(tmp_path, "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"alpaca-focuser {__version__}"


def test_help_mentions_the_options(tmp_path: Path) -> None:
    result = run(tmp_path, "--help")
    assert result.returncode == 0
    for option in ("--config", "--bind", "--port", "--log-level", "check-config"):
        assert option in result.stdout


def test_check_config_of_the_shipped_file(tmp_path: Path) -> None:
    result = run(tmp_path, "check-config", str(SHIPPED))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    printed = tomllib.loads(result.stdout)
    assert printed["server"]["port"] == 11111
    assert printed["discovery"]["enabled"] is True
    assert [f["name"] for f in printed["focuser"]] == ["Simulated focuser"]
    assert printed["focuser"][0]["speed"] == 2000


def test_check_config_shows_the_effective_values(tmp_path: Path) -> None:
    path = tmp_path / "min.toml"
    path.write_text('[[focuser]]\nname = "Minimal"\nmax_step = 1000\n', encoding="utf-8")
    result = run(tmp_path, "check-config", str(path))
    assert result.returncode == 0, result.stderr
    printed = tomllib.loads(result.stdout)
    focuser = printed["focuser"][0]
    assert focuser["max_increment"] == 1000  # defaults to max_step
    assert focuser["speed"] == 2000 and focuser["absolute"] is True
    assert printed["server"]["state_dir"] == str(tmp_path / "xdg" / "alpaca-focuser")


@pytest.mark.parametrize("text,key", [
    ("[[focuser]]\nmax_stpe = 5000\n", "max_stpe"),
    ('[server]\nport = "abc"\n', "port"),
    ("[server\nport = 1\n", "line 1"),
    ('[[focuser]]\ndriver = "moonlite"\n', "port"),
])
def test_check_config_of_a_bad_file(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    result = run(tmp_path, "check-config", str(path))
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and key in lines[0]
    assert "Traceback" not in result.stderr


def test_check_config_of_a_missing_file(tmp_path: Path) -> None:
    result = run(tmp_path, "check-config", str(tmp_path / "nope.toml"))
    assert result.returncode != 0
    assert len(result.stderr.splitlines()) == 1 and "nope.toml" in result.stderr


def test_serve_with_a_bad_config_exits_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nport = 70000\n", encoding="utf-8")
    result = run(tmp_path, "--config", str(path), timeout=10)
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "port" in lines[0], result.stderr


def test_serve_exits_non_zero_when_the_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, port)
        result = run(tmp_path, "--config", str(config), timeout=15)
    assert result.returncode == 1
    assert "Cannot start" in result.stdout


# --- the server -----------------------------------------------------------------------------------------------------

def test_server_answers_and_logs_requests_at_debug_in_utc(tmp_path: Path, start: Any) -> None:
    port = free_port()
    server = start("--config", str(write_config(tmp_path, port)), "--log-level", "DEBUG", port=port)
    assert server.http.value("name", ClientTransactionID="31337") == "CLI focuser"
    body = server.http.call("PUT", "connected", Connected="true", ClientTransactionID="4242")
    assert body["ClientTransactionID"] == 4242 and body["ErrorNumber"] == 0
    assert server.http.call("GET", "/management/v1/description")["Value"]["ServerName"]
    assert server.terminate() == 0
    lines = server.log().splitlines()
    debug = [line for line in lines if " DEBUG " in line]
    assert any("GET /api/v1/focuser/0/name" in line and "31337" in line for line in debug), lines
    assert any("PUT /api/v1/focuser/0/connected" in line and "4242" in line for line in debug), lines
    assert any("/management/v1/description" in line for line in debug), lines
    now = datetime.now(timezone.utc)
    for line in lines:
        if line.startswith((" ", "\t", "Traceback")):
            continue
        match = LOG_LINE.match(line)
        assert match, f"not a timestamped log line: {line!r}"
        stamp = datetime.fromisoformat(match.group(1)).replace(tzinfo=timezone.utc)
        assert abs((now - stamp).total_seconds()) < 120, f"not UTC: {line!r}"


def test_sigterm_during_a_move_halts_saves_and_resumes(tmp_path: Path, start: Any) -> None:
    port = free_port()
    config = write_config(tmp_path, port, speed=2000)
    server = start("--config", str(config), port=port)
    server.http.put("connected", Connected="true")
    assert server.http.value("position") == 0
    server.http.put("move", Position="40000")  # 20 s at 2000 steps/s
    assert server.http.value("ismoving") is True
    time.sleep(0.4)
    before = server.http.value("position")
    assert 0 < before < 40000
    started = time.monotonic()
    assert server.terminate(timeout=5) == 0
    assert time.monotonic() - started < 5
    log = server.log()
    assert re.search(r"SIGTERM.*\bhalt(ing|ed)\b", log, re.IGNORECASE | re.DOTALL), log
    state = json.loads((tmp_path / "state" / "state.json").read_text(encoding="utf-8"))
    saved = state["focusers"]["0"]["position"]
    assert before <= saved < 40000, (before, saved)
    assert saved < before + 4000, "it stopped at the SIGTERM, not later"

    again = start("--config", str(config), port=port, name="restart")
    assert again.http.value("connected") is False
    again.http.put("connected", Connected="true")
    assert again.http.value("position") == saved
    assert again.http.value("ismoving") is False
    assert again.terminate() == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_when_idle_exits_0(tmp_path: Path, start: Any, signum: signal.Signals) -> None:
    port = free_port()
    server = start("--config", str(write_config(tmp_path, port)), port=port)
    started = time.monotonic()
    server.proc.send_signal(signum)
    assert server.proc.wait(5) == 0
    assert time.monotonic() - started < 5
    assert "Server stopped" in server.log()


def test_port_and_bind_override_the_file(tmp_path: Path, start: Any) -> None:
    file_port = free_port("::1")
    port = free_port()
    config = write_config(tmp_path, file_port, bind="::1")
    server = start("--config", str(config), "--bind", "127.0.0.1", "--port", str(port), port=port)
    assert server.http.value("name") == "CLI focuser"
    log = server.log()
    assert f"127.0.0.1:{port}" in log
    assert " DEBUG " not in log  # INFO is the default level
    for host, other in (("::1", file_port), ("::1", port), ("127.0.0.1", file_port)):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            assert s.connect_ex((host, other)) != 0, f"something listens on {host} port {other}"
    assert server.terminate() == 0


def test_bind_ipv6_loopback(tmp_path: Path, start: Any) -> None:
    port = free_port("::1")
    server = start("--config", str(write_config(tmp_path, port, bind="::1")), host="::1", port=port)
    assert server.http.value("interfaceversion") == 4
    assert server.terminate() == 0
