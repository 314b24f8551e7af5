"""The software backend: cryptography's own signing on every core.

cryptography >= 47 releases the GIL while OpenSSL signs, so a few threads
that do nothing but sign scale across cores.  Work is queued as jobs (one
operation, some of its indices); a worker takes whole jobs up to CHUNK
signatures and delivers each chunk's results at once, so the per-operation
hand-off that sinks a plain ThreadPoolExecutor for 24 us P-256 signatures is
paid once per chunk (measured on 2 cores: P-256 through a
ThreadPoolExecutor's map(chunksize=64) ran at 0.64x one thread's rate).

RSA keys are cloned once per worker: OpenSSL serialises signatures made
with one RSA object (its blinding state), measured here as x1.73 on two
threads with one key object against x2.01 with one object per thread.  The
clones belong to this backend and go with the key.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from ._backend import Operation, PrivateKey
from ._completion import DeviceFuture, Item, deliver, fail_all, fail_in_forked_child
from ._errors import EngineClosedError, EngineForkedError

CHUNK = 64


class Job:
    """Signatures `indices` of one operation, results to `target`."""

    __slots__ = ("op", "indices", "target")

    def __init__(self, op: Operation, indices: Sequence[int], target: Any) -> None:
        self.op = op
        self.indices = indices
        self.target = target


class SoftwareBackend:
    """Signs with cryptography on a pool of worker threads (started on first use)."""

    name = "software"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads if threads is not None else (os.cpu_count() or 1)
        self._queue: deque[Job] = deque()
        self._queued_ops = 0
        self._cond = threading.Condition(threading.Lock())
        self._workers: list[threading.Thread] = []
        self._closing = False
        self._busy = 0
        # Worker index -> the jobs it is signing now (for a forked child).
        self._running: dict[int, list[Job]] = {}
        self._stats = {"submitted": 0, "completed": 0, "failed": 0, "chunks": 0, "sync_ops": 0}
        # qatpy key object -> {worker index: that worker's RSA clone}
        self._clones: weakref.WeakKeyDictionary[object, dict[int, rsa.RSAPrivateKey]] = weakref.WeakKeyDictionary()

    # -- the Backend protocol -------------------------------------------------
    def accepts(self, op: Operation) -> bool:
        if self._closing:
            raise EngineClosedError("engine is closed")
        return True

    def sign(self, op: Operation) -> bytes:
        """A blocking sign on the caller's thread: no hand-off at all."""
        if self._closing:
            raise EngineClosedError("engine is closed")
        self._stats["sync_ops"] += 1  # approximate under threads; never used for control
        return op.software_sign(0)

    def submit(
        self,
        op: Operation,
        target: Any,
        loop: asyncio.AbstractEventLoop | None = None,
        indices: Sequence[int] | None = None,
    ) -> None:
        """Queue op's signatures (or only `indices` of them: the fallback
        policy's re-runs); result i goes to (target, i)."""
        idx: Sequence[int] = range(len(op.datas)) if indices is None else indices
        n = len(idx)
        # Split big batches so every worker gets a share, in pieces <= CHUNK.
        piece = max(1, min(CHUNK, -(-n // self.threads)))
        jobs = [Job(op, idx[i : i + piece], target) for i in range(0, n, piece)]
        with self._cond:
            if self._closing:
                raise EngineClosedError("engine is closed")
            if not self._workers:
                self._start_workers()
            self._queue.extend(jobs)
            self._queued_ops += n
            self._stats["submitted"] += n
            self._cond.notify(min(len(jobs), self.threads))

    def sign_future(self, op: Operation) -> cf.Future[bytes]:
        fut = DeviceFuture()
        self.submit(op, fut)
        return fut

    def wait(self, op: Operation, fut: cf.Future[Any], timeout: float | None = None) -> None:
        cf.wait([fut], timeout)

    def poll(self) -> int:
        return 0

    def stats(self) -> dict[str, Any]:
        with self._cond:
            d: dict[str, Any] = dict(self._stats)
            d["queued"] = self._queued_ops
            d["threads"] = self.threads
        return d

    def close(self, deadline: float) -> None:
        """Stop the workers once the queue drains (until `deadline`); fail
        what is still queued then with EngineClosedError."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        me = threading.current_thread()
        for t in self._workers:
            if t is me:  # close() called from a done-callback on this worker
                continue
            t.join(max(0.0, deadline - time.monotonic()))
        left: list[tuple[Any, int]] = []
        with self._cond:
            while self._queue:
                job = self._queue.popleft()
                left += [(job.target, i) for i in job.indices]
            self._queued_ops = 0
        fail_all(left, lambda: EngineClosedError("engine closed before the operation ran"))

    def fail_after_fork(self) -> None:
        """In a forked child: the workers are gone; fail what they held or had
        queued with EngineForkedError."""
        self._cond = threading.Condition(threading.Lock())
        self._closing = True
        jobs = list(self._queue) + [j for js in self._running.values() for j in js]
        self._queue.clear()
        self._running.clear()
        self._workers = []
        fail_in_forked_child(
            [(job.target, i) for job in jobs for i in job.indices],
            lambda: EngineForkedError("the engine's process forked before this operation finished"),
        )

    # -- workers ------------------------------------------------------------
    def inflight(self) -> int:
        with self._cond:
            return self._queued_ops + self._busy

    def _start_workers(self) -> None:
        # Workers start on first use: creating an engine does no work.
        for i in range(self.threads):
            t = threading.Thread(target=self._work, args=(i,), name=f"qatpy-sw-{i}", daemon=True)
            t.start()
            self._workers.append(t)

    def _key_for(self, op: Operation, widx: int) -> PrivateKey:
        """The key worker `widx` signs op with: its own clone for RSA."""
        if not isinstance(op.key, rsa.RSAPrivateKey):
            return op.key
        clones = self._clones.get(op.owner)
        if clones is None:
            clones = self._clones.setdefault(op.owner, {})
        clone = clones.get(widx)
        if clone is None:
            clone = clones.setdefault(widx, op.key.private_numbers().private_key())
        return clone

    def _work(self, widx: int) -> None:
        q = self._queue
        cond = self._cond
        while True:
            with cond:
                while not q and not self._closing:
                    cond.wait()
                if not q:
                    return
                # A fair share: at most ceil(queued / threads) operations, so
                # every idle worker finds work (taking whole queues left one
                # core idle below ~128 queued operations, measured).
                share = min(CHUNK, -(-self._queued_ops // self.threads))
                jobs = [q.popleft()]
                taken = len(jobs[0].indices)
                while q and taken + len(q[0].indices) <= share:
                    job = q.popleft()
                    jobs.append(job)
                    taken += len(job.indices)
                self._queued_ops -= taken
                self._busy += 1
                self._running[widx] = jobs
                if q:
                    cond.notify()
            out: list[Item] = []
            failed = 0
            for job in jobs:
                op, target = job.op, job.target
                sign = self._key_for(op, widx).sign
                datas, extra = op.datas, op.spec.sw_args
                for i in job.indices:
                    try:
                        out.append((target, i, sign(datas[i], *extra), None))
                    except Exception as exc:  # delivered to the caller's future
                        out.append((target, i, None, exc))
                        failed += 1
            # Counters first, so a caller woken by its result sees them.
            with cond:
                self._busy -= 1
                self._stats["completed"] += taken
                self._stats["failed"] += failed
                self._stats["chunks"] += 1
            deliver(out)
            self._running.pop(widx, None)  # after delivery: a fork in between fails them again, harmlessly
