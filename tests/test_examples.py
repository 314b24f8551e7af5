"""Every example in examples/ runs to completion on both backends."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs(path, backend):
    """The example exits 0 and reports the backend it ran on."""
    env = dict(os.environ, QATPY_BACKEND=backend)
    p = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    assert f"on {backend}" in p.stdout or f"backend: {backend}" in p.stdout
