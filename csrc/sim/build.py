"""Build qatpy's simulated QAT device: libusdm.so.0 and libqat.so.4.

Only gcc is needed (no OpenSSL headers: the device loads libcrypto.so.3 at
run time through its own declarations).  Paths come from this file, never
from the current directory.

    python csrc/sim/build.py [--out DIR] [--asan]

setup.py calls build_sim() from its build_ext so both libraries ship in
qatpy/_sim/.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.dirname(HERE)
REPO = os.path.dirname(CSRC)
DEFAULT_OUT = os.path.join(REPO, "qatpy", "_sim")
sys.path.insert(0, CSRC)
from buildflags import version_define, warning_flags  # noqa: E402  (csrc/buildflags.py: QATPY_WERROR, version)

USDM_SOURCES = ("usdm.c",)
QAT_SOURCES = (
    "lifecycle.c",
    "pipeline.c",
    "poll.c",
    "heartbeat.c",
    "instances.c",
    "ops.c",
    "knobs.c",
    "replay.c",
    "simbn.c",
)
HEADERS = ("sim.h", "simbn.h", "simmem.h", "nistcurves.h", "qatpy_sim.h")

BASE_CFLAGS = [
    "-O2",
    "-g",
    "-fPIC",
    "-pthread",
    "-std=gnu11",
    *warning_flags(),
    version_define(),
]
ASAN_FLAGS = [
    "-fsanitize=address,undefined",
    "-fno-omit-frame-pointer",
    "-fno-sanitize-recover=undefined",
]


def _gcc(args: list[str]) -> None:
    cmd = [os.environ.get("CC", "gcc"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            "simulated device build failed:\n  " + " ".join(cmd) + "\n" + proc.stdout + proc.stderr
        )


def build_sim(
    out_dir: str = DEFAULT_OUT,
    extra_cflags: Sequence[str] = (),
    extra_ldflags: Sequence[str] = (),
) -> list[str]:
    """Compile libusdm.so.0 and libqat.so.4 into out_dir; return the paths written."""
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    cflags = [*BASE_CFLAGS, *extra_cflags]
    ldflags = ["-shared", "-pthread", *extra_ldflags]

    usdm = os.path.join(out_dir, "libusdm.so.0")
    _gcc(
        [
            *cflags,
            *[os.path.join(HERE, s) for s in USDM_SOURCES],
            *ldflags,
            "-Wl,-soname,libusdm.so.0",
            "-Wl,--version-script=" + os.path.join(HERE, "libusdm.map"),
            "-o",
            usdm,
        ]
    )
    # Linked against the file just built (by path, recorded as its SONAME
    # libusdm.so.0) and found at run time beside libqat via $ORIGIN, the way
    # the real libqat.so.4 needs libusdm.so.0.
    qat = os.path.join(out_dir, "libqat.so.4")
    _gcc(
        [
            *cflags,
            *[os.path.join(HERE, s) for s in QAT_SOURCES],
            *ldflags,
            "-Wl,-soname,libqat.so.4",
            "-Wl,--version-script=" + os.path.join(HERE, "libqat.map"),
            "-Wl,-rpath,$ORIGIN",
            "-Wl,--no-as-needed",
            usdm,
            "-ldl",
            "-o",
            qat,
        ]
    )
    return [usdm, qat]


def build_check(out_dir: str, extra_flags: Sequence[str] = ()) -> str:
    """Compile the stand-alone C driver (simcheck.c) against the libraries in out_dir."""
    exe = os.path.join(os.path.abspath(out_dir), "simcheck")
    _gcc(
        [
            *BASE_CFLAGS,
            *extra_flags,
            os.path.join(HERE, "simcheck.c"),
            "-pthread",
            "-Wl,-rpath," + os.path.abspath(out_dir),
            os.path.join(os.path.abspath(out_dir), "libqat.so.4"),
            os.path.join(os.path.abspath(out_dir), "libusdm.so.0"),
            "-o",
            exe,
        ]
    )
    return exe


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="output directory (default: qatpy/_sim)")
    parser.add_argument("--asan", action="store_true", help="build with AddressSanitizer + UBSan")
    parser.add_argument(
        "--check",
        action="store_true",
        help="also build and run the C driver simcheck (leak-checked under --asan)",
    )
    args = parser.parse_args(argv)
    flags = ASAN_FLAGS if args.asan else []
    for path in build_sim(args.out, flags, flags):
        print(path)
    if args.check:
        exe = build_check(args.out, flags)
        env = dict(os.environ)
        if args.asan:
            env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
            env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        return subprocess.run([exe], env=env, check=False).returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
