"""Benchmark: HTTP throughput and latency under many keep-alive connections, measured from outside with wrk.

    .venv/bin/python bench/concurrency.py [--seconds 15] [--connections 1,16,64] [--repeat 1]
                                          [--set threads=16 ...] [--source DIR]

Starts the real server in a subprocess (127.0.0.1, a free port, discovery off, one simulated focuser,
connected), then for each connection count runs ``wrk -t1 -c N --latency`` on GET position while a 17th
client (its own keep-alive connection, in this process) polls Position once a second, as a dashboard would.
Prints requests/s, wrk's p50/p99, socket errors and non-2xx replies, and the 17th client's p50/p99.

``--set KEY=VALUE`` sets a ``[server]`` config key (e.g. ``threads=8``) to compare settings; ``--source DIR``
runs another checkout of the code (e.g. ``git archive main | tar -x -C /tmp/main``) for before/after figures.
Targets (issue 10): with 16 connections at least half the 1-connection throughput and p99 <= 40 ms; with 64,
no errors and the 17th client's p99 < 100 ms. wrk uses one thread so it leaves the server as much of a
2-core machine as it can. Traffic goes to 127.0.0.1 only and each run is bounded in time.
"""

from __future__ import annotations

import argparse
import http.client
import re
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from alpaca_http import AlpacaHttp  # noqa: E402
from server_process import ServerProcess, add_server_arguments, have_wrk, server_settings  # noqa: E402

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


@dataclass
class WrkResult:
    connections: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    socket_errors: int
    non_2xx: int


def _ms(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unexpected wrk duration {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str, connections: int) -> WrkResult:
    """The figures of ``wrk --latency`` output."""
    def find(pattern: str, default: str | None = None) -> str:
        match = re.search(pattern, output)
        if match:
            return match.group(1)
        if default is None:
            raise ValueError(f"wrk output without {pattern!r}:\n{output}")
        return default

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return WrkResult(
        connections=connections,
        requests_per_s=float(find(r"Requests/sec:\s+([0-9.]+)")),
        p50_ms=_ms(find(r"\s50%\s+(\S+)")),
        p99_ms=_ms(find(r"\s99%\s+(\S+)")),
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
        non_2xx=int(find(r"Non-2xx or 3xx responses:\s+(\d+)", "0")),
    )


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (with few samples, p99 is the worst)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


class SlowPoller(threading.Thread):
    """The 17th client: GET position once a second on its own connection; latencies and failures."""

    def __init__(self, port: int, interval: float = 1.0) -> None:
        super().__init__(name="bench-17th-client", daemon=True)
        self.port = port
        self.interval = interval
        self.latencies_ms: list[float] = []
        self.failures: list[str] = []
        self._stopping = threading.Event()

    def run(self) -> None:
        client = AlpacaHttp("127.0.0.1", self.port, client_id=17, timeout=10.0)
        next_at = time.monotonic()
        while not self._stopping.wait(max(0.0, next_at - time.monotonic())):
            next_at += self.interval
            t0 = time.perf_counter()
            try:
                client.value("position")
                self.latencies_ms.append((time.perf_counter() - t0) * 1000)
            except (AssertionError, OSError, http.client.HTTPException) as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
        client.close()

    def stop(self) -> None:
        self._stopping.set()
        self.join(15)


def run_wrk(url: str, connections: int, seconds: float) -> WrkResult:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s", "--latency", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    return parse_wrk(out, connections)


def measure(args: argparse.Namespace, settings: dict[str, Any]) -> list[tuple[WrkResult, list[float], int]]:
    rows = []
    with ServerProcess(server=settings, source=args.source) as server:
        with AlpacaHttp("127.0.0.1", server.port) as conn:
            conn.put("connected", Connected="true")
        run_wrk(server.url("position"), 4, 2)  # warm-up: imports, first connections, caches
        for n in args.connections:
            poller = SlowPoller(server.port)
            poller.start()
            result = run_wrk(server.url("position"), n, args.seconds)
            poller.stop()
            rows.append((result, poller.latencies_ms, len(poller.failures)))
            time.sleep(1.0)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=15.0, help="duration of each wrk run (default 15)")
    ap.add_argument("--connections", default="1,16,64", help="comma-separated connection counts")
    ap.add_argument("--repeat", type=int, default=1, help="repeat the whole series (the machine may be shared)")
    add_server_arguments(ap)
    args = ap.parse_args()
    args.connections = [int(c) for c in args.connections.split(",")]
    if not have_wrk("bench/concurrency.py"):
        return 2
    settings = server_settings(args.set)
    print(f"GET position on a simulated focuser, wrk -t1, {args.seconds:g} s per run; server settings "
          f"{settings or 'default'}; code from {args.source or 'this checkout'}")
    print(f"{'run':>4}{'conns':>6}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'errors':>8}{'non-2xx':>8}"
          f"   17th client: {'n':>3}{'p50 ms':>8}{'p99 ms':>8}{'failed':>7}")
    ok = True
    for run in range(1, args.repeat + 1):
        rows = measure(args, settings)
        base = rows[0][0].requests_per_s
        for result, slow, failed in rows:
            slow_p50 = statistics.median(slow) if slow else float("nan")
            slow_p99 = percentile(slow, 99) if slow else float("nan")
            print(f"{run:>4}{result.connections:>6}{result.requests_per_s:>9.0f}{result.p50_ms:>8.2f}"
                  f"{result.p99_ms:>8.2f}{result.socket_errors:>8}{result.non_2xx:>8}"
                  f"   {'':>13}{len(slow):>3}{slow_p50:>8.2f}{slow_p99:>8.2f}{failed:>7}")
            ok = ok and result.socket_errors == 0 and result.non_2xx == 0 and failed == 0
        ratios = ", ".join(f"{r.connections}: {r.requests_per_s / base:.2f}" for r, _, _ in rows[1:])
        print(f"     throughput relative to {rows[0][0].connections} connection(s): {ratios}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
