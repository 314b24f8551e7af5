"""The software backend: cryptography's own signing on every core.

cryptography >= 47 releases the GIL while OpenSSL signs, so a few threads
that do nothing but sign scale across cores.  Work is queued as jobs (one
key, one set of sign arguments, many messages); a worker takes whole jobs up
to CHUNK operations and delivers each chunk's results at once, so the
per-operation hand-off that sinks a plain ThreadPoolExecutor for 24 us P-256
signatures is paid once per chunk (measured on 2 cores: P-256 through a
ThreadPoolExecutor's map(chunksize=64) ran at 0.64x one thread's rate).

RSA keys are cloned once per worker: OpenSSL serialises signatures made
with one RSA object (its blinding state), measured here as x1.73 on two
threads with one key object against x2.01 with one object per thread.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ._completion import Item, deliver
from ._errors import EngineClosedError

CHUNK = 64


class Job:
    """Messages to sign with one signer and one argument tuple."""

    __slots__ = ("signer", "extra", "datas", "targets")

    def __init__(
        self,
        signer: Callable[[int], Callable[..., bytes]],
        extra: tuple[Any, ...],
        datas: list[bytes],
        targets: list[tuple[Any, int]],
    ) -> None:
        self.signer = signer  # worker index -> sign function
        self.extra = extra
        self.datas = datas
        self.targets = targets


class SoftwareBackend:
    name = "software"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads if threads is not None else (os.cpu_count() or 1)
        self._queue: deque[Job] = deque()
        self._queued_ops = 0
        self._cond = threading.Condition(threading.Lock())
        self._workers: list[threading.Thread] = []
        self._closing = False
        self._busy = 0
        self._stats = {"submitted": 0, "completed": 0, "failed": 0, "chunks": 0, "sync_ops": 0}

    def _start_workers(self) -> None:
        # Workers start on first use: creating an engine does no work.
        for i in range(self.threads):
            t = threading.Thread(target=self._work, args=(i,), name=f"qatpy-sw-{i}", daemon=True)
            t.start()
            self._workers.append(t)

    def submit(
        self,
        signer: Callable[[int], Callable[..., bytes]],
        extra: tuple[Any, ...],
        datas: list[bytes],
        targets: list[tuple[Any, int]],
    ) -> None:
        n = len(datas)
        # Split big batches so every worker gets a share, in pieces <= CHUNK.
        piece = max(1, min(CHUNK, -(-n // self.threads)))
        jobs = [Job(signer, extra, datas[i : i + piece], targets[i : i + piece]) for i in range(0, n, piece)]
        with self._cond:
            if self._closing:
                raise EngineClosedError("engine is closed")
            if not self._workers:
                self._start_workers()
            self._queue.extend(jobs)
            self._queued_ops += n
            self._stats["submitted"] += n
            self._cond.notify(min(len(jobs), self.threads))

    def run_sync(self, fn: Callable[..., bytes], args: tuple[Any, ...]) -> bytes:
        """A blocking sign on the caller's thread: no hand-off at all."""
        if self._closing:
            raise EngineClosedError("engine is closed")
        self._stats["sync_ops"] += 1  # approximate under threads; never used for control
        return fn(*args)

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
                taken = len(jobs[0].datas)
                while q and taken + len(q[0].datas) <= share:
                    job = q.popleft()
                    jobs.append(job)
                    taken += len(job.datas)
                self._queued_ops -= taken
                self._busy += 1
                if q:
                    cond.notify()
            out: list[Item] = []
            failed = 0
            for job in jobs:
                sign = job.signer(widx)
                extra = job.extra
                for d, (target, index) in zip(job.datas, job.targets):
                    try:
                        out.append((target, index, sign(d, *extra), None))
                    except Exception as exc:  # delivered to the caller's future
                        out.append((target, index, None, exc))
                        failed += 1
            # Counters first, so a caller woken by its result sees them.
            with cond:
                self._busy -= 1
                self._stats["completed"] += taken
                self._stats["failed"] += failed
                self._stats["chunks"] += 1
            deliver(out)

    def inflight(self) -> int:
        with self._cond:
            return self._queued_ops + self._busy

    def close(self, timeout: float | None) -> list[tuple[Any, int]]:
        """Stop the workers once the queue drains (up to `timeout` seconds).

        Returns the (target, index) of operations still queued when time ran
        out; the engine fails them with EngineClosedError.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        me = threading.current_thread()
        for t in self._workers:
            if t is me:  # close() called from a done-callback on this worker
                continue
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        left: list[tuple[Any, int]] = []
        with self._cond:
            while self._queue:
                left.extend(self._queue.popleft().targets)
            self._queued_ops = 0
        return left

    def stats(self) -> dict[str, Any]:
        with self._cond:
            d: dict[str, Any] = dict(self._stats)
            d["queued"] = self._queued_ops
            d["threads"] = self.threads
        return d
