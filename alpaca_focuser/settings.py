"""Saving focuser settings from the settings page: edit the config file, validate it as start-up would, write it
atomically, then apply what a running focuser can take live and say plainly what waits for a restart.

One lock serialises every write, so two browsers saving at once cannot interleave their edits. Each save starts
from the file as it is on disk now, so a hand edit made while the server runs is kept, not overwritten.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from alpaca_focuser.config import Config, ConfigError, FocuserConfig
from alpaca_focuser.config_keys import DRIVERS, KEYS_BY_NAME, LIVE, PORT_DRIVERS, RECONNECT
from alpaca_focuser.errors import InvalidOperationError, InvalidValueError
from alpaca_focuser.focuser.device import FocuserDevice

if TYPE_CHECKING:
    import tomlkit

    from alpaca_focuser import config_writer as cw

log = logging.getLogger(__name__)


def _lazy_module(name: str) -> ModuleType:
    """``name``, loaded on first use: the config writer (and tomlkit, ~3 MB) only once settings are edited, so
    an idle server stays small."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.loader is not None
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


if not TYPE_CHECKING:
    cw = _lazy_module("alpaca_focuser.config_writer")


class SettingsRejected(Exception):
    """A save that changed nothing: ``status`` is the HTTP status, ``key`` the form field it belongs to."""

    def __init__(self, message: str, *, status: int = 422, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.key = key


@dataclass
class SaveResult:
    path: str
    created: bool  # the file did not exist (the server ran on built-in defaults)
    device: int
    changed: list[str] = field(default_factory=list)  # keys this save changed in the file
    applied: list[str] = field(default_factory=list)  # changed keys the running focuser took at once
    reconnect: list[str] = field(default_factory=list)  # saved, not running yet: after Disconnect/Connect
    restart: list[str] = field(default_factory=list)  # saved, not running yet: after a server restart
    dropped: list[str] = field(default_factory=list)  # keys removed because the new driver does not take them

    def message(self) -> str:
        parts = [f"Saved to {self.path}." if self.changed or self.created else "Nothing changed."]
        if self.applied:
            parts.append(f"Applied now: {', '.join(self.applied)}.")
        if self.reconnect:
            parts.append(f"Takes effect when the focuser reconnects (Disconnect, then Connect): "
                         f"{', '.join(self.reconnect)}.")
        if self.restart:
            parts.append(f"Takes effect when the server restarts: {', '.join(self.restart)}.")
        if self.dropped:
            parts.append(f"Removed (not used by this driver): {', '.join(self.dropped)}.")
        return " ".join(parts)

    def as_json(self) -> dict[str, Any]:
        return {"ok": True, "message": self.message(), "path": self.path, "created": self.created,
                "device": self.device, "changed": self.changed, "applied": self.applied,
                "reconnect": self.reconnect, "restart": self.restart, "dropped": self.dropped}


def _differences(a: FocuserConfig, b: FocuserConfig) -> list[str]:
    return [f.name for f in fields(FocuserConfig) if getattr(a, f.name) != getattr(b, f.name)]


class Settings:
    """The config file behind the running server, and the one way the pages change it."""

    def __init__(self, config: Config, devices: dict[int, FocuserDevice]) -> None:
        self.path: Path = config.settings_path()
        self.devices = devices
        self.started = config  # what the running focusers were built from
        self.saved = config  # the file's meaning after the last save (or at start)
        self._lock = threading.Lock()

    # --- reading ---------------------------------------------------------------------------------------------
    def _document(self) -> tuple[tomlkit.TOMLDocument, bool]:
        if self.path.exists():
            return cw.read_document(self.path), False
        return cw.document_for(self.saved), True

    def raw_table(self, index: int) -> dict[str, Any]:
        """Focuser ``index``'s keys as written in the file (empty when the file does not exist yet)."""
        try:
            doc, created = self._document()
        except ConfigError:
            return {}
        return {} if created else cw.current_table(doc, index)

    def pending(self, index: int) -> dict[str, str]:
        """Saved keys the running focuser does not use yet: key -> "reconnect" or "restart"."""
        device = self.devices.get(index)
        if device is None or index >= len(self.saved.focusers):
            return {}
        result: dict[str, str] = {}
        for key in _differences(device.cfg, self.saved.focusers[index]):
            info = KEYS_BY_NAME.get(key)
            if info is not None and info.applies != LIVE:
                reconnect = info.applies == RECONNECT and device.reconnect_applies_settings
                result[key] = "reconnect" if reconnect else "restart"
        return result

    # --- writing ---------------------------------------------------------------------------------------------
    def _rejected(self, exc: ConfigError, index: int, submitted: dict[str, Any]) -> SettingsRejected:
        key = exc.key if exc.key and (exc.table == f"focuser #{index}" or exc.key in submitted) else None
        return SettingsRejected(str(exc), status=422, key=key)

    def _write(self, doc: tomlkit.TOMLDocument) -> None:
        try:
            cw.write_atomic(self.path, cw.dumps(doc))
        except cw.SettingsWriteError as exc:
            log.error("%s", exc)
            raise SettingsRejected(str(exc), status=500) from None

    def save_focuser(self, index: int, submitted: dict[str, Any]) -> SaveResult:
        """Change keys of focuser ``index`` (device number). Values are form text or JSON values; an empty
        optional field removes its key. Raises SettingsRejected, with the file and the running focuser
        unchanged."""
        with self._lock:
            try:
                doc, created = self._document()
                count = len(doc.unwrap().get("focuser", [{}]))
                if not 0 <= index < count:
                    raise SettingsRejected(f"There is no focuser {index} in {self.path}", status=404)
                before = cw.validate(doc, str(self.path)).focusers[index]
                changes = {key: cw.coerce(KEYS_BY_NAME[key], raw) if key in KEYS_BY_NAME else raw
                           for key, raw in submitted.items()}
                cw.set_focuser_keys(doc, index, changes)
                dropped: list[str] = []
                if isinstance(changes.get("driver"), str) and changes["driver"] != before.driver:
                    dropped = [k for k in cw.drop_keys_of_other_drivers(doc, index, changes["driver"])
                               if k not in submitted]
                new_config = cw.validate(doc, str(self.path))
            except ConfigError as exc:
                raise self._rejected(exc, index, submitted) from None
            new = new_config.focusers[index]
            changed = _differences(before, new)
            old_text = None if created else self.path.read_text(encoding="utf-8")
            if changed or created:
                self._write(doc)
            result = SaveResult(path=str(self.path), created=created, device=index, changed=changed,
                                dropped=dropped)
            device = self.devices.get(index)
            if device is not None:
                try:
                    applied = device.apply_settings(self._live_view(device, new))
                except InvalidOperationError as exc:
                    self._restore(old_text)
                    unsafe = [k for k in changed if KEYS_BY_NAME.get(k) and KEYS_BY_NAME[k].unsafe_while_moving]
                    raise SettingsRejected(exc.message, status=409, key=unsafe[0] if unsafe else None) from None
                except InvalidValueError as exc:  # a value the running hardware cannot take (max_step)
                    self._restore(old_text)
                    raise SettingsRejected(exc.message, status=422, key="max_step") from None
                result.applied = list(applied)
            self.saved = new_config
            for key, when in self.pending(index).items():
                (result.reconnect if when == "reconnect" else result.restart).append(key)
            if device is None:  # not running (added or disabled): everything waits for the next start
                result.restart = changed
            log.info("Focuser %d settings saved to %s: %s", index, self.path, result.message())
            return result

    @staticmethod
    def _live_view(device: FocuserDevice, new: FocuserConfig) -> FocuserConfig:
        """What the running focuser should become: the new values of the keys it can take without a restart
        (live ones at once, reconnect ones at its next Connect), the running values of the rest."""
        from dataclasses import replace

        takes = (LIVE, RECONNECT) if device.reconnect_applies_settings else (LIVE,)
        keys = {k: getattr(new, k) for k in _differences(device.cfg, new)
                if KEYS_BY_NAME.get(k) is not None and KEYS_BY_NAME[k].applies in takes}
        return replace(device.cfg, **keys)

    def _restore(self, old_text: str | None) -> None:
        """Put the file back as it was before a save that the running focuser refused."""
        try:
            if old_text is None:
                self.path.unlink(missing_ok=True)
            else:
                cw.write_atomic(self.path, old_text)
        except (OSError, cw.SettingsWriteError) as exc:
            log.error("Could not restore %s after a refused change: %s", self.path, exc)

    def add_focuser(self, submitted: dict[str, Any]) -> SaveResult:
        """Append a ``[[focuser]]`` table (driver, name, port for serial drivers); it is served from the next
        start, with the next device number, and no existing number changes."""
        allowed = {"driver", "name", "port"}
        unknown = sorted(set(submitted) - allowed)
        if unknown:
            raise SettingsRejected(f"Unknown field {unknown[0]!r} (a new focuser takes driver, name and port)",
                                   status=400)
        driver = submitted.get("driver")
        if driver not in DRIVERS:
            raise SettingsRejected(f"Choose a driver: one of {', '.join(DRIVERS)}", key="driver")
        values: dict[str, Any] = {"name": submitted.get("name", ""), "driver": driver}
        if driver in PORT_DRIVERS:
            values["port"] = submitted.get("port", "")
        values = {k: cw.coerce(KEYS_BY_NAME[k], v) for k, v in values.items()}
        with self._lock:
            try:
                doc, created = self._document()
                index = cw.append_focuser(doc, values)
                new_config = cw.validate(doc, str(self.path))
            except ConfigError as exc:
                raise SettingsRejected(str(exc), key=exc.key if exc.key in allowed else None) from None
            self._write(doc)
            self.saved = new_config
            result = SaveResult(path=str(self.path), created=created, device=index, changed=list(values),
                                restart=list(values))
            log.info("Focuser %d (%s) added to %s; it is served from the next start", index, values["name"],
                     self.path)
            return result

    def write_keys(self, index: int, values: dict[str, Any]) -> None:
        """Persist values a running focuser has already applied itself (``device.settings_writer``, e.g. an
        applied learned temperature coefficient). Raises SettingsRejected when the file cannot take them."""
        with self._lock:
            try:
                doc, _ = self._document()
                cw.set_focuser_keys(doc, index, dict(values))
                new_config = cw.validate(doc, str(self.path))
            except (ConfigError, IndexError) as exc:
                raise SettingsRejected(str(exc)) from None
            self._write(doc)
            self.saved = new_config
            log.info("Focuser %d: saved %s to %s", index, ", ".join(values), self.path)
