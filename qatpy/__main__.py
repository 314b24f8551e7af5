"""Command line: ``python -m qatpy speed | info | doctor | run``."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Sequence

from . import __version__
from ._engine import BACKENDS, Engine


def _cmd_speed(args: argparse.Namespace) -> int:
    from . import _speed

    algs = list(_speed.ALGORITHMS) if "all" in args.algorithms else args.algorithms
    rows = []
    with Engine(args.backend, threads=args.threads) as eng:
        print(
            f"qatpy {__version__} speed: backend={eng.backend} inflight={args.inflight} "
            f"seconds={args.seconds} threads={eng.stats().get('software', {}).get('threads', '-')} "
            f"cpus={os.cpu_count()}",
            flush=True,
        )
        if eng.fallback_reason:
            print(f"  (auto fell back to software: {eng.fallback_reason})", flush=True)
        for alg in algs:
            key = _speed.make_key(alg)
            qkey = eng.wrap_key(key)
            p = _speed.Progress(f"{alg} cryptography")
            base = _speed.baseline_loop(key, args.seconds, p)
            p.done()
            _speed.engine_loop(qkey, min(0.3, args.seconds / 4), args.inflight)  # warm-up
            p = _speed.Progress(f"{alg} qatpy/{eng.backend}")
            res = _speed.engine_loop(qkey, args.seconds, args.inflight, p)
            p.done()
            rows.append((alg, base, res))
    hdr = (
        f"{'algorithm':<11} {'backend':<9} {'signs/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'baseline/s':>11} {'ratio':>6}"
    )
    print(hdr)
    print("-" * len(hdr))
    out = []
    for alg, base, res in rows:
        ratio = res.rate / base.rate if base.rate else float("nan")
        print(
            f"{alg:<11} {eng.backend:<9} {res.rate:>10,.0f} {res.percentile(50) * 1e3:>8.3f} "
            f"{res.percentile(99) * 1e3:>8.3f} {base.rate:>11,.0f} {ratio:>5.2f}x"
        )
        out.append(
            {
                "algorithm": alg,
                "backend": eng.backend,
                "signs_per_s": res.rate,
                "p50_s": res.percentile(50),
                "p99_s": res.percentile(99),
                "baseline_signs_per_s": base.rate,
                "ratio": ratio,
            }
        )
    print(
        "baseline: cryptography's sign() in a single-thread loop, same process; "
        "latency is per operation from submit to result"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import cryptography

    info: dict[str, object] = {
        "qatpy": __version__,
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "cpus": os.cpu_count(),
        "QATPY_BACKEND": os.environ.get("QATPY_BACKEND"),
    }
    with Engine("auto") as eng:
        info["auto_backend"] = eng.backend
        info["fallback_reason"] = eng.fallback_reason
        st = eng.stats()
        info["libraries_tried"] = st.get("libraries") or [
            os.environ.get("QATPY_LIBQAT") or "libqat.so.4",
            os.environ.get("QATPY_LIBUSDM") or "libusdm.so.0",
        ]
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:>16}: {v}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qatpy", description="qatpy: RSA/ECDSA signing on Intel QAT")
    parser.add_argument("--version", action="version", version=f"qatpy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("speed", help="measure signs/s and latency, like 'openssl speed'")
    from ._speed import ALGORITHMS

    sp.add_argument(
        "algorithms",
        nargs="*",
        default=["rsa2048", "ecdsap256"],
        metavar="ALGORITHM",
        help=f"any of {', '.join(ALGORITHMS)}, or all (default: rsa2048 ecdsap256)",
    )
    sp.add_argument("--backend", choices=BACKENDS, default=None, help="default: QATPY_BACKEND or auto")
    sp.add_argument("--seconds", type=float, default=3.0, help="seconds per measurement (default 3)")
    sp.add_argument("--inflight", type=int, default=256, help="operations kept outstanding (default 256)")
    sp.add_argument("--threads", type=int, default=None, help="software worker threads (default: all cores)")
    sp.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ip = sub.add_parser("info", help="version, the backend 'auto' picks and why")
    ip.add_argument("--json", action="store_true")
    kp = sub.add_parser("soak", help="fault soak on the simulated device; exit 1 on any lost/duplicated/wrong result")
    kp.add_argument("--ops", type=int, default=1_000_000)
    kp.add_argument("--threads", type=int, default=3)
    kp.add_argument("--ppm", type=int, default=20_000, help="probability of each fault kind, per million")
    kp.add_argument("--seed", type=int, default=1)
    from . import _doctor

    _doctor.add_arguments(sub.add_parser("doctor", help="check this host's QAT set-up; exit 1 when QAT is unusable"))
    from . import _launcher

    _launcher.add_arguments(sub.add_parser("run", help="run a command with Python's ssl offloaded to qatpy"))
    args = parser.parse_args(argv)
    if args.command == "speed":
        bad = [a for a in args.algorithms if a not in ALGORITHMS and a != "all"]
        if bad:
            parser.error(f"unknown algorithm {bad[0]!r}; choose from {', '.join(ALGORITHMS)}, all")
        if args.seconds <= 0 or args.inflight < 1:
            parser.error("--seconds must be > 0 and --inflight >= 1")
        return _cmd_speed(args)
    if args.command == "soak":
        from ._soak import run_soak

        report = run_soak(args.ops, threads=args.threads, ppm=args.ppm, seed=args.seed)
        print(json.dumps(report, indent=2))
        bad = report["lost"] + report["duplicated"] + report["wrong_signatures"] + report["leaked_dma_allocs"]
        return 1 if bad or report["key_freed_unwiped"] else 0
    if args.command == "doctor":
        return _doctor.run(args)
    if args.command == "run":
        return _launcher.run(args)
    return _cmd_info(args)


if __name__ == "__main__":
    sys.exit(main())
