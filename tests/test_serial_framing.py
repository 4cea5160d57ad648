"""The shared serial pieces on bytes: framers for ``#``-terminated replies and text lines, the link's
transactions on a scripted fake port (halt written out of band, a halt's own reply consumed, flushes), the halt
signal and the link counters."""

from __future__ import annotations

import threading
import time

import pytest

from alpaca_focuser.drivers.link_stats import LinkStats
from alpaca_focuser.drivers.protocol import (LineFramer, ProtocolError, ReplyTimeout, TerminatedFramer,
                                             show_frame)
from alpaca_focuser.drivers.serial_link import HaltSignal, SerialLink, TooManyFailures


# --- framers ------------------------------------------------------------------------------------------------------
def test_terminated_framer_keeps_the_terminator_and_joins_split_input() -> None:
    framer = TerminatedFramer(b"#", 16)
    assert framer.feed(b"F3") == [] and framer.buffer == b"F3"
    assert framer.feed(b"38#P12") == [b"F338#"]
    assert framer.feed(b"34#I1#") == [b"P1234#", b"I1#"]
    framer.feed(b"1A")
    framer.reset()
    assert framer.buffer == b"" and framer.feed(b"2B#") == [b"2B#"]


def test_terminated_framer_without_terminator_and_multibyte_terminator() -> None:
    framer = TerminatedFramer(b"\r\n", 32, keep_terminator=False)
    assert framer.feed(b"OK_DMFCN\r") == []  # the terminator split across two reads
    assert framer.feed(b"\nH\r\n") == [b"OK_DMFCN", b"H"]


def test_terminated_framer_drops_overlong_noise_and_resynchronises() -> None:
    framer = TerminatedFramer(b"#", 8)
    with pytest.raises(ProtocolError, match="no b'#' within 8 bytes"):
        framer.feed(b"\x00" * 9)
    assert framer.buffer == b""
    assert framer.feed(b"0123#") == [b"0123#"]
    with pytest.raises(ProtocolError, match="overlong"):
        framer.feed(b"0123456789#")
    assert framer.feed(b"01#") == [b"01#"]


@pytest.mark.parametrize("stream", [b"A:1:2\nB\n", b"A:1:2\r\nB\r\n", b"A:1:2\r\n\r\nB\n", b"\nA:1:2\r\nB\n"])
def test_line_framer_both_line_endings_and_blank_lines(stream: bytes) -> None:
    framer = LineFramer()
    frames: list[bytes] = []
    for i in range(len(stream)):  # one byte at a time: every split point
        frames += framer.feed(stream[i:i + 1])
    assert frames == [b"A:1:2", b"B"]


def test_line_framer_bounds_a_line() -> None:
    framer = LineFramer(max_length=10)
    with pytest.raises(ProtocolError):
        framer.feed(b"x" * 11)
    assert framer.feed(b"OK\r\n") == [b"OK"]


def test_show_frame() -> None:
    assert show_frame(b":GP#") == ":GP#"
    assert show_frame(b"A\n") == "A"
    assert show_frame(b"\x00#") == "b'\\x00#'"


# --- the link on a scripted port ----------------------------------------------------------------------------------
class ScriptedPort:
    """Answers each written frame from a table after ``delay`` s; no fileno, so the link polls ``read``."""

    def __init__(self, replies: dict[bytes, list[bytes]], delay: float = 0.0) -> None:
        self.replies, self.delay = replies, delay
        self.written: list[tuple[float, bytes]] = []
        self.flushes = 0
        self._due: list[tuple[float, bytes]] = []
        self._lock = threading.Lock()

    def _arrived(self) -> bytes:
        now = time.monotonic()
        with self._lock:
            ready = b"".join(data for due, data in self._due if due <= now)
            self._due = [(due, data) for due, data in self._due if due > now]
        return ready

    @property
    def in_waiting(self) -> int:
        with self._lock:
            return sum(len(d) for due, d in self._due if due <= time.monotonic())

    def read(self, size: int = 1) -> bytes:
        data = self._arrived()
        if not data:
            time.sleep(0.002)
        return data

    def write(self, data: bytes) -> int:
        now = time.monotonic()
        self.written.append((now, data))
        with self._lock:
            for i, reply in enumerate(self.replies.get(data, [])):
                self._due.append((now + self.delay * (i + 1), reply))
        return len(data)

    def reset_input_buffer(self) -> None:
        self.flushes += 1
        self._arrived()

    def close(self) -> None:
        pass


def parse_number(frame: bytes) -> int:
    if not frame.endswith(b"#") or not frame[:-1].isdigit():
        raise ProtocolError(f"not a number: {frame!r}")
    return int(frame[:-1])


def test_query_counts_sent_replies_bad_and_timeouts() -> None:
    port = ScriptedPort({b":P#": [b"42#"], b":B#": [b"4x#"]})
    link = SerialLink(port, TerminatedFramer(), 0.05, command_name=lambda f: f[1:-1].decode())
    assert link.query(b":P#", parse_number) == 42
    with pytest.raises(ProtocolError):
        link.query(b":B#", parse_number)
    with pytest.raises(ReplyTimeout, match="no reply"):
        link.query(b":S#", parse_number)
    stats = link.stats.snapshot()
    assert dict(stats.sent) == {"P": 1, "B": 1, "S": 1} and dict(stats.replies) == {"P": 1}
    assert dict(stats.bad_replies) == {"B": 1} and dict(stats.timeouts) == {"S": 1}
    assert stats.round_trip["P"].count == 1 and link.transactions == 3 and port.flushes == 3


def test_poll_tolerates_bad_replies_then_gives_up() -> None:
    link = SerialLink(ScriptedPort({b":B#": [b"4x#"]}), TerminatedFramer(), 0.05, max_failures=3)
    assert link.poll(b":B#", parse_number) is None
    assert link.poll(b":B#", parse_number) is None
    with pytest.raises(TooManyFailures, match=r"no valid reply to :B# 3 times in a row"):
        link.poll(b":B#", parse_number)
    assert link.stats.snapshot().failed_polls == 3


def test_halt_is_written_while_a_reply_is_awaited_and_its_own_reply_is_consumed() -> None:
    # The position reply comes 0.3 s after :P#; the halt is asked for 0.05 s into that wait and answers "H#".
    port = ScriptedPort({b":P#": [b"42#"], b":H#": [b"H#"], b":Q#": [b"7#"]}, delay=0.3)
    link = SerialLink(port, TerminatedFramer(), 1.0)
    halts = HaltSignal()
    written_out_of_band: list[bool] = []
    link.halts, link.halt_reply = halts, lambda frame: frame == b"H#"
    link.on_halt = lambda: halts.take() and written_out_of_band.append(link.write_halt(b":H#", answers=True))
    asked = threading.Timer(0.05, halts.request)
    asked.start()
    start = time.monotonic()
    assert link.query(b":P#", parse_number) == 42  # the reply in flight is still the answer to :P#
    assert [frame for _, frame in port.written] == [b":P#", b":H#"]
    assert written_out_of_band == [True]
    assert port.written[1][0] - start < 0.25  # long before the 0.3 s reply: the halt did not wait for it
    # The halt's "H#" lands 0.3 s after the halt: the next query waits for it before flushing, and it is never
    # read as the answer to :Q#.
    assert link.query(b":Q#", parse_number) == 7
    assert link.stats.snapshot().halt_replies == 1 and not link.stats.snapshot().bad_replies
    assert link.interrupted  # a halt came since command_mark (0) was taken
    link.command_mark = halts.requests
    assert not link.interrupted
    halts.close()


def test_a_flush_never_discards_the_reply_in_flight() -> None:
    # An in-band halt (no reply awaited) flushes first; an out-of-band one must not.
    port = ScriptedPort({b":P#": [b"1#", b"2#"]}, delay=0.05)
    link = SerialLink(port, TerminatedFramer(), 0.5)
    assert link.write_halt(b":H#", answers=False) is False and port.flushes == 1
    assert link.query(b":P#", parse_number) == 1 and port.flushes == 2


def test_halt_signal() -> None:
    signal = HaltSignal()
    assert not signal.is_set() and not signal.take()
    signal.request()
    signal.request()
    assert signal.is_set() and signal.requests == 2
    assert signal.take() and not signal.take()
    signal.request(count=False)  # re-arming counts no new request
    assert signal.is_set() and signal.requests == 2
    signal.close()


def test_link_stats_histograms_are_cumulative() -> None:
    stats = LinkStats()
    for seconds in (0.003, 0.007, 0.2, 9.0):
        stats.reply_received("GP", seconds)
    stats.halt_requested()
    stats.halt_sent(0.0004, out_of_band=True)
    snap = stats.snapshot()
    timing = snap.round_trip["GP"]
    assert (timing.count, timing.worst) == (4, 9.0) and abs(timing.total - 9.21) < 1e-9
    assert dict(timing.buckets)[0.005] == 1 and dict(timing.buckets)[0.01] == 2 and dict(timing.buckets)[2.5] == 3
    assert (snap.halts_requested, snap.halts_sent, snap.halts_out_of_band) == (1, 1, 1)
    assert dict(snap.halt_latency.buckets)[0.0005] == 1
    stats.command_sent("GP")
    assert snap.sent == {}  # a snapshot is a copy


def test_a_set_commands_acknowledgement_is_consumed_not_read_as_the_next_reply() -> None:
    # Recent Pegasus firmware echoes "M:10" a little after "M:10"; the status query right after must get its own
    # line, not the echo.
    port = ScriptedPort({b"M:10\n": [b"M:10\r\n"], b"A\n": [b"OK_DMFCN:2.8:1:20.00:10:0:1:0:0:0\r\n"]}, delay=0.05)
    link = SerialLink(port, LineFramer(), 0.5, command_name=lambda f: f.decode().strip().split(":")[0])
    link.send(b"M:10\n", answer=lambda line: line == b"M:10")
    assert link.query(b"A\n", lambda line: line.decode()).startswith("OK_DMFCN")
    stats = link.stats.snapshot()
    assert dict(stats.replies) == {"M": 1, "A": 1} and not stats.timeouts
    link.send(b"M:11\n", answer=lambda line: line == b"M:11")  # never answered (older firmware)
    assert link.query(b"A\n", lambda line: line.decode()).startswith("OK_DMFCN")  # one read timeout later
    assert link.stats.snapshot().timeouts == {"M": 1}


def test_a_query_skips_frames_that_answer_something_else() -> None:
    port = ScriptedPort({b":00#": [b"Z20.00#", b"P1234#"]}, delay=0.01)
    link = SerialLink(port, TerminatedFramer(), 0.5)
    assert link.query(b":00#", lambda f: int(f[1:-1]), matches=lambda f: f.startswith(b"P")) == 1234
    assert link.stats.snapshot().stray == 1


def test_a_framer_that_reports_noise_is_counted() -> None:
    from alpaca_focuser.drivers.myfp2_protocol import ReplyFramer

    port = ScriptedPort({b":00#": [b"\x00\xffets Jun  8 2016\r\nP12#"]})
    link = SerialLink(port, ReplyFramer(), 0.5)
    assert link.query(b":00#", lambda f: int(f[1:-1])) == 12
    assert link.stats.snapshot().noise == 1
