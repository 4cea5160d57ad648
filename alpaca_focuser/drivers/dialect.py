"""The dialect interface: everything a serial focuser protocol needs to say, and nothing the engine does.

``SerialEngine`` (serial_engine.py) owns the port, the one thread per port, the snapshot, the command queue,
the poll schedule, fault detection and reconnects. A ``Dialect`` says what is specific to one protocol, in
three declarations and a handful of methods, all called on the engine's owner thread with a ``SerialLink``
(serial_link.py). Writing a new one (myFocuserPro2, Pegasus, ...) means filling in this class, with the codec
(encoders, parsers raising ``ProtocolError``) in its own ``<name>_protocol.py`` tested on bytes.

Declarations (class attributes; INDI style: what the controller can do, apart from how the wire says it)
    ``features: Features``      max position, temperature sensor (``None`` when only the handshake can tell:
                                set ``has_temperature`` then), native backlash and reverse. An instance may
                                replace it after the handshake (e.g. a max position read from the firmware).
    ``link_settings: LinkSettings``  default baud (and ``other_bauds`` that builds of the firmware use, which
                                ``probe`` tries after every dialect's default), whether the board resets when
                                the port opens and how long it ignores input then (and whether to wait that out
                                in silence before the handshake: ``wait_out_boot``, which the engine and the
                                probe do), the handshake window, the poll intervals idle and moving.
    ``quirks: Quirks``          rules the engine applies for the dialect: never halt an idle controller (the
                                ESP32 myFocuserPro2 keeps the halt armed and stops the next move); a move is
                                ignored while moving, so a retarget is halt, wait for the stop, then move; the
                                halt has a reply of its own that must be consumed (recent Pegasus firmware;
                                ``is_halt_reply`` recognises it); a motor that reports moving while its position
                                stands still for ``stall_seconds`` (``stall_after_halt`` after a halt) has
                                stopped (clones whose moving flag never clears). An instance may replace it once
                                the handshake has told the firmware version.

Methods (``link`` is the open ``SerialLink``; use ``link.send`` for commands without reply (``answer=`` for one
whose acknowledgement must be consumed, like a Pegasus echo), ``link.query`` / ``link.query_retry`` /
``link.query_optional`` for strict queries (``matches=`` skips frames that answer something else), ``link.poll``
inside ``poll``, ``move`` and ``sync`` (a bad reply there is dropped and counted; too many in a row fault the
link), ``link.pause`` / ``link.drain`` to wait, and ``link.interrupted`` to see whether a Halt came since the
command began)
    ``framer()``                a fresh framer for the replies (protocol.py: ``TerminatedFramer(b"#")``,
                                ``LineFramer()``; or the codec's own, e.g. ``myfp2_protocol.ReplyFramer``).
    ``command_name(frame)``     the command a frame carries, for per-command counters (``:SN1A2B#`` -> ``SN``).
    ``handshake(link, timeout)``  queries only (never a move or a setting: ``probe`` runs it on controllers of
                                every protocol, and refuses a ``link.send`` that is not part of a query),
                                retried through the boot window; returns the firmware version (also kept in
                                ``firmware``; where the protocol names the model, e.g. Pegasus's ``OK_DMFCN``,
                                set ``model`` to its name, "DMFC": ``probe`` shows it); raises NoController.
                                Probed after other protocols, it may find their frames in the controller's input:
                                a reply that is no answer is asked again, not taken for silence. A dialect's class
                                must build with no arguments (``DIALECT()``) for a handshake.
    ``initialise(link)``        apply the configured settings and read the whole state: a ``Reading`` with
                                position and moving (and the temperature when there is a sensor).
    ``poll(link, moving, last_position)``  one poll cycle, idle or moving: a ``Reading`` (fields left ``None``
                                were not read this time), or ``None`` if the cycle could not complete.
    ``move(link, target)``      start a move to ``target``; False if it was not started because
                                ``link.interrupted``. Verifies what the wire cannot acknowledge.
    ``halt_frame()``            the bytes of a halt. The engine writes it at once, also while a reply is on its
                                way (issue 11), so it must be a single frame needing no reply to proceed.
    ``is_halt_reply(frame)``    with ``quirks.halt_answers``: True for the halt's own reply.
    ``sync(link, position)``    declare the position; return what the controller reports afterwards (or None).
    ``description(port)``       what the ASCOM Description shows.

A ``ProtocolError`` escaping ``poll``, ``move`` or ``sync`` means the controller cannot be trusted any more: the
engine faults (0x502), reconnects and reads the state again. Port errors fault with 0x501.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

from alpaca_focuser.drivers.protocol import Framer, show_frame
from alpaca_focuser.drivers.serial_link import SerialLink

#: Tries per query while (re)connecting: a noisy line must not fail the connect at once.
INIT_TRIES = 3


@dataclass(frozen=True)
class Features:
    """What the controller can do."""

    max_position: int
    temperature: bool | None = None  # None: only the handshake can tell
    backlash: bool = False  # native backlash compensation
    reverse: bool = False  # native direction reversal


@dataclass(frozen=True)
class LinkSettings:
    """How the controller is reached and how often it is polled."""

    default_baud: int
    other_bauds: tuple[int, ...] = ()  # speeds other builds of the firmware use; probe tries them last
    resets_on_open: bool = True  # DTR reboots the board when the port opens
    boot_time: float = 0.0  # seconds it ignores input after that
    quiet_boot: bool = False  # say nothing until boot_time has passed (else the handshake retries through it)
    handshake_timeout: float = 3.0  # how long the handshake keeps trying (longer than boot_time)
    moving_poll_interval: float = 0.1
    idle_poll_interval: float = 1.0


@dataclass(frozen=True)
class Quirks:
    """Rules the engine applies on the dialect's behalf."""

    halt_when_idle: bool = True  # False: never write a halt while the controller is believed idle
    halt_answers: bool = False  # the halt has a reply of its own (``Dialect.is_halt_reply``)
    retarget_needs_halt: bool = False  # a move command is ignored while moving
    stall_seconds: float | None = None  # "moving" with the position unchanged this long means stopped
    stall_after_halt: float | None = None  # the same after a halt, when the motor is only decelerating


@dataclass(frozen=True)
class Reading:
    """What one poll (or the initial state read) learnt. ``None``: not read this time."""

    position: int | None = None
    moving: bool | None = None
    temperature: float | None = None


class Dialect(abc.ABC):
    """One serial focuser protocol. An instance serves one driver: it may keep what the handshake learnt."""

    name: ClassVar[str]  # config's ``driver = "..."``; the owner thread is named ``<name>-<focuser name>``
    title: ClassVar[str]  # how messages name the controller: "Moonlite"
    features: Features
    link_settings: ClassVar[LinkSettings]
    quirks: Quirks = Quirks()

    def __init__(self) -> None:
        self.firmware: str | None = None  # the version the handshake read
        self.model: str | None = None  # the model, when the handshake learnt it ("DMFC"); None: not said
        self.has_temperature = bool(self.features.temperature)

    @abc.abstractmethod
    def framer(self) -> Framer:
        """A fresh framer for the controller's replies."""

    def command_name(self, frame: bytes) -> str:
        return show_frame(frame)

    @abc.abstractmethod
    def handshake(self, link: SerialLink, timeout: float) -> str:
        """Identify the controller (queries only); the firmware version. Raises NoController."""

    @abc.abstractmethod
    def initialise(self, link: SerialLink) -> Reading:
        """Apply settings and read the state; position and moving must be set."""

    @abc.abstractmethod
    def poll(self, link: SerialLink, moving: bool, last_position: int) -> Reading | None:
        """One poll cycle."""

    @abc.abstractmethod
    def move(self, link: SerialLink, target: int) -> bool:
        """Start a move; False if a halt came first."""

    @abc.abstractmethod
    def halt_frame(self) -> bytes:
        """The halt command's bytes."""

    def is_halt_reply(self, frame: bytes) -> bool:
        return False

    @abc.abstractmethod
    def sync(self, link: SerialLink, position: int) -> int | None:
        """Set the position without moving; the position the controller then reports."""

    def description(self, port: str) -> str:
        """What the ASCOM Description shows; the firmware once the handshake has read it."""
        return with_firmware(f"{self.title} focuser on {port}", self.firmware)


def with_firmware(text: str, firmware: str | None) -> str:
    """``text`` + ``, firmware 10`` once the version is known."""
    return text if firmware is None else f"{text}, firmware {firmware}"


def wait_out_boot(dialect: Dialect, link: SerialLink) -> None:
    """Right after the port opened: for a board that resets then and misreads what it hears while booting
    (``quiet_boot``), say nothing for its boot time, then forget what it printed (a boot banner). Other boards
    are simply retried through the boot window by the handshake."""
    settings = dialect.link_settings
    if settings.resets_on_open and settings.quiet_boot:
        link.pause(settings.boot_time)
        link.flush()
