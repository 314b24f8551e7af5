"""Shared fixtures: keys made once per session, and an engine per backend.

Every behavioural test runs on both the software backend and the simulated
QAT device (``sim``), so the same assertions prove both paths.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import qatpy

DATA = Path(__file__).parent / "data"
BACKENDS = ["software", "sim"]


@pytest.fixture(scope="session")
def rsa_keys() -> dict[int, rsa.RSAPrivateKey]:
    keys = {bits: rsa.generate_private_key(65537, bits) for bits in (2048, 3072, 4096)}
    for bits in (1024, 8192):
        k = serialization.load_pem_private_key((DATA / f"rsa{bits}.pem").read_bytes(), None)
        assert isinstance(k, rsa.RSAPrivateKey)
        keys[bits] = k
    return keys


@pytest.fixture(scope="session")
def ec_keys() -> dict[str, ec.EllipticCurvePrivateKey]:
    return {c.name: ec.generate_private_key(c) for c in (ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1())}


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def engine(backend: str):
    with qatpy.Engine(backend) as eng:
        assert eng.backend == backend, eng.fallback_reason
        yield eng


@pytest.fixture
def wait_healthy():
    """wait(eng): poll (bounded, 10 s) until every instance of a device engine is routed to again."""

    def wait(eng: qatpy.Engine, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while not all(eng.stats()["instance_healthy"]):
            assert time.monotonic() < end, eng.stats()["device"]
            time.sleep(0.005)

    return wait


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("QATPY_BACKEND", "QATPY_LIBQAT", "QATPY_LIBUSDM"):
        monkeypatch.delenv(var, raising=False)


def pytest_report_header(config: pytest.Config) -> str:
    return f"qatpy backends under test: {', '.join(BACKENDS)}; QATPY_BACKEND={os.environ.get('QATPY_BACKEND')}"


@pytest.fixture(scope="session", autouse=True)
def device_clean_at_end():
    """After the whole session, the simulated device holds no DMA memory and refused no buffer."""
    yield
    from qatpy import _binding

    try:
        loaded = _binding.lib_is_sim()
    except ImportError:
        loaded = False
    if not loaded:
        return
    from qatpy import _simsession

    totals = _simsession.totals()
    assert totals == {"refused.dma": 0, "mem.key_freed_unwiped": 0, "mem.live_allocs": 0}, totals
