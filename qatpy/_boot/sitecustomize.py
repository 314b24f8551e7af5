"""qatpy's launcher hook (``python -m qatpy run``), imported by Python's site
module at start-up because the launcher put this directory first on
PYTHONPATH.

When QATPY_SSL_INSTALL=1 it installs qatpy.ssl (every ssl.SSLContext then
keeps its private key in qatpy's provider), then runs whatever other
``sitecustomize`` the environment has, so both apply.  Workers a server
spawns inherit the environment and come through here too.  It never stops
the program: a refusal is printed on stderr with its reason.
"""

import os
import sys


def _install() -> None:
    try:
        import qatpy.ssl

        qatpy.ssl.install()
    except Exception as exc:  # the server must start anyway; say why it is not offloaded
        sys.stderr.write(f"qatpy run: Python's ssl is NOT offloaded in pid {os.getpid()}: {exc}\n")


def _chain() -> None:
    """Run the next sitecustomize on sys.path (ours shadows it)."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


if os.environ.get("QATPY_SSL_INSTALL") == "1":
    _install()
_chain()
