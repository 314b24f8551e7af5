"""Where the Python time per operation goes, on the simulated device.

    python benchmarks/profile_paths.py [--api future|async|many|sign] [--depth 256] [--ops 50000] [--alg ecdsap256]
    py-spy record --nonblocking --gil -r 1000 -f raw -o /tmp/qatpy.txt -- \
        python benchmarks/profile_paths.py --api async --no-cprofile

Signs `--ops` messages through one API on the sim in replay mode at zero
latency (the device costs nothing; what is left is qatpy's own work), under
cProfile in *every* Python thread (the caller and qatpy's completion
thread: the hook is installed before the engine starts its threads), and
prints the top functions by own time, in microseconds per operation.

Under py-spy use ``--nonblocking``: stopping the process for each sample
piles samples onto syscall sites (``os.getpid()`` showed as 30% of GIL time
blocking, 3.6% non-blocking).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import threading
import time
from typing import Any

import qatpy
from qatpy import _speed

REPLAY = {"compute_mode": 1, "replay.ecdsa_ignore_k": 1}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--api", choices=_speed.APIS, default="future")
    ap.add_argument("--depth", type=int, default=256)
    ap.add_argument("--ops", type=int, default=50_000)
    ap.add_argument("--alg", choices=list(_speed.ALGORITHMS), default="ecdsap256")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--sort", default="tottime", choices=("tottime", "cumulative"))
    ap.add_argument("--no-cprofile", action="store_true", help="run unprofiled (for py-spy)")
    args = ap.parse_args(argv)

    profs: list[cProfile.Profile] = []

    def in_new_thread(frame: Any, event: str, arg: Any) -> None:
        sys.setprofile(None)
        p = cProfile.Profile()
        profs.append(p)
        p.enable()

    key = _speed.make_key(args.alg)
    if not args.no_cprofile:
        threading.setprofile(in_new_thread)
    with qatpy.Engine("sim", sim=REPLAY) as eng:
        qk = eng.wrap_key(key)
        with _speed.Runner(qk, args.api, args.depth) as runner:
            runner.run(max(1024, args.depth * 4))  # warm-up, unprofiled in this thread
            main_prof = cProfile.Profile()
            t = time.perf_counter()
            if not args.no_cprofile:
                for p in profs:
                    p.clear()
                main_prof.enable()
            runner.run(args.ops)
            main_prof.disable()
            wall = time.perf_counter() - t
    threading.setprofile(None)  # type: ignore[arg-type]
    for p in profs:
        p.disable()
    print(
        f"{args.alg} {args.api}@{args.depth}: {args.ops} ops in {wall:.2f} s "
        f"({args.ops / wall:,.0f}/s{' under cProfile' if not args.no_cprofile else ''}; "
        f"{len(profs)} other Python threads profiled)"
    )
    if args.no_cprofile:
        return 0
    st = pstats.Stats(main_prof)
    for p in profs:
        try:
            st.add(p)
        except TypeError:
            pass  # a thread that never ran Python code under the profiler
    st.sort_stats(args.sort)
    rows = []
    for func, (_cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        rows.append((tt if args.sort == "tottime" else ct, nc, tt, ct, func))
    rows.sort(reverse=True)
    total = sum(r[2] for r in rows)
    print(f"total profiled Python time {total / args.ops * 1e6:.2f} us/op (cProfile inflates it)")
    print(f"{'own us/op':>9} {'cum us/op':>9} {'calls/op':>8}  function")
    for _, nc, tt, ct, (fn, line, name) in rows[: args.top]:
        where = f"{fn.rsplit('/', 2)[-1] if '/' in fn else fn}:{line}"
        print(f"{tt / args.ops * 1e6:9.2f} {ct / args.ops * 1e6:9.2f} {nc / args.ops:8.3f}  {name} ({where})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
