"""Fault soak: many submitters at once while the simulated device injects faults.

Threads (futures and batches) and an asyncio loop submit at the same time
against ``Engine("sim", verify_ecdsa=True)`` with faults fired by
probability (every kind, ``ecdsa_bitflip`` included: ECDSA results are
checked, as RSA ones are by default).  The report
counts operations, faults injected by kind, and the things that must be
zero: lost results, duplicated results, wrong signatures returned, DMA
memory left allocated, key material freed unwiped.  Used by
tests/test_soak.py (short) and ``python -m qatpy soak`` (long).

`run_recovery_soak` is the same harness with lost answers only, on one
instance with few slots: it shows that recovery (csrc/shim/recover.c)
keeps the share of operations that wait for a deadline near the share of
answers lost (``python -m qatpy soak --recovery``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import functools
import resource
import threading
import time
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from . import _binding, _simsession
from ._engine import Engine
from ._errors import QatpyError
from ._simfaults import FAULT_KINDS

#: Every fault kind is one the library must absorb without the caller noticing.


def run_soak(
    ops: int = 20_000,
    *,
    threads: int = 3,
    ppm: int = 20_000,
    batch: int = 64,
    rsa_share: float = 0.1,
    seed: int = 1,
    extra_faults: dict[str, int] | None = None,
    engine_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run `ops` signatures under faults; return the report (see module doc)."""
    knobs = {f"fault.{k}.ppm": ppm for k in FAULT_KINDS}
    knobs["fault.restart.ppm"] = max(1, ppm // 200)  # resets are rare, and each lasts restart_ms
    # Each lost answer costs a deadline wait and keeps its ring slot on the
    # device for good (as a lost response would), so an instance whose ring
    # fills with them refuses work until reset: keep them rare.
    knobs["fault.lost.ppm"] = max(1, ppm // 1000)
    knobs.update({"seed": seed, "instances": 2, "restart_ms": 5})
    knobs.update(extra_faults or {})
    ek = ec.generate_private_key(ec.SECP256R1())
    rk = rsa.generate_private_key(65537, 2048)
    ecdsa = ec.ECDSA(hashes.SHA256())
    pkcs = (padding.PKCS1v15(), hashes.SHA256())
    lock = threading.Lock()
    report: dict[str, Any] = {
        "ops": 0,
        "ok": 0,
        "typed_errors": 0,
        "lost": 0,
        "duplicated": 0,
        "wrong_signatures": 0,
        "errors_seen": {},
    }
    rss_mid: list[int] = []

    def check(msg: bytes, sig: Any, is_rsa: bool) -> None:
        with lock:
            if isinstance(sig, BaseException):
                if isinstance(sig, QatpyError):
                    report["typed_errors"] += 1
                name = type(sig).__name__
                report["errors_seen"][name] = report["errors_seen"].get(name, 0) + 1
                return
        try:
            if is_rsa:
                rk.public_key().verify(sig, msg, *pkcs)
            else:
                ek.public_key().verify(sig, msg, ecdsa)
            ok = True
        except InvalidSignature:
            ok = False
        with lock:
            report["ok" if ok else "wrong_signatures"] += 1

    t0 = time.monotonic()
    # Lost answers settle quickly; ECDSA results are checked (ecdsa_bitflip
    # is among the faults, and a wrong signature must never be delivered).
    options: dict[str, Any] = {"deadline": 0.5, "verify_ecdsa": True}
    options.update(engine_options or {})
    with Engine("sim", sim=knobs, **options) as eng:
        qe, qr = eng.wrap_key(ek), eng.wrap_key(rk)
        per_worker = ops // (threads + 1)

        def thread_worker(w: int) -> None:
            n = 0
            while n < per_worker:
                is_rsa = (n // batch) % max(1, round(1 / rsa_share)) == 0 if rsa_share else False
                msgs = [b"t%d-%d" % (w, n + i) for i in range(batch)]
                if (n // batch) % 2:
                    futs = [qr.sign_future(m, *pkcs) if is_rsa else qe.sign_future(m, ecdsa) for m in msgs]
                    # One counter per future, checked once the batch is done:
                    # exactly-once without state that grows with the run.
                    counts = [[0] for _ in futs]
                    for f, c in zip(futs, counts):
                        f.add_done_callback(functools.partial(_count_resolution, c))
                    done, not_done = cf.wait(futs, timeout=60)
                    time.sleep(0)  # let done-callbacks of the last futures finish
                    with lock:
                        report["lost"] += len(not_done)
                        report["duplicated"] += sum(1 for c in counts if c[0] > 1)
                    for m, f in zip(msgs, futs):
                        if f.done():
                            check(m, f.exception() or f.result(), is_rsa)
                else:
                    k = qr if is_rsa else qe
                    args = pkcs if is_rsa else (ecdsa,)
                    fut = k.sign_many_future(msgs, *args, return_exceptions=True)
                    try:
                        res = fut.result(timeout=60)
                    except cf.TimeoutError:
                        with lock:
                            report["lost"] += len(msgs)
                        res = []
                    for m, s in zip(msgs, res):
                        check(m, s, is_rsa)
                n += batch
                with lock:
                    report["ops"] += batch
                    if not rss_mid and report["ops"] >= ops // 5:
                        rss_mid.append(_rss_kb())  # after warm-up: pools, caches, replay

        def _count_resolution(counter: list[int], _fut: object) -> None:
            with lock:
                counter[0] += 1

        async def async_worker() -> None:
            loop = asyncio.get_running_loop()
            errors: list[Any] = []
            loop.set_exception_handler(lambda _l, ctx: errors.append(ctx))
            n = 0
            while n < per_worker:
                msgs = [b"a%d" % (n + i) for i in range(batch)]
                res = await asyncio.wait_for(
                    asyncio.gather(*(qe.sign_async(m, ecdsa) for m in msgs), return_exceptions=True), 60
                )
                for m, s in zip(msgs, res):
                    check(m, s, False)
                n += batch
                with lock:
                    report["ops"] += batch
            with lock:
                report["duplicated"] += sum(1 for c in errors if "InvalidStateError" in repr(c.get("exception")))

        ths = [threading.Thread(target=thread_worker, args=(w,)) for w in range(threads)]
        for t in ths:
            t.start()
        try:
            asyncio.run(async_worker())
        finally:
            # Submitters finish their share before the engine closes, even
            # when the asyncio side failed.
            for t in ths:
                t.join()
        st = eng.stats()
        report["fallbacks"] = st["fallbacks"]
        report["faults_injected"] = {
            k: _binding.sim_get(f"faults.{k}")
            for k in FAULT_KINDS + tuple(k.split(".")[1] for k in (extra_faults or {}) if k.startswith("fault."))
        }
        report["device"] = {k: st["device"][k] for k in _DEVICE_COUNTERS}
        report["deadline_waits"] = st["fallbacks"].get("deadline", 0)
    totals = _simsession.totals()
    report["leaked_dma_allocs"] = totals["mem.live_allocs"]
    report["key_freed_unwiped"] = totals["mem.key_freed_unwiped"]
    report["refused_non_dma"] = totals["refused.dma"]
    report["seconds"] = round(time.monotonic() - t0, 2)
    report["rss_growth_after_warmup_kb"] = _rss_kb() - (rss_mid[0] if rss_mid else _rss_kb())
    return report


def run_recovery_soak(
    ops: int = 200_000,
    *,
    lost_ppm: int = 1000,
    max_inflight: int = 8,
    deadline: float = 0.25,
    threads: int = 3,
    seed: int = 1,
) -> dict[str, Any]:
    """`ops` signatures on one instance with `max_inflight` slots while the
    device loses answers at `lost_ppm` and no other fault fires.

    Without recovery, `max_inflight` lost answers would hold every slot and
    every later operation would wait out its deadline; the report's
    ``deadline_fraction`` (operations that waited for a deadline / ops) shows
    it stays near the loss rate instead.  ``device`` holds the shim's
    counters: heartbeat checks, resets, slots given back, operations failed
    at once while the only instance restarted."""
    no_faults = {f"fault.{k}.ppm": 0 for k in FAULT_KINDS}
    r = run_soak(
        ops,
        threads=threads,
        ppm=0,
        rsa_share=0.02,
        seed=seed,
        extra_faults={**no_faults, "fault.lost.ppm": lost_ppm, "instances": 1},
        engine_options={"max_inflight": max_inflight, "deadline": deadline},
    )
    r["deadline_fraction"] = r["deadline_waits"] / max(1, r["ops"])
    r["lost_answers"] = r["faults_injected"]["lost"]
    # Deadlines met on the device (zombies: answered late, given back by a
    # reset, or still held at the end) and in the queue (the rest: waits
    # behind a device slowed down, e.g. by a loaded host).
    dev = r["device"]
    r["deadline_waits_on_device"] = dev["late_answers"] + dev["inflight_now"]
    r["deadline_waits_in_queue"] = r["deadline_waits"] - r["deadline_waits_on_device"]
    return r


#: The device counters a soak reports.
_DEVICE_COUNTERS = (
    "submitted",
    "completed",
    "ring_retries",
    "ecdsa_retries",
    "timeouts",
    "late_answers",
    "inflight_now",
    "heartbeat_checks",
    "heartbeat_failures",
    "instance_restarts",
    "recovered_slots",
    "restart_requeued",
    "fast_fails",
)


def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (resource.getpagesize() // 1024)
