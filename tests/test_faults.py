"""Device faults on the simulated device: per-op software fallback, typed errors with fallback='never'."""

from __future__ import annotations

import concurrent.futures as cf

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

import qatpy
from qatpy import _binding

ECDSA = ec.ECDSA(hashes.SHA256())
PKCS = (padding.PKCS1v15(), hashes.SHA256())


def _verify_all(raw, msgs, sigs):
    for m, s in zip(msgs, sigs):
        raw.public_key().verify(s, m, ECDSA)


@pytest.mark.parametrize(
    "fault, reason",
    [
        ("submit_fail", "submit_error"),
        ("submit_unsupported", "submit_error"),
        ("submit_restarting", "submit_error"),
        ("cb_fail", "device_error"),
    ],
)
def test_device_errors_fall_back_to_software(fault, reason, ec_keys):
    """Each device error re-runs that operation in software; every signature verifies; counted by reason."""
    raw = ec_keys["secp256r1"]
    with qatpy.Engine("sim", sim={f"fault.{fault}.next": 5}) as eng:
        key = eng.wrap_key(raw)
        msgs = [b"f%d" % i for i in range(50)]
        _verify_all(raw, msgs, key.sign_many(msgs, ECDSA))
        st = eng.stats()
        assert st["fallbacks"] == {reason: 5}
        assert st["software_fallback"]["completed"] == 5


@pytest.mark.parametrize("fault, status", [("cb_fail", -1), ("submit_unsupported", -6), ("submit_restarting", -7)])
def test_fallback_never_gives_typed_errors(fault, status, ec_keys):
    """With fallback='never' a device failure reaches the future as a DeviceError carrying the CpaStatus."""
    raw = ec_keys["secp256r1"]
    with qatpy.Engine("sim", fallback="never", sim={f"fault.{fault}.next": 3}) as eng:
        key = eng.wrap_key(raw)
        futs = [key.sign_future(b"n%d" % i, ECDSA) for i in range(20)]
        cf.wait(futs, timeout=30)
        errors = [f.exception() for f in futs if f.exception() is not None]
        assert len(errors) == 3
        assert all(isinstance(e, qatpy.DeviceError) and e.status == status for e in errors)
        for i, f in enumerate(futs):
            if f.exception() is None:
                raw.public_key().verify(f.result(), b"n%d" % i, ECDSA)
        assert eng.stats()["failed"] == 3


def test_ecdsa_multiply_false_retries_with_fresh_nonce(ec_keys):
    """multiplyStatus FALSE makes the shim retry with a fresh k; the caller sees only valid signatures."""
    raw = ec_keys["secp384r1"]
    alg = ec.ECDSA(hashes.SHA384())
    with qatpy.Engine("sim", sim={"fault.ecdsa_mult_false.next": 4}) as eng:
        key = eng.wrap_key(raw)
        msgs = [b"m%d" % i for i in range(30)]
        for m, s in zip(msgs, key.sign_many(msgs, alg)):
            raw.public_key().verify(s, m, alg)
        st = eng.stats()
        assert st["device"]["ecdsa_retries"] == 4 and st["fallbacks"] == {}


def test_submit_retry_is_absorbed(ec_keys):
    """Submit RETRY (ring full) is queued and resubmitted by the shim, never surfaced or spun on."""
    raw = ec_keys["secp256r1"]
    with qatpy.Engine("sim", sim={"fault.submit_retry.next": 20}) as eng:
        key = eng.wrap_key(raw)
        msgs = [b"r%d" % i for i in range(100)]
        _verify_all(raw, msgs, key.sign_many(msgs, ECDSA))
        st = eng.stats()
        assert st["device"]["ring_retries"] >= 20 and st["fallbacks"] == {}


def test_instance_restart_falls_back(ec_keys):
    """An instance reset (RESTARTING, pending work failed) loses nothing: every operation completes and verifies."""
    from qatpy import _binding

    raw = ec_keys["secp256r1"]
    with qatpy.Engine("sim", sim={"latency_ns": 2_000_000, "restart_ms": 20}) as eng:
        key = eng.wrap_key(raw)
        msgs = [b"x%d" % i for i in range(40)]
        assert _binding.sim_set("fault.restart.next", 1) == 0
        _verify_all(raw, msgs, key.sign_many(msgs, ECDSA))
        assert _binding.sim_get("restarts") == 1
        assert _binding.sim_get("notify.restarting") == 1
        st = eng.stats()
        # Work failed or refused during the reset was re-run in software.
        assert sum(st["fallbacks"].values()) > 0
        assert 0 < sum(st["fallbacks"].values()) <= 40
        assert st["software_fallback"]["completed"] == sum(st["fallbacks"].values())
        # After RESTARTED the instance serves again: no further fallbacks.
        import time

        time.sleep(0.1)
        _verify_all(raw, msgs, key.sign_many(msgs, ECDSA))
        assert eng.stats()["fallbacks"] == st["fallbacks"]


def test_overflow_policy_sends_excess_to_software(ec_keys):
    """With fallback='on_error_or_overflow' and few request slots, the excess is signed in software."""
    raw = ec_keys["secp256r1"]
    with qatpy.Engine("sim", fallback="on_error_or_overflow", max_requests=8, sim={"latency_ns": 1_000_000}) as eng:
        key = eng.wrap_key(raw)
        msgs = [b"o%d" % i for i in range(200)]
        _verify_all(raw, msgs, key.sign_many(msgs, ECDSA))
        st = eng.stats()
        assert st["fallbacks"].get("overflow", 0) > 0
        assert st["completed"] + st["fallbacks"]["overflow"] == 200


def test_rsa_device_errors_fall_back(rsa_keys):
    """RSA operations failed by the device are re-signed in software, byte-equal to cryptography."""
    raw = rsa_keys[2048]
    with qatpy.Engine("sim", sim={"fault.cb_fail.next": 2}) as eng:
        key = eng.wrap_key(raw)
        msgs = [b"p%d" % i for i in range(10)]
        assert key.sign_many(msgs, *PKCS) == [raw.sign(m, *PKCS) for m in msgs]
        assert eng.stats()["fallbacks"] == {"device_error": 2}


def test_wrong_rsa_result_never_delivered(rsa_keys):
    """A device that returns a wrong RSA result with SUCCESS (fault attack) is caught in C and re-signed."""
    raw = rsa_keys[2048]
    with qatpy.Engine("sim", sim={"fault.rsa_bitflip.next": 3}) as eng:
        key = eng.wrap_key(raw)
        msgs = [b"v%d" % i for i in range(20)]
        assert key.sign_many(msgs, *PKCS) == [raw.sign(m, *PKCS) for m in msgs]
        st = eng.stats()
        assert st["fallbacks"] == {"verify_failed": 3}
        assert st["device"]["verify_failures"] == 3


def test_without_verify_the_fault_would_reach_the_caller(rsa_keys):
    """With verify=False the same fault hands back a bad signature: the check is what protects callers."""
    raw = rsa_keys[2048]
    with qatpy.Engine("sim", verify=False, sim={"fault.rsa_bitflip.next": 1}) as eng:
        key = eng.wrap_key(raw)
        sig = key.sign(b"m", *PKCS)
        assert sig != raw.sign(b"m", *PKCS)
        assert eng.stats()["device"]["verify_failures"] == 0


def test_verify_failure_typed_with_fallback_never(rsa_keys):
    """Under fallback='never' a result that fails verification raises VerificationError."""
    raw = rsa_keys[2048]
    with qatpy.Engine("sim", fallback="never", sim={"fault.rsa_bitflip.next": 1}) as eng:
        with pytest.raises(qatpy.VerificationError):
            eng.wrap_key(raw).sign(b"m", *PKCS)


def _wrong(raw, msgs, sigs):
    """How many of sigs do not verify (cryptography)."""
    bad = 0
    for m, s in zip(msgs, sigs):
        try:
            raw.public_key().verify(s, m, ECDSA)
        except InvalidSignature:
            bad += 1
    return bad


def test_wrong_ecdsa_result_never_delivered_with_verify_ecdsa(ec_keys):
    """With verify_ecdsa=True every bit-flipped (r, s) is caught by the device's check and re-signed in software: all 40 verify."""
    raw = ec_keys["secp256r1"]
    with qatpy.Engine("sim", verify_ecdsa=True, sim={"fault.ecdsa_bitflip.next": 5}) as eng:
        key = eng.wrap_key(raw)
        msgs = [b"e%d" % i for i in range(40)]
        sigs = key.sign_many(msgs, ECDSA)
        assert _wrong(raw, msgs, sigs) == 0
        st = eng.stats()
        assert st["fallbacks"] == {"verify_failed": 5}
        assert st["device"]["verify_failures"] == 5 and st["device"]["ecdsa_checks"] == 40
        assert _binding.sim_get("faults.ecdsa_bitflip") == 5


@pytest.mark.parametrize("curve", ["secp384r1", "secp521r1"])
def test_ecdsa_check_on_every_curve(ec_keys, curve):
    """The device's check takes P-384 and P-521 keys too: flipped results caught, every delivered signature verifies."""
    raw = ec_keys[curve]
    alg = ec.ECDSA(hashes.SHA384() if curve == "secp384r1" else hashes.SHA512())
    with qatpy.Engine("sim", verify_ecdsa=True, sim={"fault.ecdsa_bitflip.next": 2}) as eng:
        msgs = [b"c%d" % i for i in range(6)]
        for m, s in zip(msgs, eng.wrap_key(raw).sign_many(msgs, alg)):
            raw.public_key().verify(s, m, alg)
        assert eng.stats()["fallbacks"] == {"verify_failed": 2}


def test_without_verify_ecdsa_the_fault_reaches_the_caller(ec_keys):
    """By default (verify_ecdsa off) the same fault hands back signatures that do not verify: the check is what protects callers."""
    raw = ec_keys["secp256r1"]
    with qatpy.Engine("sim", sim={"fault.ecdsa_bitflip.next": 3}) as eng:
        msgs = [b"u%d" % i for i in range(10)]
        assert _wrong(raw, msgs, eng.wrap_key(raw).sign_many(msgs, ECDSA)) == 3
        st = eng.stats()
        assert st["fallbacks"] == {} and st["device"]["verify_failures"] == 0 and st["device"]["ecdsa_checks"] == 0


def test_ecdsa_verify_failure_typed_with_fallback_never(ec_keys):
    """Under fallback='never' an ECDSA result the device's check refuses raises VerificationError; the next one is delivered."""
    raw = ec_keys["secp256r1"]
    with qatpy.Engine("sim", verify_ecdsa=True, fallback="never", sim={"fault.ecdsa_bitflip.next": 1}) as eng:
        key = eng.wrap_key(raw)
        with pytest.raises(qatpy.VerificationError):
            key.sign(b"m", ECDSA)
        raw.public_key().verify(key.sign(b"m", ECDSA), b"m", ECDSA)


def test_verify_ecdsa_setting_belongs_to_its_engine(ec_keys):
    """Two engines on one device: only the one made with verify_ecdsa=True has its results checked (made first, and the other made and used after it)."""
    raw = ec_keys["secp256r1"]
    msgs = [b"w%d" % i for i in range(8)]
    with qatpy.Engine("sim", verify_ecdsa=True, fallback="never") as careful:
        with qatpy.Engine("sim", fallback="never") as careless:
            plain = careless.wrap_key(raw)
            checked = careful.wrap_key(raw)
            assert _binding.sim_set("fault.ecdsa_bitflip.next", len(msgs)) == 0
            out = checked.sign_many(msgs, ECDSA, return_exceptions=True)
            assert all(isinstance(r, qatpy.VerificationError) for r in out), out
            assert _binding.sim_set("fault.ecdsa_bitflip.next", len(msgs)) == 0
            assert _wrong(raw, msgs, plain.sign_many(msgs, ECDSA)) == len(msgs)
            assert careful.stats()["failed"] == len(msgs) and careless.stats()["failed"] == 0


def test_lost_response_hits_deadline_and_falls_back(ec_keys, wait_healthy):
    """Responses that never come are settled in software, none later than its deadline; the device is reset and serves again."""
    raw = ec_keys["secp256r1"]
    with qatpy.Engine("sim", deadline=0.2, sim={"fault.lost.next": 2}) as eng:
        key = eng.wrap_key(raw)
        msgs = [b"l%d" % i for i in range(10)]
        _verify_all(raw, msgs, key.sign_many(msgs, ECDSA))
        st = eng.stats()
        fb = st["fallbacks"]
        # The first deadline starts the recovery: the reset fails the other
        # lost request, which is then signed in software at once (no usable
        # instance while the only one restarts) unless its deadline came first.
        assert sum(fb.values()) == 2 and set(fb) <= {"deadline", "device_unavailable"}
        assert fb["deadline"] >= 1 and st["device"]["timeouts"] == fb["deadline"]
        wait_healthy(eng)
        _verify_all(raw, msgs, key.sign_many(msgs, ECDSA))  # served by the device again
        st = eng.stats()
        assert st["fallbacks"] == fb and st["instance_healthy"] == [True]
        assert st["device"]["instance_restarts"] == 1 and st["device"]["recovered_slots"] == fb["deadline"]


def test_lost_response_typed_with_fallback_never(ec_keys):
    """Under fallback='never' a missed deadline raises DeadlineExceededError on that future only."""
    raw = ec_keys["secp256r1"]
    with qatpy.Engine("sim", fallback="never", deadline=0.2, sim={"fault.lost.next": 1}) as eng:
        key = eng.wrap_key(raw)
        futs = [key.sign_future(b"d%d" % i, ECDSA) for i in range(5)]
        cf.wait(futs, timeout=10)
        errors = [f.exception() for f in futs if f.exception() is not None]
        assert len(errors) == 1 and isinstance(errors[0], qatpy.DeadlineExceededError)


def test_verify_setting_belongs_to_its_engine(rsa_keys):
    """An engine made with verify=True keeps getting checked results after another engine on the device chose verify=False (and closed)."""
    raw = rsa_keys[2048]
    msgs = [b"v%d" % i for i in range(8)]
    with qatpy.Engine("sim", verify=True, fallback="never") as careful:
        with qatpy.Engine("sim", verify=False) as careless:
            careless.wrap_key(raw).sign(b"x", *PKCS)  # made last, and used
        key = careful.wrap_key(raw)
        assert _binding.sim_set("fault.rsa_bitflip.next", len(msgs)) == 0
        out = key.sign_many(msgs, *PKCS, return_exceptions=True)
        assert all(isinstance(r, qatpy.VerificationError) for r in out), out
        assert careful.stats()["device"]["verify_failures"] == len(msgs)


def test_deadline_setting_belongs_to_its_engine(ec_keys):
    """An engine with deadline=None is not cut short by another engine's 0.05 s deadline on the same device."""
    raw = ec_keys["secp256r1"]
    # A slow device, not a hung one: its heartbeat must not declare it unresponsive.
    sim = {"latency_ns": 150_000_000, "heartbeat_overdue_ms": 60_000}
    with qatpy.Engine("sim", deadline=None, fallback="never", sim=sim) as patient:
        with qatpy.Engine("sim", deadline=0.05, fallback="never") as hasty:
            with pytest.raises(qatpy.DeadlineExceededError):
                hasty.wrap_key(raw).sign(b"hasty", ECDSA)
            sig = patient.wrap_key(raw).sign(b"patient", ECDSA)  # 150 ms > the other's 50 ms
            raw.public_key().verify(sig, b"patient", ECDSA)
            assert patient.stats()["failed"] == 0 and hasty.stats()["failed"] == 1
