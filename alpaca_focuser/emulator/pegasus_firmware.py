"""A Pegasus Astro DMFC / FocusCube 2 controller modelled as a pure state machine.

Independent of the project's Pegasus codec on purpose (it has its own parser), so that a bug in one cannot
hide behind the same bug in the other. No I/O, no threads: request bytes go in through ``feed_replies``,
reply lines come out, and time comes from an injectable clock so tests drive motion with a fake one. The
pty link calls ``boot()`` on every port open.

What it models, and where each behaviour comes from, is in docs/protocols/pegasus.md. In short: 19200 baud,
one ``\\n``-terminated command per line; ``#`` -> ``OK_DMFCN`` (``OK_FC`` on a FocusCube 2); ``A`` -> the
ten-field status line; ``-127.00`` without a probe; ``N``/``L``/``E``/``R`` answer on every firmware, while
``M``/``G``/``W``/``S``/``C`` echo and ``H`` answers ``0`` only on recent firmware; firmware 2.8 ends lines
with ``\\r\\n``; an old DMFC reboots when the port opens and ignores input for ``BOOT_DELAY_S``; in DC motor
mode there is no absolute position (``M`` does nothing, ``G`` runs the motor without counting).
"""

from __future__ import annotations

import collections
import logging
import re
import time
from dataclasses import dataclass
from typing import Callable

logger = logging.getLogger("alpaca_focuser.emulator")

PROFILES = ("dmfc", "focuscube")
MODEL_CODES = {"dmfc": "DMFCN", "focuscube": "FC"}
#: How long an old DMFC ignores input after the port opens (TheSkyX X2 plugin sleeps 2 s "on old DMFC").
BOOT_DELAY_S = 2.0
#: Longest request line kept; longer ones are dropped up to the next newline.
MAX_LINE_CHARS = 64
NO_PROBE = -127.0
DEFAULT_SPEED = 400  # INDI and INDIGO default for ``S``


@dataclass(frozen=True)
class FirmwareVariant:
    """How one firmware generation talks. Version strings other than 2.6 and 2.8 are illustrative."""

    version: str
    line_end: bytes
    answers_set_commands: bool  # echo M/G/W/S/C, answer H with "0" and bad lines with "ERR:"
    resets_on_open: bool  # reboots on DTR and ignores input for BOOT_DELAY_S


VARIANTS: dict[str, FirmwareVariant] = {
    "recent": FirmwareVariant("3.3", b"\n", answers_set_commands=True, resets_on_open=False),
    "old": FirmwareVariant("2.6", b"\n", answers_set_commands=False, resets_on_open=False),
    "2.8": FirmwareVariant("2.8", b"\r\n", answers_set_commands=True, resets_on_open=False),
    "reset": FirmwareVariant("2.0", b"\n", answers_set_commands=False, resets_on_open=True),
}
#: What the link waits after a port open before the firmware listens, per variant.
BOOT_DELAYS = {name: BOOT_DELAY_S if v.resets_on_open else 0.0 for name, v in VARIANTS.items()}

_REQUEST = re.compile(r"([#A-Z])(?::(-?[0-9]{1,10})(d?))?")
_QUERY_ONLY = frozenset("#AVTPIBXH")
_SET_ONLY = frozenset("MGWNCSE")
_ECHOED_ON_RECENT = frozenset("MGWSC")
_ARGUMENT_RANGES = {"M": (0, 2**31 - 1), "W": (0, 2**31 - 1), "G": (-(2**31 - 1), 2**31 - 1),
                    "S": (1, 65535), "C": (0, 99999), "N": (0, 1), "E": (0, 1), "L": (1, 2), "R": (0, 2)}


class PegasusFirmware:
    """DMFC (default) or FocusCube 2 state, driven by request bytes.

    Motion is computed from time, not stepped: a move records where and when it started, its direction,
    the backlash steps to take up first and its length, and the position is derived on demand. Speed is
    ``steps_per_second`` if given, else the ``S`` value read as steps per second. Backlash (``C``) is taken
    up whenever the direction reverses: those steps take time but are not counted in the position. Reverse
    (``N``) swaps the motor's direction and leaves the counter alone. Reading properties never mutates state.
    """

    def __init__(self, profile: str = "dmfc", variant: str = "recent", *, position: int = 0,
                 temperature: float | None = 20.0, speed: int = DEFAULT_SPEED, steps_per_second: float | None = None,
                 backlash: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, not {profile!r}")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {tuple(VARIANTS)}, not {variant!r}")
        if steps_per_second is not None and not steps_per_second > 0:
            raise ValueError("steps_per_second must be positive")
        self.profile = profile
        self.variant_name = variant
        self.variant = VARIANTS[variant]
        self.model_code = MODEL_CODES[profile]
        self._steps_per_second = steps_per_second
        self._clock = clock
        self._t_start = clock()
        #: The probe's reading (None: no probe, reported as -127). ``temperature_source(elapsed_s)`` wins if set.
        self.temperature: float | None = temperature
        self.temperature_source: Callable[[float], float | None] | None = None
        self.speed = speed
        self.backlash = backlash
        self.reverse = False
        self.led = True
        self.knob_enabled = True
        self.stepper = True
        self.knob_position = 0
        # Motion: from _pos0 at _t0, _takeup uncounted steps then _length counted ones in direction _dir.
        self._pos0, self._t0 = position, self._t_start
        self._dir, self._takeup, self._length = 0, 0, 0
        self._counts = True  # False for a DC-motor run: the motor turns, the counter does not
        self._moving = False
        self._last_dir = 0
        self._target = position
        # Observability for tests.
        self.commands: list[str] = []
        self.command_counts: collections.Counter[str] = collections.Counter()
        self.rejected_commands: list[str] = []  # unknown, malformed or unsupported lines (also logged)
        self.boots = 0
        self.boot_ignored_bytes = 0
        self._boot_until = float("-inf")
        self._line = bytearray()
        self._discarding = False

    # ------------------------------------------------------------------ state
    @property
    def steps_per_second(self) -> float | None:
        """A fixed motor speed (tests), or None for the ``S`` value read as steps per second."""
        return self._steps_per_second

    @steps_per_second.setter
    def steps_per_second(self, value: float | None) -> None:
        if value is not None and not value > 0:
            raise ValueError("steps_per_second must be positive")
        self._rebase()  # the motion so far was at the old speed (a finished move stays finished)
        self._steps_per_second = value

    def _rate(self) -> float:
        return self._steps_per_second if self._steps_per_second is not None else float(self.speed)

    def _steps_run(self) -> int:
        return int((self._clock() - self._t0) * self._rate()) if self._moving else 0

    def _state(self) -> tuple[int, bool]:
        """(position, moving) now, without mutation."""
        if not self._moving:
            return self._pos0, False
        run = self._steps_run()
        counted = min(max(0, run - self._takeup), self._length) if self._counts else 0
        return self._pos0 + self._dir * counted, run < self._takeup + self._length

    def _rebase(self) -> None:
        """Commit the motion so far as a new start 'now', so speed or target changes apply from here on."""
        run = self._steps_run()
        position, moving = self._state()
        if moving:
            counted = abs(position - self._pos0)
            self._length -= counted if self._counts else max(0, run - self._takeup)
            self._takeup = max(0, self._takeup - run)
        else:
            self._takeup = self._length = 0
        self._pos0, self._moving, self._t0 = position, moving, self._clock()

    def _start(self, direction: int, length: int, counts: bool) -> None:
        """Begin (or redirect) a motion from the current position."""
        self._rebase()
        if direction == 0 or length == 0:
            self._moving = False
            self._takeup = self._length = 0
            return
        still_taking_up = self._takeup if self._moving and direction == self._dir else 0
        reversing = self._last_dir not in (0, direction)
        self._takeup = self.backlash if reversing else still_taking_up
        self._dir, self._length, self._counts, self._moving = direction, length, counts, True
        self._last_dir = direction

    def _stop(self) -> None:
        self._rebase()
        self._moving = False
        self._takeup = self._length = 0
        self._target = self._pos0

    @property
    def position(self) -> int:
        return self._state()[0]

    @property
    def moving(self) -> bool:
        return self._state()[1]

    @property
    def target(self) -> int:
        return self._target

    @property
    def reported_temperature(self) -> float:
        """What ``A`` and ``T`` report: the probe reading, or -127 without a probe."""
        value = self.temperature
        if self.temperature_source is not None:
            value = self.temperature_source(self._clock() - self._t_start)
        return NO_PROBE if value is None else float(value)

    @property
    def boot_delay(self) -> float:
        return BOOT_DELAYS[self.variant_name]

    @property
    def booting(self) -> bool:
        return self._clock() < self._boot_until

    def set_position(self, position: int) -> None:
        """Test hook: the counter jumps to ``position`` and any motion stops (like ``W``)."""
        self._stop()
        self._pos0 = self._target = position

    def status_line(self) -> str:
        position, moving = self._state()
        return (f"OK_{self.model_code}:{self.variant.version}:{int(self.stepper)}:{self.reported_temperature:.2f}:"
                f"{position}:{int(moving)}:{int(self.led)}:{int(self.reverse)}:{int(not self.knob_enabled)}:"
                f"{self.backlash}")

    # ---------------------------------------------------------------- framing
    def boot(self) -> bytes:
        """Called by the link on every port open; returns what the board prints at boot (nothing).

        The ``reset`` variant reboots: the motor stops, the receive buffer empties, input is ignored for
        ``BOOT_DELAY_S``. Position and settings survive (an assumption: the sources do not say).
        """
        if self.variant.resets_on_open:
            self._stop()
            self.reset_input()
            self._boot_until = self._clock() + BOOT_DELAY_S
            self.boots += 1
            logger.info("pegasus firmware rebooting on port open (ignoring input for %.1f s)", BOOT_DELAY_S)
        return b""

    def reset_input(self) -> None:
        """Drop a partial request line (what a reboot does to the serial buffer)."""
        self._line.clear()
        self._discarding = False

    def feed(self, data: bytes) -> bytes:
        return b"".join(self.feed_replies(data))

    def feed_replies(self, data: bytes) -> list[bytes]:
        """Process request bytes; return one element per reply line, each with the variant's line end."""
        if self.booting:
            self.boot_ignored_bytes += len(data)
            return []
        replies: list[bytes] = []
        for byte in data:
            if byte != 0x0A:
                if not self._discarding:
                    self._line.append(byte)
                    if len(self._line) > MAX_LINE_CHARS:
                        logger.warning("discarding over-long request %r", bytes(self._line[:32]))
                        self._line.clear()
                        self._discarding = True
                continue
            line, self._discarding = bytes(self._line).removesuffix(b"\r"), False
            self._line.clear()
            if line:
                reply = self._execute(line.decode("latin-1"))
                if reply is not None:
                    replies.append(reply.encode("ascii") + self.variant.line_end)
        return replies

    # --------------------------------------------------------------- commands
    def _reject(self, line: str, why: str) -> str | None:
        self.rejected_commands.append(line)
        logger.warning("ignoring %s request %r", why, line)
        return "ERR:" if self.variant.answers_set_commands else None

    def _execute(self, line: str) -> str | None:
        self.commands.append(line)
        match = _REQUEST.fullmatch(line)
        if match is None:
            self.command_counts["?"] += 1
            return self._reject(line, "malformed")
        letter, argument, trailing_d = match.groups()
        self.command_counts[letter] += 1
        handler = self._HANDLERS.get(letter)
        if handler is None:
            return self._reject(line, "unknown")
        if (argument is None and letter in _SET_ONLY) or (argument is not None and letter in _QUERY_ONLY):
            return self._reject(line, "malformed")
        if trailing_d and letter not in "MW":  # INDI sends "M:%ud"; the firmware reads the number and stops
            return self._reject(line, "malformed")
        value = None if argument is None else int(argument)
        if value is not None:
            low, high = _ARGUMENT_RANGES[letter]
            if not low <= value <= high:
                return self._reject(line, "out-of-range")
        if letter == "R" and self.profile == "focuscube" and value is not None:
            return self._reject(line, "unsupported (FocusCube has a stepper only)")
        reply = handler(self, value)
        if letter in _ECHOED_ON_RECENT:
            return f"{letter}:{value}" if self.variant.answers_set_commands else None
        return reply

    def _handshake(self, _: int | None) -> str:
        return f"OK_{self.model_code}"

    def _status(self, _: int | None) -> str:
        return self.status_line()

    def _version(self, _: int | None) -> str:
        return self.variant.version

    def _temperature(self, _: int | None) -> str:
        return f"{self.reported_temperature:.2f}"

    def _position(self, _: int | None) -> str:
        return str(self.position)

    def _moving_query(self, _: int | None) -> str:
        return str(int(self.moving))

    def _get_speed(self, _: int | None) -> str:
        return f"B:{self.speed}"

    def _knob_position(self, _: int | None) -> str:
        return str(self.knob_position)

    def _move(self, value: int | None) -> None:
        assert value is not None
        if not self.stepper:  # a DC motor has no absolute position (INDI issue #1559: use G)
            logger.info("M ignored in DC motor mode")
            return
        self._target = value
        position = self.position
        self._start((value > position) - (value < position), abs(value - position), counts=True)

    def _move_relative(self, value: int | None) -> None:
        assert value is not None
        direction = (value > 0) - (value < 0)
        if self.stepper:
            self._target = self.position + value
        self._start(direction, abs(value), counts=self.stepper)

    def _halt(self, _: int | None) -> str | None:
        self._stop()
        return "0" if self.variant.answers_set_commands else None

    def _sync(self, value: int | None) -> None:
        assert value is not None
        self.set_position(value)

    def _set_speed(self, value: int | None) -> None:
        assert value is not None
        self._rebase()
        self.speed = value

    def _set_backlash(self, value: int | None) -> None:
        assert value is not None
        self.backlash = value

    def _reverse(self, value: int | None) -> str:
        self.reverse = bool(value)
        return f"N:{int(self.reverse)}"

    def _knob(self, value: int | None) -> str:
        self.knob_enabled = value == 0
        return f"E:{int(not self.knob_enabled)}"

    def _led(self, value: int | None) -> str:
        if value is not None:
            self.led = value == 2
        return f"L:{int(self.led)}"

    def _motor_mode(self, value: int | None) -> str:
        if value is not None and (value == 1) != self.stepper:
            self._stop()
            self.stepper = value == 1
        return str(int(self.stepper))

    _HANDLERS: dict[str, Callable[["PegasusFirmware", int | None], str | None]] = {
        "#": _handshake, "A": _status, "V": _version, "T": _temperature, "P": _position, "I": _moving_query,
        "B": _get_speed, "X": _knob_position, "M": _move, "G": _move_relative, "H": _halt, "W": _sync,
        "S": _set_speed, "C": _set_backlash, "N": _reverse, "E": _knob, "L": _led, "R": _motor_mode,
    }
