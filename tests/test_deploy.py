"""Deployment files: the systemd unit, install.sh (run for real under a temp root), the Dockerfile, the health check."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from alpaca_focuser import health

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "deploy" / "alpaca-focuser.service"
INSTALL = REPO / "deploy" / "install.sh"
DOCKERFILE = REPO / "Dockerfile"


# -- systemd unit ------------------------------------------------------------------------------------------------

def _unit_directives(text: str) -> dict[str, list[tuple[str, str]]]:
    """Section -> [(key, value)]; keys may repeat (SystemCallFilter=), so no configparser."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, [])
        else:
            key, _, value = line.partition("=")
            sections[current].append((key.strip(), value.strip()))
    return sections


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (CI installs systemd)")
    # verify insists that ExecStart's binary exists, and /opt/alpaca-focuser/venv only exists after install.sh:
    # check a copy whose ExecStart points at /bin/true with the same arguments; everything else is verbatim.
    true = shutil.which("true") or "/bin/true"
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={true}", UNIT.read_text(), flags=re.M)
    copy = tmp_path / UNIT.name
    copy.write_text(text)
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # verify exits 0 even for unknown keys or bad values; it only complains, so any output is a failure.
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr


def test_unit_has_the_required_directives() -> None:
    sections = _unit_directives(UNIT.read_text())
    service = dict(sections["Service"])
    required = {
        "ExecStart": "/opt/alpaca-focuser/venv/bin/alpaca-focuser --config /etc/alpaca-focuser/config.toml",
        "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "30", "Restart": "on-failure",
        "RestartSec": "5", "StateDirectory": "alpaca-focuser", "User": "alpaca-focuser",
        "Group": "alpaca-focuser", "SupplementaryGroups": "dialout", "ProtectSystem": "strict",
        "ProtectHome": "yes", "NoNewPrivileges": "yes", "PrivateTmp": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX AF_NETLINK", "KillSignal": "SIGTERM",
        "TimeoutStopSec": "10", "ReadWritePaths": "-/etc/alpaca-focuser",
    }
    for key, value in required.items():
        assert service.get(key) == value, key
    unit = dict(sections["Unit"])
    assert unit["After"] == "network-online.target" and unit["Wants"] == "network-online.target"
    assert dict(sections["Install"])["WantedBy"] == "multi-user.target"
    # These would cut the service off from /dev/ttyUSB0 (see the comment in the unit).
    for breaks_serial in ("PrivateDevices", "DeviceAllow", "DevicePolicy", "ProtectClock", "PrivateUsers"):
        assert breaks_serial not in service


# -- install.sh --------------------------------------------------------------------------------------------------

def test_install_script_makes_the_config_folder_writable_for_the_service() -> None:
    """What the unit's ReadWritePaths= needs on a real system (the temp-root install below skips chown)."""
    text = INSTALL.read_text()
    assert 'install -d -m 2775 -o root -g "$SERVICE_USER" "$CONF_DIR"' in text
    assert 'install -m 0664 -o root -g "$SERVICE_USER" "$SRC/config.toml" "$CONF_DIR/config.toml"' in text


def test_install_script_syntax() -> None:
    subprocess.run(["bash", "-n", str(INSTALL)], check=True, timeout=30)
    assert os.access(INSTALL, os.X_OK), "install.sh should be executable"
    if shutil.which("shellcheck"):
        result = subprocess.run(["shellcheck", str(INSTALL)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout


@dataclass
class Installed:
    src: Path
    root: Path
    first_output: str

    @property
    def venv(self) -> Path:
        return self.root / "opt/alpaca-focuser/venv"

    @property
    def config(self) -> Path:
        return self.root / "etc/alpaca-focuser/config.toml"


def _run_install(script: Path, root: Path, src: Path | None = None) -> str:
    env = {**os.environ, "ALPACA_FOCUSER_ROOT": str(root), "ALPACA_FOCUSER_NO_SYSTEMCTL": "1",
           "ALPACA_FOCUSER_PYTHON": sys.executable}
    env.pop("ALPACA_FOCUSER_SRC", None)
    if src is not None:
        env["ALPACA_FOCUSER_SRC"] = str(src)
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _venv_python(installed: Installed, code: str) -> None:
    # cwd outside the work tree: `python -c` puts the cwd first on sys.path, which would shadow the venv's copy.
    subprocess.run([str(installed.venv / "bin" / "python"), "-c", code], check=True, timeout=60, cwd=installed.root)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """install.sh run for real into a temp root (no useradd/systemctl). pip fetches the dependencies."""
    base = tmp_path_factory.mktemp("install")
    src = base / "src"
    # A copy, so the test never builds inside the shared work tree.
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", "build", "dist",
                                                             ".venv", ".pytest_cache", "tests", "bench"))
    if not (src / "config.toml").exists():
        (src / "config.toml").write_text("# stand-in: the repository has no config.toml yet\n")
    root = base / "root"
    # The repository's script with ALPACA_FOCUSER_SRC pointing at the copy.
    return Installed(src, root, _run_install(INSTALL, root, src=src))


@pytest.mark.slow
def test_install_creates_venv_config_and_unit(installed: Installed) -> None:
    assert (installed.venv / "bin" / "alpaca-focuser").is_file()
    _venv_python(installed, "import alpaca_focuser, falcon, waitress, serial, tomlkit, sys; "
                            f"assert alpaca_focuser.__file__.startswith({str(installed.venv)!r})")
    assert installed.config.read_text() == (installed.src / "config.toml").read_text()
    # every file of the setup pages is installed with the package (package-data picks up each type)
    web = sorted(p.name for p in (REPO / "alpaca_focuser" / "web").iterdir() if p.is_file() and p.suffix != ".pyc")
    _venv_python(installed, "from importlib import resources; "
                            "names = {p.name for p in resources.files('alpaca_focuser.web').iterdir()}; "
                            f"missing = set({web!r}) - names; assert not missing, missing")
    unit = installed.root / "etc/systemd/system/alpaca-focuser.service"
    assert unit.read_text() == UNIT.read_text()
    assert not list(installed.src.glob("*.egg-info")) and not (installed.src / "build").exists()


@pytest.mark.slow
def test_install_rerun_upgrades_and_keeps_the_users_config(installed: Installed) -> None:
    installed.config.write_text("# my own settings\n")
    marker = installed.venv / "kept-venv-marker"
    marker.write_text("")
    (installed.src / "alpaca_focuser" / "_upgrade_probe.py").write_text("NEW = True\n")
    # This time the copy's own script, finding its source tree from its location.
    output = _run_install(installed.src / "deploy" / "install.sh", installed.root)
    assert installed.config.read_text() == "# my own settings\n"
    assert "Keeping existing" in output
    assert marker.exists(), "the venv must be reused, not recreated"
    _venv_python(installed, "import alpaca_focuser._upgrade_probe")


# -- Dockerfile --------------------------------------------------------------------------------------------------

def _dockerfile() -> list[tuple[str, str]]:
    instructions: list[tuple[str, str]] = []
    logical = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        instruction, _, rest = logical.partition(" ")
        instructions.append((instruction.upper(), rest.strip()))
        logical = ""
    return instructions


def _all(instructions: list[tuple[str, str]], name: str) -> list[str]:
    return [rest for instruction, rest in instructions if instruction == name]


def test_dockerfile_has_the_expected_instructions() -> None:
    ins = _dockerfile()
    assert ins[0] == ("FROM", "python:3.11-slim")
    assert any("pip install --no-cache-dir ." in run for run in _all(ins, "RUN"))
    assert any("useradd" in run and "dialout" in run and " alpaca" in run for run in _all(ins, "RUN"))
    assert "STATE_DIRECTORY=/data" in " ".join(_all(ins, "ENV"))
    assert _all(ins, "VOLUME") == ['["/data"]']
    assert _all(ins, "USER") == ["alpaca"]
    assert set(" ".join(_all(ins, "EXPOSE")).split()) == {"11111/tcp", "32227/udp"}
    healthcheck = _all(ins, "HEALTHCHECK")
    assert len(healthcheck) == 1 and healthcheck[0].endswith('CMD ["alpaca-focuser", "healthcheck"]')
    assert _all(ins, "STOPSIGNAL") == ["SIGTERM"]
    copies = [rest.split() for rest in _all(ins, "COPY")]
    # no config baked into the image: the setup page could not save it, and the volume is where saves persist
    assert not any(dest.startswith("/etc") for *_, dest in copies), copies
    ignored = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines()
               if p.strip() and not p.startswith("#")]
    for needed in ("config.toml", "pyproject.toml", "README.md", "alpaca_focuser"):
        assert needed not in ignored, f".dockerignore would hide {needed} from the build"


@pytest.mark.parametrize("data_config, etc_config", [(False, False), (True, False), (False, True), (True, True)])
def test_docker_cmd_prefers_data_config(tmp_path: Path, data_config: bool, etc_config: bool) -> None:
    """Runs the CMD's shell snippet with a stub alpaca-focuser and /data, /etc mapped into tmp_path."""
    cmd = json.loads(_all(_dockerfile(), "CMD")[0])
    assert cmd[:2] == ["sh", "-c"]
    script = cmd[2].replace("/data/", f"{tmp_path}/data/").replace("/etc/", f"{tmp_path}/etc/")
    (tmp_path / "data").mkdir()
    (tmp_path / "etc" / "alpaca-focuser").mkdir(parents=True)
    if data_config:
        (tmp_path / "data" / "config.toml").write_text("")
    if etc_config:
        (tmp_path / "etc" / "alpaca-focuser" / "config.toml").write_text("")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    stub = bindir / "alpaca-focuser"
    stub.write_text('#!/bin/sh\necho "$@"\n')
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, timeout=30, check=True)
    if data_config:
        expected = ["--config", f"{tmp_path}/data/config.toml"]
    elif etc_config:
        expected = ["--config", f"{tmp_path}/etc/alpaca-focuser/config.toml"]
    else:  # built-in defaults; the first Save creates /data/config.toml ($STATE_DIRECTORY), read at next start
        expected = []
    assert shlex.split(out.stdout) == expected
    assert "exec alpaca-focuser" in cmd[2], "exec, so the server itself gets SIGTERM"


@pytest.mark.slow
def test_package_installs_and_reports_its_version(installed: Installed) -> None:
    """What `RUN pip install --no-cache-dir .` does, in a fresh venv (install.sh's): the CLI must start."""
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    result = subprocess.run([str(installed.venv / "bin" / "alpaca-focuser"), "--version"], capture_output=True,
                            text=True, timeout=60, cwd=installed.root)
    assert result.returncode == 0, result.stderr
    assert version in result.stdout + result.stderr


# -- health check ------------------------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    ANSWERS = {
        "/ok": (200, b'{"Value":[1],"ClientTransactionID":0,"ServerTransactionID":1,"ErrorNumber":0,'
                     b'"ErrorMessage":""}'),
        "/v2only": (200, b'{"Value":[2],"ErrorNumber":0,"ErrorMessage":""}'),
        "/notjson": (200, b"<html>hello</html>"),
        "/broken": (500, b"oops"),
    }

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        status, body = self.ANSWERS.get(self.path, (404, b"not found"))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture(scope="module")
def http_base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, name="test-health-http", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_health_ok(http_base: str) -> None:
    assert health.check(f"{http_base}/ok", timeout=5) == 0


@pytest.mark.parametrize("path", ["/v2only", "/notjson", "/broken", "/missing"])
def test_health_bad_answers(http_base: str, path: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert health.check(f"{http_base}{path}", timeout=5) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("unhealthy: ")


def test_health_closed_port(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert health.check(f"http://127.0.0.1:{port}/management/apiversions", timeout=2) == 1
    assert capsys.readouterr().err.startswith("unhealthy: ")


def test_health_cli_arguments(http_base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    parser = argparse.ArgumentParser()
    health.add_arguments(parser)
    args = parser.parse_args([])
    assert args.url == "http://127.0.0.1:11111/management/apiversions" and args.timeout == 5.0
    assert health.run(parser.parse_args(["--url", f"{http_base}/ok", "--timeout", "2"])) == 0
    monkeypatch.setenv(health.URL_ENV, f"{http_base}/ok")  # lets a container on another port keep HEALTHCHECK
    parser = argparse.ArgumentParser()
    health.add_arguments(parser)
    assert health.run(parser.parse_args([])) == 0
