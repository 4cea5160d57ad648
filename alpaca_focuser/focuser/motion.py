"""The motion engine: one per focuser, with its own worker thread.

It owns the rules between a client's Move and the hardware: clamping to 0..MaxStep, the MaxIncrement check,
relative moves, Halt, and noticing when a move has ended so the position is saved. Requests call ``move`` and
``halt``, which only compute and hand a command to the driver's queue; they never wait on hardware. Blocking
work (connect, disconnect) runs as jobs on the worker thread, so request threads only ever wait on a future.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from typing import Callable, TypeVar

from alpaca_focuser.drivers.base import DriverStatus, FocuserDriver
from alpaca_focuser.errors import DriverError, InvalidValueError

log = logging.getLogger(__name__)

T = TypeVar("T")

IDLE_TICK = 0.1  # seconds between checks for the end of a move; cheap enough for a Pi Zero


class MotionEngine:
    def __init__(self, driver: FocuserDriver, *, name: str, max_step: int, max_increment: int, absolute: bool,
                 on_move_end: Callable[[int], None]) -> None:
        self.driver = driver
        self.max_step = max_step
        self.max_increment = max_increment
        self.absolute = absolute
        self._on_move_end = on_move_end
        self._lock = threading.Lock()  # serialises move/halt decisions against each other
        self._jobs: queue.Queue[tuple[Callable[[], object], Future[object]] | None] = queue.Queue()
        self._was_moving = False
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"motion-{name}", daemon=True)

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

    # --- requests ------------------------------------------------------------------------------------------------
    def target_for(self, requested: int, current: int) -> int:
        """The absolute target a Move(requested) means, after the IFocuserV4 rules.

        Absolute: "the Position parameter ... is an integer between 0 and MaxStep"; beyond the limits the
        focuser "will automatically stop at the limit", so we clamp without error. A move of more than
        MaxIncrement steps (measured after clamping) is refused. Relative: a step distance in
        -MaxIncrement..+MaxIncrement, limited only by the hardware's step counter.
        """
        if self.absolute:
            target = min(max(requested, 0), self.max_step)
            distance = abs(target - current)
            if distance > self.max_increment:
                raise InvalidValueError(
                    f"Move to {requested} is {distance} steps from the current position {current}; "
                    f"MaxIncrement is {self.max_increment} steps")
            return target
        if abs(requested) > self.max_increment:
            raise InvalidValueError(
                f"Relative move of {requested} steps is outside -{self.max_increment}..+{self.max_increment} "
                f"(MaxIncrement)")
        # A relative focuser has no 0..MaxStep frame: only the hardware's own counter limits the travel.
        return min(max(current + requested, 0), self.driver.capabilities().max_position)

    def move(self, requested: int) -> int:
        """Start (or retarget) a move; returns at once with the driver reporting motion. Returns the target."""
        with self._lock:
            status = self.driver.status()
            target = self.target_for(requested, status.position)
            self.driver.move_to(target)
            self._was_moving = True
            log.info("%s: move to %d (requested %d, from %d)", self._thread.name, target, requested,
                     status.position)
            return target

    def halt(self) -> None:
        with self._lock:
            self.driver.halt()
            log.info("%s: halt", self._thread.name)

    # --- worker thread -------------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                item = self._jobs.get(timeout=IDLE_TICK)
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
                with self._lock:  # a Move between reading status and clearing _was_moving must not be lost
                    ended_at = self._move_ended(self.driver.status())
                if ended_at is not None:
                    self._on_move_end(ended_at)  # disk I/O, outside the lock so Move never waits on it
            except Exception:
                log.exception("%s: unexpected error while watching motion", self._thread.name)
        # Shutdown: fail jobs nobody will run, so no request waits forever.
        while True:
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                break
            if item:
                item[1].set_exception(DriverError("The server is shutting down"))

    def _move_ended(self, status: DriverStatus) -> int | None:
        """The position where a move just ended, or None."""
        if status.moving or not status.connected or status.fault:
            if status.moving:
                self._was_moving = True
            return None
        if not self._was_moving:
            return None
        self._was_moving = False
        log.info("%s: stopped at %d", self._thread.name, status.position)
        return status.position
