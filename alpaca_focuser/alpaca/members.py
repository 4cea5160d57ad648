"""The member table: every IFocuserV4 member declared once.

Each entry carries the URL name, the HTTP verb, the parameters with their parsers, the reply's value type and
whether the device must be connected. Validation, connection checks, error mapping and logging are done once,
by ``DeviceResource`` in ``device_api.py``, from this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from alpaca_focuser.alpaca.params import Parser, parse_bool, parse_int32, parse_str
from alpaca_focuser.focuser.device import FocuserDevice


@dataclass(frozen=True)
class Param:
    name: str  # exact casing, as PUT form keys must be sent
    parse: Parser


@dataclass(frozen=True)
class Member:
    name: str  # the ASCOM name, e.g. "IsMoving"; the URL uses name.lower()
    verb: str  # "GET" or "PUT"
    call: Callable[..., Any]  # call(device, *parsed params)
    value_type: str | None = None  # "bool", "int", "float", "str", "list"; None: the reply has no Value
    params: tuple[Param, ...] = ()
    needs_connection: bool = True

    @property
    def path(self) -> str:
        return self.name.lower()


def _get(name: str, value_type: str, call: Callable[[FocuserDevice], Any], needs_connection: bool = True) -> Member:
    return Member(name, "GET", call, value_type, (), needs_connection)


def _put(name: str, call: Callable[..., Any], *params: Param, value_type: str | None = None,
         needs_connection: bool = True) -> Member:
    return Member(name, "PUT", call, value_type, params, needs_connection)


_COMMAND_PARAMS = (Param("Command", parse_str), Param("Raw", parse_bool))

MEMBERS: tuple[Member, ...] = (
    # --- common to all devices -------------------------------------------------------------------------------
    _put("Action", lambda d, a, p: d.action(a, p), Param("Action", parse_str), Param("Parameters", parse_str),
         value_type="str", needs_connection=False),
    _put("CommandBlind", lambda d, c, r: d.command_blind(c, r), *_COMMAND_PARAMS, needs_connection=False),
    _put("CommandBool", lambda d, c, r: d.command_bool(c, r), *_COMMAND_PARAMS, value_type="bool",
         needs_connection=False),
    _put("CommandString", lambda d, c, r: d.command_string(c, r), *_COMMAND_PARAMS, value_type="str",
         needs_connection=False),
    _put("Connect", lambda d: d.connect(), needs_connection=False),
    _get("Connected", "bool", lambda d: d.connected(), needs_connection=False),
    _put("Connected", lambda d, v: d.set_connected(v), Param("Connected", parse_bool), needs_connection=False),
    _get("Connecting", "bool", lambda d: d.connecting(), needs_connection=False),
    _get("Description", "str", lambda d: d.description(), needs_connection=False),
    _get("DeviceState", "list", lambda d: d.device_state()),
    _put("Disconnect", lambda d: d.disconnect(), needs_connection=False),
    _get("DriverInfo", "str", lambda d: d.driver_info(), needs_connection=False),
    _get("DriverVersion", "str", lambda d: d.driver_version(), needs_connection=False),
    _get("InterfaceVersion", "int", lambda d: d.interface_version(), needs_connection=False),
    _get("Name", "str", lambda d: d.name(), needs_connection=False),
    _get("SupportedActions", "list", lambda d: d.supported_actions(), needs_connection=False),
    # --- IFocuserV4 ------------------------------------------------------------------------------------------
    _get("Absolute", "bool", lambda d: d.absolute()),
    _put("Halt", lambda d: d.halt()),
    _get("IsMoving", "bool", lambda d: d.is_moving()),
    _get("MaxIncrement", "int", lambda d: d.max_increment()),
    _get("MaxStep", "int", lambda d: d.max_step()),
    _put("Move", lambda d, p: d.move(p), Param("Position", parse_int32)),
    _get("Position", "int", lambda d: d.position()),
    _get("StepSize", "float", lambda d: d.step_size()),
    _get("TempComp", "bool", lambda d: d.temp_comp()),
    _put("TempComp", lambda d, v: d.set_temp_comp(v), Param("TempComp", parse_bool)),
    _get("TempCompAvailable", "bool", lambda d: d.temp_comp_available()),
    _get("Temperature", "float", lambda d: d.temperature()),
)

# (url name, verb) -> member; and url name -> the verbs it allows (for 405 replies)
BY_ROUTE: dict[tuple[str, str], Member] = {(m.path, m.verb): m for m in MEMBERS}
VERBS: dict[str, tuple[str, ...]] = {}
for _m in MEMBERS:
    VERBS[_m.path] = VERBS.get(_m.path, ()) + (_m.verb,)
