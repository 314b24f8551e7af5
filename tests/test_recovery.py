"""Recovery from answers that never come, on the simulated device: a heartbeat check resets an
unresponsive device and the reset gives the slots back; with no usable instance, operations go
to the fallback policy at once instead of waiting out their deadlines."""

from __future__ import annotations

import concurrent.futures as cf

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

import qatpy
from qatpy._soak import run_recovery_soak

ECDSA = ec.ECDSA(hashes.SHA256())


def _verify_all(raw, msgs, sigs):
    for m, s in zip(msgs, sigs):
        raw.public_key().verify(s, m, ECDSA)


def test_48_lost_answers_then_the_device_serves_again(ec_keys, wait_healthy):
    """The issue's example: after 48 lost answers (every slot) later signs run on the device again, none waits for a deadline."""
    raw = ec_keys["secp256r1"]
    with qatpy.Engine("sim", sim={"fault.lost.next": 48}, deadline=0.2) as eng:
        key = eng.wrap_key(raw)
        msgs = [b"lost%d" % i for i in range(48)]
        _verify_all(raw, msgs, key.sign_many(msgs, ECDSA))
        fb = eng.stats()["fallbacks"]
        # The first deadline starts the recovery; what the reset fails before
        # its own deadline is signed in software at once (the only instance
        # is restarting), so at most the 48 lost answers waited for one.
        assert sum(fb.values()) == 48 and set(fb) <= {"deadline", "device_unavailable"}
        assert 1 <= fb["deadline"] <= 48
        wait_healthy(eng)
        st = eng.stats()
        dev = st["device"]
        assert dev["heartbeat_failures"] >= 1 and dev["instance_restarts"] == 1
        assert dev["recovered_slots"] == fb["deadline"] == dev["timeouts"]
        assert dev["inflight_now"] == 0 and st["sim"]["inflight"] == 0
        done_before = st["completed"]
        later = [b"later%d" % i for i in range(100)]
        _verify_all(raw, later, key.sign_many(later, ECDSA))
        for i in range(20):
            raw.public_key().verify(key.sign(b"one%d" % i, ECDSA), b"one%d" % i, ECDSA)
        st = eng.stats()
        assert st["fallbacks"] == fb  # no deadline waited, nothing re-run
        assert st["completed"] == done_before + 120 and st["device"]["timeouts"] == fb["deadline"]


def test_without_heartbeat_operations_fail_fast_to_software(ec_keys):
    """heartbeat=0: once lost answers hold every slot, each sign goes to software at once (device_unavailable); the shim asked once."""
    raw = ec_keys["secp256r1"]
    sim = {"fault.lost.next": 8, "heartbeat": 0}
    with qatpy.Engine("sim", sim=sim, deadline=0.2, max_inflight=8) as eng:
        key = eng.wrap_key(raw)
        msgs = [b"z%d" % i for i in range(8)]
        _verify_all(raw, msgs, key.sign_many(msgs, ECDSA))
        assert eng.stats()["fallbacks"] == {"deadline": 8}
        for i in range(20):
            raw.public_key().verify(key.sign(b"f%d" % i, ECDSA), b"f%d" % i, ECDSA)
        more = [b"m%d" % i for i in range(30)]
        _verify_all(raw, more, key.sign_many(more, ECDSA))
        st = eng.stats()
        assert st["fallbacks"] == {"deadline": 8, "device_unavailable": 50}
        dev = st["device"]
        assert (dev["heartbeat_checks"], dev["heartbeat_unsupported"], dev["instance_restarts"]) == (1, 1, 0)
        assert dev["fast_fails"] == 50 and dev["timeouts"] == 8 and dev["inflight_now"] == 8
        assert st["instance_healthy"] == [False]


def test_fallback_never_gets_a_typed_error_at_once(ec_keys):
    """Under fallback='never' an operation with no usable instance fails at once with DeviceResourceError (zombies hold every slot)."""
    raw = ec_keys["secp256r1"]
    sim = {"fault.lost.next": 4, "heartbeat": 0}
    with qatpy.Engine("sim", sim=sim, fallback="never", deadline=0.2, max_inflight=4) as eng:
        key = eng.wrap_key(raw)
        futs = [key.sign_future(b"n%d" % i, ECDSA) for i in range(4)]
        cf.wait(futs, timeout=30)
        assert all(isinstance(f.exception(), qatpy.DeadlineExceededError) for f in futs)
        with pytest.raises(qatpy.DeviceResourceError) as info:
            key.sign(b"after", ECDSA)
        assert info.value.status == -3  # CPA_STATUS_RESOURCE
        assert eng.stats()["device"]["fast_fails"] == 1


def test_every_instance_unusable_fails_fast(ec_keys, wait_healthy):
    """One instance restarting, the other's slots all held by lost answers: operations go to software at once, none waits a deadline."""
    from qatpy import _binding

    raw = ec_keys["secp256r1"]
    sim = {"instances": 2, "heartbeat": 0, "restart_ms": 600_000}
    with qatpy.Engine("sim", sim=sim, deadline=0.2, max_inflight=4) as eng:
        key = eng.wrap_key(raw)
        assert _binding.sim_set("fault.restart.next", 1) == 0
        raw.public_key().verify(key.sign(b"r", ECDSA), b"r", ECDSA)  # refused: RESTARTING
        assert eng.stats()["fallbacks"] == {"submit_error": 1}
        # The refusal made the shim fetch the device events: routed around at once.
        assert sorted(eng.stats()["instance_healthy"]) == [False, True]
        assert _binding.sim_set("fault.lost.next", 4) == 0
        msgs = [b"l%d" % i for i in range(4)]
        _verify_all(raw, msgs, key.sign_many(msgs, ECDSA))  # all on the other instance, all lost
        assert eng.stats()["fallbacks"] == {"submit_error": 1, "deadline": 4}
        more = [b"u%d" % i for i in range(40)]
        _verify_all(raw, more, key.sign_many(more, ECDSA))
        st = eng.stats()
        assert st["fallbacks"] == {"submit_error": 1, "deadline": 4, "device_unavailable": 40}
        assert st["instance_healthy"] == [False, False] and st["device"]["fast_fails"] == 40


def test_short_recovery_soak():
    """8,000 operations on one instance with 8 slots, 1 answer in 500 lost: nothing lost, duplicated or wrong, and under 5% wait for a deadline."""
    r = run_recovery_soak(8_000, lost_ppm=2000, deadline=0.5)
    assert (r["lost"], r["duplicated"], r["wrong_signatures"]) == (0, 0, 0), r
    assert r["ok"] == r["ops"] >= 7_900, r
    assert r["lost_answers"] >= 8 and r["device"]["instance_restarts"] >= 1, r
    # Without recovery the 8th lost answer (about op 4,000) would hold the
    # last slot and every later operation would wait out its deadline (~50%).
    assert r["deadline_fraction"] < 0.05, r
    assert r["device"]["recovered_slots"] >= 1, r
    assert (r["leaked_dma_allocs"], r["key_freed_unwiped"], r["refused_non_dma"]) == (0, 0, 0), r
