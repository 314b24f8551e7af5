"""Hypothesis over the public entry points: any input gives a result or a typed error, never a crash or hang."""

from __future__ import annotations

import pytest
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qatpy

TYPED = (TypeError, ValueError, UnsupportedAlgorithm, qatpy.QatpyError)

junk = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.binary(max_size=80),
    st.lists(st.integers(), max_size=3),
    st.builds(object),
)
hash_objs = st.sampled_from(
    [
        hashes.SHA1(),
        hashes.SHA224(),
        hashes.SHA256(),
        hashes.SHA384(),
        hashes.SHA512(),
        hashes.MD5(),
        hashes.SHA3_256(),
        hashes.BLAKE2b(64),
        hashes.SHA256,
    ]
)
any_hash = st.one_of(hash_objs, hash_objs.filter(lambda h: not isinstance(h, type)).map(utils.Prehashed), junk)
salts = st.one_of(
    st.integers(0, 600), st.sampled_from([padding.PSS.MAX_LENGTH, padding.PSS.DIGEST_LENGTH, padding.PSS.AUTO])
)
hash_instances = hash_objs.filter(lambda h: not isinstance(h, type))
paddings = st.one_of(
    st.just(padding.PKCS1v15()),
    st.builds(lambda h, s: padding.PSS(padding.MGF1(h), s), hash_instances, salts),
    st.just(padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)),
    junk,
)
messages = st.one_of(
    st.binary(max_size=200),
    st.builds(bytearray, st.binary(max_size=64)),
    st.builds(memoryview, st.binary(max_size=64)),
    junk,
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module", params=["software", "sim"])
def fuzz_engine(request):
    with qatpy.Engine(request.param) as eng:
        yield eng


def _check_rsa(raw, sig, data, pad, alg) -> None:
    raw.public_key().verify(sig, bytes(data), pad, alg)


@FUZZ
@given(data=messages, pad=paddings, alg=any_hash)
def test_rsa_sign_fuzz(fuzz_engine, rsa_keys, data, pad, alg):
    """RSA sign with arbitrary arguments either verifies or raises a typed error."""
    raw = rsa_keys[2048]
    key = fuzz_engine.wrap_key(raw)
    try:
        sig = key.sign(data, pad, alg)
    except TYPED:
        return
    _check_rsa(raw, sig, data, pad, alg)


@FUZZ
@given(
    data=messages,
    alg=st.one_of(any_hash.map(ec.ECDSA), junk, st.just(ec.ECDH())),
    curve=st.sampled_from(["secp256r1", "secp384r1", "secp521r1"]),
)
def test_ec_sign_fuzz(fuzz_engine, ec_keys, data, alg, curve):
    """ECDSA sign with arbitrary arguments either verifies or raises a typed error."""
    raw = ec_keys[curve]
    key = fuzz_engine.wrap_key(raw)
    try:
        sig = key.sign(data, alg)
    except TYPED:
        return
    raw.public_key().verify(sig, bytes(data), alg)


@FUZZ
@given(items=st.one_of(st.lists(messages, max_size=8), junk))
def test_sign_many_fuzz(fuzz_engine, ec_keys, items):
    """sign_many with arbitrary batches returns verified signatures in order or raises a typed error."""
    raw = ec_keys["secp256r1"]
    key = fuzz_engine.wrap_key(raw)
    try:
        sigs = key.sign_many(items, ec.ECDSA(hashes.SHA256()))
    except TYPED:
        return
    assert len(sigs) == len(items)
    for m, s in zip(items, sigs):
        raw.public_key().verify(s, bytes(m), ec.ECDSA(hashes.SHA256()))


@FUZZ
@given(key_data=st.one_of(st.binary(max_size=300), junk), password=st.one_of(st.none(), st.binary(max_size=8), junk))
def test_load_key_fuzz(fuzz_engine, key_data, password):
    """Loading arbitrary bytes as a key raises a typed error (never a crash)."""
    with pytest.raises(TYPED):
        fuzz_engine.load_private_key(key_data, password)


@settings(max_examples=100, deadline=None)
@given(
    kwargs=st.dictionaries(
        st.sampled_from(
            [
                "backend",
                "poll_delay",
                "poll_mode",
                "threads",
                "instances",
                "max_inflight",
                "max_requests",
                "fallback",
                "sim",
                "libqat",
            ]
        ),
        st.one_of(junk, st.sampled_from(["software", "auto", "timer", "event", "never", 0, -1, 1e9, float("inf")])),
        max_size=3,
    )
)
def test_engine_options_fuzz(kwargs):
    """Arbitrary engine options construct a working engine or raise a typed error."""
    kwargs.setdefault("backend", "software")
    try:
        eng = qatpy.Engine(**kwargs)
    except TYPED:
        return
    with eng:
        assert eng.backend in ("software", "sim", "qat")
