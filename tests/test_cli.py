"""The command line: `speed` prints its table beside the baseline, `info` names the backend."""

from __future__ import annotations

import json
import subprocess
import sys


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qatpy", *args], capture_output=True, text=True, timeout=120, env=env)


def test_speed_software_table(tmp_path):
    """`speed --backend software` prints signs/s, latency and the baseline ratio for each algorithm."""
    out = tmp_path / "r.json"
    p = run(
        "speed",
        "--backend",
        "software",
        "--seconds",
        "0.3",
        "--inflight",
        "16",
        "ecdsap256",
        "rsa2048",
        "--json",
        str(out),
    )
    assert p.returncode == 0, p.stderr
    assert "baseline/s" in p.stdout and "ecdsap256" in p.stdout and "rsa2048" in p.stdout
    rows = json.loads(out.read_text())
    assert {r["algorithm"] for r in rows} == {"ecdsap256", "rsa2048"}
    for r in rows:
        assert r["signs_per_s"] > 0 and r["baseline_signs_per_s"] > 0 and r["p99_s"] >= r["p50_s"] > 0


def test_speed_sim(tmp_path):
    """`speed --backend sim` runs on the simulated device."""
    p = run("speed", "--backend", "sim", "--seconds", "0.3", "--inflight", "32", "ecdsap384")
    assert p.returncode == 0, p.stderr
    assert "sim" in p.stdout and "ecdsap384" in p.stdout


def test_speed_rejects_unknown_algorithm():
    """An unknown algorithm is an argument error naming it."""
    p = run("speed", "dsa1024")
    assert p.returncode == 2 and "dsa1024" in p.stderr


def test_info_json():
    """`info --json` reports the version, the backend auto picks and why."""
    import os

    env = dict(os.environ, QATPY_LIBQAT="/nonexistent/libqat.so.4", QATPY_LIBUSDM="/nonexistent/libusdm.so.0")
    env.pop("QATPY_BACKEND", None)
    p = run("info", "--json", env=env)
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["auto_backend"] == "software"
    assert "library not found" in info["fallback_reason"]
    assert "/nonexistent/libqat.so.4" in info["libraries_tried"]
