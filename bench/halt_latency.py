"""Benchmark: Halt request -> halt command arriving at the controller, on a clean line and on a slow one.

    .venv/bin/python bench/halt_latency.py [--protocol moonlite|pegasus] [--halts 50]

Against the protocol's emulator on a pty (Moonlite, or a Pegasus DMFC on recent firmware, whose halt answers a
line of its own), during moves (a slow motor, so every halt lands mid-move), each halt either at a random point of
the poll cycle, or deliberately while the reply to a poll is on its way (the moment the emulator has received a
poll: GP or GI, or Pegasus's A), which is the worst case issue 11 is about. Two lines:

* clean line: replies whole and at once;
* chunked: every reply reaches the host in two chunks 15 ms apart (a USB-serial adapter's latency timer) and
  every reply byte takes its line time at the controller's baud rate (~1.04 ms at 9600, ~0.52 ms at 19200).

Each is measured directly on the driver (``driver.halt()``) and through the real server (``PUT halt`` over HTTP on
127.0.0.1). The figure is from just before the call to the arrival of the halt (``:FQ#``, ``H``) at the emulator
(its timestamped command log); the driver's own "halt asked for -> frame written" is printed too. After each halt
the driver's position must equal the emulator's once stopped. Traffic goes to 127.0.0.1 only; the run takes about
a minute.
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from alpaca_focuser.drivers.moonlite import MoonliteDriver
from alpaca_focuser.drivers.pegasus import PegasusDriver
from alpaca_focuser.emulator.pegasus_firmware import PegasusFirmware
from alpaca_focuser.emulator.pty_link import MoonliteEmulator, PtyLink

# The keep-alive Alpaca HTTP client is shared with the tests: it lives in tests/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from alpaca_http import AlpacaHttp  # noqa: E402
from moonlite_serial import start_server  # noqa: E402  (bench/ is on the path when a bench runs)

SPEED = 200.0  # steps/s: slow, so a move is always still running when the halt comes
FAR, NEAR = 19000, 1000


@dataclass(frozen=True)
class Protocol:
    """How to run one protocol's emulator and driver, and what its poll and halt look like on the wire."""

    emulator: Callable[..., PtyLink]  # (link path, **line options) -> a started-able emulator at NEAR
    driver: Callable[[str], Any]  # port -> a driver
    polls: tuple[str, ...]  # commands whose reply is "in flight" once the emulator has them
    halt: str  # the halt command as the emulator logs it
    baud: int


PROTOCOLS = {
    "moonlite": Protocol(
        lambda path, **line: MoonliteEmulator(link_path=path, steps_per_second=SPEED, position=NEAR, **line),
        lambda port: MoonliteDriver(port, name="bench"), ("GP", "GI"), "FQ", 9600),
    "pegasus": Protocol(
        lambda path, **line: PtyLink(PegasusFirmware(steps_per_second=SPEED, position=NEAR), path, name="pegasus",
                                     **line),
        lambda port: PegasusDriver(port, name="bench"), ("A",), "H", 19200),
}


def lines(protocol: Protocol) -> dict[str, dict[str, Any]]:
    return {"clean": {}, f"chunked 15 ms + {protocol.baud} baud": {"split_pause": 0.015,
                                                                    "line_baud": protocol.baud}}


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.002)


def wait_for_poll(emu: PtyLink, polls: tuple[str, ...]) -> None:
    """Return the moment the emulator receives the next poll: its reply is then on its way."""
    seen = len(emu.command_log)
    while True:
        if any(command in polls for _, command in emu.command_log[seen:]):
            return
        time.sleep(0.0005)


def measure(emu: PtyLink, protocol: Protocol, driver: Any, start_move: Callable[[int], None],
            halt: Callable[[], None], is_moving: Callable[[], bool], halts: int, rng: random.Random,
            in_flight: bool) -> dict[str, Any]:
    """``halts`` halts during moves: request -> halt at the emulator, and the driver's halt() -> halt written."""
    to_wire: list[float] = []
    internal: list[float] = []
    mismatches = 0
    command = protocol.halt
    for i in range(halts):
        start_move(FAR if i % 2 == 0 else NEAR)
        time.sleep(0.15 + rng.uniform(0.0, 0.1))  # a random point of the 100 ms poll cycle
        if in_flight:
            wait_for_poll(emu, protocol.polls)
        seen = len(emu.arrivals(command))
        asked = time.monotonic()
        halt()
        wait_for(lambda: len(emu.arrivals(command)) > seen, 2.0, f"{command} at the emulator")
        to_wire.append(emu.arrivals(command)[seen] - asked)
        if driver.halt_sent_at is not None and driver.halt_requested_at is not None:
            internal.append(driver.halt_sent_at - driver.halt_requested_at)
        wait_for(lambda: not is_moving(), 3.0, "IsMoving false after the halt")
        if driver.status().position != emu.firmware.position:
            mismatches += 1
    return {"to_wire": to_wire, "internal": internal, "mismatches": mismatches}


def run_driver(tmp: Path, name: str, line: dict[str, Any], halts: int, rng: random.Random, in_flight: bool
               ) -> dict[str, Any]:
    protocol = PROTOCOLS[name]
    with protocol.emulator(str(tmp / "ttyDRIVER"), **line) as emu:
        driver = protocol.driver(emu.device_path)
        driver.connect()
        try:
            result = measure(emu, protocol, driver, driver.move_to, driver.halt, lambda: driver.status().moving,
                             halts, rng, in_flight)
            result["failed_polls"] = driver.failed_polls
        finally:
            driver.close()
    return result


def run_http(tmp: Path, name: str, line: dict[str, Any], halts: int, rng: random.Random, in_flight: bool
             ) -> dict[str, Any]:
    protocol = PROTOCOLS[name]
    with protocol.emulator(str(tmp / "ttyHTTP"), **line) as emu:
        server = start_server(tmp / "state", str(emu.link_path), 20000, name)
        client = AlpacaHttp("127.0.0.1", server.port, client_id=7)
        try:
            client.put("connected", Connected="true")
            driver = server.devices[0].driver
            result = measure(emu, protocol, driver, lambda target: client.put("move", Position=target),
                             lambda: client.put("halt"), lambda: bool(client.value("ismoving")), halts, rng,
                             in_flight)
            result["failed_polls"] = driver.failed_polls
        finally:
            client.close()
            server.stop()
    return result


def ms(values: list[float]) -> str:
    """Median, 95th percentile and worst, in milliseconds."""
    if len(values) < 2:
        return f"{'-':>8}{'-':>8}{'-':>8}"
    p95 = statistics.quantiles(values, n=20)[-1]
    return f"{statistics.median(values) * 1000:8.2f}{p95 * 1000:8.2f}{max(values) * 1000:8.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", choices=PROTOCOLS, default="moonlite", help="the emulated controller")
    parser.add_argument("--halts", type=int, default=50, help="halts per measurement (default 50)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    rng = random.Random(11)
    rows: list[tuple[str, str, str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for line_name, line in lines(PROTOCOLS[args.protocol]).items():
            for when, in_flight in (("random", False), ("reply in flight", True)):
                rows.append((line_name, when, "driver.halt()", run_driver(Path(tmp), args.protocol, line,
                                                                          args.halts, rng, in_flight)))
                rows.append((line_name, when, "HTTP PUT halt", run_http(Path(tmp), args.protocol, line,
                                                                        args.halts, rng, in_flight)))
    print(f"{args.protocol}: Halt -> {PROTOCOLS[args.protocol].halt} at the emulator, {args.halts} halts per row "
          f"during moves ({SPEED:g} steps/s); milliseconds: median, 95th percentile, worst")
    print(f"{'line':<27}{'halt when':<17}{'asked through':<15}{'to the wire':>24}{'> 15 ms':>8}   "
          f"{'halt() -> written':>24}{'mismatches':>12}{'failed polls':>14}")
    for line_name, when, how, r in rows:
        slow = sum(v > 0.015 for v in r["to_wire"])
        print(f"{line_name:<27}{when:<17}{how:<15}{ms(r['to_wire'])}{slow:>8}   {ms(r['internal'])}"
              f"{r['mismatches']:>12}{r['failed_polls']:>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
