"""cffi out-of-line API-mode build of qatpy._native.

The cdef is fed from real headers (csrc/qat_types.h: our declarations of the
qatlib types, checked by tests/test_abi_layout.py; csrc/shim/qatpy_shim.h:
the shim's interface).  The shim dlopens qatlib at run time, so building needs
only gcc and the Python headers; nothing links against qatlib.
"""

import glob
import os
import sys

from cffi import FFI

CSRC = os.path.dirname(os.path.abspath(__file__))
SHIM = os.path.join(CSRC, "shim")
PROVIDER = os.path.join(CSRC, "provider")
sys.path.insert(0, CSRC)
from buildflags import sanitize_flags, warning_flags  # noqa: E402  (csrc/buildflags.py)


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


ffibuilder = FFI()
ffibuilder.cdef(_read(os.path.join(CSRC, "qat_types.h")))
ffibuilder.cdef(_read(os.path.join(SHIM, "qatpy_shim.h")))
ffibuilder.cdef(_read(os.path.join(PROVIDER, "qatpy_provider.h")))

# Our own C is compiled with strict warnings; cffi's generated wrapper is
# compiled in the same unit, so only flags it is clean under are used.
# -Werror only with QATPY_WERROR=1 (our CI), sanitizers with QATPY_SANITIZE:
# see csrc/buildflags.py.
SANITIZE_FLAGS = sanitize_flags()

ffibuilder.set_source(
    "qatpy._native",
    '#include "qat_abi.h"\n#include "qatpy_shim.h"\n#include "qatpy_provider.h"\n',
    sources=sorted(os.path.relpath(p) for d in (SHIM, PROVIDER) for p in glob.glob(os.path.join(d, "*.c"))),
    include_dirs=[CSRC, SHIM, PROVIDER],
    libraries=["dl", "pthread"],
    extra_compile_args=["-std=gnu11", *warning_flags(), "-pthread", "-O2", *SANITIZE_FLAGS],
    extra_link_args=SANITIZE_FLAGS,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
