"""Request framing shared by the emulated firmwares whose commands are ``:`` + body + ``#`` (Moonlite, myFP2).

Independent of :mod:`alpaca_focuser.drivers` (the emulator has its own parsers on purpose).
"""

from __future__ import annotations

import logging

logger = logging.getLogger("alpaca_focuser.emulator")


class RequestFramer:
    """Collects ``:``...``#`` frames from the bytes a driver writes, the way these firmwares' serial handlers do:
    ``:`` starts a frame (restarting one in progress), bytes outside a frame are noise, ``#`` ends it. A body
    longer than ``max_chars`` is discarded. Characters in ``skip`` are dropped inside a frame (the ESP myFP2
    parser ignores CR/LF)."""

    def __init__(self, max_chars: int, skip: str = "") -> None:
        self.max_chars = max_chars
        self.skip = skip
        self._frame: list[str] | None = None  # None: waiting for ':'

    def reset(self) -> None:
        """Drop any partial frame (what a reboot does to the serial buffer)."""
        self._frame = None

    def feed(self, data: bytes) -> list[str]:
        """The bodies (between ``:`` and ``#``) of the frames completed by ``data``, in order."""
        bodies: list[str] = []
        for ch in data.decode("latin-1"):
            if ch == ":":
                if self._frame:
                    logger.debug("frame %r restarted by ':'", "".join(self._frame))
                self._frame = []
            elif self._frame is None or ch in self.skip:
                continue
            elif ch == "#":
                bodies.append("".join(self._frame))
                self._frame = None
            else:
                self._frame.append(ch)
                if len(self._frame) > self.max_chars:
                    logger.warning("discarding over-long frame %r", "".join(self._frame))
                    self._frame = None
        return bodies
