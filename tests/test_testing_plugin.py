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


SCOPED_TESTS = """
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
import qatpy

ECDSA = ec.ECDSA(hashes.SHA256())
RAW = ec.generate_private_key(ec.SECP256R1())

@pytest.fixture(scope="module")
def shared():
    with qatpy.Engine("sim", fallback="never") as eng:  # keeps the device up for the whole module
        yield eng

def test_plan_fires_on_its_own_engine_only(shared, qatpy_sim):
    bystander = shared.wrap_key(RAW)
    bystander.sign(b"warm", ECDSA)
    eng = qatpy_sim(faults={"cb_fail": {"ppm": 1000000}}, fallback="never")
    mine = eng.wrap_key(RAW)
    for i in range(10):
        RAW.public_key().verify(bystander.sign(b"b%d" % i, ECDSA), b"b%d" % i, ECDSA)
        with pytest.raises(qatpy.DeviceError):
            mine.sign(b"m%d" % i, ECDSA)
    assert shared.stats()["failed"] == 0 and eng.stats()["failed"] == 10

def test_leftover_plan_is_gone(shared, qatpy_sim):
    eng = qatpy_sim(faults={"cb_fail": 100}, fallback="never")
    with pytest.raises(qatpy.DeviceError):
        eng.wrap_key(RAW).sign(b"one", ECDSA)   # 99 left in the plan when this test ends

def test_after_a_leftover_plan(shared):
    key = shared.wrap_key(RAW)
    for i in range(10):
        RAW.public_key().verify(key.sign(b"a%d" % i, ECDSA), b"a%d" % i, ECDSA)
    assert shared.stats()["failed"] == 0
"""


def test_fault_plans_belong_to_their_engine_and_test(pytester: pytest.Pytester):
    """A qatpy_sim fault plan fires only on its own engine while a module-scoped engine shares the device, and what is left of it is cleared when its test ends."""
    pytester.makepyfile(test_scoped=SCOPED_TESTS)
    result = pytester.runpytest_subprocess("-q", "-p", "no:randomly")
    result.assert_outcomes(passed=3)


def test_start_time_knob_on_a_running_device_says_so():
    """A start-time simulator knob given while the device already runs names that cause, not 'unknown knob'."""
    import qatpy

    with qatpy.Engine("sim"):
        with pytest.raises(ValueError, match="takes effect only when the device starts"):
            qatpy.Engine("sim", sim={"instances": 2})
        with pytest.raises(ValueError, match="unknown or invalid simulator knob"):
            qatpy.Engine("sim", sim={"no_such_knob": 1})
