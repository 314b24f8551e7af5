"""qatpy.testing: the pytest plugin lets users run their own signing code on the simulated device with faults."""

from __future__ import annotations

import pytest

from qatpy.testing import fault_knobs

pytest_plugins = ["pytester"]

USER_TESTS = """
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
import qatpy

def my_signing_service(key, msgs):
    return key.sign_many(msgs, ec.ECDSA(hashes.SHA256()), return_exceptions=True)

def test_on_sim(qatpy_engine):
    raw = ec.generate_private_key(ec.SECP256R1())
    key = qatpy_engine.wrap_key(raw)
    assert qatpy_engine.backend == "sim"
    raw.public_key().verify(key.sign(b"m", ec.ECDSA(hashes.SHA256())), b"m", ec.ECDSA(hashes.SHA256()))

def test_faults_fall_back(qatpy_sim):
    eng = qatpy_sim(faults={"cb_fail": 2, "submit_retry": {"next": 3}})
    raw = ec.generate_private_key(ec.SECP256R1())
    sigs = my_signing_service(eng.wrap_key(raw), [b"a", b"b", b"c", b"d"])
    for m, s in zip([b"a", b"b", b"c", b"d"], sigs):
        raw.public_key().verify(s, m, ec.ECDSA(hashes.SHA256()))
    assert eng.stats()["fallbacks"] == {"device_error": 2}

def test_faults_surface_with_never(qatpy_sim):
    eng = qatpy_sim(faults={"cb_fail": 1}, fallback="never")
    raw = ec.generate_private_key(ec.SECP256R1())
    out = my_signing_service(eng.wrap_key(raw), [b"a", b"b"])
    assert sum(isinstance(x, qatpy.DeviceError) for x in out) == 1
"""


def test_plugin_fixtures_in_a_user_suite(pytester: pytest.Pytester):
    """A user's test file gets qatpy_engine and qatpy_sim with fault plans, and all its tests pass."""
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-q")
    result.assert_outcomes(passed=3)


def test_backend_option(pytester: pytest.Pytester):
    """--qatpy-backend software switches the qatpy_engine fixture to the software backend."""
    pytester.makepyfile(test_opt="def test_b(qatpy_engine):\n    assert qatpy_engine.backend == 'software'\n")
    result = pytester.runpytest_subprocess("--qatpy-backend", "software", "-q")
    result.assert_outcomes(passed=1)


def test_fault_knobs_validation():
    """Fault plans translate to simulator knobs; unknown kinds and bad plans raise typed errors."""
    assert fault_knobs({"lost": {"ppm": 100}, "cb_fail": 2}) == {"fault.lost.ppm": 100, "fault.cb_fail.next": 2}
    with pytest.raises(ValueError, match="unknown fault kind"):
        fault_knobs({"meteor": 1})
    with pytest.raises(TypeError, match="int"):
        fault_knobs({"lost": "often"})
    with pytest.raises(ValueError, match="next=N"):
        fault_knobs({"lost": {"sometimes": 1}})
