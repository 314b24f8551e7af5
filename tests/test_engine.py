"""Engine lifecycle: backend choice, fallback reason, env override, stats, close semantics."""

from __future__ import annotations

import concurrent.futures as cf
import gc
import warnings
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

import qatpy

ECDSA = ec.ECDSA(hashes.SHA256())


def test_software_backend_reports_itself(clean_env):
    """backend='software' runs software and has no fallback reason."""
    with qatpy.Engine("software") as eng:
        assert eng.backend == "software" and eng.fallback_reason is None
        assert eng.stats()["backend"] == "software"


FALLBACK_SCRIPT = """
import json, qatpy
out = {}
with qatpy.Engine("auto") as eng:
    out["backend"] = eng.backend
    out["reason"] = eng.fallback_reason
try:
    qatpy.Engine("qat")
except qatpy.QatUnavailableError as exc:
    out["qat_error"] = [exc.cause, exc.reason, str(exc)]
print(json.dumps(out))
"""


def test_auto_falls_back_with_reason():
    """With no usable libqat, auto picks software and says why; backend='qat' raises the same reason."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, QATPY_LIBQAT="/nonexistent/libqat.so.4", QATPY_LIBUSDM="/nonexistent/libusdm.so.0")
    env.pop("QATPY_BACKEND", None)
    p = subprocess.run([sys.executable, "-c", FALLBACK_SCRIPT], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["backend"] == "software"
    assert out["reason"].startswith("library not found") and "/nonexistent/lib" in out["reason"]
    cause, reason, text = out["qat_error"]
    assert cause == "library not found" and reason == out["reason"] == text


def test_env_selects_backend(clean_env, monkeypatch):
    """QATPY_BACKEND chooses the backend when none is passed; bad values are named."""
    monkeypatch.setenv("QATPY_BACKEND", "software")
    with qatpy.Engine() as eng:
        assert eng.requested_backend == "software" and eng.backend == "software"
    monkeypatch.setenv("QATPY_BACKEND", "fpga")
    with pytest.raises(ValueError, match="QATPY_BACKEND"):
        qatpy.Engine()


def test_poll_delay_accepts_timedelta():
    """poll_delay takes seconds or a timedelta."""
    with qatpy.Engine("software", poll_delay=timedelta(microseconds=50)) as eng:
        assert eng.poll_delay == pytest.approx(50e-6)
    with qatpy.Engine("software", poll_delay=0) as eng:
        assert eng.poll_delay == 0.0


def test_close_is_idempotent(backend):
    """close() twice is fine and the context manager closes."""
    with qatpy.Engine(backend) as eng:
        pass
    assert eng.closed
    eng.close()
    eng.close(timeout=0)


def test_close_with_work_in_flight(backend, ec_keys, rsa_keys):
    """Closing with work in flight resolves every future: a signature that verifies or EngineClosedError."""
    eng = qatpy.Engine(backend)
    ek = eng.wrap_key(ec_keys["secp256r1"])
    rk = eng.wrap_key(rsa_keys[2048])
    futs = [ek.sign_future(b"f%d" % i, ECDSA) for i in range(500)]
    futs += [rk.sign_future(b"r%d" % i, padding.PKCS1v15(), hashes.SHA256()) for i in range(200)]
    eng.close(timeout=0.01)
    done, not_done = cf.wait(futs, timeout=30)
    assert not not_done
    ok = closed = 0
    for f in futs:
        exc = f.exception()
        if exc is None:
            ok += 1
        else:
            assert isinstance(exc, qatpy.EngineClosedError), exc
            closed += 1
    assert ok + closed == 700
    for i, f in enumerate(futs[:500]):
        if f.exception() is None:
            ec_keys["secp256r1"].public_key().verify(f.result(), b"f%d" % i, ECDSA)


def test_close_waits_for_work(backend, ec_keys):
    """close() with a generous timeout lets queued work finish successfully."""
    eng = qatpy.Engine(backend)
    ek = eng.wrap_key(ec_keys["secp256r1"])
    futs = [ek.sign_future(b"w%d" % i, ECDSA) for i in range(300)]
    eng.close(timeout=30)
    for i, f in enumerate(futs):
        ec_keys["secp256r1"].public_key().verify(f.result(timeout=1), b"w%d" % i, ECDSA)


def test_stats_counts(engine, ec_keys):
    """stats() is a plain dict whose counters move with the work done."""
    ek = engine.wrap_key(ec_keys["secp256r1"])
    ek.sign_many([b"s"] * 10, ECDSA)
    st = engine.stats()
    assert isinstance(st, dict) and st["backend"] == engine.backend
    if engine.backend == "software":
        assert st["software"]["completed"] >= 10
    else:
        assert st["completed"] >= 10 and st["device"]["completed_ok"] >= 10


def test_load_from_pem_der_file_and_password(engine, rsa_keys, ec_keys, tmp_path):
    """Keys load from PEM, DER, encrypted PEM and files, and sign correctly."""
    raw = rsa_keys[2048]
    pem = raw.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
    )
    der = ec_keys["secp256r1"].private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    k1 = engine.load_private_key(pem, b"pw")
    assert k1.sign(b"m", padding.PKCS1v15(), hashes.SHA256()) == raw.sign(b"m", padding.PKCS1v15(), hashes.SHA256())
    k2 = engine.load_private_key(der)
    ec_keys["secp256r1"].public_key().verify(k2.sign(b"m", ECDSA), b"m", ECDSA)
    path = tmp_path / "k.pem"
    path.write_bytes(pem)
    k3 = engine.load_private_key_file(path, password=b"pw")
    assert isinstance(k3, qatpy.QatRSAPrivateKey)
    with pytest.raises(ValueError):
        engine.load_private_key(pem, b"wrong")
    with pytest.raises(TypeError):
        engine.load_private_key(pem)  # encrypted, no password


def test_module_level_loaders_use_default_engine(clean_env, monkeypatch, ec_keys):
    """qatpy.load_pem_private_key works without an engine, on the shared default engine."""
    monkeypatch.setenv("QATPY_BACKEND", "software")
    pem = ec_keys["secp256r1"].private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key = qatpy.load_pem_private_key(pem)
    assert key.engine is qatpy.default_engine()
    ec_keys["secp256r1"].public_key().verify(key.sign(b"d", ECDSA), b"d", ECDSA)
    qatpy.default_engine().close()
    assert qatpy.default_engine() is not key.engine  # a closed default is replaced


def test_unclosed_engine_warns():
    """An engine dropped without close() emits a ResourceWarning."""
    eng = qatpy.Engine("software")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        del eng
        gc.collect()
    assert any(issubclass(x.category, ResourceWarning) for x in w)
