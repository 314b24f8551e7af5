"""Futures, asyncio awaitables and batches: results arrive, in order, verified."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

import qatpy

PKCS = (padding.PKCS1v15(), hashes.SHA256())
ECDSA = ec.ECDSA(hashes.SHA256())


def test_sign_future(engine, rsa_keys):
    """sign_future returns a concurrent Future whose result equals cryptography's signature."""
    key = engine.wrap_key(rsa_keys[2048])
    futs = [key.sign_future(b"m%d" % i, *PKCS) for i in range(20)]
    assert all(isinstance(f, cf.Future) for f in futs)
    for i, f in enumerate(futs):
        assert f.result(timeout=30) == rsa_keys[2048].sign(b"m%d" % i, *PKCS)


def test_future_not_cancellable_once_submitted(engine, ec_keys):
    """A submitted operation cannot be cancelled; its future still resolves."""
    key = engine.wrap_key(ec_keys["secp256r1"])
    f = key.sign_future(b"x", ECDSA)
    assert f.cancel() is False
    ec_keys["secp256r1"].public_key().verify(f.result(timeout=30), b"x", ECDSA)


def test_sign_many_in_order(engine, ec_keys, rsa_keys):
    """sign_many returns one signature per message, in the order given."""
    ek = engine.wrap_key(ec_keys["secp256r1"])
    msgs = [b"msg-%d" % i for i in range(300)]
    for m, s in zip(msgs, ek.sign_many(msgs, ECDSA)):
        ec_keys["secp256r1"].public_key().verify(s, m, ECDSA)
    rk = engine.wrap_key(rsa_keys[2048])
    rmsgs = msgs[:40]
    assert rk.sign_many(rmsgs, *PKCS) == [rsa_keys[2048].sign(m, *PKCS) for m in rmsgs]
    assert rk.sign_many([], *PKCS) == []


def test_sign_many_future(engine, ec_keys):
    """sign_many_future resolves to the list of signatures."""
    ek = engine.wrap_key(ec_keys["secp384r1"])
    msgs = [bytes([i]) * 10 for i in range(50)]
    sigs = ek.sign_many_future(msgs, ec.ECDSA(hashes.SHA384())).result(timeout=30)
    for m, s in zip(msgs, sigs):
        ec_keys["secp384r1"].public_key().verify(s, m, ec.ECDSA(hashes.SHA384()))


@pytest.mark.asyncio
@pytest.mark.parametrize("backend", ["software", "sim"])
async def test_sign_async(backend, ec_keys, rsa_keys):
    """Awaiting sign_async from many tasks gives verified signatures without blocking the loop."""
    import qatpy

    with qatpy.Engine(backend) as eng:
        ek = eng.wrap_key(ec_keys["secp256r1"])
        rk = eng.wrap_key(rsa_keys[2048])
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        sigs = await asyncio.gather(*(ek.sign_async(b"a%d" % i, ECDSA) for i in range(100)))
        rsig = await asyncio.gather(*(rk.sign_async(b"r%d" % i, *PKCS) for i in range(30)))
        t.cancel()
        for i, s in enumerate(sigs):
            ec_keys["secp256r1"].public_key().verify(s, b"a%d" % i, ECDSA)
        assert rsig == [rsa_keys[2048].sign(b"r%d" % i, *PKCS) for i in range(30)]
        assert ticks > 10


@pytest.mark.asyncio
async def test_lone_sign_async_on_a_full_device_never_blocks_the_loop(ec_keys):
    """A lone sign_async (its engine has nothing in flight) that finds every device slot taken by another engine is
    queued for the loop's retry, not waited for in the call; both engines' signatures verify."""
    import qatpy

    pub = ec_keys["secp256r1"].public_key()
    with qatpy.Engine("sim", max_requests=2, sim={"latency_ns": 400_000_000}) as busy:
        held = [busy.wrap_key(ec_keys["secp256r1"]).sign_future(b"held%d" % i, ECDSA) for i in range(2)]
        with qatpy.Engine("sim") as eng:
            key = eng.wrap_key(ec_keys["secp256r1"])
            fut = key.sign_async(b"lone", ECDSA)
            assert not any(f.done() for f in held)  # the call did not wait for a slot
            pub.verify(await fut, b"lone", ECDSA)
        for i, f in enumerate(held):
            pub.verify(f.result(timeout=10), b"held%d" % i, ECDSA)


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["timer", "event", "busy"])
async def test_lone_sign_async_is_polled_by_its_own_loop(mode, ec_keys, rsa_keys):
    """In timer and event mode a lone sign_async is polled for by its loop (no poll-thread hop), on either of two
    instances; busy mode leaves it to the spinning poll thread; every signature verifies, RSA byte for byte."""
    import qatpy

    rsa = rsa_keys[2048]
    with qatpy.Engine("sim", poll_mode=mode, sim={"latency_ns": 60_000, "instances": 2}) as eng:
        ek, rk = eng.wrap_key(ec_keys["secp256r1"]), eng.wrap_key(rsa)
        for i in range(10):
            msg = b"lone %d" % i
            ec_keys["secp256r1"].public_key().verify(await ek.sign_async(msg, ECDSA), msg, ECDSA)
            assert await rk.sign_async(msg, *PKCS) == rsa.sign(msg, *PKCS)
        dev = eng.stats()["device"]
        assert dev["completed_ok"] == 20 and dev["num_instances"] == 2
        assert dev["driven"] == (0 if mode == "busy" else 20)
        assert all(n > 0 for n in eng.stats()["per_instance_completed"].values())  # the loop polled both


@pytest.mark.asyncio
async def test_a_slow_driven_answer_in_timer_mode_is_left_to_the_poll_thread(ec_keys):
    """In timer mode a lone sign_async whose answer takes milliseconds is looked for by its loop a bounded number of
    times, then handed to the poll thread; every signature verifies."""
    import qatpy

    pub = ec_keys["secp256r1"].public_key()
    with qatpy.Engine("sim", poll_mode="timer", sim={"latency_ns": 3_000_000}) as eng:
        key = eng.wrap_key(ec_keys["secp256r1"])
        for i in range(5):
            msg = b"slow %d" % i
            pub.verify(await asyncio.wait_for(key.sign_async(msg, ECDSA), 30), msg, ECDSA)
        dev = eng.stats()["device"]
        assert dev["driven"] == 5
        # Each answer came 3 ms after its submit, past the loop's 8 looks at 20 us (unless the loop itself was kept
        # from looking that long, which can only lower the count).
        assert 1 <= dev["drive_handovers"] <= 5


def test_a_driven_request_is_answered_when_its_loop_stops_polling(ec_keys):
    """A lone sign_async whose loop stops running before the answer still completes on the device (the poll threads
    probe it) and resolves when the loop runs again."""
    import qatpy

    loop = asyncio.new_event_loop()
    try:
        with qatpy.Engine("sim", poll_mode="event", sim={"latency_ns": 2_000_000}) as eng:
            key = eng.wrap_key(ec_keys["secp256r1"])

            async def start() -> asyncio.Future[bytes]:
                return key.sign_async(b"left", ECDSA)

            fut = loop.run_until_complete(start())  # the loop stops; its request is on the device
            assert eng.stats()["device"]["driven"] == 1
            end = time.monotonic() + 10
            while eng.stats()["device"]["completed"] < 1 and time.monotonic() < end:
                time.sleep(0.005)
            assert eng.stats()["device"]["completed"] == 1  # answered with no loop polling for it
            sig = loop.run_until_complete(asyncio.wait_for(fut, 10))
            ec_keys["secp256r1"].public_key().verify(sig, b"left", ECDSA)
    finally:
        loop.close()


@pytest.mark.parametrize("mode", ["timer", "event"])
def test_a_driven_request_whose_answer_is_lost_meets_its_deadline(mode, ec_keys):
    """A lone sign_async whose answer never comes fails with DeadlineExceededError (fallback='never') even while its
    loop waits and nothing else completes; a later one succeeds."""
    import qatpy

    pub = ec_keys["secp256r1"].public_key()
    with qatpy.Engine(
        "sim", poll_mode=mode, fallback="never", deadline=0.2, sim={"fault.lost.next": 1, "heartbeat": 0}
    ) as eng:
        key = eng.wrap_key(ec_keys["secp256r1"])

        async def two() -> bytes:
            with pytest.raises(qatpy.DeadlineExceededError):
                await asyncio.wait_for(key.sign_async(b"lost", ECDSA), 30)
            return await asyncio.wait_for(key.sign_async(b"next", ECDSA), 30)

        pub.verify(asyncio.run(two()), b"next", ECDSA)
        dev = eng.stats()["device"]
        assert dev["driven"] >= 1 and dev["timeouts"] == 1


def test_an_idle_instance_s_old_deadline_does_not_make_the_completion_thread_spin(ec_keys):
    """While a loop's request is in flight on one instance, a deadline long past on another, idle instance does not
    turn the completion thread's wait into a busy loop (the device is polled a few times per request, not thousands)."""
    import qatpy

    pub = ec_keys["secp256r1"].public_key()
    sim = {"latency_ns": 40_000_000, "instances": 2}
    with qatpy.Engine("sim", poll_mode="event", deadline=0.1, sim=sim) as eng:
        key = eng.wrap_key(ec_keys["secp256r1"])

        async def one(msg: bytes) -> None:
            pub.verify(await asyncio.wait_for(key.sign_async(msg, ECDSA), 30), msg, ECDSA)

        polls = []
        for i in range(4):  # requests alternate between the instances
            asyncio.run(one(b"d%d" % i))
            time.sleep(0.15)  # past the deadline the idle instance last had
            before = eng.stats()["device"]["polls"]
            asyncio.run(one(b"e%d" % i))
            polls.append(eng.stats()["device"]["polls"] - before)
        assert eng.stats()["device"]["driven"] == 8
        assert max(polls) < 100, polls


@pytest.mark.parametrize("mode", ["timer", "event"])
def test_loop_driving_and_threaded_work_share_a_device(mode, ec_keys):
    """A loop signing one request at a time and threads streaming sign_future on one device all complete and verify:
    a driven request becomes the poll threads' work once anything else is in flight."""
    import qatpy

    pub = ec_keys["secp256r1"].public_key()
    with qatpy.Engine("sim", poll_mode=mode, sim={"latency_ns": 100_000}) as eng:
        key = eng.wrap_key(ec_keys["secp256r1"])
        bad: list[bytes] = []

        def stream(t: int) -> None:
            for i in range(150):
                msg = b"t%d-%d" % (t, i)
                futs = [key.sign_future(msg + b"/%d" % j, ECDSA) for j in range(3)]
                for j, f in enumerate(futs):
                    try:
                        pub.verify(f.result(timeout=30), msg + b"/%d" % j, ECDSA)
                    except Exception:
                        bad.append(msg)

        async def lone() -> int:
            for i in range(300):
                msg = b"loop-%d" % i
                pub.verify(await asyncio.wait_for(key.sign_async(msg, ECDSA), 30), msg, ECDSA)
            return 300

        threads = [threading.Thread(target=stream, args=(t,)) for t in range(2)]
        for th in threads:
            th.start()
        assert asyncio.run(lone()) == 300
        for th in threads:
            th.join(60)
        assert not bad and not any(th.is_alive() for th in threads)
        dev = eng.stats()["device"]
        assert dev["completed_ok"] == dev["submitted"] == 300 + 2 * 150 * 3


@pytest.mark.asyncio
@pytest.mark.parametrize("backend", ["software", "sim"])
async def test_sign_many_async(backend, ec_keys):
    """sign_many_async resolves to verified signatures in order."""
    import qatpy

    with qatpy.Engine(backend) as eng:
        ek = eng.wrap_key(ec_keys["secp521r1"])
        msgs = [b"b%d" % i for i in range(64)]
        sigs = await ek.sign_many_async(msgs, ec.ECDSA(hashes.SHA512()))
        for m, s in zip(msgs, sigs):
            ec_keys["secp521r1"].public_key().verify(s, m, ec.ECDSA(hashes.SHA512()))


@pytest.mark.asyncio
@pytest.mark.parametrize("backend", ["software", "sim"])
async def test_cancelled_await_does_not_break_engine(backend, ec_keys):
    """Cancelling an awaiting task drops its result; later operations still work."""
    import qatpy

    with qatpy.Engine(backend) as eng:
        ek = eng.wrap_key(ec_keys["secp256r1"])
        task = asyncio.ensure_future(ek.sign_many_async([b"c"] * 200, ECDSA))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        sig = await ek.sign_async(b"after", ECDSA)
        ec_keys["secp256r1"].public_key().verify(sig, b"after", ECDSA)


def test_threads_share_an_engine(engine, rsa_keys, ec_keys):
    """Many threads calling blocking sign() at once all get correct signatures."""
    rk = engine.wrap_key(rsa_keys[2048])
    ek = engine.wrap_key(ec_keys["secp256r1"])

    def work(i: int) -> None:
        assert rk.sign(b"t%d" % i, *PKCS) == rsa_keys[2048].sign(b"t%d" % i, *PKCS)
        ec_keys["secp256r1"].public_key().verify(ek.sign(b"t%d" % i, ECDSA), b"t%d" % i, ECDSA)

    with cf.ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(64)))


def test_future_protocol(engine, ec_keys):
    """sign_future's futures keep the whole Future protocol: callbacks, cf.wait, as_completed, wrap_future, repr."""
    key = engine.wrap_key(ec_keys["secp256r1"])
    pub = ec_keys["secp256r1"].public_key()
    early: list[cf.Future[bytes]] = []
    futs = [key.sign_future(b"p%d" % i, ECDSA) for i in range(200)]
    for f in futs[:100]:
        f.add_done_callback(early.append)  # most are registered before their result lands
    done, not_done = cf.wait(futs, timeout=30)
    assert not not_done and len(done) == 200
    assert sorted(map(id, early)) == sorted(map(id, futs[:100]))
    late: list[cf.Future[bytes]] = []
    futs[150].add_done_callback(late.append)  # after completion: runs at once
    assert late == [futs[150]]
    assert len(list(cf.as_completed(futs, timeout=30))) == 200
    for i, f in enumerate(futs):
        assert f.done() and not f.running() and not f.cancelled() and f.exception() is None
        pub.verify(f.result(timeout=0), b"p%d" % i, ECDSA)
    assert "state=finished returned bytes" in repr(futs[0])

    async def through_asyncio() -> bytes:
        return await asyncio.wrap_future(key.sign_future(b"w", ECDSA))

    pub.verify(asyncio.run(through_asyncio()), b"w", ECDSA)


def test_future_waiters_are_never_lost(engine, ec_keys):
    """Threads blocked in cf.wait, result(timeout) and callbacks all wake while results land concurrently."""
    key = engine.wrap_key(ec_keys["secp256r1"])
    pub = ec_keys["secp256r1"].public_key()
    rounds, per = 40, 25
    seen: list[int] = []

    def waiter(style: int, futs: list[cf.Future[bytes]]) -> int:
        if style == 0:
            _, left = cf.wait(futs, timeout=30)
            assert not left
        elif style == 1:
            for f in futs:
                f.result(timeout=30)
        else:
            ev = threading.Event()
            count = [0]

            def cb(_f: cf.Future[bytes]) -> None:
                count[0] += 1
                if count[0] == len(futs):
                    ev.set()

            for f in futs:
                f.add_done_callback(cb)
            assert ev.wait(30)
        return len(futs)

    with cf.ThreadPoolExecutor(6) as pool:
        for r in range(rounds):
            futs = [key.sign_future(b"r%d-%d" % (r, i), ECDSA) for i in range(per)]
            # Waiters start while the operations are in flight (the race under test).
            seen += [w.result(timeout=60) for w in [pool.submit(waiter, s, futs) for s in range(3)]]
            pub.verify(futs[-1].result(timeout=0), b"r%d-%d" % (r, per - 1), ECDSA)
    assert seen == [per] * (3 * rounds)


def test_futures_with_only_callbacks_all_resolve(engine, ec_keys):
    """Futures nobody calls result() on still resolve: every callback fires with a valid signature."""
    key = engine.wrap_key(ec_keys["secp256r1"])
    pub = ec_keys["secp256r1"].public_key()
    got: dict[int, bytes] = {}
    all_in = threading.Event()
    n = 2000

    def cb(i: int) -> object:
        def done(f: cf.Future[bytes]) -> None:
            got[i] = f.result(timeout=0)
            if len(got) == n:
                all_in.set()

        return done

    for i in range(n):
        key.sign_future(b"c%d" % i, ECDSA).add_done_callback(cb(i))
    assert all_in.wait(30), f"{n - len(got)} callbacks never ran"
    for i in range(0, n, 97):
        pub.verify(got[i], b"c%d" % i, ECDSA)


def test_lock_free_settle_wakes_every_kind_of_waiter():
    """settle() racing a blocked result(), cf.wait and add_done_callback never loses a wake-up (1,800 races)."""
    from qatpy._completion import DeviceFuture, settle

    start = threading.Barrier(2)
    for i in range(1800):
        fut = DeviceFuture()  # no device waiter: waits take the standard Future path
        style = i % 3
        # Settle at once (racing the waiter's set-up) or once it is surely blocked.
        delay = (0.0, 0.0001, 0.002)[(i // 3) % 3]
        box: list[object] = []

        def wait(fut: DeviceFuture = fut, style: int = style, box: list[object] = box) -> None:
            start.wait()
            if style == 0:
                box.append(cf.Future.result(fut, timeout=10))
            elif style == 1:
                done, _ = cf.wait([fut], timeout=10)
                box.append(fut.result(timeout=0) if done else None)
            else:
                ev = threading.Event()
                fut.add_done_callback(lambda f: (box.append(f.result(timeout=0)), ev.set()))
                ev.wait(10)

        t = threading.Thread(target=wait)
        t.start()
        start.wait()
        if delay:
            time.sleep(delay)
        settle(fut, i, None)
        t.join(15)
        assert box == [i], (i, style, box)
    fut = DeviceFuture()
    settle(fut, b"first", None)
    settle(fut, None, RuntimeError("a late second answer"))  # ignored: settled once
    assert fut.result(timeout=0) == b"first"


@pytest.mark.parametrize("style", ["wait_all", "as_completed"])
def test_settle_never_races_cf_wait(style):
    """settle() racing cf.wait / as_completed on another thread never miscounts (no early return, no KeyError)."""
    import random
    import sys

    from qatpy._completion import DeviceFuture, settle

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as CPython allows
    go, box, failures = threading.Event(), [], []

    def settler() -> None:
        while True:
            go.wait()
            go.clear()
            if box[0] is None:
                return
            for _ in range(random.randrange(0, 40)):
                pass
            settle(box[0], 1, None)

    t = threading.Thread(target=settler)
    t.start()
    try:
        for i in range(2400 if style == "wait_all" else 20000):
            f1, f2 = DeviceFuture(), DeviceFuture()
            box[:] = [f1]
            go.set()
            try:
                if style == "wait_all" and i % 8:
                    t0 = time.monotonic()
                    done, _ = cf.wait([f1], timeout=0.5)  # f1 is being settled: returns at once
                    if done != {f1} or time.monotonic() - t0 > 0.25:
                        failures.append((i, "missed the wake-up"))
                elif style == "wait_all":
                    t0 = time.monotonic()
                    _, not_done = cf.wait([f1, f2], timeout=0.005)  # f2 is never settled here
                    if time.monotonic() - t0 < 0.004 or not_done != {f2}:
                        failures.append((i, "returned early"))
                else:
                    it = cf.as_completed([f1, f2], timeout=5)
                    first = next(it)
                    settle(f2, 2, None)
                    rest = list(it)
                    if {first, *rest} != {f1, f2} or len(rest) != 1:
                        failures.append((i, "yielded wrong futures"))
            except Exception as exc:
                failures.append((i, repr(exc)))
            while not f1.done():
                time.sleep(0)
    finally:
        box[:] = [None]
        go.set()
        t.join()
        sys.setswitchinterval(old)
    assert failures == []


def test_callbacks_never_run_inside_a_caller(ec_keys):
    """Callbacks of futures that a result() or submit drains resolve run on qatpy's threads, not the caller's.

    The one exception is documented `Future` behaviour: a callback added to a
    future that is already done runs at once, inside add_done_callback.  Which
    futures finish before their callback is added depends on scheduling, so
    each callback records whether it ran inside add_done_callback; every
    other run must be off this thread.  Rounds repeat (a bounded number of
    times) until some callbacks were added to futures still pending, so the
    drain path is exercised however loaded the machine is.
    """
    me = threading.get_ident()
    adding = threading.local()
    pub = ec_keys["secp256r1"].public_key()
    runs: list[tuple[int, bool]] = []  # (thread, ran inside add_done_callback)
    lock = threading.Lock()

    def record(_f: cf.Future[bytes]) -> None:
        with lock:
            runs.append((threading.get_ident(), getattr(adding, "active", False)))

    deferred = 0
    with qatpy.Engine("sim", sim={"latency_ns": 10_000_000}) as eng:
        key = eng.wrap_key(ec_keys["secp256r1"])
        for _round in range(20):
            runs.clear()
            futs = []
            for i in range(64):
                f = key.sign_future(b"t%d" % i, ECDSA)
                adding.active = True
                try:
                    f.add_done_callback(record)
                finally:
                    adding.active = False
                futs.append(f)
            futs[-1].result(timeout=30)  # this thread drains the device here
            cf.wait(futs, timeout=30)
            deadline = time.monotonic() + 10
            while len(runs) < 64 and time.monotonic() < deadline:
                time.sleep(0.01)
            for i, f in enumerate(futs):
                pub.verify(f.result(timeout=0), b"t%d" % i, ECDSA)
            with lock:
                assert len(runs) == 64
                assert [t for t, inline in runs if t == me and not inline] == []
                deferred += sum(1 for _, inline in runs if not inline)
            if deferred >= 32:
                break
    assert deferred >= 32, "no round added callbacks to pending futures"


def test_callbacks_that_submit_again_do_not_recurse(ec_keys):
    """A pipeline whose callbacks submit the next operation runs 20,000 operations with a shallow stack."""
    import traceback

    total, depth = 20_000, 512
    lock, all_done = threading.Lock(), threading.Event()
    state = {"started": 0, "finished": 0, "max_stack": 0}
    errors: list[BaseException] = []
    pub = ec_keys["secp256r1"].public_key()
    with qatpy.Engine("sim") as eng:
        key = eng.wrap_key(ec_keys["secp256r1"])

        def start() -> None:
            with lock:
                if state["started"] >= total:
                    return
                state["started"] += 1
            key.sign_future(b"c", ECDSA).add_done_callback(on_done)

        def on_done(f: cf.Future[bytes]) -> None:
            state["max_stack"] = max(state["max_stack"], len(traceback.extract_stack()))
            try:
                pub.verify(f.result(timeout=0), b"c", ECDSA)
            except BaseException as exc:
                errors.append(exc)
            with lock:
                state["finished"] += 1
                if state["finished"] == total:
                    all_done.set()
            start()

        for _ in range(depth):
            start()
        assert all_done.wait(60), state
    assert errors == [] and state["finished"] == total
    assert state["max_stack"] < 60, state


def test_submitting_under_a_lock_the_callbacks_take(ec_keys):
    """Submitting while holding a lock that every done-callback takes does not deadlock."""
    results: dict[int, bytes] = {}
    lock = threading.Lock()
    with qatpy.Engine("sim") as eng:
        key = eng.wrap_key(ec_keys["secp256r1"])

        def cb(f: cf.Future[bytes], i: int) -> None:
            with lock:
                results[i] = f.result(timeout=0)

        def run() -> None:
            futs: list[cf.Future[bytes]] = []
            for i in range(3000):
                with lock:  # e.g. a request table guarded by one lock
                    futs.append(key.sign_future(b"%d" % i, ECDSA))
                    if i % 500 == 499:
                        futs[i - 250].result(timeout=30)  # a drain on this thread, lock held
                # (A callback added to a finished future runs at once, in this
                # thread, as with any Future: so it is added outside the lock.)
                futs[i].add_done_callback(lambda f, i=i: cb(f, i))

        t = threading.Thread(target=run, daemon=True)
        t.start()
        t.join(60)
        assert not t.is_alive(), "deadlocked"
        deadline = time.monotonic() + 30
        while len(results) < 3000 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert len(results) == 3000
    for i in range(0, 3000, 101):
        ec_keys["secp256r1"].public_key().verify(results[i], b"%d" % i, ECDSA)


def test_callbacks_deferred_after_the_callback_thread_stopped_still_run():
    """A drain that defers callbacks after the device began closing runs them itself rather than lose them."""
    from qatpy._completion import DeviceFuture, settle_many

    with qatpy.Engine("sim") as eng:
        rt = eng._ops.primary._delivery
        rt.defer([])  # the callback thread exists...
        rt.stop_callbacks(5.0)  # ...and has been told to stop, as the last close() does
        fut = DeviceFuture()
        ran: list[object] = []
        fut.add_done_callback(ran.append)
        settle_many([(fut, b"late", None)], rt.defer)
        assert ran == [fut] and fut.result(timeout=0) == b"late"
