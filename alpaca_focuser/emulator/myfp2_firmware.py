"""A myFocuserPro2 controller (Robert Brown's firmware, Arduino Nano or ESP32) modelled as a pure state machine.

Independent of :mod:`alpaca_focuser.drivers` on purpose (its own parser and formatter), so a driver bug cannot
hide behind a matching emulator bug. No I/O, no threads: request bytes go in through :meth:`feed_replies`,
reply bytes come out, and time comes from an injectable clock so tests drive motion with a fake clock.
:meth:`boot` is the DTR reset the pty link performs on every port open: the board ignores input for
``boot_delay`` seconds and returns what it prints. The behaviour follows the sources in ``docs/protocols/myfp2.md``:

- a move runs in time (backlash steps first, then the steps, then the delay after move, IsMoving 1 throughout);
  ``:05#`` is ignored while moving and its target clamped to 0..MaxStep; sync and reverse are ignored while
  moving; set commands never reply; replies are cut to 31 bytes like the firmware's snprintf buffer;
- halt: the Nano stops at once and a halt while idle does nothing; the ESP firmware only raises a flag that the
  stepping loop checks, so a halt while idle (or while settling after a move) stops the *next* move after one step;
- without a probe (looked for at boot only) ``:06#`` answers a constant 20 C and ``:83#``/``:25#`` answer 0;
- settings and position are written to EEPROM only after a quiet period (or ``:48#``); :meth:`boot` restores
  the saved copy, so what was not yet written is lost, position included, as on the real board.

Serial input as the firmware's ``serialEvent`` handles it (framing.py): ``:`` empties the line, ``#`` runs what the
line holds and keeps it (a bare ``#`` repeats the last command), bytes outside a frame stay in the line; the
command number is ``toInt()`` of its first two characters and the arguments are read like the firmware reads them
(myfp2_commands.py), so a garbled frame does what it would do on a real board. A line a careful driver would not
send (not the strict form: two digits, plain decimal arguments, one digit for on/off settings, nothing after a
query) is logged and recorded in ``rejected_commands``, for the tests, and then run all the same.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Callable

from alpaca_focuser.emulator import myfp2_commands
from alpaca_focuser.emulator.framing import SerialLine, arduino_to_int
from alpaca_focuser.emulator.myfp2_profiles import BOOT_DELAYS, DEFAULT_PROFILE, PROFILES, MyFP2Profile, Settings

__all__ = ["BOOT_DELAYS", "DEFAULT_PROFILE", "PROFILES", "MyFP2Firmware"]

logger = logging.getLogger("alpaca_focuser.emulator")

#: The firmware formats replies with snprintf into a 32-byte buffer: anything longer loses its tail (and '#').
REPLY_LIMIT = 31
TEMPERATURE_STEP_C = 0.25  # DS18B20 at its default 10-bit resolution
NO_PROBE_TEMPERATURE_C = 20.0
FOCUSER_LOWER_LIMIT = myfp2_commands.FOCUSER_LOWER_LIMIT


class MyFP2Firmware:
    """The controller's state, driven by raw protocol bytes. Reading properties never mutates state; time-driven
    events (a move ending, an EEPROM write, a temperature sample, a compensation move) are applied before each
    command, in :meth:`boot` and in :meth:`update`."""

    def __init__(self, profile: str = DEFAULT_PROFILE, *, position: int | None = None, max_step: int | None = None,
                 probe: bool = True, temperature: float = 10.0, steps_per_second: float | None = None,
                 resets_on_open: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {sorted(PROFILES)}, not {profile!r}")
        if steps_per_second is not None and not steps_per_second > 0:
            raise ValueError("steps_per_second must be positive")
        self.profile: MyFP2Profile = PROFILES[profile]
        settings = self.profile.defaults.copy()
        if max_step is not None:
            if not FOCUSER_LOWER_LIMIT <= max_step <= self.profile.max_step_limit:
                raise ValueError(f"max_step must be {FOCUSER_LOWER_LIMIT}..{self.profile.max_step_limit}")
            settings.max_step = max_step
        start = self.profile.default_position if position is None else position
        if not 0 <= start <= settings.max_step:
            raise ValueError(f"position must be 0..{settings.max_step}")
        self.steps_per_second = steps_per_second
        #: False for a board whose auto-reset is disabled (a capacitor on RESET, an ESP32 without DTR wiring).
        self.resets_on_open = resets_on_open
        self._clock = clock
        self._t_created = clock()
        #: What the probe measures (C); ``temperature_source(seconds since creation) -> C`` wins if set.
        self.temperature = float(temperature)
        self.temperature_source: Callable[[float], float] | None = None
        #: Whether a probe is plugged in. The firmware looks for it at boot only.
        self.probe_connected = probe
        #: Whether the 12 V motor supply is on: the Nano ignores moves without it (stepper power detect).
        self.stepper_power: bool = True
        self.commands: list[str] = []
        self.command_counts: collections.Counter[str] = collections.Counter()
        #: Lines that are unknown commands or not in their strict form (also logged as warnings).
        self.rejected_commands: list[str] = []
        self.boots = 0  #: DTR resets so far
        self.boot_ignored_bytes = 0  #: input dropped while booting
        self.saves = 0  #: EEPROM writes so far
        self._boot_until = float("-inf")
        self._saved = settings
        self.settings: Settings = settings.copy()  # what it runs with; reloaded from the saved copy on boot
        self._saved_position = start
        self._offset = 0  # physical position - the firmware's counter (changes on sync and on reboot)
        self._requests = SerialLine(skip="\r\n" if self.profile.ignores_line_endings else "")
        self._start_up(start, clock())

    # ------------------------------------------------------------------ state
    def _start_up(self, position: int, now: float) -> None:
        """What setup() does: settings from the saved copy, a probe search, no motion, no pending halt."""
        self.settings = self._saved.copy()
        if not self.profile.persists_temp_compensation:
            self.settings.temp_compensation = False
        self._pos0 = self._dest = position
        self._moving = False
        self._speed = 1.0
        self._t_start = self._t_stop = self._t_end = now
        self._halt_armed = False
        self._requests.reset()
        self._probe_found = self.probe_connected
        self._reported_temperature = NO_PROBE_TEMPERATURE_C
        self._sample_temperature(now)
        self._tc_reference: float | None = None
        self._dirty = False
        self._dirty_since = self._save_ref = self._last_change = now

    def position_at(self, t: float) -> int:
        if not self._moving or t <= self._t_start:
            return self._pos0
        if t >= self._t_stop:
            return self._dest
        done = int((t - self._t_start) * self._speed)
        return self._pos0 + done if self._dest > self._pos0 else self._pos0 - done

    def moving_at(self, t: float) -> bool:
        return self._moving and t < self._t_end

    def _steps_per_second(self) -> float:
        if self.steps_per_second is not None:
            return self.steps_per_second
        s = self.settings
        delay_us = s.step_delay_us * {0: 3, 1: 2}.get(s.motor_speed, 1)  # slow triples the delay, medium doubles
        divisor = s.step_mode if s.step_mode in (1, 2, 4) else 8  # the timer interval shrinks with microsteps
        return 1e6 * divisor / delay_us

    def mark_changed(self, t: float) -> None:
        """A setting or the position changed: an EEPROM write becomes due (``writenow = 1``)."""
        if not self._dirty:
            self._dirty, self._dirty_since = True, t
        self._last_change = t

    def start_move(self, target: int, now: float) -> None:
        pos = self._pos0
        if target == pos:
            return  # the loop finds position == target: nothing moves, and an armed halt stays armed
        s = self.settings
        direction = 1 if target > pos else 0
        backlash = 0
        if direction != s.last_direction:
            enabled, steps = ((s.backlash_out_enabled, s.backlash_out_steps) if direction
                              else (s.backlash_in_enabled, s.backlash_in_steps))
            backlash = steps if enabled else 0
            s.last_direction = direction
        if self._halt_armed:  # ESP: the stale halt_alert is seen on the first pass through State_Moving
            self._halt_armed = False
            target = pos + (1 if direction else -1)
        self._speed = self._steps_per_second()
        self._dest = target
        self._t_start = now + backlash / self._speed
        self._t_stop = self._t_start + abs(target - pos) / self._speed
        self._t_end = self._t_stop + s.delay_after_move_ms / 1000.0
        self._moving = True
        self.mark_changed(now)

    def halt(self, now: float) -> None:
        stepping = self._moving and now < self._t_stop
        if self.profile.halt_arms_when_idle and not stepping:
            self._halt_armed = True  # checked only in State_Moving: waits for the next move
            return
        if not self._moving:
            self.mark_changed(now)  # the Nano sets writenow even when idle: harmless
            return
        self._pos0 = self._dest = self.position_at(now)
        self._t_start = self._t_stop = now
        if self.profile.halt_arms_when_idle:
            self._t_end = now + self.settings.delay_after_move_ms / 1000.0  # ESP: through State_DelayAfterMove
        else:
            self._moving = False  # the Nano clears isMoving at once
            self._save_ref = now
        self.mark_changed(now)

    def sync(self, position: int, now: float) -> None:
        """``:31#``: the counter changes, the motor does not."""
        self._offset += self._pos0 - position
        self._pos0 = self._dest = position
        self.mark_changed(now)

    def _save_due(self) -> float:
        if self.profile.save_quiet_from_change:
            return self._last_change + self.profile.save_quiet_s
        return max(self._save_ref + self.profile.save_quiet_s, self._dirty_since)

    def save(self, at: float) -> None:
        self._saved = self.settings.copy()
        self._saved_position = self._pos0
        self._dirty = False
        self._save_ref = at
        self.saves += 1

    def _sample_temperature(self, now: float) -> None:
        if not self._probe_found:
            return
        source = self.temperature_source
        measured = source(now - self._t_created) if source is not None else self.temperature
        if self.profile.filters_temperature and not -40.0 < measured < 80.0:
            return  # read_temp() keeps the last valid reading
        self._reported_temperature = round(measured / TEMPERATURE_STEP_C) * TEMPERATURE_STEP_C

    def _compensate_temperature(self, now: float) -> None:
        """Firmware temperature compensation: a change of 1 C or more moves the target by the coefficient."""
        s = self.settings
        if not (s.temp_compensation and self._probe_found):
            self._tc_reference = None
            return
        if self._tc_reference is None:
            self._tc_reference = self._reported_temperature
            return
        change = self._reported_temperature - self._tc_reference
        if abs(change) < 1.0:
            return
        inward = (change < 0) == (s.tc_direction == 0)
        self._tc_reference = self._reported_temperature
        step = -s.temp_coefficient if inward else s.temp_coefficient
        self.start_move(max(0, min(self._dest + step, s.max_step)), now)

    def _catch_up(self, now: float) -> None:
        """Apply what happened since the last command, in the order the firmware's loop would."""
        if self._moving and now >= self._t_end:
            self._pos0, self._moving = self._dest, False
            self.mark_changed(self._t_end)
            self._save_ref = self._t_end  # the Nano restarts its quiet period when a move finishes
        if self._moving:
            if self.profile.temperature_while_moving:
                self._sample_temperature(now)
            return
        if self._dirty and self._save_due() <= now:
            self.save(self._save_due())
        self._sample_temperature(now)
        self._compensate_temperature(now)

    # -------------------------------------------------------------- test hooks
    @property
    def position(self) -> int:
        """The firmware's position counter (what ``:00#`` answers)."""
        return self.position_at(self._clock())

    @property
    def physical_position(self) -> int:
        """Where the motor really is: differs from ``position`` after a sync or a reboot that lost a move."""
        return self.position + self._offset

    @property
    def moving(self) -> bool:
        return self.moving_at(self._clock())

    @property
    def target(self) -> int:
        return self._dest

    @property
    def halt_armed(self) -> bool:
        """ESP only: a halt received while not stepping, waiting to stop the next move."""
        return self._halt_armed

    @property
    def probe_found(self) -> bool:
        return self._probe_found

    @property
    def reported_temperature(self) -> float:
        """What ``:06#`` answers (last sample, or the constant 20 C without a probe)."""
        return self._reported_temperature

    @property
    def saved_position(self) -> int:
        """The position in EEPROM (call :meth:`update` first to apply a write that is due)."""
        return self._saved_position

    @property
    def saved_settings(self) -> Settings:
        return self._saved.copy()

    @property
    def speed(self) -> float:
        """Steps per second a move started now would use."""
        return self._steps_per_second()

    @property
    def boot_delay(self) -> float:
        return self.profile.boot_delay

    @property
    def booting(self) -> bool:
        """Within ``boot_delay`` of the last reset: input is dropped (the Nano's bootloader, the ESP32's setup)."""
        return self._clock() < self._boot_until

    @property
    def baud(self) -> int:
        return self.profile.baud

    def set_position(self, position: int) -> None:
        """Put the focuser at ``position``, stopped, saved, as if it had powered up there."""
        if not 0 <= position <= self.settings.max_step:
            raise ValueError(f"position must be 0..{self.settings.max_step}")
        self._pos0 = self._dest = self._saved_position = position
        self._moving, self._offset = False, 0

    def update(self) -> None:
        """Apply time-driven events up to now (a finished move, a due EEPROM write, a temperature sample)."""
        self._catch_up(self._clock())

    def boot(self) -> bytes:
        """The DTR reset on port open: RAM state is lost (unsaved settings and position, a pending halt, a move
        in progress stops where it is), the saved copy is loaded, and input is ignored for ``boot_delay``.
        Returns what the board prints while booting: the ESP32 ROM banner and setup lines, nothing on the Nano.
        Does nothing (returns b"") when ``resets_on_open`` is False."""
        if not self.resets_on_open:
            return b""
        now = self._clock()
        self._catch_up(now)
        self._offset += self.position_at(now) - self._saved_position  # the motor stays where it stopped
        self.boots += 1
        self._start_up(self._saved_position, now)
        self._boot_until = now + self.profile.boot_delay
        logger.info("myfp2 %s: boot %d at position %d, deaf for %.1f s", self.profile.name, self.boots, self._pos0,
                    self.profile.boot_delay)
        return self.profile.banner

    # ---------------------------------------------------------------- framing
    def reset_input(self) -> None:
        """Empty the line (what a reboot does)."""
        self._requests.reset()

    def feed(self, data: bytes) -> bytes:
        """Process raw input; return the concatenated replies."""
        return b"".join(self.feed_replies(data))

    def feed_replies(self, data: bytes) -> list[bytes]:
        """Process raw input; one element per reply, so a link can pace them."""
        if self.booting:
            self.boot_ignored_bytes += len(data)
            return []
        replies = [self._execute(body) for body in self._requests.feed(data)]
        return [reply for reply in replies if reply is not None]

    @property
    def line(self) -> str:
        """What the firmware's line holds now: the next bare ``#`` runs it."""
        return self._requests.line

    def _execute(self, body: str) -> bytes | None:
        self.commands.append(body)
        self.command_counts[body[:2]] += 1
        if not myfp2_commands.well_formed(body):
            self.rejected_commands.append(body)
            logger.warning("myfp2: %r is not a well-formed command; running it as the firmware reads it", body)
        handler = myfp2_commands.COMMANDS.get(arduino_to_int(body[:2]))
        if handler is None:
            return None  # the switch has no such case
        now = self._clock()
        self._catch_up(now)
        reply = handler(self, body[2:], now)
        return None if reply is None else reply.encode("latin-1")[:REPLY_LIMIT]
