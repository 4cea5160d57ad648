"""The serial drivers this server knows, by their config name, imported only when used.

Adding a controller is one line here (plus its dialect module): ``create_driver`` builds it from its
``[[focuser]]`` table, and ``probe`` / ``driver = "auto"`` try its dialect's handshake in the order listed.
Each entry names a ``SerialEngine`` subclass with a ``from_config(cfg)`` class method and a ``DIALECT``
attribute (its ``Dialect`` class).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alpaca_focuser.drivers.serial_engine import SerialEngine

#: config name -> "module:class", in probing order (probe.py says why): "myfp2", then "pegasus", then "moonlite".
#: A new line goes where its protocol's queries confuse no controller tried after it.
SERIAL_DRIVER_CLASSES: dict[str, str] = {
    "myfp2": "alpaca_focuser.drivers.myfp2:MyFP2Driver",
    "pegasus": "alpaca_focuser.drivers.pegasus:PegasusDriver",
    "moonlite": "alpaca_focuser.drivers.moonlite:MoonliteDriver",
}


def serial_driver_class(name: str) -> type[SerialEngine]:
    """The driver class for ``driver = name``; KeyError for a name that is not a serial driver."""
    module, _, cls = SERIAL_DRIVER_CLASSES[name].partition(":")
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]
