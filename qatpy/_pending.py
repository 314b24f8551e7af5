"""The table of requests on the device: which target each completion goes to.

One `Request` per submit call, however many operations it carries; the
shim's 64-bit tag of operation i of request r is ``(r << TAG_SHIFT) | i``.
The table is shared by every engine on the device (completions come back
mixed); each request names the backend that owns it, for its counters and
its fallback policy.  All of it is guarded by the table's lock.
"""

from __future__ import annotations

import itertools
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._backend import Operation

# A tag is (request id << TAG_SHIFT) | index.
TAG_SHIFT = 24
TAG_MASK = (1 << TAG_SHIFT) - 1
#: The most operations one request can carry.
MAX_BATCH = TAG_MASK + 1


class Request:
    """Operations of one submit call still owed an answer."""

    __slots__ = ("target", "remaining", "owner", "op", "answered")

    def __init__(self, target: Any, remaining: int, owner: Any, op: Operation) -> None:
        self.target = target  # where result i goes, as (target, i)
        self.remaining = remaining  # operations not yet answered (or forgotten)
        self.owner = owner  # the QatBackend that submitted it
        self.op = op  # what to re-run in software if the device fails it
        # Which operations were answered (batches only: a single operation's
        # request leaves the table with its answer).  Lets the same answer
        # be taken twice without effect (a drain redone after an exception).
        self.answered = bytearray(remaining) if remaining > 1 else None


class PendingTable:
    """Request id -> Request, with the lock that also guards the owners'
    in-flight counters (so a close can wait for them under one lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: Notified when an owner's in-flight count or its submitters reach zero.
        self.changed = threading.Condition(self.lock)
        self.requests: dict[int, Request] = {}
        #: Thread ident -> the owner whose device call (a submit, a key copy)
        #: that thread is inside; the session frees the device only after
        #: they have all left.  Per thread, not a count: calls never nest on
        #: one thread, and a stale entry (see QatBackend._leave) is replaced.
        self.inside: dict[int, Any] = {}
        self._ids = itertools.count(1)

    def next_id(self) -> int:
        return next(self._ids)

    def take(self, rid: int) -> Request | None:
        """The request for one answer of request `rid` (None if already
        settled), removed once its last answer is taken.  Under `lock`."""
        req = self.requests.get(rid)
        if req is not None:
            req.remaining -= 1
            if req.remaining == 0:
                del self.requests[rid]
        return req

    def forget(self, rid: int, count: int) -> Request | None:
        """Take `count` operations of `rid` out (they were never queued on the
        device).  Returns the request if it was still there.  Under `lock`."""
        req = self.requests.get(rid)
        if req is not None:
            req.remaining -= count
            if req.remaining <= 0:
                del self.requests[rid]
        return req

    def remove_owner(self, owner: Any) -> list[Request]:
        """Remove and return every request of `owner`.  Under `lock`."""
        mine = [(rid, r) for rid, r in self.requests.items() if r.owner is owner]
        for rid, _ in mine:
            del self.requests[rid]
        return [r for _, r in mine]
