"""Offload the signatures of Python's ``ssl`` module (uvicorn, gunicorn, aiohttp,
asyncio, http.server) to qatpy, through an OpenSSL 3 provider built into qatpy.

Two ways in:

- **Key reference** (explicit): ``qatpy.ssl.load_cert_chain(context, certfile,
  keyfile)`` loads the certificate as usual and the private key as a reference
  to a key held by qatpy's provider; every handshake signature of that context
  is then made by qatpy in C (no Python per handshake; ``_ssl`` releases the
  GIL around the handshake).
- **Transparent**: ``qatpy.ssl.install()`` replaces
  ``ssl.SSLContext.load_cert_chain`` so every context the process loads a key
  into gets a key reference; ``python -m qatpy run -- <command>`` does this in
  a server and in the workers it starts.

Only the private-key signature is offloaded (TLS 1.3 CertificateVerify, TLS
1.2 ServerKeyExchange, a client certificate's CertificateVerify); key
exchange, record encryption and certificate verification stay in OpenSSL.
pyOpenSSL and Twisted use cryptography's own statically linked OpenSSL, which
no provider in the system libcrypto can reach.
"""

from __future__ import annotations

import _ssl
import atexit
import logging
import os
import ssl as _stdlib_ssl
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from . import _sslprov
from ._engine import FALLBACK_POLICIES, Engine
from ._errors import SslProviderError

__all__ = [
    "KeyReference",
    "SslProviderError",
    "available",
    "check",
    "install",
    "installed",
    "key_reference",
    "load_cert_chain",
    "stats",
    "uninstall",
]

log = logging.getLogger("qatpy.ssl")

# The stdlib's own method, defined in C on _ssl._SSLContext: what install()
# shadows on ssl.SSLContext and what every path here finally calls.
_ORIGINAL: Callable[..., None] = _ssl._SSLContext.load_cert_chain

_lock = threading.RLock()
_cache = _sslprov.KeyCache()


class _State:
    """What install() set up; replaced wholesale in a forked child."""

    def __init__(self) -> None:
        self.installed = False
        self.engine: Engine | None = None  # given to install(), else made lazily
        self.own_engine: Engine | None = None  # made here (closed at exit)


_state = _State()


def check() -> None:
    """Raise SslProviderError (with ``.cause``) unless this interpreter's ``ssl``
    module can take qatpy's provider; loads the provider when it can."""
    _sslprov.ensure_provider()


def available() -> bool:
    """True when Python's ``ssl`` module can take qatpy's provider (see check() for why not)."""
    try:
        check()
    except SslProviderError as exc:
        log.debug("qatpy.ssl: provider unavailable: %s", exc)
        return False
    return True


def _default_engine() -> Engine:
    """The engine install() uses without an explicit one: made on first use, in
    this process, from QATPY_BACKEND and QATPY_SSL_FALLBACK, polling in event
    mode."""
    with _lock:
        eng = _state.engine
        if eng is not None and not eng.closed and not eng._forked:
            return eng
        eng = _state.own_engine
        if eng is None or eng.closed or eng._forked:
            fallback = os.environ.get("QATPY_SSL_FALLBACK", "").strip() or "on_error"
            if fallback not in FALLBACK_POLICIES:
                raise ValueError(f"QATPY_SSL_FALLBACK={fallback!r}: choose one of {', '.join(FALLBACK_POLICIES)}")
            # Event polling: a handshake thread blocks for one answer at a time,
            # and in timer mode a poll thread would spend CPU polling until a
            # slow answer (RSA-4096) is due (2.7 ms against 0.6 ms of server CPU
            # per handshake, measured on the simulator).  Where the library
            # has no event fds the engine polls on a timer anyway.
            eng = Engine(fallback=fallback, poll_mode="event")
            _state.own_engine = eng
            atexit.register(eng.close)
            log.info("qatpy.ssl: signing on a %s engine (pid %d)", eng.backend, os.getpid())
        return eng


def load_cert_chain(
    context: _stdlib_ssl.SSLContext,
    certfile: str | bytes | os.PathLike[str] | os.PathLike[bytes],
    keyfile: str | bytes | os.PathLike[str] | os.PathLike[bytes] | None = None,
    password: Any = None,
    *,
    engine: Engine | None = None,
) -> None:
    """``context.load_cert_chain(certfile, keyfile, password)`` with the private
    key held by qatpy's provider on `engine` (default: the engine install()
    uses), so the context's handshake signatures are made by qatpy.

    Errors are the stdlib's for the same inputs (FileNotFoundError,
    ssl.SSLError for a wrong password, a file with no key or a key that does
    not match the certificate); a key qatpy cannot sign with (Ed25519, a curve
    other than P-256/384/521) raises cryptography's UnsupportedAlgorithm;
    SslProviderError when the provider cannot be used in this interpreter."""
    if not isinstance(context, _stdlib_ssl.SSLContext):
        raise TypeError(f"context must be an ssl.SSLContext, not {type(context).__name__}")
    check()
    eng = engine if engine is not None else _default_engine()
    try:
        _sslprov.load_with_reference(_ORIGINAL, context, certfile, keyfile, password, eng, _cache, strict=True)
    except _sslprov.Unsupported as exc:
        from cryptography.exceptions import UnsupportedAlgorithm, _Reasons

        raise UnsupportedAlgorithm(f"qatpy cannot sign with {exc}", _Reasons.UNSUPPORTED_PUBLIC_KEY_ALGORITHM) from None


class KeyReference:
    """A key held by qatpy's provider, reachable by path while open: hand
    ``path`` to code that calls ``load_cert_chain(certfile, keyfile=path)``
    itself (e.g. ``uvicorn.Config(ssl_keyfile=ref.path)``) in this process.

    The path is a memfd of this process: it means nothing to another process
    (spawned workers load the key themselves; use ``python -m qatpy run``)."""

    def __init__(self, pkey: Any, owner: bool) -> None:
        self._pkey = pkey
        self._owner = owner
        cm = _sslprov.registered(pkey)
        try:
            self.path: str = cm.__enter__()
        except BaseException:
            if owner:
                pkey.release()
            raise
        self._cm: Any = cm

    def close(self) -> None:
        """Unregister the reference (contexts that loaded it keep the key)."""
        cm, self._cm = self._cm, None
        if cm is not None:
            cm.__exit__(None, None, None)
            if self._owner:
                self._pkey.release()

    def __enter__(self) -> KeyReference:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def key_reference(
    keyfile: str | bytes | os.PathLike[str] | os.PathLike[bytes],
    password: Any = None,
    *,
    engine: Engine | None = None,
) -> KeyReference:
    """Load the private key in `keyfile` into qatpy's provider and return a
    KeyReference whose ``path`` any ``load_cert_chain`` in this process can
    read as the key file.  Raises the errors of open() and cryptography's
    loader for unreadable or wrong input, UnsupportedAlgorithm for a key qatpy
    cannot sign with."""
    check()
    eng = engine if engine is not None else _default_engine()
    with open(keyfile, "rb") as f:
        data = f.read()
    key = _sslprov.parse_private_key(data, _sslprov.resolve_password(password))
    try:
        pkey = _sslprov.make_pkey(eng, key)
    except _sslprov.Unsupported as exc:
        from cryptography.exceptions import UnsupportedAlgorithm, _Reasons

        raise UnsupportedAlgorithm(f"qatpy cannot sign with {exc}", _Reasons.UNSUPPORTED_PUBLIC_KEY_ALGORITHM) from None
    return KeyReference(pkey, owner=True)


def _intercepted_load_cert_chain(
    self: _stdlib_ssl.SSLContext, certfile: Any, keyfile: Any = None, password: Any = None
) -> None:
    """ssl.SSLContext.load_cert_chain, with the private key held by qatpy (installed by qatpy.ssl.install)."""
    try:
        eng = _default_engine()
    except Exception as exc:
        log.warning("qatpy.ssl: no engine (%s); OpenSSL loads the key itself", exc)
        _ORIGINAL(self, certfile, keyfile, password)
        return
    _sslprov.load_with_reference(_ORIGINAL, self, certfile, keyfile, password, eng, _cache, strict=False)
    return None


_intercepted_load_cert_chain.__qatpy_original__ = _ORIGINAL  # type: ignore[attr-defined]


def install(*, engine: Engine | None = None, transparent: bool = True) -> None:
    """Load qatpy's provider and, with `transparent` (the default), make every
    ``ssl.SSLContext.load_cert_chain`` in this process hold its private key in
    qatpy's provider, signing on `engine` (default: an engine made on first
    use from QATPY_BACKEND / QATPY_SSL_FALLBACK, one per process).

    Keys qatpy cannot sign with (Ed25519, other curves) and inputs it cannot
    read are left to the stdlib, with the reason logged on the ``qatpy.ssl``
    logger.  Idempotent and thread-safe; a later call may change the engine.
    Raises SslProviderError when this interpreter's ssl cannot take the provider."""
    if engine is not None and not isinstance(engine, Engine):
        raise TypeError(f"engine must be a qatpy.Engine, not {type(engine).__name__}")
    check()
    with _lock:
        if engine is not None:
            _state.engine = engine
        if transparent and not _state.installed:
            _stdlib_ssl.SSLContext.load_cert_chain = _intercepted_load_cert_chain  # type: ignore[method-assign,assignment]
            _state.installed = True
            log.info("qatpy.ssl: installed: ssl.SSLContext.load_cert_chain keeps private keys in qatpy's provider")


def uninstall() -> None:
    """Undo install()'s interception (contexts already loaded keep their keys)."""
    with _lock:
        if _state.installed:
            del _stdlib_ssl.SSLContext.load_cert_chain
            _state.installed = False


def installed() -> bool:
    """True while ssl.SSLContext.load_cert_chain is intercepted."""
    return _state.installed


def stats() -> dict[str, Any]:
    """The provider's counters for the engine install() uses in this process
    (the ``"ssl"`` section of its ``stats()``), with ``pid``, ``backend`` and ``installed``."""
    with _lock:
        eng = _state.engine if _state.engine is not None else _state.own_engine
    out: dict[str, Any] = {"pid": os.getpid(), "installed": _state.installed, "backend": None}
    if eng is not None and not eng._forked:
        out["backend"] = eng.backend
        out.update(eng.stats().get("ssl", {}))
    return out


def _after_fork_in_child() -> None:
    # The parent's engines belong to the parent (their C engines count the
    # signatures of contexts loaded before the fork as "forked" and sign in
    # software here); new contexts in this process get a fresh engine.
    # Locks another thread may have held at fork are replaced, not released;
    # the old cache's keys are the parent's and are left alone.
    global _state, _cache, _lock
    _lock = threading.RLock()
    _cache = _sslprov.KeyCache()
    old = _state
    _state = _State()
    _state.installed = old.installed
    if old.own_engine is not None or old.engine is not None:
        log.info(
            "qatpy.ssl: forked (pid %d): contexts loaded before the fork sign in software here "
            "(counted as 'forked'); contexts loaded now use a new engine",
            os.getpid(),
        )


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
