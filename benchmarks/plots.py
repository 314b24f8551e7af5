"""PNG plots for benchmarks/README.md (needs the ``plot`` extra: matplotlib).

    python benchmarks/plots.py [--seconds 0.4] [--json curves.json] [--from-json curves.json]

* ``throughput_vs_depth.png``: signs/s against operations in flight for each
  API on the software backend and on the sim (replay, zero latency), with
  the direct single-thread cryptography loop and ``openssl speed`` (one core)
  measured in the same run as horizontal lines.
* ``latency_vs_poll_delay.png``: at low load (one operation in flight, sim
  service time 100 us), p50 latency added over the service time and CPU use
  (whole process, and the shim's poll thread) against the timer-mode poll
  delay, with event and busy modes as reference lines.  A second pair of
  curves re-runs the sweep in a child process whose threads have a 1 ns
  timer slack instead of Linux's default 50 us (``--no-slack-curve`` skips it).

Prints the poll-delay data as a Markdown table.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
from typing import Any

import targets  # benchmarks/targets.py: this script's folder is on sys.path

from qatpy import _speed

HERE = os.path.dirname(os.path.abspath(__file__))

DEPTHS = (1, 4, 16, 64, 256)
DELAYS_US = (0, 5, 10, 20, 50, 100, 200, 500, 1000)
LABEL = {"sign": "sign (d threads)", "future": "sign_future", "async": "sign_async", "many": "sign_many (batch d)"}


def set_timerslack(ns: int) -> bool:
    """PR_SET_TIMERSLACK for this thread; threads it creates later inherit it."""
    try:
        return int(ctypes.CDLL(None, use_errno=True).prctl(29, ns, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _timerslack() -> int:
    try:
        with open("/proc/self/timerslack_ns", encoding="utf-8") as f:  # the main thread's
            return int(f.read())
    except (OSError, ValueError):
        return -1


def depth_curves(algs: list[str], seconds: float) -> dict[str, Any]:
    import qatpy

    out: dict[str, Any] = {}
    for alg in algs:
        key = _speed.make_key(alg)
        base = _speed.median_rate(key, 0.6)
        out[alg] = {"baseline_ops_s": base, "openssl_ops_s": _speed.openssl_speed(alg), "series": {}}
        for backend, kw in (("software", {}), ("sim", {"sim": targets.REPLAY})):
            with qatpy.Engine(backend, **kw) as eng:
                qk = eng.wrap_key(key)
                for api in _speed.APIS:
                    pts = []
                    for d in DEPTHS:
                        with _speed.Runner(qk, api, d) as r:
                            res = _speed.timed(r, _speed.ops_for(r, seconds))
                        pts.append(
                            {
                                "depth": d,
                                "ops_s": res.rate,
                                "p50_us": res.percentile(50) * 1e6,
                                "p99_us": res.percentile(99) * 1e6,
                            }
                        )
                        print(f"  {alg} {backend} {api}@{d}: {res.rate:,.0f}/s", file=sys.stderr, flush=True)
                    out[alg]["series"][f"{backend} {api}"] = pts
    return out


def poll_sweep(seconds: float, repeats: int) -> dict[str, Any]:
    rows = []
    for d in DELAYS_US:
        rows.append(targets.low_load("timer", d / 1e6, seconds, repeats))
        print(f"  timer {d} us: p50 {rows[-1]['p50_us']:.0f} us", file=sys.stderr, flush=True)
    ref = {m: targets.low_load(m, 0.0, seconds, repeats) for m in ("event", "busy")}
    return {"timer": rows, **ref, "timerslack_ns": int(_timerslack())}


def plot_depth(data: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    algs = list(data)
    fig, axes = plt.subplots(1, len(algs), figsize=(6.2 * len(algs), 4.6), squeeze=False)
    colors = {"sign": "tab:blue", "future": "tab:orange", "async": "tab:green", "many": "tab:red"}
    for ax, alg in zip(axes[0], algs):
        d = data[alg]
        for name, pts in d["series"].items():
            backend, api = name.split()
            ax.plot(
                [p["depth"] for p in pts],
                [p["ops_s"] for p in pts],
                marker="o",
                ms=3,
                color=colors[api],
                ls="-" if backend == "sim" else "--",
                label=f"{backend}: {LABEL[api]}",
            )
        ax.axhline(d["baseline_ops_s"], color="k", lw=1, label="cryptography, 1 thread")
        if d.get("openssl_ops_s"):
            ax.axhline(d["openssl_ops_s"], color="gray", lw=1, ls=":", label="openssl speed, 1 core")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("operations in flight (depth)")
        ax.set_ylabel("signs/s")
        ax.set_title(f"{alg}: sim = replay, zero latency (qatpy's own cost)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_poll(sweeps: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12.5, 4.6))
    for label, sw, ls in sweeps_items(sweeps):
        xs = [max(r["poll_delay_us"], 1) for r in sw["timer"]]
        a1.plot(
            xs,
            [r["added_p50_us"] for r in sw["timer"]],
            marker="o",
            ms=3,
            ls=ls,
            color="tab:blue",
            label=f"timer p50, {label}",
        )
        a1.plot(
            xs,
            [r["p99_us"] - r["service_us"] for r in sw["timer"]],
            marker=".",
            ms=3,
            ls=ls,
            color="tab:cyan",
            label=f"timer p99, {label}",
        )
        a2.plot(
            xs,
            [100 * r["cpu_process"] for r in sw["timer"]],
            marker="o",
            ms=3,
            ls=ls,
            color="tab:blue",
            label=f"timer: process, {label}",
        )
        a2.plot(
            xs,
            [100 * r["cpu_poll_thread"] for r in sw["timer"]],
            marker="s",
            ms=3,
            ls=ls,
            color="tab:purple",
            label=f"timer: poll thread, {label}",
        )
        for m, c in (("event", "tab:green"), ("busy", "tab:red")):
            a1.axhline(sw[m]["added_p50_us"], color=c, ls=ls, lw=1, label=f"{m} p50, {label}")
            a2.axhline(100 * sw[m]["cpu_process"], color=c, ls=ls, lw=1, label=f"{m}: process, {label}")
    xs = sorted({max(r["poll_delay_us"], 1) for sw in sweeps.values() for r in sw["timer"]})
    a1.plot(xs, [x / 2 + 30 for x in xs], color="k", lw=1, ls="-.", label="target: delay/2 + 30 us")
    a1.axhline(30, color="gray", lw=1, ls="-.", label="event target: 30 us")
    for a in (a1, a2):
        a.set_xscale("log")
        a.set_xlabel("timer-mode poll delay, us (0 plotted at 1)")
        a.grid(True, which="both", alpha=0.3)
    a1.set_yscale("log")
    a1.set_ylabel("latency added over 100 us service, us")
    a1.set_title("sign() at depth 1, sim service time 100 us")
    a2.set_ylabel("CPU, % of one core")
    a2.set_title("CPU use at that load")
    a1.legend(fontsize=6.5)
    a2.legend(fontsize=6.5)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def sweeps_items(sweeps: dict[str, Any]) -> list[tuple[str, Any, str]]:
    return [(label, sw, "-" if i == 0 else "--") for i, (label, sw) in enumerate(sweeps.items())]


def poll_table(sweeps: dict[str, Any]) -> str:
    lines = [
        "| timer slack | mode | poll delay | p50 | added p50 | p99 | signs/s | CPU process | CPU poll thread "
        "| CPU us/op |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, sw, _ in sweeps_items(sweeps):
        for r in sw["timer"] + [sw["event"], sw["busy"]]:
            lines.append(
                f"| {label} | {r['mode']} | {r['poll_delay_us']:g} us | {r['p50_us']:.0f} us | "
                f"{r['added_p50_us']:.0f} us | {r['p99_us']:.0f} us | {r['ops_s']:,.0f} | "
                f"{100 * r['cpu_process']:.0f}% | {100 * r['cpu_poll_thread']:.0f}% | "
                f"{r['cpu_us_per_op']:.0f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=0.4, help="seconds per point (default 0.4)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats per poll-sweep point (median p50)")
    ap.add_argument("--algs", default="ecdsap256,rsa2048")
    ap.add_argument("--json", help="also write the curves here")
    ap.add_argument("--from-json", help="plot curves written earlier by --json, measuring nothing")
    ap.add_argument("--no-slack-curve", action="store_true")
    ap.add_argument("--only", choices=("depth", "poll"))
    ap.add_argument("--timerslack-ns", type=int, help=argparse.SUPPRESS)  # the child's sweep
    ap.add_argument("--out", default=HERE, help="folder for the PNGs (default benchmarks/)")
    args = ap.parse_args(argv)

    if args.timerslack_ns is not None:  # child: only the sweep, as JSON on stdout
        set_timerslack(args.timerslack_ns)
        print(json.dumps(poll_sweep(args.seconds, args.repeats)))
        return 0
    if args.from_json:
        with open(args.from_json, encoding="utf-8") as f:
            data = json.load(f)
    else:
        data = {"machine": _speed.machine_info()}
        if args.only != "poll":
            with _speed.OthersMeter() as noise:
                data["depth"] = depth_curves(args.algs.split(","), args.seconds)
            data["depth_other_processes_cores"] = noise.others
            print(f"depth curves: other processes used {noise.others:.2f} cores meanwhile", file=sys.stderr)
        if args.only != "depth":
            data["poll"] = {"default 50 us slack": poll_sweep(args.seconds * 2.5, args.repeats)}
            if not args.no_slack_curve:
                p = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--timerslack-ns",
                        "1",
                        "--seconds",
                        str(args.seconds * 2.5),
                        "--repeats",
                        str(args.repeats),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                data["poll"]["1 ns slack"] = json.loads(p.stdout)
        data["machine_after"] = _speed.machine_info()["loadavg"]
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
    if "depth" in data:
        plot_depth(data["depth"], os.path.join(args.out, "throughput_vs_depth.png"))
    if "poll" in data:
        plot_poll(data["poll"], os.path.join(args.out, "latency_vs_poll_delay.png"))
        print(poll_table(data["poll"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
