"""The config writer: comments and layout kept, the loader's own validation, an atomic replace that leaves the old
file whole whatever fails."""

from __future__ import annotations

import errno
import os
import tomllib
from pathlib import Path

import pytest

from alpaca_focuser import config_writer as cw
from alpaca_focuser.config import Config, ConfigError, load_config
from alpaca_focuser.config_keys import KEYS_BY_NAME

SHIPPED = Path(__file__).resolve().parent.parent / "config.toml"


def shipped_copy(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(SHIPPED.read_text(encoding="utf-8"), encoding="utf-8")
    return path


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    a, b = before.splitlines(), after.splitlines()
    assert len(a) == len(b), "lines were added or removed"
    return [(x, y) for x, y in zip(a, b) if x != y]


def test_changing_a_value_keeps_every_comment_and_the_layout(tmp_path: Path) -> None:
    path = shipped_copy(tmp_path)
    before = path.read_text()
    doc = cw.read_document(path)
    cw.set_focuser_keys(doc, 0, {"speed": 750, "name": 'Main "scope" <focuser>'})
    cw.validate(doc, str(path))
    cw.write_atomic(path, cw.tomlkit.dumps(doc))
    after = path.read_text()
    # exactly the two lines changed, and the trailing comment of the speed line is still there
    assert changed_lines(before, after) == [
        ('name = "Simulated focuser"', 'name = "Main \\"scope\\" <focuser>"'),
        ("speed = 2000              # simulator: steps per second",
         "speed = 750              # simulator: steps per second"),
    ]
    config = load_config(path)
    assert config.focusers[0].speed == 750 and config.focusers[0].name == 'Main "scope" <focuser>'


def test_a_new_key_goes_after_the_tables_last_key_not_after_trailing_comments(tmp_path: Path) -> None:
    path = shipped_copy(tmp_path)
    doc = cw.read_document(path)
    cw.set_focuser_keys(doc, 0, {"description": "Refractor"})
    text = cw.tomlkit.dumps(doc)
    lines = text.splitlines()
    assert lines[lines.index("speed = 2000              # simulator: steps per second") + 1] == \
        'description = "Refractor"'
    assert text.rstrip().endswith("# read_timeout = 0.5      # seconds to wait for a reply")


def test_an_empty_optional_field_removes_the_key(tmp_path: Path) -> None:
    path = shipped_copy(tmp_path)
    doc = cw.read_document(path)
    cw.set_focuser_keys(doc, 0, {"step_size": cw.coerce(KEYS_BY_NAME["step_size"], "  ")})
    config = cw.validate(doc, str(path))
    assert config.focusers[0].step_size is None
    assert "step_size" not in cw.current_table(doc, 0)


@pytest.mark.parametrize("key, raw, value", [
    ("max_step", "1200", 1200), ("max_step", " 1200 ", 1200), ("step_size", "4.25", 4.25), ("step_size", "5", 5),
    ("absolute", "false", False), ("absolute", True, True), ("name", " spaced ", " spaced "),
    ("max_step", "12.5", "12.5"), ("max_step", "abc", "abc"),  # left as text: the loader names the problem
])
def test_form_values_become_toml_values(key: str, raw: object, value: object) -> None:
    assert cw.coerce(KEYS_BY_NAME[key], raw) == value


def test_the_loaders_message_names_the_key_and_nothing_is_written(tmp_path: Path) -> None:
    path = shipped_copy(tmp_path)
    before = path.read_bytes()
    doc = cw.read_document(path)
    cw.set_focuser_keys(doc, 0, {"max_step": cw.coerce(KEYS_BY_NAME["max_step"], "abc")})
    with pytest.raises(ConfigError) as info:
        cw.validate(doc, str(path))
    assert info.value.key == "max_step" and info.value.table == "focuser #0"
    assert 'max_step: must be an integer, got "abc"' in str(info.value)
    assert path.read_bytes() == before


def test_appending_a_focuser_keeps_every_device_number(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[[focuser]]\nname = "A"\n\n[[focuser]]\nname = "B"\nenabled = false\n', encoding="utf-8")
    doc = cw.read_document(path)
    index = cw.append_focuser(doc, {"name": "C", "driver": "moonlite", "port": "/dev/ttyUSB7"})
    assert index == 2
    config = cw.validate(doc, str(path))
    assert [(f.name, f.enabled) for f in config.focusers] == [("A", True), ("B", False), ("C", True)]
    text = cw.tomlkit.dumps(doc)
    assert "\n\n[[focuser]]\n# added on the setup page" in text and "device number 2" in text


def test_a_document_for_the_built_in_defaults_means_the_defaults() -> None:
    doc = cw.document_for(Config())
    assert cw.validate(doc, "<new>").focusers == Config().focusers
    assert tomllib.loads(cw.tomlkit.dumps(doc))["focuser"] == [
        {"name": "Simulated focuser", "driver": "simulator", "step_size": 4.5}]
    assert cw.tomlkit.dumps(doc).startswith("# alpaca-focuser configuration, created by the settings page")


# --- the atomic write ------------------------------------------------------------------------------------------

def test_write_keeps_the_mode_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = shipped_copy(tmp_path)
    path.chmod(0o664)
    cw.write_atomic(path, "# new\n")
    assert path.read_text() == "# new\n"
    assert (path.stat().st_mode & 0o777) == 0o664
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_a_new_file_is_not_world_readable(tmp_path: Path) -> None:
    path = tmp_path / "state" / "config.toml"
    cw.write_atomic(path, "# new\n")
    assert (path.stat().st_mode & 0o777) == cw.NEW_FILE_MODE


def test_a_symlinked_config_stays_a_symlink(tmp_path: Path) -> None:
    real = shipped_copy(tmp_path)
    link = tmp_path / "link.toml"
    link.symlink_to(real)
    cw.write_atomic(link, "# through the link\n")
    assert link.is_symlink() and real.read_text() == "# through the link\n"


@pytest.mark.parametrize("number, words", [
    (errno.EBUSY, "mounted on its own"), (errno.EROFS, "ReadWritePaths="), (errno.EACCES, "may not write"),
    (errno.ENOSPC, "disk is full"),
])
def test_a_failed_replace_leaves_the_old_file_whole_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                number: int, words: str) -> None:
    path = shipped_copy(tmp_path)
    before = path.read_bytes()

    def failing_replace(src: str, dst: str) -> None:
        raise OSError(number, os.strerror(number))

    monkeypatch.setattr(cw.os, "replace", failing_replace)
    with pytest.raises(cw.SettingsWriteError) as info:
        cw.write_atomic(path, "# would be new\n")
    assert words in str(info.value) and str(path) in str(info.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"], "the temp file is removed"
