"""Validated configuration from ``config.toml``.

Every mistake in a file becomes one ``ConfigError`` line naming the file, the key and what is wrong, so a user
reading ``journalctl`` on a cold night knows exactly what to fix. Unknown keys are errors too: a typo such as
``max_stpe`` must not silently fall back to a default.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

DRIVERS = ("simulator", "moonlite", "myfp2", "pegasus", "auto")
AUTO = "auto"  # probe the port at connect and drive the serial controller that answers (drivers/auto.py)
MOONLITE_STEP_DELAY_CODES = (2, 4, 8, 16, 32)  # SD 02, 04, 08, 10, 20: fastest to slowest
MOONLITE_MAX_POSITION = 65535
MYFP2_MAX_POSITION = 2_000_000  # the protocol's; the controller's own MaxStep is checked at connect
MYFP2_STEP_MODES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
PEGASUS_SPEED_RANGE = (100, 1000)  # the DMFC's S command (INDI, INDIGO); the firmware's default is 400
PEGASUS_MAX_BACKLASH = 9999
INT32_MAX = 2**31 - 1
CONFIG_FILE = "config.toml"
_ORIGIN = re.compile(r"https?://[^/\s?#]+")


class ConfigError(ValueError):
    """A configuration problem, already worded for the user.

    ``table`` (e.g. ``"focuser #0"``) and ``key`` say where, when the problem is one key's, so the settings page
    can show the message next to that field."""

    def __init__(self, message: str, *, table: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.table = table
        self.key = key


@dataclass(frozen=True)
class ServerConfig:
    bind: str = "0.0.0.0"
    port: int = 11111
    location: str = "Backyard observatory"
    threads: int = 8
    state_dir: str | None = None  # None: $STATE_DIRECTORY, else ~/.local/state/alpaca-focuser
    setup_password_hash: str | None = None  # from `alpaca-focuser hash-password`: Basic auth on settings writes
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call the Alpaca API (CORS); "*" for any
    metrics: bool = True  # serve GET /metrics (Prometheus)


@dataclass(frozen=True)
class DiscoveryConfig:
    enabled: bool = True
    port: int = 32227
    ipv6: bool = True


@dataclass(frozen=True)
class FocuserConfig:
    name: str = "Simulated focuser"
    driver: str = "simulator"
    description: str = ""
    max_step: int = 50000
    max_increment: int = 50000
    step_size: float | None = None
    absolute: bool = True
    # focusing features (alpaca_focuser/focuser/): all off by default
    backlash_steps: int = 0
    backlash_direction: str = "out"  # the direction of the final approach: "out" (increasing position) or "in"
    reverse: bool = False
    settle_ms: int = 0
    temp_comp_available: bool | None = None  # None: true when the driver has a temperature sensor
    temp_comp_coefficient: float = 0.0  # steps per deg C, signed, in the client's frame
    temp_comp_threshold: float = 0.5  # deg C
    temp_comp_window_s: float = 120.0
    temp_comp_learn_idle_s: float = 600.0
    # simulator: steps per second; moonlite: the step-delay code (2, 4, 8, 16, 32) or None to leave it alone
    speed: int | None = None
    temperature: float = 10.0  # simulator only: the starting ambient temperature, deg C
    # serial drivers (and auto)
    port: str | None = None
    baud: int | None = None  # None: the driver's own (Moonlite, myFocuserPro2 9600, Pegasus 19200); auto: each one's
    read_timeout: float = 0.5
    # moonlite only
    half_step: bool | None = None
    # the controller's own settings (myfp2, pegasus), applied on every connect; None leaves the controller's alone
    controller_reverse: bool | None = None
    controller_backlash: int | None = None  # pegasus: one backlash for both directions
    controller_backlash_in: int | None = None  # myfp2: separate backlash in and out
    controller_backlash_out: int | None = None
    controller_temp_comp: bool | None = None  # myfp2
    step_mode: int | None = None  # myfp2
    set_controller_max_step: bool | None = None  # myfp2; None: false (and not printed by check-config)
    led: bool | None = None  # pegasus
    switch_to_stepper: bool | None = None  # pegasus: true switches a DMFC in DC-motor mode to stepper at connect
    # false keeps the table (and so every later focuser's device number) but does not serve it
    enabled: bool = True


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


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    focusers: tuple[FocuserConfig, ...] = (FocuserConfig(speed=2000, step_size=4.5),)
    source: str = "<built-in defaults>"
    path: str | None = field(default=None, compare=False)  # the file it was read from; None: not from a file

    def settings_path(self) -> Path:
        """Where the settings page saves: the file the server was started from, else ``config.toml`` in the
        state directory (which the next start then reads, see ``find_default_config``)."""
        return Path(self.path) if self.path else self.resolved_state_dir() / CONFIG_FILE

    def resolved_state_dir(self) -> Path:
        """Where the state file lives: config, then systemd's $STATE_DIRECTORY, then the user's state home."""
        if self.server.state_dir:
            return Path(self.server.state_dir).expanduser()
        if os.environ.get("STATE_DIRECTORY"):
            # systemd may pass several colon-separated directories; the first is ours
            return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(base) / "alpaca-focuser"


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "an array",
               dict: "a table"}


def _toml_repr(value: Any) -> str:
    """A value as the user wrote it in TOML (true, "text"), not as Python prints it (True, 'text')."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


class _Table:
    """Typed access to one TOML table that records which keys were read, so leftovers can be reported."""

    def __init__(self, data: Any, where: str, source: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: [{where}] must be a table, got {type(data).__name__}")
        self.data = data
        self.where = where
        self.source = source
        self.used: set[str] = set()

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}: [{self.where}] {key}: {problem}", table=self.where, key=key)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.used.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python; TOML keeps them apart and so do we
        if isinstance(value, bool) and bool not in kinds:
            ok = False
        else:
            ok = isinstance(value, kinds)
        if not ok:
            shown = [k for k in kinds if not (k is int and float in kinds)]  # "a number" covers integers
            names = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in shown)
            raise self.fail(key, f"must be {names}, got {_toml_repr(value)}")
        return value

    def integer(self, key: str, default: Any, lo: int, hi: int) -> Any:
        value = self.get(key, int, default)
        if value is not None and not lo <= value <= hi:
            raise self.fail(key, f"must be between {lo} and {hi}, got {value}")
        return value

    def number(self, key: str, default: Any, lo: float, hi: float, exclusive_lo: bool = False) -> Any:
        value = self.get(key, (int, float), default)
        if value is None:
            return None
        value = float(value)
        if value < lo or value > hi or (exclusive_lo and value == lo):
            bound = f"greater than {lo}" if exclusive_lo else f"at least {lo}"
            raise self.fail(key, f"must be {bound} and at most {hi}, got {value:g}")
        return value

    def text(self, key: str, default: Any, allow_empty: bool = True) -> Any:
        value = self.get(key, str, default)
        if value is not None and not allow_empty and not value.strip():
            raise self.fail(key, "must not be empty")
        return value

    def check_unknown(self) -> None:
        extra = sorted(set(self.data) - self.used)
        if extra:
            raise self.fail(extra[0], "unknown key (check the spelling; see config.toml in the project for the keys)")


def _server(data: Any, source: str) -> ServerConfig:
    t = _Table(data, "server", source)
    d = ServerConfig()
    bind = t.text("bind", d.bind)
    if bind not in ("", "localhost"):
        try:
            ipaddress.ip_address(bind)
        except ValueError:
            raise t.fail("bind", f"must be an IP address such as \"0.0.0.0\" or \"::\", got {bind!r}") from None
    cfg = ServerConfig(
        bind=bind,
        port=t.integer("port", d.port, 0, 65535),  # 0: any free port (tests)
        location=t.text("location", d.location),
        threads=t.integer("threads", d.threads, 1, 64),
        state_dir=t.text("state_dir", d.state_dir, allow_empty=False),
        setup_password_hash=t.text("setup_password_hash", None),
        cors_origins=tuple(t.get("cors_origins", list, [])),
        metrics=t.get("metrics", bool, d.metrics),
    )
    if cfg.setup_password_hash is not None:
        from alpaca_focuser.passwords import parse_hash

        try:
            parse_hash(cfg.setup_password_hash)
        except ValueError as exc:
            raise t.fail("setup_password_hash", f"{exc}; make one with `alpaca-focuser hash-password`") from None
    for origin in cfg.cors_origins:
        if not isinstance(origin, str) or not (origin == "*" or _ORIGIN.fullmatch(origin)):
            raise t.fail("cors_origins", "each entry must be an origin such as \"http://192.168.1.20:8080\" "
                                         f"(scheme, host and port, no path) or \"*\", got {_toml_repr(origin)}")
    t.check_unknown()
    return cfg


def _discovery(data: Any, source: str) -> DiscoveryConfig:
    t = _Table(data, "discovery", source)
    d = DiscoveryConfig()
    cfg = DiscoveryConfig(
        enabled=t.get("enabled", bool, d.enabled),
        port=t.integer("port", d.port, 0, 65535),  # 0: any free port (tests)
        ipv6=t.get("ipv6", bool, d.ipv6),
    )
    t.check_unknown()
    return cfg


def _focuser(data: Any, index: int, source: str) -> FocuserConfig:
    t = _Table(data, f"focuser #{index}", source)
    d = FocuserConfig()
    driver = t.text("driver", d.driver)
    if driver not in DRIVERS:
        raise t.fail("driver", f"must be one of {', '.join(DRIVERS)}, got {driver!r}")
    max_step = t.integer("max_step", d.max_step, 1, INT32_MAX)
    max_increment = t.integer("max_increment", max_step, 1, INT32_MAX)
    if max_increment > max_step:
        raise t.fail("max_increment", f"must not exceed max_step ({max_step}), got {max_increment}")
    backlash_direction = t.text("backlash_direction", d.backlash_direction)
    if backlash_direction not in BACKLASH_DIRECTIONS:
        raise t.fail("backlash_direction", f'must be "out" (final approach towards higher positions) or "in", '
                                           f"got {backlash_direction!r}")
    cfg = FocuserConfig(
        name=t.text("name", f"Focuser {index}", allow_empty=False),
        driver=driver,
        description=t.text("description", ""),
        max_step=max_step,
        max_increment=max_increment,
        step_size=t.number("step_size", None, 0.0, 10000.0, exclusive_lo=True),
        absolute=t.get("absolute", bool, d.absolute),
        backlash_steps=t.integer("backlash_steps", d.backlash_steps, *BACKLASH_STEPS_RANGE),
        backlash_direction=backlash_direction,
        reverse=t.get("reverse", bool, d.reverse),
        settle_ms=t.integer("settle_ms", d.settle_ms, *SETTLE_MS_RANGE),
        temp_comp_available=t.get("temp_comp_available", bool, d.temp_comp_available),
        temp_comp_coefficient=t.number("temp_comp_coefficient", d.temp_comp_coefficient,
                                       *TEMP_COMP_COEFFICIENT_RANGE),
        temp_comp_threshold=t.number("temp_comp_threshold", d.temp_comp_threshold, *TEMP_COMP_THRESHOLD_RANGE),
        temp_comp_window_s=t.number("temp_comp_window_s", d.temp_comp_window_s, *TEMP_COMP_WINDOW_RANGE),
        temp_comp_learn_idle_s=t.number("temp_comp_learn_idle_s", d.temp_comp_learn_idle_s,
                                        *TEMP_COMP_LEARN_IDLE_RANGE),
        speed=t.integer("speed", None, 1, 1_000_000),
        temperature=t.number("temperature", d.temperature, -60.0, 60.0),
        port=t.text("port", None, allow_empty=False),
        baud=t.integer("baud", None, 300, 1_000_000),
        half_step=t.get("half_step", bool, None),
        read_timeout=t.number("read_timeout", d.read_timeout, 0.05, 10.0),
        controller_reverse=t.get("controller_reverse", bool, None),
        controller_backlash=t.integer("controller_backlash", None, 0, PEGASUS_MAX_BACKLASH),
        controller_backlash_in=t.integer("controller_backlash_in", None, 0, 255),
        controller_backlash_out=t.integer("controller_backlash_out", None, 0, 255),
        controller_temp_comp=t.get("controller_temp_comp", bool, None),
        step_mode=t.integer("step_mode", None, 1, 256),
        set_controller_max_step=t.get("set_controller_max_step", bool, None),
        led=t.get("led", bool, None),
        switch_to_stepper=t.get("switch_to_stepper", bool, None),
        enabled=t.get("enabled", bool, d.enabled),
    )
    t.check_unknown()
    for key in t.data:  # a key of another driver is a mistake worth saying, not something to ignore
        drivers = KEYS_BY_NAME[key].drivers
        if drivers and driver not in drivers:
            hint = (f" (it means something different to each controller: name the driver to set it; `alpaca-focuser "
                    f"probe {cfg.port or 'PORT'}` tells which)" if driver == AUTO else "")
            raise t.fail(key, f'does not apply to driver = "{driver}"; it only applies to driver = '
                              + " or ".join(f'"{name}"' for name in drivers) + hint)
    if cfg.backlash_steps > max_step:
        raise t.fail("backlash_steps", f"must not exceed max_step ({max_step}), got {cfg.backlash_steps}")
    if driver == "simulator":
        return replace(cfg, speed=cfg.speed or 2000)
    if driver == AUTO:
        return _auto(t, cfg)
    if cfg.port is None:
        raise t.fail("port", f'is required for driver = "{driver}" (e.g. "/dev/serial/by-id/usb-..."; '
                             "`alpaca-focuser ports` lists them)")
    if driver == "myfp2":
        return _myfp2(t, cfg)
    if driver == "pegasus":
        if cfg.speed is not None and not PEGASUS_SPEED_RANGE[0] <= cfg.speed <= PEGASUS_SPEED_RANGE[1]:
            raise t.fail("speed", f'for driver = "pegasus" is the maximum speed, {PEGASUS_SPEED_RANGE[0]}..'
                                  f"{PEGASUS_SPEED_RANGE[1]}, got {cfg.speed}")
        return cfg  # positions are 32-bit: max_step's own limit (2147483647) is the controller's
    if max_step > MOONLITE_MAX_POSITION:
        raise t.fail("max_step", f"must be at most {MOONLITE_MAX_POSITION} for driver = \"moonlite\" "
                                 f"(its position is 16-bit), got {max_step}")
    if cfg.speed is not None and cfg.speed not in MOONLITE_STEP_DELAY_CODES:
        raise t.fail("speed", "for driver = \"moonlite\" is the step-delay code: one of 2 (fastest), 4, 8, 16, "
                              f"32 (slowest), got {cfg.speed}")
    return cfg


def _myfp2(t: _Table, cfg: FocuserConfig) -> FocuserConfig:
    if cfg.max_step > MYFP2_MAX_POSITION:
        raise t.fail("max_step", f"must be at most {MYFP2_MAX_POSITION} for driver = \"myfp2\", got {cfg.max_step}")
    if cfg.step_mode is not None and cfg.step_mode not in MYFP2_STEP_MODES:
        raise t.fail("step_mode", f"must be one of {', '.join(map(str, MYFP2_STEP_MODES))}, got {cfg.step_mode}")
    return cfg


def _auto(t: _Table, cfg: FocuserConfig) -> FocuserConfig:
    """``driver = "auto"``: a port; ``baud`` unset means each controller's own speed. Keys that only mean something
    to one controller are refused by ``_focuser``; ``max_step`` is checked against the controller found."""
    if cfg.port is None:
        raise t.fail("port", 'is required for driver = "auto" (e.g. "/dev/serial/by-id/usb-..."; '
                             "`alpaca-focuser ports --probe` lists them with what answers)")
    return cfg


def parse_config(data: dict[str, Any], source: str) -> Config:
    """Validate an already-parsed TOML document."""
    known = {"server", "discovery", "focuser"}
    for key in data:
        if key not in known:
            raise ConfigError(f"{source}: {key}: unknown section (expected [server], [discovery], [[focuser]])")
    focusers_raw = data.get("focuser", [{}])
    if not isinstance(focusers_raw, list):
        raise ConfigError(f"{source}: focuser: must be an array of tables, written [[focuser]]")
    if not focusers_raw:
        raise ConfigError(f"{source}: focuser: at least one [[focuser]] table is needed")
    focusers = tuple(_focuser(f, i, source) for i, f in enumerate(focusers_raw))
    if not any(f.enabled for f in focusers):
        raise ConfigError(f"{source}: [focuser #{len(focusers) - 1}] enabled: at least one focuser must be enabled",
                          table=f"focuser #{len(focusers) - 1}", key="enabled")
    # Disabled tables only hold their device number: they may share a name or port with a served focuser.
    names = [f.name if f.enabled else None for f in focusers]
    for i, name in enumerate(names):
        if name is not None and name in names[:i]:
            raise ConfigError(f"{source}: [focuser #{i}] name: {name!r} is already used by another focuser",
                              table=f"focuser #{i}", key="name")
    ports = [f.port if f.enabled else None for f in focusers]
    for i, port in enumerate(ports):
        if port and port in ports[:i]:
            raise ConfigError(f"{source}: [focuser #{i}] port: {port!r} is used by two focusers "
                              f"(#{ports.index(port)} and #{i})", table=f"focuser #{i}", key="port")
    server = _server(data.get("server", {}), source)
    discovery = _discovery(data.get("discovery", {}), source)
    return Config(server=server, discovery=discovery, focusers=focusers, source=source)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file. Raises ConfigError with one clear line."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the file: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: not valid UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message already carries "(at line N, column M)"
        raise ConfigError(f"{source}: TOML syntax error: {exc}") from None
    return replace(parse_config(data, source), path=os.path.abspath(source))


def find_default_config() -> Path | None:
    """The config file to use when no ``--config`` is given: ``./config.toml``, else ``config.toml`` in the state
    directory (where the settings page saves when the server runs on built-in defaults), else None for the
    built-in defaults."""
    for candidate in (Path(CONFIG_FILE), Config().resolved_state_dir() / CONFIG_FILE):
        if candidate.is_file():
            return candidate
    return None


def describe(config: Config) -> str:
    """The effective configuration as TOML, for ``check-config``."""
    import tomlkit

    doc = tomlkit.document()
    doc.add(tomlkit.comment(f"effective configuration from {config.source}"))
    server = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(config.server).items()
              if v is not None and v != ()}
    server["state_dir"] = str(config.resolved_state_dir())
    doc["server"] = server
    doc["discovery"] = dict(vars(config.discovery))
    aot = tomlkit.aot()
    for f in config.focusers:
        applies = {k: v for k, v in vars(f).items()
                   if v is not None and (not KEYS_BY_NAME[k].drivers or f.driver in KEYS_BY_NAME[k].drivers)}
        aot.append(tomlkit.item(applies))
    doc["focuser"] = aot
    return tomlkit.dumps(doc)
