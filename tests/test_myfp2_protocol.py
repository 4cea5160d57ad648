"""The myFocuserPro2 codec on bytes: every encoder, every reply format, garbage, wrong letters, partial, split and
overlong replies, and the framer against what the real firmware sends (line breaks, the ESP32 boot banner)."""

from __future__ import annotations

import random

import pytest

from alpaca_focuser.drivers import myfp2_protocol as mp
from alpaca_focuser.drivers.moonlite_protocol import ProtocolError
from alpaca_focuser.emulator.myfp2_profiles import ESP32_BOOT_BANNER


# --- encoders -------------------------------------------------------------------------------------------------
def test_encode_command_frames() -> None:
    assert mp.encode_command(0) == b":00#"
    assert mp.encode_command(5, "123") == b":05123#"
    assert mp.encode_command(99) == b":99#"
    assert mp.encode_query(mp.GET_POSITION) == b":00#"
    assert mp.encode_query(mp.GET_PROBE_PRESENT) == b":83#"


@pytest.mark.parametrize("command", [-1, 100, 1.0, "05", True, None])
def test_encode_command_rejects_bad_numbers(command: object) -> None:
    with pytest.raises(ValueError):
        mp.encode_command(command)  # type: ignore[arg-type]


@pytest.mark.parametrize("argument", ["-1", "1.5", "12a", " 1", "1#", ":1", "1\r", "１２", "1234567890", 5])
def test_encode_command_rejects_non_decimal_arguments(argument: object) -> None:
    # toInt() would read any of these as 0 (or a wrong number): a garbled move would drive the focuser to 0
    with pytest.raises(ValueError):
        mp.encode_command(mp.MOVE_TO, argument)  # type: ignore[arg-type]


@pytest.mark.parametrize("command", sorted(mp.SILENT_COMMANDS))
def test_encode_query_refuses_commands_that_never_reply(command: int) -> None:
    with pytest.raises(ValueError):
        mp.encode_query(command)


def test_encode_motion() -> None:
    assert mp.encode_move(0) == b":050#"
    assert mp.encode_move(123456) == b":05123456#"
    assert mp.encode_move(mp.MAX_POSITION) == b":052000000#"
    assert mp.encode_halt() == b":27#"
    assert mp.encode_sync(4321) == b":314321#"
    assert mp.encode_set_max_step(1024) == b":071024#"
    assert mp.encode_set_max_step(60000) == b":0760000#"
    assert mp.encode_save_settings() == b":48#"


@pytest.mark.parametrize("bad", [-1, mp.MAX_POSITION + 1, 1.5, True, "100", None])
def test_encode_positions_validate(bad: object) -> None:
    for encoder in (mp.encode_move, mp.encode_sync):
        with pytest.raises(ValueError):
            encoder(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, 1023, mp.MAX_POSITION + 1, True, 5000.0])
def test_encode_set_max_step_validates(bad: object) -> None:
    with pytest.raises(ValueError):
        mp.encode_set_max_step(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("command, value, frame", [
    (mp.SET_REVERSE, True, b":141#"), (mp.SET_REVERSE, False, b":140#"),
    (mp.SET_COIL_POWER, True, b":121#"), (mp.SET_TEMP_COMPENSATION, False, b":230#"),
    (mp.SET_BACKLASH_IN_ENABLED, True, b":731#"), (mp.SET_BACKLASH_OUT_ENABLED, False, b":750#"),
    (mp.SET_MOTOR_SPEED, 0, b":150#"), (mp.SET_MOTOR_SPEED, 2, b":152#"),
    (mp.SET_TEMP_COEFFICIENT, 255, b":22255#"), (mp.SET_TC_DIRECTION, 1, b":881#"),
    (mp.SET_BACKLASH_IN_STEPS, 50, b":7750#"), (mp.SET_BACKLASH_OUT_STEPS, 0, b":790#"),
    (mp.SET_DELAY_AFTER_MOVE, 100, b":71100#"),
])
def test_encode_setting(command: int, value: bool | int, frame: bytes) -> None:
    assert mp.encode_setting(command, value) == frame


@pytest.mark.parametrize("command, value", [
    (mp.SET_REVERSE, 1),  # on/off settings take a bool: 1 and True must not be confused with a count
    (mp.SET_COIL_POWER, "1"), (mp.SET_MOTOR_SPEED, 3), (mp.SET_MOTOR_SPEED, True),
    (mp.SET_TEMP_COEFFICIENT, 256), (mp.SET_BACKLASH_IN_STEPS, 300), (mp.SET_BACKLASH_OUT_STEPS, -1),
    (mp.SET_TC_DIRECTION, 2), (mp.SET_DELAY_AFTER_MOVE, 256), (mp.MOVE_TO, 5), (mp.HALT, True),
])
def test_encode_setting_validates(command: int, value: object) -> None:
    with pytest.raises(ValueError):
        mp.encode_setting(command, value)  # type: ignore[arg-type]


def test_encode_step_mode() -> None:
    assert [mp.encode_step_mode(m) for m in (1, 2, 32, 256)] == [b":301#", b":302#", b":3032#", b":30256#"]
    for bad in (0, 3, 512, True):
        with pytest.raises(ValueError):
            mp.encode_step_mode(bad)


# --- decoders -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reply, value", [(b"P0#", 0), (b"P5000#", 5000), (b"P2000000#", 2_000_000),
                                          (b"P0012#", 12)])
def test_parse_position(reply: bytes, value: int) -> None:
    assert mp.parse_position(reply) == value


GARBAGE = [b"", b"#", b"P#", b"P12", b"12#", b"P-1#", b"P+12#", b"P 12#", b"P12 #", b"P1.5#", b"P0x1F#",
           b"P12#P13#", b"P\x0012#", b"P12\r\n#", b"P99999999#", b"P2000001#", b"p12#", b":P12#",
           b"P" + b"1" * 40 + b"#", b"\xff\xfe#"]


@pytest.mark.parametrize("reply", GARBAGE)
def test_parse_position_rejects_garbage(reply: bytes) -> None:
    with pytest.raises(ProtocolError):
        mp.parse_position(reply)


@pytest.mark.parametrize("parser, reply", [
    # a reply to another query: exactly how a late or stray reply shows up
    (mp.parse_position, b"M10000#"), (mp.parse_position, b"N5000#"), (mp.parse_position, b"I1#"),
    (mp.parse_moving, b"P1#"), (mp.parse_temperature, b"P20#"), (mp.parse_max_step, b"P10000#"),
    (mp.parse_firmware_version, b"EOK#"), (mp.parse_probe_present, b"A1#"), (mp.parse_status, b"F338#"),
    (mp.parse_target, b"P100#"), (mp.parse_step_mode, b"C2#"),
])
def test_parsers_reject_a_reply_with_the_wrong_letter(parser: object, reply: bytes) -> None:
    with pytest.raises(ProtocolError, match="does not start with"):
        parser(reply)  # type: ignore[operator]


def test_parse_moving() -> None:
    assert mp.parse_moving(b"I1#") is True
    assert mp.parse_moving(b"I0#") is False
    assert mp.parse_moving(b"I01#") is True  # as the command-set document writes it
    assert mp.parse_moving(b"I00#") is False
    for bad in (b"I2#", b"I#", b"I11#", b"I001#", b"I1", b"I-1#", b"Iy#"):
        with pytest.raises(ProtocolError):
            mp.parse_moving(bad)


@pytest.mark.parametrize("reply, value", [
    (b"Z20.00#", 20.0), (b"Z20.000#", 20.0), (b"Z20.5#", 20.5), (b"Z20#", 20.0), (b"Z-5.25#", -5.25),
    (b"Z-0.50#", -0.5), (b"Z-127.00#", -127.0), (b"Z125.0#", 125.0), (b"Z0.0625#", 0.0625),
])
def test_parse_temperature(reply: bytes, value: float) -> None:
    assert mp.parse_temperature(reply) == value


@pytest.mark.parametrize("reply", [b"Znan#", b"Zinf#", b"Z-inf#", b"Z#", b"Z-#", b"Z.5#", b"Z20.#", b"Z1e2#",
                                   b"Z200.0#", b"Z-130#", b"Z20,5#", b"Z 20.5#", b"Z+20#", b"Z20.12345#",
                                   b"Z20.00", b"Z2-0#"])
def test_parse_temperature_rejects_garbage(reply: bytes) -> None:
    with pytest.raises(ProtocolError):
        mp.parse_temperature(reply)


def test_parse_identity_replies() -> None:
    assert mp.parse_firmware_version(b"F338#") == "338"
    assert mp.parse_firmware_version(b"F2.07#") == "2.07"
    assert mp.parse_status(b"EOK#") is True
    for bad in (b"F#", b"F33 8#", b"F338\r\n#", b"FULN\r\n338#", b"EKO#", b"EOK"):
        with pytest.raises(ProtocolError):
            (mp.parse_status if bad.startswith(b"E") else mp.parse_firmware_version)(bad)


@pytest.mark.parametrize("reply, value", [
    (b"FULN2003_M_MT_F\r\n338#", ("ULN2003_M_MT_F", "338")),
    (b"FPRO2ESP32DRV8825\n330#", ("PRO2ESP32DRV8825", "330")),
    (b"FmyFP2\r3.0#", ("myFP2", "3.0")),
    (b"FmyFP2\n\r3.0#", ("myFP2", "3.0")),
])
def test_parse_firmware_name(reply: bytes, value: tuple[str, str]) -> None:
    assert mp.parse_firmware_name(reply) == value


@pytest.mark.parametrize("reply", [b"FULN2003_M_MT_F#", b"F\r\n338#", b"FULN\r\n#", b"FULN\r\n\r\n338#",
                                   b"FULN2003_M_MT_F_BT_IR_RE_BT\r\n33", b"FU LN\r\n338#"])
def test_parse_firmware_name_rejects_garbage(reply: bytes) -> None:
    with pytest.raises(ProtocolError):
        mp.parse_firmware_name(reply)


def test_parse_limits_and_identity_numbers() -> None:
    assert mp.parse_max_step(b"M10000#") == 10000
    assert mp.parse_max_increment(b"Y10000#") == 10000
    assert mp.parse_target(b"N4321#") == 4321
    assert [mp.parse_step_mode(b"S%d#" % m) for m in (1, 2, 4, 256)] == [1, 2, 4, 256]
    assert mp.parse_probe_present(b"c1#") is True
    assert mp.parse_probe_present(b"c0#") is False
    for bad in (b"S3#", b"S0#", b"S512#", b"c2#", b"M-1#"):
        with pytest.raises(ProtocolError):
            (mp.parse_step_mode if bad[:1] == b"S" else mp.parse_probe_present if bad[:1] == b"c"
             else mp.parse_max_step)(bad)


@pytest.mark.parametrize("command, reply, value", [
    (mp.GET_TEMP_COMP_AVAILABLE, b"A1#", True), (mp.GET_TEMP_COMPENSATION, b"10#", False),
    (mp.GET_TEMP_COMPENSATION, b"11#", True), (mp.GET_TEMP_COEFFICIENT, b"B1000#", 1000),
    (mp.GET_TC_DIRECTION, b"k1#", 1), (mp.GET_COIL_POWER, b"O0#", False), (mp.GET_REVERSE, b"R1#", True),
    (mp.GET_MOTOR_SPEED, b"C2#", 2), (mp.GET_STEP_DELAY, b"05000#", 5000), (mp.GET_DELAY_AFTER_MOVE, b"3100#", 100),
    (mp.GET_BACKLASH_IN_ENABLED, b"41#", True), (mp.GET_BACKLASH_OUT_ENABLED, b"50#", False),
    (mp.GET_BACKLASH_IN_STEPS, b"650#", 50), (mp.GET_BACKLASH_OUT_STEPS, b"7255#", 255),
])
def test_parse_settings(command: int, reply: bytes, value: bool | int) -> None:
    assert mp.parse_setting(command, reply) == value
    assert mp.parse_reply(command, reply) == value
    assert type(mp.parse_reply(command, reply)) is type(value)


@pytest.mark.parametrize("command, reply", [
    (mp.GET_TC_DIRECTION, b"k2#"), (mp.GET_COIL_POWER, b"O2#"), (mp.GET_MOTOR_SPEED, b"C4#"),
    (mp.GET_BACKLASH_IN_STEPS, b"6256#"), (mp.GET_BACKLASH_OUT_ENABLED, b"41#"),  # ESP8266 330's wrong letter
    (mp.GET_DELAY_AFTER_MOVE, b"3#"), (mp.GET_TEMP_COMPENSATION, b"1#"), (mp.GET_REVERSE, b"R1"),
])
def test_parse_settings_reject_garbage(command: int, reply: bytes) -> None:
    with pytest.raises(ProtocolError):
        mp.parse_setting(command, reply)


def test_every_query_has_a_parser_for_its_own_letter() -> None:
    assert set(mp.PARSERS) == set(mp.REPLY_LETTERS)
    assert not set(mp.REPLY_LETTERS) & mp.SILENT_COMMANDS
    samples = {mp.GET_STATUS: b"EOK#", mp.GET_FIRMWARE_NAME: b"FULN\r\n338#", mp.GET_TEMPERATURE: b"Z20.00#",
               mp.GET_STEP_MODE: b"S2#"}
    for command, letter in mp.REPLY_LETTERS.items():
        reply = samples.get(command, letter.encode() + b"1#")
        mp.parse_reply(command, reply)  # its own letter parses
        other = b"Q1#"  # a letter no query uses
        with pytest.raises(ProtocolError):
            mp.parse_reply(command, other)
    with pytest.raises(ValueError):
        mp.parse_reply(mp.HALT, b"P1#")


# --- framing ------------------------------------------------------------------------------------------------------
def collect(framer: mp.ReplyFramer, chunks: list[bytes]) -> tuple[list[bytes], bytes]:
    """Feed every chunk; gather the frames and the noise reported through ``on_noise``."""
    frames: list[bytes] = []
    noise: list[bytes] = []
    framer.on_noise = noise.append
    for chunk in chunks:
        frames += framer.feed(chunk)
    return frames, b"".join(noise)


def test_framer_reports_noise_without_raising() -> None:
    framer = mp.ReplyFramer()
    assert framer.feed(b"junk\r\nP1#") == [b"P1#"]  # no callback: counted and kept for the log
    assert (framer.noise_count, framer.last_noise) == (1, b"junk\r")
    assert framer.feed(b"P2#") == [b"P2#"] and framer.noise_count == 1


def test_framer_splits_replies_in_one_chunk_and_keeps_partials() -> None:
    framer = mp.ReplyFramer()
    assert framer.feed(b"P12#I1#Z20.0") == [b"P12#", b"I1#"]
    assert framer.buffer == b"Z20.0"
    assert framer.feed(b"0#") == [b"Z20.00#"]
    framer.feed(b"M100")
    framer.reset()
    assert framer.feed(b"P5#") == [b"P5#"]


def test_framer_reassembles_replies_split_at_every_byte() -> None:
    stream = b"P12345#I0#FULN2003_M_MT_F\r\n338#Z-5.25#EOK#"
    frames, noise = collect(mp.ReplyFramer(), [bytes([b]) for b in stream])
    assert frames == [b"P12345#", b"I0#", b"FULN2003_M_MT_F\r\n338#", b"Z-5.25#", b"EOK#"]
    assert noise == b""


@pytest.mark.parametrize("ending", [b"\r\n", b"\n", b"\r", b"\n\r", b"\r\n\r\n"])
def test_framer_skips_line_endings_between_replies(ending: bytes) -> None:
    framer = mp.ReplyFramer()
    assert framer.feed(ending + b"P12#" + ending + b"I1#" + ending) == [b"P12#", b"I1#"]
    assert framer.noise_count == 0


def test_framer_keeps_the_line_break_of_the_board_name_reply() -> None:
    frames = mp.ReplyFramer().feed(b"FULN2003_M_MT_F\r\n338#")
    assert mp.parse_firmware_name(frames[0]) == ("ULN2003_M_MT_F", "338")


def test_framer_drops_the_esp32_boot_banner_and_keeps_the_reply_after_it() -> None:
    framer = mp.ReplyFramer()
    assert framer.feed(ESP32_BOOT_BANNER + b"F330#") == [b"F330#"]
    assert framer.noise_count == 1
    assert framer.last_noise.startswith(b"ets Jun  8 2016 00:22:57\r") and b"POWERON_RESET" in framer.last_noise
    assert framer.buffer == b""


@pytest.mark.parametrize("seed", range(20))
def test_framer_recovers_from_the_banner_in_random_chunks(seed: int) -> None:
    rng = random.Random(seed)
    stream = ESP32_BOOT_BANNER + b"F330#P5000#I0#"
    chunks, i = [], 0
    while i < len(stream):
        n = rng.randint(1, 40)
        chunks.append(stream[i:i + n])
        i += n
    frames, noise = collect(mp.ReplyFramer(), chunks)
    assert frames == [b"F330#", b"P5000#", b"I0#"]
    assert b"POWERON_RESET" in noise and b"#" not in noise


def test_framer_overlong_noise_is_dropped_until_a_separator() -> None:
    framer = mp.ReplyFramer()
    frames, noise = collect(framer, [b"x" * 100 + b"P12#" + b"P13#"])
    # noise glued to a reply swallows it (nothing tells where the noise ended); the next reply is clean
    assert frames == [b"P13#"]
    assert noise.startswith(b"x" * 32)
    frames, noise = collect(framer, [b"y" * 100 + b"\r\nP14#"])
    assert frames == [b"P14#"]


def test_framer_bounds_frames_at_the_firmware_buffer_size() -> None:
    longest = b"F" + b"A" * (mp.MAX_REPLY_LENGTH - 2) + b"#"  # 31 characters and '#'
    assert mp.ReplyFramer().feed(longest) == [longest]
    frames, noise = collect(mp.ReplyFramer(), [b"F" + b"A" * (mp.MAX_REPLY_LENGTH - 1) + b"#P1#"])
    assert frames == [b"P1#"] and len(noise) == mp.MAX_REPLY_LENGTH + 1


def test_framer_drops_reset_glitch_bytes_before_a_reply() -> None:
    frames, noise = collect(mp.ReplyFramer(), [b"\x00\xff\xf0 P12#"])
    assert frames == [b"P12#"] and noise == b"\x00\xff\xf0 "


def test_framer_text_line_in_place_of_a_reply_is_noise() -> None:
    frames, noise = collect(mp.ReplyFramer(), [b"Setup done, controller is ready\r\n", b"I1#"])
    assert frames == [b"I1#"] and noise == b"Setup done, controller is ready\r"


def test_framer_truncated_name_reply_without_terminator_does_not_become_a_position() -> None:
    # A 26-character board name overflows the firmware's 32-byte buffer: the '#' is lost
    frames, _ = collect(mp.ReplyFramer(), [b"FULN2003_M_MT_F_BT_IR_RE_BT\r\n33", b"P5000#", b"P5001#"])
    for frame in frames:
        if frame.startswith(b"P"):
            assert mp.parse_position(frame) == 5001
        else:
            with pytest.raises(ProtocolError):
                mp.parse_position(frame)


# --- matching replies to requests ---------------------------------------------------------------------------------
def test_split_frame_reads_back_every_encoder() -> None:
    assert mp.split_frame(mp.encode_move(123)) == (mp.MOVE_TO, "123")
    assert mp.split_frame(mp.encode_query(mp.GET_POSITION)) == (mp.GET_POSITION, "")
    assert mp.split_frame(mp.encode_setting(mp.SET_REVERSE, True)) == (mp.SET_REVERSE, "1")
    for bad in (b":5#", b"05#", b":05", b":05a#", b":05 1#", b"", ":00#", b":00#\r\n"):
        with pytest.raises(ValueError):
            mp.split_frame(bad)  # type: ignore[arg-type]


def test_reply_matches_only_the_reply_of_its_own_query() -> None:
    assert mp.reply_matches(b":00#", b"P12#")
    assert mp.reply_matches(b":04#", b"FULN\r\n338#")
    assert not mp.reply_matches(b":00#", b"I1#")  # a late moving reply is not a position
    assert not mp.reply_matches(b":03#", b"FULN\r\n338#")
    assert not mp.reply_matches(b":01#", b"I1")
    # set commands and halt never reply: whatever comes after them is stray
    assert not mp.reply_matches(mp.encode_halt(), b"P12#")
    assert not mp.reply_matches(mp.encode_move(5), b"P5#")


@pytest.mark.parametrize("reply, command", [
    (b"P12#", mp.GET_POSITION), (b"I0#", mp.GET_MOVING), (b"F338#", mp.GET_FIRMWARE_VERSION),
    (b"FULN\r\n338#", mp.GET_FIRMWARE_NAME), (b"650#", mp.GET_BACKLASH_IN_STEPS), (b"11#", mp.GET_TEMP_COMPENSATION),
    (b"c0#", mp.GET_PROBE_PRESENT), (b"Z-3.5#", mp.GET_TEMPERATURE), (b"Q1#", None), (b"P-1#", None), (b"", None),
])
def test_identify_reply_names_the_query_of_a_stray_reply(reply: bytes, command: int | None) -> None:
    assert mp.identify_reply(reply) == command
