"""The software backend: threads that wait for results sign queued work themselves, a saturated
engine lets its submitter sign, and results, callbacks and interruptions behave as documented."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

import qatpy
from qatpy import _software

ECDSA = ec.ECDSA(hashes.SHA256())


class GatedKey(ec.EllipticCurvePrivateKey):
    """A P-256 key whose signatures on qatpy's worker threads wait for `gate`.

    With one worker stuck on its first operation, only the threads that
    call qatpy can sign, so what they sign is known exactly.  `interrupt`
    makes the next signature on the main thread raise KeyboardInterrupt,
    as a signal handler would."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._k = key
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.interrupt = False

    def sign(self, data: Any, signature_algorithm: Any) -> bytes:
        me = threading.current_thread()
        if me.name.startswith("qatpy-sw-"):
            self.entered.set()
            assert self.gate.wait(60), "the test never opened the gate"
        elif self.interrupt and me is threading.main_thread():
            self.interrupt = False
            raise KeyboardInterrupt
        return self._k.sign(data, signature_algorithm)

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._k.curve

    @property
    def key_size(self) -> int:
        return self._k.key_size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._k.public_key()

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        return self._k.private_numbers()

    def private_bytes(self, *args: Any) -> bytes:
        return self._k.private_bytes(*args)

    def exchange(self, *args: Any) -> bytes:
        return self._k.exchange(*args)

    def __copy__(self) -> GatedKey:
        return self

    def __deepcopy__(self, memo: Any) -> GatedKey:
        return self


@pytest.fixture
def gated(ec_keys):
    """(engine with one worker, wrapped gated key, the gated key); the worker is stuck on one operation."""
    gk = GatedKey(ec_keys["secp256r1"])
    eng = qatpy.Engine("software", threads=1)
    key = eng.wrap_key(gk)
    first = key.sign_future(b"first", ECDSA)
    assert gk.entered.wait(30)
    try:
        yield eng, key, gk
    finally:
        gk.gate.set()
        gk.public_key().verify(first.result(timeout=30), b"first", ECDSA)
        eng.close()


def _verify_all(gk: GatedKey, futs: list[cf.Future[bytes]], prefix: bytes = b"m") -> None:
    done, not_done = cf.wait(futs, timeout=60)
    assert not not_done
    for i, f in enumerate(futs):
        gk.public_key().verify(f.result(), prefix + b"%d" % i, ECDSA)


def test_waiting_caller_signs_queued_operations(gated, monkeypatch):
    """A result() whose operation is still queued signs from the queue's tail on the calling thread, a piece at a time."""
    eng, key, gk = gated
    piece = 4
    monkeypatch.setattr(_software, "HELP_PIECE", piece)
    n = _software.BACKLOG - 1  # below the backlog at which sign_future signs at once
    assert n > 2 * piece
    futs = [key.sign_future(b"m%d" % i, ECDSA) for i in range(n)]
    assert not any(f.done() for f in futs)
    gk.public_key().verify(futs[-1].result(timeout=30), b"m%d" % (n - 1), ECDSA)
    assert [f.done() for f in futs] == [False] * (n - piece) + [True] * piece
    assert eng.stats()["software"]["caller_ops"] == piece
    gk.gate.set()
    _verify_all(gk, futs)


def test_callbacks_of_futures_a_caller_signed_run_on_the_callback_thread(gated):
    """Done-callbacks of futures that a waiting caller resolved run on qatpy-callbacks, not in the caller."""
    eng, key, gk = gated
    futs = [key.sign_future(b"m%d" % i, ECDSA) for i in range(4)]
    ran: list[str] = []
    event = threading.Event()
    futs[0].add_done_callback(lambda f: (ran.append(threading.current_thread().name), event.set()))
    futs[3].result(timeout=30)  # signs all four here
    assert event.wait(30)
    assert ran == ["qatpy-callbacks"]
    _verify_all(gk, futs)


def test_sign_many_signs_on_the_caller_while_workers_are_busy(gated):
    """sign_many with every worker busy is signed by its caller: verified signatures, in order."""
    eng, key, gk = gated
    msgs = [b"b%d" % i for i in range(50)]
    sigs = key.sign_many(msgs, ECDSA)
    for m, s in zip(msgs, sigs):
        gk.public_key().verify(s, m, ECDSA)
    assert eng.stats()["software"]["caller_ops"] == 50


def test_saturated_sign_future_signs_on_the_submitting_thread(gated):
    """With a backlog of BACKLOG per worker, sign_future signs at once and returns a finished future."""
    eng, key, gk = gated
    queued = [key.sign_future(b"m%d" % i, ECDSA) for i in range(_software.BACKLOG)]
    f = key.sign_future(b"now", ECDSA)
    assert f.done() and isinstance(f, cf.Future)
    gk.public_key().verify(f.result(timeout=0), b"now", ECDSA)
    assert not any(q.done() for q in queued)
    seen: list[cf.Future[bytes]] = []
    f.add_done_callback(seen.append)  # already done: runs at once, as with any Future
    assert seen == [f]
    gk.gate.set()
    _verify_all(gk, queued)


def test_saturated_event_loop_signs_sign_async_itself(gated):
    """With a backlog, sign_async from the event loop returns a future that is already done, with a valid signature."""
    eng, key, gk = gated
    queued = [key.sign_future(b"m%d" % i, ECDSA) for i in range(_software.BACKLOG)]

    async def main() -> tuple[bool, bytes]:
        fut = key.sign_async(b"loop", ECDSA)
        return fut.done(), await fut

    was_done, sig = asyncio.run(main())
    assert was_done
    gk.public_key().verify(sig, b"loop", ECDSA)
    gk.gate.set()
    _verify_all(gk, queued)


def test_caller_interrupted_while_signing_puts_the_work_back(gated):
    """A KeyboardInterrupt while result() signs queued work loses nothing: the operations go back and resolve."""
    eng, key, gk = gated
    futs = [key.sign_future(b"m%d" % i, ECDSA) for i in range(20)]
    gk.interrupt = True
    with pytest.raises(KeyboardInterrupt):
        futs[-1].result(timeout=30)
    assert not any(f.done() for f in futs)
    assert eng.stats()["software"]["queued"] == 20
    gk.gate.set()
    _verify_all(gk, futs)


def test_close_fails_what_is_queued_while_a_worker_is_stuck(gated):
    """close() with a stuck worker keeps its timeout and fails the queued operations with EngineClosedError."""
    eng, key, gk = gated
    futs = [key.sign_future(b"m%d" % i, ECDSA) for i in range(10)]
    eng.close(timeout=0.2)
    for f in futs:
        assert isinstance(f.exception(timeout=30), qatpy.EngineClosedError)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_every_api_at_once_from_many_threads(ec_keys, rsa_keys, threads):
    """Futures, batches, asyncio and blocking signs from several threads at once, on 1 to 3 workers: every result verifies."""
    ek, rk = ec_keys["secp256r1"], rsa_keys[2048]
    errors: list[BaseException] = []
    with qatpy.Engine("software", threads=threads) as eng:
        keys = [(eng.wrap_key(ek), ECDSA), (eng.wrap_key(rk), None)]

        def run(t: int) -> None:
            try:
                for qk, alg in keys:
                    args = (alg,) if alg is not None else (padding.PKCS1v15(), hashes.SHA256())
                    n = 300 if alg is not None else 20
                    msgs = [b"t%d-%d" % (t, i) for i in range(n)]
                    futs = [qk.sign_future(m, *args) for m in msgs]
                    many = qk.sign_many(msgs, *args)

                    outs = [[f.result(timeout=60) for f in futs], many, asyncio.run(_gather(qk, msgs, args))]
                    pub = qk.public_key()
                    for sigs in outs:
                        for m, s in zip(msgs, sigs):
                            pub.verify(s, m, *args)
            except BaseException as exc:
                errors.append(exc)

        ts = [threading.Thread(target=run, args=(t,)) for t in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        assert not any(t.is_alive() for t in ts)
        st = eng.stats()["software"]
    assert errors == []
    assert st["queued"] == 0 and st["failed"] == 0


async def _gather(key: Any, msgs: list[bytes], args: tuple[Any, ...]) -> list[bytes]:
    return list(await asyncio.gather(*[key.sign_async(m, *args) for m in msgs]))


class _NoExport(rsa.RSAPrivateKey):
    """An RSA key that signs but refuses to export its numbers (HSM-style)."""

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self._k = key

    def decrypt(self, *a: Any) -> bytes:
        return self._k.decrypt(*a)

    @property
    def key_size(self) -> int:
        return self._k.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self._k.public_key()

    def sign(self, *a: Any) -> bytes:
        return self._k.sign(*a)

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        raise RuntimeError("key material is not exportable")

    def private_bytes(self, *a: Any) -> bytes:
        raise RuntimeError("key material is not exportable")

    def __copy__(self) -> _NoExport:
        return self

    def __deepcopy__(self, memo: Any) -> _NoExport:
        return self


def test_workers_sign_with_a_key_they_cannot_copy(rsa_keys):
    """A key whose numbers cannot be exported is signed by the workers with the key itself; no worker dies."""
    real = rsa_keys[2048]
    args = (padding.PKCS1v15(), hashes.SHA256())
    with qatpy.Engine("software", threads=2) as eng:
        key = eng.wrap_key(_NoExport(real))
        sigs = key.sign_many_future([b"m%d" % i for i in range(8)], *args).result(timeout=30)
        for i, sig in enumerate(sigs):
            real.public_key().verify(sig, b"m%d" % i, *args)
        assert all(t.is_alive() for t in eng._ops._workers)


def test_work_put_back_after_the_last_worker_stopped_fails_instead_of_hanging(ec_keys, monkeypatch):
    """Work an interrupted caller puts back after close(), once the only worker stopped but its thread still lives, fails with EngineClosedError."""
    stopped = threading.Event()
    release = threading.Event()
    real_work = _software.SoftwareBackend._work

    def lingering_work(self: _software.SoftwareBackend, widx: int) -> None:
        # Holds open the window between a worker's last look at the queue
        # and its thread's end, in which is_alive() is still true.
        try:
            real_work(self, widx)
        finally:
            stopped.set()
            release.wait(30)

    monkeypatch.setattr(_software.SoftwareBackend, "_work", lingering_work)
    gk = GatedKey(ec_keys["secp256r1"])
    eng = qatpy.Engine("software", threads=1)
    key = eng.wrap_key(gk)
    first = key.sign_future(b"first", ECDSA)
    assert gk.entered.wait(30)
    futs = [key.sign_future(b"m%d" % i, ECDSA) for i in range(4)]
    real_sign_entries = _software._sign_entries

    def close_then_interrupt(entries: Any, key_of: Any) -> Any:
        if threading.current_thread() is threading.main_thread():
            gk.gate.set()  # the worker finishes `first` and finds the queue empty: this caller holds the rest
            eng.close(timeout=0.2)  # the worker stops; close() stops waiting for its thread and returns
            assert stopped.wait(30)
            raise KeyboardInterrupt  # a signal handler's, before this caller signed what it took
        return real_sign_entries(entries, key_of)

    monkeypatch.setattr(_software, "_sign_entries", close_then_interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            futs[-1].result(timeout=30)
        _, not_done = cf.wait(futs, timeout=5)  # a waiter that does not sign queued work itself
        assert not not_done, "put back into a queue no worker will take"
        for f in futs:
            assert isinstance(f.exception(timeout=0), qatpy.EngineClosedError)
        gk.public_key().verify(first.result(timeout=0), b"first", ECDSA)
    finally:
        release.set()
        eng.close()


@pytest.mark.parametrize("where", ["signed", "counted", "delivered"])
def test_caller_interrupted_while_helping_counts_each_operation_once(gated, monkeypatch, where):
    """A KeyboardInterrupt anywhere between a waiting caller's signing and its letting go of the work: stats count each operation once."""
    eng, key, gk = gated
    futs = [key.sign_future(b"m%d" % i, ECDSA) for i in range(4)]
    armed = [True]

    def interrupt_here(point: str) -> None:
        if point == where and armed[0] and threading.current_thread() is threading.main_thread():
            armed[0] = False
            raise KeyboardInterrupt  # what a signal handler raises at this point

    real_sign_entries, real_deliver = _software._sign_entries, _software._deliver

    def sign_entries(entries: Any, key_of: Any) -> Any:
        signed = real_sign_entries(entries, key_of)
        interrupt_here("signed")  # signed, not yet counted
        return signed

    def deliver(signed: Any, defer: Any) -> None:
        interrupt_here("counted")  # counted, not yet delivered
        real_deliver(signed, defer)
        interrupt_here("delivered")  # delivered, the work not yet let go of

    monkeypatch.setattr(_software, "_sign_entries", sign_entries)
    monkeypatch.setattr(_software, "_deliver", deliver)
    with pytest.raises(KeyboardInterrupt):
        futs[-1].result(timeout=30)
    assert not armed[0]
    gk.gate.set()
    _verify_all(gk, futs)
    eng.close(timeout=30)  # returns once the worker signed what went back and stopped
    st = eng._ops.stats()
    assert st["queued"] == 0 and st["failed"] == 0
    assert st["completed"] == st["submitted"] == 5  # `first` and the four
