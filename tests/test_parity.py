"""Drop-in parity: qatpy accepts the inputs cryptography accepts and raises the same exception types for the rest."""

from __future__ import annotations

import array

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

import qatpy

ECDSA = ec.ECDSA(hashes.SHA256())
PKCS = (padding.PKCS1v15(), hashes.SHA256())


def _released() -> memoryview:
    m = memoryview(b"abc")
    m.release()
    return m


DATA_CASES = {
    "bytes": lambda: b"abc",
    "empty": lambda: b"",
    "bytearray": lambda: bytearray(b"abc"),
    "memoryview": lambda: memoryview(b"abc"),
    "memoryview 2-D": lambda: memoryview(bytearray(b"abcdef")).cast("B", (2, 3)),
    "memoryview cast c": lambda: memoryview(b"abc").cast("c"),
    "numpy uint8": lambda: np.frombuffer(b"abcd", dtype=np.uint8),
    "numpy uint8 2-D": lambda: np.arange(6, dtype=np.uint8).reshape(2, 3),
    "array B": lambda: array.array("B", b"abc"),
    "numpy int32": lambda: np.arange(3, dtype=np.int32),
    "array i": lambda: array.array("i", [1, 2, 3]),
    "array b": lambda: array.array("b", b"abc"),
    "numpy uint16 strided": lambda: np.zeros(4, np.uint16)[::2],
    "memoryview strided": lambda: memoryview(b"abcdef")[::2],
    "numpy strided": lambda: np.arange(10, dtype=np.uint8)[::2],
    "numpy fortran": lambda: np.asfortranarray(np.zeros((2, 3), np.uint8)),
    "released memoryview": _released,
    "str": lambda: "abc",
    "int": lambda: 3,
    "None": lambda: None,
    "list": lambda: [1, 2],
}


def _outcome(fn, *args):
    try:
        return fn(*args)
    except Exception as exc:  # the type is what is compared
        return type(exc)


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_sign_data_parity(engine, ec_keys, rsa_keys, case):
    """Each kind of message either signs on qatpy and on cryptography (verified), or raises the same exception type on both."""
    for raw, args, key_args in (
        (ec_keys["secp256r1"], (ECDSA,), (ECDSA,)),
        (rsa_keys[2048], PKCS, PKCS),
    ):
        want = _outcome(raw.sign, DATA_CASES[case](), *args)
        key = engine.wrap_key(raw)
        for call in (key.sign, lambda d, *a, key=key: key.sign_future(d, *a).result(timeout=30)):
            got = _outcome(call, DATA_CASES[case](), *key_args)
            if isinstance(want, type):
                assert got is want, (case, got, want)
            else:
                assert isinstance(got, bytes), (case, got)
                raw.public_key().verify(got, bytes(memoryview(DATA_CASES[case]()).cast("B")), *args)


def _pem(key, password: bytes | None) -> bytes:
    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


LOAD_CASES = {
    "pem": lambda k: (_pem(k, None), None),
    "pkcs12 -nodes output (text before BEGIN)": lambda k: (
        b"Bag Attributes\n    localKeyID: 01 02\nKey Attributes: <No Attributes>\n" + _pem(k, None),
        None,
    ),
    "encrypted, password bytes": lambda k: (_pem(k, b"pw"), b"pw"),
    "encrypted, password memoryview": lambda k: (_pem(k, b"pw"), memoryview(b"pw")),
    "encrypted, password bytearray": lambda k: (_pem(k, b"pw"), bytearray(b"pw")),
    "encrypted, password str": lambda k: (_pem(k, b"pw"), "pw"),
    "encrypted, wrong password": lambda k: (_pem(k, b"pw"), b"nope"),
    "encrypted, no password": lambda k: (_pem(k, b"pw"), None),
    "plain, password given": lambda k: (_pem(k, None), b"pw"),
    "pem as memoryview": lambda k: (memoryview(_pem(k, None)), None),
    "pem as numpy": lambda k: (np.frombuffer(_pem(k, None), dtype=np.uint8), None),
    "pem as str": lambda k: (_pem(k, None).decode(), None),
    "garbage": lambda k: (b"hello", None),
}


@pytest.mark.parametrize("case", list(LOAD_CASES))
def test_load_parity(engine, ec_keys, case):
    """Each kind of key file and password loads on qatpy as on cryptography, or raises the same exception type."""
    raw = ec_keys["secp384r1"]
    data, password = LOAD_CASES[case](raw)
    want = _outcome(serialization.load_pem_private_key, data, password)
    got = _outcome(engine.load_private_key, data, password)
    if isinstance(want, type):
        assert got is want, (case, got, want)
    else:
        assert isinstance(got, qatpy.QatECPrivateKey), (case, got)
        raw.public_key().verify(got.sign(b"m", ECDSA), b"m", ECDSA)
