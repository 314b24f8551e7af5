"""pytest-benchmark suite for qatpy; never part of the test run
(pyproject's testpaths = ["tests"]).  Run it explicitly:

    python -m pytest benchmarks/ --benchmark-json=bench.json

Options: ``--algs rsa2048,ecdsap256`` (default) or ``--algs all``;
``--enforce-targets`` makes a missed target fail its benchmark.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

import pytest

from qatpy import _speed

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)  # benchmarks/targets.py, shared with test_targets.py

DEFAULT_ALGS = ("rsa2048", "ecdsap256")


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("qatpy benchmarks")
    g.addoption("--algs", default=",".join(DEFAULT_ALGS),
                help=f"algorithms to benchmark, comma-separated, or 'all' ({', '.join(_speed.ALGORITHMS)})")
    g.addoption("--enforce-targets", action="store_true", help="fail a target benchmark that misses its target")
    g.addoption("--bench-seconds", type=float, default=0.25, help="seconds per round (default 0.25)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    algs = config.getoption("--algs")
    chosen = set(_speed.ALGORITHMS) if algs == "all" else set(algs.split(","))
    skip = pytest.mark.skip(reason="algorithm not selected (use --algs all or --algs NAME,...)")
    for item in items:
        cs = getattr(item, "callspec", None)
        alg = cs.params.get("alg") if cs is not None else None
        if alg is not None and alg not in chosen:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def key_for() -> Callable[[str], Any]:
    """alg -> one cryptography private key per algorithm, made on first use."""
    return functools.cache(_speed.make_key)


@pytest.fixture(scope="session")
def openssl_for() -> Callable[[str], float | None]:
    """alg -> ``openssl speed`` signs/s on one core (None: no openssl binary), once per run."""
    return _speed.openssl_speed  # cached per process


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    """Name the machine, versions and load in the JSON beside pytest-benchmark's own fields."""
    machine_info["qatpy"] = _speed.machine_info()
