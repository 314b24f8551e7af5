"""Lifecycle races found in review: each one resolves every future once, raises only typed errors, never hangs."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import sys
import threading
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

import qatpy

ECDSA = ec.ECDSA(hashes.SHA256())


def test_poll_modes_cannot_mix(ec_keys):
    """A manual-poll engine cannot join a device polled by threads (or the reverse): ValueError, nothing lost."""
    with qatpy.Engine("sim", poll_mode="timer") as eng:
        with pytest.raises(ValueError, match="poll_mode"):
            qatpy.Engine("sim", poll_mode="manual")
        key = eng.wrap_key(ec_keys["secp256r1"])
        ec_keys["secp256r1"].public_key().verify(key.sign(b"m", ECDSA), b"m", ECDSA)


def test_result_timeout_is_honoured(ec_keys):
    """DeviceFuture.result(timeout) gives up after about `timeout`, not twice that."""
    with qatpy.Engine("sim", sim={"latency_ns": 3_000_000_000}, deadline=None) as eng:
        fut = eng.wrap_key(ec_keys["secp256r1"]).sign_future(b"slow", ECDSA)
        t0 = time.monotonic()
        with pytest.raises(cf.TimeoutError):
            fut.result(timeout=0.3)
        assert time.monotonic() - t0 < 0.55
        eng.close(timeout=0)
        assert isinstance(fut.exception(timeout=5), qatpy.EngineClosedError)


@pytest.mark.parametrize("backend", ["software", "sim"])
def test_close_from_a_done_callback(backend, ec_keys):
    """close() called inside a future's done-callback (a worker or completion thread) completes cleanly."""
    eng = qatpy.Engine(backend)
    key = eng.wrap_key(ec_keys["secp256r1"])
    errors: list[BaseException] = []
    closed = threading.Event()

    def cb(_f: cf.Future) -> None:
        try:
            eng.close(timeout=1)
        except BaseException as exc:
            errors.append(exc)
        closed.set()

    fut = key.sign_future(b"x", ECDSA)
    fut.add_done_callback(cb)
    assert closed.wait(10)
    assert errors == [] and eng.closed
    ec_keys["secp256r1"].public_key().verify(fut.result(), b"x", ECDSA)
    with qatpy.Engine(backend) as again:  # the device is free for a new engine
        again.wrap_key(ec_keys["secp256r1"]).sign(b"y", ECDSA)


def test_event_loop_not_blocked_when_slots_are_full(ec_keys):
    """With every request slot busy, sign_async work waits off the loop: the loop keeps ticking."""

    async def main() -> float:
        with qatpy.Engine("sim", max_requests=4, sim={"latency_ns": 50_000_000}) as eng:
            key = eng.wrap_key(ec_keys["secp256r1"])
            worst = 0.0
            stop = False

            async def ticker() -> None:
                nonlocal worst
                last = time.monotonic()
                while not stop:
                    await asyncio.sleep(0.005)
                    now = time.monotonic()
                    worst = max(worst, now - last - 0.005)
                    last = now

            t = asyncio.create_task(ticker())
            sigs = await asyncio.gather(*(key.sign_async(b"a%d" % i, ECDSA) for i in range(24)))
            stop = True
            await t
            for i, s in enumerate(sigs):
                ec_keys["secp256r1"].public_key().verify(s, b"a%d" % i, ECDSA)
            return worst

    assert asyncio.run(main()) < 0.1


def test_close_while_threads_submit(ec_keys, caplog):
    """Closing an engine while threads submit through full slots gives them only EngineClosedError, device freed."""
    bad: list[str] = []
    for _ in range(40):  # the close lands between a submitter's checks about once in 60 rounds
        eng = qatpy.Engine("sim", max_requests=4, sim={"latency_ns": 1_000_000, "fault.cb_fail.ppm": 200_000})
        key = eng.wrap_key(ec_keys["secp256r1"])

        def work(key: qatpy.QatECPrivateKey = key) -> None:
            try:
                while True:
                    key.sign(b"x", ECDSA)
                    key.sign_many([b"y"] * 6, ECDSA)
            except qatpy.EngineClosedError:
                return
            except BaseException as exc:  # recorded for the assertion
                bad.append(repr(exc))

        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.03)
        eng.close(timeout=0)
        for t in threads:
            t.join(10)
            assert not t.is_alive()
    assert bad == []
    assert not [r for r in caplog.records if "left allocated" in r.getMessage()]


def test_concurrent_first_use_prepares_one_device_key(ec_keys):
    """Many threads signing with a fresh key at once create one device copy of it, not one each."""
    with qatpy.Engine("sim") as eng:
        before = eng.stats()["device"]["dma_live"]
        key = eng.wrap_key(ec_keys["secp384r1"])
        barrier = threading.Barrier(8)

        def go() -> None:
            barrier.wait()
            key.sign(b"k", ec.ECDSA(hashes.SHA384()))

        threads = [threading.Thread(target=go) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert eng.stats()["device"]["dma_live"] - before == 1


def test_batch_results_settle_once(rsa_keys):
    """A sign_many cut short by close keeps the results it was resolved with (each index settled once)."""
    from cryptography.hazmat.primitives.asymmetric import padding

    eng = qatpy.Engine("sim", sim={"fault.cb_fail.next": 16, "latency_ns": 20_000_000})
    key = eng.wrap_key(rsa_keys[2048])
    fut = key.sign_many_future(
        [b"b%d" % i for i in range(16)], padding.PKCS1v15(), hashes.SHA256(), return_exceptions=True
    )
    eng.close(timeout=0)
    first = [type(r).__name__ if isinstance(r, BaseException) else "sig" for r in fut.result(timeout=10)]
    time.sleep(0.5)
    again = [type(r).__name__ if isinstance(r, BaseException) else "sig" for r in fut.result()]
    assert first == again and len(first) == 16


@pytest.mark.parametrize("where", ["_submit_one", "_submit", "sign"])
def test_interrupt_at_a_submit_s_first_step_leaves_nothing_owed(ec_keys, monkeypatch, caplog, where):
    """A KeyboardInterrupt right after a submit registered undoes it: no in-flight count, close frees the device."""
    from qatpy import _qat

    real = _qat.QatBackend.__dict__.get("_device")
    armed = [True]

    def interrupting(self: Any) -> Any:
        if armed[0] and sys._getframe(1).f_code.co_name == where:
            armed[0] = False
            raise KeyboardInterrupt  # what a SIGINT handler raises at this bytecode
        return self.__dict__["_device"]

    assert real is None  # _device is a plain instance attribute the property shadows
    eng = qatpy.Engine("sim")
    key = eng.wrap_key(ec_keys["secp256r1"])
    ec_keys["secp256r1"].public_key().verify(key.sign_future(b"warm", ECDSA).result(), b"warm", ECDSA)
    monkeypatch.setattr(_qat.QatBackend, "_device", property(interrupting), raising=False)
    with pytest.raises(KeyboardInterrupt):
        if where == "_submit_one":
            key.sign_future(b"x", ECDSA)
        elif where == "_submit":
            key.sign_many([b"x", b"y"], ECDSA)
        else:
            key.sign(b"x", ECDSA)
    assert not armed[0]
    backend = eng._ops.primary
    assert (backend._inflight, backend._pending.inside) == (0, {})
    eng.close(timeout=3)
    assert eng.stats()["inflight"] == 0
    assert not [r for r in caplog.records if "left allocated" in r.getMessage()]


def test_a_loop_arriving_while_the_device_shuts_down_watches_nothing(ec_keys):
    """A loop's first sign_async during the last close's shutdown adds no reader on the eventfd about to be freed."""
    eng = qatpy.Engine("sim")
    backend = eng._ops.primary
    delivery, device = backend._delivery, backend._session.device
    real_shutdown = device.shutdown
    watched: list[bool] = []

    async def arrive() -> None:
        loop = asyncio.get_running_loop()
        delivery.watch_loop(loop)  # what the loop's first sign_async does
        watched.append(loop in delivery.loops)

    def shutdown_with_a_loop_arriving(timeout_ns: int) -> None:
        asyncio.run(arrive())  # after the loops were unwatched, before the device is gone
        real_shutdown(timeout_ns)

    device.shutdown = shutdown_with_a_loop_arriving  # type: ignore[method-assign]
    eng.close()
    assert watched == [False]


def test_a_stopped_loop_keeps_no_reader_on_the_freed_eventfd(ec_keys):
    """Closing the last engine takes the eventfd's and the drive fd's readers off a loop that is not running."""
    loop = asyncio.new_event_loop()
    try:
        eng = qatpy.Engine("sim")
        key = eng.wrap_key(ec_keys["secp256r1"])

        async def one() -> bytes:
            return await key.sign_async(b"m", ECDSA)

        sig = loop.run_until_complete(one())
        ec_keys["secp256r1"].public_key().verify(sig, b"m", ECDSA)
        delivery = eng._ops.primary._delivery
        fds = (delivery._event_fd, delivery._drive_fd)
        eng.close()
        for fd in fds:  # their numbers are reused once the device is gone
            assert loop.remove_reader(fd) is False  # no reader was left on it
    finally:
        loop.close()


def test_an_interrupt_inside_a_submit_s_exit_does_not_keep_the_device(ec_keys, monkeypatch, caplog):
    """A KeyboardInterrupt landing in a submit's exit (after it registered) cannot keep close from freeing the device."""
    from qatpy import _qat

    real_left = _qat.QatBackend._left_locked
    armed = [True]

    def interrupted_left(self: Any) -> None:
        if armed[0]:
            armed[0] = False
            raise KeyboardInterrupt  # lands before the entry is taken out
        real_left(self)

    eng = qatpy.Engine("sim")
    key = eng.wrap_key(ec_keys["secp256r1"])
    monkeypatch.setattr(_qat.QatBackend, "_left_locked", interrupted_left)
    with pytest.raises(KeyboardInterrupt):
        key.sign(b"x", ECDSA)
    backend = eng._ops.primary
    assert list(backend._pending.inside.values()) == [backend]  # this thread's stale entry
    ec_keys["secp256r1"].public_key().verify(key.sign(b"y", ECDSA), b"y", ECDSA)  # replaced, then left
    with pytest.raises(KeyboardInterrupt):
        armed[0] = True
        key.sign(b"z", ECDSA)
    eng.close(timeout=2)  # from the thread whose entry is stale: it is not waited for
    assert backend._session.device._ptr is None
    assert not [r for r in caplog.records if "left allocated" in r.getMessage()]
