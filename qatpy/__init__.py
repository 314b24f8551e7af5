"""qatpy: RSA and ECDSA signing offloaded to Intel QuickAssist (qatlib).

Importing qatpy does no work: the native library is loaded and the device
started when the first Engine that needs them is created.

    import qatpy
    with qatpy.Engine() as engine:            # QAT if usable, else software
        key = engine.load_private_key(pem)
        sig = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
"""

from __future__ import annotations

import os
from typing import overload

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ._engine import DEFAULT_POLL_DELAY, Engine, default_engine
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
    EngineForkedError,
    QatpyError,
    QatUnavailableError,
    SslProviderError,
    VerificationError,
)
from ._keys import QatECPrivateKey, QatRSAPrivateKey

__version__ = "0.1.0"

PrivateKey = QatRSAPrivateKey | QatECPrivateKey


def load_pem_private_key(data: bytes, password: bytes | None = None, *, engine: Engine | None = None) -> PrivateKey:
    """Load a PEM private key onto `engine` (default: the shared default engine)."""
    return (engine or default_engine()).load_private_key(data, password)


def load_der_private_key(data: bytes, password: bytes | None = None, *, engine: Engine | None = None) -> PrivateKey:
    """Load a DER private key onto `engine` (default: the shared default engine)."""
    return (engine or default_engine()).load_private_key(data, password)


def load_private_key_file(
    path: str | os.PathLike[str], password: bytes | None = None, *, engine: Engine | None = None
) -> PrivateKey:
    """Load a PEM or DER private key file onto `engine`."""
    return (engine or default_engine()).load_private_key_file(path, password)


@overload
def wrap_key(key: rsa.RSAPrivateKey, *, engine: Engine | None = None) -> QatRSAPrivateKey: ...
@overload
def wrap_key(key: ec.EllipticCurvePrivateKey, *, engine: Engine | None = None) -> QatECPrivateKey: ...
@overload
def wrap_key(key: object, *, engine: Engine | None = None) -> PrivateKey: ...
def wrap_key(key: object, *, engine: Engine | None = None) -> PrivateKey:
    """Wrap an existing cryptography private key so it signs on `engine`
    (default: the shared default engine); see `Engine.wrap_key`."""
    return (engine or default_engine()).wrap_key(key)


__all__ = [
    "DEFAULT_POLL_DELAY",
    "DeadlineExceededError",
    "DeviceBusyError",
    "DeviceError",
    "DeviceFatalError",
    "DeviceInvalidParamError",
    "DeviceResourceError",
    "DeviceRestartingError",
    "DeviceUnsupportedError",
    "Engine",
    "EngineClosedError",
    "EngineForkedError",
    "PrivateKey",
    "QatECPrivateKey",
    "QatRSAPrivateKey",
    "QatUnavailableError",
    "QatpyError",
    "SslProviderError",
    "VerificationError",
    "default_engine",
    "load_der_private_key",
    "load_pem_private_key",
    "load_private_key_file",
    "wrap_key",
    "__version__",
]
