"""Blocking signatures, exactly like cryptography's sign(), on the best available backend."""

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

import qatpy

with qatpy.Engine() as engine:  # QATPY_BACKEND picks the backend, default auto
    print("backend:", engine.backend, "| fallback:", engine.fallback_reason)
    rsa_key = engine.wrap_key(rsa.generate_private_key(65537, 2048))
    ec_key = engine.wrap_key(ec.generate_private_key(ec.SECP256R1()))

    sig = rsa_key.sign(b"hello", padding.PKCS1v15(), hashes.SHA256())
    rsa_key.public_key().verify(sig, b"hello", padding.PKCS1v15(), hashes.SHA256())
    der = ec_key.sign(b"hello", ec.ECDSA(hashes.SHA256()))
    ec_key.public_key().verify(der, b"hello", ec.ECDSA(hashes.SHA256()))
    print("RSA-2048 and P-256 signatures verified")
