"""The Alpaca management API: API versions, server description and the configured devices."""

from __future__ import annotations

import logging
from typing import Any, Callable

import falcon

from alpaca_focuser import __version__
from alpaca_focuser.alpaca.params import BadRequest, Params
from alpaca_focuser.alpaca.responses import TransactionCounter, envelope, send_json, send_text
from alpaca_focuser.focuser.device import FocuserDevice

log = logging.getLogger(__name__)

SERVER_NAME = "alpaca-focuser"
MANUFACTURER = "alpaca-focuser project"


class ManagementResource:
    """A GET-only management endpoint whose Value comes from ``produce()``, with the usual ID rules."""

    def __init__(self, counter: TransactionCounter, produce: Callable[[], Any]) -> None:
        self.counter = counter
        self.produce = produce

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            _, client_transaction_id = Params.from_request(req).client_ids()
        except BadRequest as exc:
            send_text(resp, falcon.HTTP_400, str(exc))
            return
        body = envelope(client_transaction_id, self.counter.next(), value=self.produce(), has_value=True)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("GET %s -> %s", req.relative_uri, body)
        send_json(resp, body)


def add_management_routes(app: falcon.App, devices: dict[int, FocuserDevice], counter: TransactionCounter,
                          location: str) -> None:
    description = {
        "ServerName": SERVER_NAME,
        "Manufacturer": MANUFACTURER,
        "ManufacturerVersion": __version__,
        "Location": location,
    }
    def configured() -> list[dict[str, Any]]:
        # Built per request: a focuser renamed on the settings page shows its new name at once. The numbers are
        # the devices' own, with a gap where a table is disabled, exactly as the device API answers them.
        return [{"DeviceName": d.name(), "DeviceType": "Focuser", "DeviceNumber": n, "UniqueID": d.unique_id}
                for n, d in sorted(devices.items())]

    app.add_route("/management/apiversions", ManagementResource(counter, lambda: [1]))
    app.add_route("/management/v1/description", ManagementResource(counter, lambda: description))
    app.add_route("/management/v1/configureddevices", ManagementResource(counter, configured))
