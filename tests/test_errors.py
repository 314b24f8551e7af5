"""Caller mistakes raise typed errors naming the problem, before any work is queued."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, utils

import qatpy

PKCS = padding.PKCS1v15()


def _queued(eng) -> int:
    st = eng.stats()
    return st.get("software", {}).get("submitted", 0) + st.get("submitted", 0)


@pytest.mark.parametrize(
    "args, exc, words",
    [
        (("not bytes", PKCS, hashes.SHA256()), TypeError, "bytes-like"),
        ((12, PKCS, hashes.SHA256()), TypeError, "bytes-like"),
        ((b"x", "pkcs1", hashes.SHA256()), TypeError, "padding"),
        ((b"x", PKCS, "sha256"), TypeError, "HashAlgorithm"),
        ((b"x", PKCS, hashes.SHA256), TypeError, "instance"),
        ((b"x", PKCS, hashes.SHA1()), UnsupportedAlgorithm, "sha1"),
        ((b"x", PKCS, hashes.MD5()), UnsupportedAlgorithm, "md5"),
        ((b"x", PKCS, hashes.SHA3_256()), UnsupportedAlgorithm, "sha3-256"),
        (
            (b"x", padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None), hashes.SHA256()),
            UnsupportedAlgorithm,
            "OAEP",
        ),
        ((b"x", padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.AUTO), hashes.SHA256()), ValueError, "AUTO"),
        ((b"x", padding.PSS(padding.MGF1(hashes.SHA256()), 10_000), hashes.SHA256()), ValueError, "too long"),
        ((b"x", padding.PSS(padding.MGF1(hashes.SHA1()), 20), hashes.SHA256()), UnsupportedAlgorithm, "MGF1"),
        ((b"short", PKCS, utils.Prehashed(hashes.SHA256())), ValueError, "32 bytes"),
    ],
)
def test_rsa_bad_arguments(engine, rsa_keys, args, exc, words):
    """Each bad RSA argument raises its typed error with a message naming it; nothing is queued."""
    key = engine.wrap_key(rsa_keys[2048])
    before = _queued(engine)
    with pytest.raises(exc, match=words):
        key.sign(*args)
    with pytest.raises(exc, match=words):
        key.sign_future(*args)
    assert _queued(engine) == before


@pytest.mark.parametrize(
    "args, exc, words",
    [
        ((bytearray(b"x"), "ecdsa"), TypeError, "ECDSA"),
        ((b"x", ec.ECDSA(hashes.SHA1())), UnsupportedAlgorithm, "sha1"),
        ((b"x", ec.ECDSA(hashes.SHA256(), deterministic_signing=True)), UnsupportedAlgorithm, "6979"),
        ((None, ec.ECDSA(hashes.SHA256())), TypeError, "bytes-like"),
        ((b"abc", ec.ECDSA(utils.Prehashed(hashes.SHA384()))), ValueError, "48 bytes"),
    ],
)
def test_ec_bad_arguments(engine, ec_keys, args, exc, words):
    """Each bad ECDSA argument raises its typed error with a message naming it."""
    key = engine.wrap_key(ec_keys["secp256r1"])
    with pytest.raises(exc, match=words):
        key.sign(*args)


def test_bytes_like_inputs_accepted(engine, ec_keys):
    """bytearray and memoryview messages sign like bytes."""
    key = engine.wrap_key(ec_keys["secp256r1"])
    for data in (bytearray(b"abc"), memoryview(b"abc")):
        ec_keys["secp256r1"].public_key().verify(
            key.sign(data, ec.ECDSA(hashes.SHA256())), b"abc", ec.ECDSA(hashes.SHA256())
        )


def test_sign_many_bad_batch(engine, ec_keys):
    """sign_many rejects a single message or a non-bytes item with TypeError."""
    key = engine.wrap_key(ec_keys["secp256r1"])
    with pytest.raises(TypeError, match="iterable"):
        key.sign_many(b"one message", ec.ECDSA(hashes.SHA256()))
    with pytest.raises(TypeError, match="each message"):
        key.sign_many([b"a", 3], ec.ECDSA(hashes.SHA256()))


def test_unsupported_keys(engine):
    """Curves other than P-256/384/521 and non-RSA/EC keys are refused by name."""
    with pytest.raises(UnsupportedAlgorithm, match="secp256k1"):
        engine.wrap_key(ec.generate_private_key(ec.SECP256K1()))
    with pytest.raises(UnsupportedAlgorithm, match="Ed25519"):
        engine.wrap_key(ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(TypeError, match="private key"):
        engine.wrap_key("not a key")


def test_load_errors(engine, tmp_path):
    """Key loading reports bad types, bad data and wrong passwords with typed errors."""
    with pytest.raises(TypeError, match="bytes"):
        engine.load_private_key("-----BEGIN")
    with pytest.raises(ValueError):
        engine.load_private_key(b"garbage")
    with pytest.raises(FileNotFoundError):
        engine.load_private_key_file(tmp_path / "missing.pem")
    with pytest.raises(TypeError, match="path"):
        engine.load_private_key_file(42)


def test_closed_engine(backend, ec_keys):
    """Every entry point of a closed engine raises EngineClosedError."""
    eng = qatpy.Engine(backend)
    key = eng.wrap_key(ec_keys["secp256r1"])
    eng.close()
    alg = ec.ECDSA(hashes.SHA256())
    for call in (
        lambda: key.sign(b"x", alg),
        lambda: key.sign_future(b"x", alg),
        lambda: key.sign_many([b"x"], alg),
        lambda: eng.wrap_key(ec_keys["secp256r1"]),
    ):
        with pytest.raises(qatpy.EngineClosedError, match="closed"):
            call()


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        ({"backend": "gpu"}, ValueError, "unknown backend"),
        ({"backend": 3}, TypeError, "str"),
        ({"poll_delay": -1}, ValueError, ">= 0"),
        ({"poll_delay": float("nan")}, ValueError, "finite"),
        ({"poll_delay": float("inf")}, ValueError, "finite"),
        ({"poll_delay": "1ms"}, TypeError, "timedelta"),
        ({"poll_mode": "spin"}, ValueError, "poll_mode"),
        ({"threads": 0}, ValueError, ">= 1"),
        ({"threads": 1.5}, TypeError, "int"),
        ({"backend": "software", "sim": {"instances": 2}}, ValueError, "sim"),
        ({"backend": "sim", "sim": {"instances": "two"}}, TypeError, "knob"),
        ({"verify": "rsa"}, TypeError, "verify must be True or False"),
        ({"verify_ecdsa": "device"}, TypeError, "verify_ecdsa must be True or False"),
        ({"verify_ecdsa": 1}, TypeError, "verify_ecdsa must be True or False"),
    ],
)
def test_engine_option_validation(kwargs, exc, words):
    """Invalid engine options raise typed errors naming the option."""
    with pytest.raises(exc, match=words):
        qatpy.Engine(**kwargs)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"deadline": 1e30}, "deadline must be at most 3600"),
        ({"deadline": timedelta.max}, "deadline must be at most 3600"),
        ({"deadline": 3600.5}, "deadline must be at most 3600"),
        ({"poll_delay": 1e30}, "poll_delay must be at most 1"),
        ({"poll_delay": 1.5}, "poll_delay must be at most 1"),
        ({"max_inflight": 10**20}, "max_inflight must be at most 65536"),
        ({"max_requests": 2**40}, "max_requests must be at most 4194304"),
        ({"instances": 2**33}, "instances must be at most 4096"),
        ({"threads": 10**6}, "threads must be <= 1024"),
    ],
)
@pytest.mark.parametrize("backend", ["sim", "software", "auto"])
def test_values_beyond_the_shims_limits_are_refused_before_anything_starts(backend, kwargs, words):
    """A value the shim cannot take is a ValueError naming the option and its range, for every backend, and nothing is left started."""
    with pytest.raises(ValueError, match=words):
        qatpy.Engine(backend, **kwargs)
    # Nothing was started: a fresh engine starts its own device session with its own knobs.
    with qatpy.Engine("sim", sim={"instances": 3}) as eng:
        assert eng.stats()["device"]["num_instances"] == 3
