"""Measuring code shared by ``python -m qatpy speed`` and benchmarks/.

Throughput is measured with `inflight` operations kept outstanding (like
``openssl speed -async_jobs``) in sub-batches, and always beside a baseline:
cryptography's own single-thread sign loop, run in the same process.
"""

from __future__ import annotations

import concurrent.futures as cf
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ._completion import BatchResult

ALGORITHMS: dict[str, tuple[str, Any]] = {
    "rsa2048": ("rsa", 2048),
    "rsa3072": ("rsa", 3072),
    "rsa4096": ("rsa", 4096),
    "ecdsap256": ("ec", ec.SECP256R1()),
    "ecdsap384": ("ec", ec.SECP384R1()),
    "ecdsap521": ("ec", ec.SECP521R1()),
}
MESSAGE = b"qatpy speed " * 4


def make_key(alg: str) -> Any:
    kind, param = ALGORITHMS[alg]
    if kind == "rsa":
        return rsa.generate_private_key(65537, param)
    return ec.generate_private_key(param)


def sign_args(key: Any) -> tuple[Any, ...]:
    if isinstance(key, rsa.RSAPrivateKey):
        return (padding.PKCS1v15(), hashes.SHA256())
    return (ec.ECDSA(hashes.SHA256()),)


@dataclass
class Result:
    name: str
    ops: int
    seconds: float
    latencies: np.ndarray = field(default_factory=lambda: np.empty(0))

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if self.latencies.size else float("nan")


def baseline_loop(key: Any, seconds: float, progress: Callable[[int, float], None] | None = None) -> Result:
    """cryptography's own sign(), one thread, back to back."""
    args = sign_args(key)
    sign = key.sign
    n = 0
    lat: list[float] = []
    t0 = time.perf_counter()
    end = t0 + seconds
    now = t0
    while now < end:
        for _ in range(16):
            sign(MESSAGE, *args)
        t1 = time.perf_counter()
        lat.append((t1 - now) / 16)
        n += 16
        now = t1
        if progress is not None:
            progress(n, now - t0)
    return Result("cryptography 1 thread", n, now - t0, np.asarray(lat))


def engine_loop(qkey: Any, seconds: float, inflight: int, progress: Callable[[int, float], None] | None = None) -> Result:
    """`inflight` operations outstanding on qkey's engine, in sub-batches."""
    args = sign_args(qkey)
    sub = max(1, min(256, inflight // 4 or 1))
    depth = max(1, -(-inflight // sub))
    msgs = [MESSAGE] * sub
    pending: deque[tuple[float, BatchResult, cf.Future[Any]]] = deque()
    lats: list[np.ndarray] = []
    n = 0
    t0 = time.perf_counter()
    end = t0 + seconds

    def submit() -> None:
        done: cf.Future[Any] = cf.Future()
        done.set_running_or_notify_cancel()
        ts = time.perf_counter()
        batch = qkey._submit_many(msgs, args, done, record_times=True)
        pending.append((ts, batch, done))

    for _ in range(depth):
        submit()
    now = t0
    while pending:
        ts, batch, done = pending.popleft()
        qkey.engine._wait(done)
        if batch.first_error is not None:
            raise batch.first_error
        n += len(batch)
        lats.append(np.asarray(batch.times) - ts)
        now = time.perf_counter()
        if progress is not None:
            progress(n, now - t0)
        if now < end:
            submit()
    return Result(f"qatpy {qkey.engine.backend}", n, now - t0, np.concatenate(lats) if lats else np.empty(0))


class Progress:
    """A live one-line progress display, only on a terminal."""

    def __init__(self, label: str, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.label = label
        self._last = 0.0

    def __call__(self, n: int, elapsed: float) -> None:
        if not self.enabled or elapsed - self._last < 0.2:
            return
        self._last = elapsed
        rate = n / elapsed if elapsed else 0.0
        self.stream.write(f"\r{self.label}: {n} signs, {rate:,.0f}/s, {elapsed:4.1f}s ")
        self.stream.flush()

    def done(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()
