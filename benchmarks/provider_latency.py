"""What qatpy's OpenSSL provider adds to one handshake signature, over the device's service time.

    python benchmarks/provider_latency.py [--n 3000] [--service-us 100] [--json FILE]

The signature is made the way libssl makes it in a handshake: ``EVP_DigestSign`` in the system
libcrypto (the one Python's ``ssl`` uses, called here through ctypes with the GIL released) on
the key a ``QATPY KEY REFERENCE`` names, so it runs qatpy's provider, its device path and the
shim's blocking wait, on the simulated device with a fixed service time (replay mode: the answer
comes from a cache at exactly the modelled time).  One signature at a time, sequentially.

Reported per poll mode and key: p50 of the signature minus the service time ("added"), and net of
the simulator's own timer overshoot, estimated as in benchmarks/targets.py: the busy-polling
engine's p50 at this service time minus its p50 at zero service time, minus the service time.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import ssl
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import qatpy
import qatpy.ssl

REPLAY = {"compute_mode": 1, "replay.ecdsa_ignore_k": 1}
RSA_PKCS1_PADDING = 1


def _libcrypto() -> ctypes.CDLL:
    ssl.OPENSSL_VERSION  # noqa: B018 - _ssl (and so libcrypto.so.3) is loaded
    lib = ctypes.CDLL("libcrypto.so.3", mode=os.RTLD_NOLOAD)
    vp, cp, sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
    for name, (res, args) in {
        "BIO_new_mem_buf": (vp, [cp, ctypes.c_int]),
        "BIO_free": (ctypes.c_int, [vp]),
        "PEM_read_bio_PrivateKey": (vp, [vp, vp, vp, vp]),
        "EVP_PKEY_free": (None, [vp]),
        "EVP_MD_CTX_new": (vp, []),
        "EVP_MD_CTX_free": (None, [vp]),
        "EVP_DigestSignInit_ex": (ctypes.c_int, [vp, ctypes.POINTER(vp), cp, vp, cp, vp, vp]),
        "EVP_DigestSign": (ctypes.c_int, [vp, cp, ctypes.POINTER(sz), cp, sz]),
        "EVP_PKEY_CTX_set_rsa_padding": (ctypes.c_int, [vp, ctypes.c_int]),
    }.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


def signature_times(engine: qatpy.Engine, key: Any, n: int) -> list[float]:
    """n sequential EVP_DigestSign calls with SHA-256 (RSA: PKCS#1 v1.5, as TLS 1.2, so the
    simulator's replay cache can answer: a PSS signature is salted, every one a new input)."""
    C = _libcrypto()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with tempfile.TemporaryDirectory() as tmp:
        keyfile = Path(tmp) / "key.pem"
        keyfile.write_bytes(pem)
        with qatpy.ssl.key_reference(keyfile, engine=engine) as ref:
            return _sign_loop(C, Path(ref.path).read_bytes(), isinstance(key, rsa.RSAPrivateKey), n)


def _sign_loop(C: ctypes.CDLL, reference: bytes, is_rsa: bool, n: int) -> list[float]:
    bio = C.BIO_new_mem_buf(reference, len(reference))
    pkey = C.PEM_read_bio_PrivateKey(bio, None, None, None)
    C.BIO_free(bio)
    assert pkey, "libcrypto could not read the key reference"
    sig = ctypes.create_string_buffer(1024)
    msg = b"x" * 100
    times = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            mdctx = C.EVP_MD_CTX_new()
            pctx = ctypes.c_void_p()
            assert C.EVP_DigestSignInit_ex(mdctx, ctypes.byref(pctx), b"SHA256", None, None, pkey, None) == 1
            if is_rsa:
                assert C.EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) > 0
            siglen = ctypes.c_size_t(1024)
            assert C.EVP_DigestSign(mdctx, sig, ctypes.byref(siglen), msg, len(msg)) == 1
            C.EVP_MD_CTX_free(mdctx)
            times.append(time.perf_counter() - t0)
    finally:
        C.EVP_PKEY_free(pkey)
    return times


def p50_us(mode: str, key: Any, service_ns: int, n: int, verify: bool) -> tuple[float, dict[str, Any]]:
    with qatpy.Engine("sim", poll_mode=mode, verify=verify, sim={**REPLAY, "latency_ns": service_ns}) as eng:
        signature_times(eng, key, 200)  # warm-up: replay cache, pools
        before = eng.stats()["ssl"]
        t = signature_times(eng, key, n)
        after = eng.stats()["ssl"]
    counts = {k: after[k] - before[k] for k in ("signs", "device", "software", "failed")}
    assert counts["device"] == n, counts  # every one made on the device
    return 1e6 * statistics.median(t), counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--service-us", type=float, default=100.0)
    ap.add_argument("--json", help="write the rows as JSON to this file")
    args = ap.parse_args(argv)
    service_ns = int(args.service_us * 1000)
    p256, rsa2048 = ec.generate_private_key(ec.SECP256R1()), rsa.generate_private_key(65537, 2048)
    # RSA twice: with the engine's default check of each RSA result against the public key
    # (verify=True, a public-key operation in the caller's thread) and without it.
    cases = [("P-256", p256, True), ("RSA-2048", rsa2048, True), ("RSA-2048 verify=False", rsa2048, False)]
    rows = []
    for name, key, verify in cases:
        busy, _ = p50_us("busy", key, service_ns, args.n, verify)
        busy0, _ = p50_us("busy", key, 0, args.n, verify)
        overshoot = max(0.0, busy - busy0 - args.service_us)
        for mode in ("timer", "event"):
            p50, counts = p50_us(mode, key, service_ns, args.n, verify)
            added = p50 - args.service_us
            rows.append(
                {
                    "row": f"provider signature (EVP_DigestSign), {name}, {mode}: "
                    f"p50 added over {args.service_us:g} us",
                    "p50_us": p50,
                    "added_us": added,
                    "sim_overshoot_us": overshoot,
                    "added_net_us": added - overshoot,
                    "target_us": 40.0,
                    "passed": added - overshoot <= 40.0,
                    "counts": counts,
                }
            )
            r = rows[-1]
            print(
                f"{r['row']}: p50 {p50:.1f} us, added {added:.1f} us, net of sim overshoot "
                f"{overshoot:.1f} us: {r['added_net_us']:.1f} us (target <= 40) {'PASS' if r['passed'] else 'MISS'}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps({"loadavg": os.getloadavg(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
