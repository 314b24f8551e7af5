"""Key objects: drop-in subclasses of cryptography's private-key ABCs.

A QatRSAPrivateKey / QatECPrivateKey is accepted wherever cryptography's own
key is (x509 builders, PyJWT, aioquic...): ``sign()`` takes the same
arguments and returns the same bytes (DER for ECDSA).  It adds
``sign_future``, ``sign_async`` and the batch ``sign_many``.

Key material: qatpy is an offload library, not an HSM.  The private key is
in this process's memory (it was loaded from PEM/DER or wrapped), so
``private_numbers()`` and ``private_bytes()`` return it exactly as
cryptography would, and ``decrypt()`` / ``exchange()`` run in software.
Only signing is offloaded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import sys
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import _serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding, PKCS1v15

from . import _ops
from ._backend import Operation
from ._completion import BatchResult, DeviceFuture

_PKCS1_SPECS: dict[type, _ops.RsaSpec] = {}
_warned_pyopenssl = False
_ECDSA_SPECS: dict[type, _ops.EcSpec] = {}
# The last cacheable ECDSA argument seen and its spec: callers pass the same
# ec.ECDSA object again and again (it holds no state to change), and this
# skips even the property lookups (a fifth of the submit path for P-256).
_LAST_ECDSA: tuple[object, Any] = (object(), None)

if TYPE_CHECKING:
    from ._engine import Engine


def _running_loop() -> asyncio.AbstractEventLoop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "sign_async/sign_many_async need a running asyncio event loop; use sign() or sign_future() outside one"
        ) from None


def _gather(batch: BatchResult, return_exceptions: bool) -> list[Any]:
    if batch.first_error is not None and not return_exceptions:
        raise batch.first_error
    return batch.results


class _KeyBase:
    """What both key types share: the wrapped cryptography key and the engine.

    A key object holds no backend state: backends keep theirs (device
    copies, per-worker clones) against the key object, which they may
    reference weakly."""

    _engine: Engine
    _key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey  # the wrapped cryptography key

    @property
    def engine(self) -> Engine:
        """The engine this key signs on."""
        return self._engine

    def private_bytes(
        self,
        encoding: _serialization.Encoding,
        format: _serialization.PrivateFormat,
        encryption_algorithm: _serialization.KeySerializationEncryption,
    ) -> bytes:
        """Serialise the key, as cryptography does."""
        global _warned_pyopenssl
        if not _warned_pyopenssl and sys._getframe(1).f_globals.get("__name__", "").startswith("OpenSSL."):
            # pyOpenSSL (and Twisted through it) copies the key into its own,
            # statically linked OpenSSL: qatpy cannot reach it there.
            _warned_pyopenssl = True
            warnings.warn(
                "a qatpy key was handed to pyOpenSSL, which copies it into cryptography's bundled OpenSSL: "
                "its signatures there are made in software, not by qatpy (use Python's ssl with "
                "qatpy.ssl.load_cert_chain to offload TLS)",
                RuntimeWarning,
                stacklevel=3,
            )
        return self._key.private_bytes(encoding, format, encryption_algorithm)

    def _spec(self, *args: Any) -> Any:
        raise NotImplementedError

    def sign_future(self, data: bytes, *args: Any) -> cf.Future[bytes]:
        """Start a signature; a ``concurrent.futures.Future`` resolves to it.

        Argument errors raise here, before anything is queued.  A started
        operation cannot be cancelled (the device owns it until it answers).
        """
        spec = self._spec(*args)
        return self._engine._sign_future(self, spec, _ops.data_bytes(data))

    def sign_async(self, data: bytes, *args: Any) -> asyncio.Future[bytes]:
        """Start a signature from a running event loop; await the result.

        Returns an ``asyncio.Future`` (awaitable, and cheap to ``gather``).
        Argument errors raise at the call, before anything is queued; the
        loop is never blocked.  Cancelling the future drops the result.
        """
        spec = self._spec(*args)
        data = _ops.data_bytes(data)
        loop = asyncio._get_running_loop()
        if loop is None:
            loop = _running_loop()  # raises, naming what to use instead
        fut: asyncio.Future[bytes] = loop.create_future()
        self._engine._submit_async(self, spec, data, fut, loop)
        return fut

    def _submit_many(
        self, data: Iterable[bytes], args: tuple[Any, ...], done: Any, record_times: bool = False
    ) -> BatchResult:
        """Queue a batch whose BatchResult resolves `done` (see sign_many)."""
        return self._start_many(data, args, done, record_times)[0]

    def _start_many(
        self, data: Iterable[bytes], args: tuple[Any, ...], done: Any, record_times: bool = False
    ) -> tuple[BatchResult, Operation | None]:
        spec = self._spec(*args)
        if isinstance(data, (bytes, bytearray, memoryview, str)):
            raise TypeError("sign_many takes an iterable of messages, not a single message")
        items = [_ops.data_bytes(d, "each message") for d in data]
        batch = BatchResult(len(items), done, record_times)
        if not items:
            done.set_result(batch)
            return batch, None
        return batch, self._engine._submit(self, spec, items, batch)

    def _sign_many(self, data: Iterable[bytes], args: tuple[Any, ...], return_exceptions: bool) -> list[Any]:
        done: cf.Future[BatchResult] = cf.Future()
        done.set_running_or_notify_cancel()
        batch, op = self._start_many(data, args, done)
        if op is not None:
            self._engine._wait(op, done)
        return _gather(done.result(), return_exceptions)

    def sign_many_future(
        self, data: Iterable[bytes], *args: Any, return_exceptions: bool = False
    ) -> cf.Future[list[Any]]:
        """Sign a batch; the future resolves to the list of signatures, in order."""
        # Running futures whose callbacks a caller's drain defers (see deliver()).
        outer: cf.Future[list[Any]] = DeviceFuture()
        inner: cf.Future[BatchResult] = DeviceFuture()

        def _done(f: cf.Future[BatchResult]) -> None:
            try:
                outer.set_result(_gather(f.result(), return_exceptions))
            except BaseException as exc:
                outer.set_exception(exc)

        inner.add_done_callback(_done)
        self._submit_many(data, args, inner)
        return outer

    async def sign_many_async(self, data: Iterable[bytes], *args: Any, return_exceptions: bool = False) -> list[Any]:
        """Sign a batch without blocking the event loop."""
        fut: asyncio.Future[BatchResult] = _running_loop().create_future()
        self._submit_many(data, args, fut)
        return _gather(await fut, return_exceptions)


class QatRSAPrivateKey(_KeyBase, rsa.RSAPrivateKey):
    """An RSA private key whose signatures run on a qatpy Engine."""

    _key: rsa.RSAPrivateKey

    def __init__(self, key: rsa.RSAPrivateKey, engine: Engine) -> None:
        if not isinstance(key, rsa.RSAPrivateKey) or isinstance(key, _KeyBase):
            raise TypeError("expected a cryptography RSAPrivateKey")
        self._key = key
        self._engine = engine
        self._key_size = key.key_size

    def _spec(self, pad: Any = None, algorithm: Any = None, *extra: Any) -> _ops.RsaSpec:
        if extra:
            raise TypeError("RSA sign takes (data, padding, algorithm)")
        if type(pad) is PKCS1v15:
            # PKCS#1 v1.5 specs depend only on the hash type: cache them.
            cached = _PKCS1_SPECS.get(type(algorithm))
            if cached is not None:
                return cached
            spec = _ops.rsa_spec(pad, algorithm, self._key_size)
            if type(algorithm) in _ops.HASH_TYPES:
                _PKCS1_SPECS[type(algorithm)] = spec
            return spec
        return _ops.rsa_spec(pad, algorithm, self._key_size)

    @property
    def key_size(self) -> int:
        return self._key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self._key.public_key()

    def sign(self, data: bytes, padding: AsymmetricPadding, algorithm: Any) -> bytes:
        """Sign like cryptography's RSAPrivateKey.sign, on the engine."""
        spec = self._spec(padding, algorithm)
        return self._engine._sign_sync(self, spec, _ops.data_bytes(data))

    def sign_many(
        self, data: Iterable[bytes], padding: AsymmetricPadding, algorithm: Any, *, return_exceptions: bool = False
    ) -> list[Any]:
        """Sign every message in `data`; returns the signatures in order.

        With ``return_exceptions=True`` a failed operation leaves its
        exception in place of a signature instead of raising the first one.
        """
        return self._sign_many(data, (padding, algorithm), return_exceptions)

    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        """RSA decryption, in software (qatpy offloads signing only)."""
        return self._key.decrypt(ciphertext, padding)

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        """The key's numbers, as cryptography gives them (the key is in memory)."""
        return self._key.private_numbers()

    def __copy__(self) -> QatRSAPrivateKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> QatRSAPrivateKey:
        return self

    def __repr__(self) -> str:
        return f"<QatRSAPrivateKey {self._key_size}-bit on {self._engine.backend}>"


class QatECPrivateKey(_KeyBase, ec.EllipticCurvePrivateKey):
    """An ECDSA private key (P-256, P-384 or P-521) whose signatures run on a qatpy Engine."""

    SUPPORTED_CURVES = ("secp256r1", "secp384r1", "secp521r1")

    _key: ec.EllipticCurvePrivateKey

    def __init__(self, key: ec.EllipticCurvePrivateKey, engine: Engine) -> None:
        if not isinstance(key, ec.EllipticCurvePrivateKey) or isinstance(key, _KeyBase):
            raise TypeError("expected a cryptography EllipticCurvePrivateKey")
        if key.curve.name not in self.SUPPORTED_CURVES:
            from cryptography.exceptions import UnsupportedAlgorithm, _Reasons

            raise UnsupportedAlgorithm(
                f"curve {key.curve.name} is not supported by qatpy; use P-256, P-384 or P-521",
                _Reasons.UNSUPPORTED_ELLIPTIC_CURVE,
            )
        self._key = key
        self._engine = engine

    def _spec(self, signature_algorithm: Any = None, *extra: Any) -> _ops.EcSpec:
        global _LAST_ECDSA
        last = _LAST_ECDSA
        if last[0] is signature_algorithm and not extra:
            spec: _ops.EcSpec = last[1]
            return spec
        if extra:
            raise TypeError("EC sign takes (data, signature_algorithm)")
        if type(signature_algorithm) is ec.ECDSA and not signature_algorithm.deterministic_signing:
            # Specs for ECDSA(<SHA-2 instance>) depend only on the hash type: cache them.
            ht = type(signature_algorithm.algorithm)
            cached = _ECDSA_SPECS.get(ht)
            if cached is None:
                cached = _ops.ec_spec(signature_algorithm)
                if ht not in _ops.HASH_TYPES:
                    return cached
                _ECDSA_SPECS[ht] = cached
            _LAST_ECDSA = (signature_algorithm, cached)
            return cached
        return _ops.ec_spec(signature_algorithm)

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._key.curve

    @property
    def key_size(self) -> int:
        return self._key.curve.key_size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    def sign(self, data: bytes, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:  # type: ignore[override]
        """Sign like cryptography's EllipticCurvePrivateKey.sign (DER result), on the engine."""
        spec = self._spec(signature_algorithm)
        return self._engine._sign_sync(self, spec, _ops.data_bytes(data))

    def sign_many(
        self,
        data: Iterable[bytes],
        signature_algorithm: ec.EllipticCurveSignatureAlgorithm,
        *,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Sign every message in `data`; returns DER signatures in order."""
        return self._sign_many(data, (signature_algorithm,), return_exceptions)

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        """ECDH, in software (qatpy offloads signing only)."""
        return self._key.exchange(algorithm, peer_public_key)

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        """The key's numbers, as cryptography gives them (the key is in memory)."""
        return self._key.private_numbers()

    def __copy__(self) -> QatECPrivateKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> QatECPrivateKey:
        return self

    def __repr__(self) -> str:
        return f"<QatECPrivateKey {self._key.curve.name} on {self._engine.backend}>"
