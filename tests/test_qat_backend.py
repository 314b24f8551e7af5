"""The QAT backend on the simulated device: startup causes, poll modes, backpressure, instances, DMA."""

from __future__ import annotations

import os
import threading
import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

import qatpy
from qatpy import _binding

ECDSA = ec.ECDSA(hashes.SHA256())
PKCS = (padding.PKCS1v15(), hashes.SHA256())


@pytest.mark.parametrize(
    "knobs, cause, words",
    [
        ({"qat_available": 0}, "no QAT device", "vfio"),
        ({"user_start_fail": 1}, "start failed", "icp_sal_userStart"),
        ({"instances": 0}, "no asym instance", "instance"),
        ({"cap.rsa": 0, "instance_svc": 0}, "capability missing", "rsa"),
    ],
)
def test_startup_failures_name_their_cause(knobs, cause, words):
    """Each way the device can fail to start gives QatUnavailableError naming the cause and a fix."""
    with pytest.raises(qatpy.QatUnavailableError) as ei:
        qatpy.Engine("sim", sim=knobs)
    assert ei.value.cause == cause
    assert words.lower() in ei.value.reason.lower()
    with qatpy.Engine("sim") as eng:  # the next session starts from default knobs
        assert eng.backend == "sim"


def test_startup_reason_names_its_cause_once():
    """The no-device reason states its cause once ("no QAT device: ...", not "no QAT device: no QAT device: ...")."""
    with pytest.raises(qatpy.QatUnavailableError) as ei:
        qatpy.Engine("sim", sim={"qat_available": 0})
    assert ei.value.reason.lower().count("no qat device") == 1, ei.value.reason


def test_a_second_qatlib_in_one_process_is_named_as_such(tmp_path):
    """After the simulator was loaded (and its engines closed), another libqat is refused with the true cause, and auto falls back saying so."""
    with qatpy.Engine("sim") as eng:
        assert eng.backend == "sim"
    other = (str(tmp_path / "libqat.so.4"), str(tmp_path / "libusdm.so.0"))
    with pytest.raises(qatpy.QatUnavailableError) as ei:
        qatpy.Engine("qat", libqat=other[0], libusdm=other[1])
    assert ei.value.cause == "one qatlib per process"
    assert "close its engines" not in ei.value.reason and "already loaded" in ei.value.reason
    with qatpy.Engine("auto", libqat=other[0], libusdm=other[1]) as eng:
        assert eng.backend == "software"
        assert eng.fallback_reason is not None and eng.fallback_reason.startswith("one qatlib per process")
    with qatpy.Engine("sim") as eng:  # the loaded simulator still works
        assert eng.backend == "sim"


def test_unknown_sim_knob():
    """An unknown simulator knob is a ValueError naming it, and leaves no device running."""
    with pytest.raises(ValueError, match="no_such_knob"):
        qatpy.Engine("sim", sim={"no_such_knob": 1})
    with qatpy.Engine("sim") as eng:
        assert eng.backend == "sim"


@pytest.mark.parametrize("mode", ["timer", "busy", "event", "manual"])
def test_poll_modes_sign(mode, ec_keys, rsa_keys):
    """Every poll mode delivers correct signatures (manual mode through engine.poll inside waits)."""
    with qatpy.Engine("sim", poll_mode=mode, poll_delay=20e-6) as eng:
        ek = eng.wrap_key(ec_keys["secp256r1"])
        rk = eng.wrap_key(rsa_keys[2048])
        sigs = ek.sign_many([b"p%d" % i for i in range(100)], ECDSA)
        for i, s in enumerate(sigs):
            ec_keys["secp256r1"].public_key().verify(s, b"p%d" % i, ECDSA)
        assert rk.sign(b"m", *PKCS) == rsa_keys[2048].sign(b"m", *PKCS)
        st = eng.stats()["device"]
        want = {"timer": 0, "busy": 1, "event": 2, "manual": 3}[mode]
        assert st["poll_mode"] == want, st


def test_manual_mode_needs_poll(ec_keys):
    """In manual mode nothing completes until engine.poll() runs; then the future resolves."""
    with qatpy.Engine("sim", poll_mode="manual") as eng:
        ek = eng.wrap_key(ec_keys["secp256r1"])
        fut = ek.sign_future(b"x", ECDSA)
        time.sleep(0.05)
        assert not fut.done()
        deadline = time.monotonic() + 10
        while not fut.done() and time.monotonic() < deadline:
            eng.poll()
        ec_keys["secp256r1"].public_key().verify(fut.result(), b"x", ECDSA)


def test_timer_poller_parks_when_idle(ec_keys):
    """With nothing in flight the poll thread parks: the poll count does not grow while idle."""
    with qatpy.Engine("sim", poll_mode="timer", poll_delay=1e-5) as eng:
        ek = eng.wrap_key(ec_keys["secp256r1"])
        ek.sign_many([b"a"] * 10, ECDSA)
        time.sleep(0.02)
        before = eng.stats()["device"]["polls"]
        time.sleep(0.2)
        after = eng.stats()["device"]["polls"]
        assert after - before <= 2  # 0.2 s at 10 us would be ~20000 polls if it spun


def _thread_id(comm: str) -> int:
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/comm") as f:
            if f.read().strip() == comm:
                return int(tid)
    raise LookupError(comm)


def _cpu_of(tid: int) -> int:
    with open(f"/proc/self/task/{tid}/stat") as f:
        stat = f.read()
    return int(stat[stat.rindex(")") + 2 :].split()[36])  # field 39: CPU last run on


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to move between")
def test_poll_thread_leaves_the_submitters_cpu(ec_keys):
    """A poll thread left on the submitting thread's CPU moves itself to another CPU of its mask."""
    cpus = sorted(os.sched_getaffinity(0))
    me = threading.get_native_id()
    with qatpy.Engine("sim") as eng:
        ek = eng.wrap_key(ec_keys["secp256r1"])
        ek.sign_many([b"w"] * 10, ECDSA)
        poller = _thread_id("qatpy-poll-0")
        os.sched_setaffinity(me, {cpus[0]})  # the submitter stays put for the test
        try:
            os.sched_setaffinity(poller, {cpus[0]})  # put them together...
            for f in [ek.sign_future(b"x", ECDSA) for _ in range(500)]:
                f.result(timeout=30)
            assert _cpu_of(poller) == cpus[0]
            os.sched_setaffinity(poller, set(cpus))  # ...then let the poller go where it likes
            deadline = time.monotonic() + 5
            while eng.stats()["device"]["poller_moves"] == 0 and time.monotonic() < deadline:
                for f in [ek.sign_future(b"x", ECDSA) for _ in range(200)]:
                    f.result(timeout=30)
            # Counted only after the kernel accepted a mask without this CPU,
            # which migrates the thread off it before the call returns.
            assert eng.stats()["device"]["poller_moves"] >= 1
            for f in [ek.sign_future(b"y", ECDSA) for _ in range(200)]:
                ec_keys["secp256r1"].public_key().verify(f.result(timeout=30), b"y", ECDSA)
        finally:
            os.sched_setaffinity(me, set(cpus))


def test_backpressure_small_ring(ec_keys):
    """A ring of depth 4 with 2000 operations in flight: all complete, queued in C, no busy retry."""
    with qatpy.Engine("sim", sim={"ring_depth": 4}) as eng:
        ek = eng.wrap_key(ec_keys["secp256r1"])
        sigs = ek.sign_many([b"b%d" % i for i in range(2000)], ECDSA)
        for i in range(0, 2000, 97):
            ec_keys["secp256r1"].public_key().verify(sigs[i], b"b%d" % i, ECDSA)
        st = eng.stats()
        assert st["sim"]["inflight_max"] <= 3  # the ring admits depth - 1
        # Retries are bounded by work done, not by time spent waiting (no spin).
        assert st["device"]["ring_retries"] <= 2000


def test_more_requests_than_slots(ec_keys):
    """With only 16 request slots, 1000 operations still all complete (submit waits for slots)."""
    with qatpy.Engine("sim", max_requests=16) as eng:
        ek = eng.wrap_key(ec_keys["secp256r1"])
        sigs = ek.sign_many([b"s%d" % i for i in range(1000)], ECDSA)
        assert len(sigs) == 1000
        ec_keys["secp256r1"].public_key().verify(sigs[-1], b"s999", ECDSA)


def test_several_instances_share_load(ec_keys):
    """With 4 instances every one serves work and the device sees them all."""
    with qatpy.Engine("sim", sim={"instances": 4}) as eng:
        ek = eng.wrap_key(ec_keys["secp256r1"])
        ek.sign_many([b"i"] * 2000, ECDSA)
        st = eng.stats()
        assert st["device"]["num_instances"] == 4
        served = st["per_instance_completed"]
        assert sorted(served) == [0, 1, 2, 3] and all(n > 0 for n in served.values()), served
        assert sum(served.values()) == 2000


def test_steady_state_allocates_no_dma(ec_keys, rsa_keys):
    """After warm-up, thousands of operations allocate no DMA memory."""
    with qatpy.Engine("sim") as eng:
        ek = eng.wrap_key(ec_keys["secp384r1"])
        rk = eng.wrap_key(rsa_keys[2048])
        ek.sign_many([b"w"] * 200, ec.ECDSA(hashes.SHA384()))
        rk.sign_many([b"w"] * 50, *PKCS)
        before = eng.stats()["device"]["dma_allocs"]
        sim_before = _binding.sim_get("mem.total_allocs")
        ek.sign_many([b"x"] * 3000, ec.ECDSA(hashes.SHA384()))
        rk.sign_many([b"x"] * 300, *PKCS)
        assert eng.stats()["device"]["dma_allocs"] == before
        assert sim_before is not None and sim_before > 0
        assert _binding.sim_get("mem.total_allocs") == sim_before


def test_key_dma_wiped_on_close(ec_keys):
    """Closing the engine frees every DMA block, and none that held key material unwiped."""
    with qatpy.Engine("sim") as eng:
        eng.wrap_key(ec_keys["secp256r1"]).sign(b"k", ECDSA)
        assert eng.stats()["sim"]["mem.live_allocs"] > 0
    assert _binding.sim_get("mem.live_allocs") == 0
    assert _binding.sim_get("mem.key_freed_unwiped") == 0


def test_rsa_1024_signs_in_software_on_sim(rsa_keys):
    """An RSA size the device does not take (1024) is signed by the engine's software path."""
    with qatpy.Engine("sim") as eng:
        k = eng.wrap_key(rsa_keys[1024])
        assert k.sign(b"m", *PKCS) == rsa_keys[1024].sign(b"m", *PKCS)
        assert eng.stats()["software_fallback"]["sync_ops"] >= 1
