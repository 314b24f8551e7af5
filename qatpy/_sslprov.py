"""The machinery behind qatpy.ssl: the provider, provider keys, key references.

Python loads a private key with `cryptography` and hands its components to
the C provider (csrc/provider) as a provider key bound to an Engine's C
engine object; a registration gives the key an unguessable id, and a PEM
block labelled ``QATPY KEY REFERENCE`` holding that id, written to a memfd,
is what OpenSSL's ``SSL_CTX_use_PrivateKey_file`` reads through our decoder.
Nothing touches disk, and the registration is dropped as soon as the
context has loaded the key (the context keeps its own reference in C).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ._errors import EngineClosedError, SslProviderError

log = logging.getLogger("qatpy.ssl")

LABEL = "QATPY KEY REFERENCE"
_BEGIN = f"-----BEGIN {LABEL}-----".encode()
# The first private key block of a PEM file, as OpenSSL's PEM_read_bio_PrivateKey finds it.
_KEY_BLOCK = re.compile(rb"-----BEGIN ((?:RSA |EC |ENCRYPTED )?PRIVATE KEY)-----\r?\n.*?-----END \1-----", re.DOTALL)
# cryptography's curve name -> OpenSSL's group name (the curves the provider takes)
GROUPS = {"secp256r1": "prime256v1", "secp384r1": "secp384r1", "secp521r1": "secp521r1"}
_CAUSES = {
    "NO_LIBCRYPTO": "no-libcrypto",
    "STATIC": "static",
    "OTHER_LIBCRYPTO": "other-libcrypto",
    "VERSION": "version",
    "TOO_OLD": "too-old",
    "SYMBOL": "symbol",
    "FIPS": "fips",
    "LOAD": "load",
    "EXCLUDED": "excluded",
}

_lock = threading.Lock()
_loaded = False


class Unsupported(Exception):
    """A key the provider cannot hold (type or curve); the message says which."""


def ensure_provider() -> None:
    """Load the provider into the libcrypto of Python's ssl module, once; raise
    SslProviderError naming the cause when this interpreter cannot take it."""
    global _loaded
    if _loaded:
        return
    with _lock:
        if _loaded:
            return
        import ssl

        try:
            import _ssl
        except ImportError as exc:  # pragma: no cover - Python built without ssl
            raise SslProviderError(f"Python has no _ssl module ({exc})", "no-ssl") from None
        from . import _binding

        try:
            rc, msg = _binding.provider_load(getattr(_ssl, "__file__", None), ssl.OPENSSL_VERSION_NUMBER)
            names = _binding.provider_error_names()
        except ImportError as exc:
            raise SslProviderError(str(exc), "extension missing") from None
        if rc != 0:
            raise SslProviderError(msg, _CAUSES.get(names.get(rc, ""), "load"))
        _loaded = True


def _be(value: int, size: int | None = None) -> bytes:
    return value.to_bytes(size or max(1, (value.bit_length() + 7) // 8), "big")


def make_pkey(engine: Any, key: object) -> Any:
    """A provider key for a cryptography private key, bound to `engine`.

    Raises Unsupported for key types or curves the provider does not take,
    EngineClosedError for a closed engine."""
    from . import _binding

    ensure_provider()
    engine._check_open()
    c_engine = engine._c_engine
    if c_engine is None:  # pragma: no cover - only without the extension, which ensure_provider refused
        raise SslProviderError("the engine has no native engine object", "extension missing")
    if isinstance(key, rsa.RSAPrivateKey):
        pn = key.private_numbers()
        pub = pn.public_numbers
        comps = [_be(v) for v in (pub.n, pub.e, pn.d, pn.p, pn.q, pn.dmp1, pn.dmq1, pn.iqmp)]
        pkey, err = _binding.pkey_new_rsa(c_engine, comps)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        group = GROUPS.get(key.curve.name)
        if group is None:
            raise Unsupported(f"EC curve {key.curve.name} (qatpy signs on P-256, P-384 and P-521)")
        d = _be(key.private_numbers().private_value, (key.curve.key_size + 7) // 8)
        point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        pkey, err = _binding.pkey_new_ec(c_engine, group, d, point)
    else:
        raise Unsupported(f"{type(key).__name__} keys (qatpy signs with RSA and ECDSA keys)")
    if pkey is None:
        raise SslProviderError(f"the provider refused the key: {err}", "load")
    device = engine._device_backend()
    if device is not None:
        # Its signatures go to the device: a device copy made for this
        # engine, which the provider key keeps (and releases) itself.
        handle = device.device_key(key)
        if handle is not None:
            try:
                if not pkey.attach_device(handle):  # pragma: no cover - a mismatch is a bug
                    raise SslProviderError("the provider refused the device copy of the key", "load")
            finally:
                handle.release()
    return pkey


def reference_pem(ref_id: str) -> bytes:
    return b"%s\n%s\n-----END %s-----\n" % (_BEGIN, ref_id.encode("ascii"), LABEL.encode())


def is_reference(data: bytes) -> bool:
    return _BEGIN in data


@contextmanager
def registered(pkey: Any) -> Iterator[str]:
    """A memfd path holding a fresh key reference to `pkey`; the reference
    is unregistered and the memfd closed when the block ends."""
    from . import _binding

    ref_id = pkey.register()
    if ref_id is None:
        raise SslProviderError("could not register a key reference (out of memory or no randomness)", "load")
    fd = -1
    try:
        fd = os.memfd_create("qatpy-key-reference", os.MFD_CLOEXEC)
        os.write(fd, reference_pem(ref_id))
        yield f"/proc/self/fd/{fd}"
    finally:
        if fd >= 0:
            os.close(fd)
        _binding.pkey_unregister(ref_id)


def resolve_password(password: Any) -> bytes | None:
    """The password as bytes, calling a callable once (as OpenSSL would at most once)."""
    if callable(password):
        password = password()
    if password is None:
        return None
    if isinstance(password, str):
        return password.encode("utf-8")
    if isinstance(password, (bytes, bytearray)):
        return bytes(password)
    raise TypeError("password should be a string or callable returning one")


def parse_private_key(data: bytes, password: bytes | None) -> object:
    """The first private key PEM block of `data`, with `password` if it is
    encrypted (a password given for an unencrypted key is ignored, as OpenSSL does).
    Raises ValueError/TypeError from cryptography, or ValueError when there is no key block."""
    m = _KEY_BLOCK.search(data)
    if m is None:
        raise ValueError("no PEM private key block")
    block = m.group(0)
    try:
        return serialization.load_pem_private_key(block, password)
    except TypeError:
        if password is None or b"ENCRYPTED" in m.group(1) or b"Proc-Type: 4,ENCRYPTED" in block:
            raise
        return serialization.load_pem_private_key(block, None)


class KeyCache:
    """Provider keys by (engine, key file identity, password digest): a server
    that builds a context per connection (gunicorn's sync workers) parses its
    key once.  Entries of closed engines are dropped on sight."""

    MAX = 32

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[Any, ...], tuple[Any, Any]] = OrderedDict()

    @staticmethod
    def key_for(engine: Any, path: Any, password: bytes | None) -> tuple[Any, ...] | None:
        try:
            st = os.stat(path)
        except (OSError, TypeError, ValueError):
            return None
        pw = hashlib.sha256(password).digest() if password is not None else None
        return (id(engine), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, pw)

    def get(self, k: tuple[Any, ...], engine: Any) -> Any:
        with self._lock:
            hit = self._items.get(k)
            if hit is None:
                return None
            owner, pkey = hit
            if owner is engine and not engine.closed and not engine._forked:
                self._items.move_to_end(k)
                return pkey
            del self._items[k]
        pkey.release()
        return None

    def put(self, k: tuple[Any, ...], engine: Any, pkey: Any) -> None:
        evicted = []
        with self._lock:
            old = self._items.pop(k, None)
            if old is not None:
                evicted.append(old[1])
            self._items[k] = (engine, pkey)
            while len(self._items) > self.MAX:
                evicted.append(self._items.popitem(last=False)[1][1])
        for p in evicted:
            p.release()

    def clear(self) -> None:
        with self._lock:
            items = list(self._items.values())
            self._items.clear()
        for _, p in items:
            p.release()


def load_with_reference(
    original: Callable[..., None],
    context: Any,
    certfile: Any,
    keyfile: Any,
    password: Any,
    engine: Any,
    cache: KeyCache | None,
    strict: bool,
) -> None:
    """Load `certfile` and the private key (from `keyfile`, else `certfile`)
    into `context`, the key as a reference to a provider key on `engine`.

    Inputs qatpy cannot read (missing file, wrong password, no key, ...)
    go to the stdlib's own load_cert_chain unchanged, which raises its usual
    exception.  A key type the provider does not take raises Unsupported when
    `strict`, else goes to the stdlib too; both are logged with the reason."""
    path = keyfile if keyfile is not None else certfile
    try:
        with open(path, "rb") as f:
            data = f.read()
    except (OSError, TypeError, ValueError) as exc:
        log.debug("qatpy.ssl: cannot read %r (%s); OpenSSL loads it", path, exc)
        original(context, certfile, keyfile, password)
        return
    if is_reference(data):
        original(context, certfile, keyfile, password)
        return
    pw = resolve_password(password)
    cache_key = cache.key_for(engine, path, pw) if cache is not None else None
    pkey = cache.get(cache_key, engine) if cache is not None and cache_key is not None else None
    if pkey is None:
        try:
            key = parse_private_key(data, pw)
        except (ValueError, TypeError) as exc:
            log.warning("qatpy.ssl: key in %r not offloaded (%s); OpenSSL loads it itself", path, exc)
            original(context, certfile, keyfile, pw)
            return
        except Exception as exc:  # cryptography's UnsupportedAlgorithm and kin
            if strict:
                raise
            log.warning("qatpy.ssl: key in %r not offloaded (%s); OpenSSL loads it itself", path, exc)
            original(context, certfile, keyfile, pw)
            return
        try:
            pkey = make_pkey(engine, key)
        except (Unsupported, EngineClosedError, SslProviderError) as exc:
            if strict:
                raise
            log.warning("qatpy.ssl: key in %r not offloaded (%s); OpenSSL loads it itself", path, exc)
            original(context, certfile, keyfile, pw)
            return
        if cache is not None and cache_key is not None:
            cache.put(cache_key, engine, pkey)
            owned = None
        else:
            owned = pkey
    else:
        owned = None
    try:
        with registered(pkey) as ref_path:
            original(context, certfile, ref_path, None)
    finally:
        if owned is not None:
            owned.release()  # the context holds its own reference in C
    return None
