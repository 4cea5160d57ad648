"""The small interface every focuser hardware driver implements.

Contract (what the focuser layer relies on):

* ``connect()`` and ``disconnect()`` may block (opening a port, a handshake). They are only ever called from the
  device's own worker thread, never from an HTTP request thread. ``connect()`` raises ``DriverError`` with a
  message a user can act on; it is idempotent. ``disconnect()`` never raises and does not halt the motor.
* Every other method returns at once and never does I/O on the caller's thread: ``status()`` returns the
  latest snapshot; ``move_to()``, ``halt()`` and ``sync()`` queue a command for the thread that owns the hardware.
* After ``move_to()`` returns, ``status().moving`` is True until the motor has really stopped after that move
  (for serial hardware: until a poll made after the move was started reports it stopped). ``halt()`` makes
  ``moving`` go False once the motor has stopped, with ``position`` where it stopped.
* A driver that loses its hardware raises nothing from ``status()``; it reports ``fault`` (a user-readable
  message) and ``connected`` False or True as appropriate, and recovers by itself where it can.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class DriverCapabilities:
    """What the hardware can do, known once connected."""

    max_position: int  # the highest position the hardware can represent (65535 for Moonlite)
    has_temperature: bool
    description: str  # e.g. "Moonlite-compatible focuser, firmware 10"


@dataclass(frozen=True)
class DriverStatus:
    """A consistent snapshot of the hardware state, as last read by the driver's owner thread."""

    connected: bool
    position: int
    moving: bool
    temperature: float | None = None  # degrees C; None when there is no sensor or no reading yet
    fault: str | None = None  # a user-readable message while the hardware is failing, else None
    fault_number: int = 0x500  # the ASCOM DriverException number that goes with ``fault``
    updated: float = field(default_factory=time.monotonic)  # monotonic time of the reading


class FocuserDriver(abc.ABC):
    """Hardware behind one focuser device. See the module docstring for the threading contract."""

    #: Short identifier used in config (``driver = "..."``) and logs.
    kind: str = "abstract"

    @abc.abstractmethod
    def connect(self) -> None:
        """Open the hardware and read its state. Blocking; worker thread only. Raises DriverError."""

    @abc.abstractmethod
    def disconnect(self) -> None:
        """Close the hardware cleanly. Blocking; worker thread only. Does not halt the motor. Never raises."""

    @abc.abstractmethod
    def status(self) -> DriverStatus:
        """The latest snapshot. Non-blocking, no I/O."""

    @abc.abstractmethod
    def capabilities(self) -> DriverCapabilities:
        """What the hardware can do. Non-blocking."""

    @abc.abstractmethod
    def move_to(self, target: int) -> None:
        """Start (or retarget) a move to an absolute step ``target``. Non-blocking. Raises DriverError when
        not connected or faulted."""

    @abc.abstractmethod
    def halt(self) -> None:
        """Stop the motor as soon as possible, keeping the position. Non-blocking; jumps any queue."""

    @abc.abstractmethod
    def sync(self, position: int) -> None:
        """Declare the current position to be ``position`` without moving. Non-blocking."""

    def close(self) -> None:
        """Release everything at shutdown (threads, ports). Default: disconnect."""
        self.disconnect()
