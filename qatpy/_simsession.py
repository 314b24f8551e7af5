"""Bookkeeping of the simulated device across device sessions, for
``qatpy.testing``, the soak and the test suite.

Each device session on the simulator starts from default knobs and zeroed
counters (so one Engine's ``sim=`` knobs apply to its own session only);
the counters that must stay zero over a whole process (DMA left allocated,
keys freed unwiped, non-DMA buffers refused) are carried across sessions
here, so a leak in any closed session stays visible.
"""

from __future__ import annotations

from collections.abc import Mapping

from . import _binding

# Simulator counters that must stay zero over a whole process.
CARRIED = ("refused.dma", "mem.key_freed_unwiped", "mem.live_allocs")
# Simulator counters an engine's stats() shows under "sim".
SHOWN = (
    "submitted",
    "inflight",
    "inflight_max",
    "retry_returned",
    "mem.live_allocs",
    "mem.live_bytes",
    "mem.total_allocs",
    "mem.key_freed_unwiped",
    "refused.dma",
)

_carry = dict.fromkeys(CARRIED, 0)


def begin(knobs: Mapping[str, int]) -> None:
    """Before a new device session: knobs and counters back to defaults, then
    `knobs` set (ValueError naming the first one the simulator refuses)."""
    _binding.sim_reset()
    try:
        apply(knobs)
    except ValueError:
        _binding.sim_reset()
        raise


def apply(knobs: Mapping[str, int]) -> None:
    """Set knobs on the simulator (ValueError naming the first one it refuses, and why)."""
    for k, v in knobs.items():
        rc = _binding.sim_set(k, v)
        if rc == -2:
            raise ValueError(
                f"simulator knob {k} takes effect only when the device starts, and the simulated device is "
                "already running for other engines in this process: close them first, or give it to the first "
                "engine"
            )
        if rc != 0:
            raise ValueError(f"unknown or invalid simulator knob {k}={v} (see csrc/sim/README.md for the knobs)")


def scope_faults() -> None:
    """Per-request faults fire only on keys registered in the scope (none yet)."""
    _binding.sim_set("fault.scope.on", 1)


def clear_faults() -> None:
    """Every fault plan off and the fault scope cleared (a test's teardown)."""
    from ._simfaults import FAULT_KINDS

    for kind in FAULT_KINDS:
        _binding.sim_set(f"fault.{kind}.next", 0)
        _binding.sim_set(f"fault.{kind}.ppm", 0)
    _binding.sim_set("fault.scope.clear", 0)


def end() -> None:
    """After a session's device is freed, carry its must-be-zero counters."""
    for name in CARRIED:
        _carry[name] += _binding.sim_get(name) or 0


def counters() -> dict[str, int]:
    """The simulator's counters that stats() shows."""
    out: dict[str, int] = {}
    for name in SHOWN:
        v = _binding.sim_get(name)
        if v is not None:
            out[name] = v
    return out


def totals() -> dict[str, int]:
    """Totals of the must-be-zero counters over every device session this
    process has closed."""
    return dict(_carry)
