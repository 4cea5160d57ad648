"""Benchmark: Halt request -> halt command arriving at the controller, on a clean line and on a slow one.

    .venv/bin/python bench/halt_latency.py [--halts 50] [--protocol moonlite|myfp2|pegasus]

Against the protocol's emulator on a pty (Moonlite; myFocuserPro2 on its Nano profile; a Pegasus DMFC on recent
firmware, whose halt answers a line of its own), during moves (a slow motor, so every halt lands mid-move), each
halt either at a random point of the poll cycle, or deliberately while the reply to a poll is on its way (the
moment the emulator has received a poll: GP or GI, :00# or :01#, Pegasus's A), which is the worst case issue 11 is
about. Two lines:

* clean line: replies whole and at once;
* chunked: every reply reaches the host in two chunks 15 ms apart (a USB-serial adapter's latency timer) and
  every reply byte takes its line time at the controller's baud rate (~1.04 ms at 9600, ~0.52 ms at 19200).

Each is measured directly on the driver (``driver.halt()``) and through the real server (``PUT halt`` over HTTP on
127.0.0.1). The figure is from just before the call to the arrival of the halt (``:FQ#``, ``:27#``, ``H``) at the emulator
(its timestamped command log); the driver's own "halt asked for -> frame written" is printed too. After each halt the driver's
position must equal the emulator's once stopped. Traffic goes to 127.0.0.1 only; the run takes about a minute.
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
from alpaca_focuser.drivers.myfp2 import MyFP2Driver, MyFP2Options
from alpaca_focuser.drivers.serial_engine import SerialEngine
from alpaca_focuser.drivers.pegasus import PegasusDriver
from alpaca_focuser.emulator.myfp2_firmware import MyFP2Firmware
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
    """What the benchmark needs to know of one protocol: its halt and poll queries as the emulator logs them, an
    emulator (link path, pacing knobs), a driver on a port path, and the server's focuser table keys."""

    halt: str
    polls: tuple[str, ...]
    emulator: Callable[[str, dict[str, Any]], PtyLink]
    driver: Callable[[str], SerialEngine]
    table: dict[str, Any]
    baud: int = 9600

    def lines(self) -> dict[str, dict[str, Any]]:
        return {"clean": {}, f"chunked 15 ms + {self.baud} baud": {"split_pause": 0.015, "line_baud": self.baud}}


PROTOCOLS = {
    "moonlite": Protocol("FQ", ("GP", "GI"),
                         lambda link, line: MoonliteEmulator(link_path=link, steps_per_second=SPEED, position=NEAR,
                                                             **line),
                         lambda path: MoonliteDriver(path, name="bench"), {"driver": "moonlite"}),
    # The Nano's own MaxStep (10000) is below FAR: the driver writes the server's into it, as a user would ask.
    "myfp2": Protocol("27", ("00", "01"),
                      lambda link, line: PtyLink(MyFP2Firmware("nano", position=NEAR, steps_per_second=SPEED), link,
                                                 name="myfp2", **line),
                      lambda path: MyFP2Driver(path, name="bench", options=MyFP2Options(max_step=20000,
                                                                                        set_max_step=True)),
                      {"driver": "myfp2", "set_controller_max_step": True}),
    "pegasus": Protocol("H", ("A",),
                        lambda link, line: PtyLink(PegasusFirmware(steps_per_second=SPEED, position=NEAR), link,
                                                   name="pegasus", **line),
                        lambda path: PegasusDriver(path, name="bench"), {"driver": "pegasus"}, baud=19200),
}


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.002)


def wait_for_poll(emu: PtyLink, polls: tuple[str, ...]) -> None:
    """Return the moment the emulator receives the next position or moving query: its reply is then on its way."""
    seen = len(emu.command_log)
    while True:
        if any(command in polls for _, command in emu.command_log[seen:]):
            return
        time.sleep(0.0005)


def measure(protocol: Protocol, emu: PtyLink, driver: Any, start_move: Callable[[int], None],
            halt: Callable[[], None], is_moving: Callable[[], bool], halts: int, rng: random.Random,
            in_flight: bool) -> dict[str, Any]:
    """``halts`` halts during moves: request -> halt at the emulator, and the driver's halt() -> halt written."""
    to_wire: list[float] = []
    internal: list[float] = []
    mismatches = 0
    for i in range(halts):
        # Away from where it is, so the halt always lands mid-move (a myFocuserPro2 is never halted while idle).
        start_move(FAR if driver.status().position < (FAR + NEAR) // 2 else NEAR)
        time.sleep(0.15 + rng.uniform(0.0, 0.1))  # a random point of the 100 ms poll cycle
        if in_flight:
            wait_for_poll(emu, protocol.polls)
        seen = len(emu.arrivals(protocol.halt))
        asked = time.monotonic()
        halt()
        wait_for(lambda: len(emu.arrivals(protocol.halt)) > seen, 2.0, "the halt at the emulator")
        to_wire.append(emu.arrivals(protocol.halt)[seen] - asked)
        if driver.halt_sent_at is not None and driver.halt_requested_at is not None:
            internal.append(driver.halt_sent_at - driver.halt_requested_at)
        wait_for(lambda: not is_moving(), 3.0, "IsMoving false after the halt")
        if driver.status().position != emu.firmware.position:  # type: ignore[attr-defined]
            mismatches += 1
    return {"to_wire": to_wire, "internal": internal, "mismatches": mismatches}


def run_driver(protocol: Protocol, tmp: Path, line: dict[str, Any], halts: int, rng: random.Random,
               in_flight: bool) -> dict[str, Any]:
    with protocol.emulator(str(tmp / "ttyDRIVER"), line) as emu:
        driver = protocol.driver(emu.device_path)
        driver.connect()
        try:
            result = measure(protocol, emu, driver, driver.move_to, driver.halt, lambda: driver.status().moving,
                             halts, rng, in_flight)
            result["failed_polls"] = driver.failed_polls
        finally:
            driver.close()
    return result


def run_http(protocol: Protocol, tmp: Path, line: dict[str, Any], halts: int, rng: random.Random,
             in_flight: bool) -> dict[str, Any]:
    with protocol.emulator(str(tmp / "ttyHTTP"), line) as emu:
        server = start_server(tmp / "state", str(emu.link_path), 20000, **protocol.table)
        client = AlpacaHttp("127.0.0.1", server.port, client_id=7)
        try:
            client.put("connected", Connected="true")
            driver: Any = server.devices[0].driver  # a SerialEngine: it has failed_polls
            result = measure(protocol, emu, driver, lambda target: client.put("move", Position=target),
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
    parser.add_argument("--halts", type=int, default=50, help="halts per measurement (default 50)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="moonlite", help="the controller (default moonlite)")
    args = parser.parse_args()
    protocol = PROTOCOLS[args.protocol]
    logging.basicConfig(level=logging.INFO if "-v" in sys.argv else logging.ERROR)
    rng = random.Random(11)
    rows: list[tuple[str, str, str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for line_name, line in protocol.lines().items():
            for when, in_flight in (("random", False), ("reply in flight", True)):
                rows.append((line_name, when, "driver.halt()", run_driver(protocol, Path(tmp), line, args.halts,
                                                                          rng, in_flight)))
                rows.append((line_name, when, "HTTP PUT halt", run_http(protocol, Path(tmp), line, args.halts, rng,
                                                                        in_flight)))
    print(f"{args.protocol}: Halt -> {protocol.halt} at the emulator, {args.halts} halts per row during moves "
          f"({SPEED:g} steps/s); milliseconds: median, 95th percentile, worst")
    print(f"{'line':<27}{'halt when':<17}{'asked through':<15}{'to the wire':>24}{'> 15 ms':>8}   "
          f"{'halt() -> written':>24}{'mismatches':>12}{'failed polls':>14}")
    for line_name, when, how, r in rows:
        slow = sum(v > 0.015 for v in r["to_wire"])
        print(f"{line_name:<27}{when:<17}{how:<15}{ms(r['to_wire'])}{slow:>8}   {ms(r['internal'])}"
              f"{r['mismatches']:>12}{r['failed_polls']:>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
