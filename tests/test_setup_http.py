"""The setup endpoints over real HTTP: same-origin only, the optional password, the body limit, CORS for the
Alpaca API, the chart's history, and saving where the shipped systemd unit and the Docker image keep the config.

Every server listens on 127.0.0.1 with an ephemeral port.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests

from alpaca_focuser import cli
from alpaca_focuser.app import FocuserServer
from alpaca_focuser.config import ConfigError, load_config, parse_config
from alpaca_focuser.passwords import hash_password, verify_password
from conftest import make_config, started_until_teardown, wait_until
from test_cli import clean_env, free_port

PASSWORD = "correct horse battery"


def base(server: FocuserServer) -> str:
    return f"http://127.0.0.1:{server.port}"


def post(server: FocuserServer, path: str, body: dict[str, Any], **headers: str) -> requests.Response:
    return requests.post(base(server) + path, json=body, headers=headers, timeout=10)


def basic(password: str, user: str = "admin") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_settings_post_from_a_foreign_origin_is_refused(server_factory: Callable[..., FocuserServer]) -> None:
    server = server_factory()
    target = server.settings.path
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Origin": f"http://127.0.0.1:{server.port + 1}"}, {"Sec-Fetch-Site": "cross-site"}):
        reply = post(server, "/setup/v1/focuser/0/settings", {"name": "Hijacked"}, **headers)
        assert reply.status_code == 403, headers
        assert post(server, "/setup/focusers", {"driver": "simulator", "name": "X"}, **headers).status_code == 403
    assert not target.exists() and server.devices[0].name() == "Simulated focuser"
    # the page's own origin, and clients that send no Origin at all (curl), may save
    own = post(server, "/setup/v1/focuser/0/settings", {"name": "Ours"}, Origin=base(server))
    assert own.status_code == 200 and own.json()["applied"] == ["name"]
    assert post(server, "/setup/v1/focuser/0/settings", {"name": "Curl"}).status_code == 200
    assert load_config(target).focusers[0].name == "Curl"


def test_without_a_password_hash_no_credentials_are_asked(server_factory: Callable[..., FocuserServer]) -> None:
    server = server_factory()
    reply = post(server, "/setup/v1/focuser/0/settings", {"step_size": "2.5"})
    assert reply.status_code == 200 and "WWW-Authenticate" not in reply.headers


def test_the_password_guards_settings_writes_only(server_factory: Callable[..., FocuserServer],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    server = server_factory(server={"setup_password_hash": hash_password(PASSWORD)})
    path = "/setup/v1/focuser/0/settings"
    missing = post(server, path, {"name": "A"})
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith('Basic realm="alpaca-focuser setup"')
    with caplog.at_level(logging.WARNING, logger="alpaca_focuser.alpaca.setup_api"):
        wrong = post(server, path, {"name": "A"}, Authorization=basic("not the password"))
        garbled = post(server, path, {"name": "A"}, Authorization="Basic !!!")
    assert wrong.status_code == 401 and garbled.status_code == 401
    failures = [r.getMessage() for r in caplog.records if "wrong password" in r.getMessage()]
    assert len(failures) == 2 and all("from 127.0.0.1" in m and path in m for m in failures), failures
    assert PASSWORD not in caplog.text and "not the password" not in caplog.text
    assert server.devices[0].name() == "Simulated focuser" and not server.settings.path.exists()
    adding = post(server, "/setup/focusers", {"driver": "simulator", "name": "B"})
    assert adding.status_code == 401
    ok = post(server, path, {"name": "A"}, Authorization=basic(PASSWORD, user="anyone"))
    assert ok.status_code == 200 and server.devices[0].name() == "A"
    # the Alpaca API and the pages stay open: Alpaca clients send no credentials
    api = requests.get(base(server) + "/api/v1/focuser/0/name", timeout=5)
    assert api.status_code == 200 and api.json()["Value"] == "A"
    assert requests.put(base(server) + "/api/v1/focuser/0/connected", data={"Connected": "true"},
                        timeout=30).json()["ErrorNumber"] == 0
    for page in ("/setup", "/setup/v1/focuser/0/setup", "/setup/v1/focuser/0/history"):
        assert requests.get(base(server) + page, timeout=5).status_code == 200, page


def test_hash_password_command(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    assert cli.main(["hash-password"]) == 0
    made = capsys.readouterr().out.strip()
    assert made.startswith("scrypt$16384$8$1$") and verify_password(PASSWORD, made)
    assert not verify_password(PASSWORD + "!", made)
    assert made != hash_password(PASSWORD), "a random salt each time"
    parse_config({"server": {"setup_password_hash": made}}, "<t>")
    with pytest.raises(ConfigError, match=r"setup_password_hash: must look like scrypt\$"):
        parse_config({"server": {"setup_password_hash": "secret"}}, "<t>")
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert cli.main(["hash-password"]) == 2


def test_bodies_are_small_and_well_formed(server_factory: Callable[..., FocuserServer]) -> None:
    server = server_factory()
    url = base(server) + "/setup/v1/focuser/0/settings"
    big = requests.post(url, json={"description": "x" * 20000}, timeout=10)
    assert big.status_code == 413
    assert requests.post(url, data=b"{not json", headers={"Content-Type": "application/json"},
                         timeout=10).status_code == 400
    assert requests.post(url, json=["name"], timeout=10).status_code == 400
    assert requests.post(url, data=b"<x/>", headers={"Content-Type": "text/xml"}, timeout=10).status_code == 415
    assert requests.post(base(server) + "/setup/v1/focuser/7/settings", json={"name": "Z"},
                         timeout=10).status_code == 404
    form = requests.post(url, data={"name": "From a form", "step_size": ""}, timeout=10)
    assert form.status_code == 200 and server.devices[0].name() == "From a form"
    invalid = requests.post(url, data={"max_step": "0"}, timeout=10)
    assert invalid.status_code == 422
    assert invalid.json() == {"ok": False, "key": "max_step", "error": invalid.json()["error"]}
    assert "max_step: must be between 1 and 2147483647, got 0" in invalid.json()["error"]


@pytest.fixture
def cors_server(server_factory: Callable[..., FocuserServer]) -> FocuserServer:
    return server_factory(server={"cors_origins": ["http://client.example:8080"]})


def test_cors_preflight_for_a_listed_origin(cors_server: FocuserServer) -> None:
    origin = "http://client.example:8080"
    pre = requests.options(base(cors_server) + "/api/v1/focuser/0/move", timeout=5, headers={
        "Origin": origin, "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "content-type"})
    assert pre.status_code == 200
    assert pre.headers["Access-Control-Allow-Origin"] == origin
    # exactly the member's own verbs (its Allow header): Move is PUT only
    assert {m.strip() for m in pre.headers["Access-Control-Allow-Methods"].split(",")} == {"PUT", "OPTIONS"}
    assert pre.headers["Access-Control-Allow-Headers"] == "content-type"
    got = requests.get(base(cors_server) + "/management/v1/configureddevices", headers={"Origin": origin}, timeout=5)
    assert got.headers["Access-Control-Allow-Origin"] == origin and got.json()["ErrorNumber"] == 0
    # another origin gets no CORS grant; the setup endpoints never do, listed or not
    other = requests.options(base(cors_server) + "/api/v1/focuser/0/move", timeout=5, headers={
        "Origin": "http://elsewhere.example", "Access-Control-Request-Method": "PUT"})
    assert "Access-Control-Allow-Origin" not in other.headers
    setup = requests.options(base(cors_server) + "/setup/v1/focuser/0/settings", timeout=5, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in setup.headers
    assert post(cors_server, "/setup/v1/focuser/0/settings", {"name": "X"}, Origin=origin).status_code == 403


def test_no_cors_by_default(server_factory: Callable[..., FocuserServer]) -> None:
    server = server_factory()
    pre = requests.options(base(server) + "/api/v1/focuser/0/move", timeout=5, headers={
        "Origin": "http://client.example:8080", "Access-Control-Request-Method": "PUT"})
    assert "Access-Control-Allow-Origin" not in pre.headers


def test_cors_origins_are_checked_by_the_loader() -> None:
    with pytest.raises(ConfigError, match="cors_origins: each entry must be an origin"):
        parse_config({"server": {"cors_origins": ["http://ok.example", "http://bad.example/path"]}}, "<t>")
    assert parse_config({"server": {"cors_origins": ["*"]}}, "<t>").server.cors_origins == ("*",)


@pytest.fixture
def sampled(tmp_path: Path) -> Iterator[Callable[..., FocuserServer]]:
    def start(*focusers: dict[str, Any]) -> FocuserServer:
        server = FocuserServer(make_config(tmp_path, *focusers), multicast_interfaces=(), history_interval=0.1)
        server.start()
        return server

    yield from started_until_teardown(start, FocuserServer.stop)


def test_history_fills_from_the_snapshot_while_nobody_watches(sampled: Callable[..., FocuserServer]) -> None:
    server = sampled({"name": "H", "speed": 4000})
    url = base(server) + "/setup/v1/focuser/0/history"
    first = requests.get(url, timeout=5).json()
    assert first["fields"] == ["time", "position", "temperature", "moving"] and first["interval"] == 0.1
    assert all(s[1] is None for s in first["samples"]), "no position while disconnected"
    server.devices[0].set_connected(True)
    server.devices[0].move(2000)
    wait_until(lambda: not server.devices[0].is_moving(), timeout=5)
    time.sleep(0.3)
    samples = requests.get(url, timeout=5).json()["samples"]
    positions = [s[1] for s in samples if s[1] is not None]
    assert positions[-1] == 2000 and any(0 < p < 2000 for p in positions), "a move in progress was sampled"
    assert any(s[3] for s in samples) and all(isinstance(s[2], float) for s in samples if s[1] is not None)
    assert requests.get(base(server) + "/setup/v1/focuser/5/history", timeout=5).status_code == 404


# --- where saving works: the shipped systemd unit and the Docker image -----------------------------------------

def _spawn(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _wait_http(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()}")
        try:
            requests.get(f"http://127.0.0.1:{port}/management/apiversions", timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise AssertionError(f"server did not answer: {log.read_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def test_a_read_only_config_folder_gives_a_clear_error(tmp_path: Path) -> None:
    """ProtectSystem=strict without ReadWritePaths= makes /etc/alpaca-focuser a read-only bind mount; the same
    mount, made in a private mount namespace, must give a message that names the fix and change nothing."""
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        pytest.skip("needs root and unshare(1) for a private read-only bind mount")
    etc = tmp_path / "etc"
    etc.mkdir()
    port = free_port()
    config = etc / "config.toml"
    config.write_text(f'[server]\nbind = "127.0.0.1"\nport = {port}\nstate_dir = "{tmp_path / "state"}"\n'
                      '[discovery]\nenabled = false\n[[focuser]]\nname = "RO"  # mine\n', encoding="utf-8")
    before = config.read_bytes()
    script = (f'mount --bind "{etc}" "{etc}" && mount -o remount,bind,ro "{etc}" && '
              f'exec "{sys.executable}" -m alpaca_focuser --config "{config}"')
    probe = subprocess.run([unshare, "--mount", "true"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        pytest.skip(f"unshare --mount is not allowed here: {probe.stderr.decode().strip()}")
    log = tmp_path / "server.log"
    proc = _spawn([unshare, "--mount", "sh", "-c", script], tmp_path, clean_env(tmp_path), log)
    try:
        _wait_http(port, proc, log)
        reply = requests.post(f"http://127.0.0.1:{port}/setup/v1/focuser/0/settings", json={"name": "New"},
                              timeout=10)
        assert reply.status_code == 500
        error = reply.json()["error"]
        assert "read-only" in error and f"ReadWritePaths={etc}" in error and str(config) in error
        assert requests.get(f"http://127.0.0.1:{port}/api/v1/focuser/0/name", timeout=5).json()["Value"] == "RO"
    finally:
        _stop(proc)
    assert config.read_bytes() == before
    assert "read-only" in log.read_text()


def test_docker_volume_without_a_config_saves_there_and_the_next_start_reads_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The image runs with WORKDIR and STATE_DIRECTORY /data and, when nobody supplies a config, no --config:
    the first Save creates /data/config.toml and the next container start uses it. (In-process, with discovery
    off: the built-in defaults would otherwise join the IPv6 discovery group on real interfaces.)"""
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.chdir(data)
    monkeypatch.setenv("STATE_DIRECTORY", str(data))
    for round_ in (1, 2):
        config = cli.load_effective_config(None, bind="127.0.0.1", port=0)
        config = replace(config, discovery=replace(config.discovery, enabled=False))
        server = FocuserServer(config, multicast_interfaces=())
        server.start()
        try:
            name = requests.get(base(server) + "/api/v1/focuser/0/name", timeout=5).json()["Value"]
            if round_ == 1:
                assert config.path is None and name == "Simulated focuser"
                reply = post(server, "/setup/v1/focuser/0/settings", {"name": "Saved in the volume"})
                assert reply.status_code == 200 and reply.json()["created"] is True
                assert reply.json()["path"] == str(data / "config.toml")
            else:
                assert config.path == str(data / "config.toml") and name == "Saved in the volume"
        finally:
            server.stop()


def test_a_new_serial_port_is_used_from_the_next_connect(make_emu: Any,
                                                         server_factory: Callable[..., FocuserServer]) -> None:
    """The focuser moved to another USB socket: save the new port, Disconnect, Connect, and the server talks to the
    controller on the new port, with its position, without a restart."""
    old_port, new_port = make_emu(position=1111), make_emu(position=2222)
    server = server_factory({"name": "Moonlite", "driver": "moonlite", "port": str(old_port.link_path),
                             "max_step": 20000})
    api = f"{base(server)}/api/v1/focuser/0"
    assert requests.put(f"{api}/connected", data={"Connected": "true"}, timeout=30).json()["ErrorNumber"] == 0
    assert requests.get(f"{api}/position", timeout=5).json()["Value"] == 1111
    saved = post(server, "/setup/v1/focuser/0/settings", {"port": str(new_port.link_path), "speed": "4"})
    assert saved.status_code == 200, saved.text
    assert sorted(saved.json()["reconnect"]) == ["port", "speed"] and saved.json()["restart"] == []
    assert requests.get(f"{api}/position", timeout=5).json()["Value"] == 1111  # still the old port until then
    for value in ("false", "true"):
        reply = requests.put(f"{api}/connected", data={"Connected": value}, timeout=30).json()
        assert reply["ErrorNumber"] == 0, reply
    assert requests.get(f"{api}/position", timeout=5).json()["Value"] == 2222
    assert new_port.firmware.command_counts["SD"] == 1 and new_port.firmware.step_delay == 4
    assert server.devices[0].cfg.port == str(new_port.link_path)
    assert not old_port.client_open  # the old port was closed, not left open
