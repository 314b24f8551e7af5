"""ECDSA signing: every curve and hash, Prehashed, DER output verified with cryptography."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

HASHES = [hashes.SHA224(), hashes.SHA256(), hashes.SHA384(), hashes.SHA512()]
CURVES = ["secp256r1", "secp384r1", "secp521r1"]
MSG = b"ecdsa message for qatpy"


@pytest.mark.parametrize("curve", CURVES)
@pytest.mark.parametrize("h", HASHES, ids=lambda h: h.name)
def test_ecdsa_verifies(engine, ec_keys, curve, h):
    """ECDSA signatures verify for every curve and hash (digest truncation included)."""
    key = engine.wrap_key(ec_keys[curve])
    sig = key.sign(MSG, ec.ECDSA(h))
    ec_keys[curve].public_key().verify(sig, MSG, ec.ECDSA(h))
    r, s = utils.decode_dss_signature(sig)  # DER, as cryptography returns
    assert r > 0 and s > 0


@pytest.mark.parametrize("curve", CURVES)
def test_ecdsa_prehashed(engine, ec_keys, curve):
    """Prehashed digests are accepted and verify against the message."""
    key = engine.wrap_key(ec_keys[curve])
    digest = hashlib.sha384(MSG).digest()
    sig = key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA384())))
    ec_keys[curve].public_key().verify(sig, MSG, ec.ECDSA(hashes.SHA384()))


def test_ecdsa_nonces_differ(engine, ec_keys):
    """Repeated signatures of one message use fresh nonces (distinct r) and all verify."""
    key = engine.wrap_key(ec_keys["secp256r1"])
    sigs = key.sign_many([MSG] * 200, ec.ECDSA(hashes.SHA256()))
    rs = {utils.decode_dss_signature(s)[0] for s in sigs}
    assert len(rs) == 200
    for s in sigs[:20]:
        ec_keys["secp256r1"].public_key().verify(s, MSG, ec.ECDSA(hashes.SHA256()))


def test_key_surface(engine, ec_keys):
    """curve, key_size, public_key, private_numbers and exchange behave like cryptography's key."""
    raw = ec_keys["secp384r1"]
    key = engine.wrap_key(raw)
    assert key.curve.name == "secp384r1" and key.key_size == 384
    assert key.public_key().public_numbers() == raw.public_key().public_numbers()
    assert key.private_numbers() == raw.private_numbers()
    peer = ec.generate_private_key(ec.SECP384R1())
    assert key.exchange(ec.ECDH(), peer.public_key()) == peer.exchange(ec.ECDH(), raw.public_key())
