"""Benchmark: Alpaca request latency and throughput with N concurrent keep-alive clients on loopback.

    .venv/bin/python bench/http_load.py [--clients 16] [--seconds 5]

Starts a real server on 127.0.0.1 (ephemeral port, discovery off), connects the simulated focuser, starts a
long move, and has N clients poll Position/IsMoving/DeviceState for a bounded time. Prints requests/s and the
latency median, p99 and worst. Traffic goes to 127.0.0.1 only, bounded in count and time.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from alpaca_focuser.app import FocuserServer
from alpaca_focuser.config import parse_config

# The keep-alive Alpaca HTTP client is shared with the tests: it lives in tests/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from alpaca_http import AlpacaHttp  # noqa: E402

MEMBERS = ("position", "ismoving", "devicestate")


def client(port: int, seconds: float, out: list[float], errors: list[str]) -> None:
    deadline = time.monotonic() + seconds
    i = 0
    with AlpacaHttp("127.0.0.1", port, client_id=1) as conn:
        while time.monotonic() < deadline and i < 200_000:
            i += 1
            t0 = time.perf_counter()
            body = conn.call("GET", MEMBERS[i % 3])
            out.append(time.perf_counter() - t0)
            if body["ErrorNumber"] != 0:
                errors.append(body["ErrorMessage"])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "Task queue depth" is expected under load
    with tempfile.TemporaryDirectory() as state:
        config = parse_config({"server": {"bind": "127.0.0.1", "port": 0, "state_dir": state},
                               "discovery": {"enabled": False},
                               "focuser": [{"name": "bench", "speed": 100, "max_step": 50000}]}, "<bench>")
        server = FocuserServer(config)
        server.start()
        try:
            with AlpacaHttp("127.0.0.1", server.port) as conn:
                conn.call("PUT", "connected", Connected="true")
                conn.call("PUT", "move", Position=50000)
            latencies: list[list[float]] = [[] for _ in range(args.clients)]
            errors: list[str] = []
            threads = [threading.Thread(target=client, args=(server.port, args.seconds, latencies[i], errors))
                       for i in range(args.clients)]
            start = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - start
        finally:
            server.stop()
    flat = sorted(x for lat in latencies for x in lat)
    print(f"{args.clients} clients, {elapsed:.1f} s: {len(flat)} requests, {len(flat) / elapsed:.0f} req/s; "
          f"latency median {statistics.median(flat) * 1000:.2f} ms, p99 {flat[int(len(flat) * 0.99)] * 1000:.2f} ms, "
          f"worst {flat[-1] * 1000:.2f} ms; ASCOM errors {len(errors)}")
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
