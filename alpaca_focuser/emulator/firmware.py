"""A Moonlite focuser firmware modelled as a pure state machine.

The model is deliberately independent of the project's Moonlite driver (it has
its own framing and parsing) so that a bug in one cannot be hidden by a matching
bug in the other.  It does no I/O and starts no threads: bytes go in through
:meth:`MoonliteFirmware.feed`, reply bytes come out, and time comes from an
injectable clock so tests can drive motion with a fake clock.

Protocol summary (9600 8N1): a request is ``:`` + command + payload + ``#``,
numbers are upper-case hex, replies are bare (``XXXX#``), set/action commands
are silent.  The parser is intentionally *strict* where the real firmware is
lenient (upper-case command names, exact payload lengths, upper-case hex): a
driver that sends something sloppy gets no reply and a warning in the log,
which surfaces the bug instead of papering over it.
"""

from __future__ import annotations

import collections
import logging
import math
import random
import time
from typing import Callable

logger = logging.getLogger("alpaca_focuser.emulator")

MAX_POSITION = 0xFFFF
#: Longest frame body (between ``:`` and ``#``) kept; longer ones are discarded.
MAX_FRAME_CHARS = 16
PROFILES = ("moonlite", "clone")

#: Full-step rates for the standard step-delay codes.  The real firmware waits
#: roughly ``code`` x 1 ms-ish between steps, so the rate is ~1000/code steps/s;
#: these rounded values are what the emulator uses.  Half-step doubles them.
STEP_DELAY_RATES: dict[int, float] = {0x02: 500.0, 0x04: 250.0, 0x08: 125.0, 0x10: 63.0, 0x20: 32.0}

#: Slow temperature drift: a sine of this amplitude (C) and period (s).  The
#: steepest slope is 2*pi*A/P*60 ~= 0.16 C/minute, well under 1 C/minute.
DRIFT_AMPLITUDE_C = 0.5
DRIFT_PERIOD_S = 1200.0
#: Noise is Gaussian but clamped so a value on the 0.5 C grid never rounds away.
NOISE_SIGMA_C = 0.03
NOISE_LIMIT_C = 0.1

# Commands whose name is one character; everything else is two characters.
_ONE_CHAR_COMMANDS = frozenset("C+-")
# Expected payload length (hex digits) per command; absent means "no payload".
_PAYLOAD_DIGITS: dict[str, int] = {"SP": 4, "SN": 4, "SD": 2, "SC": 2}


def _parse_hex(text: str, digits: int) -> int | None:
    """Strict upper-case hex of exactly ``digits`` characters, else None."""
    if len(text) != digits or any(c not in "0123456789ABCDEF" for c in text):
        return None
    return int(text, 16)


class MoonliteFirmware:
    """Moonlite (or clone) controller state, driven by raw protocol bytes.

    Motion is computed from time rather than stepped: a move records its start
    position, destination, start time and speed, and the current position is
    derived on demand, so it advances smoothly however often it is polled.
    Reading properties never mutates state (safe to read from another thread
    while :meth:`feed` runs elsewhere, give or take a torn multi-field read);
    the move is only committed as finished inside :meth:`feed`.

    Speed: ``steps_per_second`` if given (fixed, not affected by half-step);
    otherwise from the step-delay code (02 -> 500, 04 -> 250, 08 -> 125,
    10 -> 63, 20 -> 32 steps/s, other codes 1000/code), doubled in half-step.

    Deviations that mirror the AccelStepper-based firmwares: ``SN`` while
    moving retargets the running move immediately; ``FQ`` freezes the position
    and sets the target to it; ``SP`` stops any move and sets position and
    target to the value.  ``GT`` reports the temperature latched by the most
    recent ``C`` (or at power-on if ``C`` was never sent), like the real one.
    """

    def __init__(
        self,
        profile: str = "moonlite",
        steps_per_second: float | None = None,
        temperature: float = 10.0,
        position: int = 0,
        clock: Callable[[], float] = time.monotonic,
        *,
        temperature_drift: bool = True,
    ) -> None:
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, not {profile!r}")
        if steps_per_second is not None and not steps_per_second > 0:
            raise ValueError("steps_per_second must be positive")
        if not 0 <= position <= MAX_POSITION:
            raise ValueError(f"position must be 0..{MAX_POSITION}")
        self.profile = profile
        self.steps_per_second = steps_per_second
        self.base_temperature = float(temperature)
        self.temperature_drift = temperature_drift
        self._clock = clock
        self._t_boot = clock()
        self._rng = random.Random()

        # Motion: position is _pos0 at time _t0, heading for _dest at _speed.
        self._pos0 = position
        self._t0 = self._t_boot
        self._dest = position
        self._speed = 0.0
        self._moving = False
        self._target = position

        self.half_step = False
        self.step_delay = 0x02
        self.temp_coefficient = 0  # signed, -128..127
        self.temp_compensation = False
        self.version = "10"
        self._latched_temperature = self.temperature_c

        self.commands: list[str] = []
        self.command_counts: collections.Counter[str] = collections.Counter()
        #: Frames that were unknown or malformed (also logged as warnings).
        self.rejected_commands: list[str] = []

        self._frame: list[str] | None = None  # None: waiting for ':'

    # ------------------------------------------------------------------ state
    def _computed(self) -> tuple[int, bool]:
        """(position, still moving) at the current clock time, without mutation."""
        if not self._moving:
            return self._pos0, False
        distance = abs(self._dest - self._pos0)
        done = int((self._clock() - self._t0) * self._speed)
        if done >= distance:
            return self._dest, False
        step = done if self._dest > self._pos0 else -done
        return self._pos0 + step, True

    def _rebase(self) -> None:
        """Commit the computed position as a new starting point 'now'.

        Called before anything that changes the motion parameters, so speed or
        destination changes take effect from the current position onwards.
        """
        pos, moving = self._computed()
        self._pos0, self._moving, self._t0 = pos, moving, self._clock()
        self._speed = self._current_speed()

    def _current_speed(self) -> float:
        if self.steps_per_second is not None:
            return self.steps_per_second
        rate = STEP_DELAY_RATES.get(self.step_delay, 1000.0 / max(self.step_delay, 1))
        return rate * 2 if self.half_step else rate

    @property
    def position(self) -> int:
        return self._computed()[0]

    def set_position(self, position: int) -> None:
        """Put the motor at ``position`` (tests, and ``SP``): any move stops there, and the target follows."""
        if not 0 <= position <= MAX_POSITION:
            raise ValueError(f"position must be 0..{MAX_POSITION}")
        self._pos0 = self._dest = self._target = position
        self._moving = False
        self._t0 = self._clock()

    @property
    def temperature(self) -> float:
        """The probe's base temperature (before drift and noise); tests may set it."""
        return self.base_temperature

    @temperature.setter
    def temperature(self, celsius: float) -> None:
        self.base_temperature = float(celsius)

    @property
    def target(self) -> int:
        return self._target

    @property
    def moving(self) -> bool:
        return self._computed()[1]

    @property
    def speed(self) -> float:
        """Steps per second a move started now would use."""
        return self._current_speed()

    @property
    def temperature_c(self) -> float:
        """The modelled probe temperature right now (unquantised)."""
        if not self.temperature_drift:
            return self.base_temperature
        t = self._clock() - self._t_boot
        drift = DRIFT_AMPLITUDE_C * math.sin(2 * math.pi * t / DRIFT_PERIOD_S)
        noise = max(-NOISE_LIMIT_C, min(NOISE_LIMIT_C, self._rng.gauss(0.0, NOISE_SIGMA_C)))
        return self.base_temperature + drift + noise

    @property
    def reported_temperature_c(self) -> float:
        """What ``GT`` answers: the last latched reading, quantised to 0.5 C."""
        return round(self._latched_temperature * 2) / 2

    # ---------------------------------------------------------------- framing
    def reset_input(self) -> None:
        """Drop any partial frame (what a reboot does to the serial buffer)."""
        self._frame = None

    def boot(self) -> bytes:
        """DTR reset on port open: the partial frame is lost; the board prints nothing. The position is kept, as
        on the controllers that store it (and so that an unplug-replug test sees the motor where it stopped)."""
        self.reset_input()
        return b""

    def feed(self, data: bytes) -> bytes:
        """Process raw input; return the concatenated replies of complete commands."""
        return b"".join(self.feed_replies(data))

    def feed_replies(self, data: bytes) -> list[bytes]:
        """Like :meth:`feed` but one element per reply, so a link can pace them."""
        replies: list[bytes] = []
        for ch in data.decode("latin-1"):
            if ch == ":":
                if self._frame:
                    logger.debug("frame %r restarted by ':'", "".join(self._frame))
                self._frame = []
            elif self._frame is None:
                continue  # noise between frames
            elif ch == "#":
                body = "".join(self._frame)
                self._frame = None
                if body:
                    reply = self._execute(body)
                    if reply is not None:
                        replies.append(reply.encode("ascii"))
            else:
                self._frame.append(ch)
                if len(self._frame) > MAX_FRAME_CHARS:
                    logger.warning("discarding over-long frame %r", "".join(self._frame))
                    self._frame = None
        return replies

    # --------------------------------------------------------------- commands
    def _reject(self, body: str, why: str) -> None:
        self.rejected_commands.append(body)
        logger.warning("ignoring %s command %r", why, body)

    def _execute(self, body: str) -> str | None:
        """Run one frame body (e.g. ``"SN1000"``); return its reply or None."""
        self.commands.append(body)
        name_len = 1 if body[0] in _ONE_CHAR_COMMANDS else 2
        name, payload = body[:name_len], body[name_len:]
        self.command_counts[name] += 1
        logger.debug("command %r", body)

        handler = self._HANDLERS.get(name)
        if handler is None:
            self._reject(body, "unknown")
            return None
        digits = _PAYLOAD_DIGITS.get(name, 0)
        value: int | None = None
        if digits:
            value = _parse_hex(payload, digits)
            if value is None:
                self._reject(body, "malformed")
                return None
        elif payload:
            self._reject(body, "malformed")
            return None
        # Commit a finished move before acting, so state reads are consistent.
        if self._moving and not self._computed()[1]:
            self._pos0, self._moving = self._dest, False
        return handler(self, value)

    def _gp(self, _: int | None) -> str:
        return f"{self.position:04X}#"

    def _gn(self, _: int | None) -> str:
        return f"{self._target:04X}#"

    def _gi(self, _: int | None) -> str:
        moving = self.moving
        if self.profile == "clone":
            return "1#" if moving else "0#"
        return "01#" if moving else "00#"

    def _sp(self, value: int | None) -> None:
        assert value is not None
        self.set_position(value)

    def _sn(self, value: int | None) -> None:
        assert value is not None
        self._target = value
        if self._moving:  # AccelStepper moveTo(): the running move follows
            self._rebase()
            self._dest = value
            self._moving = self._pos0 != value

    def _fg(self, _: int | None) -> None:
        self._rebase()
        self._dest = self._target
        self._moving = self._pos0 != self._target

    def _fq(self, _: int | None) -> None:
        self._rebase()
        self._moving = False
        self._dest = self._target = self._pos0

    def _c(self, _: int | None) -> None:
        self._latched_temperature = self.temperature_c

    def _gt(self, _: int | None) -> str:
        half_degrees = round(self._latched_temperature * 2)
        return f"{half_degrees & 0xFFFF:04X}#"

    def _gv(self, _: int | None) -> str:
        return f"{self.version}#"

    def _gd(self, _: int | None) -> str:
        return f"{self.step_delay:02X}#"

    def _sd(self, value: int | None) -> None:
        assert value is not None
        if value == 0:
            self._reject(f"SD{value:02X}", "zero step delay")
            return
        self._rebase()
        self.step_delay = value
        self._speed = self._current_speed()

    def _gh(self, _: int | None) -> str:
        return "FF#" if self.half_step else "00#"

    def _set_half(self, half: bool) -> None:
        self._rebase()
        self.half_step = half
        self._speed = self._current_speed()

    def _sh(self, _: int | None) -> None:
        self._set_half(True)

    def _sf(self, _: int | None) -> None:
        self._set_half(False)

    def _gc(self, _: int | None) -> str:
        return f"{self.temp_coefficient & 0xFF:02X}#"

    def _sc(self, value: int | None) -> None:
        assert value is not None
        self.temp_coefficient = value - 0x100 if value >= 0x80 else value

    def _comp_on(self, _: int | None) -> None:
        self.temp_compensation = True

    def _comp_off(self, _: int | None) -> None:
        self.temp_compensation = False

    def _gb(self, _: int | None) -> str:
        return "00#"

    _HANDLERS: dict[str, Callable[["MoonliteFirmware", int | None], str | None]] = {
        "GP": _gp, "GN": _gn, "GI": _gi, "SP": _sp, "SN": _sn, "FG": _fg, "FQ": _fq,
        "C": _c, "GT": _gt, "GV": _gv, "GD": _gd, "SD": _sd, "GH": _gh, "SH": _sh,
        "SF": _sf, "GC": _gc, "SC": _sc, "+": _comp_on, "-": _comp_off, "GB": _gb,
    }
