"""App assembly: devices from config, the Falcon app, and the running server (waitress + discovery)."""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import falcon
import waitress
from waitress import trigger, wasyncore

from alpaca_focuser.alpaca.device_api import DEVICE_ROUTE, DeviceResource
from alpaca_focuser.alpaca.management import add_management_routes
from alpaca_focuser.alpaca.responses import TransactionCounter, send_text
from alpaca_focuser.alpaca.setup_api import ApiCorsMiddleware
from alpaca_focuser.alpaca.setup_pages import add_setup_routes
from alpaca_focuser.config import Config, FocuserConfig
from alpaca_focuser.drivers import FocuserDriver, create_driver
from alpaca_focuser.focuser.device import FocuserDevice
from alpaca_focuser.history import INTERVAL, HistorySampler
from alpaca_focuser.settings import Settings
from alpaca_focuser.state import StateStore

log = logging.getLogger(__name__)


def _plain_text_errors(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    """Alpaca wants 4xx/5xx bodies as plain text, not Falcon's default JSON."""
    text = exc.title or "Error"
    if exc.description:
        text = f"{text}: {exc.description}"
    resp.content_type = "text/plain; charset=utf-8"
    resp.text = text + "\n"


def _unexpected_error(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict[str, Any]) -> None:
    """A bug must cost one request, never the server: log the traceback, answer 500 with a short text."""
    if isinstance(exc, (falcon.HTTPError, falcon.HTTPStatus)):
        raise exc  # let Falcon's own handlers deal with these
    log.exception("Unexpected error handling %s %s", req.method, req.relative_uri)
    send_text(resp, falcon.HTTP_500, f"Internal server error: {type(exc).__name__}: {exc}")


def build_devices(config: Config, store: StateStore) -> dict[int, FocuserDevice]:
    """One device per enabled ``[[focuser]]`` table, numbered by the table's place in the file: a disabled
    table keeps its number, so removing a focuser never renumbers the ones after it."""
    devices: dict[int, FocuserDevice] = {}
    for number, cfg in enumerate(config.focusers):
        if not cfg.enabled:
            continue
        def factory(cfg: FocuserConfig, number: int = number) -> FocuserDriver:
            return create_driver(cfg, saved_position=store.position(number))

        devices[number] = FocuserDevice(number, cfg, factory(cfg), store, driver_factory=factory)
    return devices


def _serial_ports() -> list[tuple[str, str]]:
    """The ports ``alpaca-focuser ports`` lists, as (config path, description) for the add-focuser form."""
    from alpaca_focuser.drivers.ports import list_ports

    try:
        ports = list_ports()
    except OSError as exc:
        log.warning("Cannot list serial ports: %s", exc)
        return []
    return [(p.best_path, " ".join(x for x in (p.best_path, p.manufacturer or "", p.description) if x))
            for p in ports]


def create_app(config: Config, devices: dict[int, FocuserDevice], settings: Settings | None = None,
               sampler: HistorySampler | None = None, discovery: Callable[[], Any] = lambda: None) -> falcon.App:
    """The Falcon app. ``settings`` and ``sampler`` default to fresh ones (tests that need no history thread);
    ``discovery`` returns the running discovery responder (or None), for its metrics."""
    metrics = None
    if config.server.metrics:
        from alpaca_focuser.alpaca.metrics import ServerMetrics  # prometheus_client only when metrics are on

        metrics = ServerMetrics(devices, discovery)
    middleware: list[Any] = [metrics.requests] if metrics else []
    if config.server.cors_origins:
        middleware.append(ApiCorsMiddleware(config.server.cors_origins))
    app = falcon.App(media_type="application/json", middleware=middleware)
    app.req_options.strip_url_path_trailing_slash = True
    app.set_error_serializer(_plain_text_errors)
    app.add_error_handler(Exception, _unexpected_error)
    settings = settings or Settings(config, devices)
    for device in devices.values():
        device.settings_writer = settings.write_keys  # type: ignore[attr-defined]  # persists learned settings
    counter = TransactionCounter()
    app.add_route(DEVICE_ROUTE, DeviceResource(devices, counter, metrics.requests if metrics else None))
    if metrics:
        app.add_route("/metrics", metrics.resource)
    add_management_routes(app, devices, counter, config.server.location)
    add_setup_routes(app, devices, config.server.location, settings, sampler or HistorySampler(devices),
                     config.server.setup_password_hash, _serial_ports)
    return app


def listen_addresses(bind: str, port: int) -> str:
    """waitress ``listen`` value. "::" means both stacks: waitress sets IPV6_V6ONLY, so add 0.0.0.0 too."""
    if bind in ("::", ""):
        return f"0.0.0.0:{port} [::]:{port}"
    if ":" in bind:
        return f"[{bind}]:{port}"
    return f"{bind}:{port}"


class FocuserServer:
    """The running server: HTTP on waitress in its own thread, plus the discovery responder."""

    def __init__(self, config: Config, store: StateStore | None = None,
                 multicast_interfaces: tuple[str, ...] | None = None, history_interval: float = INTERVAL) -> None:
        """``multicast_interfaces`` limits the IPv6 discovery group joins (None: every interface); tests pass
        () so that no multicast membership report ever leaves the machine."""
        self.config = config
        self.multicast_interfaces = multicast_interfaces
        self.store = store or StateStore(config.resolved_state_dir())
        self.devices = build_devices(config, self.store)
        self.settings = Settings(config, self.devices)
        self.history = HistorySampler(self.devices, interval=history_interval)
        self.app = create_app(config, self.devices, self.settings, self.history, discovery=lambda: self.discovery)
        self.discovery: Any = None
        self._http: Any = None
        self._http_thread: threading.Thread | None = None
        self._stopped = False

    @property
    def port(self) -> int:
        """The HTTP port actually bound (config port 0 picks a free one, for tests)."""
        server = self._http
        if hasattr(server, "effective_port"):
            return int(server.effective_port)
        return int(server.effective_listen[0][1])

    def start(self) -> None:
        s = self.config.server
        self._http = waitress.create_server(self.app, listen=listen_addresses(s.bind, s.port), threads=s.threads,
                                            ident="alpaca-focuser", channel_timeout=120,
                                            clear_untrusted_proxy_headers=True)
        self._http_thread = threading.Thread(target=self._http.run, name="http-server", daemon=True)
        self._http_thread.start()
        self.history.start()
        log.info("Alpaca API listening on %s (%d focuser(s))", listen_addresses(s.bind, self.port),
                 len(self.devices))
        if self.config.discovery.enabled:
            from alpaca_focuser.alpaca.discovery import DiscoveryResponder

            d = self.config.discovery
            self.discovery = DiscoveryResponder(alpaca_port=self.port, port=d.port, bind_address=s.bind,
                                                ipv6=d.ipv6, multicast_interfaces=self.multicast_interfaces)
            try:
                self.discovery.start()
            except OSError as exc:
                # Discovery is a convenience; the focuser must still be usable by address.
                log.error("Alpaca discovery is off: cannot listen on UDP port %d: %s", d.port, exc)
                self.discovery = None

    def healthy(self) -> bool:
        return self._http_thread is not None and self._http_thread.is_alive()

    def stop(self) -> None:
        """Halt moving focusers, save state, close ports, stop HTTP and discovery. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self.discovery is not None:
            self.discovery.stop()
        self.history.stop()
        for device in self.devices.values():
            device.halt_for_shutdown()  # all motors at once, before waiting on any of them
        for device in self.devices.values():
            device.shutdown()
        if self._http is not None:
            self._http.task_dispatcher.shutdown(timeout=2)
            server_map = getattr(self._http, "map", None) or getattr(self._http, "_map", {})
            # Close the sockets on the loop's own thread: closing them from here while the loop sits in
            # select() hands it dead file descriptors (EBADF). The trigger also wakes the loop at once.
            triggers = [d for d in server_map.values() if isinstance(d, trigger.trigger)]
            if triggers and self._http_thread is not None and self._http_thread.is_alive():
                try:
                    triggers[0].pull_trigger(lambda: wasyncore.close_all(server_map))
                except OSError:  # the loop closed its trigger as it ended: nothing left to wake
                    pass
                else:
                    self._http_thread.join(timeout=3)
            wasyncore.close_all(server_map)  # no-op when the loop already did it
            if self._http_thread is not None:
                self._http_thread.join(timeout=3)
        log.info("Server stopped")
