"""Validation and normalisation of sign() arguments, and EMSA-PSS encoding.

Everything a caller can get wrong is checked here, before any work is
queued: wrong types raise TypeError, unsupported algorithms raise
cryptography's UnsupportedAlgorithm, bad values raise ValueError.  The
result is a small immutable spec that the backends share.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import UnsupportedAlgorithm, _Reasons
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding

# The hashes qatpy signs with: hashlib name -> digest size in bytes.
DIGEST_SIZES: Final[dict[str, int]] = {"sha224": 28, "sha256": 32, "sha384": 48, "sha512": 64}

# hashlib constructors by name: hashlib.sha256(x) is cheaper than hashlib.new("sha256", x).
HASHLIB: Final = {
    "sha224": hashlib.sha224,
    "sha256": hashlib.sha256,
    "sha384": hashlib.sha384,
    "sha512": hashlib.sha512,
}

HASH_TYPES: Final = (hashes.SHA224, hashes.SHA256, hashes.SHA384, hashes.SHA512)


# cryptography reads a message through the buffer protocol, by a rule that
# depends on the interpreter: from Python 3.11 (its stable-ABI buffer path)
# only buffers of unsigned bytes ('B' or 'c' items) are taken and a
# non-contiguous one is a BufferError; on 3.10 any C-contiguous buffer is
# taken as its raw bytes and a non-contiguous one is a TypeError.  qatpy
# takes exactly what cryptography takes on the same interpreter
# (tests/test_parity.py runs every case through both).
_BYTE_ITEMS_ONLY = sys.version_info >= (3, 11)


def data_bytes(data: object, what: str = "data") -> bytes:
    """`data` as bytes, accepting what cryptography accepts on this
    interpreter; TypeError (or BufferError) as cryptography raises them."""
    if type(data) is bytes:
        return data
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except (TypeError, ValueError):  # not a buffer; a released memoryview
        hint = " (encode text first, e.g. data.encode())" if isinstance(data, str) else ""
        raise TypeError(f"{what} must be a bytes-like object, not {type(data).__name__}{hint}") from None
    with view:
        if _BYTE_ITEMS_ONLY and view.format not in ("B", "c"):
            raise TypeError(
                f"{what} must be a buffer of bytes (item format 'B'), not {type(data).__name__} "
                f"with item format {view.format!r}"
            )
        if not view.c_contiguous:
            if _BYTE_ITEMS_ONLY:
                raise BufferError(f"{what} is not a C-contiguous buffer")
            raise TypeError(f"{what} must be a C-contiguous buffer, not a strided {type(data).__name__}")
        return view.tobytes()


def _hash_name(algorithm: object, role: str) -> str:
    if isinstance(algorithm, type) and issubclass(algorithm, hashes.HashAlgorithm):
        raise TypeError(f"{role} must be a hash instance such as hashes.SHA256(), not the class")
    if not isinstance(algorithm, hashes.HashAlgorithm):
        raise TypeError(f"{role} must be a cryptography HashAlgorithm instance, not {type(algorithm).__name__}")
    if type(algorithm) not in HASH_TYPES:
        raise UnsupportedAlgorithm(
            f"{role} {algorithm.name} is not supported by qatpy; use SHA-224, SHA-256, SHA-384 or SHA-512",
            _Reasons.UNSUPPORTED_HASH,
        )
    return algorithm.name


def _message_hash(algorithm: object, role: str) -> tuple[str, bool]:
    """(hash name, prehashed) for a HashAlgorithm or Prehashed."""
    if isinstance(algorithm, utils.Prehashed):
        return _hash_name(algorithm._algorithm, role), True
    return _hash_name(algorithm, role), False


@dataclass(frozen=True, slots=True)
class RsaSpec:
    pss: bool
    hash_name: str
    digest_size: int
    prehashed: bool
    mgf_hash: str  # PSS only
    salt_len: int  # PSS only, resolved for this key size
    padding: AsymmetricPadding
    algorithm: hashes.HashAlgorithm | utils.Prehashed
    #: The arguments after the data for cryptography's own RSA sign() (made
    #: once: the software backend reads them for every operation).
    sw_args: tuple[AsymmetricPadding, hashes.HashAlgorithm | utils.Prehashed] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "sw_args", (self.padding, self.algorithm))


@dataclass(frozen=True, slots=True)
class EcSpec:
    hash_name: str
    digest_size: int
    prehashed: bool
    signature_algorithm: ec.ECDSA
    #: The arguments after the data for cryptography's own EC sign() (made once).
    sw_args: tuple[ec.ECDSA] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sw_args", (self.signature_algorithm,))


def rsa_spec(pad: object, algorithm: object, key_size: int) -> RsaSpec:
    """Check (padding, algorithm) for an RSA signature with a key of `key_size` bits."""
    if not isinstance(pad, AsymmetricPadding):
        raise TypeError(f"padding must be padding.PKCS1v15() or padding.PSS(...), not {type(pad).__name__}")
    hash_name, prehashed = _message_hash(algorithm, "algorithm")
    dsize = DIGEST_SIZES[hash_name]
    if isinstance(pad, padding.PKCS1v15):
        return RsaSpec(False, hash_name, dsize, prehashed, "", 0, pad, algorithm)  # type: ignore[arg-type]
    if not isinstance(pad, padding.PSS):
        raise UnsupportedAlgorithm(
            f"padding {pad.name} cannot be used for signing; use PKCS1v15 or PSS",
            _Reasons.UNSUPPORTED_PADDING,
        )
    mgf = pad._mgf
    if not isinstance(mgf, padding.MGF1):
        raise UnsupportedAlgorithm("PSS needs an MGF1 mask generation function", _Reasons.UNSUPPORTED_MGF)
    mgf_hash = _hash_name(mgf._algorithm, "MGF1 hash")
    em_len = (key_size - 1 + 7) // 8
    max_salt = em_len - dsize - 2
    salt = pad._salt_length
    if isinstance(salt, padding._MaxLength):
        salt_len = max_salt
    elif isinstance(salt, padding._DigestLength):
        salt_len = dsize
    elif isinstance(salt, padding._Auto):
        raise ValueError("PSS salt length AUTO is only valid for verification; use MAX_LENGTH or DIGEST_LENGTH")
    elif isinstance(salt, int):
        salt_len = salt
    else:
        raise TypeError("PSS salt_length must be an int, PSS.MAX_LENGTH or PSS.DIGEST_LENGTH")
    if salt_len < 0:
        raise ValueError("PSS salt_length must be >= 0")
    if salt_len > max_salt:
        raise ValueError(
            f"PSS salt length {salt_len} is too long for a {key_size}-bit key with {hash_name} (max {max_salt})"
        )
    return RsaSpec(True, hash_name, dsize, prehashed, mgf_hash, salt_len, pad, algorithm)  # type: ignore[arg-type]


def ec_spec(signature_algorithm: object) -> EcSpec:
    """Check an ECDSA signature_algorithm argument."""
    if not isinstance(signature_algorithm, ec.ECDSA):
        if isinstance(signature_algorithm, ec.EllipticCurveSignatureAlgorithm):
            raise UnsupportedAlgorithm(
                f"EC keys sign only with ec.ECDSA(hash), not {type(signature_algorithm).__name__}",
                _Reasons.UNSUPPORTED_PUBLIC_KEY_ALGORITHM,
            )
        raise TypeError(f"signature_algorithm must be ec.ECDSA(hash), not {type(signature_algorithm).__name__}")
    if getattr(signature_algorithm, "deterministic_signing", False):
        raise UnsupportedAlgorithm(
            "deterministic ECDSA (RFC 6979) is not supported by qatpy; use ec.ECDSA(hash)",
            _Reasons.UNSUPPORTED_PUBLIC_KEY_ALGORITHM,
        )
    hash_name, prehashed = _message_hash(signature_algorithm.algorithm, "ECDSA hash")
    return EcSpec(hash_name, DIGEST_SIZES[hash_name], prehashed, signature_algorithm)


def message_digest(hash_name: str, digest_size: int, prehashed: bool, data: bytes) -> bytes:
    """The message hash: `data` itself when prehashed (length checked)."""
    if prehashed:
        if len(data) != digest_size:
            raise ValueError(f"prehashed data must be {digest_size} bytes for {hash_name}, got {len(data)}")
        return data
    return HASHLIB[hash_name](data).digest()


def _mgf1(seed: bytes, length: int, hash_name: str) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hashlib.new(hash_name, seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return bytes(out[:length])


def emsa_pss_encode(mhash: bytes, key_bits: int, spec: RsaSpec) -> bytes:
    """EMSA-PSS-ENCODE (RFC 8017 §9.1.1), returned left-padded to the modulus length."""
    em_bits = key_bits - 1
    em_len = (em_bits + 7) // 8
    h_len = len(mhash)
    salt = os.urandom(spec.salt_len)
    h = hashlib.new(spec.hash_name, b"\x00" * 8 + mhash + salt).digest()
    db = b"\x00" * (em_len - spec.salt_len - h_len - 2) + b"\x01" + salt
    mask = _mgf1(h, em_len - h_len - 1, spec.mgf_hash)
    masked = bytearray(a ^ b for a, b in zip(db, mask))
    masked[0] &= 0xFF >> (8 * em_len - em_bits)
    em = bytes(masked) + h + b"\xbc"
    mod_len = (key_bits + 7) // 8
    return em.rjust(mod_len, b"\x00")
