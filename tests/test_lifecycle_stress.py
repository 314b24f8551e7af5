"""close() under heavy load and fork(): bounded, nothing lost, clear errors."""

from __future__ import annotations

import concurrent.futures as cf
import os
import time
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

import qatpy

ECDSA = ec.ECDSA(hashes.SHA256())


@pytest.mark.parametrize("backend", ["software", "sim"])
def test_close_with_10000_in_flight(backend, rsa_keys):
    """close(timeout=0.5) with 10,000 operations in flight returns in time and resolves every future."""
    raw = rsa_keys[2048]
    args = (padding.PKCS1v15(), hashes.SHA256())
    if backend == "sim":
        # Each operation takes 20 ms on one of 8 engines: 10,000 would need 25 s.
        eng = qatpy.Engine(backend, max_requests=12_000, sim={"latency_ns": 20_000_000, "engines": 8})
    else:
        eng = qatpy.Engine(backend, threads=1)  # ~4,000 RSA-2048 signs/s: 10,000 need ~2.5 s
    key = eng.wrap_key(raw)
    futs = [key.sign_future(b"c%d" % i, *args) for i in range(5000)]
    batch = key.sign_many_future([b"b%d" % i for i in range(5000)], *args, return_exceptions=True)
    t0 = time.monotonic()
    eng.close(timeout=0.5)
    took = time.monotonic() - t0
    assert took < 0.5 + 1.0, took
    done, not_done = cf.wait(futs + [batch], timeout=10)
    assert not not_done
    ok = closed = 0
    for i, f in enumerate(futs):
        exc = f.exception()
        if exc is None:
            raw.public_key().verify(f.result(), b"c%d" % i, *args)
            ok += 1
        else:
            assert isinstance(exc, qatpy.EngineClosedError)
            closed += 1
    for i, r in enumerate(batch.result()):
        if isinstance(r, BaseException):
            assert isinstance(r, qatpy.EngineClosedError)
            closed += 1
        else:
            raw.public_key().verify(r, b"b%d" % i, *args)
            ok += 1
    assert ok + closed == 10_000 and closed > 0 and ok > 0


def in_forked_child(body: Callable[[], bytes]) -> tuple[int, bytes]:
    """Run body() in a forked child that never returns into pytest; (exit status, what it reported:
    body's bytes, or the repr of what it raised)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code, msg = 1, b""
        try:
            msg = body()
            code = 0
        except BaseException as exc:  # report anything to the parent
            msg = repr(exc).encode()
        finally:
            os.write(w, msg)
            os._exit(code)
    os.close(w)
    out = b""
    while chunk := os.read(r, 4096):
        out += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return os.WEXITSTATUS(status), out


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.parametrize("backend", ["software", "sim"])
def test_engine_after_fork(backend, ec_keys):
    """In a forked child the parent's engine raises EngineForkedError; a new engine in the child signs."""
    raw = ec_keys["secp256r1"]
    eng = qatpy.Engine(backend)
    key = eng.wrap_key(raw)
    key.sign(b"parent", ECDSA)

    def child() -> bytes:
        try:
            key.sign(b"child", ECDSA)
            msg = b"no error"
        except qatpy.EngineForkedError as exc:
            msg = b"forked:" + str(exc).encode()
        with qatpy.Engine(backend) as child_eng:
            sig = child_eng.wrap_key(raw).sign(b"child", ECDSA)
            raw.public_key().verify(sig, b"child", ECDSA)
            msg += b"|new engine ok:" + child_eng.backend.encode()
        eng.close()  # closing the parent's engine in the child is a no-op
        return msg

    status, out = in_forked_child(child)
    assert status == 0, out
    assert out.startswith(b"forked:") and b"another process" in out, out
    assert out.endswith(b"new engine ok:" + backend.encode()), out
    key.sign(b"parent again", ECDSA)  # the parent is unaffected
    eng.close()


FORK_CHILD_CHECK = b"forked-futures-ok"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.parametrize("backend", ["software", "sim"])
def test_futures_in_flight_at_fork_fail_in_the_child(backend, rsa_keys, ec_keys):
    """Futures the parent had in flight when it forked fail in the child with EngineForkedError (never hang); the parent's resolve normally."""
    opts = {"sim": {"latency_ns": 300_000_000}} if backend == "sim" else {"threads": 1}
    raw = rsa_keys[4096] if backend == "software" else ec_keys["secp256r1"]
    args = (padding.PKCS1v15(), hashes.SHA256()) if backend == "software" else (ECDSA,)
    with qatpy.Engine(backend, **opts) as eng:
        key = eng.wrap_key(raw)
        futs = [key.sign_future(b"m%d" % i, *args) for i in range(40)]
        batch = key.sign_many_future([b"b%d" % i for i in range(8)], *args)

        def child() -> bytes:
            kinds = set()
            for f in [*futs, batch]:
                try:
                    f.result(timeout=20)
                    kinds.add("result")
                except qatpy.EngineForkedError:
                    kinds.add("forked")
            # Some may have finished before the fork; at least the last ones were still in flight.
            assert "forked" in kinds, kinds
            return FORK_CHILD_CHECK + b" " + b",".join(sorted(k.encode() for k in kinds))

        status, out = in_forked_child(child)
        assert status == 0 and out.startswith(FORK_CHILD_CHECK), out
        for i, f in enumerate(futs):
            raw.public_key().verify(f.result(timeout=60), b"m%d" % i, *args)
        for i, sig in enumerate(batch.result(timeout=60)):
            raw.public_key().verify(sig, b"b%d" % i, *args)
