"""``python -m qatpy run [options] -- <command> [args...]``: run a program with
Python's ssl offloaded to qatpy, in the habit of ``ddtrace-run`` and
``opentelemetry-instrument``.

It sets QATPY_SSL_INSTALL=1 (plus QATPY_BACKEND / QATPY_SSL_FALLBACK from
the options), puts qatpy's ``_boot`` directory (holding a ``sitecustomize``
that installs qatpy.ssl, then runs any other sitecustomize) first on
PYTHONPATH, and replaces itself with the command (os.execvp).  Python
processes the command starts inherit that environment: spawned workers
(uvicorn --workers) install qatpy.ssl at start-up, forked ones (gunicorn -w)
inherit the installation and make a new engine in the child.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ._engine import BACKENDS, FALLBACK_POLICIES

BOOT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_boot")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend", choices=BACKENDS, default=None, help="engine backend (default: QATPY_BACKEND or auto)"
    )
    parser.add_argument(
        "--fallback", choices=FALLBACK_POLICIES, default=None, help="fallback policy of the engine (default: on_error)"
    )
    parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]", help="the command to run")


def environment(base: dict[str, str], backend: str | None, fallback: str | None) -> dict[str, str]:
    """The environment the command runs in."""
    env = dict(base)
    env["QATPY_SSL_INSTALL"] = "1"
    if backend:
        env["QATPY_BACKEND"] = backend
    if fallback:
        env["QATPY_SSL_FALLBACK"] = fallback
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != BOOT_DIR]
    env["PYTHONPATH"] = os.pathsep.join([BOOT_DIR, *paths])
    return env


def run(args: argparse.Namespace) -> int:
    command: Sequence[str] = args.argv
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        sys.stderr.write("qatpy run: no command given (usage: python -m qatpy run [options] -- COMMAND [ARGS...])\n")
        return 2
    env = environment(dict(os.environ), args.backend, args.fallback)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(command[0], list(command), env)
    except OSError as exc:
        sys.stderr.write(f"qatpy run: cannot run {command[0]!r}: {exc.strerror or exc}\n")
        return 127
    return 0  # pragma: no cover - execvpe does not return
