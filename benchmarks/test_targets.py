"""The issue's targets, each as one benchmark whose extra_info holds the
measured ratio, the threshold and pass/fail (benchmarks/targets.py does the
measuring; run that script for the side-by-side table).  A miss fails only
with ``--enforce-targets``: on a shared 2-core box these are reports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import pytest
import targets

from qatpy._engine import DEFAULT_POLL_DELAY

SECONDS, REPEATS = 1.0, 3

CASES: dict[str, Callable[[], Any]] = {
    **{
        f"software-{alg}-{api}": (lambda alg=alg, api=api, t=t: targets.software_api(alg, api, t, SECONDS, REPEATS))
        for (alg, api), t in targets.SOFTWARE_API_TARGETS.items()
    },
    **{
        f"software-{alg}-batch": (lambda alg=alg, t=t: targets.software_api(alg, "batch", t, SECONDS, REPEATS))
        for alg, t in targets.SOFTWARE_BATCH_TARGETS.items()
    },
    "libcost-future": lambda: targets.library_cost("future", 2.5, SECONDS, REPEATS),
    "libcost-async": lambda: targets.library_cost("async", 2.0, SECONDS, REPEATS),
    "libcost-many": lambda: targets.library_cost("many", 7.0, SECONDS, REPEATS),
    "saturation-16k-pipeline": lambda: targets.saturation("pipeline", 2, 8, 1_000_000, SECONDS, REPEATS),
    "saturation-16k-future": lambda: targets.saturation("future", 2, 8, 1_000_000, SECONDS, REPEATS),
    "saturation-16k-async": lambda: targets.saturation("async", 2, 8, 1_000_000, SECONDS, REPEATS),
    "saturation-128k-pipeline": lambda: targets.saturation("pipeline", 2, 64, 1_000_000, SECONDS, REPEATS),
    "latency-timer": lambda: targets.latency_target("timer", DEFAULT_POLL_DELAY, SECONDS, REPEATS),
    "latency-event": lambda: targets.latency_target("event", 0.0, SECONDS, REPEATS),
    "dma-steady": lambda: targets.dma_steady(SECONDS),
}


@pytest.mark.parametrize("case", list(CASES))
def test_target(benchmark: Any, case: str, request: pytest.FixtureRequest) -> None:
    """One target, measured once (each measurement is itself a median of repeats)."""
    out: list[Any] = []
    benchmark.group = "targets"
    benchmark.pedantic(lambda: out.append(CASES[case]()), rounds=1, iterations=1)
    rows = out[0] if isinstance(out[0], list) else [out[0]]
    benchmark.extra_info["rows"] = [asdict(r) for r in rows]
    benchmark.extra_info["passed"] = all(r.passed for r in rows)
    if request.config.getoption("--enforce-targets"):
        missed = [f"{r.target}: {r.cells()[1]} (target {r.cells()[2]})" for r in rows if not r.passed]
        assert not missed, "; ".join(missed)
