"""The simulated QAT device alone: qatlib's rules, real results, faults, knobs.

Drives csrc/sim's libusdm.so.0 + libqat.so.4 directly through cffi ABI mode
(tests/simdev.py).  Results are checked with `cryptography`.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import select
import subprocess
import sys
import threading
import time

import pytest
import simdev as sd
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from simdev import (
    FAIL,
    INVALID_PARAM,
    RESOURCE,
    RESTARTING,
    RETRY,
    SUCCESS,
    UNSUPPORTED,
    b2i,
    ffi,
    i2b,
    sim_get,
    sim_set,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SHA256_DIGESTINFO = bytes.fromhex("3031300d060960864801650304020105000420")
EC_CURVES = {
    "P-256": (ec.SECP256R1(), hashes.SHA256()),
    "P-384": (ec.SECP384R1(), hashes.SHA384()),
    "P-521": (ec.SECP521R1(), hashes.SHA512()),
}


@pytest.fixture(scope="module")
def rsa_keys() -> dict[int, rsa.RSAPrivateKey]:
    return {bits: rsa.generate_private_key(65537, bits) for bits in (1024, 2048, 3072, 4096)}


@pytest.fixture
def dev():
    with sd.device() as d:
        yield d


@pytest.fixture(autouse=True)
def _sim_reset():
    qat, _ = sd.load()
    assert qat.qatpy_sim_reset() == 0
    yield
    # A test must leave the device stopped and its DMA memory returned.
    assert sim_get("started") == 0
    qat.qatpy_sim_reset()


def emsa_pkcs1_sha256(msg: bytes, k: int) -> int:
    t = SHA256_DIGESTINFO + hashlib.sha256(msg).digest()
    return b2i(b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t)


def refused(rule: str) -> int:
    return sim_get("refused." + rule)


def rsa_sign_on_device(dev: sd.Device, key: rsa.RSAPrivateKey, msg: bytes, rep: int = 2) -> bytes:
    k = key.key_size // 8
    op = (sd.rsa_rep2 if rep == 2 else sd.rsa_rep1)(dev.dma, key, emsa_pkcs1_sha256(msg, k))
    n0 = len(dev.done)
    assert sd.submit_rsa_dec(dev, op, 1) == SUCCESS
    dev.poll_until(n0 + 1)
    assert dev.done[-1].status == SUCCESS
    return sd.fb_bytes(op.outs[0])


def ec_key(curve: str) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(EC_CURVES[curve][0])


def ec_digest(curve: str, msg: bytes) -> bytes:
    h = hashes.Hash(EC_CURVES[curve][1])
    h.update(msg)
    return h.finalize()


def ec_check(key: ec.EllipticCurvePrivateKey, curve: str, digest: bytes, r: int, s: int) -> None:
    key.public_key().verify(utils.encode_dss_signature(r, s), digest, ec.ECDSA(utils.Prehashed(EC_CURVES[curve][1])))


def sign_op(dev: sd.Device, curve: str = "P-256", msg: bytes = b"hello", **kw):
    key = ec_key(curve)
    n = int(sd.CURVES[curve]["n"], 16)
    k = kw.pop("k", secrets.randbelow(n - 1) + 1)
    digest = ec_digest(curve, msg)
    op = sd.ecdsa_sign(dev.dma, curve, key.private_numbers().private_value, k, kw.pop("m", digest), **kw)
    return key, digest, op


# ---------------------------------------------------------------- memory (libusdm)


def test_mem_alloc_limits():
    """qaeMemAllocNUMA accepts 1..64 MiB with a power-of-two alignment <= 4 MiB, else NULL."""
    _, usdm = sd.load()
    bad = [(0, 64), (64 * 2**20 + 1, 64), (4096, 3), (4096, 8 * 2**20), (4096, 0)]
    for size, align in bad:
        assert usdm.qaeMemAllocNUMA(size, 0, align) == ffi.NULL, (size, align)
    live0 = sim_get("mem.live_allocs")
    dma = sd.Dma()
    p = dma.alloc(64 * 2**20, 4 * 2**20)
    assert int(ffi.cast("uintptr_t", p)) % (4 * 2**20) == 0
    assert sim_get("mem.live_allocs") == live0 + 1
    assert sim_get("mem.live_bytes") >= 64 * 2**20
    dma.close()
    assert sim_get("mem.live_allocs") == live0
    assert sim_get("mem.alloc_refused") == len(bad)


def test_virt_to_phys_only_inside_live_blocks():
    """qaeVirtToPhysNUMA gives a non-zero IOVA inside a live block, 0 for ordinary or freed memory."""
    _, usdm = sd.load()
    dma = sd.Dma()
    p = dma.alloc(4096)
    base = usdm.qaeVirtToPhysNUMA(p)
    assert base != 0
    assert usdm.qaeVirtToPhysNUMA(ffi.cast("char *", p) + 100) == base + 100
    assert usdm.qaeVirtToPhysNUMA(ffi.cast("char *", p) + 4096) == 0
    assert usdm.qaeVirtToPhysNUMA(ffi.new("char[64]")) == 0
    dma.free(p)
    assert usdm.qaeVirtToPhysNUMA(p) == 0


def test_free_wipes_and_free_nonzero_does_not():
    """qaeMemFreeNUMA zeroes the block before release; qaeMemFreeNonZeroNUMA leaves the bytes."""
    sim_set(mem__quarantine=1)
    dma = sd.Dma()
    a, b = dma.alloc(256), dma.alloc(256)
    ffi.memmove(a, b"\x5a" * 256, 256)
    ffi.memmove(b, b"\x5a" * 256, 256)
    qat, _ = sd.load()
    dma.free(a, wipe=True)
    dma.free(b, wipe=False)
    assert qat.qatpy_sim_mem_freed_nonzero(a) == 0
    assert qat.qatpy_sim_mem_freed_nonzero(b) == 256
    assert sim_get("mem.freed_wiped") == 1 and sim_get("mem.freed_unwiped") == 1
    sim_set(mem__quarantine=0)


def test_free_null_and_foreign_pointers_are_counted():
    """Freeing NULL or a pointer that is not a block start does nothing and is counted."""
    _, usdm = sd.load()
    usdm.qaeMemFreeNUMA(ffi.new("void **"))
    pp = ffi.new("void **", ffi.new("char[16]"))
    usdm.qaeMemFreeNUMA(pp)
    assert sim_get("mem.bad_free") == 2


def test_key_material_freed_unwiped_is_detected(rsa_keys):
    """A block that carried a private-key component and is freed with FreeNonZero is counted."""
    with sd.device() as dev:
        op = sd.rsa_rep2(dev.dma, rsa_keys[2048], 5)
        assert sd.submit_rsa_dec(dev, op, 1) == SUCCESS
        dev.poll_until(1)
        in_block, p_block, q_block = (op.keep[i].pData for i in (1, 2, 3))  # input, p, q
        dev.dma.free(in_block, wipe=False)
        assert sim_get("mem.key_freed_unwiped") == 0
        dev.dma.free(q_block, wipe=True)  # key material, but wiped: fine
        assert sim_get("mem.key_freed_unwiped") == 0
        dev.dma.free(p_block, wipe=False)
        assert sim_get("mem.key_freed_unwiped") == 1


# ---------------------------------------------------------------- lifecycle


def test_user_start_is_refcounted():
    """icp_sal_userStart nests; the last icp_sal_userStop tears down; one more stop is FAIL."""
    qat, _ = sd.load()
    assert qat.icp_sal_userStart(b"SSL") == SUCCESS
    assert qat.icp_sal_userStart(b"SSL") == SUCCESS
    assert sim_get("started") == 2
    assert qat.qatpy_sim_reset() == -1
    assert qat.qatpy_sim_set(b"instances", 3) == -2  # start-time knob, device started
    assert qat.icp_sal_userStop() == SUCCESS
    n = ffi.new("Cpa16U *")
    assert qat.cpaCyGetNumInstances(n) == SUCCESS and n[0] == 1
    assert qat.icp_sal_userStop() == SUCCESS
    assert qat.cpaCyGetNumInstances(n) == SUCCESS and n[0] == 0
    assert qat.icp_sal_userStop() == FAIL
    assert qat.icp_sal_userStart(ffi.NULL) == INVALID_PARAM
    assert qat.icp_sal_userStart(b"x" * 128) == INVALID_PARAM


@pytest.mark.parametrize(
    "mode,lines",
    [
        (1, ["Failed to open /dev/vfio for locking: errno=2"]),
        (2, ["No devices found", "No device found"]),
    ],
)
def test_user_start_failure_prints_real_messages(capfd, mode, lines):
    """With user_start_fail set, start is FAIL and stderr carries qatlib's no-device lines."""
    qat, _ = sd.load()
    sim_set(user_start_fail=mode)
    assert qat.icp_sal_userStart(b"SSL") == FAIL
    err = capfd.readouterr().err.splitlines()
    assert err == lines + ["[error] ADF_IO_PROXY: icp_adf_userProcessToStart: Failed to start SSL"]
    n = ffi.new("Cpa16U *")
    assert qat.cpaCyGetNumInstances(n) == SUCCESS and n[0] == 0
    assert qat.icp_sal_userStop() == FAIL
    sim_set(user_start_fail=0)
    assert qat.icp_sal_userStart(b"SSL") == SUCCESS
    assert qat.icp_sal_userStop() == SUCCESS


def test_user_start_fault_scripted(capfd):
    """fault.user_start_fail.next=1 fails exactly the next start."""
    qat, _ = sd.load()
    sim_set(fault__user_start_fail__next=1)
    assert qat.icp_sal_userStart(b"SSL") == FAIL
    assert "Failed to start SSL" in capfd.readouterr().err
    assert qat.icp_sal_userStart(b"SSL") == SUCCESS
    assert qat.icp_sal_userStop() == SUCCESS
    assert sim_get("faults.user_start_fail") == 1


def test_qat_available_knob():
    """icp_sal_userIsQatAvailable is TRUE by default and FALSE with qat_available=0."""
    qat, _ = sd.load()
    assert qat.icp_sal_userIsQatAvailable() == 1
    sim_set(qat_available=0)
    assert qat.icp_sal_userIsQatAvailable() == 0


def test_no_instances_before_start(capfd):
    """Before start: counts are 0 with SUCCESS, asking for 1 is RESOURCE, for 0 INVALID_PARAM, NULL poll INVALID_PARAM."""
    qat, _ = sd.load()
    n = ffi.new("Cpa16U *")
    arr = ffi.new("CpaInstanceHandle[1]")
    assert qat.cpaCyGetNumInstances(n) == SUCCESS and n[0] == 0
    assert qat.cpaGetNumInstances(sd.CRYPTO_ASYM, n) == SUCCESS and n[0] == 0
    assert qat.cpaCyGetInstances(1, arr) == RESOURCE
    assert "Only 0 instances available" in capfd.readouterr().err
    assert qat.cpaCyGetInstances(0, arr) == INVALID_PARAM
    assert qat.icp_sal_CyPollInstance(ffi.NULL, 0) == INVALID_PARAM


@pytest.mark.parametrize("how", ["knob", "fault"])
def test_zero_instances(how):
    """A start can succeed with zero instances (knob instances=0 or fault.zero_instances)."""
    qat, _ = sd.load()
    sim_set(**({"instances": 0} if how == "knob" else {"fault__zero_instances__next": 1}))
    assert qat.icp_sal_userStart(b"SSL") == SUCCESS
    n = ffi.new("Cpa16U *")
    assert qat.cpaGetNumInstances(sd.CRYPTO_ASYM, n) == SUCCESS and n[0] == 0
    assert qat.icp_sal_userStop() == SUCCESS


def test_instance_array_semantics_and_affinity():
    """0 -> INVALID_PARAM, more than available -> RESOURCE, fewer fills the first N; nodeAffinity = i % nodes."""
    qat, _ = sd.load()
    sim_set(instances=3, nodes=2)
    assert qat.icp_sal_userStart(b"SSL") == SUCCESS
    try:
        arr = ffi.new("CpaInstanceHandle[4]")
        for get in (lambda k, a: qat.cpaGetInstances(sd.CRYPTO_ASYM, k, a), qat.cpaCyGetInstances):
            assert get(0, arr) == INVALID_PARAM
            assert get(4, arr) == RESOURCE
            assert get(2, arr) == SUCCESS
            assert get(3, arr) == SUCCESS
        info = ffi.new("CpaInstanceInfo2 *")
        nodes = []
        for i in range(3):
            assert qat.cpaCyInstanceGetInfo2(arr[i], info) == SUCCESS
            assert info.isPolled == 1 and info.requiresPhysicallyContiguousMemory == 1
            assert info.accelerationServiceType == sd.CRYPTO_ASYM
            nodes.append(info.nodeAffinity)
        assert nodes == [0, 1, 0]
        assert len({int(ffi.cast("uintptr_t", arr[i])) for i in range(3)}) == 3
        assert qat.cpaCyInstanceGetInfo2(ffi.cast("void *", 12345), info) == INVALID_PARAM
    finally:
        assert qat.icp_sal_userStop() == SUCCESS


def test_capabilities_and_capability_knob(rsa_keys):
    """rsa/ecdsa are advertised; with cap.rsa=0 they are not and RSA submits are UNSUPPORTED."""
    with sd.device() as dev:
        cap = ffi.new("CpaCyCapabilitiesInfo *")
        assert dev.qat.cpaCyQueryCapabilities(dev.h, cap) == SUCCESS
        assert cap.rsaSupported == 1 and cap.ecdsaSupported == 1 and cap.symSupported == 0
        sim_set(**{"cap.rsa": 0})
        assert dev.qat.cpaCyQueryCapabilities(dev.h, cap) == SUCCESS
        assert cap.rsaSupported == 0
        op = sd.rsa_rep2(dev.dma, rsa_keys[2048], 3)
        assert sd.submit_rsa_dec(dev, op) == UNSUPPORTED
        assert refused("capability") == 1
        sim_set(**{"cap.rsa": 1})
        assert sd.submit_rsa_dec(dev, op) == SUCCESS
        dev.poll_until(1)


def test_ops_need_started_instance_and_translation(rsa_keys):
    """Submits before cpaCyStartInstance or before cpaCySetAddressTranslation are FAIL."""
    qat, usdm = sd.load()
    assert qat.icp_sal_userStart(b"SSL") == SUCCESS
    dma = sd.Dma()
    try:
        h = ffi.new("CpaInstanceHandle[1]")
        assert qat.cpaCyGetInstances(1, h) == SUCCESS
        cb = ffi.callback("CpaCyGenFlatBufCbFunc", lambda *a: None)
        op = sd.rsa_rep2(dma, rsa_keys[2048], 3)
        submit = lambda: qat.cpaCyRsaDecrypt(h[0], cb, ffi.NULL, op.opdata, op.outs[0])
        assert submit() == FAIL
        assert refused("not_started") == 1
        assert qat.cpaCyStartInstance(h[0]) == SUCCESS
        assert submit() == FAIL
        assert refused("no_translation") == 1
        assert qat.cpaCySetAddressTranslation(h[0], ffi.NULL) == INVALID_PARAM
        v2p = ffi.cast("CpaVirtualToPhysical", usdm.qaeVirtToPhysNUMA)
        assert qat.cpaCySetAddressTranslation(h[0], v2p) == SUCCESS
        assert submit() == SUCCESS
        while qat.icp_sal_CyPollInstance(h[0], 0) != SUCCESS:
            time.sleep(0.001)
        assert qat.cpaCyStopInstance(h[0]) == SUCCESS
        assert submit() == FAIL
    finally:
        assert qat.icp_sal_userStop() == SUCCESS
        dma.close()


def test_status_text():
    """cpaCyGetStatusText gives a non-empty text for every CpaStatus, INVALID_PARAM for others."""
    qat, _ = sd.load()
    buf = ffi.new("Cpa8S[255]")
    for st in range(-7, 1):
        assert qat.cpaCyGetStatusText(ffi.NULL, st, buf) == SUCCESS
        assert len(ffi.string(ffi.cast("char *", buf))) > 5
    assert qat.cpaCyGetStatusText(ffi.NULL, 42, buf) == INVALID_PARAM
    assert qat.cpaCyGetStatusText(ffi.NULL, 0, ffi.NULL) == INVALID_PARAM


def test_repeated_start_stop_cycles(rsa_keys):
    """The device survives many start/stop cycles with work in each."""
    for _ in range(5):
        with sd.device(workers=1) as dev:
            sig = rsa_sign_on_device(dev, rsa_keys[2048], b"cycle")
            rsa_keys[2048].public_key().verify(sig, b"cycle", padding.PKCS1v15(), hashes.SHA256())
    assert sim_get("mem.live_allocs") == 0


# ---------------------------------------------------------------- RSA rules and results


@pytest.mark.parametrize("bits", [2048, 3072, 4096])
def test_rsa_rep2_signature_verifies(rsa_keys, bits):
    """RSA Rep2 (CRT) private op gives a PKCS#1 v1.5 signature cryptography accepts."""
    with sd.device() as dev:
        sig = rsa_sign_on_device(dev, rsa_keys[bits], b"message")
        rsa_keys[bits].public_key().verify(sig, b"message", padding.PKCS1v15(), hashes.SHA256())


def test_rsa_rep1_and_input_below_n(rsa_keys):
    """Rep1 (n, d) signs correctly; an input >= n or zero is INVALID_PARAM (input_range)."""
    key = rsa_keys[2048]
    n = key.public_key().public_numbers().n
    with sd.device() as dev:
        sig = rsa_sign_on_device(dev, key, b"rep1", rep=1)
        key.public_key().verify(sig, b"rep1", padding.PKCS1v15(), hashes.SHA256())
        for bad in (n, n + 1, 0):
            op = sd.rsa_rep1(dev.dma, key, bad)
            assert sd.submit_rsa_dec(dev, op) == INVALID_PARAM
        assert refused("input_range") == 3
        weak = sd.rsa_rep1(dev.dma, key, 5)
        weak.keep[1].pData[0] = 0x3F  # modulus whose two top bits are clear
        assert sd.submit_rsa_dec(dev, weak) == INVALID_PARAM
        assert refused("rsa_key") == 1


def test_rsa_public_op_roundtrip(rsa_keys):
    """cpaCyRsaEncrypt computes m^e mod n (undoes the device's own private op)."""
    key = rsa_keys[2048]
    with sd.device() as dev:
        sig = rsa_sign_on_device(dev, key, b"pub")
        op = sd.rsa_pub(dev.dma, key.public_key(), b2i(sig))
        assert dev.qat.cpaCyRsaEncrypt(dev.h, dev.rsa_cb, sd.tag(9), op.opdata, op.outs[0]) == SUCCESS
        dev.poll_until(2)
        assert b2i(sd.fb_bytes(op.outs[0])) == emsa_pkcs1_sha256(b"pub", 256)
        n = key.public_key().public_numbers().n
        bad = sd.rsa_pub(dev.dma, key.public_key(), n)
        assert dev.qat.cpaCyRsaEncrypt(dev.h, dev.rsa_cb, sd.tag(9), bad.opdata, bad.outs[0]) == INVALID_PARAM
        even_e = sd.rsa_pub(dev.dma, key.public_key(), 5)
        ffi.memmove(even_e.keep[2].pData, b"\x01\x00\x00", 3)
        assert dev.qat.cpaCyRsaEncrypt(dev.h, dev.rsa_cb, sd.tag(9), even_e.opdata, even_e.outs[0]) == INVALID_PARAM
        assert refused("rsa_key") == 1


def test_rsa_sizes_and_legacy_knob(rsa_keys):
    """1024-bit RSA is refused (rsa_size) unless legacy_sizes=1, then it signs correctly."""
    key = rsa_keys[1024]
    with sd.device() as dev:
        op = sd.rsa_rep2(dev.dma, key, emsa_pkcs1_sha256(b"old", 128))
        assert sd.submit_rsa_dec(dev, op) == INVALID_PARAM
        assert refused("rsa_size") == 1
        sim_set(legacy_sizes=1)
        sig = rsa_sign_on_device(dev, key, b"old")
        key.public_key().verify(sig, b"old", padding.PKCS1v15(), hashes.SHA256())


def _fake_rep2(bits_p: int):
    """CRT numbers that pass every range rule (not a real key: the device does not check primality)."""
    p = secrets.randbits(bits_p) | (1 << (bits_p - 1)) | 1
    q = secrets.randbits(bits_p) | (1 << (bits_p - 1)) | 1
    dp = secrets.randbelow(p - 3) + 2
    dq = secrets.randbelow(q - 3) + 2
    qinv = secrets.randbelow(p - 1) + 1
    return p, q, dp, dq, qinv


def _rep2_op(dma: sd.Dma, nums, c: int, half: int, out_len: int | None = None) -> sd.Op:
    key = ffi.new("CpaCyRsaPrivateKey *")
    key.version, key.privateKeyRepType = 1, 2
    bufs = [dma.buf(x, half) for x in nums]
    r2 = key.privateKeyRep2
    for dst, src in zip((r2.prime1P, r2.prime2Q, r2.exponent1Dp, r2.exponent2Dq, r2.coefficientQInv), bufs):
        sd.set_fb(dst, src)
    op = ffi.new("CpaCyRsaDecryptOpData *")
    op.pRecipientPrivateKey = key
    inp = dma.buf(c, 2 * half)
    sd.set_fb(op.inputData, inp)
    return sd.Op(op, [dma.out(out_len or 2 * half)], [key, inp, *bufs])


def _crt(c: int, p: int, q: int, dp: int, dq: int, qinv: int) -> int:
    m1, m2 = pow(c, dp, p), pow(c, dq, q)
    return m2 + ((qinv * (m1 - m2)) % p) * q


def test_rsa_8192_and_odd_sizes():
    """8192-bit Rep2 is accepted and computed by the CRT formula; a 2560-bit one is refused."""
    with sd.device() as dev:
        nums = _fake_rep2(4096)
        c = secrets.randbits(8000)
        op = _rep2_op(dev.dma, nums, c, 512)
        assert sd.submit_rsa_dec(dev, op) == SUCCESS
        dev.poll_until(1)
        assert dev.done[0].status == SUCCESS
        assert b2i(sd.fb_bytes(op.outs[0])) == _crt(c, *nums)
        odd = _rep2_op(dev.dma, _fake_rep2(1280), 5, 160)
        assert sd.submit_rsa_dec(dev, odd) == INVALID_PARAM
        assert refused("rsa_size") == 1


@pytest.mark.parametrize(
    "field,value",
    [
        ("dp", 1),
        ("dp", "p-1"),
        ("dq", 0),
        ("dq", "q-1"),
        ("qinv", 0),
        ("qinv", "p"),
        ("p", "even"),
        ("p", "msb"),
        ("q", "short"),
    ],
)
def test_rsa_rep2_key_ranges(field, value):
    """Rep2: 1<dP<p-1, 1<dQ<q-1, 0<qInv<p, p and q odd with MSB set and equal length (rsa_key); valid passes."""
    p, q, dp, dq, qinv = _fake_rep2(1024)
    vals = {"p": p, "q": q, "dp": dp, "dq": dq, "qinv": qinv}
    with sd.device() as dev:
        good = _rep2_op(dev.dma, (p, q, dp, dq, qinv), 7, 128)
        assert sd.submit_rsa_dec(dev, good) == SUCCESS
        dev.poll_until(1)
        assert b2i(sd.fb_bytes(good.outs[0])) == _crt(7, p, q, dp, dq, qinv)
        if value == "p-1":
            vals[field] = p - 1
        elif value == "q-1":
            vals[field] = q - 1
        elif value == "p":
            vals[field] = p
        elif value == "even":
            vals["p"] = p ^ 1
        elif value == "msb":
            vals["p"] = (p & ~(1 << 1023)) | (1 << 1022)  # same byte length, top bit clear
        elif value == "short":
            vals["q"] = q >> 8  # one byte shorter than p
        else:
            vals[field] = value
        bad = _rep2_op(dev.dma, tuple(vals[k] for k in ("p", "q", "dp", "dq", "qinv")), 7, 128)
        assert sd.submit_rsa_dec(dev, bad) == INVALID_PARAM
        assert refused("rsa_key") == 1


def test_rsa_output_buffer_length(rsa_keys):
    """Output shorter than the modulus is INVALID_PARAM; a longer one gets the result right-aligned after zeros."""
    key = rsa_keys[2048]
    msg = emsa_pkcs1_sha256(b"x", 256)
    with sd.device() as dev:
        short = sd.rsa_rep2(dev.dma, key, msg, out_len=255)
        assert sd.submit_rsa_dec(dev, short) == INVALID_PARAM
        assert refused("output_short") == 1
        long = sd.rsa_rep2(dev.dma, key, msg, out_len=300)
        assert sd.submit_rsa_dec(dev, long) == SUCCESS
        dev.poll_until(1)
        out = sd.fb_bytes(long.outs[0])
        assert out[:44] == b"\x00" * 44 and long.outs[0].dataLenInBytes == 300
        key.public_key().verify(out[44:], b"x", padding.PKCS1v15(), hashes.SHA256())


def test_zero_filled_opdata_is_invalid(rsa_keys):
    """Enums start at 1: zero version/rep type/fieldType are INVALID_PARAM (enum); set properly they succeed."""
    with sd.device() as dev:
        op = sd.rsa_rep2(dev.dma, rsa_keys[2048], 11)
        key = op.opdata.pRecipientPrivateKey
        key.version = 0
        assert sd.submit_rsa_dec(dev, op) == INVALID_PARAM
        key.version, key.privateKeyRepType = 1, 0
        assert sd.submit_rsa_dec(dev, op) == INVALID_PARAM
        key.privateKeyRepType = 3
        assert sd.submit_rsa_dec(dev, op) == INVALID_PARAM
        _, _, sop = sign_op(dev)
        sop.opdata.fieldType = 0
        assert sd.submit_sign(dev, sop) == INVALID_PARAM
        assert refused("enum") == 4
        key.privateKeyRepType = 2
        sop.opdata.fieldType = 1
        assert sd.submit_rsa_dec(dev, op) == SUCCESS
        assert sd.submit_sign(dev, sop) == SUCCESS
        dev.poll_until(2)
        assert [c.status for c in dev.done] == [SUCCESS, SUCCESS]


def test_zero_length_buffers(rsa_keys):
    """A zero-length buffer is INVALID_PARAM (zero_length), even for a zero value (pass one 0x00 byte)."""
    with sd.device() as dev:
        op = sd.rsa_rep2(dev.dma, rsa_keys[2048], 11)
        op.opdata.inputData.dataLenInBytes = 0
        assert sd.submit_rsa_dec(dev, op) == INVALID_PARAM
        _, _, sop = sign_op(dev)
        n_a = sop.opdata.a.dataLenInBytes
        sop.opdata.a.dataLenInBytes = 0
        assert sd.submit_sign(dev, sop) == INVALID_PARAM
        assert refused("zero_length") == 2
        sop.opdata.a.dataLenInBytes = n_a
        assert sd.submit_sign(dev, sop) == SUCCESS
        dev.poll_until(1)


# ---------------------------------------------------------------- DMA rule


@pytest.mark.parametrize("where", ["input", "output", "key", "overrun"])
def test_dma_rule(rsa_keys, where):
    """Any pData outside a live qaeMemAllocNUMA block is FAIL (refused.dma); the same request in DMA memory succeeds."""
    with sd.device() as dev:
        op = sd.rsa_rep2(dev.dma, rsa_keys[2048], 99)
        ordinary = ffi.new("Cpa8U[512]")
        fb = {
            "input": op.opdata.inputData,
            "output": op.outs[0],
            "key": op.opdata.pRecipientPrivateKey.privateKeyRep2.prime1P,
        }.get(where)
        saved = (None, None)
        if where == "overrun":
            fb = op.opdata.inputData
            saved = (fb.pData, fb.dataLenInBytes)
            fb.dataLenInBytes = 257  # one byte past the 256-byte block, still < output
        else:
            saved = (fb.pData, fb.dataLenInBytes)
            ffi.memmove(ordinary, fb.pData, fb.dataLenInBytes)
            fb.pData = ordinary
        assert sd.submit_rsa_dec(dev, op) == FAIL
        assert refused("dma") == 1 and sim_get("submitted") == 0
        fb.pData, fb.dataLenInBytes = saved
        assert sd.submit_rsa_dec(dev, op) == SUCCESS
        dev.poll_until(1)
        assert dev.done[0].status == SUCCESS


def test_dma_rule_with_custom_translation(rsa_keys):
    """A caller's translation function is consulted: returning 0 refuses the request."""
    calls = []

    @ffi.callback("CpaVirtualToPhysical")
    def v2p(p):
        calls.append(p)
        return 0

    with sd.device() as dev:
        assert dev.qat.cpaCySetAddressTranslation(dev.h, v2p) == SUCCESS
        op = sd.rsa_rep2(dev.dma, rsa_keys[2048], 99)
        assert sd.submit_rsa_dec(dev, op) == FAIL
        assert calls and refused("dma") == 1
        assert dev.qat.cpaCySetAddressTranslation(dev.h, dev.v2p) == SUCCESS
        assert sd.submit_rsa_dec(dev, op) == SUCCESS
        dev.poll_until(1)


def test_dma_block_freed_while_in_flight(rsa_keys):
    """Freeing a buffer's block before completion fails the request (refused.dma_freed_inflight), nothing is written."""
    with sd.device(latency_ns=50_000_000) as dev:
        op = sd.rsa_rep2(dev.dma, rsa_keys[2048], 99)
        assert sd.submit_rsa_dec(dev, op) == SUCCESS
        dev.dma.free(op.outs[0].pData)
        dev.poll_until(1)
        assert dev.done[0].status == FAIL
        assert refused("dma_freed_inflight") == 1


# ---------------------------------------------------------------- ECDSA rules and results


@pytest.mark.parametrize("curve", ["P-256", "P-384", "P-521"])
def test_ecdsa_sign_verifies(curve):
    """SignRS with the caller's k gives (r, s) that cryptography verifies, r = x(kG) mod n."""
    with sd.device() as dev:
        key, digest, op = sign_op(dev, curve, k=123456789)
        assert sd.submit_sign(dev, op, 5) == SUCCESS
        dev.poll_until(1)
        c = dev.done[0]
        assert (c.status, c.flag, c.tag) == (SUCCESS, 1, 5)
        r, s = b2i(sd.fb_bytes(op.outs[0])), b2i(sd.fb_bytes(op.outs[1]))
        ec_check(key, curve, digest, r, s)
        kG = ec.derive_private_key(123456789, EC_CURVES[curve][0]).public_key().public_numbers().x
        assert r == kG % int(sd.CURVES[curve]["n"], 16)


@pytest.mark.parametrize("curve", ["P-256", "P-521"])
def test_ecdsa_verify(curve):
    """cpaCyEcdsaVerify says TRUE for a cryptography signature and FALSE for a tampered one."""
    key = ec_key(curve)
    digest = ec_digest(curve, b"v")
    r, s = utils.decode_dss_signature(key.sign(digest, ec.ECDSA(utils.Prehashed(EC_CURVES[curve][1]))))
    pub = key.public_key().public_numbers()
    with sd.device() as dev:
        ok = sd.ecdsa_verify(dev.dma, curve, (pub.x, pub.y), digest, r, s)
        bad = sd.ecdsa_verify(dev.dma, curve, (pub.x, pub.y), digest, r, s ^ 1)
        for i, op in enumerate((ok, bad)):
            assert dev.qat.cpaCyEcdsaVerify(dev.h, dev.verify_cb, sd.tag(i), op.opdata, op.status) == SUCCESS
        dev.poll_until(2)
        flags = {c.tag: (c.status, c.flag) for c in dev.done}
        assert flags == {0: (SUCCESS, 1), 1: (SUCCESS, 0)}
        assert sim_get("completed.verify_false") == 1


def test_ecdsa_verify_rules():
    """cpaCyEcdsaVerify obeys sign's rules (NULL status, zero length, non-DMA buffer, curve, capability refused and counted); the same request then verifies, its callback only inside poll."""
    key = ec_key("P-256")
    digest = ec_digest("P-256", b"rules")
    r, s = utils.decode_dss_signature(key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256()))))
    pub = key.public_key().public_numbers()
    with sd.device() as dev:
        op = sd.ecdsa_verify(dev.dma, "P-256", (pub.x, pub.y), digest, r, s)

        def submit(status=op.status) -> int:
            return int(dev.qat.cpaCyEcdsaVerify(dev.h, dev.verify_cb, sd.tag(7), op.opdata, status))

        assert submit(ffi.NULL) == INVALID_PARAM and refused("null_param") == 1
        n_s = op.opdata.s.dataLenInBytes
        op.opdata.s.dataLenInBytes = 0
        assert submit() == INVALID_PARAM and refused("zero_length") == 1
        op.opdata.s.dataLenInBytes = n_s
        saved = op.opdata.yp.pData
        ordinary = ffi.new("Cpa8U[32]")
        ffi.memmove(ordinary, saved, 32)
        op.opdata.yp.pData = ordinary
        assert submit() == FAIL and refused("dma") == 1
        op.opdata.yp.pData = saved
        op.opdata.b.pData[31] ^= 1
        assert submit() == INVALID_PARAM and refused("ec_curve") == 1
        op.opdata.b.pData[31] ^= 1
        sim_set(**{"cap.ecdsa": 0})
        assert submit() == UNSUPPORTED and refused("capability") == 1
        sim_set(**{"cap.ecdsa": 1})
        assert sim_get("submitted") == 0
        assert submit() == SUCCESS
        time.sleep(0.02)
        assert dev.done == []  # computed by now, but delivered only by a poll
        dev.poll_until(1)
        c = dev.done[0]
        assert (c.tag, c.status, c.flag, c.in_poll) == (7, SUCCESS, 1, True)


@pytest.mark.parametrize("curve", ["P-256", "P-384", "P-521"])
def test_curve_constants_are_the_table(curve):
    """The device's NIST constants equal tests/abi_facts.py's: the table's six sign (verified); any one off by a bit is refused."""
    with sd.device() as dev:
        key, digest, op = sign_op(dev, curve)
        last = sd.CURVES[curve]["len"] - 1
        for i, name in enumerate(("q", "a", "b", "n", "xg", "yg")):
            buf = getattr(op.opdata, name).pData
            buf[last] ^= 1
            assert sd.submit_sign(dev, op) == INVALID_PARAM, name
            buf[last] ^= 1
            assert refused("ec_curve") == i + 1, name
        assert sd.submit_sign(dev, op) == SUCCESS
        dev.poll_until(1)
        assert dev.done[0].status == SUCCESS
        ec_check(key, curve, digest, b2i(sd.fb_bytes(op.outs[0])), b2i(sd.fb_bytes(op.outs[1])))


def test_ecdsa_non_nist_curve_refused():
    """Curve parameters other than NIST P-256/384/521 (or a binary field) are INVALID_PARAM (ec_curve)."""
    with sd.device() as dev:
        _, _, op = sign_op(dev)
        b = op.opdata.b.pData
        b[31] ^= 1
        assert sd.submit_sign(dev, op) == INVALID_PARAM
        b[31] ^= 1
        op.opdata.fieldType = 2
        assert sd.submit_sign(dev, op) == INVALID_PARAM
        assert refused("ec_curve") == 2
        op.opdata.fieldType = 1
        assert sd.submit_sign(dev, op) == SUCCESS
        dev.poll_until(1)


@pytest.mark.parametrize("which,value", [("k", 0), ("k", "n"), ("d", 0), ("d", "n")])
def test_ecdsa_scalar_ranges(which, value):
    """0<k<n and 0<d<n, else INVALID_PARAM (ec_scalar); k = n-1 is accepted."""
    n = int(sd.CURVES["P-256"]["n"], 16)
    with sd.device() as dev:
        _, _, op = sign_op(dev, k=n - 1)
        assert sd.submit_sign(dev, op) == SUCCESS
        dev.poll_until(1)
        v = n if value == "n" else value
        ffi.memmove(getattr(op.opdata, which).pData, i2b(v, 32), 32)
        assert sd.submit_sign(dev, op) == INVALID_PARAM
        assert refused("ec_scalar") == 1


def test_ecdsa_sign_status_required_even_async():
    """pSignStatus NULL is INVALID_PARAM on the async path too."""
    with sd.device() as dev:
        _, _, op = sign_op(dev)
        st = dev.qat.cpaCyEcdsaSignRS(dev.h, dev.sign_cb, sd.tag(0), op.opdata, ffi.NULL, op.outs[0], op.outs[1])
        assert st == INVALID_PARAM and refused("null_param") == 1
        assert sd.submit_sign(dev, op) == SUCCESS
        dev.poll_until(1)


def test_ecdsa_output_lengths():
    """r/s shorter than len(n) are INVALID_PARAM; longer ones are right-aligned after zeros."""
    with sd.device() as dev:
        _, _, short = sign_op(dev, "P-521", out_len=65)
        assert sd.submit_sign(dev, short) == INVALID_PARAM
        assert refused("output_short") == 1
        key, digest, op = sign_op(dev, "P-384", out_len=384)  # degree-in-bits, as QAT_Engine does
        assert sd.submit_sign(dev, op) == SUCCESS
        dev.poll_until(1)
        r, s = sd.fb_bytes(op.outs[0]), sd.fb_bytes(op.outs[1])
        assert r[:336] == b"\x00" * 336 and s[:336] == b"\x00" * 336
        ec_check(key, "P-384", digest, b2i(r), b2i(s))


def test_ecdsa_overlong_m_keeps_least_significant_bytes():
    """On P-256 a 48-byte m is cut to its last 32 bytes (the wrong end); P-521 with m > 72 bytes is refused."""
    with sd.device() as dev:
        long_m = hashlib.sha384(b"long").digest()
        key, _, op = sign_op(dev, "P-256", m=long_m)
        assert sd.submit_sign(dev, op) == SUCCESS
        dev.poll_until(1)
        r, s = b2i(sd.fb_bytes(op.outs[0])), b2i(sd.fb_bytes(op.outs[1]))
        ec_check(key, "P-256", long_m[-32:], r, s)
        with pytest.raises(InvalidSignature):
            ec_check(key, "P-256", long_m[:32], r, s)
        assert sim_get("ec_m_cut") == 1
        _, _, big = sign_op(dev, "P-521", m=b"\x01" * 73)
        assert sd.submit_sign(dev, big) == INVALID_PARAM
        assert refused("ec_m_length") == 1


# ---------------------------------------------------------------- polling and completion


def test_callbacks_only_inside_poll_on_polling_thread(rsa_keys):
    """Work completes on device threads, but callbacks run only inside poll, on the polling thread, with op data and tag."""
    with sd.device() as dev:
        ops = [sd.rsa_rep2(dev.dma, rsa_keys[2048], 1000 + i) for i in range(4)]
        for i, op in enumerate(ops):
            assert sd.submit_rsa_dec(dev, op, 100 + i) == SUCCESS
        deadline = time.monotonic() + 5
        while sim_get("computed") < 4:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert dev.done == []  # computed, but nobody polled
        t = threading.Thread(target=dev.poll_until, args=(4,))
        t.start()
        t.join()
        assert {c.thread for c in dev.done} == {t.ident}
        assert all(c.in_poll for c in dev.done)
        by_tag = {c.tag: c for c in dev.done}
        for i, op in enumerate(ops):
            c = by_tag[100 + i]
            assert c.opdata == ffi.cast("void *", op.opdata)
            assert c.out[0] == op.outs[0]


def test_poll_status_and_quota(rsa_keys):
    """Poll is RETRY with nothing to do, SUCCESS when it delivered, and delivers at most quota responses."""
    with sd.device() as dev:
        assert dev.poll() == RETRY
        ops = [sd.rsa_rep2(dev.dma, rsa_keys[2048], 7 + i) for i in range(5)]
        for op in ops:
            assert sd.submit_rsa_dec(dev, op) == SUCCESS
        while sim_get("computed") < 5:
            time.sleep(0.002)
        assert dev.poll(quota=2) == SUCCESS and len(dev.done) == 2
        assert dev.poll(quota=2) == SUCCESS and len(dev.done) == 4
        assert dev.poll(quota=0) == SUCCESS and len(dev.done) == 5
        assert dev.poll() == RETRY
        assert sim_get("polls") == 5


def test_ring_depth_retry_queues_nothing(rsa_keys):
    """A ring of depth D admits D-1 in flight; the next submit is RETRY and queues nothing."""
    with sd.device(ring_depth=8, compute_mode=1) as dev:
        op = sd.rsa_rep2(dev.dma, rsa_keys[2048], 5)
        accepted = 0
        while sd.submit_rsa_dec(dev, op) == SUCCESS:
            accepted += 1
        assert accepted == 7
        assert sim_get("retry_returned") == 1 and sim_get("ring_full") == 1
        assert sim_get("submitted") == 7 and sim_get("inflight") == 7 and sim_get("inflight_max") == 7
        dev.poll_until(7)
        time.sleep(0.05)
        assert dev.poll() == RETRY and len(dev.done) == 7
        assert sd.submit_rsa_dec(dev, op) == SUCCESS
        dev.poll_until(8)


def test_default_ring_depth_is_64(rsa_keys):
    """The default ring admits 63 requests in flight per instance."""
    with sd.device(latency_ns=10**9) as dev:
        op = sd.rsa_rep2(dev.dma, rsa_keys[2048], 5)
        n = 0
        while sd.submit_rsa_dec(dev, op) == SUCCESS:
            n += 1
        assert n == 63


def test_sync_mode_blocks_until_another_thread_polls(rsa_keys):
    """NULL callback = sync: the call returns only after another thread polls, with the result written."""
    key = rsa_keys[2048]
    msg = emsa_pkcs1_sha256(b"sync", 256)
    with sd.device() as dev:
        op = sd.rsa_rep2(dev.dma, key, msg)
        t, res = sd.run_in_thread(lambda: dev.qat.cpaCyRsaDecrypt(dev.h, ffi.NULL, ffi.NULL, op.opdata, op.outs[0]))
        time.sleep(0.2)
        assert t.is_alive() and res == []
        deadline = time.monotonic() + 5
        while t.is_alive():
            dev.poll()
            assert time.monotonic() < deadline
            time.sleep(0.001)
        assert res == [SUCCESS]
        key.public_key().verify(sd.fb_bytes(op.outs[0]), b"sync", padding.PKCS1v15(), hashes.SHA256())
        _, _digest, sop = sign_op(dev)
        t, res = sd.run_in_thread(
            lambda: dev.qat.cpaCyEcdsaSignRS(
                dev.h, ffi.NULL, ffi.NULL, sop.opdata, sop.status, sop.outs[0], sop.outs[1]
            )
        )
        while t.is_alive():
            dev.poll()
            time.sleep(0.001)
        assert res == [SUCCESS] and sop.status[0] == 1


def test_sync_mode_times_out_with_resource(rsa_keys):
    """A sync call nobody polls returns RESOURCE after sync_timeout_ms; the late response is dropped."""
    with sd.device(sync_timeout_ms=100) as dev:
        op = sd.rsa_rep2(dev.dma, rsa_keys[2048], 5)
        t0 = time.monotonic()
        assert dev.qat.cpaCyRsaDecrypt(dev.h, ffi.NULL, ffi.NULL, op.opdata, op.outs[0]) == RESOURCE
        assert 0.09 < time.monotonic() - t0 < 1.5
        assert sim_get("sync_timeouts") == 1
        while sim_get("inflight"):
            dev.poll()
            time.sleep(0.001)
        assert dev.done == [] and sd.fb_bytes(op.outs[0]) == b"\xaa" * 256


def test_sync_timeout_default_is_2s():
    """The sync timeout defaults to 2000 ms, as in qatlib."""
    assert sim_get("sync_timeout_ms") == 2000


def test_event_mode_fd(rsa_keys):
    """fd is UNSUPPORTED (and 0) until BY_EVENT; then a non-blocking eventfd readable exactly while responses wait."""
    with sd.device(latency_ns=100_000_000) as dev:
        qat, h = dev.qat, dev.h
        fd = ffi.new("int *", -1)
        assert qat.icp_sal_CyGetFileDescriptor(h, fd) == UNSUPPORTED and fd[0] == 0
        assert qat.cpaInstanceSetResponseMode(h, sd.CRYPTO, sd.NOTIFY_BY_EVENT) == INVALID_PARAM
        op = sd.rsa_rep2(dev.dma, rsa_keys[2048], 5)
        assert sd.submit_rsa_dec(dev, op) == SUCCESS
        assert qat.cpaInstanceSetResponseMode(h, sd.CRYPTO_ASYM, sd.NOTIFY_BY_EVENT) == RETRY
        dev.poll_until(1)
        assert qat.cpaInstanceSetResponseMode(h, sd.CRYPTO_ASYM, sd.NOTIFY_BY_EVENT) == SUCCESS
        mode = ffi.new("CpaInstanceResponseMode *")
        assert qat.cpaInstanceGetResponseMode(h, sd.CRYPTO_ASYM, mode) == SUCCESS and mode[0] == 2
        assert qat.icp_sal_CyGetFileDescriptor(h, fd) == SUCCESS and fd[0] > 2
        efd = fd[0]
        assert os.get_blocking(efd) is False
        assert select.select([efd], [], [], 0)[0] == []
        assert sd.submit_rsa_dec(dev, op, 2) == SUCCESS
        assert select.select([efd], [], [], 0)[0] == []  # still in the device
        assert select.select([efd], [], [], 5)[0] == [efd]
        assert dev.poll() == SUCCESS
        assert select.select([efd], [], [], 0)[0] == []
        assert qat.icp_sal_CyPutFileDescriptor(h, efd) == SUCCESS


def test_stop_instance_keeps_requests_in_flight(rsa_keys):
    """cpaCyStopInstance only marks the instance stopped (qatlib 26.08): requests stay on the device, a poll still delivers them, and new submits are FAIL until it starts again."""
    with sd.device(latency_ns=30_000_000) as dev:
        op = sd.rsa_rep2(dev.dma, rsa_keys[2048], 5)
        for i in range(3):
            assert sd.submit_rsa_dec(dev, op, i) == SUCCESS
        assert dev.qat.cpaCyStopInstance(dev.h) == SUCCESS
        assert sim_get("inflight") == 3 and sim_get("completed.discarded") == 0
        assert sd.submit_rsa_dec(dev, op, 9) == FAIL
        dev.poll_until(3)
        assert sorted(c.tag for c in dev.done) == [0, 1, 2]
        assert all(c.status == SUCCESS for c in dev.done)
        expected = pow(5, rsa_keys[2048].private_numbers().d, rsa_keys[2048].public_key().public_numbers().n)
        assert b2i(bytes(ffi.buffer(op.outs[0].pData, op.outs[0].dataLenInBytes))) == expected
        assert sim_get("inflight") == 0
        assert dev.qat.cpaCyStartInstance(dev.h) == SUCCESS
        assert sd.submit_rsa_dec(dev, op, 3) == SUCCESS
        dev.poll_until(4)


def test_several_instances_complete_independently(rsa_keys):
    """Each instance has its own ring: responses come back on the instance they were submitted to."""
    with sd.device(instances=3) as dev:
        assert len(dev.handles) == 3
        ops = [sd.rsa_rep2(dev.dma, rsa_keys[2048], 50 + i) for i in range(3)]
        for i, (h, op) in enumerate(zip(dev.handles, ops)):
            assert sd.submit_rsa_dec(dev, op, i, h=h) == SUCCESS
        for i, h in enumerate(dev.handles):
            dev.poll_until(i + 1, h=h)
            assert dev.done[-1].tag == i


def test_latency_and_engines_model_capacity(rsa_keys):
    """With latency L and E engines, 2E requests take about 2L (capacity E/L) and none arrives before L."""
    with sd.device(latency_ns=60_000_000, engines=2, compute_mode=1) as dev:
        op = sd.rsa_rep2(dev.dma, rsa_keys[2048], 5)
        t0 = time.monotonic()
        for i in range(4):
            assert sd.submit_rsa_dec(dev, op, i) == SUCCESS
        times = []
        while len(dev.done) < 4:
            if dev.poll() == SUCCESS:
                times.append(time.monotonic() - t0)
            time.sleep(0.001)
        assert times[0] >= 0.055
        assert 0.115 <= times[-1] < 1.0


# ---------------------------------------------------------------- replay mode


def test_replay_mode_returns_correct_answers(rsa_keys):
    """compute_mode=1 computes each distinct request once and replays the correct result afterwards."""
    key = rsa_keys[2048]
    with sd.device(compute_mode=1) as dev:
        sigs = []
        for msg in (b"a", b"a", b"b", b"a"):
            sigs.append(rsa_sign_on_device(dev, key, msg))
        for msg, sig in zip((b"a", b"a", b"b", b"a"), sigs):
            key.public_key().verify(sig, msg, padding.PKCS1v15(), hashes.SHA256())
        assert sim_get("replay.misses") == 2 and sim_get("replay.hits") == 2
        assert sim_get("computed") == 2 and sim_get("replay.entries") == 2
        ekey, digest, op = sign_op(dev, k=777)
        for _ in range(2):  # the second is submitted after the first was computed
            assert sd.submit_sign(dev, op) == SUCCESS
            dev.poll_until(len(dev.done) + 1)
        ec_check(ekey, "P-256", digest, b2i(sd.fb_bytes(op.outs[0])), b2i(sd.fb_bytes(op.outs[1])))
        assert sim_get("replay.hits") == 3


def test_replay_hit_is_cheap(rsa_keys):
    """A replay hit at zero latency costs a few microseconds in the device (submit + poll from Python)."""
    with sd.device(compute_mode=1, ring_depth=4096) as dev:
        op = sd.rsa_rep2(dev.dma, rsa_keys[2048], 5)
        assert sd.submit_rsa_dec(dev, op) == SUCCESS
        dev.poll_until(1)
        qat, h, cb, od, out = dev.qat, dev.h, dev.rsa_cb, op.opdata, op.outs[0]
        noop = ffi.callback("CpaCyGenFlatBufCbFunc", lambda *a: None)
        N = 3000
        t0 = time.perf_counter()
        for _ in range(N):
            qat.cpaCyRsaDecrypt(h, noop, ffi.NULL, od, out)
        t1 = time.perf_counter()
        while qat.icp_sal_CyPollInstance(h, 0) == SUCCESS:
            pass
        del cb
        per_submit = (t1 - t0) / N
        assert sim_get("replay.hits") == N and sim_get("completed.success") == N + 1
        assert per_submit < 50e-6, per_submit  # dominated by cffi ABI-mode call overhead


# ---------------------------------------------------------------- faults


@pytest.mark.parametrize(
    "kind,status",
    [
        ("submit_retry", RETRY),
        ("submit_fail", FAIL),
        ("submit_restarting", RESTARTING),
        ("submit_unsupported", UNSUPPORTED),
    ],
)
def test_submit_faults_scripted(rsa_keys, kind, status):
    """fault.<submit kind>.next=1: the next submit returns that status and queues nothing; the one after succeeds."""
    with sd.device(**{f"fault__{kind}__next": 1}) as dev:
        op = sd.rsa_rep2(dev.dma, rsa_keys[2048], 5)
        assert sd.submit_rsa_dec(dev, op) == status
        assert sim_get("submitted") == 0 and sim_get("inflight") == 0
        assert sd.submit_rsa_dec(dev, op) == SUCCESS
        dev.poll_until(1)
        assert sim_get(f"faults.{kind}") == 1
        assert sim_get("retry_returned") == (1 if kind == "submit_retry" else 0)


def test_callback_fail_fault(rsa_keys):
    """fault.cb_fail: the request is accepted but its callback carries FAIL and no output is written."""
    with sd.device(fault__cb_fail__next=1) as dev:
        op = sd.rsa_rep2(dev.dma, rsa_keys[2048], 5)
        assert sd.submit_rsa_dec(dev, op) == SUCCESS
        dev.poll_until(1)
        assert dev.done[0].status == FAIL and sd.fb_bytes(op.outs[0]) == b"\xaa" * 256
        assert sim_get("completed.fail") == 1


def test_ecdsa_multiply_status_false_fault():
    """fault.ecdsa_mult_false: SUCCESS with multiplyStatus FALSE (caller must retry with a new k)."""
    with sd.device(fault__ecdsa_mult_false__next=1) as dev:
        _, _, op = sign_op(dev)
        assert sd.submit_sign(dev, op) == SUCCESS
        dev.poll_until(1)
        assert (dev.done[0].status, dev.done[0].flag) == (SUCCESS, 0)
        assert sim_get("completed.multiply_false") == 1


def test_rsa_bitflip_fault(rsa_keys):
    """fault.rsa_bitflip: SUCCESS with a result one bit away from the right one (the fault attack)."""
    key = rsa_keys[2048]
    msg = emsa_pkcs1_sha256(b"flip", 256)
    with sd.device(fault__rsa_bitflip__next=1) as dev:
        op = sd.rsa_rep2(dev.dma, key, msg)
        assert sd.submit_rsa_dec(dev, op) == SUCCESS
        dev.poll_until(1)
        assert dev.done[0].status == SUCCESS
        bad = sd.fb_bytes(op.outs[0])
        with pytest.raises(InvalidSignature):
            key.public_key().verify(bad, b"flip", padding.PKCS1v15(), hashes.SHA256())
        good = rsa_sign_on_device(dev, key, b"flip")
        assert (b2i(good) ^ b2i(bad)).bit_count() == 1


@pytest.mark.parametrize("curve", ["P-256", "P-521"])
def test_ecdsa_bitflip_fault(curve):
    """fault.ecdsa_bitflip: SUCCESS, multiplyStatus TRUE, (r, s) one bit away from the right pair for that k, neither zero, and it does not verify."""
    k = 0xC0FFEE
    with sd.device(fault__ecdsa_bitflip__next=1) as dev:
        key, digest, bad = sign_op(dev, curve, k=k)
        d = key.private_numbers().private_value
        good = sd.ecdsa_sign(dev.dma, curve, d, k, digest)
        assert sd.submit_sign(dev, bad, 0) == SUCCESS
        dev.poll_until(1)
        assert sd.submit_sign(dev, good, 1) == SUCCESS
        dev.poll_until(2)
        assert [(c.status, c.flag) for c in dev.done] == [(SUCCESS, 1), (SUCCESS, 1)]
        (r1, s1), (r2, s2) = ((b2i(sd.fb_bytes(o.outs[0])), b2i(sd.fb_bytes(o.outs[1]))) for o in (bad, good))
        ec_check(key, curve, digest, r2, s2)
        assert r1 and s1 and (r1 ^ r2).bit_count() + (s1 ^ s2).bit_count() == 1
        with pytest.raises(InvalidSignature):
            ec_check(key, curve, digest, r1, s1)
        assert sim_get("faults.ecdsa_bitflip") == 1


def test_lost_response_fault(rsa_keys):
    """fault.lost: the request is accepted, never completes, and holds its ring slot, across stop and start too."""
    with sd.device(fault__lost__next=1, ring_depth=3) as dev:
        op = sd.rsa_rep2(dev.dma, rsa_keys[2048], 5)
        assert sd.submit_rsa_dec(dev, op, 1) == SUCCESS
        assert sd.submit_rsa_dec(dev, op, 2) == SUCCESS
        dev.poll_until(1)
        time.sleep(0.05)
        assert dev.poll() == RETRY and [c.tag for c in dev.done] == [2]
        assert sim_get("inflight") == 1
        assert dev.qat.cpaCyStopInstance(dev.h) == SUCCESS
        assert dev.qat.cpaCyStartInstance(dev.h) == SUCCESS
        assert sim_get("inflight") == 1 and sim_get("completed.discarded") == 0
        # The restarted instance did not get the slot back: depth 3 admits 2.
        assert sd.submit_rsa_dec(dev, op, 3) == SUCCESS
        assert sd.submit_rsa_dec(dev, op, 4) == RETRY
        dev.poll_until(2)


def test_poll_fail_fault(rsa_keys):
    """fault.poll_fail: the next poll returns FAIL and delivers nothing; later polls deliver."""
    with sd.device(fault__poll_fail__next=1) as dev:
        op = sd.rsa_rep2(dev.dma, rsa_keys[2048], 5)
        assert sd.submit_rsa_dec(dev, op) == SUCCESS
        while sim_get("computed") < 1:
            time.sleep(0.001)
        assert dev.poll() == FAIL and dev.done == []
        dev.poll_until(1)


def test_restart_fault_notifies_and_fails_pending(rsa_keys):
    """fault.restart: RESTARTING then RESTARTED notifications; submits RESTARTING meanwhile; pending work completes FAIL."""
    events = []

    @ffi.callback("CpaCyInstanceNotificationCbFunc")
    def notify(h, tag, ev):
        events.append((int(ffi.cast("uintptr_t", tag)), int(ev), time.monotonic()))

    with sd.device(latency_ns=40_000_000, restart_ms=150) as dev:
        assert dev.qat.cpaCyInstanceSetNotificationCb(dev.h, notify, sd.tag(77)) == SUCCESS
        op = sd.rsa_rep2(dev.dma, rsa_keys[2048], 5)
        assert sd.submit_rsa_dec(dev, op, 1) == SUCCESS  # pending across the reset
        sim_set(fault__restart__next=1)
        assert sd.submit_rsa_dec(dev, op, 2) == RESTARTING
        assert sd.submit_rsa_dec(dev, op, 3) == RESTARTING
        assert refused("restarting") == 1
        dev.poll_until(1)
        assert dev.done[0].tag == 1 and dev.done[0].status == FAIL
        dev.events_until(lambda: len(events) >= 2)
        assert [(t, e) for t, e, _ in events] == [(77, 0), (77, 1)]
        assert events[1][2] - events[0][2] >= 0.1
        assert sd.submit_rsa_dec(dev, op, 4) == SUCCESS
        dev.poll_until(2)
        assert dev.done[1].status == SUCCESS
        assert sim_get("notify.restarting") == 1 and sim_get("notify.restarted") == 1


def test_restart_via_control_api():
    """qatpy_sim_restart_instance starts a reset cycle on a live instance, -1 otherwise."""
    with sd.device(restart_ms=20) as dev:
        assert dev.qat.qatpy_sim_restart_instance(0) == 0
        assert dev.qat.qatpy_sim_restart_instance(0) == -1  # already restarting
        assert dev.qat.qatpy_sim_restart_instance(5) == -1
        dev.events_until(lambda: sim_get("notify.restarted") >= 1)


def test_notifications_come_only_from_poll_device_events():
    """Like qatlib's, RESTARTING/RESTARTED reach the callback only inside icp_sal_poll_device_events, on the calling thread."""
    events = []

    @ffi.callback("CpaCyInstanceNotificationCbFunc")
    def notify(h, tag, ev):
        events.append((int(ev), threading.get_ident()))

    with sd.device(restart_ms=1) as dev:
        assert dev.qat.cpaCyInstanceSetNotificationCb(dev.h, notify, ffi.NULL) == SUCCESS
        assert dev.qat.qatpy_sim_restart_instance(0) == 0
        time.sleep(0.05)
        assert events == [] and dev.poll() == RESTARTING
        assert dev.events() == SUCCESS
        assert events == [(0, threading.get_ident())]
        dev.events_until(lambda: len(events) == 2)
        assert events[1] == (1, threading.get_ident())
        assert sim_get("device_events.polls") >= 2


def test_poll_device_events_is_not_reentrant():
    """icp_sal_poll_device_events called from a notification callback (inside itself) is refused with FAIL."""
    inner = []

    with sd.device(restart_ms=1) as dev:

        @ffi.callback("CpaCyInstanceNotificationCbFunc")
        def notify(h, tag, ev):
            inner.append(int(dev.qat.icp_sal_poll_device_events()))

        assert dev.qat.cpaCyInstanceSetNotificationCb(dev.h, notify, ffi.NULL) == SUCCESS
        assert dev.qat.qatpy_sim_restart_instance(0) == 0
        assert dev.events() == SUCCESS
        assert inner == [FAIL] and refused("events_reentrant") == 1
        dev.events_until(lambda: len(inner) == 2)
        assert inner == [FAIL, FAIL]


def test_heartbeat_restarts_a_device_with_a_lost_answer(rsa_keys):
    """A heartbeat check finds a request unanswered past heartbeat_overdue_ms and restarts the device: RESTARTING, the lost request completes FAIL at the next poll (its slot freed), then RESTARTED."""
    events = []

    @ffi.callback("CpaCyInstanceNotificationCbFunc")
    def notify(h, tag, ev):
        events.append(int(ev))

    with sd.device(fault__lost__next=1, restart_ms=1, heartbeat_overdue_ms=600_000, ring_depth=2) as dev:
        assert dev.qat.cpaCyInstanceSetNotificationCb(dev.h, notify, ffi.NULL) == SUCCESS
        op = sd.rsa_rep2(dev.dma, rsa_keys[2048], 5)
        assert sd.submit_rsa_dec(dev, op, 1) == SUCCESS  # lost
        assert sd.submit_rsa_dec(dev, op, 2) == RETRY  # the ring (depth 2) is full
        assert dev.qat.icp_sal_check_device(0) == SUCCESS  # not overdue yet
        assert dev.qat.icp_sal_check_device(3) == FAIL  # no such package
        sim_set(heartbeat_overdue_ms=1)
        time.sleep(0.005)
        assert dev.qat.icp_sal_check_device(0) == FAIL
        assert sim_get("heartbeat.failures") == 1 and sim_get("restarts") == 1
        assert sd.submit_rsa_dec(dev, op, 3) == RESTARTING
        assert dev.poll() == RESTARTING and dev.done == []  # not before the event
        assert dev.events() == SUCCESS and events == [0]
        dev.poll_until(1)
        assert (dev.done[0].tag, dev.done[0].status) == (1, FAIL)
        assert sim_get("inflight") == 0 and sim_get("completed.fail") == 1
        dev.events_until(lambda: events == [0, 1])
        assert sd.submit_rsa_dec(dev, op, 4) == SUCCESS
        dev.poll_until(2)
        assert dev.done[1].status == SUCCESS
        assert sim_get("heartbeat.checks") == 3


def test_restarted_waits_until_failures_are_polled(rsa_keys):
    """In the error state RESTARTED is held back until every request that was in flight has been delivered (FAIL)."""
    with sd.device(latency_ns=5_000_000_000, restart_ms=1) as dev:
        op = sd.rsa_rep2(dev.dma, rsa_keys[2048], 5)
        for i in range(3):
            assert sd.submit_rsa_dec(dev, op, i) == SUCCESS
        while sim_get("computed") < 3:
            time.sleep(0.001)
        assert dev.qat.qatpy_sim_restart_instance(0) == 0
        assert dev.events() == SUCCESS and sim_get("notify.restarting") == 1
        time.sleep(0.02)
        assert dev.events() == SUCCESS and sim_get("notify.restarted") == 0  # three still owed
        dev.poll_until(3)  # long before their 5 s latency: the error state fails them
        assert [c.status for c in dev.done] == [FAIL, FAIL, FAIL]
        assert dev.events() == SUCCESS and sim_get("notify.restarted") == 1


def test_heartbeat_unsupported():
    """heartbeat=0 models a library without the heartbeat: both checks return UNSUPPORTED and nothing restarts."""
    with sd.device(heartbeat=0, fault__lost__next=1, heartbeat_overdue_ms=1) as dev:
        op = sd.ecdsa_sign(dev.dma, "P-256", 7, 11, bytes(32))
        assert sd.submit_sign(dev, op, 1) == SUCCESS
        time.sleep(0.005)
        assert dev.qat.icp_sal_check_device(0) == UNSUPPORTED
        assert dev.qat.icp_sal_check_all_devices() == UNSUPPORTED
        assert sim_get("heartbeat.unsupported") == 2 and sim_get("restarts") == 0
        assert sim_get("inflight") == 1


def test_heartbeat_checks_each_package(rsa_keys):
    """Instances on another package (NUMA node) are not reset by a failed check of one package; check_all_devices covers every package."""
    with sd.device(instances=2, nodes=2, heartbeat_overdue_ms=1) as dev:
        op = sd.rsa_rep2(dev.dma, rsa_keys[2048], 5)
        sim_set(fault__lost__next=1)
        assert sd.submit_rsa_dec(dev, op, 1, h=dev.handles[1]) == SUCCESS  # package 1: lost
        time.sleep(0.005)
        assert dev.qat.icp_sal_check_device(0) == SUCCESS
        assert dev.qat.icp_sal_check_all_devices() == FAIL
        assert sim_get("restarts") == 1
        assert sd.submit_rsa_dec(dev, op, 3, h=dev.handles[1]) == RESTARTING
        assert dev.qat.icp_sal_check_all_devices() == SUCCESS  # package 1 is already being reset
        assert sd.submit_rsa_dec(dev, op, 2, h=dev.handles[0]) == SUCCESS
        dev.poll_until(1, h=dev.handles[0])
        assert (dev.done[0].tag, dev.done[0].status) == (2, SUCCESS)


def test_heartbeat_before_start_fails():
    """Without a started device there is no package to check: FAIL."""
    qat, _ = sd.load()
    assert qat.icp_sal_check_device(0) == FAIL
    assert qat.icp_sal_check_all_devices() == FAIL
    assert qat.icp_sal_poll_device_events() == SUCCESS


def test_probability_faults_with_seed(rsa_keys):
    """fault.cb_fail.ppm with a seed fails about that share of requests, and the counter matches."""
    with sd.device(compute_mode=1, seed=1234, fault__cb_fail__ppm=300_000, ring_depth=1024) as dev:
        op = sd.rsa_rep2(dev.dma, rsa_keys[2048], 5)
        for i in range(400):
            assert sd.submit_rsa_dec(dev, op, i) == SUCCESS
        dev.poll_until(400)
        fails = sum(c.status == FAIL for c in dev.done)
        assert 70 < fails < 170
        assert sim_get("faults.cb_fail") == fails == sim_get("completed.fail")


# ---------------------------------------------------------------- control API


def test_control_api_names_and_errors():
    """Every listed name is readable; unknown names and out-of-range values are -1."""
    qat, _ = sd.load()
    names = []
    i = 0
    while (p := qat.qatpy_sim_name(i)) != ffi.NULL:
        names.append(ffi.string(p).decode())
        i += 1
    assert len(names) == len(set(names)) > 60
    for n in names:
        sim_get(n)
    for needed in (
        "instances",
        "ring_depth",
        "latency_ns",
        "engines",
        "compute_mode",
        "workers",
        "legacy_sizes",
        "sync_timeout_ms",
        "seed",
        "fault.lost.ppm",
        "fault.lost.next",
        "submitted",
        "completed.success",
        "inflight",
        "inflight_max",
        "retry_returned",
        "refused.dma",
        "refused.events_reentrant",
        "heartbeat",
        "heartbeat_overdue_ms",
        "heartbeat.checks",
        "heartbeat.failures",
        "heartbeat.unsupported",
        "device_events.polls",
        "mem.live_allocs",
        "mem.live_bytes",
        "mem.key_freed_unwiped",
        "faults.lost",
    ):
        assert needed in names
    out = ffi.new("long long *")
    assert qat.qatpy_sim_get(b"nope", out) == -1
    assert qat.qatpy_sim_set(b"nope", 1) == -1
    assert qat.qatpy_sim_set(b"compute_mode", 2) == -1
    assert qat.qatpy_sim_set(b"fault.lost.ppm", 1_000_001) == -1
    assert qat.qatpy_sim_set(b"submitted", 1) == -1  # counters are read-only
    assert ffi.string(qat.qatpy_sim_version()).startswith(b"qatpy-sim ")


def test_knobs_from_environment():
    """QATPY_SIM_<KNOB> environment variables set defaults at first use (and after reset)."""
    code = (
        f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); import simdev as sd\n"
        "print(sd.sim_get('ring_depth'), sd.sim_get('fault.cb_fail.next'))\n"
        "sd.load()[0].qatpy_sim_reset(); print(sd.sim_get('ring_depth'))\n"
    )
    env = dict(os.environ, QATPY_SIM_RING_DEPTH="9", QATPY_SIM_FAULT_CB_FAIL_NEXT="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["9", "3", "9"]


def test_counters_track_a_mixed_run(rsa_keys):
    """submitted, completed.*, inflight(_max), refused.* and mem.* agree with what happened."""
    with sd.device(compute_mode=1) as dev:
        op = sd.rsa_rep2(dev.dma, rsa_keys[2048], 5)
        for i in range(3):
            assert sd.submit_rsa_dec(dev, op, i) == SUCCESS
        bad = sd.rsa_rep2(dev.dma, rsa_keys[2048], 5, out_len=8)
        assert sd.submit_rsa_dec(dev, bad) == INVALID_PARAM
        assert sim_get("inflight") == 3 or sim_get("inflight_max") == 3
        dev.poll_until(3)
        assert sim_get("submitted") == 3 and sim_get("completed.success") == 3
        assert sim_get("inflight") == 0 and sim_get("inflight_max") == 3
        assert refused("output_short") == 1
        assert sim_get("mem.live_allocs") == len(dev.dma.blocks)
