"""RSA signing: PKCS#1 v1.5 byte-equal to cryptography, PSS verified, every size and hash."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, utils

HASHES = [hashes.SHA224(), hashes.SHA256(), hashes.SHA384(), hashes.SHA512()]
MSG = b"the quick brown fox signs over the lazy device"


@pytest.mark.parametrize("bits", [2048, 3072, 4096])
@pytest.mark.parametrize("h", HASHES, ids=lambda h: h.name)
def test_pkcs1v15_equals_cryptography(engine, rsa_keys, bits, h):
    """PKCS#1 v1.5 signatures are byte-for-byte those of cryptography."""
    key = engine.wrap_key(rsa_keys[bits])
    sig = key.sign(MSG, padding.PKCS1v15(), h)
    assert sig == rsa_keys[bits].sign(MSG, padding.PKCS1v15(), h)


@pytest.mark.parametrize("bits", [1024, 8192])
def test_pkcs1v15_other_sizes(engine, rsa_keys, bits):
    """1024- and 8192-bit keys sign correctly (on the device or via its software path)."""
    key = engine.wrap_key(rsa_keys[bits])
    sig = key.sign(MSG, padding.PKCS1v15(), hashes.SHA256())
    assert sig == rsa_keys[bits].sign(MSG, padding.PKCS1v15(), hashes.SHA256())


@pytest.mark.parametrize("h", HASHES, ids=lambda h: h.name)
def test_pkcs1v15_prehashed(engine, rsa_keys, h):
    """Prehashed digests give the same signature as hashing inside sign()."""
    key = engine.wrap_key(rsa_keys[2048])
    digest = hashlib.new(h.name, MSG).digest()
    sig = key.sign(digest, padding.PKCS1v15(), utils.Prehashed(h))
    assert sig == rsa_keys[2048].sign(MSG, padding.PKCS1v15(), h)


@pytest.mark.parametrize(
    "salt",
    [padding.PSS.MAX_LENGTH, padding.PSS.DIGEST_LENGTH, 0, 20],
    ids=["max", "digest", "zero", "twenty"],
)
@pytest.mark.parametrize("h", HASHES, ids=lambda h: h.name)
def test_pss_verifies(engine, rsa_keys, h, salt):
    """PSS signatures verify with cryptography for each salt length rule."""
    key = engine.wrap_key(rsa_keys[2048])
    pad = padding.PSS(mgf=padding.MGF1(h), salt_length=salt)
    sig = key.sign(MSG, pad, h)
    rsa_keys[2048].public_key().verify(sig, MSG, pad, h)


@pytest.mark.parametrize("bits", [3072, 4096])
def test_pss_sizes_and_mgf_hash(engine, rsa_keys, bits):
    """PSS works at larger sizes and with an MGF1 hash unlike the message hash."""
    key = engine.wrap_key(rsa_keys[bits])
    pad = padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=32)
    sig = key.sign(MSG, pad, hashes.SHA256())
    rsa_keys[bits].public_key().verify(sig, MSG, pad, hashes.SHA256())


def test_pss_is_randomised(engine, rsa_keys):
    """Two PSS signatures of one message differ (fresh salt) and both verify."""
    key = engine.wrap_key(rsa_keys[2048])
    pad = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    a, b = key.sign(MSG, pad, hashes.SHA256()), key.sign(MSG, pad, hashes.SHA256())
    assert a != b
    for s in (a, b):
        rsa_keys[2048].public_key().verify(s, MSG, pad, hashes.SHA256())


def test_key_surface(engine, rsa_keys):
    """key_size, public_key, private_numbers and decrypt behave like cryptography's key."""
    raw = rsa_keys[2048]
    key = engine.wrap_key(raw)
    assert key.key_size == 2048
    assert key.public_key().public_numbers() == raw.public_key().public_numbers()
    assert key.private_numbers() == raw.private_numbers()
    ct = raw.public_key().encrypt(b"secret", padding.PKCS1v15())
    assert key.decrypt(ct, padding.PKCS1v15()) == b"secret"
    import copy

    assert copy.copy(key) is key and copy.deepcopy(key) is key
    assert "2048" in repr(key) and str(raw.private_numbers().d) not in repr(key)
