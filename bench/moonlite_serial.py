"""Benchmark: Moonlite serial traffic and Halt latency through the whole server, against the pty emulator.

    .venv/bin/python bench/moonlite_serial.py

Starts the Moonlite emulator on a pty (symlink in a temp dir) and a real server on 127.0.0.1 (ephemeral port,
discovery off, state in the temp dir) with the Moonlite driver, connects over HTTP and prints:

1. serial commands per second received by the emulator, idle and moving, with 1 and with 16 HTTP clients
   polling Position/IsMoving (each over ~5 s; moving during a long move at a slow emulator speed);
2. Halt latency from just before the HTTP PUT halt is sent to ``:FQ#`` arriving at the emulator (median and
   worst of 50 halts), the HTTP round trip of that PUT, and the server-internal part (driver.halt() called ->
   FQ written), read from the driver's own timestamps.

The emulator is not modified: FQ arrival is timestamped by wrapping the firmware's ``feed_replies`` on the
instance. Traffic goes to 127.0.0.1 only; the run is bounded (~1 minute).
"""

from __future__ import annotations

import http.client
import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from alpaca_focuser.app import FocuserServer
from alpaca_focuser.config import parse_config
from alpaca_focuser.emulator.pty_link import MoonliteEmulator

# The keep-alive Alpaca HTTP client is shared with the tests: it lives in tests/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from alpaca_http import AlpacaHttp  # noqa: E402

WINDOW_S = 5.0
CLIENTS = 16
HALTS = 50
SLOW_SPEED = 200.0  # steps/s: a move from 1000 to 19000 lasts ~90 s, far longer than the measurements
MAX_STEP = 20000


def start_server(state_dir: Path, link: str, max_step: int) -> FocuserServer:
    """A real server on 127.0.0.1 (ephemeral port, discovery off, state in ``state_dir``) with one Moonlite
    focuser on the emulator at ``link``."""
    config = parse_config({
        "server": {"bind": "127.0.0.1", "port": 0, "state_dir": str(state_dir)},
        "discovery": {"enabled": False},
        "focuser": [{"name": "Moonlite", "driver": "moonlite", "port": link, "max_step": max_step,
                     "max_increment": max_step, "step_size": 4.5}],
    }, "<bench>")
    server = FocuserServer(config, multicast_interfaces=())
    server.start()
    return server


def serial_rate(emu: MoonliteEmulator, port: int, clients: int) -> tuple[float, float, int]:
    """(emulator commands/s, HTTP requests/s, failed requests) while ``clients`` threads poll for WINDOW_S."""
    stop = threading.Event()
    counts = [0] * clients
    failures = [0] * clients

    def poll(i: int) -> None:
        with AlpacaHttp("127.0.0.1", port, client_id=7) as client:  # one per thread: not thread-safe
            while not stop.is_set():
                for member in ("position", "ismoving"):
                    try:
                        client.value(member)
                        counts[i] += 1
                    except (AssertionError, OSError, http.client.HTTPException):
                        failures[i] += 1
                time.sleep(0.005)  # ~100 requests/s per client at most; a real client polls 1-10 times a second

    threads = [threading.Thread(target=poll, args=(i,), name=f"bench-client-{i}", daemon=True)
               for i in range(clients)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # connections up before the window opens
    c0, n0, t0 = sum(emu.firmware.command_counts.values()), sum(counts), time.monotonic()
    time.sleep(WINDOW_S)
    c1, n1, t1 = sum(emu.firmware.command_counts.values()), sum(counts), time.monotonic()
    stop.set()
    for t in threads:
        t.join(10.0)
    return (c1 - c0) / (t1 - t0), (n1 - n0) / (t1 - t0), sum(failures)


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.005)


def measure_halts(emu: MoonliteEmulator, server: FocuserServer, client: AlpacaHttp
                  ) -> tuple[list[float], list[float], list[float]]:
    """(request -> FQ at the emulator, HTTP round trip of the PUT, driver.halt() -> FQ written), in seconds."""
    driver: Any = server.devices[0].driver
    to_fq: list[float] = []
    rtt: list[float] = []
    internal: list[float] = []
    for i in range(HALTS):
        client.put("move", Position=MAX_STEP - 1000 if i % 2 == 0 else 1000)
        time.sleep(0.25)
        seen = len(emu.arrivals("FQ"))
        sent = time.monotonic()
        client.put("halt")
        rtt.append(time.monotonic() - sent)
        wait_for(lambda: len(emu.arrivals("FQ")) > seen, 2.0, "FQ at the emulator")
        to_fq.append(emu.arrivals("FQ")[seen] - sent)  # the emulator stamps each command as it reads it
        wait_for(lambda: not client.value("ismoving"), 2.0, "IsMoving false after Halt")
        if driver.halt_sent_at is not None and driver.halt_requested_at is not None:
            internal.append(driver.halt_sent_at - driver.halt_requested_at)
    return to_fq, rtt, internal


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:9.2f}{max(values) * 1000:9.2f}"


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "Task queue depth" is expected under load
    with tempfile.TemporaryDirectory() as tmp:
        emu = MoonliteEmulator(link_path=str(Path(tmp) / "ttyMOONLITE"), steps_per_second=SLOW_SPEED,
                               position=1000).start()
        server = start_server(Path(tmp) / "state", str(emu.link_path), MAX_STEP)
        client = AlpacaHttp("127.0.0.1", server.port, client_id=7)
        try:
            client.put("connected", Connected="true")
            rates: dict[tuple[str, int], tuple[float, float, int]] = {}
            for n in (1, CLIENTS):
                rates[("idle", n)] = serial_rate(emu, server.port, n)
            client.put("move", Position=MAX_STEP - 1000)
            time.sleep(0.3)
            for n in (1, CLIENTS):
                rates[("moving", n)] = serial_rate(emu, server.port, n)
            if not client.value("ismoving"):
                raise RuntimeError("the long move ended during the measurement; lower SLOW_SPEED")
            client.put("halt")
            wait_for(lambda: not client.value("ismoving"), 2.0, "the halt")
            to_fq, rtt, internal = measure_halts(emu, server, client)
        finally:
            client.close()
            server.stop()
            emu.stop()

    print(f"Moonlite serial benchmark (emulator on a pty at {SLOW_SPEED:g} steps/s, {WINDOW_S:g} s windows)")
    print(f"{'state':<8}{'clients':>8}{'serial cmd/s':>14}{'HTTP req/s':>12}{'failed':>8}")
    for (state, n), (serial_per_s, http_per_s, failed) in rates.items():
        print(f"{state:<8}{n:>8}{serial_per_s:>14.1f}{http_per_s:>12.0f}{failed:>8}")
    title = f"Halt over HTTP, {len(to_fq)} halts (0.25 s into a move each)"
    print(f"\n{title:<50}{'median':>9}{'worst':>9}  (ms)")
    print(f"  {'PUT halt sent -> :FQ# at the emulator':<48}{ms(to_fq)}")
    print(f"  {'PUT halt HTTP round trip':<48}{ms(rtt)}")
    if internal:
        print(f"  {'driver.halt() -> :FQ# written (server side)':<48}{ms(internal)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
