"""The package type-checks under mypy --strict and passes the project's ruff rules."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _mypy_python_version() -> tuple[int, ...]:
    m = re.search(r'^python_version = "([0-9.]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert m, "pyproject.toml [tool.mypy] names no python_version"
    return tuple(int(x) for x in m.group(1).split("."))


def test_mypy_strict():
    """mypy (strict, config in pyproject.toml) finds no issue in qatpy/."""
    # The gate checks as the Python pyproject names, against the third-party stubs installed for
    # that Python: another CPython installs other releases of them (numpy's for 3.12+ use syntax
    # a 3.11 check cannot parse), so there the gate has nothing meaningful to check.
    target = _mypy_python_version()
    if sys.version_info[: len(target)] != target:
        pytest.skip(
            f"mypy gate runs on Python {'.'.join(map(str, target))} (pyproject [tool.mypy]), this is {sys.version.split()[0]}"
        )
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
