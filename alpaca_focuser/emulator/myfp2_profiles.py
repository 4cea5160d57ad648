"""The boards the myFocuserPro2 emulator can be: what differs between the Arduino Nano and the ESP32 firmware.

Every value comes from the firmware sources listed in ``docs/protocols/myfp2.md``; the comments name them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

#: What an ESP32 prints at 115200 baud when reset through DTR/RTS: the ROM bootloader's banner (text as captured
#: in esp32.com and arduino.stackexchange.com reports), then the sketch's boot messages (myFP2ESP32 303 defines
#: BOOTPRINT, and setup() prints these lines). It contains ':' but never '#'.
ESP32_BOOT_BANNER = (
    b"ets Jun  8 2016 00:22:57\r\n\r\n"
    b"rst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n"
    b"configsip: 0, SPIWP:0xee\r\n"
    b"clk_drv:0x00,q_drv:0x00,d_drv:0x00,cs0_drv:0x00,hd_drv:0x00,wp_drv:0x00\r\n"
    b"mode:DIO, clock div:1\r\n"
    b"load:0x3fff0030,len:1184\r\n"
    b"load:0x40078000,len:13260\r\n"
    b"load:0x40080400,len:3028\r\n"
    b"entry 0x400805e4\r\n"
    b"Serial started\r\n"
    b"ControllerData start\r\n"
    b"Set vars and load cached vars\r\n"
    b"Start task timer\r\n"
    b"Setup done, controller is ready\r\n"
)


@dataclass
class Settings:
    """What the firmware keeps in EEPROM (Nano ``config_t``) or its SPIFFS config files (ESP32)."""

    max_step: int = 10000
    step_mode: int = 1
    # On/off settings hold the byte the firmware stores: 0 or 1 from a well-formed command (see myfp2_commands).
    reverse: int = False
    coil_power: int = False
    motor_speed: int = 2  # 0 slow, 1 medium, 2 fast
    step_delay_us: int = 5000
    temp_coefficient: int = 20
    tc_direction: int = 0  # 0 in, 1 out
    temp_compensation: int = False
    backlash_in_enabled: int = False
    backlash_out_enabled: int = False
    backlash_in_steps: int = 0
    backlash_out_steps: int = 0
    delay_after_move_ms: int = 0
    celsius: bool = True
    last_direction: int = 0  # the direction of the last move, for backlash (0 in, 1 out)

    def copy(self) -> "Settings":
        return dataclasses.replace(self)


@dataclass(frozen=True)
class MyFP2Profile:
    """One board: serial settings, boot behaviour, reply formats and the quirks that differ."""

    name: str
    baud: int
    #: Seconds after the port opens (DTR reset) during which the board drops what it receives: the Nano's
    #: bootloader waits for an upload (~1-2 s; INDIGO and the TheSkyX plug-in wait 1-2 s), the ESP32 prints its
    #: ROM banner and runs setup().
    boot_delay: float
    banner: bytes
    firmware_version: str
    board_name: str
    defaults: Settings
    default_position: int
    #: FOCUSERUPPERLIMIT: MaxStep is clamped to this.
    max_step_limit: int
    #: The highest step mode the board's driver chip supports (ULN2003: half step).
    max_step_mode: int
    #: Decimals of the ``:06#`` reply: ``dtostrf(t, 2, 2)`` on the Nano, ``%.3f`` on the ESP serial builds.
    temperature_decimals: int
    #: ESP firmware: ``:27#`` only sets ``halt_alert``, which is checked while stepping; sent while idle it
    #: stays set and stops the next move on its first step.
    halt_arms_when_idle: bool
    #: Seconds of quiet before settings and position are written (Nano EEPROMWRITEINTERVAL 10 s, counted from
    #: the end of the last move or the last write; ESP32 DEFAULTSAVETIME 60 s, counted from the last change).
    save_quiet_s: float
    save_quiet_from_change: bool
    #: The Nano keeps temperature compensation on/off in RAM only (``tempcompstate``); ESP saves it.
    persists_temp_compensation: bool
    #: The Nano's read_temp() keeps the previous value when the probe reads outside -40..80 C.
    filters_temperature: bool
    #: The Nano reads the probe only while idle (State_Idle); the ESP loop reads it on every pass.
    temperature_while_moving: bool
    #: ESP builds keep the coefficient in a byte (300 -> 44); the Nano clamps it to 0..1000.
    byte_temp_coefficient: bool
    #: The ESP serial parser (comms.h ``processserial``) skips CR and LF; the Nano's ``serialEvent`` appends them
    #: to the line like any other byte. The ESP also reads an on/off argument as ``receiveString[3]``, the ``#``
    #: it put back when the argument is missing.
    ignores_line_endings: bool


PROFILES: dict[str, MyFP2Profile] = {
    # myFP2 release 338 for the Arduino Nano (ULN2003 build): filichev/myfp2-uln2003-ssd1306-pio src/*.
    "nano": MyFP2Profile(
        name="nano", baud=9600, boot_delay=1.6, banner=b"", firmware_version="338",
        board_name="ULN2003_M_MT_F", defaults=Settings(max_step=10000, step_delay_us=5000),
        default_position=5000, max_step_limit=400000, max_step_mode=2, temperature_decimals=2,
        halt_arms_when_idle=False, save_quiet_s=10.0, save_quiet_from_change=False,
        persists_temp_compensation=False, filters_temperature=True, temperature_while_moving=False,
        byte_temp_coefficient=False, ignores_line_endings=False),
    # ESP firmware with a serial mode (brownrb/myFP2EFirmware comms.h LOCALSERIAL, daoudeddy/myfp2esp8266
    # 330 serial_server.cpp) and the myFP2ESP32 main loop (brownrb/myfp2esp32): DRV8825 board.
    "esp32": MyFP2Profile(
        name="esp32", baud=115200, boot_delay=1.0, banner=ESP32_BOOT_BANNER, firmware_version="330",
        board_name="PRO2ESP32DRV8825", defaults=Settings(max_step=80000, step_delay_us=4000),
        default_position=5000, max_step_limit=500000, max_step_mode=32, temperature_decimals=3,
        halt_arms_when_idle=True, save_quiet_s=60.0, save_quiet_from_change=True,
        persists_temp_compensation=True, filters_temperature=False, temperature_while_moving=True,
        byte_temp_coefficient=True, ignores_line_endings=True),
}
DEFAULT_PROFILE = "nano"
#: How long each board ignores input after the port opens (the firmware models it; a link may wait as well).
BOOT_DELAYS: dict[str, float] = {name: profile.boot_delay for name, profile in PROFILES.items()}
