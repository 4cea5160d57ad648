"""Property-based conformance: schemathesis drives a real server with requests generated from the official
ASCOM Alpaca OpenAPI files in /work/shared/spec, and checks every reply against them.

Scope: the focuser paths (``/focuser/{device_number}/...``) and the common paths
(``/{device_type}/{device_number}/...``) of the Device API, with ``device_type`` fixed to ``focuser`` and
``device_number`` fixed to a configured focuser (0 and 1: one test per device number); and the whole
Management API (``/management/...`` JSON and the two ``/setup`` HTML pages).

The spec files are loaded unmodified from disk and patched *in memory* for three known contradictions inside
the spec itself (see ``_patch_*`` below, each with its reason). Product deviations are not patched away: they
are asserted in the explicit tests at the end of this file.

Checks on every reply: no 5xx, a documented status code, the documented content type, a body that matches
the documented schema; plus the echo of ClientTransactionID, which the schema cannot express.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import schemathesis
import yaml
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from alpaca_focuser.app import FocuserServer
from conftest import SPEC_DIR, make_config, wait_until

# Schemathesis expands its operations into tests per pytest process: under xdist it would not, so this module runs
# on its own (the README's test command runs `-m solo` after the parallel run).
pytestmark = pytest.mark.solo

DEVICE_SPEC = Path(SPEC_DIR) / "AlpacaDeviceAPI_v1.yaml"
MANAGEMENT_SPEC = Path(SPEC_DIR) / "AlpacaManagementAPI_v1.yaml"

SEED = 20250711  # fixed: the same cases on every run
MAX_EXAMPLES = 25  # per operation and device number, for the fuzzing phase
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

# Two focusers so that device_number is not always 0, and so both TempComp branches are reachable:
# focuser 1 has temperature compensation, focuser 0 does not.
FOCUSERS = (
    {"name": "Schemathesis focuser 0", "speed": 20000, "step_size": 4.5, "temp_comp_available": False},
    {"name": "Schemathesis focuser 1", "speed": 20000, "max_step": 20000, "max_increment": 5000,
     "temp_comp_available": True},
)
DEVICE_NUMBERS = tuple(range(len(FOCUSERS)))

CASES: Counter[str] = Counter()  # generated cases per "<test> <operation>", reported at the end
STATUSES: Counter[int] = Counter()  # HTTP status of their replies
ERRORS: Counter[str] = Counter()  # ErrorNumber of the 200 replies of the device API, as hex


# ------------------------------------------------------------------------------------------------------------------
# The spec, patched in memory
# ------------------------------------------------------------------------------------------------------------------


def _patch_client_transaction_id_zero(spec: dict[str, Any]) -> None:
    """Spec patch 1 -- ``AlpacaResponse.ClientTransactionID`` declares ``minimum: 1``, but its own description
    says "Zero indicates that a valid value was not supplied", and the Alpaca API Reference tells servers to
    return 0 when the client sent no ClientTransactionID. So an absent ID must be echoed as 0, which the
    schema as written rejects. Relax it to ``minimum: 0``. ServerTransactionID keeps ``minimum: 1``: the
    server counts from 1 and must never send 0."""
    field = spec["components"]["schemas"]["AlpacaResponse"]["properties"]["ClientTransactionID"]
    assert field["minimum"] == 1, "spec changed: re-check patch 1"
    field["minimum"] = 0


def _patch_device_state_value_any_of(spec: dict[str, Any]) -> None:
    """Spec patch 2 -- in ``DeviceStateResponse`` each item's ``Value`` is ``oneOf`` [string, number, boolean,
    date-time string]. Every date-time string is also a string, so a TimeStamp matches two branches and
    ``oneOf`` (exactly one) can never pass, although the description requires TimeStamp as an ISO 8601
    string. The intent is "any one of these types": use ``anyOf``."""
    items = spec["components"]["responses"]["DeviceStateResponse"]["content"]["application/json"]["schema"][
        "allOf"][1]["properties"]["Value"]["items"]
    value = items["properties"]["Value"]
    assert "oneOf" in value, "spec changed: re-check patch 2"
    value["anyOf"] = value.pop("oneOf")


def _patch_management_400(spec: dict[str, Any]) -> None:
    """Spec patch 3 -- the Management API's own text says "An HTTP status code of 400 indicates that the
    management JSON command interpreter could not interpret the request", and ``/management/apiversions``
    declares 400 (text/plain), but ``/management/v1/description`` and ``/management/v1/configureddevices``
    only declare 403 "...return an error message to display in the browser" (a copy of the /setup wording;
    there is no browser and no device in these paths). A malformed ClientTransactionID on them must get the
    same 400 as on apiversions: declare the same 400 reply there."""
    paths = spec["paths"]
    reply_400 = paths["/management/apiversions"]["get"]["responses"]["400"]
    for path in ("/management/v1/description", "/management/v1/configureddevices"):
        responses = paths[path]["get"]["responses"]
        assert "400" not in responses, "spec changed: re-check patch 3"
        responses["400"] = copy.deepcopy(reply_400)


def device_spec() -> dict[str, Any]:
    raw = yaml.safe_load(DEVICE_SPEC.read_text(encoding="utf-8"))
    spec = copy.deepcopy(raw)
    spec["paths"] = {path: item for path, item in raw["paths"].items()
                     if path.startswith(("/{device_type}/{device_number}/", "/focuser/{device_number}/"))}
    spec["servers"] = [{"url": "/api/v1"}]  # the README: device paths are relative to /api/v1
    _patch_client_transaction_id_zero(spec)
    _patch_device_state_value_any_of(spec)
    return spec


def management_spec() -> dict[str, Any]:
    spec = copy.deepcopy(yaml.safe_load(MANAGEMENT_SPEC.read_text(encoding="utf-8")))
    _patch_management_400(spec)
    return spec


def _config(parameters: dict[str, Any]) -> schemathesis.Config:
    return schemathesis.Config.from_dict({
        "seed": SEED,
        # positive and negative data; no example database, so a run never replays cases from an older one
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "database": "none"},
        # a loaded CI machine must not turn slow generation into a failure; the server's speed is not judged here
        "suppress-health-check": ["too_slow"],
        # stateful testing needs OpenAPI links, which these specs do not have
        "phases": {"stateful": {"enabled": False}},
        "parameters": parameters,
    })


def _device_schema(device_number: int) -> Any:
    # Path parameters are fixed values (never generated or negated): a focuser that exists.
    params = {"path.device_type": "focuser", "path.device_number": device_number}
    return schemathesis.openapi.from_dict(device_spec(), config=_config(params))


device_0 = _device_schema(0)
device_1 = _device_schema(1)
# The setup page of a device takes the same fixed path parameters (device 0).
management = schemathesis.openapi.from_dict(
    management_spec(), config=_config({"path.device_type": "focuser", "path.device_number": 0}))


# ------------------------------------------------------------------------------------------------------------------
# The server
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FocuserServer]:
    srv = FocuserServer(make_config(tmp_path_factory.mktemp("schemathesis"), *FOCUSERS))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def _ensure_connected(http: requests.Session, server: FocuserServer) -> None:
    """Connect every focuser (again) so generated calls exercise the real members, not only NotConnected.
    Schemathesis itself PUTs Connected=false and Disconnect; the case after that reconnects."""
    base = f"http://127.0.0.1:{server.port}/api/v1/focuser"
    for n in DEVICE_NUMBERS:
        # a Disconnect() may still be under way: let it finish first
        wait_until(lambda: http.get(f"{base}/{n}/connecting", timeout=5).json()["Value"] is False, timeout=20)
        if http.get(f"{base}/{n}/connected", timeout=5).json()["Value"] is True:
            continue
        reply = http.put(f"{base}/{n}/connected", data={"Connected": "true"}, timeout=20).json()
        assert reply["ErrorNumber"] == 0, reply
        assert http.get(f"{base}/{n}/connected", timeout=5).json()["Value"] is True


# Only these operations change the connection state; after them, the next other operation reconnects first.
DISCONNECTING = ("/{device_type}/{device_number}/connected", "/{device_type}/{device_number}/disconnect",
                 "/{device_type}/{device_number}/connect")
_reconnect_needed = [False]


def _sent_client_transaction_id(response: schemathesis.Response) -> tuple[bool, str | None]:
    """The ClientTransactionID as the server reads it: GET query keys are case-insensitive, PUT form keys
    exact; the first occurrence wins. Returns (present, text)."""
    request = response.request
    if request.method == "PUT":
        body = request.body or ""
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        pairs = parse_qsl(body, keep_blank_values=True)
        matches = [v for k, v in pairs if k == "ClientTransactionID"]
    else:
        pairs = parse_qsl(urlsplit(request.url).query, keep_blank_values=True)
        matches = [v for k, v in pairs if k.lower() == "clienttransactionid"]
    return (True, matches[0]) if matches else (False, None)


def _call_and_check(case: Any, base_url: str, http: requests.Session, label: str) -> schemathesis.Response:
    CASES[f"{label} {case.operation.label}"] += 1
    response = case.call(base_url=base_url, session=http, timeout=20)
    STATUSES[response.status_code] += 1
    case.validate_response(response, checks=CHECKS)
    if case.method.upper() != case.operation.method.upper():
        # The coverage phase also probes undeclared methods (OPTIONS, DELETE, ...): the spec says nothing
        # about their replies, so only the checks above (which know these probes) apply.
        return response
    content_type = (response.headers.get("content-type") or [""])[0]
    if response.status_code == 200 and content_type.startswith("application/json"):
        body = json.loads(response.content)
        present, text = _sent_client_transaction_id(response)
        expected = int(text) if present else 0  # a 200 means the server accepted it as an unsigned integer
        assert body["ClientTransactionID"] == expected, (present, text, body)
        assert body["ServerTransactionID"] >= 1
        if label.startswith("focuser/"):
            ERRORS[hex(body["ErrorNumber"])] += 1
    if response.status_code == 400:
        assert response.content.strip(), "a 400 reply must say what is wrong"
    return response


# ------------------------------------------------------------------------------------------------------------------
# Generated tests
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def connected_server(server: FocuserServer, http: requests.Session) -> FocuserServer:
    _ensure_connected(http, server)
    return server


def _device_case(case: Any, server: FocuserServer, http: requests.Session, label: str) -> None:
    if case.operation.path in DISCONNECTING:
        _reconnect_needed[0] = True
    elif _reconnect_needed[0]:
        _ensure_connected(http, server)
        _reconnect_needed[0] = False
    _call_and_check(case, f"http://127.0.0.1:{server.port}/api/v1", http, label)


@device_0.parametrize()
def test_device_api_focuser_0(case: Any, connected_server: FocuserServer, http: requests.Session) -> None:
    _device_case(case, connected_server, http, "focuser/0")


@device_1.parametrize()
def test_device_api_focuser_1(case: Any, connected_server: FocuserServer, http: requests.Session) -> None:
    _device_case(case, connected_server, http, "focuser/1")


@management.parametrize()
def test_management_api(case: Any, server: FocuserServer, http: requests.Session) -> None:
    _call_and_check(case, f"http://127.0.0.1:{server.port}", http, "management")


def test_generated_enough_cases(capsys: pytest.CaptureFixture[str]) -> None:
    """Schemathesis really generated cases for every operation (runs after the generated tests), and the
    figures for the report: printed even under -q."""
    if not CASES:
        pytest.skip("the generated tests did not run in this session")
    with capsys.disabled():
        print(f"\nschemathesis: {sum(CASES.values())} generated cases over {len(CASES)} operation runs "
              f"(max {MAX_EXAMPLES} fuzzed examples each, plus the examples and coverage phases, seed {SEED}); "
              f"replies by HTTP status: {dict(sorted(STATUSES.items()))}; device API ErrorNumbers in 200 "
              f"replies: {dict(ERRORS.most_common())}")
    print(f"per operation: {json.dumps(dict(sorted(CASES.items())), indent=1)}")
    operations = [tuple(label.split(" ", 1)) for label in CASES]
    device_operations = sum(1 for item in device_spec()["paths"].values() for verb in item if verb in ("get", "put"))
    for n in DEVICE_NUMBERS:
        ran = {op for who, op in operations if who == f"focuser/{n}"}
        assert len(ran) == device_operations, f"focuser {n}: only {len(ran)} of {device_operations} operations ran"
        assert all(CASES[f"focuser/{n} {op}"] >= 10 for op in ran)
    # Both the accepted (200) and the malformed (400, negative data) paths were exercised
    assert STATUSES[200] > 0 and STATUSES[400] > 0, STATUSES
    assert not any(status >= 500 for status in STATUSES)
    # The focusers were connected for most calls: real members ran, not only the NotConnected path
    assert ERRORS["0x0"] > 5 * ERRORS["0x407"], ERRORS


# ------------------------------------------------------------------------------------------------------------------
# Explicit cases the generator cannot reach with the path parameters fixed
# ------------------------------------------------------------------------------------------------------------------


def _explicit(schema: Any, path: str, method: str, server: FocuserServer, http: requests.Session, base: str,
              **path_parameters: Any) -> schemathesis.Response:
    case = schema[path][method].Case(path_parameters=path_parameters)
    response = case.call(base_url=f"http://127.0.0.1:{server.port}{base}", session=http, timeout=10)
    case.validate_response(response, checks=CHECKS)
    return response


@pytest.mark.parametrize("device_type, device_number", [("focuser", 7), ("camera", 0)])
def test_device_api_unknown_device_is_a_documented_400(device_type: str, device_number: int,
                                                       server: FocuserServer, http: requests.Session) -> None:
    """The Device API documents 400 (text/plain) for an invalid device number or type."""
    response = _explicit(device_0, "/{device_type}/{device_number}/name", "GET", server, http, "/api/v1",
                         device_type=device_type, device_number=device_number)
    assert response.status_code == 400
    assert response.content.strip()


@pytest.mark.parametrize("device_type, device_number", [("focuser", 7), ("camera", 0)])
def test_setup_page_of_an_unknown_device_is_a_documented_403(device_type: str, device_number: int,
                                                             server: FocuserServer, http: requests.Session) -> None:
    """The Management API: "403 indicates that an invalid URL was sent to the /setup browser interface",
    declared with a text/html body."""
    response = _explicit(management, "/setup/v1/{device_type}/{device_number}/setup", "GET", server, http, "",
                         device_type=device_type, device_number=device_number)
    assert response.status_code == 403
    assert (response.headers.get("content-type") or [""])[0].startswith("text/html")
    assert b"<html" in response.content
