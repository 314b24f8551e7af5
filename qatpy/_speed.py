"""Measuring code shared by ``python -m qatpy speed`` and benchmarks/.

Throughput is measured with `inflight` operations kept outstanding (like
``openssl speed -async_jobs``) in sub-batches, and always beside a baseline:
cryptography's own single-thread sign loop, run in the same process.

benchmarks/ adds per-API runners (`Runner`: blocking ``sign``,
``sign_future``, ``sign_async``, ``sign_many`` at a given in-flight depth),
the ``openssl speed`` baseline, per-thread CPU accounting and the
interleaved baseline/measurement ratio used by every target.

numpy (latency arrays and percentiles) is the ``speed`` extra, not a
dependency of the library: it is imported on first use, so the tables here
(``ALGORITHMS``) load without it and ``python -m qatpy speed`` can say what to
install (`require_numpy`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ._completion import BatchResult

if TYPE_CHECKING:
    import numpy as np
    from typing_extensions import Self  # typing.Self needs 3.11; only for the checker

#: How to get numpy, the one thing measuring needs beyond qatpy's own dependencies.
SPEED_EXTRA = 'pip install "qatpy[speed]"'


def require_numpy() -> ModuleType:
    """numpy, or ImportError naming the extra that provides it.

    Measuring needs none of numpy's BLAS: where numpy is not loaded yet, its
    OpenBLAS is asked for no thread pool, whose threads otherwise spin on
    the cores being measured (about 2% of the samples of a 2-core profile)."""
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        import numpy
    except ImportError as exc:
        raise ImportError(f"measuring needs numpy, which is not installed: {SPEED_EXTRA}", name="numpy") from exc
    return numpy


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
    latencies: np.ndarray = field(default_factory=lambda: require_numpy().empty(0))

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        return float(require_numpy().percentile(self.latencies, q)) if self.latencies.size else float("nan")


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
    return Result("cryptography 1 thread", n, now - t0, require_numpy().asarray(lat))


def threads_loop(key: Any, seconds: float, threads: int) -> Result:
    """The plain-threads ceiling: `threads` threads, each with its own copy
    of the key, each running the direct sign loop (no qatpy at all)."""
    copies = [key.private_numbers().private_key() for _ in range(threads)] if threads > 1 else [key]
    with cf.ThreadPoolExecutor(threads) as pool:
        t = time.perf_counter()
        parts = list(pool.map(lambda k: baseline_loop(k, seconds), copies))
        wall = time.perf_counter() - t
    return Result(f"cryptography {threads} threads", sum(p.ops for p in parts), wall)


def engine_loop(
    qkey: Any, seconds: float, inflight: int, progress: Callable[[int, float], None] | None = None
) -> Result:
    """`inflight` operations outstanding on qkey's engine, in sub-batches."""
    numpy = require_numpy()
    args = sign_args(qkey)
    sub = max(1, min(256, inflight // 4 or 1))
    depth = max(1, -(-inflight // sub))
    msgs = [MESSAGE] * sub
    pending: deque[tuple[float, BatchResult, Any, cf.Future[Any]]] = deque()
    lats: list[np.ndarray] = []
    n = 0
    t0 = time.perf_counter()
    end = t0 + seconds

    def submit() -> None:
        done: cf.Future[Any] = cf.Future()
        done.set_running_or_notify_cancel()
        ts = time.perf_counter()
        batch, op = qkey._start_many(msgs, args, done, record_times=True)
        pending.append((ts, batch, op, done))

    for _ in range(depth):
        submit()
    now = t0
    while pending:
        ts, batch, op, done = pending.popleft()
        qkey.engine._wait(op, done)
        if batch.first_error is not None:
            raise batch.first_error
        n += len(batch)
        lats.append(numpy.asarray(batch.times) - ts)
        now = time.perf_counter()
        if progress is not None:
            progress(n, now - t0)
        if now < end:
            submit()
    return Result(f"qatpy {qkey.engine.backend}", n, now - t0, numpy.concatenate(lats) if lats else numpy.empty(0))


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


# -- per-API runners (benchmarks/) ---------------------------------------------

APIS = ("sign", "future", "async", "many")
#: What each of `APIS` calls (and "batch": `engine_loop`, the private
#: pipelined batch path), as tables and option values name them.
API_LABELS = {
    "sign": "sign",
    "future": "sign_future",
    "async": "sign_async",
    "many": "sign_many",
    "batch": "batch path",
}
#: Runner records the latency of one operation in SAMPLE (futures, asyncio).
SAMPLE = 8


class Runner:
    """Sign `n` messages through one public API with `depth` operations in flight.

    * ``sign``: the blocking call; depth d = d caller threads, each signing
      back to back (what a threaded server does);
    * ``future``: ``sign_future`` in a sliding window of d, oldest awaited
      with ``.result()``;
    * ``async``: ``sign_async`` from d coroutines on one event loop that the
      runner owns (pytest-benchmark cannot time coroutines itself);
    * ``many``: ``sign_many`` of batches of d messages.

    `run(n)` returns the latency of each operation, in seconds, as the
    caller sees it (submit to result; for ``many``, the batch's duration);
    with more than one in flight, of one operation in `SAMPLE` for
    ``future`` and ``async``.
    """

    def __init__(self, key: Any, api: str, depth: int) -> None:
        if api not in APIS:
            raise ValueError(f"unknown api {api!r}; choose from {', '.join(APIS)}")
        self.key = key
        self.api = api
        self.depth = depth
        self.args = sign_args(key)
        self._pool: cf.ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        if api == "sign" and depth > 1:
            self._pool = cf.ThreadPoolExecutor(depth, thread_name_prefix="bench-sign")
        if api == "async":
            self._loop = asyncio.new_event_loop()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        if self._loop is not None:
            self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, n: int) -> np.ndarray:
        lat: np.ndarray = require_numpy().asarray(getattr(self, "_run_" + self.api)(n))
        return lat

    def _sign_loop(self, n: int) -> list[float]:
        sign, args, pc = self.key.sign, self.args, time.perf_counter
        lat = []
        for _ in range(n):
            t = pc()
            sign(MESSAGE, *args)
            lat.append(pc() - t)
        return lat

    def _run_sign(self, n: int) -> list[float]:
        if self._pool is None:
            return self._sign_loop(n)
        d = self.depth
        shares = [n // d + (1 if i < n % d else 0) for i in range(d)]
        lat: list[float] = []
        for f in [self._pool.submit(self._sign_loop, k) for k in shares if k]:
            lat += f.result()
        return lat

    # With more than one operation in flight, the latency of every SAMPLE-th
    # operation is recorded: two clock reads and a list entry per operation
    # cost a good part of what qatpy's own submit path does.

    def _run_future(self, n: int) -> list[float]:
        submit, args, d, pc = self.key.sign_future, self.args, self.depth, time.perf_counter
        step = SAMPLE if d > 1 else 1
        pend: deque[cf.Future[bytes]] = deque()
        stamps: deque[float] = deque()
        lat: list[float] = []
        for i in range(n + d):
            if i >= d:  # op i - d is the oldest: wait for it
                pend.popleft().result()
                if not (i - d) % step:
                    lat.append(pc() - stamps.popleft())
            if i < n:
                if not i % step:
                    stamps.append(pc())
                pend.append(submit(MESSAGE, *args))
        return lat

    def _run_async(self, n: int) -> list[float]:
        sign, args, pc = self.key.sign_async, self.args, time.perf_counter
        step = SAMPLE if self.depth > 1 else 1
        lat: list[float] = []
        todo: Iterator[int] = iter(range(n))

        async def worker() -> None:
            for i in todo:  # shared iterator: the workers split n between them
                if i % step:
                    await sign(MESSAGE, *args)
                else:
                    t = pc()
                    await sign(MESSAGE, *args)
                    lat.append(pc() - t)

        async def main() -> None:
            await asyncio.gather(*[worker() for _ in range(min(self.depth, n))])

        assert self._loop is not None
        self._loop.run_until_complete(main())
        return lat

    def _run_many(self, n: int) -> list[float]:
        sign_many, args, pc = self.key.sign_many, self.args, time.perf_counter
        lat: list[float] = []
        full = [MESSAGE] * self.depth
        left = n
        while left > 0:
            msgs = full if left >= self.depth else full[:left]
            t = pc()
            sign_many(msgs, *args)
            lat += [pc() - t] * len(msgs)
            left -= len(msgs)
        return lat


def api_loop(
    qkey: Any, api: str, seconds: float, inflight: int, progress: Callable[[int, float], None] | None = None
) -> Result:
    """Sign through one public API (`Runner`) with `inflight` operations in
    flight for about `seconds`, in slices of about a tenth of a second
    (``batch``: the private pipelined path, `engine_loop`)."""
    if api == "batch":
        return engine_loop(qkey, seconds, inflight, progress)
    numpy = require_numpy()
    with Runner(qkey, api, inflight) as runner:
        n = ops_for(runner, min(0.1, seconds / 4))  # also the warm-up
        lats = []
        done = 0
        t0 = time.perf_counter()
        now = t0
        while now - t0 < seconds:
            lats.append(runner.run(n))
            done += n
            now = time.perf_counter()
            if progress is not None:
                progress(done, now - t0)
    return Result(f"qatpy {qkey.engine.backend} {API_LABELS[api]}", done, now - t0, numpy.concatenate(lats))


def ops_for(runner: Runner, seconds: float, floor: int = 0) -> int:
    """How many operations `runner` does in about `seconds` (a short trial run),
    as a multiple of its depth."""
    trial = max(runner.depth * 2, 32, floor)
    runner.run(trial)  # warm: threads started, keys on the device, caches filled
    t = time.perf_counter()
    runner.run(trial)
    rate = trial / max(time.perf_counter() - t, 1e-6)
    n = max(trial, int(rate * seconds))
    return -(-n // runner.depth) * runner.depth


def timed(runner: Runner, n: int) -> Result:
    t = time.perf_counter()
    lat = runner.run(n)
    return Result(f"{runner.api}@{runner.depth}", n, time.perf_counter() - t, lat)


def median_rate(key: Any, seconds: float, repeats: int = 3) -> float:
    """Median signs/s of `repeats` short direct single-thread loops."""
    return statistics.median(baseline_loop(key, seconds / repeats).rate for _ in range(repeats))


#: Other processes' CPU (cores) under which a repetition counts as quiet.
QUIET_CORES = 0.25


@dataclass
class Ratio:
    """A measurement beside its baseline, repeated and interleaved
    (baseline, measurement, baseline, ...) so that load from other processes
    hits both sides alike; each repetition gives one ratio.  The reported
    ratio is the median over the *quiet* repetitions (other processes used
    less than QUIET_CORES meanwhile), or over all when none was quiet."""

    rates: list[float]
    baselines: list[float]
    results: list[Result]
    others: list[float] = field(default_factory=list)  # other processes' cores, per repetition

    def _pick(self) -> list[int]:
        quiet = [i for i, o in enumerate(self.others) if o < QUIET_CORES]
        return quiet or list(range(len(self.rates)))

    @property
    def quiet(self) -> int:
        return sum(1 for o in self.others if o < QUIET_CORES)

    @property
    def ratios(self) -> list[float]:
        return [r / b for r, b in zip(self.rates, self.baselines)]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios[i] for i in self._pick())

    @property
    def rate(self) -> float:
        return statistics.median(self.rates[i] for i in self._pick())

    @property
    def baseline(self) -> float:
        return statistics.median(self.baselines[i] for i in self._pick())

    def percentile(self, q: float) -> float:
        lats = [self.results[i].latencies for i in self._pick() if self.results[i].latencies.size]
        numpy = require_numpy()
        return float(numpy.percentile(numpy.concatenate(lats), q)) if lats else float("nan")


def interleaved(measure: Callable[[], Result], key: Any, repeats: int = 3, base_seconds: float = 0.4) -> Ratio:
    """Run `measure` `repeats` times, each between two halves of a direct
    baseline loop on `key` (cryptography, one thread), noting how much CPU
    other processes took meanwhile."""
    out = Ratio([], [], [], [])
    for _ in range(repeats):
        with OthersMeter() as noise:
            b1 = baseline_loop(key, base_seconds / 2)
            res = measure()
            b2 = baseline_loop(key, base_seconds / 2)
        out.rates.append(res.rate)
        out.baselines.append((b1.ops + b2.ops) / (b1.seconds + b2.seconds))
        out.results.append(res)
        out.others.append(noise.others)
    return out


# -- openssl speed -------------------------------------------------------------

_OPENSSL_ROW = {
    "rsa": re.compile(r"^rsa\s+(\d+)\s+bits\s+(.*)$"),
    "ec": re.compile(r"^\s*(\d+)\s+bits\s+ecdsa\s+\((nistp\d+)\)\s+(.*)$"),
}


def parse_openssl_speed(text: str) -> dict[str, float]:
    """Signs/s per algorithm name (``rsa2048``, ``ecdsap256``...) from
    ``openssl speed`` output.  A row is `times... rates...` with as many
    times (``0.000221s``) as rates; sign/s is the first rate."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _OPENSSL_ROW["rsa"].match(line)
        if m:
            name, rest = f"rsa{m.group(1)}", m.group(2)
        else:
            m = _OPENSSL_ROW["ec"].match(line)
            if not m:
                continue
            name, rest = "ecdsa" + m.group(2).removeprefix("nist"), m.group(3)
        toks = rest.split()
        times = sum(1 for t in toks if t.endswith("s"))
        if times and len(toks) >= 2 * times:
            try:
                out[name] = float(toks[times])
            except ValueError:
                continue
    return out


_openssl_cache: dict[tuple[str, float], float | None] = {}


def openssl_speed(alg: str, seconds: float = 1.0) -> float | None:
    """Signs/s of ``openssl speed -seconds S ALG`` (one core), or None when
    the binary is missing or its output has no row for `alg`.  Cached per
    process: openssl also times verify, so a call costs about 2 x `seconds`."""
    key = (alg, seconds)
    if key in _openssl_cache:
        return _openssl_cache[key]
    exe = shutil.which("openssl")
    rate = None
    if exe is not None:
        try:
            p = subprocess.run(
                [exe, "speed", "-seconds", str(max(1, round(seconds))), alg],
                capture_output=True,
                text=True,
                timeout=60 + 4 * seconds,
                check=False,
            )
            rate = parse_openssl_speed(p.stdout).get(alg)
        except (OSError, subprocess.SubprocessError):
            rate = None
    _openssl_cache[key] = rate
    return rate


# -- CPU use per thread ----------------------------------------------------------


def thread_cpu() -> dict[str, float]:
    """CPU seconds used so far by this process's threads, summed by thread
    name (``qatpy-poll-0``...), from /proc/self/task/*/schedstat (ns
    resolution).  Empty where /proc is missing."""
    out: dict[str, float] = {}
    base = "/proc/self/task"
    try:
        tids = os.listdir(base)
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"{base}/{tid}/comm", encoding="utf-8") as f:
                name = f.read().strip()
            with open(f"{base}/{tid}/schedstat", encoding="utf-8") as f:
                ns = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended meanwhile
        out[name] = out.get(name, 0.0) + ns / 1e9
    return out


class CpuMeter:
    """Process CPU time and poll-thread CPU time over a `with` block."""

    def __enter__(self) -> Self:
        self._t = time.perf_counter()
        self._p = time.process_time()
        self._th = thread_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._t
        self.process = time.process_time() - self._p
        after = thread_cpu()
        self.poll = sum(v - self._th.get(k, 0.0) for k, v in after.items() if k.startswith("qatpy-poll"))

    @property
    def process_share(self) -> float:
        """Process CPU / wall time (1.0 = one core busy)."""
        return self.process / self.wall if self.wall else 0.0

    @property
    def poll_share(self) -> float:
        return self.poll / self.wall if self.wall else 0.0


class OthersMeter:
    """CPU used by *other* processes over a `with` block, in cores: the
    machine's busy time (/proc/stat) minus this process's and its children's.
    The noise figure to publish beside a results table."""

    @staticmethod
    def _busy() -> float:
        try:
            with open("/proc/stat", encoding="utf-8") as f:
                v = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return float("nan")
        # user nice system idle iowait irq softirq steal: all but idle and iowait
        return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def __enter__(self) -> Self:
        self._t, self._b, self._o = time.perf_counter(), self._busy(), self._own()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._t
        self.own = (self._own() - self._o) / wall
        self.others = max(0.0, (self._busy() - self._b) / wall - self.own)


def machine_info() -> dict[str, Any]:
    """What a results table must name: cores, CPU model, versions, load."""
    import platform

    import cryptography

    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = list(os.getloadavg())
    except OSError:
        load = []
    ossl = None
    exe = shutil.which("openssl")
    if exe is not None:
        try:
            ossl = subprocess.run(
                [exe, "version"], capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    from cryptography.hazmat.backends.openssl.backend import backend

    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "cryptography_openssl": backend.openssl_version_text(),
        "openssl_cli": ossl,
        "loadavg": load,
    }
