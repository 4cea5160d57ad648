"""What each ``[[focuser]]`` key is: its label, help, form field, the drivers it applies to and when a change takes
effect, with the drivers' limits the loader checks against.

The settings page, ``check-config`` and the README's key table are built from this; the rules themselves (types,
ranges, cross-checks) are applied in one place, ``config._focuser``, which uses these limits.
"""

from __future__ import annotations

from dataclasses import dataclass

DRIVERS = ("simulator", "moonlite", "myfp2", "pegasus", "auto")
AUTO = "auto"  # probe the port at connect and drive the serial controller that answers (drivers/auto.py)
MOONLITE_STEP_DELAY_CODES = (2, 4, 8, 16, 32)  # SD 02, 04, 08, 10, 20: fastest to slowest
MOONLITE_MAX_POSITION = 65535
MYFP2_MAX_POSITION = 2_000_000  # the protocol's; the controller's own MaxStep is checked at connect
MYFP2_STEP_MODES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
PEGASUS_SPEED_RANGE = (100, 1000)  # the DMFC's S command (INDI, INDIGO); the firmware's default is 400
PEGASUS_MAX_BACKLASH = 9999
INT32_MAX = 2**31 - 1

#: When a changed key takes effect on a running server.
LIVE, RECONNECT, RESTART = "live", "reconnect", "restart"


@dataclass(frozen=True)
class KeyInfo:
    """What a user needs to know about one ``[[focuser]]`` key, for the settings page and the docs.

    Validation stays in ``_focuser`` (the one source of the rules); this only describes the key.
    """

    key: str
    label: str
    help: str
    kind: str  # "text", "int", "number", "bool" or "choice": the kind of form field
    choices: tuple[str, ...] = ()
    drivers: tuple[str, ...] = ()  # the drivers the key applies to; () for every driver
    applies: str = LIVE  # LIVE, RECONNECT or RESTART
    unsafe_while_moving: bool = False  # refused by the settings page while the focuser moves
    optional: bool = False  # may be left unset (an empty field removes the key)


SERIAL_DRIVERS = ("moonlite", "myfp2", "pegasus")  # the registered serial drivers (drivers/registry.py)
PORT_DRIVERS = (*SERIAL_DRIVERS, AUTO)  # the drivers that talk to a serial port
BACKLASH_DIRECTIONS = ("out", "in")
BACKLASH_STEPS_RANGE = (0, 10000)
SETTLE_MS_RANGE = (0, 60000)
TEMP_COMP_COEFFICIENT_RANGE = (-10000.0, 10000.0)
TEMP_COMP_THRESHOLD_RANGE = (0.05, 10.0)
TEMP_COMP_WINDOW_RANGE = (1.0, 3600.0)
TEMP_COMP_LEARN_IDLE_RANGE = (1.0, 86400.0)

#: Every ``[[focuser]]`` key, in the order the settings page shows them.
FOCUSER_KEYS: tuple[KeyInfo, ...] = (
    KeyInfo("name", "Name", "Name shown to clients (Alpaca Name)", "text"),
    KeyInfo("description", "Description", "Alpaca Description; empty: the driver's own (at most 64 characters "
            "are reported)", "text", optional=True),
    KeyInfo("driver", "Driver", "The hardware behind this focuser; auto finds which serial controller answers on "
            "the port when connecting", "choice", choices=DRIVERS, applies=RESTART),
    KeyInfo("max_step", "Maximum step (MaxStep)", "Highest position; Move targets beyond 0..MaxStep are clamped",
            "int", unsafe_while_moving=True),
    KeyInfo("max_increment", "Maximum increment (MaxIncrement)", "The longest single move, in steps", "int",
            optional=True),
    KeyInfo("step_size", "Step size (µm)", "Microns per step; empty when unknown (StepSize then answers "
            "NotImplemented)", "number", optional=True),
    KeyInfo("absolute", "Absolute", "Off makes a relative focuser: Move(n) moves n steps and Position is not "
            "available", "bool", unsafe_while_moving=True),
    KeyInfo("backlash_steps", "Backlash (steps)", f"{BACKLASH_STEPS_RANGE[0]}..{BACKLASH_STEPS_RANGE[1]}: a move "
            "that ends travelling against the final approach direction overshoots the target by this much and comes "
            "back; 0 is off. Turn the imaging program's own backlash compensation off when you use this", "int"),
    KeyInfo("backlash_direction", "Final approach", "The direction every move ends travelling in: out = increasing "
            "position", "choice", choices=BACKLASH_DIRECTIONS),
    KeyInfo("reverse", "Reverse", "The motor is mounted the other way round: client position p is motor position "
            "MaxStep - p", "bool", unsafe_while_moving=True),
    KeyInfo("settle_ms", "Settle time (ms)", f"{SETTLE_MS_RANGE[0]}..{SETTLE_MS_RANGE[1]}: IsMoving stays true "
            "this long after the motor stops, while the mechanics settle", "int"),
    KeyInfo("temp_comp_available", "Temperature compensation available", "Whether TempComp may be switched on; "
            "unset: when the controller has a temperature sensor", "bool", optional=True),
    KeyInfo("temp_comp_coefficient", "Compensation coefficient (steps/°C)",
            f"{TEMP_COMP_COEFFICIENT_RANGE[0]:g}..{TEMP_COMP_COEFFICIENT_RANGE[1]:g}, signed: -12 moves out 12 "
            "steps for every degree the tube cools", "number"),
    KeyInfo("temp_comp_threshold", "Compensation threshold (°C)",
            f"{TEMP_COMP_THRESHOLD_RANGE[0]:g}..{TEMP_COMP_THRESHOLD_RANGE[1]:g}: the smallest change of the "
            "averaged temperature worth a move", "number"),
    KeyInfo("temp_comp_window_s", "Temperature averaging (s)",
            f"{TEMP_COMP_WINDOW_RANGE[0]:g}..{TEMP_COMP_WINDOW_RANGE[1]:g}: the temperature is averaged over this "
            "many seconds, because probes are noisy", "number"),
    KeyInfo("temp_comp_learn_idle_s", "Learning idle time (s)",
            f"{TEMP_COMP_LEARN_IDLE_RANGE[0]:g}..{TEMP_COMP_LEARN_IDLE_RANGE[1]:g}: a client move followed by this "
            "long without another is recorded as a (temperature, position) pair for the learned coefficient",
            "number"),
    KeyInfo("speed", "Speed", "Simulator: steps per second. Moonlite: step-delay code 2 (fastest), 4, 8, 16 or 32 "
            "(slowest). Pegasus: maximum speed 100..1000. Empty keeps the controller's setting", "int",
            drivers=("simulator", "moonlite", "pegasus"),  # not auto: its meaning depends on the controller
            optional=True, applies=RECONNECT),
    KeyInfo("temperature", "Starting temperature (°C)", "Simulator only: the ambient temperature at start-up",
            "number", drivers=("simulator",), applies=RESTART),
    KeyInfo("port", "Serial port", "Preferably a /dev/serial/by-id/... path", "text", drivers=PORT_DRIVERS,
            applies=RECONNECT),
    KeyInfo("baud", "Baud rate", "Serial speed of the controller; empty: the driver's default (Moonlite and "
            "myFocuserPro2 9600, Pegasus 19200; a myFocuserPro2 on an ESP32 uses 115200). Auto: empty tries each "
            "controller at its own speed; set, only this one", "int", drivers=PORT_DRIVERS, optional=True,
            applies=RECONNECT),
    KeyInfo("half_step", "Half step", "Half- or full-stepping; unset keeps the controller's setting", "bool",
            drivers=("moonlite",), optional=True, applies=RECONNECT),
    KeyInfo("controller_backlash", "Controller backlash (steps)", f"0..{PEGASUS_MAX_BACKLASH}, the controller's own "
            "backlash compensation, 0 is off; empty keeps the controller's setting. Use it or the server's, not "
            "both", "int", drivers=("pegasus",), optional=True, applies=RECONNECT),
    KeyInfo("controller_reverse", "Controller reverse", "The controller turns the motor the other way; empty keeps "
            "the controller's setting. Use it or the server's reverse, not both", "bool", drivers=("myfp2", "pegasus"),
            optional=True, applies=RECONNECT),
    KeyInfo("led", "Controller LED", "The controller's power LED on or off; empty keeps the controller's setting",
            "bool", drivers=("pegasus",), optional=True, applies=RECONNECT),
    KeyInfo("switch_to_stepper", "Switch to stepper mode", "A DMFC found in DC-motor mode is switched to stepper "
            "mode at connect (only with a stepper motor attached); else such a DMFC is refused with an error",
            "bool", drivers=("pegasus",), optional=True, applies=RECONNECT),
    KeyInfo("read_timeout", "Reply timeout (s)", "Seconds to wait for a reply from the controller", "number",
            drivers=PORT_DRIVERS, applies=RECONNECT),
    KeyInfo("set_controller_max_step", "Write MaxStep into the controller", "On: the controller's own MaxStep is "
            "set to Maximum step on every connect. Off: Maximum step must not exceed the controller's MaxStep",
            "bool", drivers=("myfp2",), optional=True, applies=RECONNECT),
    KeyInfo("controller_backlash_in", "Controller backlash in (steps)", "Steps the controller adds when the "
            "direction changes to inward, 0..255 (0 off); empty keeps the controller's setting", "int",
            drivers=("myfp2",), optional=True, applies=RECONNECT),
    KeyInfo("controller_backlash_out", "Controller backlash out (steps)", "Steps the controller adds when the "
            "direction changes to outward, 0..255 (0 off); empty keeps the controller's setting", "int",
            drivers=("myfp2",), optional=True, applies=RECONNECT),
    KeyInfo("controller_temp_comp", "Controller temperature compensation", "The controller's own temperature "
            "compensation (needs its probe; it then moves the focuser by itself); unset keeps the controller's",
            "bool", drivers=("myfp2",), optional=True, applies=RECONNECT),
    KeyInfo("step_mode", "Step mode", "1 (full), 2 (half), 4 ... 256 microsteps, as far as the driver board goes; "
            "empty keeps the controller's setting", "int", drivers=("myfp2",), optional=True, applies=RECONNECT),
    KeyInfo("enabled", "Enabled", "Off: not served from the next start; the table keeps its place so no other "
            "focuser's device number changes", "bool", applies=RESTART),
)
KEYS_BY_NAME: dict[str, KeyInfo] = {k.key: k for k in FOCUSER_KEYS}
