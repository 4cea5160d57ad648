"""The serial engine through a real pty against the project's Moonlite emulator: Halt written while a reply is on
its way (issue 11), queued commands and Halt, the engine's quirk rules for other dialects, and the link counters.

The emulator is independent of the drivers (its own parser). Timing assertions are loose on purpose (a loaded
machine); the order of events on the wire is what they check. bench/halt_latency.py gives the figures."""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import replace
from typing import Any, Callable, Iterator

import pytest

from alpaca_focuser.drivers.dialect import Dialect
from alpaca_focuser.drivers.moonlite import MoonliteDialect
from alpaca_focuser.drivers.serial_engine import SerialEngine
from alpaca_focuser.emulator.pty_link import MoonliteEmulator, PtyLink
from conftest import started_until_teardown, wait_for

CHUNKED = {"split_pause": 0.015, "line_baud": 9600}  # a USB adapter's latency timer, at 9600-baud line timing


@pytest.fixture
def make_engine() -> Iterator[Callable[..., SerialEngine]]:
    """Connected engines (the Moonlite dialect unless given) on an emulator; closed at teardown."""
    def start(emu: MoonliteEmulator, dialect: Dialect | None = None, **kwargs: Any) -> SerialEngine:
        kwargs.setdefault("reconnect_max_backoff", 1.0)
        engine = SerialEngine(emu.device_path, dialect or MoonliteDialect(), name="engine", **kwargs)
        engine.connect()
        return engine

    yield from started_until_teardown(start, SerialEngine.close)


def next_poll_query(emu: PtyLink, polls: tuple[str, ...] = ("GP", "GI")) -> float:
    """Wait until the emulator receives the next of ``polls`` (its reply is then on its way); its arrival time."""
    seen = len(emu.command_log)

    def arrived() -> float | None:
        return next((t for t, c in emu.command_log[seen:] if c in polls), None)

    return float(wait_for(arrived, 2.0, "a poll query at the emulator"))


def reply_end_after(emu: PtyLink, since: float) -> float:
    """When the emulator wrote the last byte of the first reply it sent after ``since``."""
    def written() -> float | None:
        return next((t for t, data in list(emu.output_log) if t >= since and data.endswith(b"#")), None)

    return float(wait_for(written, 2.0, "the reply in flight to be written"))


def halt_during_replies(emu: PtyLink, engine: SerialEngine, halts: int, *, halt: str = "FQ",
                        polls: tuple[str, ...] = ("GP", "GI")) -> tuple[list[float], int]:
    """Halts, each the moment a poll query reached the emulator: (halt() -> FQ at the emulator, how many FQs
    arrived before the reply in flight had been written in full). Checks the stop position every time. ``halt``
    and ``polls``: the commands as the emulator logs them (Moonlite's by default)."""
    latencies, before_reply_end = [], 0
    for i in range(halts):
        engine.move_to(9000 if i % 2 == 0 else 1000)
        time.sleep(0.15)
        polled = next_poll_query(emu, polls)
        seen = len(emu.arrivals(halt))
        asked = time.monotonic()
        engine.halt()
        fq = wait_for(lambda: emu.arrivals(halt)[seen:], 2.0, "the halt at the emulator")[0]
        latencies.append(fq - asked)
        before_reply_end += fq < reply_end_after(emu, polled)
        wait_for(lambda: not engine.status().moving, 3.0, "the halt to be seen")
        assert not emu.firmware.moving
        assert engine.status().position == emu.firmware.position  # stopped where the controller says
    return latencies, before_reply_end


def test_halt_is_written_while_a_reply_is_in_flight(make_emu: Any, make_engine: Any) -> None:
    emu = make_emu(steps_per_second=300.0, position=1000, **CHUNKED)
    engine = make_engine(emu)
    seen: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            seen.append(engine.status().position)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, name="test-sampler", daemon=True)
    sampler.start()
    latencies, before_reply_end = halt_during_replies(emu, engine, 8)
    done.set()
    sampler.join()
    stats = engine.link_stats()
    print(f"halt() -> FQ at the emulator with chunked replies: median {statistics.median(latencies) * 1000:.2f} ms, "
          f"worst {max(latencies) * 1000:.2f} ms; {before_reply_end}/8 before the reply in flight ended")
    # The old engine waited for the reply (15 ms between its chunks): the halt now goes out during it.
    assert before_reply_end >= 6 and stats.halts_out_of_band >= 6
    assert statistics.median(latencies) < 0.010
    # The reply in flight was still read as the answer to its own command: nothing discarded, no fault.
    assert not stats.bad_replies and not stats.timeouts and stats.failed_polls == 0 and stats.faults == 0
    assert engine.status().fault is None
    assert all(1000 <= p <= 9000 for p in seen)  # never a position from the wrong reply


def test_halt_cancels_a_queued_move_and_only_halt_jumps(make_emu: Any, make_engine: Any) -> None:
    emu = make_emu(steps_per_second=300.0, position=1000)
    engine = make_engine(emu)
    engine.move_to(5000)
    wait_for(lambda: engine.status().position > 1100, 2.0, "the motor to start")
    emu.reply_delay = 0.3  # from now on the owner thread waits 0.3 s in every query
    polled = next_poll_query(emu)
    engine.move_to(3000)  # queued behind the query in flight: it must wait its turn
    wait_for(lambda: "SN0BB8" in emu.firmware.commands, 2.0, "the queued move")
    sn_at = emu.arrivals("SN0BB8")[0]
    assert sn_at >= reply_end_after(emu, polled)  # written only once the reply in flight had come
    wait_for(lambda: emu.firmware.target == 3000 and "FG" in emu.firmware.commands[-2:], 2.0, "the retarget")

    polled = next_poll_query(emu)
    engine.move_to(8000)  # queued again behind a 0.3 s reply ...
    engine.halt()  # ... and cancelled by the halt, which does not wait for that reply
    fq = wait_for(lambda: emu.arrivals("FQ"), 2.0, "FQ at the emulator")[0]
    assert fq < reply_end_after(emu, polled)
    emu.reply_delay = 0.0
    wait_for(lambda: not engine.status().moving, 3.0, "the halt to be seen")
    time.sleep(0.3)
    assert "SN1F40" not in emu.firmware.commands  # the cancelled move never reached the controller
    assert not emu.firmware.moving and engine.status().position == emu.firmware.position
    assert engine.link_stats().faults == 0 and engine.failed_polls == 0


def test_halt_during_a_move_sequence_does_not_start_the_motor(make_emu: Any, make_engine: Any) -> None:
    emu = make_emu(position=500)
    engine = make_engine(emu)
    emu.reply_delay = 0.3
    engine.move_to(4000)
    wait_for(lambda: "GN" in emu.firmware.commands, 2.0, "SN and its GN read-back")  # GN's reply now 0.3 s away
    engine.halt()
    wait_for(lambda: "FQ" in emu.firmware.commands, 1.0, "FQ while GN's reply is awaited")
    emu.reply_delay = 0.0
    wait_for(lambda: not engine.status().moving, 3.0, "IsMoving false")
    time.sleep(0.3)
    assert "FG" not in emu.firmware.commands and emu.firmware.position == 500 == engine.status().position


class HaltAnswers(MoonliteDialect):
    """A Moonlite whose halt answers a line of its own, as recent Pegasus firmware does."""

    quirks = replace(MoonliteDialect.quirks, halt_answers=True)

    def is_halt_reply(self, frame: bytes) -> bool:
        return frame == b"HALT#"


def test_a_halts_own_reply_is_consumed_never_taken_for_another(make_emu: Any, make_engine: Any) -> None:
    emu = make_emu(steps_per_second=300.0, position=1000, **CHUNKED)
    answer = emu.firmware.feed_replies

    def with_halt_reply(data: bytes) -> list[bytes]:
        return answer(data) + [b"HALT#"] * data.count(b":FQ#")

    emu.firmware.feed_replies = with_halt_reply  # type: ignore[method-assign]
    engine = make_engine(emu, HaltAnswers())
    halt_during_replies(emu, engine, 4)
    engine.halt()  # and one while idle
    wait_for(lambda: len(emu.arrivals("FQ")) == 5, 2.0, "the idle halt")
    time.sleep(0.5)
    stats = engine.link_stats()
    assert stats.halt_replies == stats.halts_sent == 5
    assert not stats.bad_replies and stats.failed_polls == 0 and engine.status().fault is None


class IdleHaltArmed(MoonliteDialect):
    """A firmware that keeps a halt sent while idle armed (the ESP32 myFocuserPro2)."""

    quirks = replace(MoonliteDialect.quirks, halt_when_idle=False)


def test_never_halt_an_idle_controller_when_the_dialect_says_so(make_emu: Any, make_engine: Any) -> None:
    emu = make_emu(steps_per_second=500.0, position=100)
    engine = make_engine(emu, IdleHaltArmed())
    engine.halt()  # ConformU does this
    time.sleep(0.3)
    assert "FQ" not in emu.firmware.commands and not engine.status().moving
    engine.move_to(3000)
    wait_for(lambda: emu.firmware.position > 300, 2.0, "the motor to start")
    engine.halt()
    wait_for(lambda: "FQ" in emu.firmware.commands, 1.0, "FQ while moving")
    wait_for(lambda: not engine.status().moving, 3.0, "the halt")
    assert engine.status().position == emu.firmware.position < 3000
    stats = engine.link_stats()
    assert (stats.halts_requested, stats.halts_sent) == (2, 1)


class MoveIgnoredWhileMoving(MoonliteDialect):
    quirks = replace(MoonliteDialect.quirks, retarget_needs_halt=True)


def test_retarget_is_halt_wait_then_move_when_the_dialect_says_so(make_emu: Any, make_engine: Any) -> None:
    emu = make_emu(steps_per_second=1000.0, position=1000)
    engine = make_engine(emu, MoveIgnoredWhileMoving())
    engine.move_to(6000)
    wait_for(lambda: engine.status().position > 1500, 2.0, "the motor to start")
    moving: list[bool] = []
    engine.move_to(2000)
    while engine.status().moving:
        moving.append(True)
        time.sleep(0.005)
        assert len(moving) < 2000, "the retarget did not end"
    commands = emu.firmware.commands
    assert commands.index("FQ") < commands.index("SN07D0")  # halted before the new target was set
    assert engine.status().position == 2000 == emu.firmware.position  # and it got there
    assert len(moving) > 10  # IsMoving stayed true from the retarget through the halt to the end


def test_link_counters(make_emu: Any, make_engine: Any) -> None:
    emu = make_emu(steps_per_second=2000.0, position=100)
    engine = make_engine(emu)
    engine.move_to(1500)
    wait_for(lambda: not engine.status().moving, 3.0, "the move")
    engine.sync(2000)
    wait_for(lambda: "SP07D0" in emu.firmware.commands, 2.0, "the sync")
    engine.move_to(9000)
    wait_for(lambda: emu.firmware.moving, 1.0, "motion")
    engine.halt()
    wait_for(lambda: not engine.status().moving, 3.0, "the halt")
    stats = engine.link_stats()
    assert dict(stats.sent) == dict(emu.firmware.command_counts)  # every command written arrived, by name
    for query in ("GV", "GD", "GH", "GT", "GI", "GP", "GN"):
        assert stats.replies[query] == stats.sent[query] == stats.round_trip[query].count, query
        assert 0 < stats.round_trip[query].worst < 1.5
    assert (stats.halts_requested, stats.halts_sent, stats.halt_latency.count) == (1, 1, 1)
    assert (stats.faults, stats.reconnects) == (0, 0) and not stats.bad_replies and not stats.timeouts
    assert engine.transactions == sum(stats.sent.values())

    emu.silent = True
    wait_for(lambda: engine.status().fault is not None, 5.0, "the fault")
    emu.silent = False
    wait_for(lambda: engine.status().fault is None, 6.0, "the recovery")
    emu.unplug()
    wait_for(lambda: engine.status().fault is not None, 3.0, "the unplug")
    emu.replug()
    wait_for(lambda: engine.status().fault is None, 6.0, "the reconnect")
    stats = engine.link_stats()
    assert sum(stats.timeouts.values()) >= 3 and stats.failed_polls >= 3
    assert (stats.faults, stats.reconnects) == (2, 2)


class QuietBoot(MoonliteDialect):
    link_settings = replace(MoonliteDialect.link_settings, boot_time=0.8, quiet_boot=True)


def test_a_dialect_can_wait_out_the_boot_in_silence(make_emu: Any, make_engine: Any) -> None:
    emu = make_emu(boot_delay=0.6, position=77)
    start = time.monotonic()
    engine = make_engine(emu, QuietBoot())
    assert time.monotonic() - start >= 0.8
    assert emu.boot_ignored_bytes == 0  # nothing was said to the booting board
    assert engine.status().position == 77 and emu.firmware.commands[0] == "GV"  # the first GV was answered
