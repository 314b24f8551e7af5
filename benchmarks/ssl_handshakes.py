"""Python's `ssl` with qatpy's OpenSSL provider against the same server without it, side by side.

    python benchmarks/ssl_handshakes.py [--seconds 3] [--repeats 3] [--json FILE] [--only cpu,rate,latency]

Real TLS 1.3 handshakes on 127.0.0.1: the server is benchmarks/ssl_server.py in its own process
(a stdlib ``ssl`` server: threads taking connections), the clients are ``openssl s_time -new``
(full handshakes, in C) and, for latency, a Python client.  Every row is a ratio or a difference
between the plain server and the qatpy server measured in the same run, interleaved, median of
``--repeats``.

- ``cpu``: server CPU per handshake (all of the server process's threads except the simulated
  device's own, which stand in for the hardware) with qatpy on the simulated device in replay mode
  (device work free, so what remains is qatpy's cost), for RSA-2048, RSA-4096, P-256 and P-384.
- ``rate``: handshakes/s of the server with 8 concurrent clients, RSA-2048, the simulated device
  with 8 engines per instance and a 300 us service time, for 1, 2, 4 and 8 server threads.
- ``latency``: p50 of a handshake seen by a sequential Python client, and what qatpy adds to it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

HERE = Path(__file__).resolve().parent
REPLAY = {"compute_mode": 1, "replay.ecdsa_ignore_k": 1}
# The qatpy server's engine: event polling (the poll threads sleep on the instances' event fds
# instead of polling on a timer while a slow answer is due; qatlib 26.02+ and the simulator).
ENGINE: dict[str, Any] = {"poll_mode": "event"}
TARGETS = {"rsa2048": 0.75, "rsa4096": 0.20, "p256": 1.05, "p384": 0.50}  # qatpy/plain CPU per handshake, at most


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(d: Path) -> dict[str, Any]:
    """A CA and one localhost server certificate per key kind."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("bench CA"))
        .issuer_name(_name("bench CA"))
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out: dict[str, Any] = {"ca": d / "ca.pem"}
    keys = {
        "rsa2048": rsa.generate_private_key(65537, 2048),
        "rsa4096": rsa.generate_private_key(65537, 4096),
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
    }
    for i, (kind, key) in enumerate(keys.items(), start=2):
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("localhost"))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(i)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        (d / f"{kind}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (d / f"{kind}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        out[kind] = (d / f"{kind}.crt", d / f"{kind}.key")
    return out


class Server:
    """benchmarks/ssl_server.py in its own process."""

    def __init__(
        self,
        pki: dict[str, Any],
        kind: str,
        qatpy_backend: str | None,
        knobs: dict[str, int],
        threads: int,
        options: dict[str, Any] | None = None,
    ):
        cert, key = pki[kind]
        cmd = [sys.executable, str(HERE / "ssl_server.py"), "--cert", str(cert), "--key", str(key)]
        cmd += ["--threads", str(threads)]
        if qatpy_backend:
            cmd += ["--qatpy", qatpy_backend, "--sim-knobs", json.dumps(knobs)]
            cmd += ["--engine-options", json.dumps(options if options is not None else ENGINE)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return dict(json.loads(self.proc.stdout.readline()))

    def stop(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def load(port: int, ca: Path, seconds: int, clients: int) -> None:
    """`clients` concurrent `openssl s_time -new` for `seconds`."""
    cmd = ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-tls1_3", "-time", str(seconds)]
    cmd += ["-CAfile", str(ca), "-verify", "1"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(clients)]
    for p in procs:
        p.wait()


def measure(server: Server, ca: Path, seconds: int, clients: int) -> dict[str, float]:
    """Handshakes, server CPU per handshake (us, without the simulator's threads) and handshakes/s."""
    load(server.port, ca, 1, clients)  # warm-up (replay cache, thread pools)
    a = server.stats()
    t0 = time.perf_counter()
    load(server.port, ca, seconds, clients)
    wall = time.perf_counter() - t0
    b = server.stats()
    n = b["handshakes"] - a["handshakes"]
    cpu = (b["cpu"] - a["cpu"]) - (b["cpu_sim"] - a["cpu_sim"])
    out = {"handshakes": n, "cpu_us": 1e6 * cpu / max(1, n), "rate": n / wall}
    if "ssl" in b:
        out["device"] = b["ssl"]["device"] - a["ssl"]["device"]
        out["signs"] = b["ssl"]["signs"] - a["ssl"]["signs"]
    return out


def handshake_p50(port: int, ca: Path, n: int) -> float:
    """p50 of n sequential full handshakes by a Python client, in microseconds."""
    import socket
    import ssl

    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    times = []
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t0 = time.perf_counter()
            with ctx.wrap_socket(raw, server_hostname="localhost"):
                times.append(time.perf_counter() - t0)
    return 1e6 * statistics.median(times)


def loadavg() -> float:
    return os.getloadavg()[0]


def cpu_rows(pki: dict[str, Any], seconds: int, repeats: int) -> list[dict[str, Any]]:
    rows = []
    for kind, target in TARGETS.items():
        ratios, plain_us, qat_us, devices = [], [], [], []
        for _ in range(repeats):
            for mode in ("plain", "qatpy"):
                srv = Server(pki, kind, "sim" if mode == "qatpy" else None, REPLAY, threads=2)
                try:
                    m = measure(srv, pki["ca"], seconds, clients=1)
                finally:
                    srv.stop()
                (plain_us if mode == "plain" else qat_us).append(m["cpu_us"])
                if mode == "qatpy":
                    devices.append((m["device"], m["signs"], m["handshakes"]))
            ratios.append(qat_us[-1] / plain_us[-1])
        ratio = statistics.median(ratios)
        rows.append(
            {
                "row": f"server CPU per TLS 1.3 handshake, {kind}, qatpy (sim replay) / plain",
                "measured": ratio,
                "target": f"<= {target}",
                "passed": ratio <= target,
                "plain_us": statistics.median(plain_us),
                "qatpy_us": statistics.median(qat_us),
                "ratios": ratios,
                "device_signs_handshakes": devices,
            }
        )
    return rows


def rate_rows(pki: dict[str, Any], seconds: int, repeats: int) -> list[dict[str, Any]]:
    knobs = {"engines": 8, "latency_ns": 300_000}
    rows = []
    for threads in (1, 2, 4, 8):
        plain, qat = [], []
        for _ in range(repeats):
            for mode in ("plain", "qatpy"):
                srv = Server(pki, "rsa2048", "sim" if mode == "qatpy" else None, knobs, threads=threads)
                try:
                    m = measure(srv, pki["ca"], seconds, clients=8)
                finally:
                    srv.stop()
                (plain if mode == "plain" else qat).append(m["rate"])
        p, q = statistics.median(plain), statistics.median(qat)
        rows.append(
            {
                "row": f"handshakes/s, RSA-2048, 8 clients, {threads} server threads, sim 8 engines x 300 us",
                "plain": p,
                "qatpy": q,
                "measured": q / p,
                "target": ">= 1.00 (at least the plain server's)",
                "passed": q >= p,
                "plain_repeats": plain,
                "qatpy_repeats": qat,
            }
        )
    return rows


def latency_rows(pki: dict[str, Any], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for kind, knobs, what in (
        ("rsa2048", REPLAY, "sim replay (device work free)"),
        ("p256", REPLAY, "sim replay (device work free)"),
        ("rsa2048", {"latency_ns": 300_000}, "sim, 300 us service time"),
    ):
        plain, qat = [], []
        for _ in range(repeats):
            for mode in ("plain", "qatpy"):
                srv = Server(pki, kind, "sim" if mode == "qatpy" else None, knobs, threads=2)
                try:
                    handshake_p50(srv.port, pki["ca"], 20)  # warm-up
                    (plain if mode == "plain" else qat).append(handshake_p50(srv.port, pki["ca"], 200))
                finally:
                    srv.stop()
        p, q = statistics.median(plain), statistics.median(qat)
        rows.append(
            {
                "row": f"handshake p50 seen by a Python client, {kind}, {what}",
                "plain_us": p,
                "qatpy_us": q,
                "added_us": q - p,
                "plain_repeats": plain,
                "qatpy_repeats": qat,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default="cpu,rate,latency")
    ap.add_argument("--json", help="write the rows as JSON to this file")
    args = ap.parse_args(argv)
    if not shutil.which("openssl"):
        print("ssl_handshakes: needs the openssl command line tool (openssl s_time)", file=sys.stderr)
        return 2
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory() as d:
        pki = make_pki(Path(d))
        out: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "loadavg_start": loadavg()}, "rows": []}
        if "cpu" in only:
            out["rows"] += cpu_rows(pki, args.seconds, args.repeats)
        if "rate" in only:
            out["rows"] += rate_rows(pki, args.seconds, args.repeats)
        if "latency" in only:
            out["rows"] += latency_rows(pki, args.repeats)
        out["machine"]["loadavg_end"] = loadavg()
    for r in out["rows"]:
        shown = ("measured", "target", "passed", "plain_us", "qatpy_us", "added_us", "plain", "qatpy")
        keys = [k for k in shown if k in r]
        print(r["row"])
        print("    " + ", ".join(f"{k}={r[k]:.3f}" if isinstance(r[k], float) else f"{k}={r[k]}" for k in keys))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
