"""Delivery of results to waiters, in batches.

A backend finishes operations in batches (a software worker's chunk, one
drain of the shim's completion ring) and hands each batch to `deliver`.
Targets are:

* `DeviceFuture` (a ``concurrent.futures.Future``) or a plain one -
  resolved in place (it must already be RUNNING, so a caller cannot
  cancel work the device holds);
* ``asyncio.Future`` - grouped per event loop, one ``call_soon_threadsafe``
  per loop per batch (a single wake-up resolves many futures);
* `BatchResult` - the collector behind ``sign_many``, updated once per batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Union

Target = Union["cf.Future[Any]", "asyncio.Future[Any]", "BatchResult", "FutureGroup"]
# (target, index within a BatchResult, value, exception)
Item = tuple[Any, int, Any, BaseException | None]


_FINISHED = "FINISHED"
_DONE_STATES = frozenset(("CANCELLED", "CANCELLED_AND_NOTIFIED", _FINISHED))


class DeviceFuture(cf.Future):  # type: ignore[type-arg]
    """The ``concurrent.futures.Future`` that ``sign_future`` returns.

    It behaves exactly as the standard class, and costs less per operation:

    * the condition variable that ``Future`` makes in ``__init__`` is made
      on first use (``add_done_callback``, ``cf.wait``, a blocking wait);
      most futures are resolved before anyone waits and never need one;
    * `settle` resolves it without that lock when none exists (nobody can
      be waiting then), and through the standard path when one does;
    * on the device, ``result()`` and ``exception()`` drain the device's
      completions on the calling thread while waiting (`waiter`), instead
      of waiting for the completion thread to hand the result over: one
      thread switch and GIL hand-off fewer per result.

    Why the lock-free settle is safe (under the GIL): `settle` publishes
    the state *before* it looks for a condition, and every waiter creates
    the condition *before* it reads the state under it.  So either the
    waiter sees FINISHED, or `settle` sees the condition and notifies
    under it (runs the callbacks, wakes ``cf.wait`` waiters) as
    ``Future.set_result`` does.
    """

    _waiter: Callable[[DeviceFuture, float | None], None] | None = None

    def __init__(self, waiter: Callable[[DeviceFuture, float | None], None] | None = None) -> None:
        # Not super().__init__(): that makes the condition eagerly.
        # Born RUNNING: the operation is handed over right away and cannot
        # be cancelled (the state set_running_or_notify_cancel gives).
        self._state = "RUNNING"
        self._result = None
        self._exception = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Callable[[DeviceFuture], object]] = []
        if waiter is not None:
            self._waiter = waiter

    def __getattr__(self, name: str) -> Any:
        if name == "_condition":
            # setdefault is atomic: racing first users share one condition.
            return self.__dict__.setdefault("_condition", threading.Condition())
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def done(self) -> bool:
        return self._state in _DONE_STATES

    def _wait_here(self, timeout: float | None) -> float | None:
        """Drain while waiting; returns what is left of `timeout`."""
        if self._waiter is None or self._state in _DONE_STATES:
            return timeout
        end = None if timeout is None else time.monotonic() + timeout
        self._waiter(self, timeout)
        return None if end is None else max(0.0, end - time.monotonic())

    def result(self, timeout: float | None = None) -> Any:
        if self._state != _FINISHED:
            timeout = self._wait_here(timeout)
            if self._state != _FINISHED:
                return super().result(timeout)
        exc = self._exception
        if exc is None:
            return self._result
        try:
            raise exc
        finally:
            exc = self = None  # type: ignore[assignment]  # no frame <-> traceback cycle

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state != _FINISHED:
            timeout = self._wait_here(timeout)
            if self._state != _FINISHED:
                return super().exception(timeout)
        return self._exception


def settle(fut: DeviceFuture, value: Any, exc: BaseException | None) -> None:
    """Resolve `fut` once (a second answer for it is ignored)."""
    if fut._state in _DONE_STATES:
        return
    if exc is None:
        fut._result = value
    else:
        fut._exception = exc
    fut._state = _FINISHED  # publish first (see DeviceFuture)
    cond = fut.__dict__.get("_condition")
    if cond is None:
        return  # no waiter, no callback, no cf.wait: nobody to tell
    with cond:
        for w in fut._waiters:
            if exc is None:
                w.add_result(fut)
            else:
                w.add_exception(fut)
        cond.notify_all()
    fut._invoke_callbacks()


class FutureGroup:
    """Several asyncio futures (of one loop) submitted as one batch: result i
    resolves futs[i]."""

    __slots__ = ("futs",)

    def __init__(self, futs: list[asyncio.Future[Any]]) -> None:
        self.futs = futs

    def missing(self) -> list[int]:
        return [i for i, f in enumerate(self.futs) if not f.done()]


class BatchResult:
    """Results of one batch of operations, completed when all have arrived."""

    __slots__ = ("results", "errors", "remaining", "times", "_lock", "_done", "first_error", "_filled")

    def __init__(self, n: int, done: Any, record_times: bool = False) -> None:
        self.results: list[Any] = [None] * n
        self.errors = 0
        self.first_error: BaseException | None = None
        self.remaining = n
        # Each index is settled once: a late second answer (a result racing
        # a close, a re-run racing its original) is ignored.
        self._filled = bytearray(n)
        self.times: list[float] | None = [0.0] * n if record_times else None
        self._lock = threading.Lock()
        self._done = done  # a cf.Future or asyncio.Future resolved with self

    def _put_many(self, items: list[Item]) -> bool:
        now = time.perf_counter() if self.times is not None else 0.0
        with self._lock:
            if self.remaining <= 0:
                return False
            fresh = 0
            for _, index, value, exc in items:
                if self._filled[index]:
                    continue
                self._filled[index] = 1
                fresh += 1
                if exc is not None:
                    self.results[index] = exc
                    self.errors += 1
                    if self.first_error is None:
                        self.first_error = exc
                else:
                    self.results[index] = value
                if self.times is not None:
                    self.times[index] = now
            self.remaining -= fresh
            return fresh > 0 and self.remaining == 0

    def missing(self) -> list[int]:
        """Indices with no result yet (their slots still hold None)."""
        with self._lock:
            return [i for i, f in enumerate(self._filled) if not f]

    def finish(self) -> Item:
        return (self._done, 0, self, None)

    def __len__(self) -> int:
        return len(self.results)


def _resolve_async(items: list[Item]) -> None:
    for fut, _, value, exc in items:
        if fut.done():  # cancelled by its awaiter: drop the result
            continue
        if exc is None:
            fut.set_result(value)
        else:
            fut.set_exception(exc)


def deliver(items: Iterable[Item]) -> None:
    """Resolve every target in `items`; safe from any thread."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Item]] | None = None
    batches: dict[BatchResult, list[Item]] | None = None
    for item in items:
        target = item[0]
        tt = type(target)
        if tt is DeviceFuture:
            settle(target, item[2], item[3])
        elif tt is cf.Future:
            if item[3] is None:
                target.set_result(item[2])
            else:
                target.set_exception(item[3])
        elif tt is BatchResult:
            if batches is None:
                batches = {}
            batches.setdefault(target, []).append(item)
        elif tt is FutureGroup:
            fut = target.futs[item[1]]
            if by_loop is None:
                by_loop = {}
            by_loop.setdefault(fut.get_loop(), []).append((fut, 0, item[2], item[3]))
        else:
            if by_loop is None:
                by_loop = {}
            by_loop.setdefault(target.get_loop(), []).append(item)
    if batches:
        finished = [b.finish() for b, its in batches.items() if b._put_many(its)]
        if finished:
            deliver(finished)
    if by_loop:
        for loop, its in by_loop.items():
            _call_in_loop(loop, _resolve_async, its)


def _call_in_loop(loop: asyncio.AbstractEventLoop, fn: Callable[[list[Item]], None], arg: list[Item]) -> None:
    if asyncio._get_running_loop() is loop:
        fn(arg)
        return
    try:
        loop.call_soon_threadsafe(fn, arg)
    except RuntimeError:
        # The loop is closed: nobody can await these futures any more.
        pass


def fail_all(items: Iterable[tuple[Any, int]], exc_factory: Callable[[], BaseException]) -> None:
    """Resolve each (target, index) with a fresh exception."""
    deliver([(t, i, None, exc_factory()) for t, i in items])
