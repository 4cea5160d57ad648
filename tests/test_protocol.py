"""The Alpaca protocol matrix, through Falcon's test client over the real app, devices and simulator drivers.

Rules come from the Alpaca API reference, ConformU and the official OpenAPI file in /work/shared/spec: the reply
envelope, ID and casing rules, HTTP status codes, the member table against the spec, and the IFocuserV4
semantics (connection, motion, clamping, halt, temperature compensation, actions, DeviceState).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlencode

import falcon.testing
import pytest
import yaml

from alpaca_focuser.alpaca.members import MEMBERS, Member
from alpaca_focuser.alpaca.params import parse_bool, parse_int32, parse_str
from conftest import wait_until

SPEC = Path(__file__).resolve().parent.parent.parent / "shared" / "spec" / "AlpacaDeviceAPI_v1.yaml"

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
NOT_CONNECTED = 0x407
NOT_IMPLEMENTED = 0x400
INVALID_VALUE = 0x401
ACTION_NOT_IMPLEMENTED = 0x40C

# Written out here rather than imported, so a wrong zero value in the product is caught.
ZERO = {"bool": False, "int": 0, "float": 0.0, "str": "", "list": []}
JSON_TYPE = {"bool": bool, "int": int, "float": float, "str": str, "list": list}
ENVELOPE_KEYS = {"ClientTransactionID", "ServerTransactionID", "ErrorNumber", "ErrorMessage"}
# The spec's pattern for DateTime values in DeviceState
ISO_UTC = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?Z$")

FAST = {"name": "A", "speed": 20000, "max_step": 50000, "step_size": 4.5}
SLOW = {"name": "Slow", "speed": 2000, "max_step": 50000, "step_size": 4.5}

Client = falcon.testing.TestClient


# --- helpers ------------------------------------------------------------------------------------------------------

def api(member: str, device: int = 0) -> str:
    return f"/api/v1/focuser/{device}/{member}"


def get(client: Client, member: str, query: str = "", device: int = 0) -> falcon.testing.Result:
    return client.simulate_get(api(member, device), query_string=query)


def put(client: Client, member: str, body: str | dict[str, Any] = "", device: int = 0) -> falcon.testing.Result:
    if isinstance(body, dict):
        body = urlencode(body)
    return client.simulate_put(api(member, device), body=body, headers=FORM)


def ok(result: falcon.testing.Result) -> Any:
    """The Value of a successful reply (None for replies without one)."""
    assert result.status_code == 200, result.text
    body = result.json
    assert body["ErrorNumber"] == 0, body
    assert body["ErrorMessage"] == ""
    return body.get("Value")


def value(client: Client, member: str, device: int = 0) -> Any:
    return ok(get(client, member, device=device))


def connect(client: Client, device: int = 0) -> None:
    ok(put(client, "connected", "Connected=true", device))
    assert value(client, "connected", device) is True


def error_number(result: falcon.testing.Result) -> int:
    assert result.status_code == 200, result.text
    return result.json["ErrorNumber"]


def assert_bad_request(result: falcon.testing.Result, *words: str) -> None:
    """HTTP 400 with a plain-text body that says what is wrong."""
    assert result.status_code == 400, (result.status, result.text)
    assert result.headers["content-type"].startswith("text/plain"), result.headers["content-type"]
    assert result.text.strip(), "a 400 must say what is wrong"
    for word in words:
        assert word.lower() in result.text.lower(), (word, result.text)


def assert_envelope(result: falcon.testing.Result, member: Member, client_transaction_id: int) -> dict[str, Any]:
    """The Alpaca reply rules for one member's reply; returns the decoded body."""
    assert result.status_code == 200, (result.status, result.text)
    assert result.headers["content-type"].split(";")[0].strip() == "application/json"
    body = json.loads(result.text)
    expected = ENVELOPE_KEYS | ({"Value"} if member.value_type else set())
    assert set(body) == expected, f"{member.verb} {member.name}: keys {sorted(body)}"
    assert body["ClientTransactionID"] == client_transaction_id
    assert type(body["ServerTransactionID"]) is int and body["ServerTransactionID"] >= 1
    assert type(body["ErrorNumber"]) is int
    assert type(body["ErrorMessage"]) is str, "ErrorMessage must never be null"
    if body["ErrorNumber"] == 0:
        assert body["ErrorMessage"] == ""
    else:
        assert body["ErrorMessage"], "an error reply must say what went wrong"
    if member.value_type:
        assert type(body["Value"]) is JSON_TYPE[member.value_type], (member.name, body["Value"])
        if body["ErrorNumber"] != 0:
            assert body["Value"] == ZERO[member.value_type]
    return body


# Valid values for PUT parameters: by name where it matters, else by parser (so new members are covered too).
VALID_BY_NAME = {"Action": "SyncPosition", "Parameters": "100", "Position": "100", "TempComp": "false",
                 "Connected": "true", "Command": "X", "Raw": "false"}
VALID_BY_PARSER = {parse_bool: "true", parse_int32: "100", parse_str: "x"}


def valid_body(member: Member, client_transaction_id: int) -> dict[str, str]:
    body = {p.name: VALID_BY_NAME.get(p.name, VALID_BY_PARSER.get(p.parse, "1")) for p in member.params}
    body.update(ClientID="42", ClientTransactionID=str(client_transaction_id))
    return body


def call(client: Client, member: Member, client_transaction_id: int) -> falcon.testing.Result:
    if member.verb == "GET":
        return get(client, member.path, f"ClientID=42&ClientTransactionID={client_transaction_id}")
    return put(client, member.path, valid_body(member, client_transaction_id))


def member_id(member: Member) -> str:
    return f"{member.verb}-{member.name}"


# Expected errors for members that do not need a connection (Action's only action needs one)
DISCONNECTED_ERRORS = {("PUT", "Action"): NOT_CONNECTED, ("PUT", "CommandBlind"): NOT_IMPLEMENTED,
                       ("PUT", "CommandBool"): NOT_IMPLEMENTED, ("PUT", "CommandString"): NOT_IMPLEMENTED}
CONNECTED_ERRORS = {("PUT", "CommandBlind"): NOT_IMPLEMENTED, ("PUT", "CommandBool"): NOT_IMPLEMENTED,
                    ("PUT", "CommandString"): NOT_IMPLEMENTED}


# --- the member table against the official spec -------------------------------------------------------------------

def _spec_members() -> dict[tuple[str, str], tuple[str | None, set[str]]]:
    """(url name, verb) -> (value type, required PUT parameters) for the common and focuser members."""
    spec = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    types = {"BoolResponse": "bool", "IntResponse": "int", "DoubleResponse": "float", "StringResponse": "str",
             "StringArrayResponse": "list", "DeviceStateResponse": "list", "MethodResponse": None}

    def resolve(node: Any) -> Any:
        while isinstance(node, dict) and "$ref" in node:
            target: Any = spec
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            node = target
        return node

    def required(schema: Any) -> set[str]:
        schema = resolve(schema)
        names = set(schema.get("required", []))
        for sub in schema.get("allOf", []):
            names |= required(sub)
        return names

    found = {}
    for path, ops in spec["paths"].items():
        m = re.fullmatch(r"/(\{device_type\}|focuser)/\{device_number\}/(\w+)", path)
        if not m:
            continue
        for verb, op in ops.items():
            ref = op["responses"]["200"]["$ref"].rsplit("/", 1)[1]
            params: set[str] = set()
            if "requestBody" in op:
                body = resolve(op["requestBody"])
                params = required(body["content"]["application/x-www-form-urlencoded"]["schema"])
            found[(m.group(2), verb.upper())] = (types[ref], params - {"ClientID", "ClientTransactionID"})
    return found


def test_member_table_matches_the_official_spec() -> None:
    spec = _spec_members()
    ours = {(m.path, m.verb): (m.value_type, {p.name for p in m.params}) for m in MEMBERS}
    assert len(spec) == 28  # 16 common + 12 focuser operations: the spec file is the one we expect
    assert ours == spec


def test_member_names_lower_case_to_their_paths() -> None:
    for m in MEMBERS:
        assert m.path == m.name.lower() and m.verb in ("GET", "PUT")
        if m.verb == "GET":
            assert m.value_type is not None and not m.params


# --- every member: the envelope, disconnected and connected -------------------------------------------------------

@pytest.mark.parametrize("member", MEMBERS, ids=member_id)
def test_every_member_while_disconnected(app_factory: Callable[..., Client], member: Member) -> None:
    client = app_factory(FAST)
    body = assert_envelope(call(client, member, 7001), member, 7001)
    if member.needs_connection:
        assert body["ErrorNumber"] == NOT_CONNECTED, body
        assert "not connected" in body["ErrorMessage"]
    else:
        assert body["ErrorNumber"] == DISCONNECTED_ERRORS.get((member.verb, member.name), 0), body


@pytest.mark.parametrize("member", MEMBERS, ids=member_id)
def test_every_member_while_connected(app_factory: Callable[..., Client], member: Member) -> None:
    client = app_factory(FAST)
    connect(client)
    body = assert_envelope(call(client, member, 4294967295), member, 4294967295)
    assert body["ErrorNumber"] == CONNECTED_ERRORS.get((member.verb, member.name), 0), body


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One connected focuser for read-only tests (GETs change nothing)."""
    from alpaca_focuser.app import build_devices, create_app
    from alpaca_focuser.state import StateStore
    from conftest import make_config  # the shared config builder

    config = make_config(tmp_path_factory.mktemp("shared"), FAST)
    devices = build_devices(config, StateStore(config.resolved_state_dir()))
    client = falcon.testing.TestClient(create_app(config, devices))
    connect(client)
    yield client
    for device in devices.values():
        device.shutdown()


@pytest.mark.parametrize("member", [m for m in MEMBERS if m.verb == "GET"], ids=member_id)
def test_every_get_ignores_extra_parameters_and_order(shared: Client, member: Member) -> None:
    client = shared
    first = get(client, member.path, "Foo=bar&ClientTransactionID=11&ClientID=3&x=")
    second = get(client, member.path, "ClientID=3&ClientTransactionID=12&Foo=bar")
    assert assert_envelope(first, member, 11)["ErrorNumber"] == 0
    assert assert_envelope(second, member, 12)["ErrorNumber"] == 0


@pytest.mark.parametrize("member", [m for m in MEMBERS if m.verb == "PUT"], ids=member_id)
def test_every_put_ignores_extra_parameters_and_order(client: Client, member: Member) -> None:
    connect(client)
    body = valid_body(member, 21)
    body["Extra"] = "whatever"
    reordered = dict(reversed(list(valid_body(member, 22).items())))
    expected = CONNECTED_ERRORS.get((member.verb, member.name), 0)
    assert assert_envelope(put(client, member.path, body), member, 21)["ErrorNumber"] == expected
    assert assert_envelope(put(client, member.path, reordered), member, 22)["ErrorNumber"] == expected


@pytest.mark.parametrize("member", [m for m in MEMBERS if m.params], ids=member_id)
def test_every_required_put_parameter_missing_or_miscased_is_400(client: Client, member: Member) -> None:
    for param in member.params:
        body = valid_body(member, 1)
        text = body.pop(param.name)
        assert_bad_request(put(client, member.path, body), param.name)
        body[param.name.lower() if param.name.lower() != param.name else param.name.upper()] = text
        assert_bad_request(put(client, member.path, body), param.name)


# --- transaction IDs ----------------------------------------------------------------------------------------------

def test_server_transaction_id_starts_at_1_and_increments(client: Client) -> None:
    ids = [get(client, "name").json["ServerTransactionID"]]
    ids.append(put(client, "connect").json["ServerTransactionID"])
    ids.append(client.simulate_get("/management/apiversions").json["ServerTransactionID"])
    ids.append(get(client, "connected").json["ServerTransactionID"])
    ids.append(put(client, "move", "Position=10").json["ServerTransactionID"])
    assert ids == [1, 2, 3, 4, 5]


def test_client_transaction_id_is_0_when_absent(client: Client) -> None:
    assert get(client, "name").json["ClientTransactionID"] == 0
    assert put(client, "connect").json["ClientTransactionID"] == 0
    assert put(client, "connected", "Connected=true&ClientID=5").json["ClientTransactionID"] == 0


@pytest.mark.parametrize("key", ["ClientTransactionID", "clienttransactionid", "CLIENTTRANSACTIONID",
                                 "clientTransactionId"])
def test_get_query_keys_are_case_insensitive(client: Client, key: str) -> None:
    assert get(client, "name", f"{key}=5").json["ClientTransactionID"] == 5


@pytest.mark.parametrize("key", ["clientid", "CLIENTID"])
def test_get_miscased_client_id_is_still_validated(client: Client, key: str) -> None:
    assert_bad_request(get(client, "name", f"{key}=abc"), "ClientID")


@pytest.mark.parametrize("key", ["clienttransactionid", "CLIENTTRANSACTIONID", "ClientTransactionId"])
def test_put_form_keys_are_case_sensitive(client: Client, key: str) -> None:
    reply = put(client, "connected", f"Connected=true&{key}=5")
    assert reply.json["ClientTransactionID"] == 0
    assert reply.json["ErrorNumber"] == 0
    # a mis-cased key is just an unknown extra parameter: its value is not validated either
    assert put(client, "connected", f"Connected=true&{key}=abc&clientid=-1").status_code == 200


def test_put_client_transaction_id_echoed(client: Client) -> None:
    assert put(client, "connected", "ClientTransactionID=77&Connected=true").json["ClientTransactionID"] == 77
    assert put(client, "halt", "ClientTransactionID=78").json["ClientTransactionID"] == 78


BAD_UINT32 = ["", " ", " 5", "5 ", "-1", "abc", "1.5", "4294967296", "0x10", "+1"]


@pytest.mark.parametrize("name", ["ClientID", "ClientTransactionID"])
@pytest.mark.parametrize("text", BAD_UINT32, ids=repr)
@pytest.mark.parametrize("verb", ["GET", "PUT"])
def test_malformed_ids_are_400(client: Client, name: str, text: str, verb: str) -> None:
    if verb == "GET":
        reply = get(client, "name", urlencode({name: text}))
    else:
        reply = put(client, "connected", urlencode({"Connected": "true", name: text}))
    assert_bad_request(reply, name)


@pytest.mark.parametrize("verb", ["GET", "PUT"])
def test_largest_uint32_ids_are_fine(client: Client, verb: str) -> None:
    query = "ClientID=4294967295&ClientTransactionID=4294967295"
    reply = get(client, "name", query) if verb == "GET" else put(client, "halt", query)
    assert reply.status_code == 200
    assert reply.json["ClientTransactionID"] == 4294967295


# --- malformed values, devices, routes and verbs ------------------------------------------------------------------

@pytest.mark.parametrize("member,body,word", [
    ("move", "Position=abc", "Position"),
    ("move", "Position=1.5", "Position"),
    ("move", "Position=", "Position"),
    ("move", "Position=99999999999", "Position"),
    ("move", "", "Position"),
    ("move", "pOSITION=5", "Position"),
    ("connected", "Connected=yes", "Connected"),
    ("connected", "Connected=1", "Connected"),
    ("connected", "Connected=", "Connected"),
    ("connected", "connected=true", "Connected"),
    ("tempcomp", "TempComp=1", "TempComp"),
    ("tempcomp", "TempComp=on", "TempComp"),
    ("tempcomp", "tempcomp=false", "TempComp"),
    ("action", "Action=SyncPosition", "Parameters"),
    ("commandblind", "Command=X", "Raw"),
    ("commandbool", "Command=X&Raw=maybe", "Raw"),
])
def test_malformed_put_values_are_400(client: Client, member: str, body: str, word: str) -> None:
    assert_bad_request(put(client, member, body), word)


@pytest.mark.parametrize("text", ["true", "false", "TRUE", "False", "tRuE", "FALSE"])
def test_booleans_in_any_case(client: Client, text: str) -> None:
    ok(put(client, "connected", f"Connected={text}"))
    assert value(client, "connected") is (text.lower() == "true")
    connect(client)
    if text.lower() == "false":  # TempComp=true is NotImplemented here; false in any case is accepted
        ok(put(client, "tempcomp", f"TempComp={text}"))


@pytest.mark.parametrize("path", ["/api/v1/focuser/7/name", "/api/v1/focuser/1/name", "/api/v1/focuser/x/name",
                                  "/api/v1/focuser/-1/name", "/api/v1/focuser/1.0/name",
                                  "/api/v1/focuser/4294967296/name"])
def test_bad_device_numbers_are_400(client: Client, path: str) -> None:
    assert_bad_request(client.simulate_get(path))
    assert_bad_request(client.simulate_put(path.replace("/name", "/connect"), body="", headers=FORM))


@pytest.mark.parametrize("path", ["/api/v1/Focuser/0/name", "/api/v1/FOCUSER/0/name", "/api/v1/telescope/0/name",
                                  "/api/v1/camera/0/connected", "/api/v1/focuser/0/bogus",
                                  "/api/v1/focuser/0/Position", "/api/v1/focuser/0/Name", "/api/v2/focuser/0/name",
                                  "/api/v1/focuser/0/name/extra"])
def test_unknown_device_types_and_members(client: Client, path: str) -> None:
    reply = client.simulate_get(path)
    assert reply.status_code in (400, 404), (path, reply.status)
    assert reply.headers["content-type"].startswith("text/plain")
    assert "ClientTransactionID" not in reply.text


def test_unknown_member_messages_explain_casing(client: Client) -> None:
    assert_bad_request(client.simulate_get("/api/v1/Focuser/0/name"), "lower case")
    assert_bad_request(client.simulate_get("/api/v1/focuser/0/Position"), "lower case")


@pytest.mark.parametrize("verb,path", [
    ("GET", "/api/v1/focuser/0/move"), ("GET", "/api/v1/focuser/0/halt"), ("GET", "/api/v1/focuser/0/connect"),
    ("GET", "/api/v1/focuser/0/action"), ("PUT", "/api/v1/focuser/0/position"),
    ("PUT", "/api/v1/focuser/0/name"), ("PUT", "/api/v1/focuser/0/devicestate"),
    ("POST", "/api/v1/focuser/0/move"), ("POST", "/api/v1/focuser/0/name"), ("DELETE", "/api/v1/focuser/0/name"),
    ("POST", "/management/apiversions"), ("PUT", "/management/v1/description"),
    ("POST", "/management/v1/configureddevices"), ("POST", "/setup"), ("POST", "/setup/v1/focuser/0/setup"),
])
def test_wrong_verb_is_405(client: Client, verb: str, path: str) -> None:
    reply = client.simulate_request(verb, path, body="Position=5", headers=FORM)
    assert reply.status_code == 405, (verb, path, reply.status)
    assert reply.headers["content-type"].startswith("text/plain")
    allowed = {v.strip() for v in reply.headers.get("allow", "").split(",")}
    assert verb not in allowed and allowed & {"GET", "PUT"}, reply.headers


def test_wrong_verb_does_not_act(client: Client) -> None:
    connect(client)
    client.simulate_get(api("move"), query_string="Position=1000")
    client.simulate_post(api("move"), body="Position=1000", headers=FORM)
    assert value(client, "ismoving") is False
    assert value(client, "position") == 0


def test_unexpected_exception_is_500_and_the_server_survives(client: Client,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    device = client.devices[0]  # type: ignore[attr-defined]

    def broken() -> str:
        raise RuntimeError("boom")

    monkeypatch.setattr(device, "description", broken)
    reply = get(client, "description", "ClientTransactionID=3")
    assert reply.status_code == 500
    assert reply.headers["content-type"].startswith("text/plain")
    assert 0 < len(reply.text) < 500
    assert "Traceback" not in reply.text
    assert value(client, "name") == "Simulated focuser"
    monkeypatch.undo()
    assert value(client, "description")


# --- ASCOM semantics: identity and connection ---------------------------------------------------------------------

def test_identity_members_answer_while_disconnected(app_factory: Callable[..., Client]) -> None:
    client = app_factory(FAST)
    assert value(client, "interfaceversion") == 4
    assert value(client, "connected") is False
    assert value(client, "connecting") is False
    assert value(client, "name") == "A"
    description = value(client, "description")
    assert description and len(description) <= 64
    assert value(client, "driverinfo")
    assert re.fullmatch(r"\d+\.\d+", value(client, "driverversion"))
    assert value(client, "supportedactions") == ["SyncPosition", "TempCompLearned", "SimulatorSetTemperature"]


def test_description_from_config(app_factory: Callable[..., Client]) -> None:
    client = app_factory({**FAST, "description": "Crayford on the 8-inch Newtonian " + "x" * 80})
    description = value(client, "description")
    assert description.startswith("Crayford on the 8-inch Newtonian") and len(description) == 64


def test_connected_put_takes_effect_before_the_reply(client: Client) -> None:
    ok(put(client, "connected", "Connected=true"))
    assert value(client, "connected") is True
    assert value(client, "connecting") is False
    assert value(client, "position") == 0
    ok(put(client, "connected", "Connected=false"))
    assert value(client, "connected") is False
    assert error_number(get(client, "position")) == NOT_CONNECTED


def test_connect_is_asynchronous_and_idempotent(client: Client) -> None:
    ok(put(client, "connect"))
    assert value(client, "connecting") is True  # the simulator's handshake takes 0.1 s
    ok(put(client, "connect"))  # twice is fine
    wait_for(lambda: value(client, "connected"))
    assert value(client, "connecting") is False
    ok(put(client, "connect"))  # already connected: nothing to do
    assert value(client, "connecting") is False
    assert value(client, "connected") is True


def test_disconnect_is_asynchronous_and_idempotent(client: Client) -> None:
    ok(put(client, "disconnect"))  # while disconnected: fine
    assert value(client, "connecting") is False
    assert value(client, "connected") is False
    connect(client)
    ok(put(client, "disconnect"))
    wait_for(lambda: not value(client, "connected"))
    assert value(client, "connecting") is False
    ok(put(client, "disconnect"))
    assert value(client, "connected") is False


def test_connected_false_while_connecting(client: Client) -> None:
    ok(put(client, "connect"))
    assert value(client, "connecting") is True
    ok(put(client, "connected", "Connected=false"))  # waits for the Connect under way, then disconnects
    assert value(client, "connected") is False
    assert value(client, "connecting") is False


# --- ASCOM semantics: motion --------------------------------------------------------------------------------------

def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    return wait_until(predicate, timeout, interval=0.01)


def wait_stopped(client: Client, device: int = 0, timeout: float = 5.0) -> None:
    wait_for(lambda: value(client, "ismoving", device) is False, timeout)


def test_move_returns_with_is_moving_true(app_factory: Callable[..., Client]) -> None:
    client = app_factory(FAST)
    connect(client)
    ok(put(client, "move", "Position=10000"))  # 0.5 s
    assert value(client, "ismoving") is True
    assert 0 <= value(client, "position") < 10000
    wait_stopped(client)
    assert value(client, "position") == 10000
    assert value(client, "ismoving") is False


@pytest.mark.parametrize("requested,expected", [(-100, 0), (-2147483648, 0), (6000, 5000), (2147483647, 5000),
                                                (5000, 5000), (0, 0)])
def test_move_clamps_to_0_and_max_step_without_error(app_factory: Callable[..., Client], requested: int,
                                                    expected: int) -> None:
    client = app_factory({**FAST, "max_step": 5000})
    connect(client)
    ok(put(client, "action", "Action=SyncPosition&Parameters=2500"))
    ok(put(client, "move", f"Position={requested}"))
    wait_stopped(client)
    assert value(client, "position") == expected


def test_move_further_than_max_increment_is_invalid_value(app_factory: Callable[..., Client]) -> None:
    client = app_factory({**FAST, "max_step": 10000, "max_increment": 1000})
    connect(client)
    assert value(client, "maxincrement") == 1000
    assert value(client, "maxstep") == 10000
    reply = put(client, "move", "Position=1500")
    assert error_number(reply) == INVALID_VALUE
    assert "Value" not in reply.json
    assert "1000" in reply.json["ErrorMessage"] and "MaxIncrement" in reply.json["ErrorMessage"]
    assert value(client, "ismoving") is False
    ok(put(client, "move", "Position=-5000"))  # clamped to 0: no distance at all
    ok(put(client, "action", "Action=SyncPosition&Parameters=9500"))
    ok(put(client, "move", "Position=20000"))  # clamped to 10000: 500 steps
    wait_stopped(client)
    assert value(client, "position") == 10000
    assert error_number(put(client, "move", "Position=8999")) == INVALID_VALUE
    ok(put(client, "move", "Position=9000"))
    wait_stopped(client)
    assert value(client, "position") == 9000


def test_move_while_moving_retargets(app_factory: Callable[..., Client]) -> None:
    client = app_factory(SLOW)
    connect(client)
    ok(put(client, "move", "Position=20000"))  # 10 s at 2000 steps/s
    wait_for(lambda: value(client, "position") >= 200)
    ok(put(client, "move", "Position=100"))
    assert value(client, "ismoving") is True
    wait_stopped(client, timeout=3)
    assert value(client, "position") == 100


def test_halt_mid_move_keeps_the_position_where_it_stopped(app_factory: Callable[..., Client]) -> None:
    client = app_factory(SLOW)
    connect(client)
    ok(put(client, "action", "Action=SyncPosition&Parameters=1000"))
    ok(put(client, "move", "Position=20000"))
    wait_for(lambda: value(client, "position") >= 1300)
    ok(put(client, "halt"))
    wait_stopped(client, timeout=1)
    stopped = value(client, "position")
    assert 1300 <= stopped < 20000
    time.sleep(0.3)  # 600 steps' worth at this speed
    assert value(client, "position") == stopped
    assert value(client, "ismoving") is False
    ok(put(client, "halt"))  # halting a still focuser is fine
    assert value(client, "position") == stopped


def test_halt_while_disconnected_is_not_connected(client: Client) -> None:
    assert error_number(put(client, "halt")) == NOT_CONNECTED


def test_move_while_disconnected_does_not_move(client: Client) -> None:
    assert error_number(put(client, "move", "Position=1000")) == NOT_CONNECTED
    connect(client)
    assert value(client, "ismoving") is False
    assert value(client, "position") == 0


# --- ASCOM semantics: temperature compensation, step size, temperature ---------------------------------------------

def test_temp_comp_unavailable(app_factory: Callable[..., Client]) -> None:
    client = app_factory({**FAST, "temp_comp_available": False})
    connect(client)
    assert value(client, "tempcompavailable") is False
    assert value(client, "tempcomp") is False
    reply = put(client, "tempcomp", "TempComp=true")
    assert error_number(reply) == NOT_IMPLEMENTED
    assert "Value" not in reply.json
    ok(put(client, "tempcomp", "TempComp=false"))
    assert value(client, "tempcomp") is False


def test_temp_comp_available(app_factory: Callable[..., Client]) -> None:
    client = app_factory({**FAST, "temp_comp_available": True})
    connect(client)
    assert value(client, "tempcompavailable") is True
    assert value(client, "tempcomp") is False
    ok(put(client, "tempcomp", "TempComp=true"))
    assert value(client, "tempcomp") is True
    ok(put(client, "move", "Position=10000"))  # moves are allowed with compensation on (IFocuserV3+)
    assert value(client, "ismoving") is True
    wait_stopped(client)
    assert value(client, "position") == 10000
    assert value(client, "tempcomp") is True
    ok(put(client, "tempcomp", "TempComp=false"))
    assert value(client, "tempcomp") is False


def test_step_size_from_config(app_factory: Callable[..., Client]) -> None:
    client = app_factory({**FAST, "step_size": 2.25})
    connect(client)
    assert value(client, "stepsize") == 2.25


def test_step_size_not_configured_is_not_implemented(app_factory: Callable[..., Client]) -> None:
    client = app_factory({"name": "B", "speed": 20000})
    connect(client)
    reply = get(client, "stepsize")
    assert error_number(reply) == NOT_IMPLEMENTED
    assert reply.json["Value"] == 0.0 and type(reply.json["Value"]) is float


def test_temperature_is_a_plausible_float(app_factory: Callable[..., Client]) -> None:
    client = app_factory({**FAST, "temperature": -5.0})
    connect(client)
    reading = value(client, "temperature")
    assert type(reading) is float
    assert -10.0 < reading < 0.0


# --- ASCOM semantics: relative focusers -----------------------------------------------------------------------------

RELATIVE = {"name": "R", "speed": 2000, "absolute": False, "max_step": 50000, "max_increment": 1000}


def test_relative_focuser(app_factory: Callable[..., Client]) -> None:
    client = app_factory(RELATIVE)
    connect(client)
    assert value(client, "absolute") is False
    reply = get(client, "position")
    assert error_number(reply) == NOT_IMPLEMENTED
    assert reply.json["Value"] == 0
    ok(put(client, "move", "Position=500"))
    assert value(client, "ismoving") is True
    names = [entry["Name"] for entry in value(client, "devicestate")]
    assert "Position" not in names and "IsMoving" in names
    wait_stopped(client, timeout=2)
    for distance in (1001, -1001, 50000):
        reply = put(client, "move", f"Position={distance}")
        assert error_number(reply) == INVALID_VALUE
        assert "MaxIncrement" in reply.json["ErrorMessage"]
    ok(put(client, "move", "Position=-1000"))
    ok(put(client, "move", "Position=1000"))


def test_relative_move_moves_that_many_steps(app_factory: Callable[..., Client]) -> None:
    client = app_factory({**RELATIVE, "speed": 1000})
    connect(client)
    ok(put(client, "move", "Position=300"))  # 0.3 s
    started = time.monotonic()
    wait_stopped(client, timeout=2)
    assert 0.2 < time.monotonic() - started < 0.8  # 300 steps, not MaxIncrement (1000) or none


def test_relative_move_inward_after_start(app_factory: Callable[..., Client]) -> None:
    """A relative focuser has no 0..MaxStep frame: Move(-n) right after start-up must move too."""
    client = app_factory({**RELATIVE, "speed": 1000})
    connect(client)
    ok(put(client, "move", "Position=-300"))
    assert value(client, "ismoving") is True
    started = time.monotonic()
    wait_stopped(client, timeout=2)
    assert 0.2 < time.monotonic() - started < 0.8
    for _ in range(3):  # and again, further inward than any 0..MaxStep frame would allow
        ok(put(client, "move", "Position=-1000"))
        assert value(client, "ismoving") is True
        ok(put(client, "halt"))


# --- DeviceState ----------------------------------------------------------------------------------------------------

def test_device_state(app_factory: Callable[..., Client]) -> None:
    client = app_factory(FAST)
    connect(client)
    ok(put(client, "action", "Action=SyncPosition&Parameters=1234"))
    state = value(client, "devicestate")
    assert all(set(entry) == {"Name", "Value"} for entry in state)
    values = {entry["Name"]: entry["Value"] for entry in state}
    assert len(values) == len(state), "names must be unique"
    assert set(values) == {"IsMoving", "Position", "Temperature", "TimeStamp"}
    assert values["IsMoving"] is False
    assert values["Position"] == 1234 and type(values["Position"]) is int
    assert type(values["Temperature"]) is float and -60 < values["Temperature"] < 60
    stamp = values["TimeStamp"]
    assert ISO_UTC.match(stamp), stamp
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert abs((datetime.now(timezone.utc) - when).total_seconds()) < 5
    ok(put(client, "move", "Position=40000"))  # 2 s
    moving = {entry["Name"]: entry["Value"] for entry in value(client, "devicestate")}
    assert moving["IsMoving"] is True and 1234 <= moving["Position"] < 40000
    ok(put(client, "halt"))


# --- actions and commands ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["SyncPosition", "syncposition", "SYNCPOSITION"])
def test_action_sync_position(client: Client, name: str) -> None:
    connect(client)
    reply = put(client, "action", {"Action": name, "Parameters": "1234", "ClientTransactionID": "9"})
    assert reply.json["ClientTransactionID"] == 9
    assert type(ok(reply)) is str
    assert value(client, "position") == 1234
    assert value(client, "ismoving") is False


def test_every_supported_action_is_performed(client: Client) -> None:
    connect(client)
    for name in value(client, "supportedactions"):
        assert error_number(put(client, "action", {"Action": name, "Parameters": "10"})) != ACTION_NOT_IMPLEMENTED


@pytest.mark.parametrize("connected", [False, True])
def test_unknown_action(client: Client, connected: bool) -> None:
    if connected:
        connect(client)
    reply = put(client, "action", {"Action": "Rumba", "Parameters": ""})
    assert error_number(reply) == ACTION_NOT_IMPLEMENTED
    assert reply.json["Value"] == ""
    assert reply.json["ErrorMessage"]


@pytest.mark.parametrize("parameters", ["abc", "", "-1", "50001", "1.5"])
def test_sync_position_bad_parameters_are_invalid_value(client: Client, parameters: str) -> None:
    connect(client)
    reply = put(client, "action", {"Action": "SyncPosition", "Parameters": parameters})
    assert error_number(reply) == INVALID_VALUE
    assert reply.json["Value"] == ""
    assert value(client, "position") == 0


def test_sync_position_while_moving_is_refused(app_factory: Callable[..., Client]) -> None:
    client = app_factory(SLOW)
    connect(client)
    ok(put(client, "move", "Position=10000"))
    reply = put(client, "action", {"Action": "SyncPosition", "Parameters": "5"})
    assert error_number(reply) == 0x40B
    assert value(client, "ismoving") is True
    ok(put(client, "halt"))


@pytest.mark.parametrize("member,value_key", [("commandblind", None), ("commandbool", False),
                                              ("commandstring", "")])
def test_commands_are_not_implemented(client: Client, member: str, value_key: Any) -> None:
    connect(client)
    reply = put(client, member, "Command=:GP%23&Raw=true")
    assert error_number(reply) == NOT_IMPLEMENTED
    if value_key is None:
        assert "Value" not in reply.json
    else:
        assert reply.json["Value"] == value_key


# --- management API -------------------------------------------------------------------------------------------------

def test_api_versions(client: Client) -> None:
    reply = client.simulate_get("/management/apiversions", query_string="ClientTransactionID=3&ClientID=1")
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json == {"Value": [1], "ClientTransactionID": 3, "ServerTransactionID": 1, "ErrorNumber": 0,
                          "ErrorMessage": ""}


def test_description(client: Client) -> None:
    described = ok(client.simulate_get("/management/v1/description"))
    assert set(described) == {"ServerName", "Manufacturer", "ManufacturerVersion", "Location"}
    assert all(type(v) is str and v for v in described.values())
    assert described["Location"] == "Backyard observatory"


def test_description_location_from_config(tmp_path: Path) -> None:
    from alpaca_focuser.app import build_devices, create_app
    from alpaca_focuser.state import StateStore
    from conftest import make_config  # the shared config builder

    config = make_config(tmp_path, FAST, server={"location": "Roof <b>& dome</b>"})
    devices = build_devices(config, StateStore(config.resolved_state_dir()))
    try:
        client = falcon.testing.TestClient(create_app(config, devices))
        assert ok(client.simulate_get("/management/v1/description"))["Location"] == "Roof <b>& dome</b>"
        page = client.simulate_get("/setup")
        assert "Roof &lt;b&gt;&amp; dome&lt;/b&gt;" in page.text and "<b>&" not in page.text
    finally:
        for device in devices.values():
            device.shutdown()


def test_configured_devices(app_factory: Callable[..., Client]) -> None:
    client = app_factory(FAST, {"name": "B", "speed": 20000})
    devices = ok(client.simulate_get("/management/v1/configureddevices", query_string="clienttransactionid=4"))
    assert [d["DeviceName"] for d in devices] == ["A", "B"]
    assert [d["DeviceNumber"] for d in devices] == [0, 1]
    for d in devices:
        assert set(d) == {"DeviceName", "DeviceType", "DeviceNumber", "UniqueID"}
        assert d["DeviceType"] == "Focuser"
        assert str(uuid.UUID(d["UniqueID"])) == d["UniqueID"].lower()
    assert devices[0]["UniqueID"] != devices[1]["UniqueID"]
    assert value(client, "name", device=1) == "B"


@pytest.mark.parametrize("path", ["/management/apiversions", "/management/v1/description",
                                  "/management/v1/configureddevices"])
@pytest.mark.parametrize("query", ["ClientTransactionID=abc", "clienttransactionid=-1", "ClientID=", "ClientID=1.5",
                                   "ClientTransactionID=4294967296"])
def test_management_malformed_ids_are_400(client: Client, path: str, query: str) -> None:
    assert_bad_request(client.simulate_get(path, query_string=query))


def test_unique_ids_are_stable_across_restarts(app_factory: Callable[..., Client]) -> None:
    first = app_factory(FAST, {"name": "B", "speed": 20000})
    ids = [d["UniqueID"] for d in ok(first.simulate_get("/management/v1/configureddevices"))]
    second = app_factory(FAST, {"name": "B", "speed": 20000})  # same tmp state dir
    assert [d["UniqueID"] for d in ok(second.simulate_get("/management/v1/configureddevices"))] == ids
    assert len(set(ids)) == 2


def test_unique_ids_differ_between_state_dirs(tmp_path: Path) -> None:
    from alpaca_focuser.state import StateStore

    a = StateStore(tmp_path / "a").unique_id(0)
    assert StateStore(tmp_path / "b").unique_id(0) != a
    assert StateStore(tmp_path / "a").unique_id(0) == a


# --- setup pages ------------------------------------------------------------------------------------------------------

def test_setup_pages(app_factory: Callable[..., Client]) -> None:
    client = app_factory({**FAST, "name": "Main & <guide>"}, {"name": "Second", "speed": 20000})
    server = client.simulate_get("/setup")
    assert server.status_code == 200 and server.headers["content-type"].startswith("text/html")
    assert "Main &amp; &lt;guide&gt;" in server.text and "Second" in server.text
    assert "<guide>" not in server.text
    for number, name in ((0, "Main &amp; &lt;guide&gt;"), (1, "Second")):
        page = client.simulate_get(f"/setup/v1/focuser/{number}/setup")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert name in page.text
        assert "<html" in page.text


@pytest.mark.parametrize("path,reason", [("/setup/v1/focuser/9/setup", "9"), ("/setup/v1/focuser/x/setup", "x"),
                                         ("/setup/v1/telescope/0/setup", "telescope"),
                                         ("/setup/v1/focuser/-1/setup", "-1")])
def test_setup_page_of_unknown_device_is_403_html(client: Client, path: str, reason: str) -> None:
    """The Management API: "an HTTP status code of 403 indicates that an invalid URL was sent to the /setup
    browser interface", with an HTML body (its 403 schema) that says what is wrong."""
    reply = client.simulate_get(path)
    assert reply.status_code == 403, (reply.status, reply.text)
    assert reply.headers["content-type"].startswith("text/html")
    assert reason in reply.text and "<html" in reply.text


def test_setup_page_static_files(client: Client) -> None:
    page = client.simulate_get("/setup/v1/focuser/0/setup")
    for src in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        reply = client.simulate_get(src)
        assert reply.status_code == 200, src
    assert client.simulate_get("/static/../config.py").status_code == 404


def test_disconnect_right_after_connect_ends_disconnected(client: Client) -> None:
    """Disconnect() while a Connect() is still in progress is queued behind it, not dropped."""
    ok(put(client, "connect"))
    assert value(client, "connecting") is True
    ok(put(client, "disconnect"))
    deadline = time.monotonic() + 5
    while value(client, "connecting") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert value(client, "connecting") is False
    assert value(client, "connected") is False
