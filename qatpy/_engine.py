"""The Engine: picks a backend, owns it, and runs key operations on it."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import math
import os
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, overload

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from . import _ops
from ._backend import Backend, Operation
from ._errors import EngineClosedError, EngineForkedError, QatUnavailableError
from ._keys import QatECPrivateKey, QatRSAPrivateKey, _KeyBase
from ._software import SoftwareBackend

log = logging.getLogger("qatpy")

BACKENDS = ("auto", "qat", "sim", "software")
FALLBACK_POLICIES = ("never", "on_error", "on_error_or_overflow")
POLL_MODES = ("timer", "busy", "event", "manual")

#: Default sleep of the poll thread after an empty poll, in seconds.
DEFAULT_POLL_DELAY = 20e-6
#: Default per-operation deadline on the device, in seconds: an operation
#: unanswered by then is re-run in software (or failed, with fallback="never")
#: and its instance is routed around until it answers again.
DEFAULT_DEADLINE = 5.0
#: Default of verify_ecdsa: ECDSA results are not checked.  The check is a
#: second device operation per signature (a verify does about twice a sign's
#: point arithmetic), so it halves the device's ECDSA throughput and adds a
#: device round trip to each signature; and unlike a faulty RSA-CRT result,
#: which gives away the key (the RSA check is on), a wrong (r, s) fails at
#: its verifier.  Numbers: README, "Engine options".
DEFAULT_VERIFY_ECDSA = False

#: Default time close() waits for in-flight work before failing it.
DEFAULT_CLOSE_TIMEOUT = 10.0

_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The device, its threads and its DMA memory belong to the parent: the
    # child's engines refuse work, and what they had in flight fails now
    # (EngineForkedError) rather than hang.
    for eng in list(_engines):
        eng._forked = True
        if not eng._closed:
            eng._ops.fail_after_fork()
    session = sys.modules.get(__package__ + "._session")
    if session is not None:  # the device path was used in the parent
        session.forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _seconds(value: object, name: str) -> float:
    if isinstance(value, timedelta):
        secs = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be seconds as a float or a datetime.timedelta, not {type(value).__name__}")
    else:
        secs = float(value)
    if not math.isfinite(secs) or secs < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return secs


def _positive_int(value: object, name: str, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


#: Most software signing threads an engine starts.
MAX_THREADS = 1024


def _shim_limits() -> dict[str, int]:
    """The shim's QATPY_MAX_* limits ({} when the extension is not built)."""
    from . import _binding

    try:
        return _binding.limits()
    except ImportError:
        return {}


def _at_most(name: str, value: float | None, limit: float, unit: str = "") -> None:
    if value is not None and value > limit:
        what = f"{limit:.12g} {unit}".rstrip()
        raise ValueError(f"{name} must be at most {what}, got {value!r}")


class Engine:
    """A signing engine on one backend.

    ``backend``: ``"auto"`` (QAT when usable, else software, with
    `fallback_reason` saying why), ``"qat"`` (raise `QatUnavailableError`
    when unusable), ``"sim"`` (qatpy's simulated QAT device) or
    ``"software"``.  ``None`` reads ``QATPY_BACKEND``, default ``"auto"``.

    Use it as a context manager, or call `close()` (idempotent).
    """

    def __init__(
        self,
        backend: str | None = None,
        *,
        poll_delay: float | timedelta = DEFAULT_POLL_DELAY,
        poll_mode: str = "timer",
        threads: int | None = None,
        instances: int | None = None,
        max_inflight: int | None = None,
        max_requests: int | None = None,
        libqat: str | os.PathLike[str] | None = None,
        libusdm: str | os.PathLike[str] | None = None,
        sim: Mapping[str, int] | None = None,
        fallback: str = "on_error",
        verify: bool = True,
        verify_ecdsa: bool = DEFAULT_VERIFY_ECDSA,
        deadline: float | timedelta | None = DEFAULT_DEADLINE,
    ) -> None:
        if backend is None:
            backend = os.environ.get("QATPY_BACKEND", "").strip().lower() or "auto"
            source = "QATPY_BACKEND" if os.environ.get("QATPY_BACKEND") else "default"
        else:
            source = "argument"
        if not isinstance(backend, str):
            raise TypeError(f"backend must be a str, not {type(backend).__name__}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r} (from {source}); choose one of {', '.join(BACKENDS)}")
        if not isinstance(fallback, str) or fallback not in FALLBACK_POLICIES:
            raise ValueError(f"fallback must be one of {', '.join(FALLBACK_POLICIES)}, got {fallback!r}")
        if not isinstance(poll_mode, str) or poll_mode not in POLL_MODES:
            raise ValueError(f"poll_mode must be one of {', '.join(POLL_MODES)}, got {poll_mode!r}")
        self.poll_delay = _seconds(poll_delay, "poll_delay")
        if not isinstance(verify, bool):
            raise TypeError(f"verify must be True or False, not {type(verify).__name__}")
        if not isinstance(verify_ecdsa, bool):
            raise TypeError(f"verify_ecdsa must be True or False, not {type(verify_ecdsa).__name__}")
        self.deadline = None if deadline is None else _seconds(deadline, "deadline")
        if self.deadline == 0:
            raise ValueError("deadline must be > 0 seconds, or None for no deadline")
        self.poll_mode = poll_mode
        threads = _positive_int(threads, "threads")
        instances = _positive_int(instances, "instances")
        max_inflight = _positive_int(max_inflight, "max_inflight")
        max_requests = _positive_int(max_requests, "max_requests")
        if sim is not None:
            if not isinstance(sim, Mapping) or not all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in sim.items()
            ):
                raise TypeError("sim must be a mapping of knob name (str) to int")
            if backend not in ("sim",):
                raise ValueError("sim knobs are only meaningful with backend='sim'")
        for name, p in (("libqat", libqat), ("libusdm", libusdm)):
            if p is not None and not isinstance(p, (str, os.PathLike)):
                raise TypeError(f"{name} must be a path, not {type(p).__name__}")
        # Every value within what the shim takes, before anything starts (a
        # value the shim refused later would leave a started device behind).
        if threads is not None and threads > MAX_THREADS:
            raise ValueError(f"threads must be <= {MAX_THREADS}, got {threads}")
        limits = _shim_limits()
        if limits:
            _at_most("poll_delay", self.poll_delay, limits["poll_delay_ns"] / 1e9, "seconds")
            if self.deadline is not None:
                _at_most("deadline", self.deadline, limits["deadline_ns"] / 1e9, "seconds (or None for no deadline)")
            _at_most("max_inflight", max_inflight, limits["inflight"])
            _at_most("max_requests", max_requests, limits["requests"])
            _at_most("instances", instances, limits["instances"])

        self.requested_backend = backend
        self.fallback_reason: str | None = None
        self._lock = threading.Lock()
        # Closed until construction succeeds: a failed __init__ owns nothing.
        self._closed = True
        self._forked = False
        self._pid = os.getpid()
        ops: Backend | None = None
        c_engine = None

        if backend in ("qat", "sim", "auto"):
            from ._fallback import FallbackPolicy
            from ._qat import QatBackend

            try:
                qat = QatBackend(
                    sim=(backend == "sim"),
                    libqat=os.fspath(libqat) if libqat is not None else None,
                    libusdm=os.fspath(libusdm) if libusdm is not None else None,
                    poll_mode=poll_mode,
                    poll_delay=self.poll_delay,
                    instances=instances,
                    max_inflight=max_inflight,
                    max_requests=max_requests,
                    sim_knobs=dict(sim or {}),
                    fallback=fallback,
                    verify=verify,
                    verify_ecdsa=verify_ecdsa,
                    deadline=self.deadline,
                )
            except QatUnavailableError as exc:
                if backend != "auto":
                    raise
                self.fallback_reason = exc.reason
                log.info("qatpy: QAT unavailable, using software: %s", exc.reason)
            else:
                ops = FallbackPolicy(qat, fallback, threads)
                c_engine = qat.c_engine
        #: The backend this engine's operations go to (see qatpy._backend).
        self._ops: Backend = ops if ops is not None else SoftwareBackend(threads)
        self.backend: str = self._ops.name
        # The C engine object that qatpy.ssl's provider keys report to (it
        # outlives this Engine while OpenSSL holds such keys).
        self._c_engine = (
            c_engine if c_engine is not None else _software_c_engine(fallback, verify, verify_ecdsa, self.deadline)
        )
        if self._c_engine is not None:
            weakref.finalize(self, self._c_engine.release)
        self._closed = False
        _engines.add(self)
        log.debug("qatpy: engine on %s backend", self.backend)

    # -- lifecycle -------------------------------------------------------
    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        # _forked is set in the child by the os.register_at_fork hook; no
        # getpid() on this hot path.
        if self._forked:
            raise EngineForkedError(
                "this engine was created in another process (before fork()); create a new Engine in this process"
            )
        if self._closed:
            raise EngineClosedError("engine is closed")

    def close(self, timeout: float | timedelta | None = None) -> None:
        """Refuse new work, let in-flight work finish for up to `timeout`
        seconds (default 10), then fail what is left with EngineClosedError,
        stop the backend and free its memory.  Idempotent."""
        t = DEFAULT_CLOSE_TIMEOUT if timeout is None else _seconds(timeout, "timeout")
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._c_engine is not None:
            self._c_engine.close()  # provider keys on it now fall back or fail, per policy
        if self._forked or os.getpid() != self._pid:
            return  # the parent's device is not ours to touch
        self._ops.close(time.monotonic() + t)

    def __del__(self) -> None:
        # Finalizers only warn (they may run at interpreter exit, on any thread).
        if not getattr(self, "_closed", True) and not getattr(self, "_forked", False):
            try:
                warnings.warn(f"unclosed {self!r}; use 'with Engine()' or call close()", ResourceWarning, stacklevel=2)
            except Exception:
                pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<qatpy.Engine backend={self.backend} {state}>"

    # -- keys --------------------------------------------------------------
    @overload
    def wrap_key(self, key: rsa.RSAPrivateKey) -> QatRSAPrivateKey: ...
    @overload
    def wrap_key(self, key: ec.EllipticCurvePrivateKey) -> QatECPrivateKey: ...
    @overload
    def wrap_key(self, key: object) -> QatRSAPrivateKey | QatECPrivateKey: ...
    def wrap_key(self, key: object) -> QatRSAPrivateKey | QatECPrivateKey:
        """Wrap a cryptography RSA or EC private key so it signs on this engine.

        An RSA key comes back as a `QatRSAPrivateKey` and an EC key as a
        `QatECPrivateKey` (typed so).  Raises `UnsupportedAlgorithm` for other
        private keys (Ed25519, DSA...), `UnsupportedAlgorithm` for curves other
        than P-256/384/521, `TypeError` for anything that is not a key, and
        `EngineClosedError` once the engine is closed."""
        self._check_open()
        if isinstance(key, _KeyBase):
            key = key._key
        if isinstance(key, rsa.RSAPrivateKey):
            return QatRSAPrivateKey(key, self)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return QatECPrivateKey(key, self)
        from cryptography.exceptions import UnsupportedAlgorithm, _Reasons

        if hasattr(key, "private_bytes"):
            raise UnsupportedAlgorithm(
                f"qatpy signs with RSA and ECDSA keys only, not {type(key).__name__}",
                _Reasons.UNSUPPORTED_PUBLIC_KEY_ALGORITHM,
            )
        raise TypeError(f"expected a cryptography private key, not {type(key).__name__}")

    def load_private_key(self, data: bytes, password: bytes | None = None) -> QatRSAPrivateKey | QatECPrivateKey:
        """Load a PEM or DER private key (optionally encrypted with `password`).

        Takes what cryptography's loaders take: any bytes-like `data` and
        `password`, PEM with text before the ``-----BEGIN`` line (as ``openssl
        pkcs12 -nodes`` writes).  Raises what they raise: ValueError for data
        that is not a key or a wrong password, TypeError for a missing or
        unexpected password; then as `wrap_key` for the key's type."""
        self._check_open()
        raw = _ops.data_bytes(data, "key data")
        secret = None if password is None else _ops.data_bytes(password, "password")
        if b"-----BEGIN" in raw:
            key = serialization.load_pem_private_key(raw, secret)
        else:
            key = serialization.load_der_private_key(raw, secret)
        return self.wrap_key(key)

    def load_private_key_file(
        self, path: str | os.PathLike[str], password: bytes | None = None
    ) -> QatRSAPrivateKey | QatECPrivateKey:
        """Load a PEM or DER private key from a file."""
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
        with open(path, "rb") as f:
            return self.load_private_key(f.read(), password)

    def _device_backend(self) -> Any:
        """The QAT backend behind this engine's fallback policy, or None (software)."""
        return getattr(self._ops, "primary", None)

    # -- operations (called by the key objects) ----------------------------
    @staticmethod
    def _check_prehashed(spec: Any, datas: list[bytes]) -> None:
        if spec.prehashed:
            for d in datas:
                if len(d) != spec.digest_size:
                    raise ValueError(
                        f"prehashed data must be {spec.digest_size} bytes for {spec.hash_name}, got {len(d)}"
                    )

    # The per-operation entries test the two flags before calling
    # _check_open (a call costs more than the test on this path).
    def _sign_sync(self, key: _KeyBase, spec: Any, data: bytes) -> bytes:
        if self._closed or self._forked:
            self._check_open()
        if spec.prehashed:
            self._check_prehashed(spec, [data])
        return self._ops.sign(Operation(key._key, spec, [data], key))

    def _sign_future(self, key: _KeyBase, spec: Any, data: bytes) -> cf.Future[bytes]:
        if self._closed or self._forked:
            self._check_open()
        if spec.prehashed:
            self._check_prehashed(spec, [data])
        return self._ops.sign_future(Operation(key._key, spec, [data], key))

    def _submit(self, key: _KeyBase, spec: Any, datas: list[bytes], target: Any) -> Operation:
        """Queue the operations; result i goes to (target, i)."""
        self._check_open()
        self._check_prehashed(spec, datas)
        op = Operation(key._key, spec, datas, key)
        self._ops.submit(op, target)
        return op

    def _submit_async(self, key: _KeyBase, spec: Any, data: bytes, fut: Any, loop: Any) -> None:
        """Queue one operation whose result resolves an asyncio future."""
        if self._closed or self._forked:
            self._check_open()
        if spec.prehashed:
            self._check_prehashed(spec, [data])
        self._ops.submit(Operation(key._key, spec, [data], key), fut, loop)

    def _wait(self, op: Operation, fut: cf.Future[Any]) -> Any:
        self._ops.wait(op, fut)
        return fut.result()

    def poll(self) -> int:
        """Poll the device once (``poll_mode="manual"``); returns completions delivered."""
        self._check_open()
        return self._ops.poll()

    def stats(self) -> dict[str, Any]:
        """Counters as a plain dict (see README, "stats() fields")."""
        d: dict[str, Any] = {
            "backend": self.backend,
            "requested_backend": self.requested_backend,
            "fallback_reason": self.fallback_reason,
            "closed": self._closed,
        }
        if isinstance(self._ops, SoftwareBackend):
            d["software"] = self._ops.stats()
        else:
            d.update(self._ops.stats())
        if self._c_engine is not None:
            d["ssl"] = ssl = _ssl_stats(self._c_engine.stats())
            if "fallbacks" in d:
                for reason, n in ssl["fallbacks"].items():
                    if n:
                        d["fallbacks"][reason] = d["fallbacks"].get(reason, 0) + n
        return d


def _software_c_engine(fallback: str, verify: bool, verify_ecdsa: bool, deadline: float | None) -> Any:
    """The shim's engine object for a software Engine (None if the extension is not built)."""
    from . import _binding

    try:
        return _binding.CEngine.new(
            None,
            _binding.fallback_code(fallback),
            verify,
            verify_ecdsa,
            0 if deadline is None else max(1, int(deadline * 1e9)),
        )
    except ImportError:
        return None


def _ssl_stats(raw: dict[str, int]) -> dict[str, Any]:
    """The "ssl" section of stats(): signatures made by qatpy's OpenSSL provider."""
    pre = "fallback_"
    out: dict[str, Any] = {k: v for k, v in raw.items() if not k.startswith(pre) and k not in ("refs", "has_device")}
    out["closed"] = bool(raw.get("closed"))
    out["fallbacks"] = {k[len(pre) :]: v for k, v in raw.items() if k.startswith(pre)}
    return out


_default_lock = threading.Lock()
_default: Engine | None = None


def default_engine() -> Engine:
    """The process's shared engine (``Engine()``, created on first use, closed at exit)."""
    global _default
    with _default_lock:
        if _default is None or _default.closed or _default._forked:
            _default = Engine()
            import atexit

            atexit.register(_default.close)
        return _default
