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

from alpaca_focuser.config_keys import (
    AUTO,
    BACKLASH_DIRECTIONS,
    BACKLASH_STEPS_RANGE,
    DRIVERS,
    INT32_MAX,
    KEYS_BY_NAME,
    MOONLITE_MAX_POSITION,
    MOONLITE_STEP_DELAY_CODES,
    MYFP2_MAX_POSITION,
    MYFP2_STEP_MODES,
    PEGASUS_MAX_BACKLASH,
    PEGASUS_SPEED_RANGE,
    SETTLE_MS_RANGE,
    TEMP_COMP_COEFFICIENT_RANGE,
    TEMP_COMP_LEARN_IDLE_RANGE,
    TEMP_COMP_THRESHOLD_RANGE,
    TEMP_COMP_WINDOW_RANGE,
)

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
