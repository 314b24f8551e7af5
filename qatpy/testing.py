"""pytest fixtures for testing your own signing code on qatpy's simulated device.

Installed as a pytest plugin (entry point ``pytest11``), so in a project
that depends on qatpy the fixtures are simply there:

``qatpy_engine``
    An Engine on ``--qatpy-backend`` (default ``sim``), closed after the test.
``qatpy_sim``
    A factory: ``qatpy_sim(faults={"cb_fail": 3}, knobs={"latency_ns": 100_000},
    fallback="never")`` returns an Engine on the simulated device with those
    faults scripted (an int fires on the next N operations; ``{"ppm": N}``
    fires with probability N per million).  The plan belongs to that engine:
    it fires only on operations with keys loaded on it, even while other
    engines (a module-scoped one, say) share the device, and it is cleared
    when the test ends.  One fault plan at a time: the simulator holds one.
    Every engine it made is closed after the test, and the test fails if the
    device was left holding DMA memory or freed key material unwiped.

Fault kinds: submit_retry, submit_fail, submit_restarting,
submit_unsupported, cb_fail, ecdsa_mult_false, rsa_bitflip, ecdsa_bitflip, lost,
poll_fail, restart (see csrc/sim/README.md for every knob).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from ._simfaults import FAULT_KINDS


def fault_knobs(faults: Mapping[str, int | Mapping[str, int]]) -> dict[str, int]:
    """Simulator knobs for a fault plan: {"cb_fail": 3} or {"lost": {"ppm": 1000}}."""
    knobs: dict[str, int] = {}
    for kind, plan in faults.items():
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; choose from {', '.join(FAULT_KINDS)}")
        if isinstance(plan, bool) or not isinstance(plan, (int, Mapping)):
            raise TypeError(f"fault plan for {kind} must be an int (next N) or {{'next': N, 'ppm': P}}")
        items = {"next": plan} if isinstance(plan, int) else dict(plan)
        for how, n in items.items():
            if how not in ("next", "ppm") or isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(f"fault plan for {kind}: {how}={n!r} (use next=N or ppm=P, N, P >= 0)")
            knobs[f"fault.{kind}.{how}"] = n
    return knobs


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("qatpy")
    group.addoption(
        "--qatpy-backend",
        default="sim",
        choices=("sim", "software", "qat", "auto"),
        help="backend of the qatpy_engine fixture (default: sim)",
    )


@pytest.fixture
def qatpy_engine(request: pytest.FixtureRequest) -> Iterator[Any]:
    """An Engine on --qatpy-backend (default: the simulated device)."""
    from qatpy import Engine

    with Engine(request.config.getoption("--qatpy-backend")) as eng:
        yield eng


@pytest.fixture
def qatpy_sim() -> Iterator[Callable[..., Any]]:
    """Factory for Engines on the simulated device with fault plans and knobs."""
    from qatpy import Engine, _simsession

    made: list[Any] = []
    before = _simsession.totals()

    def make(
        faults: Mapping[str, int | Mapping[str, int]] | None = None,
        knobs: Mapping[str, int] | None = None,
        **engine_options: Any,
    ) -> Any:
        plan = fault_knobs(faults or {})
        eng = Engine("sim", sim=dict(knobs or {}), **engine_options)
        made.append(eng)
        if plan:
            # Scope first (no request is in scope until this engine makes a
            # key), then the plan: it can only fire on this engine's keys.
            backend = eng._device_backend()
            backend.c_engine.sim_fault_scope(True)
            _simsession.scope_faults()
            _simsession.apply(plan)
        return eng

    yield make
    if made:
        _simsession.clear_faults()
    for eng in made:
        eng.close()
    after = _simsession.totals()
    leaks = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    assert not leaks, f"the simulated device was left with {leaks}"
