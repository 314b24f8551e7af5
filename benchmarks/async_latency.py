"""Latency of a lone ``sign_async``: the loop polling for its own request against the poll
thread's route, side by side in one process.

    python benchmarks/async_latency.py [--rounds 10] [--n 1000] [--service-us 100] [--json FILE]

One coroutine awaits one ``sign_async`` at a time (P-256, the simulator in replay mode with a fixed
service time).  Each round runs every configuration once, in turn, on a fresh engine: busy mode
(the poll thread spins: the route with no parked thread to wake), then event and timer mode (20 µs
poll delay) each with the loop polling for its request (the default) and through the poll thread
(the private switch ``QatBackend._loop_drives = False``, which exists for this comparison only).
Reported per configuration: the median over rounds of each round's p50 minus the service time
("added"), the per-round values (this VM's noise), and CPU time per operation: the whole process's
and the loop thread's own (the thread that waits).  Each round also measures the simulator's own
timer overshoot as benchmarks/targets.py does (a blocking ``sign()`` in busy mode at this service
time and at zero), and every row is reported net of the median overshoot too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

import qatpy
from qatpy import _qat

REPLAY = {"compute_mode": 1, "replay.ecdsa_ignore_k": 1}
CONFIGS = (("busy", True), ("event", True), ("event", False), ("timer", True), ("timer", False))
ECDSA = ec.ECDSA(hashes.SHA256())


def one_round(
    key: ec.EllipticCurvePrivateKey, mode: str, drives: bool, n: int, service_ns: int
) -> tuple[float, float, float, int]:
    """(added p50, process CPU per operation, loop thread CPU per operation), in µs, for n
    sequential sign_async, and how many of them timer mode handed to the poll thread."""
    knobs = dict(REPLAY, instances=1, engines=8, latency_ns=service_ns)
    _qat.QatBackend._loop_drives = drives
    try:
        with qatpy.Engine("sim", sim=knobs, poll_mode=mode, poll_delay=20e-6) as eng:
            qk = eng.wrap_key(key)
            pc = time.perf_counter

            async def run(count: int) -> tuple[list[float], float]:
                lat = []
                t0 = time.thread_time()
                for _ in range(count):
                    t = pc()
                    await qk.sign_async(b"m", ECDSA)
                    lat.append(pc() - t)
                return lat, time.thread_time() - t0

            asyncio.run(run(min(200, n)))  # warm-up: replay cache, pools
            c0 = time.process_time()
            lat, loop_cpu = asyncio.run(run(n))
            cpu = time.process_time() - c0
            dev = eng.stats()["device"]
            driven, handovers = dev["driven"], dev["drive_handovers"]
    finally:
        _qat.QatBackend._loop_drives = True
    want = 0 if mode == "busy" or not drives else n + min(200, n)
    assert driven == want, (mode, drives, driven, want)  # the route measured is the route named
    return statistics.median(lat) * 1e6 - service_ns / 1e3, cpu / n * 1e6, loop_cpu / n * 1e6, handovers


def sim_overshoot(key: ec.EllipticCurvePrivateKey, n: int, service_ns: int) -> float:
    """p50 of a blocking sign() in busy mode at service_ns, minus its p50 at zero service, minus
    service_ns, in µs: what the simulator's timer adds (nothing in the path sleeps)."""
    p50 = []
    for lat_ns in (service_ns, 0):
        knobs = dict(REPLAY, instances=1, engines=8, latency_ns=lat_ns)
        with qatpy.Engine("sim", sim=knobs, poll_mode="busy") as eng:
            qk = eng.wrap_key(key)
            for _ in range(min(200, n)):
                qk.sign(b"m", ECDSA)
            lat = []
            for _ in range(n):
                t = time.perf_counter()
                qk.sign(b"m", ECDSA)
                lat.append(time.perf_counter() - t)
            p50.append(statistics.median(lat) * 1e6)
    return max(0.0, p50[0] - p50[1] - service_ns / 1e3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--n", type=int, default=1000, help="operations per configuration and round")
    ap.add_argument("--service-us", type=float, default=100.0)
    ap.add_argument("--json", help="write the rows to this file")
    args = ap.parse_args(argv)
    key = ec.generate_private_key(ec.SECP256R1())
    service_ns = int(args.service_us * 1000)
    added: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    loop_cpu: dict[str, list[float]] = {}
    handed: dict[str, int] = {}
    overshoot: list[float] = []
    for _ in range(args.rounds):
        overshoot.append(sim_overshoot(key, args.n, service_ns))
        for mode, drives in CONFIGS:
            name = mode if mode == "busy" else f"{mode}, {'loop polls' if drives else 'poll thread'}"
            a, c, lc, h = one_round(key, mode, drives, args.n, service_ns)
            handed[name] = handed.get(name, 0) + h
            added.setdefault(name, []).append(a)
            cpu.setdefault(name, []).append(c)
            loop_cpu.setdefault(name, []).append(lc)
    rows: list[dict[str, Any]] = []
    over = statistics.median(overshoot)
    print(f"sign_async @1, P-256 on the sim, {args.service_us:g} us service, {args.rounds} rounds of {args.n}")
    print(
        f"sim timer overshoot (blocking sign, busy mode): median {over:.1f} us, per round "
        + " ".join(f"{x:.0f}" for x in overshoot)
    )
    print(
        f"{'route':28} {'added p50':>10} {'net':>7} {'CPU/op':>8} {'loop CPU/op':>12} {'handed':>7}"
        "  per-round added p50 (us)"
    )
    for name in added:
        row = {
            "route": name,
            "added_p50_us": statistics.median(added[name]),
            "net_of_sim_overshoot_us": statistics.median(added[name]) - over,
            "per_round_us": [round(x, 1) for x in added[name]],
            "cpu_us_per_op": statistics.median(cpu[name]),
            "loop_thread_cpu_us_per_op": statistics.median(loop_cpu[name]),
            "handed_to_poll_thread": handed[name],
        }
        rows.append(row)
        per = " ".join(f"{x:.0f}" for x in added[name])
        print(
            f"{name:28} {row['added_p50_us']:8.1f}us {row['net_of_sim_overshoot_us']:5.0f}us "
            f"{row['cpu_us_per_op']:6.0f}us "
            f"{row['loop_thread_cpu_us_per_op']:10.0f}us {handed[name]:7d}  {per}"
        )
    if args.json:
        with open(args.json, "w") as f:
            doc = {"service_us": args.service_us, "n": args.n, "sim_overshoot_us": overshoot, "rows": rows}
            json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
