"""Smoke test of an installed qatpy (an sdist or a wheel installed into a fresh venv), for .ci/run.

    cd <a directory outside the clone> && python /path/to/clone/.ci/smoke.py /path/to/clone

Imports qatpy, proves it is not the clone's copy, signs RSA (PKCS#1 v1.5 and PSS) and ECDSA on the
software backend and on the simulated device and verifies every signature with cryptography,
checks the three version strings agree, and runs `python -m qatpy info`.  Exits non-zero on any
failure.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import subprocess
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

import qatpy
from qatpy import _binding


def main(clone: str) -> int:
    clone = os.path.realpath(clone)
    where = os.path.realpath(qatpy.__file__)
    assert not where.startswith(clone + os.sep), f"qatpy was imported from the clone ({where}), not the install"
    assert not os.getcwd().startswith(clone), "run the smoke test from outside the clone"

    msg = b"qatpy smoke test"
    rsa_key = rsa.generate_private_key(65537, 2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
    for backend in ("software", "sim"):
        with qatpy.Engine(backend) as engine:
            assert engine.backend == backend, (engine.backend, engine.fallback_reason)
            rk = engine.wrap_key(rsa_key)
            rsa_key.public_key().verify(
                rk.sign(msg, padding.PKCS1v15(), hashes.SHA256()), msg, padding.PKCS1v15(), hashes.SHA256()
            )
            rsa_key.public_key().verify(rk.sign(msg, pss, hashes.SHA256()), msg, pss, hashes.SHA256())
            ek = engine.wrap_key(ec_key)
            ec_key.public_key().verify(ek.sign(msg, ec.ECDSA(hashes.SHA256())), msg, ec.ECDSA(hashes.SHA256()))
            sig = ek.sign_future(msg, ec.ECDSA(hashes.SHA384())).result(timeout=30)
            ec_key.public_key().verify(sig, msg, ec.ECDSA(hashes.SHA384()))
        print(f"smoke: {backend}: RSA-2048 PKCS1v15 + PSS and P-256 ECDSA signed and verified")

    sim_lib = ctypes.CDLL(_binding.sim_paths()[0])
    sim_lib.qatpy_sim_version.restype = ctypes.c_char_p
    versions = {
        "qatpy.__version__": qatpy.__version__,
        "metadata": importlib.metadata.version("qatpy"),
        "simulator": sim_lib.qatpy_sim_version().decode().removeprefix("qatpy-sim "),
    }
    assert len(set(versions.values())) == 1, versions

    info = subprocess.run([sys.executable, "-m", "qatpy", "info"], capture_output=True, text=True, timeout=120)
    print(info.stdout, end="")
    assert info.returncode == 0, info.stderr

    print(f"smoke: ok: qatpy {qatpy.__version__} from {os.path.dirname(where)}, Python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
