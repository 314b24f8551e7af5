"""The package type-checks under mypy --strict and passes the project's ruff rules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_strict():
    """mypy (strict, config in pyproject.toml) finds no issue in qatpy/."""
    p = subprocess.run([sys.executable, "-m", "mypy", "qatpy"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr


def test_ruff():
    """ruff (rules in pyproject.toml) finds no issue in the package, tests and examples."""
    p = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "qatpy", "tests", "examples"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
