"""A batch: one call, many signatures, returned in order."""

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

import qatpy

with qatpy.Engine() as engine:
    key = engine.wrap_key(ec.generate_private_key(ec.SECP256R1()))
    messages = [b"token %d" % i for i in range(5000)]
    sigs = key.sign_many(messages, ec.ECDSA(hashes.SHA256()))
    for m, s in zip(messages[:100], sigs[:100]):
        key.public_key().verify(s, m, ec.ECDSA(hashes.SHA256()))
    print(
        f"{len(sigs)} signatures in one batch on {engine.backend}; stats: completed="
        f"{engine.stats().get('completed', engine.stats().get('software', {}).get('completed'))}"
    )
