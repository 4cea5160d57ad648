"""Temperature compensation and coefficient learning for one focuser, driven by its motion worker.

The motion worker calls ``on_tick`` about ten times a second with the hardware snapshot and ``on_move_end`` when a
move has come to rest; the device tells us about client Moves, Halts, SyncPosition, TempComp switches and
connections. Nothing here touches the hardware directly: a correction is handed to the motion engine, which
refuses it if a client move got in first.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from alpaca_focuser.config import FocuserConfig
from alpaca_focuser.drivers.base import DriverStatus
from alpaca_focuser.focuser.learning import Learner
from alpaca_focuser.focuser.motion import CLIENT, MotionEngine, MoveEnd
from alpaca_focuser.focuser.tempcomp import TempCompensation, TemperatureWindow
from alpaca_focuser.state import StateStore

log = logging.getLogger(__name__)


class Focusing:
    def __init__(self, device_number: int, settings: Callable[[], FocuserConfig], engine: MotionEngine,
                 store: StateStore, active: Callable[[], bool]) -> None:
        """``active()`` says whether compensation should run: TempComp on and available."""
        self.device_number = device_number
        self.name = f"Focuser {device_number}"
        self._settings = settings
        self._engine = engine
        self._store = store
        self._active = active
        self.window = TemperatureWindow()
        self.comp = TempCompensation(self.name, store.get(device_number, "temp_comp", False) is True)
        self.learner = Learner(self.name, store.get(device_number, "temp_comp_pairs", []))

    # --- the worker's hooks ----------------------------------------------------------------------------------
    def on_tick(self, status: DriverStatus) -> None:
        if not status.connected or status.fault or status.temperature is None:
            return
        cfg = self._settings()
        now = time.monotonic()
        self.window.offer(now, status.temperature, cfg.temp_comp_window_s)
        average = self.window.average(now, cfg.temp_comp_window_s)
        if average is None:
            return
        frame = self._engine.frame(cfg)
        if self.learner.due(now, cfg.temp_comp_learn_idle_s, frame, self._engine.client_actions):
            self._store.update(self.device_number, temp_comp_pairs=self.learner.pairs())
        if not self._active() or self.comp.suspended or not self._engine.idle(status):
            return
        current = frame.to_client(status.position)
        correction = self.comp.evaluate(average, current, frame, cfg.temp_comp_coefficient,
                                        cfg.temp_comp_threshold)
        if correction is not None and self._engine.correct(correction.target, current):
            self.comp.record(correction)

    def on_move_end(self, end: MoveEnd) -> None:
        if end.kind != CLIENT or not end.completed:
            return
        self.comp.client_moved()
        average = self.average()
        if average is not None:
            self.learner.client_move_ended(time.monotonic(), average, end.position, end.serial)

    # --- what the device tells us ----------------------------------------------------------------------------
    def halted(self) -> None:
        self.comp.halted()
        self.learner.cancel()

    def synced(self) -> None:
        self.comp.reset_reference()
        self.learner.cancel()

    def connected(self) -> None:
        self.window.clear()
        self.comp.reset_reference()
        self.learner.cancel()

    def disconnected(self) -> None:
        self.learner.cancel()

    def switch(self, on: bool) -> None:
        """TempComp set by a client; remembered in the state file. Switching on takes the reference at once (when
        the focuser is idle and there is a temperature), so it is the temperature of the moment the client chose."""
        self.comp.switch(on)
        self._store.update(self.device_number, temp_comp=on)
        if not on:
            return
        average = self.average()
        with self._engine.lock:
            status = self._engine.driver.status()
            if average is not None and status.connected and not status.fault and self._engine.idle(status):
                frame = self._engine.frame()
                self.comp.take_reference(average, frame.to_client(status.position), frame)

    # --- readings ------------------------------------------------------------------------------------------------
    def average(self) -> float | None:
        """The averaged temperature now, or None before the first reading."""
        return self.window.average(time.monotonic(), self._settings().temp_comp_window_s)

    def learned(self) -> dict[str, Any]:
        return self.learner.report(self._engine.frame())

    def clear_learned(self) -> None:
        self.learner.clear()
        self._store.update(self.device_number, temp_comp_pairs=[])


def settings_summary(cfg: FocuserConfig, has_temperature: bool, temp_comp: bool) -> str:
    """The focusing settings in one line for the log, so a hidden backlash or a reversed motor is visible."""
    parts = [f"backlash {cfg.backlash_steps} steps, final approach {cfg.backlash_direction}"
             if cfg.backlash_steps else "backlash off",
             "reverse on" if cfg.reverse else "reverse off",
             f"settle {cfg.settle_ms} ms" if cfg.settle_ms else "settle off"]
    available = has_temperature if cfg.temp_comp_available is None else cfg.temp_comp_available
    if available:
        parts.append(f"temperature compensation available ({'on' if temp_comp else 'off'}): coefficient "
                     f"{cfg.temp_comp_coefficient:g} steps/°C, threshold {cfg.temp_comp_threshold:g} °C, "
                     f"averaged over {cfg.temp_comp_window_s:g} s, learning after {cfg.temp_comp_learn_idle_s:g} s "
                     f"idle" + ("" if has_temperature else "; no temperature sensor, so it will not move"))
    else:
        parts.append("temperature compensation not available")
    return ", ".join(parts)
