"""The QAT backend: one engine's use of the device (real qatlib or the simulator).

Owns, for one engine: the device copies of its keys (made once per key,
released with the key or at close), its counters, and the single submit
path from an `Operation` to the shim.  The device itself, the table of
requests on it and the delivery of their results belong to the process's
`DeviceSession` (qatpy._session), shared by every engine on the device.

Failed completions are handed to a `Rerouter` (the fallback policy,
qatpy._fallback), which decides whether they run again in software.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from . import _binding, _ops, _session, _simsession
from ._backend import Operation
from ._completion import DeviceFuture, FutureGroup, Item, deliver, fail_in_forked_child
from ._errors import EngineClosedError, EngineForkedError
from ._pending import MAX_BATCH, TAG_SHIFT, Request
from ._status import CURVE_IDS, FALLBACK_REASONS, HASH_IDS, RsaEncoding, Status, Submit, completion_error, submit_error

log = logging.getLogger("qatpy")

#: RSA sizes the device signs (others are signed in software).
RSA_DEVICE_SIZES = (2048, 3072, 4096, 8192)

# A submitting thread drains on its way out once this many completions wait.
SUBMIT_DRAIN_AT = 32

_OK, _FULL, _CLOSED = int(Submit.OK), int(Submit.FULL), int(Submit.CLOSED)
_ST_OK = int(Status.OK)
_OP_RSA, _OP_ECDSA = int(_binding.native().lib.QATPY_OP_RSA), int(_binding.native().lib.QATPY_OP_ECDSA)
_RAW, _PKCS1 = int(RsaEncoding.RAW), int(RsaEncoding.PKCS1)
_NO_HANDLE = object()


class Rerouter(Protocol):
    """What the backend asks of the fallback policy above it."""

    #: Send what does not fit on a full device to software instead of waiting.
    overflows: bool

    def reroutes(self, status: int) -> bool:
        """Whether a completion with this status runs again in software."""
        ...

    def reroute(self, op: Operation, target: Any, index: int, reason: str) -> None:
        """Run signature `index` of `op` again in software (result to target)."""
        ...

    def overflow(self, op: Operation, target: Any, indices: Sequence[int]) -> None:
        """Sign these operations in software: the device is at capacity."""
        ...

    def sign_instead(self, op: Operation, reason: str) -> bytes:
        """Sign op's single operation in software on this thread (the device
        failed it for `reason`)."""
        ...


def _to_software(target: Any) -> None:
    """A future the device gave up on is resolved by software now: its
    waiters must wait on the future itself, as the device's completions will
    not announce it (a failed-fast operation is then as quick as software)."""
    if type(target) is DeviceFuture:
        target._waiter = None


def _be(n: int, length: int | None = None) -> bytes:
    return n.to_bytes(length if length is not None else max(1, (n.bit_length() + 7) // 8), "big")


class QatBackend:
    #: A lone sign_async is polled for by its own loop (see submit); False
    #: sends it through the poll thread.  Only benchmarks/async_latency.py
    #: turns it off, to measure the two routes side by side.
    _loop_drives = True

    def __init__(
        self,
        *,
        sim: bool,
        libqat: str | None,
        libusdm: str | None,
        poll_mode: str,
        poll_delay: float,
        instances: int | None,
        max_inflight: int | None,
        max_requests: int | None,
        sim_knobs: Mapping[str, int],
        fallback: str,
        verify: bool,
        verify_ecdsa: bool,
        deadline: float | None,
    ) -> None:
        self.name = "sim" if sim else "qat"
        self.rerouter: Rerouter | None = None
        # Counters, all under the session's pending-table lock.
        self._submitted = 0
        self._completed = 0
        self._failed = 0
        self._inflight = 0
        self._closed = False
        # id(qatpy key object) -> its device copy (None: the device cannot
        # take it); entries leave with the key (weakref.finalize).
        self._handles: dict[int, _binding.Key | None] = {}
        self._keys: weakref.WeakSet[_binding.Key] = weakref.WeakSet()
        self._prepare_lock = threading.Lock()
        self._loop_batches: dict[asyncio.AbstractEventLoop, list[tuple[Operation, Any]]] = {}
        self._poll_delay = poll_delay
        self._waiter = self._wait_for  # one bound method for every future
        if sim:
            qpath, upath = _binding.sim_paths()
        else:
            qpath = libqat or os.environ.get("QATPY_LIBQAT") or None  # type: ignore[assignment]
            upath = libusdm or os.environ.get("QATPY_LIBUSDM") or None  # type: ignore[assignment]
        self.libraries = (qpath or "libqat.so.4", upath or "libusdm.so.0")
        self._session = _session.acquire(
            sim=sim,
            libraries=(qpath, upath),
            poll_mode=poll_mode,
            poll_delay=poll_delay,
            instances=instances,
            max_inflight=max_inflight,
            max_requests=max_requests,
            sim_knobs=sim_knobs,
        )
        # The engine object: its settings go with every request on its keys
        # (verify, verify_ecdsa, deadline), and the ssl provider's keys report to it.
        c_engine = _binding.CEngine.new(
            self._session.device,
            _binding.fallback_code(fallback),
            verify,
            verify_ecdsa,
            0 if deadline is None else max(1, int(deadline * 1e9)),
        )
        if c_engine is None:  # pragma: no cover - only out of memory (the values were checked)
            self._session.release(time.monotonic() + 1.0)
            raise MemoryError("the shim could not make an engine object")
        self.c_engine: _binding.CEngine = c_engine
        self._pending = self._session.pending
        self._delivery = self._session.delivery
        self._device = self._session.device
        self._manual = self._session.manual

    @property
    def device(self) -> _binding.Device:
        """The process's device (the ssl provider's engine object references it)."""
        return self._device

    # -- keys ------------------------------------------------------------------
    def accepts(self, op: Operation) -> bool:
        """True when the device takes op's key (made once per key)."""
        h = self._handles.get(id(op.owner), _NO_HANDLE)
        if h is not _NO_HANDLE:
            return h is not None
        with self._prepare_lock:  # one device copy per key, however many threads ask
            h = self._handles.get(id(op.owner), _NO_HANDLE)
            if h is _NO_HANDLE:
                if self._closed:
                    raise EngineClosedError("engine is closed")
                h = self._prepare(op)
                self._handles[id(op.owner)] = h
                weakref.finalize(op.owner, self._handles.pop, id(op.owner), None)
        return h is not None

    def _prepare(self, op: Operation) -> _binding.Key | None:
        handle = self.device_key(op.key)
        if handle is None:
            return None
        self._keys.add(handle)
        weakref.finalize(op.owner, handle.release)
        return handle

    def device_key(self, key: object) -> _binding.Key | None:
        """A new device copy of a cryptography private key, made for this
        engine (its requests take the engine's settings), or None when the
        device does not take the key.  The caller owns (releases) it."""
        # Read before the counts below: a call between them and `registered`
        # is where a signal handler's exception can land (counted, never undone).
        me = threading.get_ident()
        registered = False
        try:
            with self._pending.lock:
                if self._closed:
                    raise EngineClosedError("engine is closed")
                self._pending.inside[me] = self
                registered = True  # the last store under the lock: see _leave
            return self._device_key(key)
        finally:
            if registered:
                self._leave()

    def _device_key(self, key: object) -> _binding.Key | None:
        dev = self._device
        if isinstance(key, rsa.RSAPrivateKey):
            if key.key_size not in RSA_DEVICE_SIZES:
                return None
            pn = key.private_numbers()
            half = (key.key_size + 15) // 16
            if (pn.p.bit_length() + 7) // 8 != (pn.q.bit_length() + 7) // 8:
                return None
            handle, _err = dev.rsa_key(
                self.c_engine,
                _be(pn.public_numbers.n),
                _be(pn.public_numbers.e),
                _be(pn.p, half),
                _be(pn.q, half),
                _be(pn.dmp1, half),
                _be(pn.dmq1, half),
                _be(pn.iqmp, half),
            )
        elif isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in CURVE_IDS:
            size = (key.curve.key_size + 7) // 8
            priv = key.private_numbers()
            pub = priv.public_numbers
            handle, _err = dev.ec_key(
                self.c_engine,
                CURVE_IDS[key.curve.name],
                _be(priv.private_value, size),
                _be(pub.x, size),
                _be(pub.y, size),
            )
        else:
            return None
        return handle

    # -- submitting --------------------------------------------------------------
    def sign(self, op: Operation) -> bytes:
        """One signature, this thread blocked in C until the device answers:
        no tag, no ring, no future (qatpy_sign_wait).  Manual polling, and a
        device with every request slot busy, take the general path."""
        if self._manual:
            return self._sign_by_future(op)
        enc, blob, _ = self._inputs(op)
        kind = _OP_ECDSA if type(op.spec) is _ops.EcSpec else _OP_RSA
        pending = self._pending
        st = _CLOSED  # if the call below never returns a status: nothing was queued
        # Read before the counts below: a call between them and `registered`
        # is where a signal handler's exception can land (counted, never undone).
        me = threading.get_ident()
        registered = False
        try:
            with pending.lock:
                if self._closed:
                    raise EngineClosedError("engine is closed")
                self._submitted += 1
                self._inflight += 1
                pending.inside[me] = self
                registered = True  # the last store under the lock: see _leave
            handle = self._handles[id(op.owner)]
            assert handle is not None  # accepts() said yes before any sign
            st, cpa, sig = self._device.sign_wait(handle, kind, enc, HASH_IDS[op.spec.hash_name], blob)
        finally:
            if registered:
                with pending.lock:
                    self._inflight -= 1
                    if st >= 0:
                        self._completed += 1
                    else:
                        self._submitted -= 1  # nothing was queued
                    self._left_locked()
        if st == _ST_OK:
            return sig
        if st == _FULL:
            return self._sign_by_future(op)  # waits for a slot, or overflows (the general path)
        if st < 0:
            raise submit_error(st)
        rr = self.rerouter
        if rr is not None and rr.reroutes(st):
            return rr.sign_instead(op, FALLBACK_REASONS[st])
        with pending.lock:
            self._failed += 1
        raise completion_error(st, cpa)

    def _sign_by_future(self, op: Operation) -> bytes:
        fut = self.sign_future(op)
        self._wait_for(fut, None)
        result: bytes = fut.result()
        return result

    def sign_future(self, op: Operation) -> cf.Future[bytes]:
        fut = DeviceFuture(self._waiter)
        self._submit_one(op, fut)
        return fut

    def _submit_one(self, op: Operation, target: Any, block: bool = True, driven: bool = False) -> bool:
        """Queue one operation: sign_future's hot path, kept flat (it is most
        of the per-operation Python cost; the general _submit with its chunk
        loop measured 2.0x the direct P-256 loop against 2.6x for this).
        PSS (encoded in Python), manual polling, a full device and errors go
        through _submit, which handles them.  With block=False (an event
        loop) it returns False, having queued nothing, where the device
        refused the operation; the caller keeps it.  `driven`: an event
        loop's lone operation, which the loop polls for itself when nothing
        else is in flight (Delivery.watch_loop)."""
        spec = op.spec
        is_ec = type(spec) is _ops.EcSpec
        if self._manual or (type(spec) is _ops.RsaSpec and spec.pss):
            return self._submit(op, target, block=block) == 1
        data = op.datas[0]
        digest = data if spec.prehashed else _ops.HASHLIB[spec.hash_name](data).digest()
        pending = self._pending
        rid = pending.next_id()
        rc = -1  # no status yet: whatever ends this early queued nothing
        backlog = 0
        # Read before the counts below: a call between them and `registered`
        # is where a signal handler's exception can land (counted, never undone).
        me = threading.get_ident()
        registered = False
        try:
            with pending.lock:
                if self._closed:
                    raise EngineClosedError("engine is closed")
                pending.requests[rid] = Request(target, 1, self, op)
                self._inflight += 1
                self._submitted += 1
                pending.inside[me] = self
                registered = True  # the last store under the lock: see _leave
            dev = self._device
            handle = self._handles[id(op.owner)]
            assert handle is not None  # accepts() said yes before any submit
            if driven:
                kind = _OP_ECDSA if is_ec else _OP_RSA
                rc = dev.submit_driven(handle, kind, _PKCS1, HASH_IDS[spec.hash_name], digest, rid << TAG_SHIFT)
            elif is_ec:
                rc = dev.submit_ecdsa(handle, digest, rid << TAG_SHIFT)
            else:
                rc = dev.submit_rsa(handle, _PKCS1, HASH_IDS[spec.hash_name], digest, rid << TAG_SHIFT)
            backlog = dev.backlog()  # read while registered: the device is alive
        finally:
            if registered:
                with pending.lock:
                    # Nothing was queued under this id (refused, or an
                    # exception came first): take it back, in the same step
                    # as leaving, so no close waits for it.
                    if rc != _OK and pending.forget(rid, 1) is not None:
                        self._inflight -= 1
                        self._submitted -= 1
                    self._left_locked()
        if rc == _OK:
            if backlog >= SUBMIT_DRAIN_AT:
                self._delivery.drain(caller=True)  # as in _submit
            return True
        if not block:
            return False
        # Let the general path wait for a slot, overflow or fail it.
        self._submit(op, target, block=True)
        return True

    def submit(self, op: Operation, target: Any, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if loop is None or self._manual:
            self._submit(op, target, block=True)
            return
        # From a running loop: operations started in the same loop iteration
        # are submitted together at the end of it (one C call, one GIL
        # release), so `gather` over many sign_async calls costs one crossing.
        if loop not in self._delivery.loops:
            self._delivery.watch_loop(loop)
        batch = self._loop_batches.get(loop)
        if batch is None:
            # A lone operation (nothing of this engine in flight, nothing
            # waiting for this iteration's flush) goes at once: its latency
            # is the point, and there is nothing to batch it with.  Measured
            # at depth 1 on the simulator: 13 us less at zero service time.
            # If nothing else is in flight on the device either, the loop
            # polls for it itself (one wake-up instead of two).
            if self._inflight == 0 and self._submit_one(op, target, block=False, driven=self._loop_drives):
                return
            batch = self._loop_batches[loop] = []
            loop.call_soon(self._flush_loop, loop)
        batch.append((op, target))

    def _flush_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._loop_batches.pop(loop, [])
        groups: dict[tuple[int, int], list[tuple[Operation, Any]]] = {}
        for item in batch:
            groups.setdefault((id(item[0].owner), id(item[0].spec)), []).append(item)
        later: list[tuple[Operation, Any]] = []
        for items in groups.values():
            # Each item is one operation resolving one asyncio future.
            first = items[0][0]
            op = Operation(first.key, first.spec, [it[0].datas[0] for it in items], first.owner)
            target = FutureGroup([it[1] for it in items])
            try:
                # Never block the loop: what does not fit now is retried soon.
                queued = self._submit(op, target, block=False)
            except BaseException as exc:
                for it in items:
                    if not it[1].done():
                        it[1].set_exception(exc)
                continue
            later += items[queued:]
        if later:
            self._loop_batches.setdefault(loop, []).extend(later)
            loop.call_later(0.0005, self._flush_loop, loop)

    def _inputs(self, op: Operation) -> tuple[int, bytes, int]:
        """(RSA encoding, the inputs back to back, bytes per input) for the shim."""
        spec = op.spec
        datas = op.datas
        hname, dsize, pre = spec.hash_name, spec.digest_size, spec.prehashed
        if type(spec) is _ops.RsaSpec and spec.pss:
            bits = op.key.key_size
            md = _ops.message_digest
            inputs = [_ops.emsa_pss_encode(md(hname, dsize, pre, d), bits, spec) for d in datas]
            return _RAW, b"".join(inputs), (bits + 7) // 8
        if pre:
            return _PKCS1, b"".join(datas), dsize
        if len(datas) == 1:
            return _PKCS1, _ops.HASHLIB[hname](datas[0]).digest(), dsize
        h = _ops.HASHLIB[hname]
        return _PKCS1, b"".join([h(d).digest() for d in datas]), dsize

    def _submit(self, op: Operation, target: Any, block: bool) -> int:
        """Queue op's operations on the device; result i goes to (target, i).

        Returns how many were queued: all of them, unless block=False (an
        event loop must not wait) and every request slot is busy, in which
        case the caller keeps the rest.  When the device is full and the
        fallback policy overflows, the rest go to software; otherwise this
        waits for completions.
        """
        n = len(op.datas)
        if n > MAX_BATCH:
            raise ValueError(f"a batch holds at most {MAX_BATCH} operations; split it")
        is_ec = type(op.spec) is _ops.EcSpec
        enc, blob, ilen = self._inputs(op)
        pending = self._pending
        rid = pending.next_id()
        dev = self._device
        tag0 = rid << TAG_SHIFT
        done = 0
        # Read before the counts below: a call between them and `registered`
        # is where a signal handler's exception can land (counted, never undone).
        me = threading.get_ident()
        registered = False
        owed = True  # the operations not yet queued are still in the table
        calling = False
        try:
            with pending.lock:
                if self._closed:
                    raise EngineClosedError("engine is closed")
                pending.requests[rid] = Request(target, n, self, op)
                self._inflight += n
                self._submitted += n
                pending.inside[me] = self
                registered = True  # the last store under the lock: see _leave
            handle = self._handles[id(op.owner)]
            assert handle is not None  # accepts() said yes before any submit
            while True:
                chunk = blob if done == 0 else blob[done * ilen :]
                # From here until `done` counts what the call queued, an
                # exception (a signal handler's, raised as the C call
                # returns) leaves unknown how many went to the device: the
                # request then stays in the table and its answers settle it.
                calling = True
                if n - done == 1:
                    if is_ec:
                        rc = dev.submit_ecdsa(handle, chunk, tag0 + done)
                    else:
                        rc = dev.submit_rsa(handle, enc, HASH_IDS[op.spec.hash_name], chunk, tag0 + done)
                    k = 1 if rc == _OK else 0
                elif is_ec:
                    rc, k = dev.submit_ecdsa_many(handle, chunk, ilen, n - done, tag0 + done)
                else:
                    rc, k = dev.submit_rsa_many(
                        handle, enc, HASH_IDS[op.spec.hash_name], chunk, ilen, n - done, tag0 + done
                    )
                done += k
                calling = False
                if rc == _OK or done == n:
                    if dev.backlog() >= SUBMIT_DRAIN_AT and not self._manual:
                        # Completions pile up while this thread submits: take
                        # them here, in one batch, rather than leave them to
                        # the completion thread (whose drain would cost this
                        # thread a GIL hand-off).  Callbacks go to the
                        # callback thread.
                        self._delivery.drain(caller=True)
                    return n
                if rc != _FULL:
                    break
                rr = self.rerouter
                if rr is not None and rr.overflows:
                    self._forget(rid, n - done)
                    owed = False
                    log.debug("qatpy: %s at capacity: %d operations overflow to software", self.name, n - done)
                    _to_software(target)
                    rr.overflow(op, target, range(done, n))
                    return n
                if not block:
                    self._forget(rid, n - done)
                    owed = False
                    return done
                if self._closed:
                    rc = _CLOSED
                    break
                # Every request slot is busy: let completions drain, then go on.
                if self._manual:
                    dev.poll()
                    self._delivery.drain()
                else:
                    dev.wait(dev.seq(), 1_000_000)
        except BaseException:
            if registered and owed and not calling:
                # Interrupted (a signal handler's exception) where `done` is
                # exact: what was not queued is not owed.
                self._forget(rid, n - done)
            raise
        finally:
            if registered:
                self._leave()
        # The device refused the rest: fail those operations, nothing lost.
        self._forget(rid, n - done)
        deliver([(target, i, None, submit_error(rc)) for i in range(done, n)])
        return n

    # Threads that use the device pointer (submits, sign_wait, key copies)
    # register under the table's lock, as pending.inside[their ident];
    # close() waits for this engine's, and the session frees the device only
    # after every engine's have left, so none calls into a freed device
    # whatever close's timeout.  Each registers inside its try, with a flag
    # stored last under the lock, and leaves in its finally.  An exception
    # from a signal handler (main thread only) can still land between the
    # two, after a call in the finally: the entry is per thread, so such a
    # stale entry is replaced by that thread's next call, and the thread
    # that closes never waits for its own.
    def _leave(self) -> None:
        with self._pending.lock:
            self._left_locked()

    def _left_locked(self) -> None:
        pending = self._pending
        pending.inside.pop(threading.get_ident(), None)
        if self._closed:  # close() or the session's release may be waiting for it
            pending.changed.notify_all()

    def _others_inside(self) -> bool:
        """Under the table's lock: another thread is inside a call of this
        engine that uses the device pointer."""
        me = threading.get_ident()
        return any(b is self and t != me for t, b in self._pending.inside.items())

    def _forget(self, rid: int, count: int) -> None:
        """Take `count` operations of request `rid` out of the pending table
        (they were never queued on the device).  If close() already settled
        the request, it already did the accounting."""
        with self._pending.lock:
            if self._pending.forget(rid, count) is not None:
                self._inflight -= count

    # -- answers (called by the session's Delivery; it updates the counters
    # _inflight, _completed and _failed itself, under the table's lock) ------
    def reroutes(self, status: int) -> bool:
        rr = self.rerouter
        return rr is not None and rr.reroutes(status)

    def reroute(self, req: Request, index: int, status: int) -> None:
        """Outside the lock: hand a failed operation to the fallback policy."""
        assert self.rerouter is not None
        _to_software(req.target)
        self.rerouter.reroute(req.op, req.target, index, FALLBACK_REASONS[status])

    # -- waiting -----------------------------------------------------------------
    def wait(self, op: Operation, fut: cf.Future[Any], timeout: float | None = None) -> None:
        self._wait_for(fut, timeout)

    def _wait_for(self, fut: Any, timeout: float | None) -> None:
        """Block until `fut` is done (or `timeout`), draining completions on
        this thread.

        The waiter drains itself rather than waiting for the completion
        thread: one thread switch fewer per result.  The completion counter
        is read before draining, so a completion that lands between the
        drain and the wait ends the wait at once (no lost wake-up).
        """
        delivery = self._delivery
        dev = self._device
        end = None if timeout is None else time.monotonic() + timeout
        while not fut.done():
            if delivery.stopping:
                return  # the session is gone: the future is settled by close()
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                return
            if self._manual:
                if self.poll() == 0 and not fut.done():
                    time.sleep(min(self._poll_delay, left) if left is not None else self._poll_delay)
                continue
            seen = dev.seq()
            delivery.drain(caller=True)
            if fut.done() or (type(fut) is DeviceFuture and fut._waiter is None):
                return  # done, or software has it (the caller's result() waits for that)
            step = 20_000_000 if left is None else min(20_000_000, int(left * 1e9))
            dev.wait(seen, step)

    def poll(self) -> int:
        self._device.poll()
        return self._delivery.drain()

    # -- stats and close -----------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        session = self._session
        dev = session.device
        dstats = dev.stats()
        alive = bool(dstats)
        d: dict[str, Any] = {
            "submitted": self._submitted,
            "completed": self._completed,
            "failed": self._failed,
            "inflight": self._inflight,
            "libraries": list(self.libraries),
            "device": dstats,
            "per_instance_completed": dict(sorted(session.delivery.per_instance.items())),
            "instance_healthy": [dev.instance_healthy(i) == 1 for i in range(dstats["num_instances"])] if alive else [],
        }
        if session.is_sim:
            d["sim"] = _simsession.counters()
        return d

    def close(self, deadline: float) -> None:
        pending = self._pending
        with pending.lock:
            if self._closed:
                return
            self._closed = True
        self._await_inflight(deadline)
        # Threads still inside a submit hold key handles: let them leave
        # (they see _closed and stop) before the handles are released.  They
        # leave within a poll step; should one not by the deadline, its key
        # handles are left to their keys' finalizers rather than freed under it.
        with pending.lock:
            while self._others_inside() and time.monotonic() < deadline:
                pending.changed.wait(min(0.05, max(0.0, deadline - time.monotonic())))
        left: list[Item] = []
        with pending.lock:
            for req in pending.remove_owner(self):
                self._inflight -= req.remaining
                # A batch target learns which indices are missing by count only.
                left += [
                    (req.target, i, None, EngineClosedError("engine closed before the device answered"))
                    for i in _session.unanswered(req.target, req.remaining)
                ]
        deliver(left)
        # The last engine's release shuts the device down (the submitters
        # still inside see it at once) and waits for them before freeing it.
        self._session.release(deadline)
        with pending.lock:
            submitters_left = self._others_inside()
        if submitters_left:
            log.debug("qatpy: %s: a submitting thread is still inside; its keys go with their finalizers", self.name)
        else:
            for k in list(self._keys):
                k.release()

    def fail_after_fork(self) -> None:
        """In a forked child: fail the asyncio operations not yet submitted
        (the session fails those on the device)."""
        batches, self._loop_batches = self._loop_batches, {}
        fail_in_forked_child(
            [(target, 0) for items in batches.values() for _, target in items],
            lambda: EngineForkedError("the engine's process forked before this operation was submitted"),
        )

    def _await_inflight(self, deadline: float) -> None:
        """Let this engine's in-flight operations finish until `deadline`,
        draining on this thread (so a close called from a done-callback on
        the completion thread does not wait for itself)."""
        dev = self._device
        while self._inflight > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self._manual:
                if self.poll() == 0:
                    time.sleep(min(0.0005, left))
                continue
            seen = dev.seq()
            self._delivery.drain(caller=True)
            if self._inflight > 0:
                dev.wait(seen, min(20_000_000, int(left * 1e9)))
