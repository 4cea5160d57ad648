"""alpaca-focuser: an ASCOM Alpaca focuser server (IFocuserV4)."""

__version__ = "0.1.0"
