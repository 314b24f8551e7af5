"""Drop-in keys: PyJWT and cryptography's x509 builders accept qatpy keys unchanged."""

from __future__ import annotations

import datetime

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.x509.oid import NameOID


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256"])
def test_pyjwt(engine, rsa_keys, ec_keys, alg):
    """PyJWT signs with a qatpy key and the token verifies with the real public key."""
    raw = ec_keys["secp256r1"] if alg == "ES256" else rsa_keys[2048]
    key = engine.wrap_key(raw)
    token = jwt.encode({"sub": "qatpy", "n": 1}, key, algorithm=alg)
    assert jwt.decode(token, raw.public_key(), algorithms=[alg]) == {"sub": "qatpy", "n": 1}


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@pytest.mark.parametrize("kind", ["rsa", "rsa-pss", "ec"])
def test_certificate_builder(engine, rsa_keys, ec_keys, kind):
    """CertificateBuilder.sign accepts a qatpy key; the self-signed certificate verifies."""
    raw = ec_keys["secp384r1"] if kind == "ec" else rsa_keys[2048]
    key = engine.wrap_key(raw)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name("qatpy test"))
        .issuer_name(_name("qatpy test"))
        .public_key(raw.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    kwargs = {}
    if kind == "rsa-pss":
        kwargs["rsa_padding"] = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
    cert = builder.sign(key, hashes.SHA256(), **kwargs)
    cert.verify_directly_issued_by(cert)
    if kind == "rsa":
        # Deterministic: identical to signing with cryptography's own key.
        assert cert.signature == raw.sign(cert.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA256())


def test_csr_builder(engine, ec_keys):
    """CertificateSigningRequestBuilder.sign accepts a qatpy key; the CSR's signature is valid."""
    key = engine.wrap_key(ec_keys["secp256r1"])
    csr = x509.CertificateSigningRequestBuilder().subject_name(_name("csr")).sign(key, hashes.SHA256())
    assert csr.is_signature_valid
