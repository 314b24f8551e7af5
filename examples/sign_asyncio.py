"""Signing from asyncio: the event loop never blocks on the device."""

import asyncio

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

import qatpy


async def main() -> None:
    with qatpy.Engine() as engine:
        key = engine.wrap_key(rsa.generate_private_key(65537, 2048))
        pss = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
        sigs = await asyncio.gather(*(key.sign_async(b"req %d" % i, pss, hashes.SHA256()) for i in range(200)))
        for i, s in enumerate(sigs):
            key.public_key().verify(s, b"req %d" % i, pss, hashes.SHA256())
        print(f"{len(sigs)} RSA-PSS signatures verified on {engine.backend}")


asyncio.run(main())
