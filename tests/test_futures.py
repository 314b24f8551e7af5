"""Futures, asyncio awaitables and batches: results arrive, in order, verified."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

PKCS = (padding.PKCS1v15(), hashes.SHA256())
ECDSA = ec.ECDSA(hashes.SHA256())


def test_sign_future(engine, rsa_keys):
    """sign_future returns a concurrent Future whose result equals cryptography's signature."""
    key = engine.wrap_key(rsa_keys[2048])
    futs = [key.sign_future(b"m%d" % i, *PKCS) for i in range(20)]
    assert all(isinstance(f, cf.Future) for f in futs)
    for i, f in enumerate(futs):
        assert f.result(timeout=30) == rsa_keys[2048].sign(b"m%d" % i, *PKCS)


def test_future_not_cancellable_once_submitted(engine, ec_keys):
    """A submitted operation cannot be cancelled; its future still resolves."""
    key = engine.wrap_key(ec_keys["secp256r1"])
    f = key.sign_future(b"x", ECDSA)
    assert f.cancel() is False
    ec_keys["secp256r1"].public_key().verify(f.result(timeout=30), b"x", ECDSA)


def test_sign_many_in_order(engine, ec_keys, rsa_keys):
    """sign_many returns one signature per message, in the order given."""
    ek = engine.wrap_key(ec_keys["secp256r1"])
    msgs = [b"msg-%d" % i for i in range(300)]
    for m, s in zip(msgs, ek.sign_many(msgs, ECDSA)):
        ec_keys["secp256r1"].public_key().verify(s, m, ECDSA)
    rk = engine.wrap_key(rsa_keys[2048])
    rmsgs = msgs[:40]
    assert rk.sign_many(rmsgs, *PKCS) == [rsa_keys[2048].sign(m, *PKCS) for m in rmsgs]
    assert rk.sign_many([], *PKCS) == []


def test_sign_many_future(engine, ec_keys):
    """sign_many_future resolves to the list of signatures."""
    ek = engine.wrap_key(ec_keys["secp384r1"])
    msgs = [bytes([i]) * 10 for i in range(50)]
    sigs = ek.sign_many_future(msgs, ec.ECDSA(hashes.SHA384())).result(timeout=30)
    for m, s in zip(msgs, sigs):
        ec_keys["secp384r1"].public_key().verify(s, m, ec.ECDSA(hashes.SHA384()))


@pytest.mark.asyncio
@pytest.mark.parametrize("backend", ["software", "sim"])
async def test_sign_async(backend, ec_keys, rsa_keys):
    """Awaiting sign_async from many tasks gives verified signatures without blocking the loop."""
    import qatpy

    with qatpy.Engine(backend) as eng:
        ek = eng.wrap_key(ec_keys["secp256r1"])
        rk = eng.wrap_key(rsa_keys[2048])
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        sigs = await asyncio.gather(*(ek.sign_async(b"a%d" % i, ECDSA) for i in range(100)))
        rsig = await asyncio.gather(*(rk.sign_async(b"r%d" % i, *PKCS) for i in range(30)))
        t.cancel()
        for i, s in enumerate(sigs):
            ec_keys["secp256r1"].public_key().verify(s, b"a%d" % i, ECDSA)
        assert rsig == [rsa_keys[2048].sign(b"r%d" % i, *PKCS) for i in range(30)]
        assert ticks > 10


@pytest.mark.asyncio
@pytest.mark.parametrize("backend", ["software", "sim"])
async def test_sign_many_async(backend, ec_keys):
    """sign_many_async resolves to verified signatures in order."""
    import qatpy

    with qatpy.Engine(backend) as eng:
        ek = eng.wrap_key(ec_keys["secp521r1"])
        msgs = [b"b%d" % i for i in range(64)]
        sigs = await ek.sign_many_async(msgs, ec.ECDSA(hashes.SHA512()))
        for m, s in zip(msgs, sigs):
            ec_keys["secp521r1"].public_key().verify(s, m, ec.ECDSA(hashes.SHA512()))


@pytest.mark.asyncio
@pytest.mark.parametrize("backend", ["software", "sim"])
async def test_cancelled_await_does_not_break_engine(backend, ec_keys):
    """Cancelling an awaiting task drops its result; later operations still work."""
    import qatpy

    with qatpy.Engine(backend) as eng:
        ek = eng.wrap_key(ec_keys["secp256r1"])
        task = asyncio.ensure_future(ek.sign_many_async([b"c"] * 200, ECDSA))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        sig = await ek.sign_async(b"after", ECDSA)
        ec_keys["secp256r1"].public_key().verify(sig, b"after", ECDSA)


def test_threads_share_an_engine(engine, rsa_keys, ec_keys):
    """Many threads calling blocking sign() at once all get correct signatures."""
    rk = engine.wrap_key(rsa_keys[2048])
    ek = engine.wrap_key(ec_keys["secp256r1"])

    def work(i: int) -> None:
        assert rk.sign(b"t%d" % i, *PKCS) == rsa_keys[2048].sign(b"t%d" % i, *PKCS)
        ec_keys["secp256r1"].public_key().verify(ek.sign(b"t%d" % i, ECDSA), b"t%d" % i, ECDSA)

    with cf.ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(64)))
