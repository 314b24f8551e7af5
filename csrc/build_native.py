"""cffi out-of-line API-mode build of qatpy._native.

The cdef is fed from real headers (csrc/qat_types.h: our declarations of the
qatlib types, checked by tests/test_abi_layout.py; csrc/shim/qatpy_shim.h:
the shim's interface).  The shim dlopens qatlib at run time, so building needs
only gcc and the Python headers; nothing links against qatlib.
"""

import glob
import os

from cffi import FFI

CSRC = os.path.dirname(os.path.abspath(__file__))
SHIM = os.path.join(CSRC, "shim")
PROVIDER = os.path.join(CSRC, "provider")


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


ffibuilder = FFI()
ffibuilder.cdef(_read(os.path.join(CSRC, "qat_types.h")))
ffibuilder.cdef(_read(os.path.join(SHIM, "qatpy_shim.h")))
ffibuilder.cdef(_read(os.path.join(PROVIDER, "qatpy_provider.h")))

# Our own C is compiled with strict warnings; cffi's generated wrapper is
# compiled in the same unit, so only flags it is clean under are used.
# QATPY_SANITIZE=address,undefined builds the extension (and, in setup.py,
# the simulated device) with those sanitizers: see README, Development.
_SAN = os.environ.get("QATPY_SANITIZE", "").strip()
SANITIZE_FLAGS = [f"-fsanitize={_SAN}", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"] if _SAN else []

ffibuilder.set_source(
    "qatpy._native",
    '#include "qat_abi.h"\n#include "qatpy_shim.h"\n#include "qatpy_provider.h"\n',
    sources=sorted(os.path.relpath(p) for d in (SHIM, PROVIDER) for p in glob.glob(os.path.join(d, "*.c"))),
    include_dirs=[CSRC, SHIM, PROVIDER],
    libraries=["dl", "pthread"],
    extra_compile_args=["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-pthread", "-O2", *SANITIZE_FLAGS],
    extra_link_args=SANITIZE_FLAGS,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
