"""A short fault soak: threads and asyncio at once, every fault kind, nothing lost, duplicated or wrong."""

from __future__ import annotations

import os

from qatpy._soak import FAULT_KINDS, run_soak


def test_short_fault_soak():
    """20,000 operations under every fault kind: all resolve once, all verify, no DMA leaks, memory flat."""
    r = run_soak(
        20_000,
        threads=3,
        ppm=20_000,
        extra_faults={
            "fault.restart.ppm": 500,
            "fault.restart.next": 1,
            "fault.lost.next": 1,
            "fault.rsa_bitflip.next": 1,
        },
    )
    assert r["ops"] >= 19_000
    assert (r["lost"], r["duplicated"], r["wrong_signatures"]) == (0, 0, 0), r
    assert r["ok"] == r["ops"], r  # every fault was absorbed: fallback or retry, never surfaced
    assert all(r["faults_injected"][k] > 0 for k in FAULT_KINDS), r["faults_injected"]
    # A lost answer costs its own deadline, never a stalled instance (which
    # sent most operations to their deadlines before the RETRY hold was bounded).
    assert r["fallbacks"].get("deadline", 0) < 0.05 * r["ops"], r
    assert (r["leaked_dma_allocs"], r["key_freed_unwiped"], r["refused_non_dma"]) == (0, 0, 0), r
    if "libasan" not in os.environ.get("LD_PRELOAD", ""):
        # (ASan's quarantine holds freed memory on purpose, so RSS is no measure there.)
        assert r["rss_growth_after_warmup_kb"] < 64 * 1024, r
