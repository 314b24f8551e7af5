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
    g.addoption(
        "--algs",
        default=",".join(DEFAULT_ALGS),
        help=f"algorithms to benchmark, comma-separated, or 'all' ({', '.join(_speed.ALGORITHMS)})",
    )
    g.addoption("--enforce-targets", action="store_true", help="fail a target benchmark that misses its target")
    g.addoption("--bench-seconds", type=float, default=0.25, help="seconds per round (default 0.25)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    algs = config.getoption("--algs")
    chosen = set(_speed.ALGORITHMS) if algs == "all" else set(algs.split(","))
    keep, drop = [], []
    for item in items:
        cs = getattr(item, "callspec", None)
        alg = cs.params.get("alg") if cs is not None else None
        (drop if alg is not None and alg not in chosen else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


#: extra_info of each matrix benchmark, for the summary table at the end.
MATRIX: list[dict[str, Any]] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not MATRIX:
        return
    tr = terminalreporter
    tr.section("qatpy: signs/s and latency per operation, beside the direct 1-thread loop")
    tr.write_line(
        f"{'alg':<10} {'backend':<9} {'api':<7} {'depth':>5} {'signs/s':>10} {'x direct':>8} "
        f"{'x openssl':>9} {'p50 us':>9} {'p99 us':>9} {'others':>6}"
    )
    for e in sorted(MATRIX, key=lambda e: (e["alg"], e["backend"], e["api"], e["depth"])):
        ro = f"{e['ratio_openssl']:.2f}" if e.get("ratio_openssl") else "-"
        tr.write_line(
            f"{e['alg']:<10} {e['backend']:<9} {e['api']:<7} {e['depth']:>5} {e['ops_per_s']:>10,.0f} "
            f"{e['ratio']:>8.2f} {ro:>9} {e['p50_us']:>9.0f} {e['p99_us']:>9.0f} {e['other_processes_cores']:>6.2f}"
        )


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
