"""The Pegasus codec on bytes: every request's encoding, every reply's decoding (status lines, model, echoes,
bare numbers), -127, garbage, partial and split lines, both line endings, and stray lines that answer another
command. The last tests run the codec against the independent emulator firmware of every profile and variant."""

from __future__ import annotations

import pytest

from alpaca_focuser.drivers import pegasus_protocol as pp
from alpaca_focuser.drivers.moonlite_protocol import ProtocolError
from alpaca_focuser.emulator.pegasus_firmware import PROFILES, VARIANTS, PegasusFirmware

STATUS = b"OK_DMFCN:2.8:1:21.50:12345:0:1:0:0:25"


# --- encoders -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("frame, expected", [
    (pp.encode("#"), b"#\n"), (pp.encode("A"), b"A\n"), (pp.encode("V"), b"V\n"), (pp.encode("T"), b"T\n"),
    (pp.encode("P"), b"P\n"), (pp.encode("I"), b"I\n"), (pp.encode("B"), b"B\n"), (pp.encode("X"), b"X\n"),
    (pp.encode_halt(), b"H\n"), (pp.encode_move(0), b"M:0\n"), (pp.encode_move(1200), b"M:1200\n"),
    (pp.encode_move(pp.MAX_POSITION), b"M:2147483647\n"), (pp.encode_move_relative(-50), b"G:-50\n"),
    (pp.encode_move_relative(75), b"G:75\n"), (pp.encode_sync(4321), b"W:4321\n"),
    (pp.encode_reverse(True), b"N:1\n"), (pp.encode_reverse(False), b"N:0\n"),
    (pp.encode_backlash(0), b"C:0\n"), (pp.encode_backlash(120), b"C:120\n"),
    (pp.encode_motor_mode(pp.MotorType.STEPPER), b"R:1\n"), (pp.encode_motor_mode(pp.MotorType.DC), b"R:2\n"),
    (pp.encode_led(True), b"L:2\n"), (pp.encode_led(False), b"L:1\n"), (pp.encode_speed(400), b"S:400\n"),
    (pp.encode_knob(True), b"E:0\n"), (pp.encode_knob(False), b"E:1\n"),
])
def test_encoders(frame: bytes, expected: bytes) -> None:
    assert frame == expected
    command, value = pp.split_frame(frame)  # every request round-trips
    assert pp.encode(command, value) == frame


@pytest.mark.parametrize("call", [
    lambda: pp.encode_move(-1), lambda: pp.encode_move(2**31), lambda: pp.encode_move(1.5),  # type: ignore
    lambda: pp.encode_move(True), lambda: pp.encode_move("10"), lambda: pp.encode_sync(-5),  # type: ignore
    lambda: pp.encode_speed(99), lambda: pp.encode_speed(1001), lambda: pp.encode_backlash(-1),
    lambda: pp.encode_backlash(10000), lambda: pp.encode("A", 1), lambda: pp.encode("H", 0), lambda: pp.encode("M"), lambda: pp.encode("Q"),
    lambda: pp.encode(""), lambda: pp.encode("M:1"), lambda: pp.encode("L", 0), lambda: pp.encode("N", 2),
])
def test_encoders_refuse_bad_arguments(call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        call()


@pytest.mark.parametrize("frame", [b"M:1200", b"M:012\n", b"M:-1\n", b"A:1\n", b"Z\n", b"", b"M:1\r\n", "A\n"])
def test_split_frame_refuses_what_encode_would_not_make(frame: bytes) -> None:
    with pytest.raises(ValueError):
        pp.split_frame(frame)


# --- status line ------------------------------------------------------------------------------------------------
def test_parse_status_fields() -> None:
    status = pp.parse_status(STATUS)
    assert status == pp.PegasusStatus(model="DMFCN", firmware="2.8", motor=pp.MotorType.STEPPER, temperature=21.5,
                                      position=12345, moving=False, led=True, reverse=False, knob_enabled=True,
                                      backlash=25)
    assert status.model_name == "DMFC"


@pytest.mark.parametrize("line", [STATUS, STATUS + b"\n", STATUS + b"\r\n"])
def test_parse_status_either_line_end(line: bytes) -> None:
    assert pp.parse_status(line).position == 12345


@pytest.mark.parametrize("line, field, value", [
    (b"OK_FC:1.2:1:-3.25:700:1:0:1:1:0", "model", "FC"),  # FocusCube 2
    (b"OK_PRDG:1.0:1:18.0:10:0:0:0:0:0", "model", "PRDG"),  # Prodigy
    (b"OK_SCOPS:1.2:1:0:22000:0:1:0:1:0", "position", 22000),  # Scops OAG capture (rusty-photon)
    (b"OK_DMFCN:2.6:0:22.4:50:0:0:0:0:100", "motor", pp.MotorType.DC),  # INDIGO simulator, DC mode
    (b"OK_DMFCN:2.8:1:-127.00:5:1:0:0:0:0", "temperature", None),  # no probe
    (b"OK_DMFCN:2.8:1:-127:5:1:0:0:0:0", "temperature", None),
    (b"OK_DMFCN:2.8:1:-127.0:5:1:0:0:0:0", "temperature", None),
    (b"OK_DMFCN:2.8:1:999.00:5:1:0:0:0:0", "temperature", None),  # out of a DS18B20's range
    (b"OK_DMFCN:2.8:1:-5.5:-40:1:0:1:1:0", "position", -40),  # a sync can make it negative
    (b"OK_DMFCN:2.8:1:-5.5:40:1:0:1:1:0", "moving", True),
    (b"OK_DMFCN:2.8:1:-5.5:40:1:0:1:1:0", "reverse", True),
    (b"OK_DMFCN:2.8:1:-5.5:40:1:0:1:1:0", "knob_enabled", False),
    (b"OK_DMFCN:2.8:1:-5.5:40:1:0:1:1:0", "led", False),
    (b"OK_SCOPS:1.7:1:22:5000:0:1:0:1:0:99", "firmware", "1.7"),  # one extra field from a future firmware
])
def test_parse_status_variants(line: bytes, field: str, value: object) -> None:
    assert getattr(pp.parse_status(line), field) == value


@pytest.mark.parametrize("line", [
    b"", b"\n", b"OK_DMFCN", b"OK_DMFCN:2.8:1:21.50:12345",  # the 5-field SMFC form: no moving flag
    b"OK_DMFCN:2.8:1:21.50:12345:0:1:0:0",  # one field short (a dropped field or ':')
    b"OK_DMFCN:2.8:1:21.5012345:0:1:0:0:25",  # a dropped ':' merges two fields
    b"OK_DMFCN:2.8:1:21.50:12345:0:1:0:0:25OK_DMFCN:2.8:1:21.50:1:0:1:0:0:25",  # two lines run together
    b"OK_DMFCN:2.8:1:21.50:12a45:0:1:0:0:25", b"OK_DMFCN:2.8:1:21.50::0:1:0:0:25",
    b"OK_DMFCN:2.8:1:21.50:12345:2:1:0:0:25", b"OK_DMFCN:2.8:1:21.50:12345:0:1:0:0:-1",
    b"OK_DMFCN:2.8:3:21.50:12345:0:1:0:0:25", b"OK_DMFCN:2.8:1:warm:12345:0:1:0:0:25",
    b"ok_dmfcn:2.8:1:21.50:12345:0:1:0:0:25", b"XOK_DMFCN:2.8:1:21.50:12345:0:1:0:0:25",
    b"OK_DMFCN: 2.8:1:21.50:12345:0:1:0:0:25", b"OK_DMFCN:2.8:1:21.50:12345:0:1:0:0:25\n\n",
    b"OK_DMFCN:2.8:1:21.50:99999999999:0:1:0:0:25", b"OK_DMFCN:2.8:1:21.50:12\x0045:0:1:0:0:25",
    b"OK_DMFCN:2.8:1:21.50:12345:0:1:0:0:25:" + b"1:" * 7, b"\xff\xfe:2.8:1:21.50:1:0:1:0:0:25",
    b"OK_DMFCN:2.8:1:21.50:12345:0:1:0:0:25\r\r\n", "OK_DMFCN:2.8:1:21.50:12345:0:1:0:0:25",
])
def test_parse_status_refuses_garbage(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        pp.parse_status(line)


# --- other replies --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("line, code", [(b"OK_DMFCN", "DMFCN"), (b"OK_FC\r\n", "FC"), (b"OK_SMFC\n", "SMFC"),
                                        (b"OK_PRDG", "PRDG"), (b"OK_SCOPS", "SCOPS"), (b"OK_NEW2", "NEW2")])
def test_parse_model(line: bytes, code: str) -> None:
    assert pp.parse_model(line) == code


@pytest.mark.parametrize("line", [b"OK_", b"OK", b"ok_fc", b"OK_DMFCN:2.8", b"FC3_1234ABCD_A", b"0", b"ERR:",
                                  b"OK_DMFCN OK_DMFCN", b"OK_VERYLONGMODELNAME"])
def test_parse_model_refuses(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        pp.parse_model(line)


def test_model_names() -> None:
    assert [pp.model_name(c) for c in ("DMFCN", "FC", "PRDG", "XYZ")] == ["DMFC", "FocusCube 2",
                                                                         "Prodigy Microfocuser", "XYZ"]


def test_bare_replies() -> None:
    assert pp.parse_version(b"2.8\r\n") == "2.8"
    assert pp.parse_temperature(b"21.50") == 21.5
    assert pp.parse_temperature(b"-127.00\n") is None
    assert pp.parse_position(b"1234") == 1234 and pp.parse_position(b"-3\r\n") == -3
    assert pp.parse_moving(b"1") is True and pp.parse_moving(b"0\r\n") is False
    assert pp.parse_speed(b"B:400") == 400 and pp.parse_speed(b"B:400.00") == 400
    for parser, bad in [(pp.parse_version, b"OK_DMFCN"), (pp.parse_version, b"2.8:1"), (pp.parse_temperature, b""),
                        (pp.parse_temperature, b"hot"), (pp.parse_position, b"12.5"), (pp.parse_position, b"1 2"),
                        (pp.parse_moving, b"01"), (pp.parse_moving, b"2"), (pp.parse_speed, b"400"),
                        (pp.parse_speed, b"S:400")]:
        with pytest.raises(ProtocolError):
            parser(bad)


def test_error_reply() -> None:
    assert pp.is_error_reply(b"ERR:") and pp.is_error_reply(b"ERR")
    assert not pp.is_error_reply(b"OK_DMFCN")


# --- which command a line answers -----------------------------------------------------------------------------
@pytest.mark.parametrize("frame, line", [
    (b"#\n", b"OK_DMFCN"), (b"A\n", STATUS), (b"M:1200\n", b"M:1200"), (b"W:7\n", b"W:7"), (b"H\n", b"0"),
    (b"G:-5\n", b"G:-5"), (b"S:400\n", b"S:400"), (b"C:20\n", b"C:20"), (b"N:1\n", b"N:1"), (b"E:1\n", b"E:1"),
    (b"L:2\n", b"L:1"), (b"L:1\n", b"L:0"), (b"R:1\n", b"1"), (b"R:1\n", b"R:1"), (b"R:2\n", b"0"),
    (b"R:2\n", b"2"), (b"P\n", b"15"), (b"I\n", b"1"), (b"T\n", b"-127.00"), (b"V\n", b"2.8"), (b"B\n", b"B:400"),
])
def test_reply_matches(frame: bytes, line: bytes) -> None:
    assert pp.reply_matches(frame, line)
    assert pp.reply_matches(frame, line + b"\r\n")


@pytest.mark.parametrize("frame, line", [
    (b"A\n", b"0"),  # the answer to a halt is not a status
    (b"A\n", b"M:1200"),  # nor is a late move echo
    (b"A\n", b"OK_DMFCN"),  # nor the handshake
    (b"#\n", STATUS),  # a late status line is not the handshake
    (b"M:1200\n", b"M:1300"),  # the echo of an earlier move is not this move's
    (b"M:1200\n", b"W:1200"), (b"M:1200\n", STATUS), (b"M:1200\n", b"0"),
    (b"W:7\n", b"M:7"), (b"H\n", b"M:1200"), (b"H\n", STATUS), (b"H\n", b"1"),
    (b"L:2\n", b"L:2"), (b"N:1\n", b"N:0"), (b"R:1\n", b"0"), (b"C:20\n", b"ERR:"),
    (b"I\n", b"M:5"), (b"P\n", b"OK_DMFCN"), (b"P\n", b""), (b"A\n", b""),
])
def test_reply_does_not_match(frame: bytes, line: bytes) -> None:
    assert not pp.reply_matches(frame, line)


@pytest.mark.parametrize("line, command", [
    (b"OK_FC", "#"), (STATUS + b"\r\n", "A"), (b"M:1200", "M"), (b"W:-3", "W"), (b"L:1", "L"), (b"B:400.00", "B"),
    (b"0", None), (b"1234", None), (b"ERR:", None), (b"OK_DMFCN:2.8", None), (b"M:", None), (b"Q:1", None),
    (b"M:12x", None), (b"", None), (b"\xff", None),
])
def test_identify_reply(line: bytes, command: str | None) -> None:
    assert pp.identify_reply(line) == command


def test_expected_replies() -> None:
    assert pp.expected_replies(b"M:5\n") == {"M:5"}
    assert pp.expected_replies(b"H\n") == {"0", "H", "H:0", "H:1"}
    assert pp.expected_replies(b"A\n") == frozenset()


# --- framing ------------------------------------------------------------------------------------------------------
def test_framer_both_line_ends_and_split_lines() -> None:
    framer = pp.LineFramer()
    assert framer.feed(b"OK_DMF") == []  # a partial line is held back
    assert framer.feed(b"CN\r") == []
    assert framer.feed(b"\nOK_DMFCN:2.8:1:21.50:1") == [b"OK_DMFCN"]
    assert framer.feed(b"2345:0:1:0:0:25\nM:12") == [STATUS]
    assert framer.feed(b"00\n0\r\n") == [b"M:1200", b"0"]
    assert framer.buffer == b""


def test_framer_byte_by_byte() -> None:
    framer = pp.LineFramer()
    lines = [line for byte in STATUS + b"\r\n" + STATUS + b"\n" for line in framer.feed(bytes([byte]))]
    assert lines == [STATUS, STATUS]


def test_framer_skips_empty_lines() -> None:
    assert pp.LineFramer().feed(b"\n\r\n\nOK_FC\n") == [b"OK_FC"]


def test_framer_drops_overlong_noise_up_to_the_next_newline() -> None:
    noise: list[bytes] = []
    framer = pp.LineFramer(max_length=20, on_noise=noise.append)
    assert framer.feed(b"\x00" * 15) == []
    assert framer.feed(b"\xff" * 10) == []  # 25 bytes, no newline: noise
    assert framer.noise_count == 1 and noise == [framer.last_noise]
    assert framer.feed(b"12345\n") == []  # the tail of the noise is not a position
    assert framer.feed(b"1234\n") == [b"1234"]  # resynchronised on the next full line
    assert framer.feed(b"x" * 30 + b"\nOK_FC\n") == [b"OK_FC"]  # overlong line complete in one chunk
    assert framer.noise_count == 2


def test_framer_reset_forgets_a_partial_line() -> None:
    framer = pp.LineFramer()
    framer.feed(b"12")
    framer.reset()
    assert framer.feed(b"34\n") == [b"34"]


def test_a_cut_status_line_never_gives_a_wrong_position() -> None:
    """A status line cut short anywhere is refused, except inside the last field (backlash), where the cut
    cannot be seen: the position and moving flag are then still the true ones."""
    accepted = []
    for cut in range(1, len(STATUS)):
        try:
            status = pp.parse_status(STATUS[:cut])
        except ProtocolError:
            continue
        accepted.append(cut)
        assert (status.position, status.moving) == (12345, False)
    assert accepted == [len(STATUS) - 1]  # "...:2" instead of "...:25"


# --- against the emulator's firmware ------------------------------------------------------------------------------
@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_codec_reads_every_emulated_firmware(profile: str, variant: str) -> None:
    clock = [0.0]
    firmware = PegasusFirmware(profile, variant, position=500, temperature=None, clock=lambda: clock[0])
    framer = pp.LineFramer()
    frames = [pp.encode("#"), pp.encode("A"), pp.encode_move(900), pp.encode("A"), pp.encode_halt(),
              pp.encode_sync(10), pp.encode_reverse(True), pp.encode_led(False), pp.encode_knob(False),
              pp.encode_backlash(30), pp.encode_speed(500), pp.encode("V"), pp.encode("T"), pp.encode("P")]
    for frame in frames:
        raw = firmware.feed(frame)
        assert raw.endswith(b"\r\n" if variant == "2.8" else b"\n") or raw == b""
        lines = framer.feed(raw)
        assert all(pp.reply_matches(frame, line) for line in lines), (frame, lines)
        command, _ = pp.split_frame(frame)
        answers = command in pp.QUERIES or command in pp.ANSWERED_BY_ALL_FIRMWARE or \
            firmware.variant.answers_set_commands
        assert len(lines) == (1 if answers else 0), (frame, lines)
        clock[0] += 0.01
    status = pp.parse_status(firmware.feed(pp.encode("A")))
    assert (status.model, status.temperature, status.position, status.reverse, status.led, status.knob_enabled,
            status.backlash) == (firmware.model_code, None, 10, True, False, False, 30)
