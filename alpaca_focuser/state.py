"""The small persistent state file: each focuser's UniqueID, last known position and focusing state.

Positions here are motor positions (what the controller counts), not the client's: with ``reverse`` the client
sees ``max_step - motor``, and keeping the motor frame on disk means a change of ``reverse`` or ``max_step``
between runs maps them correctly. Besides the position, a focuser's entry holds ``temp_comp`` (whether TempComp
was on) and ``temp_comp_pairs`` (the learned (temperature, position) pairs); these are written when they change,
never on a timer.

Saved atomically (temp file, fsync, rename, fsync of the directory) so a power cut mid-write leaves either the
old or the new file, never a torn one: losing the focuser's position costs a user a whole re-focus.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATE_FILE = "state.json"


class StateStore:
    """Thread-safe access to ``<state_dir>/state.json``. Keys are device numbers as strings."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / STATE_FILE
        self._lock = threading.Lock()
        self._data: dict[str, Any] = {"focusers": {}}
        self._load()

    def _load(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("Cannot read state file %s (%s); starting with empty state", self.path, exc)
            return
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or not isinstance(data.get("focusers"), dict):
                raise ValueError("unexpected layout")
        except ValueError as exc:
            # Keep the bad file for a human to look at rather than overwriting the evidence.
            backup = self.path.with_suffix(".json.corrupt")
            log.error("State file %s is corrupt (%s); moved it to %s and starting afresh", self.path, exc, backup)
            try:
                os.replace(self.path, backup)
            except OSError:
                pass
            return
        self._data = data

    def _entry(self, device_number: int) -> dict[str, Any]:
        entry = self._data["focusers"].setdefault(str(device_number), {})
        if not isinstance(entry, dict):
            entry = self._data["focusers"][str(device_number)] = {}
        return entry

    def unique_id(self, device_number: int) -> str:
        """The device's UniqueID: generated once, saved, and the same on every later start."""
        with self._lock:
            entry = self._entry(device_number)
            value = entry.get("unique_id")
            if isinstance(value, str) and value:
                return value
            entry["unique_id"] = str(uuid.uuid4())
            self._save_locked()
            return entry["unique_id"]

    def position(self, device_number: int) -> int | None:
        with self._lock:
            value = self._entry(device_number).get("position")
            return value if isinstance(value, int) and not isinstance(value, bool) else None

    def save_position(self, device_number: int, position: int) -> None:
        with self._lock:
            entry = self._entry(device_number)
            if entry.get("position") == position:
                return
            entry["position"] = position
            self._save_locked()

    def get(self, device_number: int, key: str, default: Any = None) -> Any:
        """Another saved value of a focuser (e.g. ``temp_comp``), or ``default``. The caller checks its type:
        the file may have been edited by hand."""
        with self._lock:
            return copy.deepcopy(self._entry(device_number).get(key, default))

    def update(self, device_number: int, **values: Any) -> None:
        """Save values of a focuser (JSON types); writes the file only when something changed."""
        with self._lock:
            entry = self._entry(device_number)
            if all(key in entry and entry[key] == value for key, value in values.items()):
                return
            entry.update(copy.deepcopy(values))  # a copy: a caller mutating its list must not bypass the check
            self._save_locked()

    def _save_locked(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".state-", suffix=".tmp", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(self._data, fh, indent=2, sort_keys=True)
                    fh.write("\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            # A read-only or full disk must not take the focuser down; say so loudly instead.
            log.error("Cannot save state to %s: %s", self.path, exc)
