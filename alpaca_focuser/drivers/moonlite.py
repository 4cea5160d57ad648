"""Moonlite-compatible focuser controllers: the Moonlite dialect on the serial engine.

The codec and the handshake are in moonlite_protocol.py; the port, the thread, the queue, Halt, faults and
reconnects in serial_engine.py. What is left here is what the engine cannot know about Moonlite:

* Connecting retries ``GV`` through the Arduino's DTR reboot (``GP`` on the window's last try, for clones without
  ``GV``), applies ``SD``/``SH``/``SF`` only when configured, then reads ``GD``, ``GH``, the temperature (``C``
  then ``GT``), ``GI`` and ``GP``.
* Polls: ``GP`` and ``GI`` while moving, and ``GP`` again once ``GI`` reports stopped, so the final position is
  the true one; while idle ``GP`` (``GI`` only if the position changed by itself), and ``GT`` then ``C`` when
  there is a sensor: ``GT`` reads the conversion the previous poll's ``C`` started. Some clones answer ``GT``
  only after the ~750 ms conversion, so its reply may take 1.2 s.
* Moves send ``SN``, read ``GN`` back (set commands are never acknowledged: ``FG`` after a lost or garbled ``SN``
  would move somewhere else), then ``FG``. A move while moving is just a new ``SN`` + ``FG``.
* ``FQ`` halts and has no reply; ``SP`` syncs, then ``GP`` reads what the controller took.
* Quirk: some clones compute ``GI`` from the last ``SN`` target, so it never clears after a halt (or at
  power-up): a motor whose ``GP`` stands still for 2 s (0.5 s after a halt) has stopped.
"""

from __future__ import annotations

import logging
from typing import Callable, TypeVar, Unpack

from alpaca_focuser.config import FocuserConfig
from alpaca_focuser.drivers import moonlite_protocol as mp
from alpaca_focuser.drivers.dialect import (INIT_TRIES, Dialect, Features, LinkSettings, Quirks, Reading,
                                            with_firmware)
from alpaca_focuser.drivers.protocol import Framer, ProtocolError
from alpaca_focuser.drivers.serial_engine import EngineOptions, SerialEngine
from alpaca_focuser.drivers.serial_link import SerialLink

log = logging.getLogger(__name__)

T = TypeVar("T")

SET_TARGET_TRIES = 3  # SN + GN read-back attempts before the controller counts as not answering


class MoonliteDialect(Dialect):
    name = "moonlite"
    title = "Moonlite"
    features = Features(max_position=mp.MAX_POSITION, temperature=None)  # probe-less firmwares do not answer GT
    link_settings = LinkSettings(default_baud=9600, resets_on_open=True, boot_time=2.0, handshake_timeout=3.0,
                                 moving_poll_interval=0.1, idle_poll_interval=1.0)
    quirks = Quirks(halt_when_idle=True, halt_answers=False, retarget_needs_halt=False, stall_seconds=2.0,
                    stall_after_halt=0.5)

    def __init__(self, *, speed_code: int | None = None, half_step: bool | None = None) -> None:
        if speed_code is not None and speed_code not in mp.STEP_DELAY_CODES:
            raise ValueError(f"speed_code must be one of {mp.STEP_DELAY_CODES}, got {speed_code!r}")
        super().__init__()
        self.speed_code, self.half_step = speed_code, half_step  # applied on every (re)connect when not None
        self.step_delay: int | None = None  # as the firmware reports them (None: a clone that does not say)
        self.half_step_enabled: bool | None = None

    def framer(self) -> Framer:
        return mp.ReplyReader()

    def command_name(self, frame: bytes) -> str:
        return mp.command_name(frame)

    def handshake(self, link: SerialLink, timeout: float) -> str:
        self.firmware = mp.handshake(link, timeout)
        return self.firmware

    def initialise(self, link: SerialLink) -> Reading:
        state = mp.read_state(link, self.firmware or "unknown", speed_code=self.speed_code,
                              half_step=self.half_step, tries=INIT_TRIES)
        self.has_temperature = state.temperature is not None
        self.step_delay, self.half_step_enabled = state.step_delay, state.half_step
        return Reading(position=state.position, moving=state.moving, temperature=state.temperature)

    def poll(self, link: SerialLink, moving: bool, last_position: int) -> Reading | None:
        return self._poll_moving(link) if moving else self._poll_idle(link, last_position)

    def _poll_moving(self, link: SerialLink) -> Reading | None:
        position = _poll(link, mp.GET_POSITION, mp.parse_position)
        moving = None if position is None else _poll(link, mp.GET_MOVING, mp.parse_moving)
        if moving is False:
            # The move may have ended between GP and GI: the final position is the one read after GI.
            position = _poll(link, mp.GET_POSITION, mp.parse_position)
        if position is None or moving is None:
            return None
        return Reading(position=position, moving=moving)

    def _poll_idle(self, link: SerialLink, last_position: int) -> Reading | None:
        position = _poll(link, mp.GET_POSITION, mp.parse_position)
        if position is None:
            return None
        moving = None
        if position != last_position:
            # Something moved it (hand paddle, another program before we connected): follow it as a move.
            moving = _poll(link, mp.GET_MOVING, mp.parse_moving)
            if moving is None:
                return None
        temperature = None
        if self.has_temperature:
            # GT reads the conversion started by the previous poll's C (a DS18B20 takes ~750 ms).
            temperature = _poll(link, mp.GET_TEMPERATURE, mp.parse_temperature)
            if temperature is None:
                return None
            link.send(mp.encode_command(mp.START_CONVERSION))
        return Reading(position=position, moving=moving, temperature=temperature)

    def move(self, link: SerialLink, target: int) -> bool:
        # SN is never acknowledged: read GN back, because FG after a lost or garbled SN moves somewhere else.
        readback: object = None
        for _ in range(SET_TARGET_TRIES):
            if link.interrupted:
                return False  # a Halt arrived before the move started: do not start it
            link.send(mp.encode_set_target(target))
            try:
                readback = mp.query(link, mp.GET_TARGET, mp.parse_position)
                if readback == target:
                    break
                log.warning("%s: GN read back %s after SN%04X; retrying", link.label, readback, target)
            except ProtocolError as exc:
                readback = exc
                link.drain()
        else:
            raise ProtocolError(f"the controller did not accept target {target} (GN read back: {readback})")
        if link.interrupted:
            return False
        link.send(mp.encode_command(mp.START_MOVE))
        return True

    def halt_frame(self) -> bytes:
        return mp.encode_command(mp.HALT)

    def sync(self, link: SerialLink, position: int) -> int | None:
        link.send(mp.encode_set_position(position))
        return _poll(link, mp.GET_POSITION, mp.parse_position)

    def description(self, port: str) -> str:
        return with_firmware(f"Moonlite-compatible focuser on {port}", self.firmware)


def _poll(link: SerialLink, cmd: str, parser: Callable[[bytes], T]) -> T | None:
    return link.poll(mp.encode_command(cmd), parser, mp.reply_timeout(cmd, link.read_timeout))


class MoonliteDriver(SerialEngine):
    """``driver = "moonlite"``: the serial engine speaking the Moonlite dialect (settings as in config.py)."""

    DIALECT = MoonliteDialect

    @classmethod
    def from_config(cls, cfg: FocuserConfig) -> MoonliteDriver:
        assert cfg.port is not None  # guaranteed by config validation
        return cls(cfg.port, baud=cfg.baud, read_timeout=cfg.read_timeout, speed_code=cfg.speed,
                   half_step=cfg.half_step, name=cfg.name)

    def __init__(self, port: str, *, speed_code: int | None = None, half_step: bool | None = None,
                 **engine: Unpack[EngineOptions]) -> None:
        self.moonlite = MoonliteDialect(speed_code=speed_code, half_step=half_step)
        super().__init__(port, self.moonlite, **engine)

    @property
    def step_delay(self) -> int | None:
        """The step-delay code the firmware reported at the last connect (None: it does not answer GD)."""
        return self.moonlite.step_delay

    @property
    def half_step_enabled(self) -> bool | None:
        """Half stepping as the firmware reported it at the last connect (None: it does not answer GH)."""
        return self.moonlite.half_step_enabled
