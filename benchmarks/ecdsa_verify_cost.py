"""What checking ECDSA results before delivery costs (Engine(verify_ecdsa=True)).

The device check beside the plain path, on the simulated device, in one process:

* host CPU per signature: the process's CPU time minus the simulated device's own
  threads (``qatsim-*``), over ``sign_many`` batches of 256 with the device answering
  from its replay cache (so its arithmetic costs next to nothing and the host's work
  is what is left): Python, the shim, the poll threads;
* device work per signature: requests the device served, and the CPU time of the
  device's arithmetic (the simulator computes with libcrypto on its worker threads:
  a sign is one scalar multiplication, a verify two);
* modelled device time (``latency_ns`` per request, ``engines`` served at once per
  instance, answers from the replay cache): throughput at saturation, host CPU per
  signature there (the poll threads wait longer per signature), and p50 latency of
  one blocking ``sign()``;
* what a check in software would cost at best: cryptography's own single-thread
  verify, beside its sign.  (A software check in C, libcrypto on the poll thread,
  was measured at commit b330b77, where this script had a ``software`` mode: 93-99 us
  of host CPU per P-256 signature, against 4.7-5.5 us for the plain path.  It costs
  more than signing in software, so it was not kept.)

Run: ``python benchmarks/ecdsa_verify_cost.py [--curve P-256] [--ops 20000] [--json FILE]``.
Every signature of the measured runs is verified with cryptography afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

import qatpy

CURVES = {
    "P-256": (ec.SECP256R1(), hashes.SHA256()),
    "P-384": (ec.SECP384R1(), hashes.SHA384()),
    "P-521": (ec.SECP521R1(), hashes.SHA512()),
}
MODES = {"off": False, "device": True}
BATCH = 256
REPLAY = {"compute_mode": 1, "replay.ecdsa_ignore_k": 1}


def thread_cpu_ns() -> dict[int, tuple[str, int]]:
    """tid -> (thread name, CPU ns so far) for every live thread of this process."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                out[int(tid)] = (name, int(f.read().split()[0]))
        except OSError:  # the thread ended meanwhile
            continue
    return out


def device_ns(before: dict[int, tuple[str, int]], after: dict[int, tuple[str, int]]) -> int:
    """CPU the simulated device's threads used between two snapshots."""
    return sum(ns - before.get(tid, (name, 0))[1] for tid, (name, ns) in after.items() if name.startswith("qatsim"))


def check_all(raw: ec.EllipticCurvePrivateKey, alg: ec.ECDSA, msgs: list[bytes], sigs: list[bytes]) -> None:
    pub = raw.public_key()
    for m, s in zip(msgs, sigs):
        pub.verify(s, m, alg)  # raises InvalidSignature: a wrong result would end the run


def cpu_per_op(raw: Any, alg: ec.ECDSA, mode: str, ops: int, knobs: dict[str, int]) -> dict[str, float]:
    """Host and device CPU per signature, and device requests per signature."""
    msgs = [b"cpu %d" % i for i in range(BATCH)]
    with qatpy.Engine("sim", verify_ecdsa=MODES[mode], sim=knobs) as eng:
        key = eng.wrap_key(raw)
        check_all(raw, alg, msgs, key.sign_many(msgs, alg))  # warm: pools, replay cache
        sub0 = eng.stats()["sim"]["submitted"]
        t0, c0, th0 = time.perf_counter(), time.process_time_ns(), thread_cpu_ns()
        rounds = max(1, ops // BATCH)
        results = [key.sign_many(msgs, alg) for _ in range(rounds)]
        wall, cpu, th1 = time.perf_counter() - t0, time.process_time_ns() - c0, thread_cpu_ns()
        st = eng.stats()
    for sigs in results:
        check_all(raw, alg, msgs, sigs)
    n = rounds * BATCH
    dev = device_ns(th0, th1)
    return {
        "host_cpu_us": (cpu - dev) / n / 1e3,
        "device_cpu_us": dev / n / 1e3,
        "device_requests": (st["sim"]["submitted"] - sub0) / n,
        "ops_per_s": n / wall,
        "checks": st["device"]["ecdsa_checks"],
    }


def modelled(raw: Any, alg: ec.ECDSA, mode: str, ops: int, latency_ns: int, engines: int) -> dict[str, float]:
    """Saturated throughput (and host CPU there) and depth-1 p50 latency with modelled device time."""
    knobs = dict(REPLAY, latency_ns=latency_ns, engines=engines, instances=2)
    msgs = [b"dev %d" % i for i in range(BATCH)]
    with qatpy.Engine("sim", verify_ecdsa=MODES[mode], sim=knobs) as eng:
        key = eng.wrap_key(raw)
        key.sign_many(msgs, alg)
        rounds = max(2, ops // BATCH // 4)
        t0, c0, th0 = time.perf_counter(), time.process_time_ns(), thread_cpu_ns()
        futs = [key.sign_many_future(msgs, alg) for _ in range(rounds)]
        results = [f.result() for f in futs]
        wall, cpu, th1 = time.perf_counter() - t0, time.process_time_ns() - c0, thread_cpu_ns()
        thr = rounds * BATCH / wall
        host_us = (cpu - device_ns(th0, th1)) / (rounds * BATCH) / 1e3
        lat = []
        for i in range(400):
            m = msgs[i % BATCH]  # answered from the replay cache: the modelled time is the device's
            t = time.perf_counter()
            sig = key.sign(m, alg)
            lat.append(time.perf_counter() - t)
            raw.public_key().verify(sig, m, alg)
    for sigs in results:
        check_all(raw, alg, msgs, sigs)
    return {"ops_per_s": thr, "host_cpu_us": host_us, "p50_us": statistics.median(lat) * 1e6}


def software_reference(raw: Any, alg: ec.ECDSA, seconds: float = 0.5) -> dict[str, float]:
    """cryptography's single-thread sign and verify, us per operation."""
    out = {}
    sig = raw.sign(b"ref", alg)
    pub = raw.public_key()
    for name, fn in (("sign_us", lambda: raw.sign(b"ref", alg)), ("verify_us", lambda: pub.verify(sig, b"ref", alg))):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(50):
                fn()
            n += 50
        out[name] = (time.perf_counter() - t0) / n * 1e6
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--curve", choices=sorted(CURVES), default="P-256")
    ap.add_argument("--ops", type=int, default=20_000, help="signatures per CPU measurement (default 20000)")
    ap.add_argument("--modes", default="off,device", help="comma-separated: off, device")
    ap.add_argument("--latency-us", type=int, default=200, help="modelled device time per request (default 200)")
    ap.add_argument("--engines", type=int, default=4, help="requests served at once per instance (default 4)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if any(m not in MODES for m in modes):
        ap.error(f"--modes takes {', '.join(MODES)}")
    curve, h = CURVES[args.curve]
    raw = ec.generate_private_key(curve)
    alg = ec.ECDSA(h)
    lat_ns = args.latency_us * 1000
    rows: dict[str, Any] = {}
    for mode in modes:
        rows[mode] = {
            "replay": cpu_per_op(raw, alg, mode, args.ops, REPLAY),
            "computed": cpu_per_op(raw, alg, mode, max(BATCH, args.ops // 4), {}),
            "modelled": modelled(raw, alg, mode, args.ops, lat_ns, args.engines),
        }
    ref = software_reference(raw, alg)
    capacity = 2 * args.engines / (args.latency_us / 1e6)
    print(f"{args.curve}, {os.cpu_count()} CPUs, qatpy {qatpy.__version__}, {args.ops} signatures per CPU row")
    print(
        f"cryptography 1 thread: sign {ref['sign_us']:.1f} us, verify {ref['verify_us']:.1f} us "
        "(a check in software costs at least the verify)"
    )
    print(
        f"modelled device: 2 instances x {args.engines} engines, {args.latency_us} us per request "
        f"(capacity {capacity:,.0f} requests/s)"
    )
    print(
        "| verify_ecdsa | host CPU us/op, device instant | device requests/op | device arithmetic us/op "
        f"| saturated ops/s, {args.latency_us} us/request | host CPU us/op there | p50 sign() us |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mode, r in rows.items():
        rp, cp, md = r["replay"], r["computed"], r["modelled"]
        print(
            f"| {mode} | {rp['host_cpu_us']:.1f} | {rp['device_requests']:.2f} | {cp['device_cpu_us']:.1f} "
            f"| {md['ops_per_s']:,.0f} | {md['host_cpu_us']:.1f} | {md['p50_us']:.0f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"curve": args.curve, "args": vars(args), "reference": ref, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
