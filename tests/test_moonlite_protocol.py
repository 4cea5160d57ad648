"""The Moonlite codec on bytes: every command's encoding and every reply's decoding, the framer, the link's
transactions on a scripted fake port, and the port listing."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from alpaca_focuser.drivers import moonlite_protocol as mp
from alpaca_focuser.drivers.ports import PortInfo, format_ports

GARBAGE = [b"12G4#", b"123#", b"12345#", b"\x00\x00#", b"", b"1A2B", b"#", b":1A2B#", b"1A 2B#", b"-001#",
           b"1A2B##", b"\xff\xfe\xfd\xfc#"]


# --- encoders -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cmd, payload, frame", [
    ("GP", "", b":GP#"), ("GN", "", b":GN#"), ("GI", "", b":GI#"), ("GT", "", b":GT#"), ("GV", "", b":GV#"),
    ("GD", "", b":GD#"), ("GH", "", b":GH#"), ("GC", "", b":GC#"), ("C", "", b":C#"), ("FG", "", b":FG#"),
    ("FQ", "", b":FQ#"), ("SN", "1A2B", b":SN1A2B#"),
])
def test_encode_command(cmd: str, payload: str, frame: bytes) -> None:
    assert mp.encode_command(cmd, payload) == frame


@pytest.mark.parametrize("bad", ["", "G#", "G:P", "GP\n", "Ä"])
def test_encode_command_rejects_framing_characters(bad: str) -> None:
    with pytest.raises(ValueError):
        mp.encode_command(bad)


def test_encode_positions() -> None:
    assert mp.encode_set_position(0x1A2B) == b":SP1A2B#"
    assert mp.encode_set_position(0) == b":SP0000#"
    assert mp.encode_set_target(65535) == b":SNFFFF#"
    assert mp.encode_set_target(10) == b":SN000A#"  # upper-case, zero-padded hex


@pytest.mark.parametrize("bad", [-1, 65536, 1.5, True, "10"])
def test_encode_positions_validate(bad: object) -> None:
    with pytest.raises(ValueError):
        mp.encode_set_target(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        mp.encode_set_position(bad)  # type: ignore[arg-type]


def test_encode_settings() -> None:
    assert [mp.encode_step_delay(c) for c in (2, 4, 8, 16, 32)] == [
        b":SD02#", b":SD04#", b":SD08#", b":SD10#", b":SD20#"]
    for bad in (0, 1, 3, 10, 64, True):
        with pytest.raises(ValueError):
            mp.encode_step_delay(bad)
    assert mp.encode_half_step(True) == b":SH#"
    assert mp.encode_half_step(False) == b":SF#"
    assert mp.encode_temp_coefficient(5) == b":SC05#"
    assert mp.encode_temp_coefficient(-2) == b":SCFE#"
    assert mp.encode_temp_coefficient(-128) == b":SC80#"
    for bad in (128, -129):
        with pytest.raises(ValueError):
            mp.encode_temp_coefficient(bad)
    assert mp.encode_temp_compensation(True) == b":+#"
    assert mp.encode_temp_compensation(False) == b":-#"


# --- decoders -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reply, value", [(b"0000#", 0), (b"FFFF#", 65535), (b"1A2B#", 0x1A2B),
                                          (b"1a2b#", 0x1A2B), (b"00FF#", 255)])
def test_parse_position(reply: bytes, value: int) -> None:
    assert mp.parse_position(reply) == value


@pytest.mark.parametrize("reply", GARBAGE)
def test_parse_position_rejects_garbage(reply: bytes) -> None:
    with pytest.raises(mp.ProtocolError):
        mp.parse_position(reply)


def test_protocol_error_is_value_error() -> None:
    assert issubclass(mp.ProtocolError, ValueError)
    assert issubclass(mp.ReplyTimeout, mp.ProtocolError)


@pytest.mark.parametrize("reply, value", [(b"01#", True), (b"00#", False), (b"1#", True), (b"0#", False)])
def test_parse_moving(reply: bytes, value: bool) -> None:
    assert mp.parse_moving(reply) is value


@pytest.mark.parametrize("reply", [b"02#", b"FF#", b"001#", b"2#", b"G#", b"01", b"", b"#", b"0001#"])
def test_parse_moving_rejects(reply: bytes) -> None:
    with pytest.raises(mp.ProtocolError):
        mp.parse_moving(reply)


@pytest.mark.parametrize("reply, value", [
    (b"0000#", 0.0), (b"0014#", 10.0), (b"0032#", 25.0), (b"0001#", 0.5), (b"FFFE#", -1.0), (b"FFFF#", -0.5),
    (b"FFEC#", -10.0), (b"8000#", -16384.0), (b"7FFF#", 16383.5), (b"ffec#", -10.0),
    # clones that print without zero padding (Serial.print(value, HEX)): unsigned half degrees
    (b"28#", 20.0), (b"A#", 5.0), (b"0#", 0.0), (b"FF#", 127.5),
])
def test_parse_temperature(reply: bytes, value: float) -> None:
    assert mp.parse_temperature(reply) == value


@pytest.mark.parametrize("reply", [g for g in GARBAGE if g != b"123#"] + [b"12345#", b"-1#", b"1.5#"])
def test_parse_temperature_rejects_garbage(reply: bytes) -> None:
    with pytest.raises(mp.ProtocolError):
        mp.parse_temperature(reply)


def test_parse_version() -> None:
    assert mp.parse_version(b"10#") == "10"
    assert mp.parse_version(b"2A#") == "2A"
    assert mp.parse_version(b"1#") == "1"  # clones: one to six characters
    assert mp.parse_version(b"3.2.1#") == "3.2.1"
    for bad in (b"1234567#", b"10", b"\x00\x00#", b"1#1", b"", b"##", b"#", b"1\n#", b"1 0#"):
        with pytest.raises(mp.ProtocolError):
            mp.parse_version(bad)


def test_parse_half_step_and_step_delay() -> None:
    assert mp.parse_half_step(b"FF#") is True
    assert mp.parse_half_step(b"ff#") is True
    assert mp.parse_half_step(b"00#") is False
    for bad in (b"F#", b"FFF#", b"7F#", b"ZZ#", b"FF"):
        with pytest.raises(mp.ProtocolError):
            mp.parse_half_step(bad)
    assert [mp.parse_step_delay(r) for r in (b"02#", b"04#", b"08#", b"10#", b"20#")] == [2, 4, 8, 16, 32]
    for bad in (b"2#", b"020#", b"G2#", b"02"):
        with pytest.raises(mp.ProtocolError):
            mp.parse_step_delay(bad)


def test_parse_temp_coefficient() -> None:
    assert mp.parse_temp_coefficient(b"05#") == 5
    assert mp.parse_temp_coefficient(b"FE#") == -2
    assert mp.parse_temp_coefficient(b"80#") == -128
    with pytest.raises(mp.ProtocolError):
        mp.parse_temp_coefficient(b"5#")


def test_round_trip_every_position_shape() -> None:
    for n in (0, 1, 15, 16, 255, 256, 4095, 4096, 0x8000, 65534, 65535):
        frame = mp.encode_set_target(n)
        assert mp.parse_position(frame[3:]) == n  # the payload + '#' is exactly what GN answers


# --- framing ------------------------------------------------------------------------------------------------------
def test_reader_splits_and_joins_frames() -> None:
    reader = mp.ReplyReader()
    assert reader.feed(b"1A") == []
    assert reader.feed(b"2B#01") == [b"1A2B#"]
    assert reader.feed(b"#00") == [b"01#"]
    assert reader.feed(b"00#0#FFFE#") == [b"0000#", b"0#", b"FFFE#"]
    assert reader.feed(b"") == []


def test_reader_drops_overlong_noise() -> None:
    reader = mp.ReplyReader(max_length=8)
    with pytest.raises(mp.ProtocolError):
        reader.feed(b"\x00" * 9)
    assert reader.buffer == bytearray()
    assert reader.feed(b"1A2B#") == [b"1A2B#"]  # resynchronised on the next '#'
    with pytest.raises(mp.ProtocolError):
        reader.feed(b"0123456789#")


class FakePort:
    """Delivers scripted chunks, one per read call; an empty chunk is a port timeout."""

    def __init__(self, chunks: list[bytes], timeout: float = 0.01) -> None:
        self.data = bytearray()
        self.chunks = list(chunks)
        self.timeout = timeout

    @property
    def in_waiting(self) -> int:
        return len(self.data)

    def read(self, size: int = 1) -> bytes:
        if not self.data and self.chunks:
            self.data += self.chunks.pop(0)
        if not self.data:
            time.sleep(self.timeout)
            return b""
        out = bytes(self.data[:size])
        del self.data[:size]
        return out


def test_read_reply_on_split_input() -> None:
    port = FakePort([b"1", b"", b"A2", b"B#", b"00#"])
    assert mp.read_reply(port, 1.0) == b"1A2B#"
    assert mp.read_reply(port, 1.0) == b"00#"
    port = FakePort([b"0", b"", b"1", b"#"])
    assert mp.read_reply(port, 1.0) == b"01#"


def test_read_reply_returns_the_first_frame_of_a_burst() -> None:
    # Noise that happens to end in '#' comes first: it is what the parser must then reject.
    assert mp.read_reply(FakePort([b"12#0BB8#"]), 1.0) == b"12#"


def test_read_reply_takes_waiting_bytes_after_the_deadline() -> None:
    class SlowThread(FakePort):  # the reply arrived in time but this thread ran late
        def read(self, size: int = 1) -> bytes:
            time.sleep(0.06)
            return super().read(1)

    assert mp.read_reply(SlowThread([b"1A2B#"]), 0.05) == b"1A2B#"


def test_read_reply_timeout_and_partial() -> None:
    start = time.monotonic()
    with pytest.raises(mp.ReplyTimeout, match="no reply"):
        mp.read_reply(FakePort([]), 0.1)
    assert 0.09 <= time.monotonic() - start < 0.5
    with pytest.raises(mp.ReplyTimeout, match="partial"):
        mp.read_reply(FakePort([b"1A2"]), 0.1)


def test_read_reply_overlong() -> None:
    with pytest.raises(mp.ProtocolError):
        mp.read_reply(FakePort([b"\x00" * 40]), 1.0)


# --- port listing ---------------------------------------------------------------------------------------------
def test_format_ports() -> None:
    assert format_ports([]) == "No serial ports found.\n"
    ports = [PortInfo(device="/dev/ttyUSB0", by_id=("/dev/serial/by-id/usb-FTDI_FT232R_A123-if00-port0",),
                      vid=0x0403, pid=0x6001, description="FT232R USB UART", serial_number="A123",
                      manufacturer="FTDI"),
             PortInfo(device="/dev/ttyS0", by_id=(), vid=None, pid=None, description="", serial_number=None,
                      manufacturer=None)]
    text = format_ports(ports)
    assert "0403:6001" in text and "FTDI" in text and "A123" in text
    assert 'port = "/dev/serial/by-id/usb-FTDI_FT232R_A123-if00-port0"' in text
    assert ports[0].best_path.startswith("/dev/serial/by-id/") and ports[1].best_path == "/dev/ttyS0"


# --- transactions on a scripted controller ----------------------------------------------------------------------
class ScriptedController:
    """A fake port answering each written command from a table; ``boot`` commands are ignored first."""

    def __init__(self, replies: dict[bytes, bytes], boot: int = 0) -> None:
        self.replies = replies
        self.boot = boot
        self.written: list[bytes] = []
        self.data = bytearray()
        self.flushes = 0

    @property
    def in_waiting(self) -> int:
        return len(self.data)

    def read(self, size: int = 1) -> bytes:
        if not self.data:
            time.sleep(0.01)  # the port timeout
            return b""
        out = bytes(self.data[:size])
        del self.data[:size]
        return out

    def write(self, data: bytes) -> int:
        self.written.append(data)
        if self.boot > 0:
            self.boot -= 1
        else:
            self.data += self.replies.get(data, b"")
        return len(data)

    def reset_input_buffer(self) -> None:
        self.flushes += 1
        self.data.clear()

    def close(self) -> None:
        pass


REPLIES = {b":GV#": b"10#", b":GP#": b"1A2B#", b":GI#": b"0#", b":GT#": b"FFEC#", b":GD#": b"10#",
           b":GH#": b"00#", b":GN#": b"0BB8#"}


def test_link_initialise_after_ignored_boot_commands() -> None:
    port = ScriptedController(REPLIES, boot=2)
    link = mp.MoonliteLink(port, read_timeout=0.05)
    state = link.initialise(threading.Event(), 1.0, speed_code=16, half_step=False)
    assert state == mp.ControllerState(version="10", position=0x1A2B, moving=False, temperature=-10.0,
                                       step_delay=16, half_step=False)
    assert port.written[:3] == [b":GV#"] * 3
    assert b":SD10#" in port.written and b":SF#" in port.written
    assert port.flushes >= len(port.written)  # flushed before every command
    assert link.transactions == len(port.written)


def test_link_without_temperature_or_settings_queries() -> None:
    replies = {k: v for k, v in REPLIES.items() if k not in (b":GT#", b":GD#", b":GH#")}
    state = mp.MoonliteLink(ScriptedController(replies), 0.02).initialise(threading.Event(), 1.0)
    assert (state.temperature, state.step_delay, state.half_step) == (None, None, None)


def test_link_handshake_gives_up() -> None:
    link = mp.MoonliteLink(ScriptedController({}), read_timeout=0.05)
    start = time.monotonic()
    with pytest.raises(mp.NoController):
        link.handshake(0.3, threading.Event())
    assert 0.25 < time.monotonic() - start < 0.6
    stop = threading.Event()
    stop.set()
    with pytest.raises(mp.Cancelled):
        link.handshake(5.0, stop)


def test_link_query_rejects_garbage_and_late_replies_are_flushed() -> None:
    port = ScriptedController({b":GP#": b"12G4#"})
    link = mp.MoonliteLink(port, 0.05)
    with pytest.raises(mp.ProtocolError):
        link.query(mp.GET_POSITION, mp.parse_position)
    port.data += b"0000#"  # a late reply sitting in the buffer ...
    port.replies[b":GN#"] = b"0BB8#"
    assert link.query(mp.GET_TARGET, mp.parse_position) == 3000  # ... is never taken as the next answer


def test_list_ports_finds_by_id_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from alpaca_focuser.drivers import ports

    device = tmp_path / "ttyUSB0"
    device.touch()
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    (by_id / "usb-FTDI_FT232R_A123-if00-port0").symlink_to(device)
    fake = [SimpleNamespace(device=str(device), vid=0x0403, pid=0x6001, description="FT232R USB UART",
                            serial_number="A123", manufacturer="FTDI"),
            SimpleNamespace(device="/dev/ttyS0", vid=None, pid=None, description="n/a", serial_number=None,
                            manufacturer=None)]
    monkeypatch.setattr(ports.serial_list_ports, "comports", lambda: list(reversed(fake)))
    found = ports.list_ports(str(by_id))
    assert [p.device for p in found] == [str(device), "/dev/ttyS0"]  # USB adapters first
    assert found[0].by_id == (str(by_id / "usb-FTDI_FT232R_A123-if00-port0"),)
    assert found[0].usb_id == "0403:6001" and found[1].description == ""
