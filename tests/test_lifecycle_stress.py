"""close() under heavy load and fork(): bounded, nothing lost, clear errors."""

from __future__ import annotations

import concurrent.futures as cf
import os
import time

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


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.parametrize("backend", ["software", "sim"])
def test_engine_after_fork(backend, ec_keys):
    """In a forked child the parent's engine raises EngineForkedError; a new engine in the child signs."""
    raw = ec_keys["secp256r1"]
    eng = qatpy.Engine(backend)
    key = eng.wrap_key(raw)
    key.sign(b"parent", ECDSA)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report through the pipe, never return into pytest
        code = 1
        try:
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
    assert os.WEXITSTATUS(status) == 0, out
    assert out.startswith(b"forked:") and b"another process" in out, out
    assert out.endswith(b"new engine ok:" + backend.encode()), out
    key.sign(b"parent again", ECDSA)  # the parent is unaffected
    eng.close()
