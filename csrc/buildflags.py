"""What the two C builds share: warning flags, sanitizer flags and the version.

Used by csrc/build_native.py (the extension, run by cffi from setup.py) and
csrc/sim/build.py (the simulated device, run by setup.py or by hand).  Only
the standard library, so it works inside pip's isolated build environment.

-Werror is for our own CI, not for users: `.ci/run` sets QATPY_WERROR=1, and
a user's newer compiler with a warning we have not met yet still installs
qatpy.  QATPY_SANITIZE=address,undefined builds both with those sanitizers
(README, Development).
"""

from __future__ import annotations

import ast
import os

CSRC = os.path.dirname(os.path.abspath(__file__))
VERSION_FILE = os.path.join(os.path.dirname(CSRC), "qatpy", "__init__.py")


def warning_flags() -> list[str]:
    """-Wall -Wextra, plus -Werror when QATPY_WERROR is set to anything but "" or "0"."""
    strict = os.environ.get("QATPY_WERROR", "").strip() not in ("", "0")
    return ["-Wall", "-Wextra", *(["-Werror"] if strict else [])]


def sanitize_flags() -> list[str]:
    """Compile and link flags for QATPY_SANITIZE (empty when it is unset)."""
    san = os.environ.get("QATPY_SANITIZE", "").strip()
    return [f"-fsanitize={san}", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"] if san else []


def version() -> str:
    """qatpy's version: the one `__version__ = "..."` line in qatpy/__init__.py (the single source)."""
    with open(VERSION_FILE, encoding="utf-8") as f:
        tree = ast.parse(f.read(), VERSION_FILE)
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__version__"]:
            value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                return value.value
    raise RuntimeError(f"no __version__ = '...' line in {VERSION_FILE}")


def version_define() -> str:
    """The -D flag that gives C code the version as a string literal, QATPY_VERSION."""
    return f'-DQATPY_VERSION="{version()}"'
