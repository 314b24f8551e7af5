"""Command line: ``python -m qatpy speed | info | doctor | soak | run``.

Every failure is one line on stderr, ``qatpy <command>: <problem>; <fix>``, and
a non-zero exit status: 2 for a mistake in how qatpy was called (arguments,
QATPY_BACKEND, a missing extra, a --json path that cannot be written), 1 when
the run cannot go on (the backend is unavailable, writing the results failed,
a soak found lost or wrong results), 130 after Ctrl-C.  Tracebacks are left
for bugs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import IO, Any, NoReturn

from . import __version__
from ._engine import BACKENDS, Engine
from ._errors import QatUnavailableError

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class CliError(Exception):
    """A failure the command line reports as one line, with its exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (no usage block) naming where to look."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


# -- argument types: argparse prefixes "argument --name: " to these messages ------------------


def _number(convert: Callable[[str], Any], ok: Callable[[Any], bool], want: str) -> Callable[[str], Any]:
    """An argparse type: `convert` the text, and accept it only if `ok`; the message says what is wanted."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {want}, not {text!r}")
        return value

    return parse


_positive_int = _number(int, lambda v: v >= 1, "a whole number >= 1")
_positive_seconds = _number(float, lambda v: math.isfinite(v) and v > 0, "a number of seconds > 0")
_ppm = _number(int, lambda v: 0 <= v <= 1_000_000, "parts per million, 0 to 1000000")
_int = _number(int, lambda v: True, "a whole number")


# -- shared by the commands ---------------------------------------------------------------


def _env_backend() -> str:
    """The backend QATPY_BACKEND names (as Engine() reads it), or a usage error saying how to fix it."""
    raw = os.environ.get("QATPY_BACKEND", "")
    backend = raw.strip().lower() or "auto"
    if backend not in BACKENDS:
        raise CliError(
            f"QATPY_BACKEND={raw!r} is not a backend; set it to one of {', '.join(BACKENDS)}, or unset it",
            EXIT_USAGE,
        )
    return backend


@contextlib.contextmanager
def _held_stderr() -> Iterator[Callable[[], None]]:
    """Hold what is written to file descriptor 2 while a device starts.

    qatlib prints its own diagnostics there when it cannot start ("No devices
    found" and the like); the one-line reason qatpy reports says the same.  The
    caller discards the held text by calling the yielded function (a start that
    failed or fell back); otherwise it is written out when the block ends.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    keep = [True]
    try:
        with tempfile.TemporaryFile() as held:
            os.dup2(held.fileno(), 2)
            try:
                yield lambda: keep.__setitem__(0, False)
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                if keep[0]:
                    held.seek(0)
                    os.write(2, held.read())
    finally:
        os.close(saved)


def _start_engine(backend: str, **options: Any) -> Engine:
    """Engine(backend), or a one-line error naming why the backend is unusable and what to do."""
    with _held_stderr() as discard:
        try:
            eng = Engine(backend, **options)
        except QatUnavailableError as exc:
            discard()
            fix = (
                "`python -m qatpy doctor` lists what to fix"
                if backend == "qat"
                else "unset any QATPY_SIM_* variables, or reinstall qatpy to rebuild it"
            )
            raise CliError(
                f"backend {backend!r} is unavailable: {exc.reason}; {fix}, or choose --backend auto or software"
            ) from None
        if eng.fallback_reason:
            discard()
    return eng


def _check_writable(path: str) -> None:
    """Refuse a --json path before the run, not after it (``-`` is stdout)."""
    if path == "-":
        return
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        problem = "is a directory"
    elif not os.path.isdir(parent):
        problem = f"its directory {parent} does not exist"
    elif not os.access(parent, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        problem = "is not writable by this user"
    else:
        return
    raise CliError(f"cannot write --json {path}: {problem}; give a writable file, or - for stdout", EXIT_USAGE)


def _write_json(path: str, data: object) -> None:
    text = json.dumps(data, indent=2) + "\n"
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise CliError(
            f"cannot write --json {path}: {exc.strerror or exc}; give a writable file, or - for stdout"
        ) from None


def _library_versions() -> dict[str, str]:
    import cryptography
    from cryptography.hazmat.backends.openssl.backend import backend

    return {"cryptography": cryptography.__version__, "openssl": backend.openssl_version_text()}


# -- speed --------------------------------------------------------------------------------


def _speed_module() -> Any:
    from . import _speed

    try:
        _speed.require_numpy()
    except ImportError:
        raise CliError(f"needs numpy, which is not installed: {_speed.SPEED_EXTRA}", EXIT_USAGE) from None
    return _speed


@contextlib.contextmanager
def _progress(_speed: Any, label: str) -> Iterator[Any]:
    p = _speed.Progress(label)
    try:
        yield p
    finally:
        p.done()  # also on Ctrl-C: the one-line message must not land on a progress line


#: `speed --api` values: the public APIs a program signing many messages
#: calls, and the private pipelined batch path (not an API: a reference row).
_SPEED_APIS = {"sign_many": "many", "sign_future": "future", "sign_async": "async", "batch": "batch"}
_API_NOTE = (
    "sign_many: batches of INFLIGHT messages, one call after another; sign_future: a sliding window of "
    "INFLIGHT futures, the oldest awaited with result(); sign_async: INFLIGHT coroutines on one event loop; "
    "batch path: qatpy's private pipelined batches (a reference, not an API)"
)


def _cmd_speed(args: argparse.Namespace) -> int:
    _speed = _speed_module()
    bad = [a for a in args.algorithms if a not in _speed.ALGORITHMS and a != "all"]
    if bad:
        raise CliError(f"unknown algorithm {bad[0]!r}; choose from {', '.join(_speed.ALGORITHMS)}, all", EXIT_USAGE)
    algs = list(_speed.ALGORITHMS) if "all" in args.algorithms else list(dict.fromkeys(args.algorithms))
    apis = list(_SPEED_APIS.values()) if args.api == "all" else [_SPEED_APIS[args.api]]
    backend = args.backend or _env_backend()
    if args.json is not None:
        _check_writable(args.json)
    # With the JSON on stdout, the human-readable report goes to stderr.
    out: IO[str] = sys.stderr if args.json == "-" else sys.stdout
    rows = []
    with _start_engine(backend, threads=args.threads) as eng:
        st = eng.stats()
        threads = st.get("software", {}).get("threads")
        meta: dict[str, Any] = {
            "qatpy": __version__,
            "backend": eng.backend,
            "requested_backend": backend,
            "fallback_reason": eng.fallback_reason,
            "algorithms": algs,
            "apis": [_speed.API_LABELS[a] for a in apis],
            "inflight": args.inflight,
            "seconds": args.seconds,
            "threads": threads,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            **_library_versions(),
        }
        print(
            f"qatpy {__version__} speed: backend={eng.backend} api={','.join(_speed.API_LABELS[a] for a in apis)} "
            f"inflight={args.inflight} seconds={args.seconds} threads={threads if threads is not None else '-'} "
            f"cpus={os.cpu_count()}",
            file=out,
            flush=True,
        )
        if eng.fallback_reason:
            print(f"  (auto fell back to software: {eng.fallback_reason})", file=out, flush=True)
        for alg in algs:
            key = _speed.make_key(alg)
            qkey = eng.wrap_key(key)
            with _progress(_speed, f"{alg} cryptography") as p:
                base = _speed.baseline_loop(key, args.seconds, p)
            for api in apis:
                label = _speed.API_LABELS[api]
                with _progress(_speed, f"{alg} qatpy/{eng.backend} {label}") as p:
                    res = _speed.api_loop(qkey, api, args.seconds, args.inflight, p)
                rows.append((alg, api, base, res))
    hdr = (
        f"{'algorithm':<11} {'backend':<9} {'api':<11} {'signs/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'baseline/s':>11} {'ratio':>6}"
    )
    print(hdr, file=out)
    print("-" * len(hdr), file=out)
    results = []
    for alg, api, base, res in rows:
        ratio = res.rate / base.rate if base.rate else float("nan")
        print(
            f"{alg:<11} {eng.backend:<9} {_speed.API_LABELS[api]:<11} {res.rate:>10,.0f} "
            f"{res.percentile(50) * 1e3:>8.3f} {res.percentile(99) * 1e3:>8.3f} {base.rate:>11,.0f} {ratio:>5.2f}x",
            file=out,
        )
        results.append(
            {
                "algorithm": alg,
                "backend": eng.backend,
                "api": _speed.API_LABELS[api],
                "signs_per_s": res.rate,
                "p50_s": res.percentile(50),
                "p99_s": res.percentile(99),
                "baseline_signs_per_s": base.rate,
                "ratio": ratio,
            }
        )
    print(
        "baseline: cryptography's sign() in a single-thread loop, same process; latency is per operation "
        f"from submit to result\n{_API_NOTE}",
        file=out,
        flush=True,
    )
    if args.json is not None:
        _write_json(args.json, {**meta, "results": results})
    return 0


# -- info ---------------------------------------------------------------------------------


def _cmd_info(args: argparse.Namespace) -> int:
    problem = None
    try:
        _env_backend()
    except CliError as exc:
        problem = str(exc)
    info: dict[str, object] = {
        "qatpy": __version__,
        "python": platform.python_version(),
        **_library_versions(),
        "cpus": os.cpu_count(),
        "QATPY_BACKEND": os.environ.get("QATPY_BACKEND"),
    }
    if problem:
        info["QATPY_BACKEND_problem"] = problem
    with _start_engine("auto") as eng:
        info["auto_backend"] = eng.backend
        info["fallback_reason"] = eng.fallback_reason
        info["libraries_tried"] = eng.stats().get("libraries") or [
            os.environ.get("QATPY_LIBQAT") or "libqat.so.4",
            os.environ.get("QATPY_LIBUSDM") or "libusdm.so.0",
        ]
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            if k == "QATPY_BACKEND" and problem:
                v = f"{v!r}  <- INVALID: Engine() without a backend raises ValueError"
            if k != "QATPY_BACKEND_problem":
                print(f"{k:>16}: {v}")
    sys.stdout.flush()
    if problem:  # the report is out; the mistake is still an error
        raise CliError(problem, EXIT_USAGE)
    return 0


# -- doctor, soak -------------------------------------------------------------------------


def _cmd_doctor(args: argparse.Namespace) -> int:
    from . import _doctor

    status = _doctor.run(args)
    _env_backend()  # a report on the host first; a bad QATPY_BACKEND still fails the run
    return status


def _exit_at_once_on_sigint(command: str) -> None:
    """The soak's submitter threads run their whole share before the engine
    closes; Ctrl-C ends the process at once instead (nothing of it outlives it)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        os.write(2, f"qatpy {command}: interrupted\n".encode())
        os._exit(EXIT_INTERRUPTED)

    signal.signal(signal.SIGINT, handler)


def _cmd_soak(args: argparse.Namespace) -> int:
    from ._soak import run_recovery_soak, run_soak

    _exit_at_once_on_sigint("soak")
    # The soak injects faults on purpose; the report counts the fallbacks they
    # cause, so the library's first-of-each-kind warnings would only be noise.
    logging.getLogger("qatpy").setLevel(logging.ERROR)
    _start_engine("sim").close()  # an unusable simulated device is one line, not a traceback
    if args.recovery:
        lost = 1000 if args.ppm is None else args.ppm
        report = run_recovery_soak(args.ops, lost_ppm=lost, threads=args.threads, seed=args.seed)
    else:
        ppm = 20_000 if args.ppm is None else args.ppm
        report = run_soak(args.ops, threads=args.threads, ppm=ppm, seed=args.seed)
    print(json.dumps(report, indent=2), flush=True)
    bad = {
        k: report[k]
        for k in ("lost", "duplicated", "wrong_signatures", "leaked_dma_allocs", "key_freed_unwiped")
        if report[k]
    }
    if bad:
        found = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise CliError(f"the soak found {found}; this is a bug in qatpy: please report it with the JSON above")
    return 0


# -- entry point --------------------------------------------------------------------------


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser, and each command's (to report a stray argument against the command it follows)."""
    from ._speed import ALGORITHMS

    parser = _Parser(prog="qatpy", description="qatpy: RSA/ECDSA signing on Intel QAT")
    parser.add_argument("--version", action="version", version=f"qatpy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{speed,info,doctor,soak}")
    sp = sub.add_parser("speed", help="measure signs/s and latency, like 'openssl speed' (needs qatpy[speed])")
    sp.add_argument(
        "algorithms",
        nargs="*",
        default=["rsa2048", "ecdsap256"],
        metavar="ALGORITHM",
        help=f"any of {', '.join(ALGORITHMS)}, or all (default: rsa2048 ecdsap256)",
    )
    sp.add_argument("--backend", choices=BACKENDS, default=None, help="default: QATPY_BACKEND or auto")
    sp.add_argument("--seconds", type=_positive_seconds, default=3.0, help="seconds per measurement (default 3)")
    sp.add_argument("--inflight", type=_positive_int, default=256, help="operations kept outstanding (default 256)")
    sp.add_argument("--threads", type=_positive_int, default=None, help="software worker threads (default: all cores)")
    sp.add_argument(
        "--api",
        choices=["sign_many", "sign_future", "sign_async", "batch", "all"],
        default="sign_many",
        help="the API measured (default sign_many); all: the three public ones and the private batch path",
    )
    sp.add_argument(
        "--json", metavar="FILE", help="also write the results and the run's settings as JSON (- for stdout)"
    )
    ip = sub.add_parser("info", help="version, the backend 'auto' picks and why")
    ip.add_argument("--json", action="store_true", help="print the report as JSON")
    from . import _doctor

    dp = sub.add_parser("doctor", help="check this host's QAT set-up; exit 1 when QAT is unusable")
    _doctor.add_arguments(dp)
    kp = sub.add_parser("soak", help="fault soak on the simulated device; exit 1 on any lost/duplicated/wrong result")
    kp.add_argument("--ops", type=_positive_int, default=1_000_000, help="operations to run (default 1000000)")
    kp.add_argument("--threads", type=_positive_int, default=3, help="submitting threads (default 3)")
    kp.add_argument(
        "--ppm",
        type=_ppm,
        default=None,
        help="probability of each fault kind, per million (default 20000; --recovery: of a lost answer, default 1000)",
    )
    kp.add_argument(
        "--recovery",
        action="store_true",
        help="lost answers only, one instance with 8 slots: how few operations wait for a deadline",
    )
    kp.add_argument("--seed", type=_int, default=1, help="seed of the fault generator (default 1)")
    from . import _launcher

    rp = sub.add_parser("run", help="run a command with Python's ssl offloaded to qatpy")
    _launcher.add_arguments(rp)
    return parser, {"speed": sp, "info": ip, "doctor": dp, "soak": kp, "run": rp}


def _cmd_run(args: argparse.Namespace) -> int:
    from . import _launcher

    return _launcher.run(args)


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "speed": _cmd_speed,
    "info": _cmd_info,
    "doctor": _cmd_doctor,
    "soak": _cmd_soak,
    "run": _cmd_run,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser, commands = _parser()
    args, stray = parser.parse_known_args(argv)
    if stray:
        commands[args.command].error(f"unrecognized arguments: {' '.join(stray)}")
    prog = f"qatpy {args.command}"
    try:
        return _COMMANDS[args.command](args)
    except CliError as exc:
        status = exc.status
        message = str(exc)
    except KeyboardInterrupt:
        status, message = EXIT_INTERRUPTED, "interrupted"
    sys.stdout.flush()
    print(f"{prog}: {message}", file=sys.stderr, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
