"""Writing ``[[focuser]]`` settings back to the config file: the user's comments and layout kept (tomlkit), the
loader's own validation, and an atomic replace.

The settings page never writes a file the loader would refuse: it edits a copy of the document, runs the copy
through ``parse_config`` (exactly what start-up runs) and only then replaces the file: temp file in the same
directory, fsync, rename, fsync of the directory, as ``state.py`` does, so a power cut leaves the old file or the
new one, never half of each.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.container import Container
from tomlkit.items import AoT, Table

from alpaca_focuser.config import Config, ConfigError, FocuserConfig, _focuser, parse_config
from alpaca_focuser.config_keys import FOCUSER_KEYS, KEYS_BY_NAME, KeyInfo

NEW_FILE_MODE = 0o640  # a new config may hold the setup password hash: not for every local user


class SettingsWriteError(Exception):
    """The file could not be written; the message says why and what to change."""


# --- form values to TOML values ----------------------------------------------------------------------------------

def coerce(info: KeyInfo, raw: Any) -> Any:
    """A submitted value as the TOML value to store; None removes the key (an empty optional field).

    Anything that does not convert is stored as the text it was, so the loader's own message names the problem
    ("must be an integer, got \\"abc\\""): the rules live in the loader, not here.
    """
    if isinstance(raw, str):
        text = raw.strip() if info.kind != "text" else raw
        if text.strip() == "" and info.optional:
            return None
        if info.kind == "int":
            try:
                return int(text)
            except ValueError:
                return raw
        if info.kind == "number":
            try:
                number = float(text)
            except ValueError:
                return raw
            return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number
        if info.kind == "bool":
            lowered = text.lower()
            if lowered in ("true", "on", "yes", "1"):
                return True
            if lowered in ("false", "off", "no", "0"):
                return False
            return raw
        return raw
    if raw is None:
        return None if info.optional else raw
    return raw


# --- the document --------------------------------------------------------------------------------------------

def read_document(path: Path) -> tomlkit.TOMLDocument:
    """The file as an editable document; ConfigError (one line, naming the file) if it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid UTF-8 text") from None
    try:
        return tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}") from None


def _minimal_table(cfg: FocuserConfig, index: int) -> dict[str, Any]:
    """The keys a ``[[focuser]]`` table needs to mean ``cfg``: those whose value differs from what the loader
    would give without them."""
    table: dict[str, Any] = {"name": cfg.name, "driver": cfg.driver}
    if cfg.port is not None:
        table["port"] = cfg.port
    baseline = _focuser(dict(table), index, "<baseline>")
    for f in fields(FocuserConfig):
        value = getattr(cfg, f.name)
        if f.name not in table and value is not None and value != getattr(baseline, f.name):
            table[f.name] = value
    return table


def document_for(config: Config) -> tomlkit.TOMLDocument:
    """A new document meaning the running configuration's focusers: for a server started on built-in defaults,
    whose first Save creates the file."""
    doc = tomlkit.document()
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    doc.add(tomlkit.comment(f"alpaca-focuser configuration, created by the settings page on {stamp}."))
    doc.add(tomlkit.comment("The server reads this file at start when no --config is given and there is no "
                            "./config.toml."))
    doc.add(tomlkit.comment("Keys left out keep their defaults: see README.md or config.toml in the project."))
    doc.add(tomlkit.nl())
    aot = tomlkit.aot()
    for index, cfg in enumerate(config.focusers):
        table = tomlkit.table()
        for key, value in _minimal_table(cfg, index).items():
            table[key] = value
        aot.append(table)
    doc["focuser"] = aot
    return doc


def _focuser_tables(doc: tomlkit.TOMLDocument) -> Any:
    """The document's ``[[focuser]]`` array, created when the file has none (the loader then assumes one
    focuser with every default, which an empty table means too)."""
    if "focuser" not in doc:
        aot = tomlkit.aot()
        aot.append(tomlkit.table())
        doc["focuser"] = aot
    return doc["focuser"]


def _set_key(table: Any, key: str, value: Any) -> None:
    """Set ``key``, keeping its line (and trailing comment) if present; a new key goes after the table's last
    key rather than after trailing comments, which in a commented file often belong to the next example."""
    if key in table:
        table[key] = value
        return
    container = table.value if isinstance(table, Table) else None
    if isinstance(container, Container):
        keys = [k for k, _ in container.body if k is not None]
        if keys:
            try:
                container._insert_after(keys[-1], key, tomlkit.item(value))
                return
            except (AttributeError, KeyError):  # another tomlkit: plain assignment still keeps the meaning
                pass
    table[key] = value


def set_focuser_keys(doc: tomlkit.TOMLDocument, index: int, changes: dict[str, Any]) -> None:
    """Apply ``{key: value}`` to focuser ``index``; a None value removes the key."""
    tables = _focuser_tables(doc)
    if not 0 <= index < len(tables):
        raise IndexError(index)
    table = tables[index]
    for key, value in changes.items():
        if value is None:
            if key in table:
                del table[key]
        else:
            _set_key(table, key, value)


def append_focuser(doc: tomlkit.TOMLDocument, values: dict[str, Any]) -> int:
    """Add a ``[[focuser]]`` table at the end (so no existing device number changes); returns its index."""
    tables = _focuser_tables(doc)
    if isinstance(tables, AoT) and len(tables):
        tables[-1].add(tomlkit.nl())  # a blank line before the new table
    table = tomlkit.table()
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    table.add(tomlkit.comment(f"added on the setup page, {stamp}: device number {len(tables)}"))
    for key, value in values.items():
        if value is not None:
            table[key] = value
    tables.append(table)
    return len(tables) - 1


def validate(doc: tomlkit.TOMLDocument, source: str) -> Config:
    """The loader's verdict on the edited document: the Config it means, or its ConfigError."""
    return parse_config(doc.unwrap(), source)


def keys_for_driver(driver: str) -> list[KeyInfo]:
    return [k for k in FOCUSER_KEYS if not k.drivers or driver in k.drivers]


def drop_keys_of_other_drivers(doc: tomlkit.TOMLDocument, index: int, driver: str) -> list[str]:
    """After a driver change: remove keys the new driver does not take (the loader would refuse them)."""
    table = _focuser_tables(doc)[index]
    dropped = [key for key in list(table) if key in KEYS_BY_NAME and KEYS_BY_NAME[key].drivers
               and driver not in KEYS_BY_NAME[key].drivers]
    for key in dropped:
        del table[key]
    return dropped


# --- the atomic write ------------------------------------------------------------------------------------------

def _user() -> str:
    try:
        import pwd  # only on this error path

        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _explain(exc: OSError, path: Path) -> str:
    where = path.parent
    reason = exc.strerror or str(exc)
    if exc.errno == errno.EROFS:
        return (f"Cannot save to {path}: {where} is read-only for the server ({reason}). Under systemd the unit "
                f"needs ReadWritePaths={where} (the shipped unit has it for /etc/alpaca-focuser); in Docker keep "
                f"the config in the /data volume.")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (f"Cannot save to {path}: the server (user {_user()}) may not write in {where} ({reason}). Make "
                f"the folder writable for that user, e.g. sudo chgrp {_user()} {where} && sudo chmod g+w {where}.")
    if exc.errno in (errno.EBUSY, errno.EXDEV):
        return (f"Cannot replace {path}: it is a file mounted on its own (as with docker run -v "
                f"file:{path}), which cannot be replaced atomically ({reason}). Mount its folder instead, or "
                f"keep the config in the /data volume.")
    if exc.errno == errno.ENOSPC:
        return f"Cannot save to {path}: the disk is full ({reason})."
    return f"Cannot save to {path}: {reason}"


def dumps(doc: tomlkit.TOMLDocument) -> str:
    """The document as TOML text, comments and layout as they were."""
    return tomlkit.dumps(doc)


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically, keeping the old file's mode and, where allowed, its owner.
    A symlink is followed, so the link stays a link. Raises SettingsWriteError with a message a user can act
    on; the old file is then untouched."""
    target = Path(os.path.realpath(path))
    try:
        old = os.stat(target)
    except FileNotFoundError:
        old = None
    except OSError as exc:
        raise SettingsWriteError(_explain(exc, target)) from exc
    tmp: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fchmod(fh.fileno(), stat.S_IMODE(old.st_mode) if old else NEW_FILE_MODE)
            if old is not None:
                try:
                    os.fchown(fh.fileno(), old.st_uid, old.st_gid)
                except PermissionError:
                    pass  # not root: the file becomes ours, with the same mode
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        tmp = None
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise SettingsWriteError(_explain(exc, target)) from exc
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def current_table(doc: tomlkit.TOMLDocument, index: int) -> dict[str, Any]:
    """Focuser ``index``'s keys as written in the file (plain Python values)."""
    tables = doc.unwrap().get("focuser", [{}])
    return dict(tables[index]) if 0 <= index < len(tables) else {}


__all__ = ["SettingsWriteError", "append_focuser", "coerce", "current_table", "document_for",
           "drop_keys_of_other_drivers", "keys_for_driver", "read_document", "set_focuser_keys", "validate",
           "write_atomic"]
