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
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

# (target, index within a BatchResult, value, exception)
Item = tuple[Any, int, Any, BaseException | None]


_FINISHED = "FINISHED"
_DONE_STATES = frozenset(("CANCELLED", "CANCELLED_AND_NOTIFIED", _FINISHED))


# Guards the creation of a future's condition against settle_many's
# lock-free path (see DeviceFuture).
_COND_LOCK = threading.Lock()


class DeviceFuture(cf.Future):  # type: ignore[type-arg]
    """The ``concurrent.futures.Future`` that ``sign_future`` returns.

    It behaves as the standard class and costs less per operation:

    * the condition variable that ``Future`` makes in ``__init__`` is made
      on first use (``add_done_callback``, ``cf.wait``, ``as_completed``, a
      blocking wait); most futures are resolved before anyone waits and
      never need one;
    * `settle_many` resolves futures that have no condition under one
      module lock for the whole batch, and the others through the standard
      path (state, ``cf.wait`` waiters and ``notify_all`` under the
      future's own condition, then the callbacks);
    * on the device, ``result()`` and ``exception()`` drain the device's
      completions on the calling thread while waiting (`waiter`), instead
      of waiting for the completion thread to hand the result over: one
      thread switch and GIL hand-off fewer per result; in software they
      sign queued operations on the calling thread while waiting.

    Why this is safe: the standard waiters (``cf.wait``, ``as_completed``,
    ``Future.result``) read ``_state`` under the future's condition and
    rely on it not changing until they wait.  A condition is created only
    under `_COND_LOCK`, and the lock-free path changes the state only under
    `_COND_LOCK` after seeing no condition; so a waiter's condition either
    exists before the state changes (then the change is made under it) or
    is created after (then the waiter reads FINISHED).
    """

    _waiter: Callable[[DeviceFuture, float | None], object] | None = None

    def __init__(self, waiter: Callable[[DeviceFuture, float | None], object] | None = None) -> None:
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
            with _COND_LOCK:
                cond = self.__dict__.get("_condition")
                if cond is None:
                    cond = self.__dict__["_condition"] = threading.Condition()
            return cond
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


def finished_future(value: Any, exc: BaseException | None) -> DeviceFuture:
    """A DeviceFuture born finished, with `value` or `exc` (the attributes
    DeviceFuture.__init__ sets, set here without that call)."""
    fut: DeviceFuture = _new_future(DeviceFuture)
    fut._state = _FINISHED  # nobody else has it yet
    fut._result = value
    fut._exception = exc
    fut._waiters = []
    fut._done_callbacks = []
    return fut


_new_future = cf.Future.__new__


#: Where callbacks go when the thread resolving futures must not run them
#: (it is a caller inside sign() or result(), see deliver()).
Defer = Callable[[list[DeviceFuture]], None]


def settle_many(items: list[tuple[DeviceFuture, Any, BaseException | None]], defer: Defer | None = None) -> None:
    """Resolve each future once (a second answer for one is ignored).

    Callbacks run here, after every future of the batch is resolved, or go
    to `defer` when given."""
    slow: list[tuple[DeviceFuture, Any, BaseException | None]] = []
    with _COND_LOCK:
        for item in items:
            fut = item[0]
            if "_condition" in fut.__dict__:
                slow.append(item)
            elif fut._state not in _DONE_STATES:
                if item[2] is None:
                    fut._result = item[1]
                else:
                    fut._exception = item[2]
                fut._state = _FINISHED  # nobody can be waiting: no condition yet
    if not slow:
        return
    called: list[DeviceFuture] = []
    for fut, value, exc in slow:
        cond = fut._condition
        with cond:
            if fut._state in _DONE_STATES:
                continue
            if exc is None:
                fut._result = value
            else:
                fut._exception = exc
            fut._state = _FINISHED
            for w in fut._waiters:
                if exc is None:
                    w.add_result(fut)
                else:
                    w.add_exception(fut)
            cond.notify_all()
        if fut._done_callbacks:
            called.append(fut)
    if not called:
        return
    if defer is not None:
        defer(called)
    else:
        for fut in called:
            fut._invoke_callbacks()  # logs and swallows what a callback raises


class CallbackThread:
    """A `Defer`: runs the done-callbacks handed to `defer` on a
    ``qatpy-callbacks`` thread, started on first need, so that the thread
    that resolved the futures (a caller inside qatpy) never runs them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[list[DeviceFuture] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    def defer(self, futs: list[DeviceFuture]) -> None:
        """Run these futures' callbacks on the thread (here, once `stop` was called)."""
        with self._lock:  # orders every put against stop()'s sentinel
            if not self._closed:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="qatpy-callbacks", daemon=True)
                    self._thread.start()
                self._queue.put(futs)
                return
        for fut in futs:
            fut._invoke_callbacks()

    def stop(self, timeout: float) -> None:
        """Let the thread run what is queued, then end; a later `defer` runs
        its callbacks itself."""
        with self._lock:
            self._closed = True
            t = self._thread
            if t is not None:
                self._queue.put(None)  # after the callbacks already queued
        if t is not None and t is not threading.current_thread():
            t.join(timeout)

    def _run(self) -> None:
        while True:
            futs = self._queue.get()
            if futs is None:
                return
            for fut in futs:
                fut._invoke_callbacks()  # logs and swallows what a callback raises


def settle(fut: DeviceFuture, value: Any, exc: BaseException | None) -> None:
    """Resolve one future (see settle_many)."""
    settle_many([(fut, value, exc)])


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
                return True
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
            # Complete: finish() is delivered (again, harmlessly, when a
            # delivery is redone after an interruption).
            return self.remaining == 0

    def put_run(self, lo: int, values: list[Any]) -> bool:
        """Results lo, lo + 1, ... (signatures, no exception) at once; as
        `_put_many` otherwise (some of them were settled already).  Returns
        whether the batch is complete."""
        n = len(values)
        hi = lo + n
        now = time.perf_counter() if self.times is not None else 0.0
        with self._lock:
            if self.remaining <= 0:
                return True
            if self._filled.find(1, lo, hi) < 0:
                self._filled[lo:hi] = b"\x01" * n
                self.results[lo:hi] = values
                if self.times is not None:
                    self.times[lo:hi] = [now] * n
                self.remaining -= n
                return self.remaining == 0
        return self._put_many([(self, lo + k, v, None) for k, v in enumerate(values)])

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


def deliver(items: Iterable[Item], defer: Defer | None = None) -> None:
    """Resolve every target in `items`; safe from any thread.

    `defer`: set when this thread is a caller inside qatpy (a blocking
    ``sign()``, a ``result()`` draining the device): the done-callbacks of
    the futures it resolves are handed to `defer` instead of running here,
    so a callback never runs inside a caller that may hold its locks, and
    a callback that submits again does not recurse into the drain."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Item]] | None = None
    batches: dict[BatchResult, list[Item]] | None = None
    futs: list[tuple[DeviceFuture, Any, BaseException | None]] | None = None
    for item in items:
        target = item[0]
        tt = type(target)
        if tt is DeviceFuture:
            if futs is None:
                futs = []
            futs.append((target, item[2], item[3]))
        elif tt is cf.Future:
            if target.done():  # resolved already (a delivery redone after an interruption)
                continue
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
    if futs:
        settle_many(futs, defer)
    if batches:
        finished = [b.finish() for b, its in batches.items() if b._put_many(its)]
        if finished:
            deliver(finished, defer)
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


def _reinit_after_fork() -> None:
    # A parent thread may have held it at fork(); it does not exist here.
    global _COND_LOCK
    _COND_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)


def fail_in_forked_child(items: list[tuple[Any, int]], exc_factory: Callable[[], BaseException]) -> None:
    """In a forked child (one thread, right after fork()): resolve targets
    the parent was waiting on.  Their locks may have been held by parent
    threads that do not exist here, so each is made afresh before use."""
    for target, _ in items:
        for owner in (target, getattr(target, "_done", None)):  # a BatchResult and its future
            cond = getattr(owner, "__dict__", {}).get("_condition")
            if cond is not None:
                cond._at_fork_reinit()
            lock = getattr(owner, "_lock", None)
            if lock is not None and hasattr(lock, "_at_fork_reinit"):
                lock._at_fork_reinit()
    fail_all(items, exc_factory)
