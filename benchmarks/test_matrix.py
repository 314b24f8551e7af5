"""Throughput and latency: algorithm x backend x API x in-flight depth.

Each benchmark times rounds of N signatures through one public API with
`depth` in flight (one pytest-benchmark round = one batch of N), and runs
its baseline beside it in the same process: cryptography's direct
single-thread loop in slices between the rounds, and
``openssl speed`` (once per run) when the binary is present.  extra_info
carries signs/s, the ratios, and p50/p99 latency per operation.

Backends: ``software`` (cryptography on every core) and ``sim`` (the
simulated device in replay mode at zero latency: what remains is qatpy's
own cost per operation).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from conftest import MATRIX

import qatpy
from qatpy import _speed

ALGS = list(_speed.ALGORITHMS)  # conftest skips those not chosen with --algs
BACKENDS = ("software", "sim")
DEPTHS = (1, 16, 256)
REPLAY = {"compute_mode": 1, "replay.ecdsa_ignore_k": 1}


@pytest.fixture(scope="module", params=BACKENDS)
def engine(request: pytest.FixtureRequest) -> Iterator[qatpy.Engine]:
    kw: dict[str, Any] = {"sim": REPLAY} if request.param == "sim" else {}
    with qatpy.Engine(request.param, **kw) as eng:
        yield eng


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("api", _speed.APIS)
@pytest.mark.parametrize("alg", ALGS)
def test_sign_throughput(
    benchmark: Any,
    engine: qatpy.Engine,
    alg: str,
    api: str,
    depth: int,
    key_for: Any,
    openssl_for: Any,
    request: pytest.FixtureRequest,
) -> None:
    """Signs/s and latency of one API at one depth, beside the direct loop."""
    key = key_for(alg)
    qk = engine.wrap_key(key)
    seconds = request.config.getoption("--bench-seconds")
    with _speed.Runner(qk, api, depth) as runner:
        n = _speed.ops_for(runner, seconds)
        lats: list[np.ndarray] = []
        # The baseline runs in slices between the rounds (pedantic's untimed
        # setup), so that load from other processes hits both sides alike.
        base: list[_speed.Result] = []
        benchmark.group = f"{alg} {engine.backend} {api}"
        with _speed.OthersMeter() as noise:
            benchmark.pedantic(
                lambda: lats.append(runner.run(n)),
                setup=lambda: base.append(_speed.baseline_loop(key, 0.08)),
                rounds=5,
                warmup_rounds=1,
            )
    lat = np.concatenate(lats[1:] or lats)  # the warm-up round is not timed either
    base_rate = sum(b.ops for b in base) / sum(b.seconds for b in base)
    rate = n / benchmark.stats.stats.median
    ossl = openssl_for(alg)
    benchmark.extra_info.update(
        {
            "alg": alg,
            "backend": engine.backend,
            "api": api,
            "depth": depth,
            "ops_per_round": n,
            "ops_per_s": rate,
            "ops_per_s_mean": n / benchmark.stats.stats.mean,
            "baseline_ops_per_s": base_rate,
            "ratio": rate / base_rate,
            "other_processes_cores": noise.others,
            "openssl_ops_per_s": ossl,
            "ratio_openssl": rate / ossl if ossl else None,
            "p50_us": float(np.percentile(lat, 50)) * 1e6,
            "p99_us": float(np.percentile(lat, 99)) * 1e6,
        }
    )
    MATRIX.append(dict(benchmark.extra_info))
