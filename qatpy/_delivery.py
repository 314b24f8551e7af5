"""Result delivery on the device path: from the shim's completion ring to the
targets of the requests that the completions answer.

Owns the threads that move results: the completion thread (sleeps in C,
GIL released, until completions wait unclaimed, then drains them in one
batch), the callback thread (runs done-callbacks of futures that a caller's
own drain resolved, so a callback never runs inside a caller), and the
event loops watching the shim's eventfd (they drain in the loop, so asyncio
futures resolve without a cross-thread hand-off).  One per device session.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
import weakref
from typing import Any

from . import _binding
from ._binding import DRAIN_MAX
from ._completion import CallbackThread, DeviceFuture, Item, deliver
from ._pending import TAG_MASK, TAG_SHIFT, PendingTable, Request
from ._status import Status, completion_error

log = logging.getLogger("qatpy")

# How long the completion thread leaves fresh completions to the threads and
# event loops that are waiting for them before it delivers them itself.
COMPLETION_GRACE_NS = 200_000

_ST_OK = int(Status.OK)
_MAIN = threading.main_thread()


class Delivery:
    def __init__(self, device: _binding.Device, pending: PendingTable, manual: bool) -> None:
        self.device = device
        self.pending = pending
        self.manual = manual
        self.per_instance: collections.Counter[int] = collections.Counter()  # completions, by instance index
        # The drain's own state (see drain()): one drain at a time; a
        # callback that drains again from inside a delivery re-enters.
        self._lock = threading.RLock()
        self._pos = 0  # entries of the device's current batch gone through
        self._outbox: list[Item] = []
        self._reroutes: collections.deque[tuple[Request, int, int]] = collections.deque()
        self.stopping = False
        self.loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        self._loops_lock = threading.Lock()
        self._unwatched = False  # set once, when the device is going: no loop is added after
        # The shim's eventfd, read once while the device is certainly alive
        # (it lives as long as the device; loops never call into it for this).
        self._event_fd = -1 if manual else device.event_fd()
        # The fd a loop watches to poll for its own lone request (the shim's
        # drive.c): readable when the device signals, or in timer mode when
        # the poll delay has passed.  Same lifetime as the eventfd.
        self._drive_fd = -1 if manual else device.drive_fd()
        self.thread: threading.Thread | None = None
        # Done-callbacks of futures resolved by a caller's drain (see
        # deliver()) run here, on a thread started when first needed.
        self._callbacks = CallbackThread()
        self.defer = self._callbacks.defer
        if not manual:
            self.thread = threading.Thread(target=self._completion_loop, name="qatpy-completions", daemon=True)
            self.thread.start()

    # -- draining -------------------------------------------------------------
    #
    # A drain must not lose completions to an exception raised in the middle
    # of it (KeyboardInterrupt, or anything a signal handler raises, lands on
    # the main thread at almost any bytecode).  So everything a drain has
    # taken lives on this object until it is delivered, and every step can be
    # redone without effect:
    #   - the batch taken from the ring stays in the device's arrays, with its
    #     count written by C, until `_pos` has passed all of it;
    #   - an entry is first recorded for delivery (outbox / reroutes), then
    #     accounted in the pending table by a run of plain stores with no call
    #     in between (no exception can land inside it), then `_pos` moves on:
    #     an entry taken twice finds its request gone, or its index marked
    #     answered, and is skipped;
    #   - delivery is idempotent (a settled future, a filled batch index, a
    #     done asyncio future ignore a second answer), and the outbox is
    #     cleared only after it went through.
    # Whatever an interrupted drain left is finished by the next drain on any
    # thread; the completion thread drains at least every 50 ms.
    def drain(self, caller: bool = False) -> int:
        """Take the waiting completions and resolve their targets; returns how
        many were handled.  `caller`: this thread is inside a sign()/result()/
        submit, so done-callbacks go to the callback thread instead of running
        here (see deliver()).  Callbacks never run inside a drain on the main
        thread, where a signal handler's exception could cut them short."""
        if caller or threading.current_thread() is _MAIN:
            defer: Any = self.defer
            run_here: list[DeviceFuture] | None = None
        else:
            run_here = []
            defer = run_here.extend
        with self._lock:
            handled = self._drain_locked(defer)
        if run_here:
            for fut in run_here:
                fut._invoke_callbacks()  # logs and swallows what a callback raises
        return handled

    def _drain_locked(self, defer: Any) -> int:
        dev = self.device
        pending = self.pending
        requests = pending.requests
        outbox = self._outbox
        reroutes = self._reroutes
        handled = 0
        refilled = False
        results, stride = dev.results_buffer()
        while True:
            n, tags, sts, cpas, lens, insts = dev.view()
            pos = self._pos
            if pos < n:
                with pending.lock:
                    for i in range(pos, n):
                        tag = tags[i]
                        req = requests.get(tag >> TAG_SHIFT)
                        if req is not None:
                            index = tag & TAG_MASK
                            answered = req.answered
                            if answered is None or not answered[index]:
                                st = sts[i]
                                owner = req.owner
                                if st == _ST_OK:
                                    start = i * stride
                                    outbox.append((req.target, index, results[start : start + lens[i]], None))
                                    failed = 0
                                elif owner.reroutes(st):
                                    reroutes.append((req, index, st))
                                    failed = 0
                                else:
                                    outbox.append((req.target, index, None, completion_error(st, cpas[i])))
                                    failed = 1
                                # From here to the end of the entry: stores only, no call.
                                if answered is not None:
                                    answered[index] = 1
                                req.remaining -= 1
                                if req.remaining == 0:
                                    del requests[tag >> TAG_SHIFT]
                                owner._inflight -= 1
                                owner._completed += 1
                                owner._failed += failed
                                handled += 1
                        self._pos = i + 1
            self._flush(defer)
            if refilled and n < DRAIN_MAX:
                return handled  # that batch was short: the ring was empty when it was taken
            # Everything taken so far is delivered: take the next batch.
            # `_pos` goes back first, so an interruption between the two
            # leaves the old batch to be gone through again (harmlessly).
            self._pos = 0
            if not dev.refill():
                return handled
            refilled = True
            batch = dev.view()
            if batch[0] == 0:
                return handled
            self.per_instance.update(batch[5])

    def _flush(self, defer: Any) -> None:
        """Deliver what the entries gone through so far produced."""
        outbox = self._outbox
        if outbox:
            deliver(outbox, defer)
            outbox.clear()
        reroutes = self._reroutes
        while reroutes:
            req, index, st = reroutes[0]
            req.owner.reroute(req, index, st)  # a second run after an interruption only duplicates work
            reroutes.popleft()

    def _completion_loop(self) -> None:
        seen = 0
        dev = self.device
        while not self.stopping:
            # GIL released while waiting; returns only for completions that
            # no waiter or event loop claimed within the grace period.
            seen = dev.wait_unclaimed(seen, COMPLETION_GRACE_NS, 50_000_000)
            self.drain()

    # -- event loops ----------------------------------------------------------
    def watch_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Let `loop` drain completions itself when the shim's eventfd fires,
        so its futures resolve without a cross-thread hand-off."""
        if self.manual:
            return
        with self._loops_lock:
            if loop in self.loops or self._unwatched:
                return
            self.loops.add(loop)
        # On the loop's own thread (the caller is in it): a removal that
        # _unwatch_loops schedules on this loop runs after this.
        loop.add_reader(self._event_fd, self._on_readable)
        loop.add_reader(self._drive_fd, self._on_drive)

    def _on_readable(self) -> None:
        # Clear before draining: a completion pushed after the clear re-arms
        # the fd, so nothing is left behind unannounced.
        self.device.event_clear()
        self.drain()

    def _on_drive(self) -> None:
        # A driven request may have its answer: look (the shim polls the
        # device; what that pushes to the ring wakes nobody), then drain.
        if self.device.drive_tick() > 0:
            self.drain()

    def _unwatch_loops(self, timeout: float) -> None:
        """Take the eventfd's reader off every watching loop before the
        device (and with it the fd) goes: a reader left behind would watch
        whatever the process opens next under that fd number.  A running
        loop of another thread removes it on its own thread; this waits for
        that (at most `timeout` seconds)."""
        fds = (self._event_fd, self._drive_fd)
        with self._loops_lock:
            self._unwatched = True
            loops, self.loops = list(self.loops), weakref.WeakSet()
        removed: list[threading.Event] = []
        for loop in loops:
            if loop.is_closed():
                continue
            try:
                if asyncio._get_running_loop() is loop or not loop.is_running():
                    for fd in fds:
                        loop.remove_reader(fd)  # nothing selects on it meanwhile
                else:
                    done = threading.Event()
                    loop.call_soon_threadsafe(_remove_readers, loop, fds, done)
                    removed.append(done)
            except RuntimeError:  # closed meanwhile
                pass
        end = time.monotonic() + timeout
        for done in removed:
            done.wait(max(0.0, end - time.monotonic()))

    # -- shutdown -------------------------------------------------------------
    def stop(self, shutdown_device: Any, callback_timeout: float) -> None:
        """The device's last engine closed: stop watching loops, shut the
        device down (`shutdown_device()`, which completes what is left as
        CLOSED), stop the completion thread, take the last completions and
        run the last deferred callbacks."""
        self._unwatch_loops(min(1.0, callback_timeout))
        shutdown_device()
        self.stopping = True
        # stop() may run inside a done-callback on the completion thread
        # itself: that thread leaves its loop on its own.  Its wait returns
        # at once after shutdown (the ring is closed).
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(callback_timeout)
        self.drain()
        self.stop_callbacks(callback_timeout)

    def stop_callbacks(self, timeout: float) -> None:
        """Let the callback thread run what is queued, then end; a later
        defer() runs its callbacks itself."""
        self._callbacks.stop(timeout)


def _remove_readers(loop: asyncio.AbstractEventLoop, fds: tuple[int, ...], done: threading.Event) -> None:
    try:
        for fd in fds:
            loop.remove_reader(fd)
    finally:
        done.set()
