"""Many signatures in flight with concurrent.futures."""

import concurrent.futures as cf

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

import qatpy

with qatpy.Engine() as engine:
    key = engine.wrap_key(ec.generate_private_key(ec.SECP384R1()))
    messages = [b"order %d" % i for i in range(1000)]
    futures = {key.sign_future(m, ec.ECDSA(hashes.SHA384())): m for m in messages}
    for fut in cf.as_completed(futures):
        key.public_key().verify(fut.result(), futures[fut], ec.ECDSA(hashes.SHA384()))
    print(f"{len(futures)} P-384 signatures verified on {engine.backend}")
