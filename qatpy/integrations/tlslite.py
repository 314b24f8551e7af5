"""tlslite-ng adapters: a pure-Python TLS server whose handshake signatures run on qatpy.

tlslite-ng does not take cryptography keys; it calls its own ``RSAKey`` /
``ECDSAKey`` objects.  `QatTlsliteRSAKey` and `QatTlsliteECDSAKey` are such
objects wrapping a qatpy key, so the server's CertificateVerify (TLS 1.3)
and ServerKeyExchange (TLS 1.2) signatures go to the key's engine::

    from qatpy.integrations.tlslite import handshake_args, load_tlslite_key, load_cert_chain
    from tlslite.api import TLSConnection

    key = load_tlslite_key(engine.load_private_key_file("key.pem"))
    chain = load_cert_chain(open("cert.pem").read())
    hs = handshake_args(chain, key)                   # once per server (its settings hold the ticket key)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # each accepted connection
    TLSConnection(sock).handshakeServer(**hs)

How the signature reaches the engine.  tlslite hands ``sign()`` a digest it
has already computed.  When (padding, hash, digest length) is something a
qatpy key expresses (PKCS#1 v1.5 or PSS with MGF1 of the same hash, SHA-224
to SHA-512), the digest goes to ``qatpy_key.sign(digest, padding,
Prehashed(hash))``: qatpy encodes it and the engine does the private-key
operation.  Anything else (TLS 1.0/1.1's MD5+SHA-1 blob, SHA-1) takes
tlslite's own encoding and `QatTlsliteRSAKey._rawPrivateKeyOp`, which runs
in software in this process (qatpy has no public raw RSA operation), and is
counted in ``software_fallbacks``.  `server_settings()` negotiates only
TLS 1.2/1.3 with ECDHE/DHE and SHA-2 signatures, so every full handshake
signs on the engine.  RSA key exchange (``decrypt``) is never offloaded, as with
qatpy keys themselves.

Two tlslite-ng behaviours a server must work around, both handled by
`handshake_args` and `server_settings`:

* ALPN.  tlslite-ng 0.8 fails every TLS 1.3 handshake with a client that
  offers ALPN (curl, browsers) when the server passes ``alpn=None``
  (``TypeError: argument of type 'NoneType' is not iterable``): its TLS 1.3
  path, unlike its TLS 1.2 one, does not check for None.  `handshake_args`
  always passes a protocol list, ``http/1.1`` unless told otherwise.
* Session tickets.  In TLS 1.3 the client speaks last in the handshake (its
  Finished), and its request follows in a second small write.  A client
  that leaves Nagle's algorithm on (Python's ssl, many others) holds that
  write until the Finished is acknowledged, and a server with nothing to say
  acknowledges only when its delayed-ACK timer fires, about 40 ms later:
  every connection stalled that long.  `server_settings` turns session
  tickets on, so the server answers the Finished at once with a
  NewSessionTicket (which also lets clients resume, skipping the signature).
  The server must then set TCP_NODELAY on its sockets: in TLS 1.2 tlslite
  writes the ticket and the server's Finished separately, and Nagle's
  algorithm would hold the Finished for the client's delayed ACK.

ECDSA and TLS 1.2: tlslite truncates the ServerKeyExchange digest to the
curve's byte length before signing (a SHA-512 digest arrives as 32 bytes on
P-256) and still names the hash "sha512".  An ECDSA signature depends only on
the digest bytes, and the truncated bytes are exactly what ECDSA itself would
use, so the adapter signs them as ``Prehashed`` of the SHA-2 hash with that
many bytes; digests of other lengths shorter than the curve order (SHA-1)
are left-padded with zeros, which leaves their integer value, and so the
signature's validity, unchanged.

Cost and gain: tlslite-ng is pure Python (about 10 ms of CPU per handshake,
mostly AES-GCM and X25519), so offloading a 0.25 ms RSA-2048 signature does
not raise handshake throughput much.  This is a functional integration and
correctness path; a fast TLS server with QAT needs the OpenSSL-side provider.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import warnings
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as _padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from .._keys import QatECPrivateKey, QatRSAPrivateKey

try:
    with warnings.catch_warnings():
        # tlslite/__init__ imports its asyncore mix-in, which we do not use.
        warnings.filterwarnings("ignore", message="The asyncore module is deprecated", category=DeprecationWarning)
        from tlslite.handshakesettings import HandshakeSettings
        from tlslite.utils.ecdsakey import ECDSAKey
        from tlslite.utils.rsakey import RSAKey
        from tlslite.x509certchain import X509CertChain
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "qatpy.integrations.tlslite needs tlslite-ng, which is not installed: pip install tlslite-ng"
    ) from exc

__all__ = [
    "DEFAULT_ALPN",
    "QatTlsliteECDSAKey",
    "QatTlsliteRSAKey",
    "TlsliteKey",
    "handshake_args",
    "load_cert_chain",
    "load_cert_chain_file",
    "load_tlslite_key",
    "server_settings",
]

# tlslite hash name -> cryptography hash class.  qatpy signs with SHA-2 only.
_HASHES: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
# Digest length -> the SHA-2 hash with that output size.
_BY_SIZE: Final[dict[int, type[hashes.HashAlgorithm]]] = {
    28: hashes.SHA224,
    32: hashes.SHA256,
    48: hashes.SHA384,
    64: hashes.SHA512,
}
# cryptography curve name -> (python-ecdsa name used by tlslite, order length in bytes).
_CURVES: Final[dict[str, tuple[str, int]]] = {
    "secp256r1": ("NIST256p", 32),
    "secp384r1": ("NIST384p", 48),
    "secp521r1": ("NIST521p", 66),
}


class _Counters:
    """How many signatures went to the engine and how many fell back to software."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.offloaded = 0
        self.software_fallbacks = 0

    def count(self, offloaded: bool) -> None:
        with self._lock:
            if offloaded:
                self.offloaded += 1
            else:
                self.software_fallbacks += 1


class _Counted:
    """What both adapters share: where their signatures ran, and that they
    hold a private key tlslite must not serialise."""

    _counters: _Counters

    @property
    def offloaded(self) -> int:
        """Signatures made by the qatpy key (on its engine)."""
        return self._counters.offloaded

    @property
    def software_fallbacks(self) -> int:
        """Signatures tlslite asked for in a form qatpy cannot express, made in
        software (always 0 for ECDSA: every request there is expressible)."""
        return self._counters.software_fallbacks

    def hasPrivateKey(self) -> bool:
        return True

    def acceptsPassword(self) -> bool:
        return False

    def write(self, password: Any = None) -> str:
        raise NotImplementedError("serialise the qatpy key with its private_bytes(), not through tlslite")


# tlslite's key classes are untyped, hence the ignores on the class lines.
class QatTlsliteRSAKey(_Counted, RSAKey):  # type: ignore[misc]
    """A tlslite-ng ``RSAKey`` whose signatures run on a qatpy engine.

    ``offloaded`` / ``software_fallbacks`` count the signatures made each way.
    """

    def __init__(self, key: QatRSAPrivateKey) -> None:
        # RSAKey.__init__ raises NotImplementedError by design (it is abstract);
        # set the attributes it would set instead of calling it.
        if not isinstance(key, QatRSAPrivateKey):
            raise TypeError(f"expected a qatpy QatRSAPrivateKey, not {type(key).__name__}")
        pub = key.public_key().public_numbers()
        self.n: int = pub.n
        self.e: int = pub.e
        self.key_type = "rsa"
        self._key_hash = None
        self.qatpy_key = key
        self._counters = _Counters()

    @property
    def d(self) -> int:
        """The private exponent; tlslite reads it only for RSA key-exchange decryption."""
        return self.qatpy_key.private_numbers().d

    def __len__(self) -> int:
        return self.qatpy_key.key_size

    def _qatpy_args(
        self, data: bytes, pad: str, hash_alg: str | None, salt_len: int | None
    ) -> tuple[_padding.AsymmetricPadding, Prehashed] | None:
        """(padding, Prehashed) for the qatpy key, or None when qatpy cannot express the request."""
        cls = _HASHES.get(hash_alg.lower()) if hash_alg is not None else None
        if cls is None:
            return None
        h = cls()
        if len(data) != h.digest_size:
            return None
        if pad == "pkcs1":
            return _padding.PKCS1v15(), Prehashed(h)
        if pad == "pss":
            # tlslite's PSS uses MGF1 with the signature hash; its default salt is the digest length.
            salt = h.digest_size if salt_len is None else salt_len
            return _padding.PSS(mgf=_padding.MGF1(h), salt_length=salt), Prehashed(h)
        return None

    def sign(
        self, data: Any, padding: str = "pkcs1", hashAlg: str | None = None, saltLen: int | None = None
    ) -> bytearray:
        """Sign a digest computed by tlslite; see the module docstring for the routing."""
        digest = bytes(data)
        args = self._qatpy_args(digest, str(padding).lower(), hashAlg, saltLen)
        if args is None:
            self._counters.count(offloaded=False)
            return bytearray(super().sign(bytearray(digest), padding, hashAlg, saltLen))
        sig = self.qatpy_key.sign(digest, *args)
        self._counters.count(offloaded=True)
        return bytearray(sig)

    def _rawPrivateKeyOp(self, message: int) -> int:
        """m^d mod n in software, blinded; only for what `sign` cannot offload and for decrypt."""
        pn = self.qatpy_key.private_numbers()
        n, e = self.n, self.e
        while True:
            r = secrets.randbelow(n - 2) + 2
            try:
                r_inv = pow(r, -1, n)
            except ValueError:  # r shares a factor with n: astronomically unlikely
                continue
            break
        blinded = (message * pow(r, e, n)) % n
        m1 = pow(blinded, pn.dmp1, pn.p)
        m2 = pow(blinded, pn.dmq1, pn.q)
        s = m2 + ((pn.iqmp * (m1 - m2)) % pn.p) * pn.q
        return (s * r_inv) % n

    def _rawPublicKeyOp(self, ciphertext: int) -> int:
        return pow(ciphertext, self.e, self.n)

    def __repr__(self) -> str:
        return f"<QatTlsliteRSAKey {self.qatpy_key!r}>"


class QatTlsliteECDSAKey(_Counted, ECDSAKey):  # type: ignore[misc]
    """A tlslite-ng ``ECDSAKey`` (P-256/P-384/P-521) whose signatures run on a qatpy engine."""

    def __init__(self, key: QatECPrivateKey) -> None:
        # ECDSAKey.__init__ raises NotImplementedError by design: not called.
        if not isinstance(key, QatECPrivateKey):
            raise TypeError(f"expected a qatpy QatECPrivateKey, not {type(key).__name__}")
        name, order_len = _CURVES[key.curve.name]  # QatECPrivateKey admits only these curves
        self.key_type = "ecdsa"
        self.curve_name = name
        self.qatpy_key = key
        self._public = key.public_key()
        self._order_bits = key.curve.key_size
        # tlslite's TLS 1.2 ECDSA path reads privateKey.private_key.curve.baselen
        # (python-ecdsa internals) to truncate the digest; give it just that.
        self.private_key = SimpleNamespace(curve=SimpleNamespace(baselen=order_len))
        self._counters = _Counters()

    def __len__(self) -> int:
        return self._order_bits

    def _prehashed(self, digest: bytes) -> tuple[bytes, Prehashed]:
        """The digest as (bytes, Prehashed) qatpy accepts, with the same ECDSA value."""
        h = _BY_SIZE.get(len(digest))
        if h is not None:
            return digest, Prehashed(h())
        # Shorter than the order and not a SHA-2 size (SHA-1): zero-pad on the
        # left to a SHA-2 size that is still no longer than the order, so ECDSA
        # takes the same integer (no truncation on either side).
        for size in sorted(_BY_SIZE):
            if len(digest) < size and 8 * size <= self._order_bits:
                return digest.rjust(size, b"\x00"), Prehashed(_BY_SIZE[size]())
        raise ValueError(
            f"cannot sign a {len(digest)}-byte digest with {self.curve_name}: "
            "expected a SHA-2 digest or one no longer than the curve order"
        )

    def _sign(self, data: Any, hAlg: str | None = None) -> bytearray:
        digest, pre = self._prehashed(bytes(data))
        der = self.qatpy_key.sign(digest, ec.ECDSA(pre))
        self._counters.count(offloaded=True)
        return bytearray(der)

    def _hashAndSign(self, data: Any, hAlg: str) -> bytearray:
        return self._sign(hashlib.new(hAlg.lower(), bytes(data)).digest(), hAlg)

    def _verify(self, signature: Any, hash_bytes: Any) -> bool:
        try:
            digest, pre = self._prehashed(bytes(hash_bytes))
            self._public.verify(bytes(signature), digest, ec.ECDSA(pre))
        except (InvalidSignature, ValueError):
            return False
        return True

    def __repr__(self) -> str:
        return f"<QatTlsliteECDSAKey {self.qatpy_key!r}>"


TlsliteKey = QatTlsliteRSAKey | QatTlsliteECDSAKey


def load_tlslite_key(key: QatRSAPrivateKey | QatECPrivateKey) -> TlsliteKey:
    """The tlslite-ng key object for a qatpy key (RSA or ECDSA P-256/384/521)."""
    if isinstance(key, QatRSAPrivateKey):
        return QatTlsliteRSAKey(key)
    if isinstance(key, QatECPrivateKey):
        return QatTlsliteECDSAKey(key)
    if isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise TypeError("expected a qatpy key; wrap the cryptography key first: engine.wrap_key(key)")
    raise TypeError(f"expected a qatpy QatRSAPrivateKey or QatECPrivateKey, not {type(key).__name__}")


def load_cert_chain(pem: str | bytes) -> X509CertChain:
    """A tlslite ``X509CertChain`` from PEM text: the server certificate first, then its issuers."""
    if isinstance(pem, (bytes, bytearray)):
        pem = bytes(pem).decode("ascii")
    if not isinstance(pem, str):
        raise TypeError(f"PEM must be str or bytes, not {type(pem).__name__}")
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise ValueError("no PEM certificate (-----BEGIN CERTIFICATE-----) found")
    chain = X509CertChain()
    chain.parsePemList(pem)
    return chain


def load_cert_chain_file(path: str | os.PathLike[str]) -> X509CertChain:
    """`load_cert_chain` on the contents of a PEM file."""
    with open(path, "rb") as f:
        return load_cert_chain(f.read())


_ticket_key_lock = threading.Lock()
_ticket_key: bytearray | None = None


def _process_ticket_key() -> bytearray:
    """This process's session-ticket key (AES-256-GCM), made on first use.

    One key for every settings object, so a ticket issued on one connection
    resumes on another; it lives as long as the process, like a server's."""
    global _ticket_key
    with _ticket_key_lock:
        if _ticket_key is None:
            _ticket_key = bytearray(secrets.token_bytes(32))
        return _ticket_key


def server_settings(**overrides: Any) -> HandshakeSettings:
    """``HandshakeSettings`` under which every full handshake signs on the engine.

    TLS 1.2 and 1.3 only, ephemeral key exchange only (no RSA key transport,
    which would decrypt instead of sign; TLS 1.3 resumption keeps an (EC)DHE
    share, psk_dhe_ke), SHA-2 signature hashes only.  Session tickets are on
    (one per connection, under a per-process key): the ticket is what the
    server sends right after the client's TLS 1.3 Finished, without which
    clients that keep Nagle's algorithm on wait ~40 ms per connection (see
    the module docstring).  A client that resumes with a ticket does not make
    the server sign.  Keyword arguments set further attributes, e.g.
    ``rsaSigHashes=["sha256"]``, ``ticketKeys=[key]`` to share or rotate the
    ticket key, or ``ticketKeys=[]`` for no tickets.
    """
    s = HandshakeSettings()
    s.minVersion = (3, 3)
    s.maxVersion = (3, 4)
    s.keyExchangeNames = ["ecdhe_ecdsa", "ecdhe_rsa", "dhe_rsa"]
    s.rsaSigHashes = [h for h in s.rsaSigHashes if h in _HASHES]
    s.ecdsaSigHashes = [h for h in s.ecdsaSigHashes if h in _HASHES]
    s.ticketKeys = [_process_ticket_key()]
    s.ticketCipher = "aes256gcm"
    s.ticket_count = 1  # one is enough to answer the Finished; each costs pure-Python AES-GCM
    s.psk_modes = ["psk_dhe_ke"]
    for name, value in overrides.items():
        if not hasattr(s, name):
            raise AttributeError(f"tlslite HandshakeSettings has no setting {name!r}")
        setattr(s, name, value)
    return s


#: The application protocols `handshake_args` offers unless told otherwise.
DEFAULT_ALPN: Final[tuple[str, ...]] = ("http/1.1",)


def handshake_args(
    cert_chain: X509CertChain,
    private_key: TlsliteKey,
    *,
    settings: HandshakeSettings | None = None,
    alpn: Sequence[str | bytes] = DEFAULT_ALPN,
) -> dict[str, Any]:
    """Keyword arguments for ``TLSConnection.handshakeServer`` and ``handshakeServerAsync``.

    ``settings`` defaults to `server_settings()`; make it once per server and
    pass it to every connection, so tickets resume across connections.
    ``alpn`` names the protocols the server speaks, most preferred first; it
    is never None, because tlslite-ng 0.8 then fails TLS 1.3 clients that
    offer ALPN (see the module docstring).
    """
    if isinstance(alpn, (str, bytes)) or not alpn:
        raise ValueError("alpn must be a non-empty list of protocol names, e.g. ['http/1.1']")
    protocols = []
    for name in alpn:
        raw = name.encode("ascii") if isinstance(name, str) else bytes(name)
        if not 1 <= len(raw) <= 255:
            raise ValueError(f"ALPN protocol names are 1 to 255 bytes, not {len(raw)}: {name!r}")
        protocols.append(bytearray(raw))
    return {
        "certChain": cert_chain,
        "privateKey": private_key,
        "settings": settings if settings is not None else server_settings(),
        "alpn": protocols,
    }
