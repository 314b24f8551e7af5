"""The fallback policy: a device backend with software behind it.

`FallbackPolicy` is the backend a device engine uses.  It sends each
operation to the device when the device takes the key (sizes and curves it
cannot do go to software), and decides what happens to operations the
device fails (``fallback="on_error"``: re-run in software) or cannot take
because it is full (``"on_error_or_overflow"``: software too).  It owns the
software backend that does that work, created on first need, and the
counters of everything it re-routed, by reason.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import logging
import threading
from collections.abc import Sequence
from typing import Any

from ._backend import Operation
from ._completion import deliver
from ._errors import EngineClosedError
from ._qat import QatBackend
from ._software import SoftwareBackend
from ._status import FALLBACK_REASONS

log = logging.getLogger("qatpy")

POLICIES = ("never", "on_error", "on_error_or_overflow")


class FallbackPolicy:
    def __init__(self, primary: QatBackend, policy: str, threads: int | None) -> None:
        self.primary = primary
        self.name = primary.name
        self.policy = policy
        self.overflows = policy == "on_error_or_overflow"
        self._threads = threads
        self._lock = threading.Lock()
        self._software: SoftwareBackend | None = None
        self._closed = False
        self._fallbacks: dict[str, int] = {}
        primary.rerouter = self

    def _sw(self) -> SoftwareBackend:
        with self._lock:
            if self._closed:
                raise EngineClosedError("engine is closed")
            if self._software is None:
                self._software = SoftwareBackend(self._threads)
            return self._software

    # -- the Backend protocol ---------------------------------------------------
    def accepts(self, op: Operation) -> bool:
        return True  # one way or the other, every operation is signed here

    def sign(self, op: Operation) -> bytes:
        if self.primary.accepts(op):
            return self.primary.sign(op)
        return self._sw().sign(op)

    def sign_future(self, op: Operation) -> cf.Future[bytes]:
        if self.primary.accepts(op):
            return self.primary.sign_future(op)
        return self._sw().sign_future(op)

    def submit(self, op: Operation, target: Any, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if self.primary.accepts(op):
            self.primary.submit(op, target, loop)
        else:
            self._sw().submit(op, target, loop)

    def wait(self, op: Operation, fut: cf.Future[Any], timeout: float | None = None) -> None:
        sw = self._software
        if self.primary.accepts(op):
            self.primary.wait(op, fut, timeout)
        elif sw is not None:  # the waiting thread signs queued software work meanwhile
            sw.wait(op, fut, timeout)
        else:
            cf.wait([fut], timeout)

    def poll(self) -> int:
        return self.primary.poll()

    def stats(self) -> dict[str, Any]:
        d = self.primary.stats()
        d["fallbacks"] = dict(self._fallbacks)
        d["fallback_policy"] = self.policy
        sw = self._software
        if sw is not None:
            d["software_fallback"] = sw.stats()
        return d

    def close(self, deadline: float) -> None:
        # The device goes first: operations it fails while draining may
        # still be re-run in software, so the software backend closes after.
        self.primary.close(deadline)
        with self._lock:
            self._closed = True
            sw = self._software
        if sw is not None:
            sw.close(deadline)

    def fail_after_fork(self) -> None:
        self.primary.fail_after_fork()
        if self._software is not None:
            self._software.fail_after_fork()

    # -- the Rerouter protocol (called by the device backend) -------------------
    def reroutes(self, status: int) -> bool:
        return self.policy != "never" and status in FALLBACK_REASONS

    def sign_instead(self, op: Operation, reason: str) -> bytes:
        """Re-run a blocking sign() in software on this thread, counted by reason."""
        self._count(reason)
        return self._sw().sign(op)

    def _count(self, reason: str) -> None:
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

    def reroute(self, op: Operation, target: Any, index: int, reason: str) -> None:
        """Re-run one operation in software (per-op fallback), counted by reason."""
        self._count(reason)
        try:
            self._sw().submit(op, target, indices=[index])
        except EngineClosedError as exc:
            deliver([(target, index, None, exc)])

    def overflow(self, op: Operation, target: Any, indices: Sequence[int]) -> None:
        self._fallbacks["overflow"] = self._fallbacks.get("overflow", 0) + len(indices)
        self._sw().submit(op, target, indices=indices)
