"""IFocuserV4 semantics for one focuser (ASCOM Platform 7), independent of HTTP.

Each public method is one ASCOM member. They raise ASCOM errors (``alpaca_focuser.errors``); the HTTP layer
turns those into Alpaca replies. Whether a member needs a connection is declared in the member table of the
HTTP layer; the methods here still check the hardware's own fault state.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import fields, replace
from datetime import datetime, timezone
from typing import Any, Callable

from alpaca_focuser import __version__
from alpaca_focuser.config import FocuserConfig
from alpaca_focuser.config_keys import KEYS_BY_NAME, LIVE, RECONNECT
from alpaca_focuser.drivers.base import DriverStatus, FocuserDriver
from alpaca_focuser.errors import (
    AscomError,
    DriverError,
    InvalidOperationError,
    InvalidValueError,
    NotConnectedError,
    NotImplementedAscomError,
)
from alpaca_focuser.focuser import actions
from alpaca_focuser.focuser.focusing import Focusing, settings_summary
from alpaca_focuser.focuser.motion import MotionEngine, MoveEnd
from alpaca_focuser.state import StateStore

log = logging.getLogger(__name__)

INTERFACE_VERSION = 4
DRIVER_VERSION = ".".join(__version__.split(".")[:2])  # ASCOM wants "n.n"
SHUTDOWN_HALT_WAIT = 1.5  # seconds to wait for a halted motor to report stopped before saving its position
CONNECT_TIMEOUT = 25.0  # seconds a Connected=true PUT waits: longer than the Moonlite driver's own worst case (~18 s)


class FocuserDevice:
    """One configured focuser: device number, identity, connection state, motion and focusing features.

    ``cfg`` is swapped whole by ``apply_settings``; everything reads it at the time of use.
    """

    def __init__(self, device_number: int, cfg: FocuserConfig, driver: FocuserDriver, store: StateStore,
                 driver_factory: Callable[[FocuserConfig], FocuserDriver] | None = None) -> None:
        """``driver_factory`` builds a driver from a configuration: with it, settings that apply on reconnect
        (port, baud, speed, ...) take effect at the next Connect, which rebuilds the driver from them."""
        self.device_number = device_number
        self.cfg = cfg
        self.driver = driver
        self.store = store
        self._driver_factory = driver_factory
        self._reconnect_cfg: FocuserConfig | None = None  # settings waiting for the next Connect
        self.unique_id = store.unique_id(device_number)
        #: Set by the settings page so a learned coefficient applied by Action("TempCompLearned", "apply") is
        #: also written to the config file: called as ``settings_writer(device_number, {key: value})``.
        self.settings_writer: Callable[[int, dict[str, Any]], None] | None = None
        self._lock = threading.Lock()
        self._connected = False
        self._pending: Future[None] | None = None  # the last Connect/Disconnect queued, if any
        self._pending_connect = False  # whether that one connects
        self._shutting_down = False
        self.engine = MotionEngine(driver, name=f"focuser{device_number}", settings=lambda: self.cfg,
                                   on_move_end=self._move_ended, on_tick=lambda status: self.focusing.on_tick(status))
        self.focusing = Focusing(device_number, lambda: self.cfg, self.engine, store, self.temp_comp)
        self.engine.start()

    # --- lifecycle ---------------------------------------------------------------------------------------------
    def halt_for_shutdown(self) -> None:
        """First step of shutdown: stop a moving motor. Separate from ``shutdown`` so a server with several
        focusers halts them all at once before waiting for any of them."""
        if self._shutting_down:
            return
        self._shutting_down = True
        try:
            status = self.driver.status()
            if status.connected and status.moving:
                log.warning("Focuser %d: halting the motor for shutdown", self.device_number)
                self.driver.halt()
        except Exception:
            log.exception("Focuser %d: halt at shutdown failed", self.device_number)

    def shutdown(self) -> None:
        """Halt a moving motor, save the position where it stopped, close the hardware. Used on SIGTERM."""
        self.halt_for_shutdown()
        # halt() only queues the command: wait (bounded) for the driver to see the motor stop, so the position
        # saved below is where it really stopped, not the last reading before the halt.
        deadline = time.monotonic() + SHUTDOWN_HALT_WAIT
        while self.driver.status().moving and time.monotonic() < deadline:
            time.sleep(0.02)
        self.engine.stop()
        self._save_position(None)
        try:
            self.driver.close()
        except Exception:
            log.exception("Focuser %d: closing the driver failed", self.device_number)

    def _move_ended(self, end: MoveEnd) -> None:
        self._save_position(end.position)
        self.focusing.on_move_end(end)

    def _save_position(self, position: int | None) -> None:
        """Save a motor position (the state file keeps the motor's frame; see state.py)."""
        if position is None:
            status = self.driver.status()
            if not status.connected or status.fault:
                return  # do not overwrite a good saved position with a stale one
            position = status.position
        self.store.save_position(self.device_number, position)

    # --- connection (common members) -----------------------------------------------------------------------------
    @property
    def reconnect_applies_settings(self) -> bool:
        """Whether settings marked "reconnect" take effect at the next Connect (else at the next start)."""
        return self._driver_factory is not None

    def _rebuild_driver(self) -> None:
        """Worker thread, while disconnected: a new driver from the settings saved for the next Connect."""
        with self._lock:
            pending, self._reconnect_cfg = self._reconnect_cfg, None
        if pending is None or self._driver_factory is None or self.driver.status().connected:
            return
        keys = [f.name for f in fields(FocuserConfig)
                if KEYS_BY_NAME[f.name].applies == RECONNECT and getattr(pending, f.name) != getattr(self.cfg, f.name)]
        if not keys:
            return
        try:
            driver = self._driver_factory(replace(self.cfg, **{key: getattr(pending, key) for key in keys}))
        except Exception as exc:
            with self._lock:
                self._reconnect_cfg = pending  # keep them for the next try
            raise DriverError(f"Cannot apply {', '.join(keys)} to {self.cfg.name}: {exc}") from exc
        old = self.driver
        with self.engine.lock:
            self.driver = self.engine.driver = driver
            self.cfg = replace(self.cfg, **{key: getattr(pending, key) for key in keys})
        try:
            old.close()
        except Exception:
            log.exception("Focuser %d: closing the previous driver failed", self.device_number)
        log.info("Focuser %d: connecting with the new %s", self.device_number,
                 ", ".join(f"{key} = {getattr(self.cfg, key)!r}" for key in keys))

    def _do_connect(self) -> None:
        self._rebuild_driver()
        try:
            self.driver.connect()
        except AscomError:
            raise
        except Exception as exc:  # a driver bug must still reach the client as a DriverException
            raise DriverError(f"Connecting {self.cfg.name} failed: {exc}") from exc
        status = self.driver.status()
        saved = self.store.position(self.device_number)
        if saved is not None and saved != status.position:
            log.warning("Focuser %d: the hardware reports position %d, the saved position was %d; using the "
                        "hardware's", self.device_number, status.position, saved)
        self.focusing.connected()
        with self._lock:
            self._connected = True
        cfg = self.cfg
        log.info("Focuser %d (%s) connected at position %d%s; %s", self.device_number, cfg.name,
                 self.engine.frame(cfg).to_client(status.position),
                 f" (motor {status.position})" if cfg.reverse else "",
                 settings_summary(cfg, self.driver.capabilities().has_temperature, self.focusing.comp.enabled))

    def _do_disconnect(self) -> None:
        self._save_position(None)
        with self._lock:
            self._connected = False
        self.engine.cancel("disconnected")
        self.focusing.disconnected()
        self.driver.disconnect()
        log.info("Focuser %d (%s) disconnected", self.device_number, self.cfg.name)

    def _start(self, connect: bool) -> Future[None]:
        """Queue a Connect or Disconnect unless it is already done or under way (both are idempotent)."""
        with self._lock:
            if self._pending is not None and not self._pending.done():
                if self._pending_connect == connect:
                    return self._pending
                # The opposite operation is under way: queue ours behind it (the worker runs jobs in order),
                # so Connect followed at once by Disconnect really ends disconnected.
            elif self._connected == connect:
                done: Future[None] = Future()
                done.set_result(None)
                return done
            job = self._do_connect if connect else self._do_disconnect
            self._pending_connect = connect
            self._pending = self.engine.submit(job)
            self._pending.add_done_callback(self._log_failure)
            return self._pending

    @staticmethod
    def _log_failure(future: Future[None]) -> None:
        exc = future.exception()
        if exc is not None:
            log.error("Connect/disconnect failed: %s", exc)

    def connected(self) -> bool:
        """True when the device is connected to its hardware."""
        with self._lock:
            return self._connected

    def set_connected(self, value: bool) -> None:
        """Connected=true/false: takes effect before the reply, unlike Connect()/Disconnect()."""
        # Two rounds at most: an opposite Connect/Disconnect may be under way; wait it out, then do ours.
        for _ in range(2):
            future = self._start(value)
            try:
                future.result(timeout=CONNECT_TIMEOUT)
            except FutureTimeout:
                raise DriverError(f"{'Connecting' if value else 'Disconnecting'} {self.cfg.name} did not finish "
                                  f"within {CONNECT_TIMEOUT:g} s") from None
            except AscomError:
                if self.connected() != value:
                    raise
            if self.connected() == value:
                return

    def connect(self) -> None:
        """Connect asynchronously; Connecting is true until it has finished."""
        self._start(True)

    def disconnect(self) -> None:
        """Disconnect asynchronously; Connecting is true until it has finished. Does not halt the motor."""
        self._start(False)

    def connecting(self) -> bool:
        """True while a Connect() or Disconnect() is in progress."""
        with self._lock:
            return self._pending is not None and not self._pending.done()

    # --- identity (common members) -------------------------------------------------------------------------------
    def name(self) -> str:
        return self.cfg.name

    def description(self) -> str:
        """Description of the device (not the driver), at most 64 characters for FITS headers."""
        text = self.cfg.description
        if not text:
            # A serial driver names its controller and port, and the firmware once connected (with driver = "auto":
            # the controller that answered the probe).
            text = "Simulated focuser" if self.cfg.driver == "simulator" else self.driver.capabilities().description
        return text[:64]

    def driver_info(self) -> str:
        return (f"alpaca-focuser {__version__}: ASCOM Alpaca focuser server (IFocuserV4), "
                f"{self.cfg.driver} driver. MIT licence.")

    def driver_version(self) -> str:
        return DRIVER_VERSION

    def interface_version(self) -> int:
        return INTERFACE_VERSION

    # --- actions ---------------------------------------------------------------------------------------------
    def supported_actions(self) -> list[str]:
        return actions.supported(self)

    def action(self, name: str, parameters: str) -> str:
        """The actions in SupportedActions (see ``actions.py``). Action names are case-insensitive."""
        return actions.run(self, name, parameters)

    def sync_position(self, position: int) -> int:
        """Declare the current position (client frame) to be ``position`` without moving. Resets the temperature
        compensation reference."""
        self._require_connection("Action SyncPosition")
        cfg = self.cfg
        if not 0 <= position <= cfg.max_step:
            raise InvalidValueError(f"SyncPosition {position} is outside 0..{cfg.max_step} (MaxStep)")
        with self.engine.lock:
            if self.engine.is_moving(self._status()):
                raise InvalidOperationError("SyncPosition is not allowed while the focuser is moving")
            motor = self.engine.frame(cfg).to_motor(position)
            self.driver.sync(motor)
        self.store.save_position(self.device_number, motor)
        self.focusing.synced()
        log.info("Focuser %d: position synced to %d%s", self.device_number, position,
                 f" (motor {motor})" if cfg.reverse else "")
        return position

    # --- live settings -------------------------------------------------------------------------------------------
    def apply_settings(self, new_cfg: FocuserConfig) -> list[str]:
        """Make ``new_cfg`` this focuser's running configuration (swapped whole, atomically); returns the keys
        whose running value changed.

        Everything derived follows at once, because it reads the configuration at the time of use: the motion
        limits, reverse, backlash, settle, compensation parameters and the averaging window. A key marked
        ``unsafe_while_moving`` (MaxStep, Absolute, Reverse) may only change while the focuser is still:
        InvalidOperationError otherwise, and nothing changes. A MaxStep beyond what the connected hardware can
        reach (a myFocuserPro2's own MaxStep, say) is refused with InvalidValueError: Move would clamp to a limit
        the motor cannot reach. Keys that apply only on reconnect or restart
        (driver, port, speed, ...) keep their running value, since the driver was built from it; they are logged
        as waiting and not returned; with a driver factory, those marked "reconnect" are kept for the next Connect,
        which rebuilds the driver from them.
        """
        with self.engine.lock:  # no Move can start between the check and the swap
            old = self.cfg
            differ = [f.name for f in fields(FocuserConfig) if getattr(old, f.name) != getattr(new_cfg, f.name)]
            changed = [key for key in differ if KEYS_BY_NAME[key].applies == LIVE]
            unsafe = [key for key in changed if KEYS_BY_NAME[key].unsafe_while_moving]
            status = self.driver.status()
            if unsafe and self.engine.is_moving(status):
                raise InvalidOperationError(f"{', '.join(unsafe)} cannot change while the focuser is moving; "
                                            f"Halt it or wait until it stops")
            reach = self.driver.capabilities().max_position
            if "max_step" in changed and new_cfg.absolute and status.connected and new_cfg.max_step > reach:
                raise InvalidValueError(f"max_step {new_cfg.max_step} is beyond what the connected controller can "
                                        f"reach ({reach}); lower it, or change the controller's own limit and "
                                        f"reconnect")
            self.cfg = replace(old, **{key: getattr(new_cfg, key) for key in changed})
            reconnect = [key for key in differ if KEYS_BY_NAME[key].applies == RECONNECT]
            if self._driver_factory is not None:
                with self._lock:
                    self._reconnect_cfg = new_cfg if reconnect else None
        for key in changed:
            log.info("Focuser %d: setting %s changed from %r to %r", self.device_number, key, getattr(old, key),
                     getattr(new_cfg, key))
        later = [key for key in reconnect if self._driver_factory is not None]
        if later:
            log.info("Focuser %d: %s take effect at the next Connect", self.device_number, ", ".join(later))
        waiting = [key for key in differ if key not in changed and key not in later]
        if waiting:
            log.info("Focuser %d: %s take effect at the next start, not now", self.device_number, ", ".join(waiting))
        if changed:
            log.info("Focuser %d: now %s", self.device_number,
                     settings_summary(self.cfg, self._has_temperature(), self.focusing.comp.enabled))
        return changed

    def command_blind(self, command: str, raw: bool) -> None:
        raise NotImplementedAscomError("CommandBlind is not implemented (deprecated in ASCOM)")

    def command_bool(self, command: str, raw: bool) -> bool:
        raise NotImplementedAscomError("CommandBool is not implemented (deprecated in ASCOM)")

    def command_string(self, command: str, raw: bool) -> str:
        raise NotImplementedAscomError("CommandString is not implemented (deprecated in ASCOM)")

    # --- focuser members -----------------------------------------------------------------------------------------
    def _require_connection(self, member: str) -> None:
        if not self.connected():
            raise NotConnectedError(f"{member}: focuser {self.device_number} ({self.cfg.name}) is not connected")

    def _status(self) -> DriverStatus:
        """The hardware snapshot, or a DriverException that says what is wrong with the hardware."""
        status = self.driver.status()
        if status.fault:
            raise DriverError(status.fault, status.fault_number)
        return status

    def absolute(self) -> bool:
        """True: Move() takes an absolute step position; False: a relative step distance."""
        return self.cfg.absolute

    def is_moving(self) -> bool:
        """True from the moment Move() returns until the motor has stopped after the last backlash leg and the
        settle period has passed."""
        return self.engine.is_moving(self._status())

    def max_increment(self) -> int:
        return self.cfg.max_increment

    def max_step(self) -> int:
        return self.cfg.max_step

    def position(self) -> int:
        """Current position in steps. Relative focusers have no position: NotImplemented."""
        if not self.cfg.absolute:
            raise NotImplementedAscomError("Position is not available: this is a relative focuser")
        return self.engine.client_position(self._status())

    def step_size(self) -> float:
        if self.cfg.step_size is None:
            raise NotImplementedAscomError("StepSize is not known for this focuser (set step_size in config)")
        return self.cfg.step_size

    def _has_temperature(self) -> bool:
        return self.driver.capabilities().has_temperature

    def temp_comp_available(self) -> bool:
        """From the config, or, when it leaves it unset, whether the hardware has a temperature sensor (known
        once connected)."""
        configured = self.cfg.temp_comp_available
        return self._has_temperature() if configured is None else configured

    def temp_comp(self) -> bool:
        """Always False when compensation is unavailable."""
        return self.focusing.comp.enabled and self.temp_comp_available()

    def set_temp_comp(self, value: bool) -> None:
        """Switch compensation on or off (remembered across restarts). Switching on, or setting it true again
        after a Halt, takes a new reference: the current position at the current averaged temperature."""
        if not self.temp_comp_available():
            if value:
                raise NotImplementedAscomError("Temperature compensation is not available on this focuser")
            return
        was = self.temp_comp()
        self.focusing.switch(value)
        if value != was:
            log.info("Focuser %d: temperature compensation %s", self.device_number, "on" if value else "off")

    @property
    def temp_comp_corrections(self) -> int:
        """Compensation moves made since start."""
        return self.focusing.comp.corrections

    def temp_comp_events(self) -> list[dict[str, Any]]:
        """The recent compensation moves (the last 200), oldest first: ``{"time": unix seconds, "temperature":
        averaged deg C, "delta_c": deg C since the reference, "steps": this move, "target": client position}``."""
        return self.focusing.comp.events()

    def averaged_temperature(self) -> float | None:
        """The temperature averaged over ``temp_comp_window_s``, as compensation sees it; None before a reading."""
        return self.focusing.average()

    def temperature(self) -> float:
        if not self.driver.capabilities().has_temperature:
            raise NotImplementedAscomError("This focuser has no temperature sensor")
        value = self._status().temperature
        if value is None:
            raise DriverError("No temperature reading from the focuser yet")
        return value

    def halt(self) -> None:
        """Immediately stop any focuser motion due to a previous Move(), including a backlash leg and the settle
        period. Temperature compensation pauses until the next Move or TempComp switch."""
        self._status()
        self.engine.halt()
        self.focusing.halted()

    def move(self, position: int) -> None:
        """Start a move (absolute position, or relative step distance). Returns at once with IsMoving true.
        Allowed while TempComp is true (IFocuserV3 and later); its end becomes the new compensation reference."""
        self._status()
        self.engine.move(position)

    def device_state(self) -> list[dict[str, Any]]:
        """IsMoving, Position (absolute focusers), Temperature (with a sensor) and TimeStamp, in one snapshot."""
        status = self._status()
        state: list[dict[str, Any]] = [{"Name": "IsMoving", "Value": self.engine.is_moving(status)}]
        if self.cfg.absolute:
            state.append({"Name": "Position", "Value": self.engine.client_position(status)})
        if self.driver.capabilities().has_temperature and status.temperature is not None:
            state.append({"Name": "Temperature", "Value": float(status.temperature)})
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        state.append({"Name": "TimeStamp", "Value": stamp})
        return state
