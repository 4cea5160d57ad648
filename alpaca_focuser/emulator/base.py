"""What a firmware state machine offers the pty link: one link (pty_link.py) serves every protocol.

A firmware does no I/O and starts no threads. The link feeds it the bytes the host writes, sends what it answers
(paced like a real line and USB adapter if asked), calls ``boot`` whenever the host opens the port (an Arduino or
ESP32 resets on DTR), and timestamps each command as it completes (``commands`` grows by one per command, and the
link notes the arrival time of the chunk that finished it). A firmware that reboots on open models its own deaf
boot window (the link's ``boot_delay`` is a simpler stand-in for firmwares that do not). A firmware may declare its
line speed as an int ``baud`` attribute: the link then understands the client only at that speed.
"""

from __future__ import annotations

from typing import Protocol


class Firmware(Protocol):
    """A focuser controller's firmware as a state machine driven by raw protocol bytes."""

    #: Every command received, in order of arrival, as text (``"SN1A2B"``). Only ever appended to.
    commands: list[str]

    def feed_replies(self, data: bytes) -> list[bytes]:
        """Process received bytes; return the reply of each completed command that has one, in order."""
        ...

    def reset_input(self) -> None:
        """Forget a partial command (what a reset does to the receive buffer)."""
        ...

    def boot(self) -> bytes:
        """The port was opened and the board reset: reset volatile state, and return what the board prints while
        it boots (an ESP32 banner), or ``b""``."""
        ...

    @property
    def moving(self) -> bool:
        """The motor is moving right now."""
        ...

    @property
    def position(self) -> int:
        """The motor position in steps, as the firmware counts it."""
        ...

    def set_position(self, position: int) -> None:
        """Put the motor at ``position``, stopped (tests)."""
        ...

    #: Also an attribute tests may set: the probe temperature in degrees C (None where the firmware models a
    #: missing probe).
    @property
    def temperature(self) -> float | None: ...
