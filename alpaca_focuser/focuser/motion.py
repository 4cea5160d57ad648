"""The motion engine: one per focuser, with its own worker thread.

It owns the rules between a client's Move and the hardware: clamping to 0..MaxStep, the MaxIncrement check,
relative moves, the client's frame against the motor's (``reverse``), backlash legs, the settle period, Halt,
and noticing when a move has ended so the position is saved. Requests call ``move`` and ``halt``, which only
compute and hand the first command to the driver's queue; they never wait on hardware. The worker issues the
following legs and times the settle period. Blocking work (connect, disconnect) runs as jobs on the worker
thread, so request threads only ever wait on a future.

Settings are read from the focuser's current configuration each time they are used, so a change made on a
running server (``FocuserDevice.apply_settings``) applies to the next move without restarting anything.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from alpaca_focuser.config import FocuserConfig
from alpaca_focuser.drivers.base import DriverStatus, FocuserDriver
from alpaca_focuser.errors import DriverError, InvalidValueError
from alpaca_focuser.focuser.moves import Frame, describe_legs, plan_legs

log = logging.getLogger(__name__)

T = TypeVar("T")

IDLE_TICK = 0.1  # seconds between checks while nothing runs; cheap enough for a Pi Zero
ACTIVE_TICK = 0.02  # while a move runs: the gap between backlash legs and the settle's start stay small

CLIENT, TEMP_COMP = "client", "temperature compensation"


@dataclass
class _Sequence:
    """A move under way: the legs still to issue (motor positions) and the settle period after them."""

    kind: str  # CLIENT or TEMP_COMP
    target: int  # the client-frame target, for the log
    final: int  # the motor position the last leg ends on
    serial: int  # ``client_actions`` when it started
    legs: deque[int] = field(default_factory=deque)
    moved: bool = True  # False for a move to where the focuser already is: nothing to settle
    settle_until: float | None = None  # monotonic deadline once the motor has stopped after the last leg


@dataclass(frozen=True)
class MoveEnd:
    """What the worker reports when the motor has come to rest."""

    kind: str | None  # CLIENT or TEMP_COMP for a move that ran to its end; None after a Halt or a failure
    position: int  # motor frame
    completed: bool  # True when the last leg ended on its target and the settle period has passed
    serial: int = 0  # ``client_actions`` when the move started: a later client Move or Halt makes it stale


class MotionEngine:
    def __init__(self, driver: FocuserDriver, *, name: str, settings: Callable[[], FocuserConfig],
                 on_move_end: Callable[[MoveEnd], None],
                 on_tick: Callable[[DriverStatus], None] | None = None) -> None:
        self.driver = driver
        self._settings = settings
        self._on_move_end = on_move_end
        self._on_tick = on_tick
        self.lock = threading.RLock()  # serialises move/halt/settings decisions against each other
        self._jobs: queue.Queue[tuple[Callable[[], object], Future[object]] | None] = queue.Queue()
        self._sequence: _Sequence | None = None
        self._was_moving = False
        #: Client Moves and Halts so far. Whoever acts on a MoveEnd later (the learned pairs) compares serials,
        #: so a report that raced with a newer client command is recognised as stale.
        self.client_actions = 0
        self._stopping = threading.Event()
        self.name = f"motion-{name}"
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    # --- settings, read at the time of use ---------------------------------------------------------------------
    @property
    def max_step(self) -> int:
        return self._settings().max_step

    @property
    def max_increment(self) -> int:
        return self._settings().max_increment

    @property
    def absolute(self) -> bool:
        return self._settings().absolute

    def frame(self, cfg: FocuserConfig | None = None) -> Frame:
        cfg = cfg or self._settings()
        span = cfg.max_step if cfg.absolute else self.driver.capabilities().max_position
        return Frame(span, cfg.reverse)

    def client_position(self, status: DriverStatus) -> int:
        return self.frame().to_client(status.position)

    # --- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        self._stopping.set()
        self._jobs.put(None)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def submit(self, job: Callable[[], T]) -> Future[T]:
        """Run blocking work (connect, disconnect) on the worker thread, in order."""
        future: Future[T] = Future()
        if self._stopping.is_set():
            future.set_exception(DriverError("The server is shutting down"))
            return future
        self._jobs.put((job, future))  # type: ignore[arg-type]
        return future

    # --- state ---------------------------------------------------------------------------------------------------
    def busy(self) -> bool:
        """True while a move of ours is under way: a leg, the gap between legs, or the settle period."""
        sequence = self._sequence
        if sequence is None or not (sequence.moved or sequence.legs):
            return False  # a move to where the focuser stands: only the driver's own report counts
        if sequence.settle_until is not None:
            return time.monotonic() < sequence.settle_until
        return True

    def is_moving(self, status: DriverStatus) -> bool:
        """IsMoving: the motor turns, or a move of ours has legs or settle time left."""
        return status.moving or self.busy()

    def idle(self, status: DriverStatus) -> bool:
        """Nothing moves and nothing is pending: the only state in which compensation may start a move."""
        return self._sequence is None and not status.moving and not self._was_moving

    # --- requests ------------------------------------------------------------------------------------------------
    def target_for(self, requested: int, current: int, cfg: FocuserConfig | None = None) -> int:
        """The target (client frame) a Move(requested) from ``current`` means, after the IFocuserV4 rules.

        Absolute: "the Position parameter ... is an integer between 0 and MaxStep"; beyond the limits the
        focuser "will automatically stop at the limit", so we clamp without error. A move of more than
        MaxIncrement steps (measured after clamping) is refused. Relative: a step distance in
        -MaxIncrement..+MaxIncrement, limited only by the hardware's step counter.
        """
        cfg = cfg or self._settings()
        if cfg.absolute:
            target = min(max(requested, 0), cfg.max_step)
            distance = abs(target - current)
            if distance > cfg.max_increment:
                raise InvalidValueError(
                    f"Move to {requested} is {distance} steps from the current position {current}; "
                    f"MaxIncrement is {cfg.max_increment} steps")
            return target
        if abs(requested) > cfg.max_increment:
            raise InvalidValueError(
                f"Relative move of {requested} steps is outside -{cfg.max_increment}..+{cfg.max_increment} "
                f"(MaxIncrement)")
        # A relative focuser has no 0..MaxStep frame: only the hardware's own counter limits the travel.
        return min(max(current + requested, 0), self.frame(cfg).span)

    def move(self, requested: int) -> int:
        """Start (or retarget) a client move; returns at once with the driver reporting motion. Returns the
        client-frame target. A move under way (a leg, the settle period) is replaced, and the new one gets its
        own backlash handling from wherever the motor is now."""
        with self.lock:
            cfg = self._settings()
            status = self.driver.status()
            current = self.frame(cfg).to_client(status.position)
            target = self.target_for(requested, current, cfg)
            self._start(CLIENT, current, target, cfg, f"requested {requested}")
            self.client_actions += 1
            if self._sequence is not None:
                self._sequence.serial = self.client_actions
            return target

    def correct(self, target: int, expected_from: int) -> bool:
        """Start a temperature-compensation move to ``target`` (client frame, clamped), but only if the focuser
        is still idle at ``expected_from``: a client Move that got in first always wins. True if started."""
        with self.lock:
            cfg = self._settings()
            status = self.driver.status()
            frame = self.frame(cfg)
            current = frame.to_client(status.position)
            if not self.idle(status) or not status.connected or status.fault or current != expected_from:
                return False
            target = min(max(target, 0), frame.span)
            if target == current:
                return False
            self._start(TEMP_COMP, current, target, cfg, "compensation")
            return True

    def _start(self, kind: str, current: int, target: int, cfg: FocuserConfig, why: str) -> None:
        frame = self.frame(cfg)
        legs = plan_legs(current, target, cfg.backlash_steps, cfg.backlash_direction, 0, frame.span)
        motor_legs = [frame.to_motor(p) for p in legs]
        self.driver.move_to(motor_legs[0])  # raises before anything changes when the hardware cannot move
        replaced = self._sequence is not None
        self._sequence = _Sequence(kind, target, motor_legs[-1], self.client_actions, deque(motor_legs[1:]),
                                   moved=target != current or len(legs) > 1)
        self._was_moving = True
        if len(legs) > 1:
            log.info("%s: %s to %d (%s, from %d): backlash %d steps, final approach %s: %s", self.name,
                     "retarget" if replaced else kind + " move", target, why, current, cfg.backlash_steps,
                     cfg.backlash_direction, describe_legs(legs, frame))
        else:
            log.info("%s: %s to %d (%s, from %d)%s", self.name, "retarget" if replaced else kind + " move",
                     target, why, current, f" (motor {motor_legs[0]})" if cfg.reverse else "")

    def halt(self) -> None:
        """Stop at once; cancels any remaining backlash leg and the settle period."""
        with self.lock:
            sequence, self._sequence = self._sequence, None
            self.client_actions += 1
            self.driver.halt()
            self._was_moving = True  # so the worker notices the stop and saves the position
            if sequence is not None and (sequence.legs or sequence.settle_until is not None):
                log.info("%s: halt (%s cancelled)", self.name,
                         "backlash leg" if sequence.legs else "settle period")
            else:
                log.info("%s: halt", self.name)

    def cancel(self, reason: str) -> None:
        """Forget the remaining legs and settle time without stopping the motor (e.g. on Disconnect, which
        does not stop a running move)."""
        with self.lock:
            if self._sequence is not None:
                log.info("%s: remaining legs and settle time dropped: %s", self.name, reason)
                self._sequence = None

    # --- worker thread -------------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                item = self._jobs.get(timeout=ACTIVE_TICK if self._sequence is not None else IDLE_TICK)
            except queue.Empty:
                pass  # nothing queued: just look at the motion below
            else:
                if item is None:
                    break
                job, future = item
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(job())
                    except BaseException as exc:  # handed to whoever waits on the future
                        future.set_exception(exc)
            try:
                with self.lock:  # a Move between reading status and acting on it must not be lost
                    status = self.driver.status()
                    ended = self._advance(status)
                if ended is not None:
                    self._on_move_end(ended)  # disk I/O, outside the lock so Move never waits on it
                if self._on_tick is not None:
                    self._on_tick(status)
            except Exception:
                log.exception("%s: unexpected error while watching motion", self.name)
        # Shutdown: fail jobs nobody will run, so no request waits forever.
        while True:
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                break
            if item:
                item[1].set_exception(DriverError("The server is shutting down"))

    def _advance(self, status: DriverStatus) -> MoveEnd | None:
        """One step of the state machine (lock held): the next leg, the settle period, or the end of a move."""
        sequence = self._sequence
        if not status.connected or status.fault:
            if sequence is not None:
                log.warning("%s: %s move to %d abandoned: %s", self.name, sequence.kind, sequence.target,
                            status.fault or "disconnected")
                self._sequence = None
            return None
        if status.moving:
            self._was_moving = True
            return None
        if sequence is not None:
            if sequence.legs:
                leg = sequence.legs.popleft()
                try:
                    self.driver.move_to(leg)
                except DriverError as exc:
                    log.warning("%s: backlash leg to motor %d failed: %s", self.name, leg, exc)
                    self._sequence = None
                    return None
                log.info("%s: backlash leg: back to %d", self.name, sequence.target)
                return None
            cfg = self._settings()
            now = time.monotonic()
            if sequence.settle_until is None and sequence.moved and cfg.settle_ms > 0:
                sequence.settle_until = now + cfg.settle_ms / 1000.0
                log.debug("%s: settling for %d ms at %d", self.name, cfg.settle_ms, sequence.target)
                return None
            if sequence.settle_until is not None and now < sequence.settle_until:
                return None
            self._sequence = None
            self._was_moving = False
            completed = status.position == sequence.final
            log.info("%s: %s move %s at %d", self.name, sequence.kind, "ended" if completed else "stopped short",
                     self.frame(cfg).to_client(status.position))
            return MoveEnd(sequence.kind if completed else None, status.position, completed, sequence.serial)
        if not self._was_moving:
            return None
        self._was_moving = False
        log.info("%s: stopped at %d", self.name, self.frame().to_client(status.position))
        return MoveEnd(None, status.position, False)
