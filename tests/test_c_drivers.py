"""The C-level test drivers pass: the shim's unit and sim-driven tests, and the simulator's own driver."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(cmd: list[str], timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)  # the drivers are plain builds
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def test_shim_c_tests():
    """make -C csrc/shim/tests: encodings vs vectors, curve constants vs facts, and the sim-driven shim tests."""
    assert shutil.which("make"), "make is needed to build the C tests"
    p = _run(["make", "-C", "csrc/shim/tests", f"PYTHON={sys.executable}"])
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    assert "test_shim: all passed" in p.stdout


def test_sim_c_driver(tmp_path):
    """csrc/sim/build.py --check: the simulator's C driver over every path (async, sync, faults, teardown)."""
    p = _run([sys.executable, "csrc/sim/build.py", "--out", str(tmp_path), "--check"])
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    assert "simcheck: ok" in p.stdout
