"""Serial ports: list them with their stable ``/dev/serial/by-id`` paths (``alpaca-focuser ports``), and open
one with errors a user can act on.

``/dev/ttyUSB0`` and ``/dev/ttyACM0`` are numbered in plug-in order and can swap after a reboot; the by-id
symlinks name the adapter (vendor, product, serial number) and stay the same, so they are what a config
should use. This module finds them for the user.
"""

from __future__ import annotations

import argparse
import errno
import glob
import logging
import os
import sys
from dataclasses import dataclass
from typing import Callable

import serial
from serial.tools import list_ports as serial_list_ports

from alpaca_focuser.errors import SERIAL_PORT_ERROR, DriverError

log = logging.getLogger(__name__)

BY_ID_DIR = "/dev/serial/by-id"

try:  # pyserial lets termios.error (not an OSError) escape from tcflush on a vanished tty
    from termios import error as TermiosError
except ImportError:  # pragma: no cover - not POSIX
    class TermiosError(Exception):  # type: ignore[no-redef]
        pass

#: What a failing port raises: USB unplugged, device gone, write timeout.
PORT_ERRORS: tuple[type[BaseException], ...] = (serial.SerialException, OSError, TermiosError)


def describe_port_error(exc: BaseException) -> str:
    """``[Errno 5] Input/output error`` also for termios.error, whose str() is a bare tuple."""
    if isinstance(exc, TermiosError) and len(exc.args) == 2:
        return f"[Errno {exc.args[0]}] {exc.args[1]}"
    return str(exc) or type(exc).__name__


def _describe_open_error(exc: BaseException) -> str:
    """The OS reason pyserial wraps (its own message repeats the path twice), plus what to check."""
    # SerialException is itself an OSError whose strerror repeats the path: prefer the one it wraps.
    cause = exc.__context__ if isinstance(exc.__context__, OSError) else exc
    if not isinstance(cause, OSError) or cause.errno is None:
        return describe_port_error(exc)
    text = f"[Errno {cause.errno}] {cause.strerror}"
    if cause.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
        text += " (the port is in use by another program)"  # pyserial's exclusive lock failed
    elif cause.errno == errno.EACCES:
        text += " (is this user in the dialout group?)"
    return text


def open_serial(path: str, *, baud: int, read_timeout: float,
                factory: Callable[..., serial.Serial] = serial.Serial) -> serial.Serial:
    """Open ``path`` 8N1 without flow control. Raises DriverError (SERIAL_PORT_ERROR) naming the port."""
    try:
        return factory(port=path, baudrate=baud, bytesize=serial.EIGHTBITS, parity=serial.PARITY_NONE,
                       stopbits=serial.STOPBITS_ONE, timeout=read_timeout, write_timeout=max(1.0, 2 * read_timeout),
                       xonxoff=False, rtscts=False, dsrdtr=False,
                       exclusive=True)  # a second program on the same controller would steal its replies
    except PORT_ERRORS + (ValueError,) as exc:
        raise DriverError(f"Cannot open serial port {path}: {_describe_open_error(exc)}", SERIAL_PORT_ERROR) from exc


@dataclass(frozen=True)
class PortInfo:
    device: str  # e.g. /dev/ttyUSB0
    by_id: tuple[str, ...]  # /dev/serial/by-id/* symlinks that resolve to ``device``
    vid: int | None
    pid: int | None
    description: str
    serial_number: str | None
    manufacturer: str | None

    @property
    def usb_id(self) -> str:
        """``VID:PID`` in hex as lsusb prints it, or "" for a non-USB port."""
        return f"{self.vid:04x}:{self.pid:04x}" if self.vid is not None and self.pid is not None else ""

    @property
    def best_path(self) -> str:
        """The path to put in a config: the first by-id link when there is one."""
        return self.by_id[0] if self.by_id else self.device


def _by_id_links(by_id_dir: str = BY_ID_DIR) -> dict[str, list[str]]:
    """Map resolved device path -> by-id symlinks pointing to it."""
    links: dict[str, list[str]] = {}
    for link in sorted(glob.glob(os.path.join(by_id_dir, "*"))):
        try:
            target = os.path.realpath(link)
        except OSError as exc:  # a link can vanish while we look (adapter unplugged)
            log.debug("Skipping %s: %s", link, exc)
            continue
        links.setdefault(target, []).append(link)
    return links


def list_ports(by_id_dir: str = BY_ID_DIR) -> list[PortInfo]:
    """Every serial port pyserial knows, USB adapters first, each with its by-id paths."""
    links = _by_id_links(by_id_dir)
    ports: list[PortInfo] = []
    for p in serial_list_ports.comports():
        device = p.device
        real = os.path.realpath(device)
        description = p.description if p.description and p.description != "n/a" else ""
        ports.append(PortInfo(device=device, by_id=tuple(links.get(real, ())), vid=p.vid, pid=p.pid,
                              description=description, serial_number=p.serial_number or None,
                              manufacturer=p.manufacturer or None))
    # Built-in UARTs (ttyS*, ttyAMA*) rarely hold a focuser: list the USB adapters first.
    ports.sort(key=lambda info: (info.vid is None, info.device))
    return ports


def format_ports(ports: list[PortInfo], probed: dict[str, str] | None = None) -> str:
    """A plain text table; each port's config path is on its own line so it can be copied whole. ``probed``:
    what probing found, by device, shown under each port."""
    if not ports:
        return "No serial ports found.\n"
    headers = ("DEVICE", "USB ID", "MANUFACTURER", "DESCRIPTION", "SERIAL")
    rows = [(p.device, p.usb_id or "-", p.manufacturer or "-", p.description or "-", p.serial_number or "-")
            for p in ports]
    widths = [max(len(r[i]) for r in (headers, *rows)) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(headers, widths)).rstrip()]
    for port, row in zip(ports, rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        for link in port.by_id:
            lines.append(f"    port = \"{link}\"")
        if probed is not None:
            lines.append(f"    probe: {probed.get(port.device, 'not probed')}")
    if not any(p.by_id for p in ports):
        lines.append("")
        lines.append(f"No {BY_ID_DIR} links: use the device path, but it may change after a reboot or replug.")
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from alpaca_focuser.drivers.probe import positive_seconds

    parser.add_argument("--probe", action="store_true",
                        help="also ask each USB serial port which focuser controller answers (queries only; a few "
                             "seconds per port, all ports at once)")
    parser.add_argument("--timeout", type=positive_seconds, default=None, metavar="S",
                        help="with --probe: how long each controller's handshake keeps trying (default: each "
                             "protocol's own window)")


NOT_PROBED = "not probed: not a USB adapter (often a console or Bluetooth); `alpaca-focuser probe {}` tries it"


def run(args: argparse.Namespace) -> int:
    ports = list_ports()
    probed: dict[str, str] | None = None
    if args.probe:
        from alpaca_focuser.drivers.probe import probe_ports

        usb = [p.best_path for p in ports if p.vid is not None]
        if usb:
            print(f"Probing {len(usb)} USB serial port(s)...", file=sys.stderr, flush=True)
        results = {r.port: r.summary() for r in probe_ports(usb, timeout=args.timeout)}
        probed = {p.device: results.get(p.best_path) or NOT_PROBED.format(p.device) for p in ports}
    print(format_ports(ports, probed), end="")
    return 0
