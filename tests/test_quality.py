"""The package type-checks under mypy --strict and passes the project's ruff rules."""

from __future__ import annotations

import os
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


TYPED_USE = """
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

import qatpy


def rsa_sig(raw: rsa.RSAPrivateKey, engine: qatpy.Engine) -> bytes:
    key = qatpy.wrap_key(raw)
    other: qatpy.QatRSAPrivateKey = engine.wrap_key(raw)
    return key.sign(b"x", padding.PKCS1v15(), hashes.SHA256()) + other.sign(b"y", padding.PKCS1v15(), hashes.SHA256())


def ec_sig(raw: ec.EllipticCurvePrivateKey, engine: qatpy.Engine) -> bytes:
    key: qatpy.QatECPrivateKey = engine.wrap_key(raw)
    return qatpy.wrap_key(raw).sign(b"x", ec.ECDSA(hashes.SHA256())) + key.sign(b"y", ec.ECDSA(hashes.SHA256()))


def loaded(pem: bytes) -> bytes:
    key = qatpy.load_pem_private_key(pem)
    if isinstance(key, qatpy.QatRSAPrivateKey):
        return key.sign(b"x", padding.PKCS1v15(), hashes.SHA256())
    return key.sign(b"x", ec.ECDSA(hashes.SHA256()))
"""


def test_user_code_types_under_mypy_strict(tmp_path):
    """A user's mypy --strict accepts wrap_key(rsa_key).sign(data, padding, hash): RSA keys are typed as RSA, EC as EC."""
    src = tmp_path / "user_code.py"
    src.write_text(TYPED_USE)
    p = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--follow-imports=silent", str(src)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        # An editable install is an import hook mypy does not follow: point it at the source.
        env={**os.environ, "MYPYPATH": str(ROOT)},
    )
    assert p.returncode == 0, p.stdout + p.stderr
