"""Every code the shim and qatlib give, as enums, and every mapping from one
of them to an exception or to the text a user reads.

The numbers are not retyped here: each enum is built from the compiled
module's constants (cffi exposes csrc/shim/qatpy_shim.h's and
csrc/qat_types.h's ``#define``s on ``lib``), so Python and C cannot disagree.
This module is imported with the device path (it loads the compiled module),
never by ``import qatpy``.

The meaning of a CpaStatus depends on the call it came from (a RETRY from a
poll means "nothing yet", from a submit "ring full"); the shim handles those
cases itself, so every status that reaches Python is a real failure of one
operation.
"""

from __future__ import annotations

import enum
from typing import Final

from . import _binding
from ._errors import (
    DeadlineExceededError,
    DeviceBusyError,
    DeviceError,
    DeviceFatalError,
    DeviceInvalidParamError,
    DeviceResourceError,
    DeviceRestartingError,
    DeviceUnsupportedError,
    EngineClosedError,
    QatUnavailableError,
    VerificationError,
)

_lib = _binding.native().lib


class OpenError(enum.IntEnum):
    """qatpy_lib_load / qatpy_device_open results."""

    LIBRARY = _lib.QATPY_ERR_LIBRARY
    NO_DEVICE = _lib.QATPY_ERR_NO_DEVICE
    START = _lib.QATPY_ERR_START
    NO_INSTANCE = _lib.QATPY_ERR_NO_INSTANCE
    CAPABILITY = _lib.QATPY_ERR_CAPABILITY
    INSTANCE = _lib.QATPY_ERR_INSTANCE
    NOMEM = _lib.QATPY_ERR_NOMEM
    CONFIG = _lib.QATPY_ERR_CONFIG
    STATE = _lib.QATPY_ERR_STATE


class PollMode(enum.IntEnum):
    """Poll modes, by the names Engine(poll_mode=...) takes (lower-cased)."""

    TIMER = _lib.QATPY_POLL_TIMER
    BUSY = _lib.QATPY_POLL_BUSY
    EVENT = _lib.QATPY_POLL_EVENT
    MANUAL = _lib.QATPY_POLL_MANUAL


class Status(enum.IntEnum):
    """A completion's status."""

    OK = _lib.QATPY_ST_OK
    DEVICE_FAIL = _lib.QATPY_ST_DEVICE_FAIL
    SUBMIT_FAIL = _lib.QATPY_ST_SUBMIT_FAIL
    CLOSED = _lib.QATPY_ST_CLOSED
    VERIFY_FAIL = _lib.QATPY_ST_VERIFY_FAIL
    TIMEOUT = _lib.QATPY_ST_TIMEOUT
    UNAVAILABLE = _lib.QATPY_ST_UNAVAILABLE


class Submit(enum.IntEnum):
    """What a submit call returns (negative: nothing queued)."""

    OK = _lib.QATPY_SUBMIT_OK
    FULL = _lib.QATPY_SUBMIT_FULL
    CLOSED = _lib.QATPY_SUBMIT_CLOSED
    BADARG = _lib.QATPY_SUBMIT_BADARG
    BADKEY = _lib.QATPY_SUBMIT_BADKEY


class RsaEncoding(enum.IntEnum):
    """What the shim does with an RSA input."""

    RAW = _lib.QATPY_RSA_RAW
    PKCS1 = _lib.QATPY_RSA_PKCS1


class HashId(enum.IntEnum):
    """Hashes the shim's PKCS#1 v1.5 DigestInfo knows."""

    SHA224 = _lib.QATPY_HASH_SHA224
    SHA256 = _lib.QATPY_HASH_SHA256
    SHA384 = _lib.QATPY_HASH_SHA384
    SHA512 = _lib.QATPY_HASH_SHA512


class Curve(enum.IntEnum):
    """Curves the shim signs on."""

    P256 = _lib.QATPY_CURVE_P256
    P384 = _lib.QATPY_CURVE_P384
    P521 = _lib.QATPY_CURVE_P521


class CpaStatus(enum.IntEnum):
    """qatlib's CpaStatus (cpa.h), as declared in csrc/qat_types.h."""

    SUCCESS = _lib.CPA_STATUS_SUCCESS
    FAIL = _lib.CPA_STATUS_FAIL
    RETRY = _lib.CPA_STATUS_RETRY
    RESOURCE = _lib.CPA_STATUS_RESOURCE
    INVALID_PARAM = _lib.CPA_STATUS_INVALID_PARAM
    FATAL = _lib.CPA_STATUS_FATAL
    UNSUPPORTED = _lib.CPA_STATUS_UNSUPPORTED
    RESTARTING = _lib.CPA_STATUS_RESTARTING


#: hashlib name -> the shim's hash id (PKCS#1 DigestInfo).
HASH_IDS: Final[dict[str, int]] = {h.name.lower(): int(h) for h in HashId}
#: cryptography curve name -> the shim's curve id.
CURVE_IDS: Final[dict[str, int]] = {
    "secp256r1": int(Curve.P256),
    "secp384r1": int(Curve.P384),
    "secp521r1": int(Curve.P521),
}
#: Largest result the shim returns, in bytes.
MAX_RESULT: Final[int] = _lib.QATPY_MAX_RESULT

# -- starting the device ------------------------------------------------------

# OpenError -> (cause, hint at the fix).
_OPEN_CAUSES: Final[dict[int, tuple[str, str]]] = {
    OpenError.LIBRARY: (
        "library not found",
        "install qatlib (libqat.so.4 and libusdm.so.0) or set QATPY_LIBQAT / QATPY_LIBUSDM",
    ),
    OpenError.NO_DEVICE: (
        "no QAT device",
        "no QAT virtual function is bound to vfio-pci; run 'python -m qatpy doctor' or see qatlib's INSTALL",
    ),
    OpenError.START: (
        "start failed",
        "check /dev/vfio permissions (the 'qat' group), RLIMIT_MEMLOCK and that qat.service runs",
    ),
    OpenError.NO_INSTANCE: (
        "no asym instance",
        "enable the asym service (ServicesEnabled=asym or sym;asym in /etc/sysconfig/qat)",
    ),
    OpenError.CAPABILITY: ("capability missing", "the instances found do not offer RSA and ECDSA"),
    OpenError.INSTANCE: ("instance start failed", "see the message above; restarting qat.service may help"),
    OpenError.STATE: ("device busy", "another QAT device session is open in this process; close its engines first"),
}


# A second library in one process: qatpy_lib_load's STATE result.
_LOAD_CONFLICT: Final = (
    "one qatlib per process",
    "a process loads qatlib once and never unloads it: use the same backend for every engine in this "
    "process, or run the other backend in another process",
)


def unavailable(rc: int, msg: str, *, loading: bool = False) -> QatUnavailableError:
    """The error for a failed qatpy_lib_load (`loading`) / qatpy_device_open."""
    if loading and rc == OpenError.STATE:
        cause, hint = _LOAD_CONFLICT
    else:
        cause, hint = _OPEN_CAUSES.get(rc, ("unavailable", ""))
    # The shim's own text may already start with the cause ("no QAT device: ...").
    text = msg if msg.lower().startswith(cause.lower()) else (f"{cause}: {msg}" if msg else cause)
    if hint and "hint" not in msg and "install" not in msg:
        text += f" (hint: {hint})"
    return QatUnavailableError(text, cause)


# -- one operation ------------------------------------------------------------

_CPA_ERRORS: Final[dict[int, tuple[type[DeviceError], str]]] = {
    CpaStatus.FAIL: (DeviceError, "device reported failure (CPA_STATUS_FAIL)"),
    CpaStatus.RETRY: (DeviceBusyError, "device ring full (CPA_STATUS_RETRY)"),
    CpaStatus.RESOURCE: (DeviceResourceError, "device out of resources (CPA_STATUS_RESOURCE)"),
    CpaStatus.INVALID_PARAM: (DeviceInvalidParamError, "device rejected a parameter (CPA_STATUS_INVALID_PARAM)"),
    CpaStatus.FATAL: (DeviceFatalError, "device fatal error (CPA_STATUS_FATAL)"),
    CpaStatus.UNSUPPORTED: (
        DeviceUnsupportedError,
        "operation unsupported by this device (CPA_STATUS_UNSUPPORTED)",
    ),
    CpaStatus.RESTARTING: (DeviceRestartingError, "device is restarting (CPA_STATUS_RESTARTING)"),
}


def cpa_error(status: int, context: str = "") -> DeviceError:
    """The exception for a failed CpaStatus."""
    cls, text = _CPA_ERRORS.get(status, (DeviceError, f"device status {status}"))
    return cls(f"{context}: {text}" if context else text, status)


#: Completion statuses an engine may re-run in software (fallback="on_error"),
#: with the reason they are counted under in stats()["fallbacks"].
FALLBACK_REASONS: Final[dict[int, str]] = {
    Status.DEVICE_FAIL: "device_error",
    Status.SUBMIT_FAIL: "submit_error",
    Status.VERIFY_FAIL: "verify_failed",
    Status.TIMEOUT: "deadline",
    Status.UNAVAILABLE: "device_unavailable",
}


def completion_error(status: int, cpa_status: int) -> BaseException:
    """The exception a failed completion delivers (when it is not re-run)."""
    if status == Status.CLOSED:
        return EngineClosedError("engine closed before the device answered")
    if status == Status.VERIFY_FAIL:
        return VerificationError("the device returned a signature that does not verify", cpa_status)
    if status == Status.TIMEOUT:
        return DeadlineExceededError("the device did not answer before the deadline", cpa_status)
    if status == Status.UNAVAILABLE:
        return cpa_error(cpa_status, "no usable device instance (restarting, or all slots held by unanswered requests)")
    return cpa_error(cpa_status, "submit" if status == Status.SUBMIT_FAIL else "device")


def submit_error(rc: int) -> BaseException:
    """The exception for operations a submit call refused (rc < 0, not FULL)."""
    if rc == Submit.CLOSED:
        return EngineClosedError("engine is closed")
    if rc == Submit.BADARG:
        return ValueError("input rejected by the shim (encoded message not below the modulus)")
    return ValueError("the device key is not usable")
