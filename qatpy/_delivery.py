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
import queue
import threading
import weakref
from typing import Any

from . import _binding
from ._completion import DeviceFuture, Item, deliver
from ._pending import TAG_MASK, TAG_SHIFT, PendingTable, Request
from ._status import Status

log = logging.getLogger("qatpy")

# How long the completion thread leaves fresh completions to the threads and
# event loops that are waiting for them before it delivers them itself.
COMPLETION_GRACE_NS = 200_000

_ST_OK = int(Status.OK)


class Delivery:
    def __init__(self, device: _binding.Device, pending: PendingTable, manual: bool) -> None:
        self.device = device
        self.pending = pending
        self.manual = manual
        self.per_instance: collections.Counter[int] = collections.Counter()  # completions, by instance index
        self.stopping = False
        self.loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        self._loops_lock = threading.Lock()
        self.thread: threading.Thread | None = None
        # Done-callbacks of futures resolved by a caller's drain (see
        # deliver()) run here, on a thread started when first needed.
        self._callbacks: queue.SimpleQueue[list[DeviceFuture] | None] = queue.SimpleQueue()
        self._callback_thread: threading.Thread | None = None
        self._callbacks_closed = False
        if not manual:
            self.thread = threading.Thread(target=self._completion_loop, name="qatpy-completions", daemon=True)
            self.thread.start()

    # -- draining -------------------------------------------------------------
    def drain(self, caller: bool = False) -> int:
        """Take the waiting completions and resolve their targets.  `caller`:
        this thread is inside a sign()/result()/submit, so done-callbacks go
        to the callback thread instead of running here (see deliver())."""
        tags, sts, cpas, results, insts = self.device.drain()
        if not tags:
            return 0
        self.per_instance.update(insts)
        items: list[Item] = []
        failed: list[tuple[Request, int, int, int]] = []
        pending = self.pending
        with pending.lock:
            for tag, st, cpa, res in zip(tags, sts, cpas, results):
                req = pending.take(tag >> TAG_SHIFT)
                if req is None:
                    continue  # settled already (engine closed): drop the late answer
                owner = req.owner
                owner.answered(1)
                if st == _ST_OK:
                    items.append((req.target, tag & TAG_MASK, res, None))
                elif owner.reroutes(st):
                    failed.append((req, tag & TAG_MASK, st, cpa))
                else:
                    items.append(owner.failure(req, tag & TAG_MASK, st, cpa))
        deliver(items, self.defer if caller else None)
        for req, index, st, _cpa in failed:
            req.owner.reroute(req, index, st)
        return len(items) + len(failed)

    def _completion_loop(self) -> None:
        seen = 0
        dev = self.device
        while not self.stopping:
            # GIL released while waiting; returns only for completions that
            # no waiter or event loop claimed within the grace period.
            seen = dev.wait_unclaimed(seen, COMPLETION_GRACE_NS, 50_000_000)
            self.drain()

    # -- callbacks ------------------------------------------------------------
    def defer(self, futs: list[DeviceFuture]) -> None:
        """Run these futures' done-callbacks on the callback thread (here,
        if a late drain comes after that thread was told to stop)."""
        with self.pending.lock:  # orders every put against stop_callbacks' sentinel
            if not self._callbacks_closed:
                if self._callback_thread is None:
                    t = threading.Thread(target=self._callback_loop, name="qatpy-callbacks", daemon=True)
                    t.start()
                    self._callback_thread = t
                self._callbacks.put(futs)
                return
        for fut in futs:
            fut._invoke_callbacks()

    def _callback_loop(self) -> None:
        while True:
            futs = self._callbacks.get()
            if futs is None:
                return
            for fut in futs:
                fut._invoke_callbacks()  # logs and swallows what a callback raises

    # -- event loops ----------------------------------------------------------
    def watch_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Let `loop` drain completions itself when the shim's eventfd fires,
        so its futures resolve without a cross-thread hand-off."""
        if self.manual:
            return
        with self._loops_lock:
            if loop in self.loops or self.stopping:
                return
            self.loops.add(loop)
        loop.add_reader(self.device.event_fd(), self._on_readable)

    def _on_readable(self) -> None:
        # Clear before draining: a completion pushed after the clear re-arms
        # the fd, so nothing is left behind unannounced.
        self.device.event_clear()
        self.drain()

    def _unwatch_loops(self) -> None:
        fd = self.device.event_fd()
        with self._loops_lock:
            loops, self.loops = list(self.loops), weakref.WeakSet()
        for loop in loops:
            if loop.is_closed():
                continue
            try:
                if asyncio._get_running_loop() is loop:
                    loop.remove_reader(fd)
                else:
                    loop.call_soon_threadsafe(loop.remove_reader, fd)
            except RuntimeError:
                pass

    # -- shutdown -------------------------------------------------------------
    def stop(self, shutdown_device: Any, callback_timeout: float) -> None:
        """The device's last engine closed: stop watching loops, shut the
        device down (`shutdown_device()`, which completes what is left as
        CLOSED), stop the completion thread, take the last completions and
        run the last deferred callbacks."""
        self._unwatch_loops()
        shutdown_device()
        self.stopping = True
        # stop() may run inside a done-callback on the completion thread
        # itself: that thread leaves its loop on its own.
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join()
        self.drain()
        self.stop_callbacks(callback_timeout)

    def stop_callbacks(self, timeout: float) -> None:
        """Let the callback thread run what is queued, then end; a later
        defer() runs its callbacks itself."""
        with self.pending.lock:
            self._callbacks_closed = True
            t = self._callback_thread
            if t is not None:
                self._callbacks.put(None)  # after the callbacks already queued
        if t is not None and t is not threading.current_thread():
            t.join(timeout)
