"""qatpy's exception classes.

Which status becomes which exception, and with what text, is decided in one
place only: `qatpy._status` (loaded with the device path).
"""

from __future__ import annotations


class QatpyError(Exception):
    """Base class of every error qatpy raises on its own account."""


class QatUnavailableError(QatpyError):
    """The QAT backend was required (``backend="qat"`` or ``"sim"``) but is not usable.

    ``reason`` says why, naming the cause (library not found, no device,
    start failed, no asym instance, capability missing) and a hint at the fix;
    ``cause`` is the short cause alone.
    """

    def __init__(self, reason: str, cause: str = "unavailable") -> None:
        super().__init__(reason)
        self.reason = reason
        self.cause = cause


class SslProviderError(QatpyError):
    """Python's ``ssl`` module cannot take qatpy's OpenSSL provider in this process.

    ``cause`` names why (``static``: _ssl's OpenSSL is linked statically;
    ``other-libcrypto``: _ssl uses another libcrypto; ``version``,
    ``too-old``, ``symbol``, ``no-libcrypto``, ``fips``, ``excluded``,
    ``load``, ``extension missing``); the message says it in words.
    """

    def __init__(self, reason: str, cause: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cause = cause


class EngineClosedError(QatpyError):
    """The engine was closed before (or while) the operation ran."""


class EngineForkedError(EngineClosedError):
    """The engine was created in a parent process and used after fork()."""


class DeviceError(QatpyError):
    """The device failed one operation.  ``status`` is the CpaStatus it reported
    (qatlib's ``CPA_STATUS_*``, a negative int), or None when no device status
    applies (a deadline, a failed check)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DeviceBusyError(DeviceError):
    """The device's request ring stayed full (CPA_STATUS_RETRY)."""


class DeviceResourceError(DeviceError):
    """The device ran out of resources (CPA_STATUS_RESOURCE)."""


class DeviceInvalidParamError(DeviceError):
    """The device rejected a parameter (CPA_STATUS_INVALID_PARAM)."""


class DeviceFatalError(DeviceError):
    """The device reported a fatal error (CPA_STATUS_FATAL)."""


class DeviceUnsupportedError(DeviceError):
    """The device does not support the operation (CPA_STATUS_UNSUPPORTED)."""


class DeviceRestartingError(DeviceError):
    """The device is restarting (CPA_STATUS_RESTARTING)."""


class VerificationError(DeviceError):
    """The device returned a result that failed qatpy's check (a fault)."""


class DeadlineExceededError(DeviceError):
    """The device did not answer before the operation's deadline."""
