"""The device session: the one started device of this process.

qatlib allows one start per process, so every engine on the device shares
one `DeviceSession`: the shim's device, the table of requests on it and the
delivery of their results.  Engines acquire it (the first one loads the
library and starts the device) and release it (the last one shuts the
device down and frees it).  After fork() the parent's session is forgotten:
its DMA memory and threads do not exist in the child.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from . import _binding, _simsession, _status
from ._completion import fail_in_forked_child
from ._delivery import Delivery
from ._errors import EngineForkedError, QatUnavailableError
from ._pending import PendingTable

log = logging.getLogger("qatpy")


class DeviceSession:
    def __init__(self, device: _binding.Device, is_sim: bool, manual: bool, libraries: tuple[str, str]) -> None:
        self.device = device
        self.is_sim = is_sim
        self.manual = manual
        self.libraries = libraries
        self.pending = PendingTable()
        self.delivery = Delivery(device, self.pending, manual)
        self.refs = 0  # engines holding the session, under _lock

    def release(self, deadline: float) -> None:
        """An engine is done with the device; the last one shuts it down,
        using what is left until `deadline` (time.monotonic())."""
        global _current
        with _lock:
            self.refs -= 1
            last = self.refs == 0 and _current is self
            if last:
                _current = None
                _idle.clear()  # a new engine waits until this device is gone
        if not last:
            return
        try:
            self.delivery.stop(
                lambda: self.device.shutdown(int(max(0.0, deadline - time.monotonic()) * 1e9)),
                max(0.1, deadline - time.monotonic()),
            )
            # Submitting threads of closed engines see the shutdown at once
            # and leave; none may be inside a call when the memory goes.
            end = time.monotonic() + max(1.0, deadline - time.monotonic())
            me = threading.get_ident()  # never inside a submit while it closes

            def others() -> bool:
                return any(t != me for t in self.pending.inside)

            with self.pending.lock:
                while others() and time.monotonic() < end:
                    self.pending.changed.wait(max(0.0, end - time.monotonic()))
                busy = others()
            if busy or not self.device.free(max(0.0, end - time.monotonic())):
                log.warning("qatpy: the device was left allocated: a thread was still inside it at close")
            elif self.is_sim:
                _simsession.end()
        finally:
            _idle.set()


_lock = threading.Lock()
_current: DeviceSession | None = None
# Clear while the last engine's device is being shut down and freed.
_idle = threading.Event()
_idle.set()


def acquire(
    *,
    sim: bool,
    libraries: tuple[str | None, str | None],
    poll_mode: str,
    poll_delay: float,
    instances: int | None,
    max_inflight: int | None,
    max_requests: int | None,
    sim_knobs: Mapping[str, int],
) -> DeviceSession:
    """Join the running device session, or start one (QatUnavailableError
    naming the cause when the device cannot be used)."""
    global _current
    qpath, upath = libraries
    try:
        _binding.native()
    except ImportError as exc:
        raise QatUnavailableError(str(exc), "extension missing") from None
    mode = _status.PollMode[poll_mode.upper()]
    # The previous device may still be shutting down (its last engine is
    # closing on another thread): wait for it rather than fail to start.
    while True:
        _idle.wait(30)
        with _lock:
            if _current is not None or _idle.is_set():
                break
    with _lock:
        s = _current
        if s is None:
            rc, msg = _binding.lib_load(qpath, upath)
            if rc != 0:
                raise _status.unavailable(rc, msg, loading=True)
            is_sim = _binding.lib_is_sim()
            if sim and not is_sim:
                raise QatUnavailableError(
                    "the simulated device is not the library loaded in this process", "start failed"
                )
            if not sim and is_sim:
                raise QatUnavailableError(
                    "this process already loaded qatpy's simulated device; a real libqat cannot be loaded beside it",
                    "start failed",
                )
            if is_sim:
                _simsession.begin(sim_knobs)
            dev, rc, msg = _binding.Device.open(
                mode, int(poll_delay * 1e9), instances or 0, max_inflight or 0, max_requests or 0
            )
            if dev is None:
                raise _status.unavailable(rc, msg)
            s = DeviceSession(
                dev, is_sim, mode == _status.PollMode.MANUAL, (qpath or "libqat.so.4", upath or "libusdm.so.0")
            )
            _current = s
        else:
            if sim != s.is_sim:
                raise QatUnavailableError(
                    "this process already runs the " + ("simulated" if s.is_sim else "real") + " device",
                    "start failed",
                )
            if s.manual != (mode == _status.PollMode.MANUAL):
                raise ValueError(
                    f"poll_mode={poll_mode!r} cannot join the running device, which polls "
                    + ("manually" if s.manual else "on its own threads")
                    + "; close the other engines first (the device and its polling are per process)"
                )
            if s.is_sim:
                _simsession.apply(sim_knobs)
            # Polling is device-wide (one set of poll threads serves every
            # engine): the most recent engine's mode and delay apply.
            rc = s.device.set_poll(mode, int(poll_delay * 1e9))
            if rc != 0:
                raise _status.unavailable(rc, f"the running device refused poll_mode={poll_mode!r}")
        s.refs += 1
    return s


def forget_after_fork() -> None:
    """In a forked child: the parent's device is unusable; fail what it held
    (EngineForkedError) and start afresh."""
    global _current, _lock
    s, _current = _current, None
    _lock = threading.Lock()
    _idle.set()
    if s is not None:
        reqs = list(s.pending.requests.values())
        s.pending.requests.clear()
        fail_in_forked_child(
            [(r.target, i) for r in reqs for i in unanswered(r.target, r.remaining)],
            lambda: EngineForkedError("the engine's process forked before the device answered"),
        )


def unanswered(target: Any, remaining: int) -> list[int]:
    """Indices of `target` still owed an answer, of a request with `remaining`."""
    if hasattr(target, "missing"):  # BatchResult, FutureGroup
        return target.missing()  # type: ignore[no-any-return]
    return [0] if remaining else []
