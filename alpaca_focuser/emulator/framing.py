"""Request framing of the myFocuserPro2 firmware, modelled on its serial handler as the sources write it.

Independent of :mod:`alpaca_focuser.drivers` (the emulator has its own parsers on purpose). Sources (read, not
copied): myFP2 338 for the Nano, ``serialcomms.h`` ``serialEvent()`` and ``ser_comms()``
(filichev/myfp2-uln2003-ssd1306-pio); the ESP firmware's serial mode, ``comms.h`` ``processserial()`` and
``ESP_Communication()`` (brownrb/myFP2EFirmware, 2021).

``serialEvent`` keeps one line (an Arduino ``String``) for the whole session:

* ``:`` empties the line;
* ``#`` pushes a copy of the line onto the command queue and leaves the line **as it is**;
* any other byte is appended (the ESP parser skips ``\\r`` and ``\\n``; the Nano's appends them too).

So bytes before a ``:`` stay in the line (noise + ``#`` runs as a command), and a ``#`` with no ``:`` before it
runs the last command again: a board that did not reset when the port opened still holds the previous session's
last command, which another protocol's bare ``#`` (Pegasus's identify query) repeats, a move if it was one.
The command is then read with ``String.toInt()``: its number from the first two characters (``"GV"``, Moonlite's
version query, is 0: get position), its argument from the rest.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("alpaca_focuser.emulator")

#: Beyond this many characters the line starts over. The firmware's ``String`` grows until an allocation fails,
#: which empties it (``line = line + c`` assigns an invalidated String); where that happens depends on the free
#: heap of the build. Only bytes that never meet a ``:`` can make a line this long.
LINE_LIMIT = 256
_C_SPACE = " \t\n\v\f\r"


def arduino_to_int(text: str) -> int:
    """Arduino ``String.toInt()``, which is C's ``atol``: leading white space, a sign, then digits; reading stops
    at the first other character, and no digit at all reads as 0 (``"GV"`` -> 0, ``"123\\n"`` -> 123, ``"1.5"``
    -> 1). The result is a 32-bit ``long``."""
    text = text.lstrip(_C_SPACE)
    sign = -1 if text[:1] == "-" else 1
    if text[:1] in "+-":
        text = text[1:]
    digits = len(text) - len(text.lstrip("0123456789"))
    value = sign * int(text[:digits] or "0")
    return (value + 2**31) % 2**32 - 2**31


class SerialLine:
    """The firmware's ``line`` and what ``serialEvent`` queues from it. ``skip`` holds the bytes the parser drops
    (the ESP's ``\\r\\n``)."""

    def __init__(self, skip: str = "", limit: int = LINE_LIMIT) -> None:
        self.skip, self.limit = skip, limit
        self.line = ""

    def reset(self) -> None:
        """A reboot: the line is a new, empty String."""
        self.line = ""

    def feed(self, data: bytes) -> list[str]:
        """The lines queued by ``data`` (one per ``#``), in order."""
        queued: list[str] = []
        for ch in data.decode("latin-1"):
            if ch == ":":
                self.line = ""
            elif ch == "#":
                queued.append(self.line)
            elif ch not in self.skip:
                if len(self.line) >= self.limit:
                    logger.warning("myfp2: line of %d characters without ':' lost (out of memory)", len(self.line))
                    self.line = ""
                    continue
                self.line += ch
        return queued
