"""The software backend: cryptography's own signing on every core.

cryptography >= 47 releases the GIL while OpenSSL signs, so a few threads
that do nothing but sign scale across cores.  Work is queued as entries (one
operation, some of its indices); a worker takes entries up to a fair share
and delivers each share's results at once, so the per-operation hand-off that
sinks a plain ThreadPoolExecutor for 24 us P-256 signatures is paid once per
share (measured on 2 cores: P-256 through a ThreadPoolExecutor's
map(chunksize=64) ran at 0.64x one thread's rate).

Callers sign too.  A thread that waits for a result (``sign_many``, a
future's ``result()``) takes queued operations and signs them itself until
its result is there, instead of sleeping while the workers do it; and an
event loop submitting ``sign_async`` while the workers already have a
backlog signs that operation at once, returning a finished future.  Measured
on 2 cores with 256 P-256 operations in flight, the submitting thread's own
Python work (futures, hand-offs, an event loop's task switches) otherwise
holds the GIL in bursts that stall the workers when they come back from
OpenSSL for it; a caller that signs releases the GIL in OpenSSL like they do,
and its operations need no hand-off at all.  Done-callbacks of futures a
caller resolves run on the ``qatpy-callbacks`` thread, never inside the
caller.

RSA keys are cloned once per worker: OpenSSL serialises signatures made
with one RSA object (its blinding state), measured here as x1.73 on two
threads with one key object against x2.01 with one object per thread.  The
clones belong to this backend and go with the key.  Callers sign with the
key itself, as a blocking ``sign()`` does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric import rsa

from ._backend import Operation, PrivateKey
from ._completion import (
    BatchResult,
    CallbackThread,
    Defer,
    DeviceFuture,
    Item,
    deliver,
    fail_all,
    fail_in_forked_child,
    finished_future,
    settle_many,
)
from ._errors import EngineClosedError, EngineForkedError
from ._ops import RsaSpec

#: The most operations a worker takes at once.
CHUNK = 64
#: The most operations a waiting caller takes at once: it checks its own
#: result between takes, so this bounds how much later than its result it
#: returns.  RSA operations (0.25 ms and up) are taken one at a time.
HELP_PIECE = 32
#: An event loop signs a ``sign_async`` operation itself, rather than queue
#: it, when this many operations per worker are queued and no worker is idle.
BACKLOG = 32
#: For this long (seconds) after a caller signed, it counts as one of the
#: `threads` signers: one worker fewer takes work meanwhile, so signers do
#: not outnumber cores (each one more costs GIL hand-offs and thread switches).
LEASE = 0.02

# A queue entry: (operation, its indices to sign, target).  Entries are
# tuples, made once and never changed; taking part of one replaces it.
Entry = tuple[Operation, Sequence[int], Any]
_ONE: Sequence[int] = (0,)


def _pieces(op: Operation, idx: Sequence[int], target: Any, threads: int) -> list[Entry]:
    """Split a batch into entries of shrinking size (each about half a
    signer's share of what is left, counting a caller that helps; at most
    CHUNK): the first pieces keep every worker busy with few hand-offs, the
    last ones are small, so the signers finish the batch together."""
    n = len(idx)
    out = []
    lo = 0
    while lo < n:
        k = min(CHUNK, max(2, -(-(n - lo) // (2 * threads + 2))))
        out.append((op, idx[lo : lo + k], target))
        lo += k
    return out


class SoftwareBackend:
    """Signs with cryptography on a pool of worker threads (started on first
    use) and on the threads that wait for the results."""

    name = "software"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads if threads is not None else (os.cpu_count() or 1)
        self._queue: deque[Entry] = deque()
        # Operations in the queue.  A heuristic for fair shares, exact unless
        # an exception interrupted a caller putting work back (stats() counts
        # the queue itself); reset whenever the queue is found empty.
        self._queued_ops = 0
        self._lock = threading.Lock()
        # Idle workers' park locks (each held while its worker runs; the
        # worker sleeps acquiring it again, a release wakes it), most recent last.
        self._parked: list[threading.Lock] = []
        self._workers: list[threading.Thread] = []
        # Workers that will look at the queue again: a worker leaves this
        # count in the same hold of the lock in which it finds the queue
        # empty on closing and stops.  Its thread stays alive (is_alive())
        # a while after that, so is_alive() cannot tell _put_back whether
        # anyone will take the work it queues.
        self._live = 0
        self._closing = False
        self._awake = 0  # workers not parked (signing, or about to)
        self._lease = 0.0  # time.monotonic() until which a caller counts as a signer
        # Thread ident -> the entries that worker signs now (failed in a
        # forked child); and the same for callers that sign (also put back
        # in the queue when an exception interrupts them).
        self._running: dict[int, list[Entry]] = {}
        self._taken: dict[int, list[Entry]] = {}
        # Thread ident -> (operations, failures) that a caller counted in the
        # stats for what it holds in `_taken`: a put-back takes them back out,
        # since whoever signs the entries again counts them again.
        self._counted: dict[int, tuple[int, int]] = {}
        self._submitted = self._completed = self._failed = self._chunks = 0
        self._sync_ops = self._caller_ops = 0
        # Operations a submitting thread signed at once, and how many of them
        # failed (approximate under threads, like sync_ops; never used for control).
        self._inline = self._inline_failed = 0
        self._callbacks = CallbackThread()
        self._helper = self._help  # bound once: every sign_future's waiter
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
        self._sync_ops += 1  # approximate under threads; never used for control
        return op.software_sign(0)

    def submit(
        self,
        op: Operation,
        target: Any,
        loop: asyncio.AbstractEventLoop | None = None,
        indices: Sequence[int] | None = None,
    ) -> None:
        """Queue op's signatures (or only `indices` of them: the fallback
        policy's re-runs); result i goes to (target, i).

        A single operation for an asyncio future, submitted from its loop
        while the workers have a backlog, is signed here and now."""
        entries: list[Entry]
        if indices is None:
            n = len(op.datas)
            if n == 1:
                if loop is not None and self._queued_ops >= BACKLOG * self.threads and not self._closing:
                    self._sign_in_loop(op, target)
                    return
                entries = [(op, _ONE, target)]
            else:
                entries = _pieces(op, range(n), target, self.threads)
        else:
            n = len(indices)
            entries = _pieces(op, indices, target, self.threads)
        with self._lock:
            if self._closing:
                raise EngineClosedError("engine is closed")
            if not self._workers:
                self._start_workers()
            self._queue.extend(entries)
            self._queued_ops += n
            self._submitted += n
            if self._parked:
                self._wake(len(entries))

    def sign_future(self, op: Operation) -> cf.Future[bytes]:
        if self._queued_ops >= BACKLOG * self.threads and not self._closing:
            return self._sign_here(op)
        fut = DeviceFuture(self._helper)
        with self._lock:
            if self._closing:
                raise EngineClosedError("engine is closed")
            if not self._workers:
                self._start_workers()
            self._queue.append((op, _ONE, fut))
            self._queued_ops += 1
            self._submitted += 1
            if self._parked:
                self._wake(1)
        return fut

    def wait(self, op: Operation, fut: cf.Future[Any], timeout: float | None = None) -> None:
        left = self._help(fut, timeout)
        if not fut.done():
            cf.wait([fut], left)

    def poll(self) -> int:
        return 0

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "submitted": self._submitted + self._inline,
                "completed": self._completed + self._inline,
                "failed": self._failed + self._inline_failed,
                "chunks": self._chunks,
                "sync_ops": self._sync_ops,
                "caller_ops": self._caller_ops + self._inline,
                "queued": sum(len(e[1]) for e in self._queue),
                "threads": self.threads,
            }

    def close(self, deadline: float) -> None:
        """Stop the workers once the queue drains (until `deadline`); fail
        what is still queued then with EngineClosedError."""
        with self._lock:
            self._closing = True
            self._wake(len(self._parked) + self.threads)
        me = threading.current_thread()
        for t in self._workers:
            if t is me:  # close() called from a done-callback on this worker
                continue
            t.join(max(0.0, deadline - time.monotonic()))
        self._fail_queued()
        self._callbacks.stop(max(0.0, deadline - time.monotonic()))

    def _fail_queued(self) -> None:
        left: list[tuple[Any, int]] = []
        with self._lock:
            while self._queue:
                op, idx, target = self._queue.popleft()
                left += [(target, i) for i in idx]
            self._queued_ops = 0
        fail_all(left, lambda: EngineClosedError("engine closed before the operation ran"))

    def fail_after_fork(self) -> None:
        """In a forked child: the workers are gone; fail what they held or had
        queued with EngineForkedError."""
        self._lock = threading.Lock()
        self._closing = True
        held = list(self._running.values()) + list(self._taken.values())
        entries = list(self._queue) + [e for es in held for e in es]
        self._queue.clear()
        self._running.clear()
        self._taken.clear()
        self._counted.clear()
        self._parked = []
        self._workers = []
        self._live = 0
        self._callbacks = CallbackThread()
        fail_in_forked_child(
            [(target, i) for _, idx, target in entries for i in idx],
            lambda: EngineForkedError("the engine's process forked before this operation finished"),
        )

    # -- signing on a caller's thread ---------------------------------------------
    def _sign_here(self, op: Operation) -> cf.Future[bytes]:
        """Sign one operation on the submitting thread; a finished future."""
        self._lease = time.monotonic() + LEASE
        self._inline += 1
        try:
            return finished_future(op.key.sign(op.datas[0], *op.spec.sw_args), None)
        except Exception as exc:  # delivered to the future, as from a worker
            self._inline_failed += 1
            return finished_future(None, exc)

    def _sign_in_loop(self, op: Operation, fut: asyncio.Future[bytes]) -> None:
        """Sign one operation on the event loop's thread: its future is new,
        so nothing (no callback, no awaiter) runs here but the signature."""
        self._lease = time.monotonic() + LEASE
        self._inline += 1
        try:
            sig = op.key.sign(op.datas[0], *op.spec.sw_args)
        except Exception as exc:  # delivered to the awaiter, as from a worker
            self._inline_failed += 1
            fut.set_exception(exc)
        else:
            fut.set_result(sig)

    def _help(self, fut: cf.Future[Any], timeout: float | None = None) -> float | None:
        """Sign queued operations on this thread, a few at a time, until `fut`
        is done, the queue is empty or `timeout` passed; returns what is left
        of `timeout`.

        What this thread takes is recorded in `_taken` before it leaves the
        queue (no call in between, so no exception from a signal handler can
        land there), and leaves `_taken` only once delivered: an exception
        in between puts it back in the queue (here, or at this thread's next
        call if a second one cut that short).  Delivering twice is harmless
        (every target ignores a second answer); losing is not.  The put-back
        takes the lock: takers peek at the queue's ends and then pop."""
        end = None if timeout is None else time.monotonic() + timeout
        me = threading.get_ident()
        q = self._queue
        lock = self._lock
        taken = self._taken
        counted = self._counted
        if me in taken:
            self._put_back(me)
        try:
            while not fut.done():
                with lock:
                    if not q:
                        break
                    # From the tail: the workers take from the head, so
                    # the two meet only when the queue runs out.
                    piece = 1 if type(q[-1][0].spec) is RsaSpec else HELP_PIECE
                    mine: list[Entry] = []
                    taken[me] = mine
                    n = _take(q, piece, mine, tail=True)
                    self._queued_ops -= n
                    if not q:
                        self._queued_ops = 0
                    self._lease = time.monotonic() + LEASE
                signed = _sign_entries(mine, _own_key)
                # Counted before delivery, so that a thread woken by one of
                # these results sees it counted.  An interruption from here
                # until `mine` leaves `_taken` puts it back to be signed (and
                # counted) again: `counted` tells the put-back what to take
                # back.  No call between the counts and recording them, nor
                # between the two dels: neither can be cut in half.
                with lock:
                    self._completed += n
                    self._failed += signed[3]
                    self._chunks += 1
                    self._caller_ops += n
                    counted[me] = (n, signed[3])
                _deliver(signed, self._callbacks.defer)
                del taken[me]
                del counted[me]
                if end is not None and time.monotonic() >= end:
                    return 0.0
        finally:
            if me in taken:  # interrupted: not (all) delivered
                self._put_back(me)
        return None if end is None else max(0.0, end - time.monotonic())

    def _put_back(self, me: int) -> None:
        """Queue again what thread `me` took and did not deliver, and take
        back what it counted of it (whoever signs it again counts it)."""
        with self._lock:
            self._queue.extend(self._taken[me])
            del self._taken[me]
            if me in self._counted:  # no call since the del: both or neither
                ops, bad = self._counted[me]
                del self._counted[me]
                self._completed -= ops
                self._failed -= bad
                self._chunks -= 1
                self._caller_ops -= ops
            self._queued_ops = sum(len(e[1]) for e in self._queue)
            self._wake(1)
            orphaned = self._closing and not self._live
        if orphaned:  # closed meanwhile, no worker left to sign it
            self._fail_queued()

    # -- workers ------------------------------------------------------------
    def _wake(self, want: int) -> None:
        """Wake idle workers (most recently parked first) so that up to
        `want` more sign, within the number allowed now.  Under `_lock`."""
        parked = self._parked
        n = min(want, len(parked), self._limit() - self._awake)
        for _ in range(n):
            parked.pop().release()
            self._awake += 1  # counted here: a second wake-up before it runs must see it

    def _limit(self) -> int:
        """How many workers may sign now: one fewer while a caller signs
        (but at least one, so that queued work always moves)."""
        if self.threads > 1 and self._lease > time.monotonic() and not self._closing:
            return self.threads - 1
        return self.threads

    def _start_workers(self) -> None:
        # Workers start on first use: creating an engine does no work.
        # Under `_lock`: counted live before any of them can stop.
        for i in range(self.threads):
            t = threading.Thread(target=self._work, args=(i,), name=f"qatpy-sw-{i}", daemon=True)
            t.start()
            self._workers.append(t)
            self._live += 1

    def _key_for(self, op: Operation, widx: int) -> PrivateKey:
        """The key worker `widx` signs op with: its own clone for RSA."""
        if type(op.spec) is not RsaSpec:
            return op.key
        clones = self._clones.get(op.owner)
        if clones is None:
            clones = self._clones.setdefault(op.owner, {})
        clone = clones.get(widx)
        if clone is None:
            key = cast(rsa.RSAPrivateKey, op.key)  # an RsaSpec goes with an RSA key
            try:
                made = key.private_numbers().private_key()
            except Exception:  # a key that cannot be copied (not exportable): sign with it itself
                made = key
            clone = clones.setdefault(widx, made)
        return clone

    def _work(self, widx: int) -> None:
        me = threading.get_ident()
        park = threading.Lock()
        park.acquire()
        q = self._queue
        lock = self._lock
        with lock:
            self._awake += 1
        while True:
            with lock:
                while True:
                    if not q:
                        if self._closing:
                            self._awake -= 1
                            self._live -= 1  # in the hold of its last look at the queue
                            return
                        wait = -1.0  # until woken
                    elif self._awake > self._limit():
                        # A caller signs: leave it this core until its lease ends.
                        wait = max(1e-4, self._lease - time.monotonic())
                    else:
                        break
                    self._awake -= 1
                    self._parked.append(park)
                    lock.release()
                    woken = park.acquire(timeout=wait)
                    lock.acquire()
                    if not woken:
                        if park in self._parked:  # the wait ended: up on its own
                            self._parked.remove(park)
                            self._awake += 1
                        else:  # woken (and counted) as the wait ended: take back the release
                            park.acquire(blocking=False)
                # A fair share: at most ceil(queued / signers) operations, so
                # that every signer finds work and they finish a batch together
                # (taking whole queues left one core idle below ~128 queued
                # operations, measured; a caller counts while it signs).
                signers = self._awake + (self._lease > time.monotonic())
                share = min(CHUNK, max(1, -(-self._queued_ops // signers)))
                taken: list[Entry] = []
                n = _take(q, share, taken, tail=False)
                self._queued_ops -= n
                if not q:
                    self._queued_ops = 0
                self._running[me] = taken
                if q and self._parked:
                    self._wake(1)
            signed = _sign_entries(taken, lambda op: self._key_for(op, widx))
            # Counters first, so a caller woken by its result sees them.
            with lock:
                self._completed += n
                self._failed += signed[3]
                self._chunks += 1
            _deliver(signed, None)
            self._running.pop(me, None)  # after delivery: a fork in between fails them again, harmlessly


def _take(q: deque[Entry], most: int, into: list[Entry], tail: bool) -> int:
    """Move entries from the head (or the tail) of `q` to `into` until they
    hold `most` operations, cutting the last one to fit; returns how many
    operations moved.  Under the backend's lock.

    Each entry is in `into` before it leaves `q`, with no call in between:
    an exception from a signal handler leaves an entry in both (signed
    twice at worst, and every target ignores a second answer), never in
    neither."""
    n = 0
    while q and n < most:
        e = q[-1] if tail else q[0]
        k = len(e[1])
        if n + k > most:
            cut = most - n
            op, idx, target = e
            if tail:
                into.append((op, idx[-cut:], target))
                q[-1] = (op, idx[:-cut], target)
            else:
                into.append((op, idx[:cut], target))
                q[0] = (op, idx[cut:], target)
            return most
        into.append(e)
        if tail:
            q.pop()
        else:
            q.popleft()
        n += k
    return n


def _own_key(op: Operation) -> PrivateKey:
    return op.key


# What _sign_entries made: (futures to settle, finished batches, other
# results to deliver, how many operations failed).
Signed = tuple[list[tuple[DeviceFuture, Any, BaseException | None]], list[Item], list[Item], int]


def _sign_entries(entries: list[Entry], key_of: Callable[[Operation], PrivateKey]) -> Signed:
    """Sign every operation of `entries` (with the key `key_of` gives).

    The two common targets skip the general delivery path: a
    ``sign_future``'s DeviceFuture (one operation) is settled directly, and
    a run of a batch's indices goes into its BatchResult in one step."""
    futs: list[tuple[DeviceFuture, Any, BaseException | None]] = []
    finished: list[Item] = []
    out: list[Item] = []
    failed = 0
    for op, idx, target in entries:
        try:
            sign = key_of(op).sign
        except Exception:  # never fatal to the signer: the operation's own key signs
            sign = op.key.sign
        datas, extra = op.datas, op.spec.sw_args
        tt = type(target)
        if tt is DeviceFuture:  # a sign_future: index 0 only
            try:
                futs.append((target, sign(datas[0], *extra), None))
            except Exception as exc:  # delivered to the caller's future
                futs.append((target, None, exc))
                failed += 1
            continue
        sigs: list[Any] = []
        bad = 0
        for i in idx:
            try:
                sigs.append(sign(datas[i], *extra))
            except Exception as exc:  # delivered to the caller's future
                sigs.append(exc)
                bad += 1
        failed += bad
        if tt is BatchResult and not bad and type(idx) is range:
            if target.put_run(idx.start, sigs):
                finished.append(target.finish())
        else:
            out += [
                (target, i, None, v) if isinstance(v, Exception) else (target, i, v, None) for i, v in zip(idx, sigs)
            ]
    return futs, finished, out, failed


def _deliver(signed: Signed, defer: Defer | None) -> None:
    futs, finished, out, _ = signed
    if futs:
        settle_many(futs, defer)
    if finished or out:
        deliver(finished + out, defer)
