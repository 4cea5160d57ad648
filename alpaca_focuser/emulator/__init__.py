"""A Moonlite focuser emulator: the firmware as a state machine, served on a pty.

Independent of :mod:`alpaca_focuser.drivers` on purpose (own parser), so the
emulator can catch the Moonlite driver's protocol bugs rather than share them.
"""

from alpaca_focuser.emulator.firmware import MoonliteFirmware
from alpaca_focuser.emulator.pty_link import MoonliteEmulator

__all__ = ["MoonliteEmulator", "MoonliteFirmware"]
