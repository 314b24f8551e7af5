"""The QAT backend: the device (real qatlib or the simulator) via the shim.

One process-wide _Runtime holds the started device (qatlib allows one start
per process), the table of in-flight requests keyed by tag, and a completion
thread that sleeps in C (GIL released) until the shim's ring has entries,
then drains many completions at once and resolves their targets in one
batch.  Engines (QatBackend) share the runtime by reference count.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures as cf
import itertools
import logging
import os
import queue
import threading
import time
import weakref
from typing import Any

from . import _binding, _ops
from ._completion import BatchResult, DeviceFuture, FutureGroup, Item, deliver
from ._errors import (
    DeadlineExceededError,
    EngineClosedError,
    QatUnavailableError,
    VerificationError,
    status_error,
)
from ._keys import QatECPrivateKey, QatRSAPrivateKey, _KeyBase

log = logging.getLogger("qatpy")

# Values of QATPY_* in csrc/shim/qatpy_shim.h (checked by tests/test_abi_layout.py).
ERR_LIBRARY, ERR_NO_DEVICE, ERR_START, ERR_NO_INSTANCE, ERR_CAPABILITY, ERR_INSTANCE = 1, 2, 3, 4, 5, 6
ERR_STATE = 9
POLL_MODE = {"timer": 0, "busy": 1, "event": 2, "manual": 3}
ST_OK, ST_DEVICE_FAIL, ST_SUBMIT_FAIL, ST_CLOSED, ST_VERIFY_FAIL, ST_TIMEOUT = 0, 1, 2, 3, 4, 5
SUBMIT_OK, SUBMIT_FULL, SUBMIT_CLOSED, SUBMIT_BADARG, SUBMIT_BADKEY = 0, -1, -2, -3, -4
RSA_RAW, RSA_PKCS1 = 0, 1
CURVES = {"secp256r1": 1, "secp384r1": 2, "secp521r1": 3}
RSA_DEVICE_SIZES = (2048, 3072, 4096, 8192)

_CAUSES = {
    ERR_LIBRARY: (
        "library not found",
        "install qatlib (libqat.so.4 and libusdm.so.0) or set QATPY_LIBQAT / QATPY_LIBUSDM",
    ),
    ERR_NO_DEVICE: (
        "no QAT device",
        "no QAT virtual function is bound to vfio-pci; run 'python -m qatpy doctor' or see qatlib's INSTALL",
    ),
    ERR_START: (
        "start failed",
        "check /dev/vfio permissions (the 'qat' group), RLIMIT_MEMLOCK and that qat.service runs",
    ),
    ERR_NO_INSTANCE: (
        "no asym instance",
        "enable the asym service (ServicesEnabled=asym or sym;asym in /etc/sysconfig/qat)",
    ),
    ERR_CAPABILITY: ("capability missing", "the instances found do not offer RSA and ECDSA"),
    ERR_INSTANCE: ("instance start failed", "see the message above; restarting qat.service may help"),
    ERR_STATE: ("device busy", "another QAT device session is open in this process; close its engines first"),
}


def _reason(rc: int, msg: str) -> tuple[str, str]:
    cause, hint = _CAUSES.get(rc, ("unavailable", ""))
    text = f"{cause}: {msg}" if msg else cause
    if hint and "hint" not in msg and "install" not in msg:
        text += f" (hint: {hint})"
    return text, cause


def _be(n: int, length: int | None = None) -> bytes:
    return n.to_bytes(length if length is not None else max(1, (n.bit_length() + 7) // 8), "big")


# How long the completion thread leaves fresh completions to the threads and
# event loops that are waiting for them before it delivers them itself.
COMPLETION_GRACE_NS = 200_000

# A submitting thread drains on its way out once this many completions wait
# (see submit_one).
SUBMIT_DRAIN_AT = 32

# A tag is (request id << TAG_SHIFT) | index: one pending entry per submit
# call, however many operations it carries.
TAG_SHIFT = 24
TAG_MASK = (1 << TAG_SHIFT) - 1


class _Runtime:
    def __init__(self, device: _binding.Device, is_sim: bool, mode: str) -> None:
        self.device = device
        self.is_sim = is_sim
        self.manual = mode == "manual"
        self.lock = threading.Lock()
        self.lock_cond = threading.Condition(self.lock)  # signalled when a backend's submitters leave
        self.refs = 0
        # request id -> [target, operations not yet answered, owning backend,
        #                key, spec, inputs] (the last three let a failed
        #                operation be re-run in software)
        self.pending: dict[int, list[Any]] = {}
        self.rids = itertools.count(1)
        self.per_instance: collections.Counter[int] = collections.Counter()  # completions, by instance index
        self.stopping = False
        self.loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        self.thread: threading.Thread | None = None
        # Done-callbacks of futures resolved by a caller's drain (see
        # deliver()) run here, on a thread started when first needed.
        self.callbacks: queue.SimpleQueue[list[DeviceFuture] | None] = queue.SimpleQueue()
        self.callback_thread: threading.Thread | None = None
        self.callbacks_closed = False
        if not self.manual:
            self.thread = threading.Thread(target=self._completion_loop, name="qatpy-completions", daemon=True)
            self.thread.start()

    def _completion_loop(self) -> None:
        seen = 0
        dev = self.device
        while not self.stopping:
            # GIL released while waiting; returns only for completions that
            # no waiter or event loop claimed within the grace period.
            seen = dev.wait_unclaimed(seen, COMPLETION_GRACE_NS, 50_000_000)
            self.drain()

    def defer(self, futs: list[DeviceFuture]) -> None:
        """Run these futures' done-callbacks on the callback thread (here,
        if a late drain comes after that thread was told to stop)."""
        with self.lock:  # orders every put against stop_callbacks' sentinel
            if not self.callbacks_closed:
                if self.callback_thread is None:
                    t = threading.Thread(target=self._callback_loop, name="qatpy-callbacks", daemon=True)
                    t.start()
                    self.callback_thread = t
                self.callbacks.put(futs)
                return
        for fut in futs:
            fut._invoke_callbacks()

    def _callback_loop(self) -> None:
        while True:
            futs = self.callbacks.get()
            if futs is None:
                return
            for fut in futs:
                fut._invoke_callbacks()  # logs and swallows what a callback raises

    def stop_callbacks(self, timeout: float) -> None:
        with self.lock:
            self.callbacks_closed = True
            t = self.callback_thread
            if t is None:
                return
            self.callbacks.put(None)  # after the callbacks already queued
        if t is not threading.current_thread():
            t.join(timeout)

    def watch_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Let `loop` drain completions itself when the shim's eventfd fires,
        so its futures resolve without a cross-thread hand-off."""
        with self.lock:
            if loop in self.loops or self.stopping:
                return
            self.loops.add(loop)
        loop.add_reader(self.device.event_fd(), self._on_readable)

    def _on_readable(self) -> None:
        # Clear before draining: a completion pushed after the clear re-arms
        # the fd, so nothing is left behind unannounced.
        self.device.event_clear()
        self.drain()

    def unwatch_loops(self) -> None:
        fd = self.device.event_fd()
        for loop in list(self.loops):
            if loop.is_closed():
                continue
            try:
                if asyncio._get_running_loop() is loop:
                    loop.remove_reader(fd)
                else:
                    loop.call_soon_threadsafe(loop.remove_reader, fd)
            except RuntimeError:
                pass
        self.loops = weakref.WeakSet()

    def drain(self, caller: bool = False) -> int:
        """Take the waiting completions and resolve their targets.  `caller`:
        this thread is inside a sign()/result()/submit, so done-callbacks go
        to the callback thread instead of running here (see deliver())."""
        tags, sts, cpas, results, insts = self.device.drain()
        if not tags:
            return 0
        self.per_instance.update(insts)
        items: list[Item] = []
        reroute: list[tuple[QatBackend, list[Any], int, int]] = []
        with self.lock:
            pend = self.pending
            for tag, st, cpa, res in zip(tags, sts, cpas, results):
                rid = tag >> TAG_SHIFT
                entry = pend.get(rid)
                if entry is None:
                    continue  # settled already (engine closed): drop the late answer
                entry[1] -= 1
                if entry[1] == 0:
                    del pend[rid]
                owner = entry[2]
                owner._inflight -= 1
                owner._completed += 1
                if st == ST_OK:
                    items.append((entry[0], tag & TAG_MASK, res, None))
                elif owner._fallback_on(st):
                    reroute.append((owner, entry, tag & TAG_MASK, st))
                else:
                    owner._failed += 1
                    items.append((entry[0], tag & TAG_MASK, None, _completion_error(st, cpa)))
        deliver(items, self.defer if caller else None)
        for owner, entry, index, st in reroute:
            owner._reroute(entry, index, _FALLBACK_REASON[st])
        return len(items) + len(reroute)


_FALLBACK_REASON = {
    ST_DEVICE_FAIL: "device_error",
    ST_SUBMIT_FAIL: "submit_error",
    ST_VERIFY_FAIL: "verify_failed",
    ST_TIMEOUT: "deadline",
}
FALLBACK_POLICIES = ("never", "on_error", "on_error_or_overflow")


def _completion_error(status: int, cpa_status: int) -> BaseException:
    if status == ST_CLOSED:
        return EngineClosedError("engine closed before the device answered")
    if status == ST_VERIFY_FAIL:
        return VerificationError("the device returned a signature that does not verify", cpa_status)
    if status == ST_TIMEOUT:
        return DeadlineExceededError("the device did not answer before the deadline", cpa_status)
    where = "submit" if status == ST_SUBMIT_FAIL else "device"
    return status_error(cpa_status, where)


def _loop_of(target: Any) -> asyncio.AbstractEventLoop | None:
    t = type(target)
    if t is DeviceFuture or t is cf.Future:
        return None
    if t is FutureGroup:
        return target.futs[0].get_loop()  # type: ignore[no-any-return]
    if t is BatchResult:
        target = target._done
        if isinstance(target, cf.Future):
            return None
    return target.get_loop()  # type: ignore[no-any-return]


def _unanswered(target: Any, remaining: int) -> list[int]:
    if isinstance(target, (BatchResult, FutureGroup)):
        return target.missing()
    return [0] if remaining else []


_runtime_lock = threading.Lock()
_runtime: _Runtime | None = None
# Clear while the last engine's device is being shut down and freed.
_runtime_idle = threading.Event()
_runtime_idle.set()

# Simulator counters that must stay zero over a whole process, carried
# across the resets that start each device session.
_SIM_CARRIED = ("refused.dma", "mem.key_freed_unwiped", "mem.live_allocs")
_sim_carry = dict.fromkeys(_SIM_CARRIED, 0)


def _sim_fresh_session() -> None:
    """Knobs and counters back to defaults before a new device session, so
    each Engine's ``sim=`` knobs apply to its own session only."""
    _binding.sim_reset()


def _sim_end_session() -> None:
    """After a session's device is freed, carry its must-be-zero counters."""
    for name in _SIM_CARRIED:
        _sim_carry[name] += _binding.sim_get(name) or 0


def sim_totals() -> dict[str, int]:
    """Totals of the simulator's must-be-zero counters over every device
    session this process has closed."""
    return dict(_sim_carry)


def forget_after_fork() -> None:
    """In a forked child: the parent's device is unusable; start afresh."""
    global _runtime, _runtime_lock
    _runtime = None
    _runtime_lock = threading.Lock()


class QatBackend:
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
        sim_knobs: dict[str, int],
        fallback: str = "on_error",
        software: Any = None,
        verify: bool = True,
        deadline: float | None = None,
    ) -> None:
        global _runtime
        self.name = "sim" if sim else "qat"
        self._fallback = fallback
        self._software = software  # callable -> SoftwareBackend, for re-runs
        self._fallbacks: dict[str, int] = {}
        self._failed = 0
        self._inflight = 0
        self._active = 0  # threads inside a submit (they hold key handles)
        self._prepare_lock = threading.Lock()
        self._submitted = 0
        self._completed = 0
        self._closed = False
        self._keys: weakref.WeakSet[_binding.Key] = weakref.WeakSet()
        self._loop_batches: dict[asyncio.AbstractEventLoop, list[tuple[_KeyBase, Any, bytes, Any]]] = {}
        self._mode = poll_mode
        self._poll_delay = poll_delay
        self._waiter = self._wait_for  # one bound method for every future
        if sim:
            qpath, upath = _binding.sim_paths()
        else:
            qpath = libqat or os.environ.get("QATPY_LIBQAT") or None  # type: ignore[assignment]
            upath = libusdm or os.environ.get("QATPY_LIBUSDM") or None  # type: ignore[assignment]
        self.libraries = (qpath or "libqat.so.4", upath or "libusdm.so.0")
        try:
            _binding.native()
        except ImportError as exc:
            raise QatUnavailableError(str(exc), "extension missing") from None
        # The previous device may still be shutting down (its last engine is
        # closing on another thread): wait for it rather than fail to start.
        while True:
            _runtime_idle.wait(30)
            with _runtime_lock:
                if _runtime is not None or _runtime_idle.is_set():
                    break
        with _runtime_lock:
            rt = _runtime
            if rt is None:
                rc, msg = _binding.lib_load(qpath, upath)
                if rc != 0:
                    raise QatUnavailableError(*_reason(rc, msg))
                is_sim = _binding.lib_is_sim()
                if sim and not is_sim:
                    raise QatUnavailableError(
                        "the simulated device is not the library loaded in this process", "start failed"
                    )
                if not sim and is_sim:
                    raise QatUnavailableError(
                        "this process already loaded qatpy's simulated device; "
                        "a real libqat cannot be loaded beside it",
                        "start failed",
                    )
                if is_sim:
                    _sim_fresh_session()
                    for k, v in sim_knobs.items():
                        if not _binding.sim_set(k, v):
                            _binding.sim_reset()
                            raise ValueError(f"unknown or invalid simulator knob {k}={v}")
                dev, rc, msg = _binding.Device.open(
                    POLL_MODE[poll_mode],
                    int(poll_delay * 1e9),
                    instances or 0,
                    max_inflight or 0,
                    max_requests or 0,
                )
                if dev is None:
                    raise QatUnavailableError(*_reason(rc, msg))
                rt = _Runtime(dev, is_sim, poll_mode)
                _runtime = rt
            else:
                if sim != rt.is_sim:
                    raise QatUnavailableError(
                        "this process already runs the " + ("simulated" if rt.is_sim else "real") + " device",
                        "start failed",
                    )
                if rt.manual != (poll_mode == "manual"):
                    raise ValueError(
                        f"poll_mode={poll_mode!r} cannot join the running device, which polls "
                        + ("manually" if rt.manual else "on its own threads")
                        + "; close the other engines first (the device and its polling are per process)"
                    )
                for k, v in sim_knobs.items():
                    if not _binding.sim_set(k, v):
                        raise ValueError(f"unknown or invalid simulator knob {k}={v}")
                rt.device.set_poll(POLL_MODE[poll_mode], int(poll_delay * 1e9))
            # Verification and deadlines are device-wide: the most recent
            # engine's settings apply (like the poll settings).
            rt.device.set_verify(verify)
            rt.device.set_deadline(0 if deadline is None else max(1, int(deadline * 1e9)))
            rt.refs += 1
        self._rt = rt

    @property
    def device(self) -> _binding.Device:
        """The process's device (the ssl provider's engine object references it)."""
        return self._rt.device

    # -- keys ----------------------------------------------------------------
    def accepts(self, key: _KeyBase, spec: Any) -> bool:
        """True when the device takes this key (else the engine signs in software)."""
        h = key._handles.get(id(self))
        if h is not None:
            return h is not False
        with self._prepare_lock:  # one device copy per key, however many threads ask
            h = key._handles.get(id(self))
            if h is None:
                if self._closed:
                    raise EngineClosedError("engine is closed")
                h = self._prepare(key)
                key._handles[id(self)] = h if h is not None else False
        return h is not None and h is not False

    def _prepare(self, key: _KeyBase) -> _binding.Key | None:
        dev = self._rt.device
        if isinstance(key, QatRSAPrivateKey):
            if key.key_size not in RSA_DEVICE_SIZES:
                return None
            pn = key._key.private_numbers()
            half = (key.key_size + 15) // 16
            if (pn.p.bit_length() + 7) // 8 != (pn.q.bit_length() + 7) // 8:
                return None
            n = pn.public_numbers.n
            handle, err = dev.rsa_key(
                _be(n),
                _be(pn.public_numbers.e),
                _be(pn.p, half),
                _be(pn.q, half),
                _be(pn.dmp1, half),
                _be(pn.dmq1, half),
                _be(pn.iqmp, half),
            )
        elif isinstance(key, QatECPrivateKey):
            size = (key.curve.key_size + 7) // 8
            handle, err = dev.ec_key(CURVES[key.curve.name], _be(key._key.private_numbers().private_value, size))
        else:
            return None
        if handle is None:
            return None
        self._keys.add(handle)
        weakref.finalize(key, handle.release)
        return handle

    # -- operations ------------------------------------------------------------
    def submit_async(
        self, key: _KeyBase, spec: Any, data: bytes, fut: asyncio.Future[bytes], loop: asyncio.AbstractEventLoop
    ) -> None:
        """Queue one operation from a running loop.  Operations started in the
        same loop iteration are submitted together at the end of it (one C
        call, one GIL release), so ``gather`` over many sign_async calls costs
        one crossing, not one per operation."""
        rt = self._rt
        if loop not in rt.loops and not rt.manual:
            rt.watch_loop(loop)
        batch = self._loop_batches.get(loop)
        if batch is None:
            batch = self._loop_batches[loop] = []
            loop.call_soon(self._flush_loop, loop)
        batch.append((key, spec, data, fut))

    def _flush_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._loop_batches.pop(loop, [])
        groups: dict[tuple[int, int], list[tuple[_KeyBase, Any, bytes, Any]]] = {}
        for item in batch:
            groups.setdefault((id(item[0]), id(item[1])), []).append(item)
        later: list[tuple[_KeyBase, Any, bytes, Any]] = []
        for items in groups.values():
            key, spec = items[0][0], items[0][1]
            targets = FutureGroup([it[3] for it in items])
            try:
                # Never block the loop: what does not fit now is retried soon.
                queued = self.submit(key, spec, [it[2] for it in items], targets, block=False)
            except BaseException as exc:
                for it in items:
                    if not it[3].done():
                        it[3].set_exception(exc)
                continue
            later += items[queued:]
        if later:
            self._loop_batches.setdefault(loop, []).extend(later)
            loop.call_later(0.0005, self._flush_loop, loop)

    def submit_one(self, key: _KeyBase, spec: Any, data: bytes, target: Any) -> None:
        """Queue one operation (the hot path of sign() and sign_future()).

        Anything unusual (PSS, a full device, an error) goes through the
        general submit(), which handles it.
        """
        rt = self._rt
        is_ec = type(spec) is _ops.EcSpec
        if rt.manual or (not is_ec and spec.pss):  # PSS is encoded in Python: general path
            self.submit(key, spec, [data], target)
            return
        digest = data if spec.prehashed else _ops.HASHLIB[spec.hash_name](data).digest()
        rid = next(rt.rids)
        with rt.lock:
            if self._closed:
                raise EngineClosedError("engine is closed")
            rt.pending[rid] = [target, 1, self, key, spec, [data]]
            self._inflight += 1
            self._submitted += 1
            self._active += 1
        dev = rt.device
        try:
            handle = key._handles[id(self)]
            if is_ec:
                rc = dev.submit_ecdsa(handle, digest, rid << TAG_SHIFT)
            else:
                rc = dev.submit_rsa(handle, RSA_PKCS1, spec.hash_id, digest, rid << TAG_SHIFT)
            backlog = dev.backlog()
        finally:
            self._leave()
        if rc == SUBMIT_OK:
            if backlog >= SUBMIT_DRAIN_AT and not rt.manual:
                # Completions pile up while this thread submits: take them
                # here, in one batch, rather than leave them to the
                # completion thread (whose drain would cost this thread a
                # GIL hand-off).  Callbacks go to the callback thread.
                rt.drain(caller=True)
            return
        # Nothing was queued under this id: take it back and let the general
        # path deal with a full device or an error.
        with rt.lock:
            if rt.pending.pop(rid, None) is not None:
                self._inflight -= 1
                self._submitted -= 1
        self.submit(key, spec, [data], target)

    def _leave(self) -> None:
        rt = self._rt
        with rt.lock:
            self._active -= 1
            if self._active == 0 and self._closed:
                rt.lock_cond.notify_all()

    def submit(self, key: _KeyBase, spec: Any, datas: list[bytes], target: Any, block: bool = True) -> int:
        """Queue len(datas) operations; result i goes to (target, i).

        When every request slot is busy it waits for completions (or, with
        fallback="on_error_or_overflow", sends the rest to software).  With
        block=False (an event loop must not wait) it returns how many it
        queued and the caller keeps the rest.
        """
        n = len(datas)
        if n > TAG_MASK + 1:
            raise ValueError(f"a batch holds at most {TAG_MASK + 1} operations; split it")
        rt = self._rt
        dev = rt.device
        md = _ops.message_digest
        hname, dsize, pre = spec.hash_name, spec.digest_size, spec.prehashed
        is_rsa = isinstance(key, QatRSAPrivateKey)
        if is_rsa and spec.pss:
            bits = key.key_size  # type: ignore[attr-defined]
            enc = RSA_RAW
            inputs = [_ops.emsa_pss_encode(md(hname, dsize, pre, d), bits, spec) for d in datas]
            ilen = (bits + 7) // 8
        else:
            enc = RSA_PKCS1
            inputs = datas if pre else [md(hname, dsize, False, d) for d in datas]
            ilen = dsize
        blob = b"".join(inputs) if n > 1 else inputs[0]
        loop = _loop_of(target)
        if loop is not None and loop not in rt.loops and not rt.manual:
            rt.watch_loop(loop)
        rid = next(rt.rids)
        with rt.lock:
            if self._closed:
                raise EngineClosedError("engine is closed")
            rt.pending[rid] = [target, n, self, key, spec, datas]
            self._inflight += n
            self._submitted += n
            self._active += 1
        tag0 = rid << TAG_SHIFT
        done = 0
        try:
            handle = key._handles[id(self)]
            while True:
                chunk = blob if done == 0 else blob[done * ilen :]
                if is_rsa:
                    rc, k = dev.submit_rsa_many(handle, enc, spec.hash_id, chunk, ilen, n - done, tag0 + done)
                else:
                    rc, k = dev.submit_ecdsa_many(handle, chunk, ilen, n - done, tag0 + done)
                done += k
                if rc == SUBMIT_OK or done == n:
                    return n
                if rc != SUBMIT_FULL:
                    break
                if self._fallback == "on_error_or_overflow" and self._software is not None:
                    self._overflow(rid, target, key, spec, datas, done)
                    return n
                if not block:
                    self._forget(rid, n - done)
                    return done
                if self._closed:
                    rc = SUBMIT_CLOSED
                    break
                # Every request slot is busy: let completions drain, then go on.
                if rt.manual:
                    dev.poll()
                    rt.drain()
                else:
                    dev.wait(dev.seq(), 1_000_000)
        finally:
            self._leave()
        # The device refused the rest: fail those operations, nothing lost.
        if rc == SUBMIT_CLOSED:
            make: Any = lambda: EngineClosedError("engine is closed")
        elif rc == SUBMIT_BADARG:
            make = lambda: ValueError("input rejected by the shim (encoded message not below the modulus)")
        else:
            make = lambda: ValueError("the device key is not usable")
        self._forget(rid, n - done)
        deliver([(target, i, None, make()) for i in range(done, n)])
        return n

    def _forget(self, rid: int, count: int) -> None:
        """Take `count` operations of request `rid` out of the pending table
        (they were never queued on the device).  If close() already settled
        the request, it already did the accounting."""
        rt = self._rt
        with rt.lock:
            entry = rt.pending.get(rid)
            if entry is not None:
                entry[1] -= count
                if entry[1] == 0:
                    del rt.pending[rid]
                self._inflight -= count

    def _overflow(self, rid: int, target: Any, key: _KeyBase, spec: Any, datas: list[bytes], done: int) -> None:
        """The device is at capacity: send operations done.. to software."""
        left = len(datas) - done
        self._forget(rid, left)
        self._fallbacks["overflow"] = self._fallbacks.get("overflow", 0) + left
        log.debug("qatpy: %s at capacity: %d operations overflow to software", self.name, left)
        self._software().submit(
            key._sw_signer, key._sw_args(spec), datas[done:], [(target, i) for i in range(done, len(datas))]
        )

    def _fallback_on(self, status: int) -> bool:
        return self._fallback != "never" and status in _FALLBACK_REASON and self._software is not None

    def _reroute(self, entry: list[Any], index: int, reason: str) -> None:
        """Re-run one operation in software (per-op fallback), counted by reason."""
        target, key, spec, datas = entry[0], entry[3], entry[4], entry[5]
        count = self._fallbacks.get(reason, 0) + 1
        self._fallbacks[reason] = count
        # The first of each reason is a warning; the rest are counted in stats().
        log.log(
            logging.WARNING if count == 1 else logging.DEBUG,
            "qatpy: %s: operation re-run in software (%s, %d so far)",
            self.name,
            reason,
            count,
        )
        try:
            self._software().submit(key._sw_signer, key._sw_args(spec), [datas[index]], [(target, index)])
        except EngineClosedError as exc:
            deliver([(target, index, None, exc)])

    def new_future(self) -> DeviceFuture:
        return DeviceFuture(self._waiter)

    def wait(self, fut: Any) -> Any:
        self._wait_for(fut, None)
        return fut.result()

    def _wait_for(self, fut: Any, timeout: float | None) -> None:
        """Block until `fut` is done (or `timeout`), draining completions on
        this thread.

        The waiter drains itself rather than waiting for the completion
        thread: one thread switch fewer per result.  The completion counter
        is read before draining, so a completion that lands between the
        drain and the wait ends the wait at once (no lost wake-up).
        """
        rt = self._rt
        dev = rt.device
        end = None if timeout is None else time.monotonic() + timeout
        while not fut.done():
            if rt.stopping:
                return  # the runtime is gone: the future is settled by close()
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                return
            if rt.manual:
                if self.poll() == 0 and not fut.done():
                    time.sleep(min(self._poll_delay, left) if left is not None else self._poll_delay)
                continue
            seen = dev.seq()
            rt.drain(caller=True)
            if fut.done():
                return
            step = 20_000_000 if left is None else min(20_000_000, int(left * 1e9))
            dev.wait(seen, step)

    def poll(self) -> int:
        rt = self._rt
        rt.device.poll()
        return rt.drain()

    def stats(self) -> dict[str, Any]:
        rt = self._rt
        d: dict[str, Any] = {
            "submitted": self._submitted,
            "completed": self._completed,
            "failed": self._failed,
            "fallbacks": dict(self._fallbacks),
            "fallback_policy": self._fallback,
            "inflight": self._inflight,
            "libraries": list(self.libraries),
            "device": rt.device.stats() if rt.device._ptr is not None else {},
            "per_instance_completed": dict(sorted(rt.per_instance.items())),
            "instance_healthy": [rt.device.instance_healthy(i) == 1 for i in range(rt.device.stats()["num_instances"])]
            if rt.device._ptr is not None
            else [],
        }
        if rt.is_sim:
            sim: dict[str, int] = {}
            for name in (
                "submitted",
                "inflight",
                "inflight_max",
                "retry_returned",
                "mem.live_allocs",
                "mem.live_bytes",
                "mem.total_allocs",
                "mem.key_freed_unwiped",
                "refused.dma",
            ):
                v = _binding.sim_get(name)
                if v is not None:
                    sim[name] = v
            d["sim"] = sim
        return d

    def close(self, timeout: float) -> None:
        global _runtime
        rt = self._rt
        with rt.lock:
            if self._closed:
                return
            self._closed = True
        deadline = time.monotonic() + timeout
        while self._inflight > 0 and time.monotonic() < deadline:
            if rt.manual:
                if self.poll() == 0:
                    time.sleep(0.0005)
            else:
                time.sleep(0.001)
        # Threads still inside a submit hold key handles: let them leave
        # (they see _closed and stop) before the handles are released.
        with rt.lock:
            while self._active:
                rt.lock_cond.wait(0.05)
        left: list[Item] = []
        with rt.lock:
            for rid, entry in list(rt.pending.items()):
                if entry[2] is self:
                    del rt.pending[rid]
                    target, remaining = entry[0], entry[1]
                    self._inflight -= remaining
                    # A batch target learns which indices are missing by count only.
                    left += [
                        (target, i, None, EngineClosedError("engine closed before the device answered"))
                        for i in _unanswered(target, remaining)
                    ]
        deliver(left)
        for k in list(self._keys):
            k.release()
        with _runtime_lock:
            rt.refs -= 1
            last = rt.refs == 0 and _runtime is rt
            if last:
                _runtime = None
                _runtime_idle.clear()  # a new engine waits until this device is gone
        if last:
            try:
                rt.unwatch_loops()
                rt.device.shutdown(int(max(0.0, deadline - time.monotonic()) * 1e9))
                rt.stopping = True
                # close() may run inside a done-callback on the completion
                # thread itself: that thread leaves its loop on its own.
                if rt.thread is not None and rt.thread is not threading.current_thread():
                    rt.thread.join()
                rt.drain()
                rt.stop_callbacks(max(0.1, deadline - time.monotonic()))
                rt.device.free()
                if rt.is_sim:
                    _sim_end_session()
            finally:
                _runtime_idle.set()
