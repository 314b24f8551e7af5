"""A JWT signing service: PyJWT signs with a qatpy key, unchanged (RS256, PS256, ES256)."""

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import qatpy

with qatpy.Engine() as engine:
    rsa_key = engine.wrap_key(rsa.generate_private_key(65537, 2048))
    ec_key = engine.wrap_key(ec.generate_private_key(ec.SECP256R1()))
    for alg, key in (("RS256", rsa_key), ("PS256", rsa_key), ("ES256", ec_key)):
        token = jwt.encode({"sub": "user-42", "scope": "read"}, key, algorithm=alg)
        claims = jwt.decode(token, key.public_key(), algorithms=[alg])
        assert claims["sub"] == "user-42"
        print(f"{alg} on {engine.backend}: {token[:40]}... verified")
