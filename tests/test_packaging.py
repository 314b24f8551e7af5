"""Release artifacts: the sdist holds the whole C tree, the wheel is tagged for the stable ABI, the
license is declared, -Werror is only for our CI, and the version has one source.

Each test takes a second or two; the full proof (sdist installed in a fresh venv, the wheel on
every CPython present) is .ci/run's release step.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import qatpy
from qatpy import _binding

ROOT = Path(__file__).resolve().parent.parent

# Run in a child so setup.py's cffi exec and sys.path changes stay out of this process: the
# distribution as setuptools configures it (nothing is built), and the simulator's C flags.
_PROBE = r"""
import json, runpy, sys
import setuptools
from distutils.core import run_setup
dist = run_setup("setup.py", stop_after="config")
wheel = dist.get_command_obj("bdist_wheel")
wheel.ensure_finalized()
(ext,) = dist.ext_modules
sim = runpy.run_path("csrc/sim/build.py", run_name="probe")
json.dump({"tag": "-".join(wheel.get_tag()), "ext": ext.name, "limited": bool(getattr(ext, "py_limited_api", False)),
           "ext_cflags": ext.extra_compile_args, "sim_cflags": sim["BASE_CFLAGS"]}, sys.stdout)
"""


def _probe(werror: str | None) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k not in ("QATPY_WERROR", "QATPY_SANITIZE")}
    if werror is not None:
        env["QATPY_WERROR"] = werror
    p = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-4000:]
    result: dict[str, object] = json.loads(p.stdout)
    return result


def _worktree_files() -> list[str]:
    """Files a commit of this checkout would hold (tracked, plus new files not ignored)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: the sdist check needs the tracked file list")
    p = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if p.returncode != 0:
        pytest.skip(f"not a git checkout ({p.stderr.strip()}): the sdist check needs the tracked file list")
    return [f for f in p.stdout.split("\0") if f and (ROOT / f).is_file()]


@pytest.fixture(scope="module")
def sdist_names(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], set[str]]:
    """Build the sdist of a copy of this checkout's files; return (the files, the names in the tarball)."""
    files = _worktree_files()
    src = tmp_path_factory.mktemp("src")
    for f in files:
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    out = tmp_path_factory.mktemp("dist")
    p = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    (tarball,) = out.glob("qatpy-*.tar.gz")
    with tarfile.open(tarball) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    return files, names


def test_sdist_holds_every_csrc_file(sdist_names):
    """Every file of csrc/ (headers, build scripts, simulator, C drivers) is in the sdist, so it builds."""
    files, names = sdist_names
    csrc = [f for f in files if f.startswith("csrc/")]
    assert "csrc/build_native.py" in csrc and "csrc/sim/sim.h" in csrc
    assert sorted(set(csrc) - names) == []


def test_sdist_holds_tests_examples_and_license(sdist_names):
    """The sdist carries the license, the build files, and the tests with the examples they run."""
    files, names = sdist_names
    wanted = [f for f in files if f.startswith(("tests/", "examples/"))]
    wanted += ["LICENSE", "README.md", "pyproject.toml", "setup.py", "MANIFEST.in"]
    assert sorted(set(wanted) - names) == []
    assert not [n for n in names if n.endswith((".so", ".o", ".pyc")) or ".so." in n]


def test_wheel_is_tagged_for_the_stable_abi():
    """setuptools tags the wheel cp310-abi3 and the extension is a py_limited_api build (_native.abi3.so)."""
    probe = _probe(None)
    assert str(probe["tag"]).startswith("cp310-abi3-"), probe["tag"]
    assert probe["ext"] == "qatpy._native" and probe["limited"] is True
    assert _binding.native().__file__.endswith(".abi3.so")


def test_werror_only_when_qatpy_werror_is_set():
    """-Werror is in the extension's and the simulator's flags only with QATPY_WERROR=1 (our CI)."""
    for werror, expected in ((None, False), ("0", False), ("1", True)):
        probe = _probe(werror)
        for key in ("ext_cflags", "sim_cflags"):
            flags = probe[key]
            assert isinstance(flags, list) and "-Wall" in flags and "-Wextra" in flags
            assert ("-Werror" in flags) is expected, (werror, key, flags)


def test_license_is_apache_2_spdx():
    """LICENSE holds the Apache-2.0 text and the installed metadata declares it as an SPDX expression."""
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    meta = importlib.metadata.metadata("qatpy")
    assert meta["License-Expression"] == "Apache-2.0"
    assert "LICENSE" in (meta.get_all("License-File") or [])


def test_one_version_everywhere():
    """qatpy.__version__, the installed metadata and the simulator's reported version are the same string."""
    lib = ctypes.CDLL(_binding.sim_paths()[0])
    lib.qatpy_sim_version.restype = ctypes.c_char_p
    sim = lib.qatpy_sim_version().decode()
    assert importlib.metadata.version("qatpy") == qatpy.__version__
    assert sim == f"qatpy-sim {qatpy.__version__}"


def test_version_written_once():
    """The version literal lives only in qatpy/__init__.py: pyproject and the C build take it from there."""
    v = qatpy.__version__
    others = [ROOT / "pyproject.toml", ROOT / "setup.py", *sorted((ROOT / "csrc").rglob("*.[ch]"))]
    others += sorted((ROOT / "csrc").rglob("*.py"))
    assert [str(p.relative_to(ROOT)) for p in others if f'"{v}"' in p.read_text() or f"sim {v}" in p.read_text()] == []
    assert (ROOT / "qatpy" / "__init__.py").read_text().count(f'__version__ = "{v}"') == 1
