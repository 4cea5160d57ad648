"""Focuser controller emulators: a firmware state machine per protocol, served on one pty link.

Independent of :mod:`alpaca_focuser.drivers` on purpose (own parsers), so the
emulator can catch the drivers' protocol bugs rather than share them.
"""

from alpaca_focuser.emulator.base import Firmware
from alpaca_focuser.emulator.firmware import MoonliteFirmware
from alpaca_focuser.emulator.myfp2_firmware import MyFP2Firmware
from alpaca_focuser.emulator.pegasus_firmware import PegasusFirmware
from alpaca_focuser.emulator.pty_link import MoonliteEmulator, PtyLink

__all__ = ["Firmware", "MoonliteEmulator", "MoonliteFirmware", "MyFP2Firmware", "PegasusFirmware", "PtyLink"]
