"""ASCOM exceptions carrying their error numbers.

Every layer raises these; only the HTTP layer turns them into Alpaca replies (HTTP 200 with ErrorNumber and
ErrorMessage). Numbers are the ASCOM standard ones (ASCOM.ErrorCodes), as in the Alpaca API reference.
"""

from __future__ import annotations


class AscomError(Exception):
    """Base of all ASCOM errors. ``number`` goes into the reply's ``ErrorNumber``."""

    number: int = 0x500

    def __init__(self, message: str, number: int | None = None) -> None:
        super().__init__(message)
        if number is not None:
            self.number = number

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class NotImplementedAscomError(AscomError):
    """0x400: the member is not implemented by this device ("Property/Method not implemented")."""

    number = 0x400


class InvalidValueError(AscomError):
    """0x401: a parameter value is out of range or otherwise invalid for the device."""

    number = 0x401


class ValueNotSetError(AscomError):
    """0x402: the value has not been set yet."""

    number = 0x402


class NotConnectedError(AscomError):
    """0x407: the device must be connected for this member."""

    number = 0x407


class InvalidOperationError(AscomError):
    """0x40B: the operation is not valid in the device's present state."""

    number = 0x40B


class ActionNotImplementedError(AscomError):
    """0x40C: ``Action`` was called with a name that is not in ``SupportedActions``."""

    number = 0x40C


class DriverError(AscomError):
    """0x500..0xFFF: a hardware or driver failure. The message must tell a user what to check."""

    number = 0x500


# Driver-specific numbers, within the ASCOM driver range 0x500..0xFFF.
SERIAL_PORT_ERROR = 0x501  # the serial port could not be opened, vanished or failed
DEVICE_NOT_RESPONDING = 0x502  # the port is open but the controller does not answer sensibly
