"""Build glue: cffi compiles csrc/ into qatpy._native; build_ext also builds
the simulated device (qatpy/_sim/libqat.so.4, libusdm.so.0).  Metadata lives
in pyproject.toml."""

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


class build_ext_with_sim(build_ext):
    """Also build the simulated QAT device next to the extension module."""

    def _sim_dir(self):
        ext_path = self.get_ext_fullpath("qatpy._native")
        return os.path.join(os.path.dirname(ext_path), "_sim")

    def run(self):
        super().run()
        sys.path[:0] = [os.path.join(HERE, "csrc", "sim"), os.path.join(HERE, "csrc")]
        try:
            from build import build_sim  # csrc/sim/build.py
            from buildflags import sanitize_flags  # QATPY_SANITIZE, shared with the extension
        finally:
            del sys.path[:2]
        san = sanitize_flags()
        self._sim_outputs = build_sim(self._sim_dir(), extra_cflags=san, extra_ldflags=san)

    def get_outputs(self):
        return super().get_outputs() + list(getattr(self, "_sim_outputs", []))


setup(
    cffi_modules=["csrc/build_native.py:ffibuilder"],
    cmdclass={"build_ext": build_ext_with_sim},
    # cffi builds _native for the stable ABI (_native.abi3.so) and the
    # simulator libraries do not link Python at all, so one wheel serves
    # every CPython from 3.10 (requires-python) on: tag it cp310-abi3.
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
