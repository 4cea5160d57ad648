"""Validated configuration from ``config.toml``.

Every mistake in a file becomes one ``ConfigError`` line naming the file, the key and what is wrong, so a user
reading ``journalctl`` on a cold night knows exactly what to fix. Unknown keys are errors too: a typo such as
``max_stpe`` must not silently fall back to a default.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

DRIVERS = ("simulator", "moonlite")
MOONLITE_STEP_DELAY_CODES = (2, 4, 8, 16, 32)  # SD 02, 04, 08, 10, 20: fastest to slowest
MOONLITE_MAX_POSITION = 65535
INT32_MAX = 2**31 - 1


class ConfigError(ValueError):
    """A configuration problem, already worded for the user."""


@dataclass(frozen=True)
class ServerConfig:
    bind: str = "0.0.0.0"
    port: int = 11111
    location: str = "Backyard observatory"
    threads: int = 8
    state_dir: str | None = None  # None: $STATE_DIRECTORY, else ~/.local/state/alpaca-focuser
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
    temp_comp_available: bool = False
    # simulator: steps per second; moonlite: the step-delay code (2, 4, 8, 16, 32) or None to leave it alone
    speed: int | None = None
    temperature: float = 10.0  # simulator only: the starting ambient temperature, deg C
    # moonlite only
    port: str | None = None
    baud: int = 9600
    half_step: bool | None = None
    read_timeout: float = 0.5


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    focusers: tuple[FocuserConfig, ...] = (FocuserConfig(speed=2000, step_size=4.5),)
    source: str = "<built-in defaults>"

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
        return ConfigError(f"{self.source}: [{self.where}] {key}: {problem}")

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
        metrics=t.get("metrics", bool, d.metrics),
    )
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
    cfg = FocuserConfig(
        name=t.text("name", f"Focuser {index}", allow_empty=False),
        driver=driver,
        description=t.text("description", ""),
        max_step=max_step,
        max_increment=max_increment,
        step_size=t.number("step_size", None, 0.0, 10000.0, exclusive_lo=True),
        absolute=t.get("absolute", bool, d.absolute),
        temp_comp_available=t.get("temp_comp_available", bool, d.temp_comp_available),
        speed=t.integer("speed", None, 1, 1_000_000),
        temperature=t.number("temperature", d.temperature, -60.0, 60.0),
        port=t.text("port", None, allow_empty=False),
        baud=t.integer("baud", d.baud, 300, 1_000_000),
        half_step=t.get("half_step", bool, None),
        read_timeout=t.number("read_timeout", d.read_timeout, 0.05, 10.0),
    )
    t.check_unknown()
    if driver == "simulator":
        for key in ("port", "half_step"):
            if key in t.data:
                raise t.fail(key, 'only applies to driver = "moonlite"')
        return replace(cfg, speed=cfg.speed or 2000)
    if cfg.port is None:
        raise t.fail("port", 'is required for driver = "moonlite" (e.g. "/dev/serial/by-id/usb-..."; '
                             "`alpaca-focuser ports` lists them)")
    if max_step > MOONLITE_MAX_POSITION:
        raise t.fail("max_step", f"must be at most {MOONLITE_MAX_POSITION} for driver = \"moonlite\" "
                                 f"(its position is 16-bit), got {max_step}")
    if cfg.speed is not None and cfg.speed not in MOONLITE_STEP_DELAY_CODES:
        raise t.fail("speed", "for driver = \"moonlite\" is the step-delay code: one of 2 (fastest), 4, 8, 16, "
                              f"32 (slowest), got {cfg.speed}")
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
    names = [f.name for f in focusers]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"{source}: [focuser #{i}] name: {name!r} is already used by another focuser")
    ports = [f.port for f in focusers if f.port]
    for i, port in enumerate(ports):
        if port in ports[:i]:
            raise ConfigError(f"{source}: [[focuser]] port: {port!r} is used by two focusers")
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
    return parse_config(data, source)


def find_default_config() -> Path | None:
    """``./config.toml`` when it exists (the documented default), else None for built-in defaults."""
    candidate = Path("config.toml")
    return candidate if candidate.is_file() else None


def describe(config: Config) -> str:
    """The effective configuration as TOML, for ``check-config``."""
    import tomlkit

    doc = tomlkit.document()
    doc.add(tomlkit.comment(f"effective configuration from {config.source}"))
    server = {k: v for k, v in vars(config.server).items() if v is not None}
    server["state_dir"] = str(config.resolved_state_dir())
    doc["server"] = server
    doc["discovery"] = dict(vars(config.discovery))
    aot = tomlkit.aot()
    for f in config.focusers:
        aot.append(tomlkit.item({k: v for k, v in vars(f).items() if v is not None}))
    doc["focuser"] = aot
    return tomlkit.dumps(doc)
