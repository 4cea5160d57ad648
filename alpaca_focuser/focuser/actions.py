"""The device-specific actions (``Action``/``SupportedActions``): their names, parameters and replies.

* ``SyncPosition`` (every focuser): Parameters is an integer; the current position becomes that number without
  moving (client frame), e.g. after the drawtube was moved by hand. Returns the position.
* ``TempCompLearned`` (every focuser): Parameters ``""`` returns the learned coefficient as JSON
  ``{"coefficient": -11.8, "points": 7, "span_c": 4.2, "r2": 0.93}`` (``coefficient`` and ``r2`` null while
  there are fewer than 3 pairs or they span less than 1.5 deg C); ``"apply"`` makes it the running
  ``temp_comp_coefficient`` (and the config file's, when the server can write it); ``"clear"`` forgets the pairs.
* ``SimulatorSetTemperature`` (simulated focusers only): Parameters is the temperature in deg C.

Action names are case-insensitive, like the rest of ASCOM; a bad parameter is InvalidValueError (0x401).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable

from alpaca_focuser.config_keys import TEMP_COMP_COEFFICIENT_RANGE
from alpaca_focuser.drivers.simulator import SimulatorDriver
from alpaca_focuser.errors import ActionNotImplementedError, InvalidOperationError, InvalidValueError

if TYPE_CHECKING:
    from alpaca_focuser.focuser.device import FocuserDevice

log = logging.getLogger(__name__)

SIMULATED_TEMPERATURE_RANGE = (-60.0, 60.0)  # the same range as the simulator's `temperature` key


def supported(device: FocuserDevice) -> list[str]:
    names = ["SyncPosition", "TempCompLearned"]
    if isinstance(device.driver, SimulatorDriver):
        names.append("SimulatorSetTemperature")
    return names


def run(device: FocuserDevice, name: str, parameters: str) -> str:
    handlers: dict[str, Callable[[FocuserDevice, str], str]] = {
        "syncposition": _sync_position, "tempcomplearned": _temp_comp_learned,
    }
    if isinstance(device.driver, SimulatorDriver):
        handlers["simulatorsettemperature"] = _simulator_set_temperature
    handler = handlers.get(name.lower())
    if handler is None:
        raise ActionNotImplementedError(f"Action {name!r} is not supported; SupportedActions lists "
                                        f"{', '.join(supported(device))}")
    return handler(device, parameters)


def _sync_position(device: FocuserDevice, parameters: str) -> str:
    try:
        position = int(parameters.strip())
    except ValueError:
        raise InvalidValueError(f"SyncPosition needs an integer position in Parameters, got {parameters!r}") \
            from None
    return str(device.sync_position(position))


def _temp_comp_learned(device: FocuserDevice, parameters: str) -> str:
    command = parameters.strip().lower()
    if command == "":
        return json.dumps(device.focusing.learned())
    if command == "clear":
        device.focusing.clear_learned()
        return json.dumps(device.focusing.learned())
    if command == "apply":
        return json.dumps(_apply_learned(device))
    raise InvalidValueError(f'TempCompLearned takes Parameters "" (report), "apply" or "clear", got {parameters!r}')


def _apply_learned(device: FocuserDevice) -> dict[str, Any]:
    report = device.focusing.learned()
    coefficient = report["coefficient"]
    if coefficient is None:
        raise InvalidOperationError(f"No learned coefficient yet: {report['points']} pair(s) spanning "
                                    f"{report['span_c']:g} °C; at least 3 spanning 1.5 °C are needed")
    low, high = TEMP_COMP_COEFFICIENT_RANGE
    if not low <= coefficient <= high:
        raise InvalidOperationError(f"The learned coefficient {coefficient:g} steps/°C is outside "
                                    f"{low:g}..{high:g}; check the learned pairs or clear them")
    device.apply_settings(replace(device.cfg, temp_comp_coefficient=float(coefficient)))
    log.info("Focuser %d: learned coefficient %g steps/°C applied (%d pairs, span %.2f °C, r² %s)",
             device.device_number, coefficient, report["points"], report["span_c"], report["r2"])
    report["applied"] = coefficient
    report["saved"] = False
    writer = device.settings_writer
    if writer is not None:
        try:
            writer(device.device_number, {"temp_comp_coefficient": float(coefficient)})
            report["saved"] = True
        except Exception as exc:  # the running value is applied; say loudly that the file was not written
            log.error("Focuser %d: the learned coefficient is in use but could not be saved to the config file: "
                      "%s", device.device_number, exc)
            report["save_error"] = str(exc)
    return report


def _simulator_set_temperature(device: FocuserDevice, parameters: str) -> str:
    low, high = SIMULATED_TEMPERATURE_RANGE
    try:
        celsius = float(parameters.strip())
    except ValueError:
        celsius = math.nan
    if not math.isfinite(celsius) or not low <= celsius <= high:
        raise InvalidValueError(f"SimulatorSetTemperature needs a temperature in °C between {low:g} and {high:g} "
                                f"in Parameters, got {parameters!r}")
    assert isinstance(device.driver, SimulatorDriver)
    device.driver.set_temperature(celsius)
    log.info("Focuser %d: simulated temperature set to %g °C (drift and noise off from now on)",
             device.device_number, celsius)
    return f"{celsius:g}"
