"""The real server in a subprocess, for benchmarks that must measure it from the outside (wrk, a CPU quota).

    with ServerProcess(focusers=[...], server={"threads": 16}) as server:
        server.url("position")    # http://127.0.0.1:<port>/api/v1/focuser/0/position

Writes a config file to a temporary directory (127.0.0.1, a free port, discovery off, state in the same
directory), starts ``python -m alpaca_focuser --config ...`` and waits until the management API answers.
``source`` runs another checkout of the code (for before/after figures) by putting it first on PYTHONPATH.
Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any, Callable

import tomlkit

SIMULATOR = {"name": "bench", "driver": "simulator", "speed": 2000, "max_step": 50000, "step_size": 4.5}


def add_server_arguments(ap: argparse.ArgumentParser) -> None:
    """``--set KEY=VALUE`` (a ``[server]`` config key) and ``--source DIR`` (another checkout), for comparisons."""
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a [server] config key, "
                                                                                     "e.g. threads=16")
    ap.add_argument("--source", metavar="DIR", help="run the server from another checkout of the code")


def have_wrk(prog: str) -> bool:
    if shutil.which("wrk") is None:
        print(f"{prog} needs wrk (Debian: apt-get install wrk)", file=sys.stderr)
        return False
    return True


def server_settings(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs with TOML values (``threads=16``, ``metrics=false``)."""
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set {pair!r}: expected KEY=VALUE")
        settings.update(tomllib.loads(f"{key.strip()} = {value.strip()}"))
    return settings


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    def __init__(self, focusers: list[dict[str, Any]] | None = None, server: dict[str, Any] | None = None,
                 source: str | None = None, python: str = sys.executable, log_level: str = "WARNING",
                 spawned: Callable[[int], None] | None = None) -> None:
        """``spawned(pid)`` runs as soon as the process exists, before it has started serving (e.g. to put it
        in a cgroup)."""
        self._tmp = tempfile.TemporaryDirectory(prefix="alpaca-bench-")
        self.dir = Path(self._tmp.name)
        self.port = free_port()
        config = {
            "server": {"bind": "127.0.0.1", "port": self.port, "state_dir": str(self.dir / "state"),
                       **(server or {})},
            "discovery": {"enabled": False},
            "focuser": focusers or [dict(SIMULATOR)],
        }
        self.config_path = self.dir / "config.toml"
        self.config_path.write_text(tomlkit.dumps(config))
        env = dict(os.environ)
        if source:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(source).resolve()),
                                                              env.get("PYTHONPATH")]))
        self.log_path = self.dir / "server.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([python, "-m", "alpaca_focuser", "--config", str(self.config_path),
                                      "--log-level", log_level], stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, cwd=self.dir)
        try:
            if spawned is not None:
                spawned(self.proc.pid)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, member: str, device: int = 0) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1/focuser/{device}/{member}"

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1.0)
                conn.request("GET", "/management/apiversions")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the server did not answer within {timeout:g} s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self._tmp.cleanup()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
