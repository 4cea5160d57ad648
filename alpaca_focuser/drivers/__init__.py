"""Hardware drivers behind one small interface (see ``base.py``)."""

from __future__ import annotations

from alpaca_focuser.config import FocuserConfig
from alpaca_focuser.config_keys import AUTO
from alpaca_focuser.drivers.base import DriverCapabilities, DriverStatus, FocuserDriver


def create_driver(cfg: FocuserConfig, *, saved_position: int | None = None) -> FocuserDriver:
    """Build the driver a ``[[focuser]]`` table asks for. ``saved_position`` seeds the simulator; real
    hardware reports its own position, which always wins."""
    if cfg.driver == "simulator":
        from alpaca_focuser.drivers.simulator import SIMULATOR_MAX_POSITION, SimulatorDriver

        if cfg.absolute:
            start = min(max(saved_position or 0, 0), cfg.max_step)
        else:
            # A relative focuser's internal counter starts mid-range, so it can move inward as far as outward.
            start = saved_position if saved_position is not None else SIMULATOR_MAX_POSITION // 2
        return SimulatorDriver(speed=float(cfg.speed or 2000), position=start, temperature=cfg.temperature)
    if cfg.driver == AUTO:
        from alpaca_focuser.drivers.auto import AutoDriver

        return AutoDriver(cfg)
    from alpaca_focuser.drivers.registry import SERIAL_DRIVER_CLASSES, serial_driver_class

    if cfg.driver in SERIAL_DRIVER_CLASSES:
        return serial_driver_class(cfg.driver).from_config(cfg)
    raise ValueError(f"unknown driver {cfg.driver!r}")


__all__ = ["DriverCapabilities", "DriverStatus", "FocuserDriver", "create_driver"]
