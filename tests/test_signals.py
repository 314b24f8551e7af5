"""Exceptions that signal handlers raise in the middle of qatpy's own code lose no completion, and close() keeps its timeout."""

from __future__ import annotations

import concurrent.futures as cf
import os
import random
import signal
import sys
import threading
import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

import qatpy

ECDSA = ec.ECDSA(hashes.SHA256())


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs POSIX signals")
@pytest.mark.parametrize("backend,seconds", [("sim", 10.0), ("software", 5.0)])
def test_sigint_storm_loses_no_future(backend, seconds, ec_keys):
    """SIGINT to the main thread every few ms while it and three other threads sign: every future resolves with a valid signature, close() keeps its timeout."""
    raw = ec_keys["secp256r1"]
    pub = raw.public_key()
    opts = {"sim": {"latency_ns": 200_000}} if backend == "sim" else {}
    eng = qatpy.Engine(backend, **opts)
    key = eng.wrap_key(raw)
    # The handler raises only while the main thread is inside a signing call
    # (armed): the test's own loop must not be cut short by the storm.
    armed = [False]
    stop = threading.Event()
    lock = threading.Lock()
    futures: list[tuple[bytes, cf.Future[bytes]]] = []
    main_signed: list[tuple[bytes, bytes]] = []
    interrupted = [0]

    def on_sigint(signum: int, frame: object) -> None:
        if armed[0]:
            raise KeyboardInterrupt

    def worker(w: int) -> None:
        n = 0
        while not stop.is_set():
            batch = []
            for _ in range(8):
                msg = b"w%d-%d" % (w, n)
                n += 1
                batch.append((msg, key.sign_future(msg, ECDSA)))
            with lock:
                futures.extend(batch)
            cf.wait([f for _, f in batch], timeout=30)

    def signaller() -> None:
        rng = random.Random(7)
        while not stop.is_set():
            os.kill(os.getpid(), signal.SIGINT)  # process-directed: Python runs the handler on the main thread
            time.sleep(rng.uniform(0.002, 0.005))

    # A KeyboardInterrupt that lands in a finalizer run by the garbage
    # collector inside an armed window cannot propagate ("Exception ignored
    # in ..."): record those here, instead of letting the storm interrupt
    # pytest's own hook for them too, and check below that they are nothing else.
    unraisable: list[tuple[type[BaseException] | None, str]] = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = lambda u: unraisable.append((u.exc_type, repr(u.object)[:200]))
    old = signal.signal(signal.SIGINT, on_sigint)
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(3)]
    threads.append(threading.Thread(target=signaller))
    try:
        for t in threads:
            t.start()
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            msg = b"main-%d" % i
            i += 1
            fut = None
            if i % 3 == 1:
                fut = key.sign_future(msg, ECDSA)
                with lock:
                    futures.append((msg, fut))
            try:
                armed[0] = True
                if i % 3 == 0:
                    sig = key.sign(msg, ECDSA)
                    armed[0] = False
                    main_signed.append((msg, sig))
                elif fut is not None:
                    fut.result(timeout=30)
                    armed[0] = False
                else:
                    msgs = [msg + b"/%d" % j for j in range(4)]
                    sigs = key.sign_many(msgs, ECDSA)
                    armed[0] = False
                    main_signed.extend(zip(msgs, sigs))
            except KeyboardInterrupt:
                armed[0] = False  # no call before this store: nothing can land in between
                interrupted[0] += 1
    finally:
        armed[0] = False
        stop.set()
        for t in threads:
            t.join(60)
        signal.signal(signal.SIGINT, old)
        sys.unraisablehook = old_hook

    assert all(t is KeyboardInterrupt for t, _ in unraisable), unraisable
    assert interrupted[0] > 100, f"the storm interrupted the main thread only {interrupted[0]} times"
    with lock:
        pending = list(futures)
    done, not_done = cf.wait([f for _, f in pending], timeout=60)
    assert not not_done, f"{len(not_done)} of {len(pending)} futures never resolved"
    for msg, fut in pending:
        pub.verify(fut.result(), msg, ECDSA)
    for msg, sig in main_signed:
        pub.verify(sig, msg, ECDSA)
    st = eng.stats()
    assert st.get("inflight", 0) == 0, st
    t0 = time.monotonic()
    eng.close(timeout=5)
    assert time.monotonic() - t0 < 5 + 2, "close() overran its timeout"
