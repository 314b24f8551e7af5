"""qatpy's exceptions and the one table that maps a device status to one.

The meaning of a CpaStatus depends on the call it came from (a RETRY from a
poll means "nothing yet", from a submit "ring full"); the shim handles those
cases itself, so every status that reaches Python is a real failure of one
operation and maps through `status_error` below.
"""

from __future__ import annotations

from typing import Final

# CpaStatus values (qatlib's cpa.h).
CPA_STATUS_SUCCESS: Final = 0
CPA_STATUS_FAIL: Final = -1
CPA_STATUS_RETRY: Final = -2
CPA_STATUS_RESOURCE: Final = -3
CPA_STATUS_INVALID_PARAM: Final = -4
CPA_STATUS_FATAL: Final = -5
CPA_STATUS_UNSUPPORTED: Final = -6
CPA_STATUS_RESTARTING: Final = -7


class QatpyError(Exception):
    """Base class of every error qatpy raises on its own account."""


class QatUnavailableError(QatpyError):
    """The QAT backend was required (``backend="qat"``) but is not usable.

    ``reason`` says why, naming the cause (library not found, no device,
    start failed, no asym instance, capability missing) and a hint at the fix.
    """

    def __init__(self, reason: str, cause: str = "unavailable") -> None:
        super().__init__(reason)
        self.reason = reason
        self.cause = cause


class EngineClosedError(QatpyError):
    """The engine was closed before (or while) the operation ran."""


class EngineForkedError(EngineClosedError):
    """The engine was created in a parent process and used after fork()."""


class DeviceError(QatpyError):
    """The device failed one operation.  ``status`` is the CpaStatus."""

    status: int = CPA_STATUS_FAIL

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class DeviceBusyError(DeviceError):
    status = CPA_STATUS_RETRY


class DeviceResourceError(DeviceError):
    status = CPA_STATUS_RESOURCE


class DeviceInvalidParamError(DeviceError):
    status = CPA_STATUS_INVALID_PARAM


class DeviceFatalError(DeviceError):
    status = CPA_STATUS_FATAL


class DeviceUnsupportedError(DeviceError):
    status = CPA_STATUS_UNSUPPORTED


class DeviceRestartingError(DeviceError):
    status = CPA_STATUS_RESTARTING


class VerificationError(DeviceError):
    """The device returned a result that failed qatpy's check (a fault)."""


class DeadlineExceededError(DeviceError):
    """The device did not answer before the operation's deadline."""


_STATUS_TABLE: Final[dict[int, tuple[type[DeviceError], str]]] = {
    CPA_STATUS_FAIL: (DeviceError, "device reported failure (CPA_STATUS_FAIL)"),
    CPA_STATUS_RETRY: (DeviceBusyError, "device ring full (CPA_STATUS_RETRY)"),
    CPA_STATUS_RESOURCE: (DeviceResourceError, "device out of resources (CPA_STATUS_RESOURCE)"),
    CPA_STATUS_INVALID_PARAM: (
        DeviceInvalidParamError,
        "device rejected a parameter (CPA_STATUS_INVALID_PARAM)",
    ),
    CPA_STATUS_FATAL: (DeviceFatalError, "device fatal error (CPA_STATUS_FATAL)"),
    CPA_STATUS_UNSUPPORTED: (
        DeviceUnsupportedError,
        "operation unsupported by this device (CPA_STATUS_UNSUPPORTED)",
    ),
    CPA_STATUS_RESTARTING: (DeviceRestartingError, "device is restarting (CPA_STATUS_RESTARTING)"),
}


def status_error(status: int, context: str = "") -> DeviceError:
    """The exception for a failed CpaStatus (the one place this mapping lives)."""
    cls, text = _STATUS_TABLE.get(status, (DeviceError, f"device status {status}"))
    msg = f"{context}: {text}" if context else text
    return cls(msg, status)


def status_name(status: int) -> str:
    for name, value in globals().items():
        if name.startswith("CPA_STATUS_") and value == status:
            return name
    return str(status)
