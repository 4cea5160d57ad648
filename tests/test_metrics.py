"""GET /metrics: scraped from a real server on 127.0.0.1 and parsed with prometheus_client's own parser.

Values are checked against real requests, real moves (simulator), real ASCOM errors, real discovery datagrams
(unicast to 127.0.0.1) and, with the Moonlite emulator on a pty, the serial line: a scrape must never add a
command to it.
"""

from __future__ import annotations

import http.client
import socket
import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from alpaca_focuser.app import FocuserServer
from alpaca_http import AlpacaHttp
from conftest import wait_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def fetch(server: FocuserServer, path: str = "/metrics") -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        return reply.status, reply.getheader("Content-Type", ""), reply.read().decode()
    finally:
        conn.close()


def scrape(server: FocuserServer) -> Samples:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    status, content_type, text = fetch(server)
    assert status == 200 and content_type.startswith("text/plain; version="), (status, content_type)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, metric: str, **labels: str) -> float | None:
    return samples.get((metric, tuple(sorted(labels.items()))))


def focuser(samples: Samples, metric: str, device: str = "0", device_name: str = "Simulated focuser"
            ) -> float | None:
    return value(samples, metric, device=device, name=device_name)


def requests_of(samples: Samples, member: str, method: str = "GET", status: str = "200") -> float:
    return value(samples, "alpaca_http_requests_total", member=member, method=method, status=status) or 0.0


# ----------------------------------------------------------------------------------------------------------------
def test_requests_are_counted_by_member_method_and_status(server: FocuserServer) -> None:
    before = scrape(server)
    with AlpacaHttp("127.0.0.1", server.port) as client:
        for _ in range(7):
            client.value("name")
        client.put("connected", Connected="true")
        conn = client.conn
        conn.request("GET", "/api/v1/focuser/0/notamember")
        conn.getresponse().read()
        conn.request("POST", "/api/v1/focuser/0/position")
        conn.getresponse().read()
        conn.request("BREW", "/api/v1/focuser/0/position")  # made-up methods share one label value
        conn.getresponse().read()
    after = scrape(server)
    assert requests_of(after, "name") - requests_of(before, "name") == 7
    assert requests_of(after, "connected", "PUT") == 1
    assert requests_of(after, "unknown", "GET", "400") == 1  # unknown names share one label value
    assert requests_of(after, "position", "POST", "405") == 1
    assert requests_of(after, "position", "other", "400") == 1
    assert requests_of(after, "/metrics") >= 1  # the scrape before this one
    grew = (value(after, "alpaca_http_request_duration_seconds_count", method="GET") or 0) - \
        (value(before, "alpaca_http_request_duration_seconds_count", method="GET") or 0)
    assert grew >= 8  # 7 names, the unknown member and the scrape in between
    assert value(after, "alpaca_http_request_duration_seconds_bucket", method="PUT", le="+Inf") == 1
    assert value(after, "alpaca_focuser_build_info", version=__import__("alpaca_focuser").__version__) == 1
    assert (value(after, "process_resident_memory_bytes") or 0) > 1e6  # the library's process collector
    assert any(name == "python_gc_collections_total" for name, _ in after)


def test_focuser_values_follow_a_real_move(server_factory: Any) -> None:
    server = server_factory({"name": "Simulated focuser", "speed": 2000, "max_step": 50000,
                             "temp_comp_available": True})
    samples = scrape(server)
    assert focuser(samples, "alpaca_focuser_connected") == 0
    assert focuser(samples, "alpaca_focuser_position_steps") is None  # unknown until connected
    with AlpacaHttp("127.0.0.1", server.port) as client:
        client.put("connected", Connected="true")
        client.put("move", Position=20000)  # 10 s at 2000 steps/s
        time.sleep(0.5)
        samples = scrape(server)
        assert focuser(samples, "alpaca_focuser_connected") == 1
        assert focuser(samples, "alpaca_focuser_moving") == 1
        assert 0 < (focuser(samples, "alpaca_focuser_position_steps") or 0) < 20000
        client.put("halt")
        wait_until(lambda: not client.value("ismoving"))
        position = client.value("position")
        temperature = client.value("temperature")
        client.put("tempcomp", TempComp="true")
        samples = scrape(server)
    assert focuser(samples, "alpaca_focuser_moving") == 0
    assert focuser(samples, "alpaca_focuser_position_steps") == position
    assert focuser(samples, "alpaca_focuser_temperature_celsius") == pytest.approx(temperature, abs=0.5)
    assert focuser(samples, "alpaca_focuser_temp_comp") == 1
    assert focuser(samples, "alpaca_focuser_fault") == 0
    assert 0 <= (focuser(samples, "alpaca_focuser_snapshot_age_seconds") or 0) < 5


def test_ascom_errors_are_counted_by_number(server: FocuserServer) -> None:
    with AlpacaHttp("127.0.0.1", server.port) as client:
        for _ in range(3):
            assert client.call("GET", "position")["ErrorNumber"] == 0x407  # not connected
        client.put("connected", Connected="true")
        assert client.call("PUT", "action", Action="Dance", Parameters="")["ErrorNumber"] == 0x40C
        assert client.call("PUT", "commandblind", Command="x", Raw="false")["ErrorNumber"] == 0x400
        client.value("position")
    samples = scrape(server)
    assert value(samples, "alpaca_ascom_errors_total", member="position", number="0x407") == 3
    assert value(samples, "alpaca_ascom_errors_total", member="action", number="0x40C") == 1
    assert value(samples, "alpaca_ascom_errors_total", member="commandblind", number="0x400") == 1
    assert requests_of(samples, "position") == 4  # ASCOM errors still travel in an HTTP 200


def test_metrics_off_is_404(server_factory: Any) -> None:
    server = server_factory(server={"metrics": False})
    status, _, _ = fetch(server)
    assert status == 404
    with AlpacaHttp("127.0.0.1", server.port) as client:
        assert client.value("name") == "Simulated focuser"


def test_no_temperature_without_a_sensor(server: FocuserServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server.devices[0].driver, "_has_temperature", False)  # the simulator's sensorless mode
    with AlpacaHttp("127.0.0.1", server.port) as client:
        client.put("connected", Connected="true")
        assert client.call("GET", "temperature")["ErrorNumber"] == 0x400
    samples = scrape(server)
    assert focuser(samples, "alpaca_focuser_position_steps") == 0
    assert focuser(samples, "alpaca_focuser_temperature_celsius") is None


def test_temp_comp_state_and_corrections_follow_the_focuser(server_factory: Any) -> None:
    """The simulated tube cools 1 C with compensation on: the scrape shows TempComp on and the corrections made."""
    server = server_factory({"name": "Simulated focuser", "speed": 20000, "temp_comp_coefficient": -20,
                             "temp_comp_threshold": 0.5, "temp_comp_window_s": 1})
    with AlpacaHttp("127.0.0.1", server.port) as client:
        client.put("connected", Connected="true")
        client.put("action", Action="SimulatorSetTemperature", Parameters="10")
        client.put("move", Position=5000)
        wait_until(lambda: client.value("ismoving") is False)
        # the whole averaging window at 10 C (the simulator drifted before), so the reference is 10 C
        wait_until(lambda: server.devices[0].averaged_temperature() == 10.0)
        samples = scrape(server)
        assert focuser(samples, "alpaca_focuser_temp_comp") == 0
        assert focuser(samples, "alpaca_focuser_temp_comp_corrections_total") == 0
        client.put("tempcomp", TempComp="true")
        client.put("action", Action="SimulatorSetTemperature", Parameters="9")
        # the averaged temperature crosses the threshold: at least one correction outwards
        wait_until(lambda: server.devices[0].temp_comp_corrections >= 1 and client.value("ismoving") is False,
                   timeout=15)
        assert client.value("position") > 5000
    samples = scrape(server)
    assert focuser(samples, "alpaca_focuser_temp_comp") == 1
    assert focuser(samples, "alpaca_focuser_temp_comp_corrections_total") == server.devices[0].temp_comp_corrections
    assert server.devices[0].temp_comp_corrections >= 1


def test_serial_link_counters_come_from_the_driver(make_emu: Any, server_factory: Any) -> None:
    """The real Moonlite driver on the emulator: what the scrape says the link sent is what reached the wire."""
    emu = make_emu(steps_per_second=2000.0, position=1000)
    server = server_factory({"name": "Moonlite", "driver": "moonlite", "port": str(emu.link_path),
                             "max_step": 20000})
    labels = {"device": "0", "name": "Moonlite"}
    with AlpacaHttp("127.0.0.1", server.port) as client:
        client.put("connected", Connected="true")
        client.put("move", Position=1400)
        wait_until(lambda: client.value("ismoving") is False and client.value("position") == 1400)
        client.put("halt")  # idle: Moonlite sends FQ anyway (harmless there)
        wait_until(lambda: emu.firmware.command_counts["FQ"] >= 1)
    stats = server.devices[0].driver.link_stats()
    samples = scrape(server)
    for command in ("GP", "GI", "SN", "GN", "FG", "FQ"):
        sent = value(samples, "alpaca_serial_commands_sent_total", command=command, **labels)
        assert sent is not None and sent >= 1, command
        assert sent <= stats.sent[command] + 3  # the snapshot was taken a moment before the scrape
    assert emu.firmware.command_counts["FG"] == value(samples, "alpaca_serial_commands_sent_total", command="FG",
                                                       **labels)
    gp_replies = value(samples, "alpaca_serial_replies_received_total", command="GP", **labels)
    assert gp_replies is not None and gp_replies >= 2
    assert value(samples, "alpaca_serial_round_trip_seconds_count", command="GP", **labels) == gp_replies
    assert (value(samples, "alpaca_serial_round_trip_seconds_bucket", command="GP", le="+Inf", **labels)
            == gp_replies)
    assert value(samples, "alpaca_serial_faults_total", **labels) == 0
    assert value(samples, "alpaca_serial_halts_sent_total", **labels) == 1
    assert value(samples, "alpaca_serial_halt_latency_seconds_count", **labels) == 1


def test_discovery_answers_and_rate_limit_drops(server_factory: Any) -> None:
    server = server_factory(discovery=True)
    port = server.discovery.ipv4_port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(15):  # one sender, well inside a second: at most 10 answers
            sock.sendto(b"alpacadiscovery1", ("127.0.0.1", port))
    wait_until(lambda: server.discovery.replies_sent + server.discovery.requests_rate_limited >= 15)
    samples = scrape(server)
    replies = value(samples, "alpaca_discovery_replies_total")
    dropped = value(samples, "alpaca_discovery_rate_limited_total")
    assert replies is not None and dropped is not None and replies + dropped == 15
    assert 1 <= replies <= 10 and dropped >= 5
    assert (value(samples, "alpaca_discovery_ignored_total") or 0) >= dropped


def test_scraping_never_touches_the_serial_line(make_emu: Any, server_factory: Any) -> None:
    """Over equal windows, the emulator sees the same idle poll traffic with a scrape every 50 ms as without."""
    emu = make_emu(steps_per_second=2000.0, position=1234)
    server = server_factory({"name": "Moonlite", "driver": "moonlite", "port": str(emu.link_path),
                             "max_step": 20000})
    with AlpacaHttp("127.0.0.1", server.port) as client:
        client.put("connected", Connected="true")
    wait_until(lambda: focuser(scrape(server), "alpaca_focuser_temperature_celsius", device_name="Moonlite")
               is not None)

    def commands_during(window: float, scrapes: bool) -> tuple[int, int]:
        start, deadline, done = sum(emu.firmware.command_counts.values()), time.monotonic() + window, 0
        while time.monotonic() < deadline:
            if scrapes:
                samples = scrape(server)
                assert focuser(samples, "alpaca_focuser_position_steps", device_name="Moonlite") == 1234
                done += 1
            time.sleep(0.05)
        return sum(emu.firmware.command_counts.values()) - start, done

    quiet, _ = commands_during(3.0, scrapes=False)
    busy, scraped = commands_during(3.0, scrapes=True)
    assert scraped >= 20
    # The idle poll sends ~3 commands a second; one extra or missing poll cycle is timing, a command per scrape
    # would be 20 or more.
    assert quiet > 0 and abs(busy - quiet) <= 4, (quiet, busy, scraped)


def test_metrics_key_must_be_a_boolean() -> None:
    from alpaca_focuser.config import ConfigError, parse_config

    assert parse_config({"server": {"metrics": False}}, "c.toml").server.metrics is False
    assert parse_config({}, "c.toml").server.metrics is True
    with pytest.raises(ConfigError, match=r"c\.toml: \[server\] metrics: must be true or false, got \"yes\""):
        parse_config({"server": {"metrics": "yes"}}, "c.toml")
