"""Command line: ``alpaca-focuser [serve options]`` and the helper subcommands.

    alpaca-focuser [--config PATH] [--bind ADDR] [--port N] [--log-level LEVEL] [--version]
    alpaca-focuser check-config PATH     validate a file and print the effective configuration
    alpaca-focuser ports [--probe]       list serial ports (/dev/serial/by-id paths; what answers on each)
    alpaca-focuser probe PORT            which focuser controller answers on a port (queries only)
    alpaca-focuser emulate --link PATH   run a focuser controller emulator on a pty (--protocol moonlite|...)
    alpaca-focuser healthcheck           ask a running server whether it answers (Docker HEALTHCHECK)
    alpaca-focuser hash-password         make [server] setup_password_hash for the settings page
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from dataclasses import replace
from typing import Callable, Sequence

from alpaca_focuser import __version__
from alpaca_focuser.config import Config, ConfigError, describe, find_default_config, load_config

log = logging.getLogger("alpaca_focuser")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def setup_logging(level: str) -> None:
    """Logs go to stdout (journald and `docker logs` read them) with UTC ISO timestamps."""
    formatter = logging.Formatter("%(asctime)s.%(msecs)03dZ %(levelname)-7s %(threadName)s %(name)s: %(message)s",
                                  datefmt="%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if level != "DEBUG":
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "Task queue depth" noise under load


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alpaca-focuser", description="ASCOM Alpaca focuser server (IFocuserV4).",
                                epilog="Subcommands: check-config PATH | ports | probe PORT | emulate --link PATH | "
                                       "healthcheck | hash-password (each has --help).")
    p.add_argument("--config", metavar="PATH", help="config file (default: ./config.toml if present, else "
                                                    "config.toml in the state directory if present, else "
                                                    "built-in defaults with one simulated focuser)")
    p.add_argument("--bind", metavar="ADDR", help="address to listen on, e.g. 0.0.0.0, :: or 127.0.0.1")
    p.add_argument("--port", type=int, metavar="N", help="HTTP port (default 11111)")
    p.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS,
                   help="DEBUG also logs every request and reply")
    p.add_argument("--version", action="version", version=f"alpaca-focuser {__version__}")
    return p


def load_effective_config(path: str | None, bind: str | None = None, port: int | None = None) -> Config:
    """The file named, else ./config.toml, else the state directory's config.toml, else the defaults; then
    command-line overrides."""
    if path is not None:
        config = load_config(path)
    else:
        found = find_default_config()
        config = load_config(found) if found else Config()
    server = config.server
    if bind is not None:
        server = replace(server, bind=bind)
    if port is not None:
        if not 0 <= port <= 65535:
            raise ConfigError(f"--port: must be between 0 and 65535, got {port}")
        server = replace(server, port=port)
    return replace(config, server=server)


def serve(argv: Sequence[str]) -> int:
    args = _serve_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        config = load_effective_config(args.config, args.bind, args.port)
    except ConfigError as exc:
        print(f"alpaca-focuser: {exc}", file=sys.stderr)
        return 2

    from alpaca_focuser import sdnotify
    from alpaca_focuser.app import FocuserServer

    log.info("alpaca-focuser %s starting with %s; state in %s", __version__, config.source,
             config.resolved_state_dir())
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log.info("Received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server = FocuserServer(config)
        server.start()
    except OSError as exc:
        log.error("Cannot start: %s", exc)
        return 1
    sdnotify.notify("READY=1")
    watchdog = sdnotify.Watchdog.from_environment()
    if watchdog is not None:
        watchdog.start(server.healthy)
    try:
        while not stop.wait(1.0):
            if not server.healthy():
                log.error("The HTTP server thread died; exiting so systemd restarts us")
                return 1
    finally:
        sdnotify.notify("STOPPING=1")
        if watchdog is not None:
            watchdog.stop()
        server.stop()
    return 0


def check_config(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="alpaca-focuser check-config",
                                description="Validate a config file and print the effective configuration.")
    p.add_argument("path")
    args = p.parse_args(argv)
    try:
        config = load_config(args.path)
    except ConfigError as exc:
        print(f"alpaca-focuser: {exc}", file=sys.stderr)
        return 2
    print(describe(config), end="")
    return 0


def _subcommand(module: str, prog: str, description: str) -> Callable[[Sequence[str]], int]:
    """A subcommand implemented by a module with ``add_arguments(parser)`` and ``run(args)``."""

    def run(argv: Sequence[str]) -> int:
        import importlib

        mod = importlib.import_module(module)
        p = argparse.ArgumentParser(prog=f"alpaca-focuser {prog}", description=description)
        mod.add_arguments(p)
        args = p.parse_args(argv)
        setup_logging("INFO")  # the same log format as the server (the emulator logs what it is sent)
        return int(mod.run(args))

    return run


SUBCOMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "check-config": check_config,
    "ports": _subcommand("alpaca_focuser.drivers.ports", "ports", "List serial ports and their stable paths."),
    "probe": _subcommand("alpaca_focuser.drivers.probe", "probe",
                         "Find which focuser controller answers on a serial port, with queries only (never a "
                         "move or a setting). Exit status 0: found; 1: nothing answered; 2: the port cannot be "
                         "used."),
    "emulate": _subcommand("alpaca_focuser.emulator.cli", "emulate", "Run a focuser controller emulator on a pty."),
    "healthcheck": _subcommand("alpaca_focuser.health", "healthcheck", "Check that a server answers."),
    "hash-password": _subcommand("alpaca_focuser.passwords", "hash-password",
                                 "Print a salted scrypt hash of a password for [server] setup_password_hash."),
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return SUBCOMMANDS[argv[0]](argv[1:])
    if argv and argv[0] == "serve":
        argv = argv[1:]
    return serve(argv)


if __name__ == "__main__":
    raise SystemExit(main())
