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
from datetime import datetime, timezone
from typing import Any

from alpaca_focuser import __version__
from alpaca_focuser.config import FocuserConfig
from alpaca_focuser.drivers.base import DriverStatus, FocuserDriver
from alpaca_focuser.errors import (
    ActionNotImplementedError,
    AscomError,
    DriverError,
    InvalidOperationError,
    InvalidValueError,
    NotConnectedError,
    NotImplementedAscomError,
)
from alpaca_focuser.focuser.motion import MotionEngine
from alpaca_focuser.state import StateStore

log = logging.getLogger(__name__)

INTERFACE_VERSION = 4
DRIVER_VERSION = ".".join(__version__.split(".")[:2])  # ASCOM wants "n.n"
SHUTDOWN_HALT_WAIT = 1.5  # seconds to wait for a halted motor to report stopped before saving its position
CONNECT_TIMEOUT = 25.0  # seconds a Connected=true PUT waits: longer than the Moonlite driver's own worst case (~18 s)


class FocuserDevice:
    """One configured focuser: device number, identity, connection state and motion."""

    def __init__(self, device_number: int, cfg: FocuserConfig, driver: FocuserDriver, store: StateStore) -> None:
        self.device_number = device_number
        self.cfg = cfg
        self.driver = driver
        self.store = store
        self.unique_id = store.unique_id(device_number)
        self._lock = threading.Lock()
        self._connected = False
        self._pending: Future[None] | None = None  # the last Connect/Disconnect queued, if any
        self._pending_connect = False  # whether that one connects
        self._temp_comp = False
        self._shutting_down = False
        self.engine = MotionEngine(driver, name=f"focuser{device_number}", max_step=cfg.max_step,
                                   max_increment=cfg.max_increment, absolute=cfg.absolute,
                                   on_move_end=self._save_position)
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

    def _save_position(self, position: int | None) -> None:
        if position is None:
            status = self.driver.status()
            if not status.connected or status.fault:
                return  # do not overwrite a good saved position with a stale one
            position = status.position
        self.store.save_position(self.device_number, position)

    # --- connection (common members) -----------------------------------------------------------------------------
    def _do_connect(self) -> None:
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
        with self._lock:
            self._connected = True
        log.info("Focuser %d (%s) connected at position %d", self.device_number, self.cfg.name, status.position)

    def _do_disconnect(self) -> None:
        self._save_position(None)
        with self._lock:
            self._connected = False
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
    SUPPORTED_ACTIONS = ("SyncPosition",)

    def supported_actions(self) -> list[str]:
        return list(self.SUPPORTED_ACTIONS)

    def action(self, name: str, parameters: str) -> str:
        """SyncPosition: declare the current position to be <Parameters> (an integer) without moving, e.g.
        after the drawtube was moved by hand. Action names are case-insensitive."""
        if name.lower() != "syncposition":
            raise ActionNotImplementedError(f"Action {name!r} is not supported; SupportedActions lists "
                                            f"{', '.join(self.SUPPORTED_ACTIONS)}")
        self._require_connection("Action SyncPosition")
        try:
            position = int(parameters.strip())
        except ValueError:
            raise InvalidValueError(f"SyncPosition needs an integer position in Parameters, got {parameters!r}") \
                from None
        if not 0 <= position <= self.cfg.max_step:
            raise InvalidValueError(f"SyncPosition {position} is outside 0..{self.cfg.max_step} (MaxStep)")
        if self._status().moving:
            raise InvalidOperationError("SyncPosition is not allowed while the focuser is moving")
        self.driver.sync(position)
        self.store.save_position(self.device_number, position)
        return str(position)

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
        """True from the moment Move() returns until the motor has stopped."""
        return self._status().moving

    def max_increment(self) -> int:
        return self.cfg.max_increment

    def max_step(self) -> int:
        return self.cfg.max_step

    def position(self) -> int:
        """Current position in steps. Relative focusers have no position: NotImplemented."""
        if not self.cfg.absolute:
            raise NotImplementedAscomError("Position is not available: this is a relative focuser")
        return self._status().position

    def step_size(self) -> float:
        if self.cfg.step_size is None:
            raise NotImplementedAscomError("StepSize is not known for this focuser (set step_size in config)")
        return self.cfg.step_size

    def temp_comp_available(self) -> bool:
        return self.cfg.temp_comp_available

    def temp_comp(self) -> bool:
        """Always False when compensation is unavailable."""
        return self._temp_comp and self.cfg.temp_comp_available

    def set_temp_comp(self, value: bool) -> None:
        if not self.cfg.temp_comp_available:
            if value:
                raise NotImplementedAscomError("Temperature compensation is not available on this focuser")
            return
        self._temp_comp = value
        log.info("Focuser %d: temperature compensation %s", self.device_number, "on" if value else "off")

    def temperature(self) -> float:
        if not self.driver.capabilities().has_temperature:
            raise NotImplementedAscomError("This focuser has no temperature sensor")
        value = self._status().temperature
        if value is None:
            raise DriverError("No temperature reading from the focuser yet")
        return value

    def halt(self) -> None:
        """Immediately stop any focuser motion due to a previous Move()."""
        self._status()
        self.engine.halt()

    def move(self, position: int) -> None:
        """Start a move (absolute position, or relative step distance). Returns at once with IsMoving true.
        Allowed while TempComp is true (IFocuserV3 and later)."""
        self._status()
        self.engine.move(position)

    def device_state(self) -> list[dict[str, Any]]:
        """IsMoving, Position (absolute focusers), Temperature (with a sensor) and TimeStamp, in one snapshot."""
        status = self._status()
        state: list[dict[str, Any]] = [{"Name": "IsMoving", "Value": status.moving}]
        if self.cfg.absolute:
            state.append({"Name": "Position", "Value": status.position})
        if self.driver.capabilities().has_temperature and status.temperature is not None:
            state.append({"Name": "Temperature", "Value": float(status.temperature)})
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        state.append({"Name": "TimeStamp", "Value": stamp})
        return state

    # --- settings (the settings page's minimal version) ----------------------------------------------------------
    # The focusing features replace this method with their own of the same signature; the page calls only it.
    def apply_settings(self, new_cfg: FocuserConfig) -> list[str]:
        """Swap in a new ``[[focuser]]`` configuration and return the keys that changed.

        Keys that apply live (name, limits, step size, compensation settings) take effect at once; the motion
        engine gets the new limits. Keys that need a reconnect or a restart keep their running value here: the
        driver was built from them. Raises InvalidOperationError, changing nothing, when a key that is unsafe while
        moving (max_step, absolute) changes while the focuser moves."""
        from dataclasses import fields, replace

        from alpaca_focuser.config import KEYS_BY_NAME, LIVE

        changed = [f.name for f in fields(FocuserConfig) if getattr(new_cfg, f.name) != getattr(self.cfg, f.name)]
        unsafe = [k for k in changed if k in KEYS_BY_NAME and KEYS_BY_NAME[k].unsafe_while_moving]
        live = {k: getattr(new_cfg, k) for k in changed if k in KEYS_BY_NAME and KEYS_BY_NAME[k].applies == LIVE}
        with self.engine._lock:  # no Move is being planned against the old limits while they change
            if unsafe and self.driver.status().moving:
                raise InvalidOperationError(f"{', '.join(unsafe)} cannot change while the focuser is moving; "
                                            f"halt it or wait until it stops")
            self.cfg = replace(self.cfg, **live)
            self.engine.max_step = self.cfg.max_step
            self.engine.max_increment = self.cfg.max_increment
            self.engine.absolute = self.cfg.absolute
        if changed:
            log.info("Focuser %d: settings changed: %s", self.device_number, ", ".join(changed))
        return changed
