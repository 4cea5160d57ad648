"""The settings form of a focuser page, rendered from ``FOCUSER_KEYS``: one labelled field per ``[[focuser]]``
key, so a key added to the config table appears on the page with no change here.

Fields are plain text inputs even for numbers, so whatever the user types reaches the config loader, whose
message (the one source of the rules) then shows next to the field.
"""

from __future__ import annotations

from html import escape
from typing import Any

from alpaca_focuser.config import FocuserConfig
from alpaca_focuser.config_keys import FOCUSER_KEYS, KeyInfo

WHEN = {"live": "applies at once", "reconnect": "applies when the focuser reconnects",
        "restart": "applies at the next start of the server"}


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _control(info: KeyInfo, field_id: str, value: str, placeholder: str, describedby: str) -> str:
    common = (f'id="{field_id}" name="{escape(info.key)}" data-initial="{escape(value)}" '
              f'aria-describedby="{describedby}"')
    if info.kind == "bool" and not info.optional:
        checked = " checked" if value == "true" else ""
        return f'<input type="checkbox" {common}{checked}>'
    if info.kind in ("bool", "choice"):
        if info.kind == "bool":
            options = [("", f"Not set ({placeholder or 'keep the controller’s setting'})"), ("true", "On"),
                       ("false", "Off")]
        else:
            options = [(c, c) for c in info.choices]
        rendered = "".join(f'<option value="{escape(v)}"{" selected" if v == value else ""}>{escape(label)}</option>'
                           for v, label in options)
        return f"<select {common}>{rendered}</select>"
    mode = {"int": ' inputmode="numeric"', "number": ' inputmode="decimal"'}.get(info.kind, "")
    hint = f' placeholder="{escape(placeholder)}"' if placeholder else ""
    return f'<input type="text" autocomplete="off" spellcheck="false"{mode}{hint} {common} value="{escape(value)}">'


def render_settings_form(device_number: int, saved: FocuserConfig, raw: dict[str, Any],
                         pending: dict[str, str], reconnect_applies: bool = False) -> str:
    """``saved``: the file's meaning for this focuser; ``raw``: its keys as written (an optional key left out
    shows empty, with the value it means as a placeholder); ``pending``: saved keys not running yet."""
    rows = []
    for info in FOCUSER_KEYS:
        effective = getattr(saved, info.key, None)
        if info.key in raw:
            value, placeholder = _text(raw[info.key]), ""
        elif info.optional:
            value, placeholder = "", _text(effective)
        else:
            value, placeholder = _text(effective), ""
        field_id = f"f-{info.key}"
        hidden = " hidden" if info.drivers and saved.driver not in info.drivers else ""
        drivers = f' data-drivers="{escape(" ".join(info.drivers))}"' if info.drivers else ""
        note = ""
        if info.key in pending:
            note = (f'<span class="pending">Saved; running value kept until '
                    f'{"the focuser reconnects" if pending[info.key] == "reconnect" else "the next start"}</span>')
        when = info.applies if info.applies != "reconnect" or reconnect_applies else "restart"
        help_text = f"{info.help}. {WHEN[when].capitalize()}."
        if info.unsafe_while_moving:
            help_text += " Not while the focuser moves."
        control = _control(info, field_id, value, placeholder, f"h-{info.key} e-{info.key}")
        check = " check" if info.kind == "bool" and not info.optional else ""
        rows.append(
            f'<div class="field{check}"{drivers}{hidden}>'
            f'<label for="{field_id}">{escape(info.label)}</label>{control}'
            f'<small id="h-{info.key}" class="help">{escape(help_text)}</small>{note}'
            f'<span id="e-{info.key}" class="field-error" aria-live="polite"></span></div>')
    return (f'<form id="settings-form" data-device="{device_number}" novalidate>{"".join(rows)}'
            f'<div class="save-row"><button type="submit" id="save" class="primary">Save</button>'
            f'<p id="settings-message" role="status" aria-live="polite"></p></div></form>')
