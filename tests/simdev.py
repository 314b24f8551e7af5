"""Drive qatpy's simulated QAT device directly, through cffi's ABI mode.

The cdef is read from our own headers (csrc/qat_types.h, csrc/qat_api.h,
csrc/sim/qatpy_sim.h): no declaration is duplicated here.  The libraries are
loaded the way the shim loads the real ones: libusdm.so.0 first with
RTLD_GLOBAL, then libqat.so.4.  Their directory is $QATPY_SIM_DIR if set,
else qatpy/_sim beside this checkout, else the installed package's _sim.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import cffi
from abi_facts import NIST_CURVES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADERS = (
    os.path.join(REPO, "csrc", "qat_types.h"),
    os.path.join(REPO, "csrc", "qat_api.h"),
    os.path.join(REPO, "csrc", "sim", "qatpy_sim.h"),
)

SUCCESS, FAIL, RETRY, RESOURCE, INVALID_PARAM, FATAL, UNSUPPORTED, RESTARTING = (
    0,
    -1,
    -2,
    -3,
    -4,
    -5,
    -6,
    -7,
)
CRYPTO, CRYPTO_ASYM = 0, 5
NOTIFY_NONE, NOTIFY_BY_EVENT = 1, 2

# The NIST curve parameters as the device takes them: big-endian hex, each
# `len` bytes wide, q the field prime.  Derived from the one table,
# tests/abi_facts.py (not a copy of it).
CURVES: dict[str, dict[str, Any]] = {
    name: {
        "len": c["len"],
        **{
            k: f"{c[src]:0{2 * c['len']}x}"
            for k, src in (("q", "p"), ("a", "a"), ("b", "b"), ("n", "n"), ("xg", "xg"), ("yg", "yg"))
        },
    }
    for name, c in NIST_CURVES.items()
}


def _cdef_source() -> str:
    parts = []
    for path in HEADERS:
        with open(path, encoding="utf-8") as f:
            parts.append(f.read())
    return "\n".join(parts)


ffi = cffi.FFI()
ffi.cdef(_cdef_source())


def lib_dir() -> str:
    env = os.environ.get("QATPY_SIM_DIR")
    if env:
        return env
    local = os.path.join(REPO, "qatpy", "_sim")
    if os.path.exists(os.path.join(local, "libqat.so.4")):
        return local
    spec = importlib.util.find_spec("qatpy")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            cand = os.path.join(loc, "_sim")
            if os.path.exists(os.path.join(cand, "libqat.so.4")):
                return cand
    raise RuntimeError("simulated device not built: run python csrc/sim/build.py")


_libs: tuple[Any, Any] | None = None
_lock = threading.Lock()


def load() -> tuple[Any, Any]:
    """(libqat, libusdm), loaded once per process."""
    global _libs
    with _lock:
        if _libs is None:
            d = lib_dir()
            usdm = ffi.dlopen(os.path.join(d, "libusdm.so.0"), ffi.RTLD_NOW | ffi.RTLD_GLOBAL)
            qat = ffi.dlopen(os.path.join(d, "libqat.so.4"), ffi.RTLD_NOW)
            _libs = (qat, usdm)
        return _libs


def sim_set(**knobs: int) -> None:
    """Set knobs; keyword names use '__' for '.' (fault__lost__next=1)."""
    qat, _ = load()
    for k, v in knobs.items():
        name = k.replace("__", ".")
        if qat.qatpy_sim_set(name.encode(), int(v)) != 0:
            raise ValueError(f"sim knob {name}={v} refused")


def sim_get(name: str) -> int:
    qat, _ = load()
    out = ffi.new("long long *")
    if qat.qatpy_sim_get(name.encode(), out) != 0:
        raise KeyError(name)
    return int(out[0])


def i2b(x: int, length: int) -> bytes:
    return x.to_bytes(length, "big")


def b2i(b: bytes) -> int:
    return int.from_bytes(b, "big")


class Dma:
    """qaeMemAllocNUMA blocks owned by one test; freed (wiped) on close."""

    def __init__(self) -> None:
        self.qat, self.usdm = load()
        self.blocks: list[Any] = []

    def alloc(self, size: int, align: int = 64) -> Any:
        p = self.usdm.qaeMemAllocNUMA(size, 0, align)
        assert p != ffi.NULL
        self.blocks.append(p)
        return p

    def buf(self, data: bytes | int, length: int | None = None) -> Any:
        """A CpaFlatBuffer* whose pData lives in a fresh DMA block."""
        if isinstance(data, int):
            assert length is not None
            data = i2b(data, length)
        fb = ffi.new("CpaFlatBuffer *")
        n = max(len(data), 1)
        p = self.alloc(n)
        ffi.memmove(p, data, len(data))
        fb.dataLenInBytes = len(data)
        fb.pData = ffi.cast("Cpa8U *", p)
        return fb

    def out(self, length: int) -> Any:
        return self.buf(b"\xaa" * length)

    def free(self, p: Any, wipe: bool = True) -> None:
        addr = int(ffi.cast("uintptr_t", p))
        self.blocks = [b for b in self.blocks if int(ffi.cast("uintptr_t", b)) != addr]
        pp = ffi.new("void **", ffi.cast("void *", p))
        (self.usdm.qaeMemFreeNUMA if wipe else self.usdm.qaeMemFreeNonZeroNUMA)(pp)
        assert pp[0] == ffi.NULL

    def close(self) -> None:
        for p in list(self.blocks):
            self.free(p)


def fb_bytes(fb: Any) -> bytes:
    return bytes(ffi.buffer(fb.pData, fb.dataLenInBytes))


def set_fb(dst: Any, src: Any) -> None:
    """Copy a CpaFlatBuffer header (length, pointer) into a struct field."""
    dst.dataLenInBytes = src.dataLenInBytes
    dst.pData = src.pData


@dataclass
class Completion:
    tag: int
    status: int
    opdata: Any
    thread: int
    in_poll: bool
    flag: int | None = None
    out: list[Any] = field(default_factory=list)


class Device:
    """A started simulated device with its instances started and translated.

    Callbacks append Completion records; `poll_until` drives the polling
    from the calling thread, so callbacks run on it (and only inside poll).
    """

    def __init__(self, **knobs: int) -> None:
        self.qat, self.usdm = load()
        assert self.qat.qatpy_sim_reset() == 0, "device left started by an earlier test"
        sim_set(**knobs)
        self.dma = Dma()
        self.done: list[Completion] = []
        self._in_poll = threading.local()
        self.handles: list[Any] = []
        self.keep: list[Any] = []
        st = self.qat.icp_sal_userStart(b"SSL")
        assert st == SUCCESS, st
        n = ffi.new("Cpa16U *")
        assert self.qat.cpaGetNumInstances(CRYPTO_ASYM, n) == SUCCESS
        if n[0]:
            arr = ffi.new("CpaInstanceHandle[]", n[0])
            assert self.qat.cpaGetInstances(CRYPTO_ASYM, n[0], arr) == SUCCESS
            self.handles = [arr[i] for i in range(n[0])]
        self.v2p = ffi.cast("CpaVirtualToPhysical", self.usdm.qaeVirtToPhysNUMA)
        for h in self.handles:
            assert self.qat.cpaCyStartInstance(h) == SUCCESS
            assert self.qat.cpaCySetAddressTranslation(h, self.v2p) == SUCCESS
        self.rsa_cb = ffi.callback("CpaCyGenFlatBufCbFunc", self._rsa_cb)
        self.sign_cb = ffi.callback("CpaCyEcdsaSignRSCbFunc", self._sign_cb)
        self.verify_cb = ffi.callback("CpaCyEcdsaVerifyCbFunc", self._verify_cb)

    @property
    def h(self) -> Any:
        return self.handles[0]

    # callbacks: record, never raise into C
    def _record(self, tag: Any, status: int, opdata: Any, flag: int | None, out: list[Any]) -> None:
        self.done.append(
            Completion(
                tag=int(ffi.cast("uintptr_t", tag)),
                status=status,
                opdata=opdata,
                thread=threading.get_ident(),
                in_poll=getattr(self._in_poll, "v", False),
                flag=flag,
                out=out,
            )
        )

    def _rsa_cb(self, tag: Any, status: int, opdata: Any, out: Any) -> None:
        self._record(tag, status, opdata, None, [out])

    def _sign_cb(self, tag: Any, status: int, opdata: Any, mult: int, r: Any, s: Any) -> None:
        self._record(tag, status, opdata, int(mult), [r, s])

    def _verify_cb(self, tag: Any, status: int, opdata: Any, ok: int) -> None:
        self._record(tag, status, opdata, int(ok), [])

    def poll(self, h: Any = None, quota: int = 0) -> int:
        self._in_poll.v = True
        try:
            return int(self.qat.icp_sal_CyPollInstance(self.h if h is None else h, quota))
        finally:
            self._in_poll.v = False

    def poll_until(self, count: int, timeout: float = 10.0, h: Any = None) -> None:
        deadline = time.monotonic() + timeout
        while len(self.done) < count:
            if self.poll(h) == RETRY:
                time.sleep(0.0002)
            assert time.monotonic() < deadline, f"only {len(self.done)}/{count} completions"

    def events(self) -> int:
        """icp_sal_poll_device_events: notifications run on this thread."""
        return int(self.qat.icp_sal_poll_device_events())

    def events_until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        """Poll the device events (and the first instance) until `done()`."""
        deadline = time.monotonic() + timeout
        while not done():
            assert self.events() == SUCCESS
            self.poll()
            time.sleep(0.001)
            assert time.monotonic() < deadline, "device events did not arrive"

    def close(self) -> None:
        for h in self.handles:
            self.qat.cpaCyStopInstance(h)
        assert self.qat.icp_sal_userStop() == SUCCESS
        self.dma.close()


@contextlib.contextmanager
def device(**knobs: int) -> Iterator[Device]:
    dev = Device(**knobs)
    try:
        yield dev
    finally:
        dev.close()
        dev.qat.qatpy_sim_reset()


def tag(i: int) -> Any:
    return ffi.cast("void *", i)


# ---- op-data builders (all pData in DMA memory; structs in ordinary memory) ----


@dataclass
class Op:
    """Everything one request needs kept alive until its callback."""

    opdata: Any
    outs: list[Any]
    keep: list[Any]
    status: Any = None


def rsa_rep2(dma: Dma, priv: Any, msg: int, out_len: int | None = None) -> Op:
    nums = priv.private_numbers()
    n = nums.public_numbers.n
    k = (n.bit_length() + 7) // 8
    half = k // 2
    key = ffi.new("CpaCyRsaPrivateKey *")
    key.version = 1
    key.privateKeyRepType = 2
    r2 = key.privateKeyRep2
    bufs = [
        dma.buf(nums.p, half),
        dma.buf(nums.q, half),
        dma.buf(nums.dmp1, half),
        dma.buf(nums.dmq1, half),
        dma.buf(nums.iqmp, half),
    ]
    for dst, src in zip((r2.prime1P, r2.prime2Q, r2.exponent1Dp, r2.exponent2Dq, r2.coefficientQInv), bufs):
        set_fb(dst, src)
    op = ffi.new("CpaCyRsaDecryptOpData *")
    op.pRecipientPrivateKey = key
    inp = dma.buf(msg, k)
    set_fb(op.inputData, inp)
    out = dma.out(out_len or k)
    return Op(op, [out], [key, inp, *bufs])


def rsa_rep1(dma: Dma, priv: Any, msg: int) -> Op:
    nums = priv.private_numbers()
    n = nums.public_numbers.n
    k = (n.bit_length() + 7) // 8
    key = ffi.new("CpaCyRsaPrivateKey *")
    key.version = 1
    key.privateKeyRepType = 1
    nb, db = dma.buf(n, k), dma.buf(nums.d, k)
    set_fb(key.privateKeyRep1.modulusN, nb)
    set_fb(key.privateKeyRep1.privateExponentD, db)
    op = ffi.new("CpaCyRsaDecryptOpData *")
    op.pRecipientPrivateKey = key
    inp = dma.buf(msg, k)
    set_fb(op.inputData, inp)
    out = dma.out(k)
    return Op(op, [out], [key, nb, db, inp])


def rsa_pub(dma: Dma, pub: Any, msg: int) -> Op:
    nums = pub.public_numbers()
    k = (nums.n.bit_length() + 7) // 8
    key = ffi.new("CpaCyRsaPublicKey *")
    nb, eb = dma.buf(nums.n, k), dma.buf(nums.e, 3)
    set_fb(key.modulusN, nb)
    set_fb(key.publicExponentE, eb)
    op = ffi.new("CpaCyRsaEncryptOpData *")
    op.pPublicKey = key
    inp = dma.buf(msg, k)
    set_fb(op.inputData, inp)
    out = dma.out(k)
    return Op(op, [out], [key, nb, eb, inp])


def _curve_bufs(dma: Dma, op: Any, curve: str) -> list[Any]:
    c = CURVES[curve]
    keep = []
    for name in ("xg", "yg", "n", "q", "a", "b"):
        fb = dma.buf(bytes.fromhex(c[name]))
        set_fb(getattr(op, name), fb)
        keep.append(fb)
    return keep


def ecdsa_sign(dma: Dma, curve: str, d: int, k: int, m: bytes, out_len: int | None = None) -> Op:
    c = CURVES[curve]
    op = ffi.new("CpaCyEcdsaSignRSOpData *")
    keep = _curve_bufs(dma, op, curve)
    for name, val in (("k", i2b(k, c["len"])), ("d", i2b(d, c["len"])), ("m", m)):
        fb = dma.buf(val)
        set_fb(getattr(op, name), fb)
        keep.append(fb)
    op.fieldType = 1
    r, s = dma.out(out_len or c["len"]), dma.out(out_len or c["len"])
    status = ffi.new("CpaBoolean *")
    return Op(op, [r, s], keep, status)


def ecdsa_verify(dma: Dma, curve: str, pub: tuple[int, int], m: bytes, r: int, s: int) -> Op:
    c = CURVES[curve]
    op = ffi.new("CpaCyEcdsaVerifyOpData *")
    keep = _curve_bufs(dma, op, curve)
    L = c["len"]
    for name, val in (
        ("m", m),
        ("r", i2b(r, L)),
        ("s", i2b(s, L)),
        ("xp", i2b(pub[0], L)),
        ("yp", i2b(pub[1], L)),
    ):
        fb = dma.buf(val)
        set_fb(getattr(op, name), fb)
        keep.append(fb)
    op.fieldType = 1
    status = ffi.new("CpaBoolean *")
    return Op(op, [], keep, status)


def submit_rsa_dec(dev: Device, op: Op, t: int = 0, cb: Any = None, h: Any = None) -> int:
    return int(
        dev.qat.cpaCyRsaDecrypt(
            dev.h if h is None else h,
            dev.rsa_cb if cb is None else cb,
            tag(t),
            op.opdata,
            op.outs[0],
        )
    )


def submit_sign(dev: Device, op: Op, t: int = 0, cb: Any = None, h: Any = None) -> int:
    return int(
        dev.qat.cpaCyEcdsaSignRS(
            dev.h if h is None else h,
            dev.sign_cb if cb is None else cb,
            tag(t),
            op.opdata,
            op.status,
            op.outs[0],
            op.outs[1],
        )
    )


def run_in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(fn()))
    t.start()
    return t, result
