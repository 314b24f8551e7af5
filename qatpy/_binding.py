"""The raw layer: the only module that imports the compiled extension.

It speaks bytes, ints and small tuples; no cdata leaves this module.
Loading is lazy (first Engine that needs the device), once, under a lock.
"""

from __future__ import annotations

import os
import threading
from typing import Any

_lock = threading.Lock()
_mod: Any = None
_import_error: str | None = None

ERRBUF = 512
DRAIN_MAX = 256


def native() -> Any:
    """The compiled module (ffi, lib), imported on first use."""
    global _mod, _import_error
    with _lock:
        if _mod is None and _import_error is None:
            try:
                from . import _native  # type: ignore[attr-defined]

                _mod = _native
            except ImportError as exc:  # pragma: no cover - broken install
                _import_error = f"qatpy's native extension is not built ({exc}); reinstall qatpy with a C compiler"
        if _mod is None:
            raise ImportError(_import_error)
        return _mod


def sim_dir() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sim")


def sim_paths() -> tuple[str, str]:
    d = sim_dir()
    return os.path.join(d, "libqat.so.4"), os.path.join(d, "libusdm.so.0")


def _err(buf: Any) -> str:
    return native().ffi.string(buf).decode("utf-8", "replace")


def lib_load(libqat: str | None, libusdm: str | None) -> tuple[int, str]:
    m = native()
    err = m.ffi.new("char[]", ERRBUF)
    q = libqat.encode() if libqat else m.ffi.NULL
    u = libusdm.encode() if libusdm else m.ffi.NULL
    rc = m.lib.qatpy_lib_load(q, u, err, ERRBUF)
    return rc, _err(err)


def lib_is_sim() -> bool:
    return bool(native().lib.qatpy_lib_is_sim())


def sim_set(knob: str, value: int) -> int:
    """0 ok; -1 unknown knob or value out of range; -2 a start-time knob while
    the simulated device runs."""
    return int(native().lib.qatpy_sim_knob_set(knob.encode(), value))


def sim_get(name: str) -> int | None:
    m = native()
    out = m.ffi.new("long long *")
    if m.lib.qatpy_sim_knob_get(name.encode(), out) != 0:
        return None
    return int(out[0])


def sim_reset() -> bool:
    return native().lib.qatpy_sim_knob_reset() == 0


class Key:
    """A device-side key (DMA copies of the private parts), released once."""

    __slots__ = ("_ptr", "__weakref__")

    def __init__(self, ptr: Any) -> None:
        self._ptr = ptr

    def release(self) -> None:
        p, self._ptr = self._ptr, None
        if p is not None:
            native().lib.qatpy_key_release(p)


class Device:
    """The started device (process-wide)."""

    def __init__(self, ptr: Any) -> None:
        m = native()
        self._m = m
        self._lib = m.lib
        self._ptr = ptr
        self._stride = m.lib.QATPY_MAX_RESULT
        self._results = m.ffi.new("uint8_t[]", DRAIN_MAX * self._stride)
        self._results_buf = m.ffi.buffer(self._results)
        # Liveness: calls that may run on any thread (waits, drains, event
        # clears) register here, and free() waits for them to leave before
        # the device memory goes, so none of them touches a freed device.
        # A plain lock (its `with` is C code: two of these per drain and per
        # loop wake-up); free() waits on `_idle`, which the last user to
        # leave after free() began sets.
        self._live_lock = threading.Lock()
        self._users = 0
        self._idle = threading.Event()
        self._tags = m.ffi.new("uint64_t[]", DRAIN_MAX)
        self._sts = m.ffi.new("int32_t[]", DRAIN_MAX)
        self._cpas = m.ffi.new("int32_t[]", DRAIN_MAX)
        self._lens = m.ffi.new("uint32_t[]", DRAIN_MAX)
        self._insts = m.ffi.new("uint32_t[]", DRAIN_MAX)
        self._filled = m.ffi.new("size_t *")
        self._tls = threading.local()  # per-thread result buffers of sign_wait
        self._view: tuple[int, list[int], list[int], list[int], list[int], list[int]] | None = None
        # Completions published (read in place, no call) and taken by refill().
        self._seq_addr = m.lib.qatpy_completion_seq_addr(ptr)
        self._drained = 0

    @staticmethod
    def open(
        poll_mode: int, poll_delay_ns: int, max_instances: int, inflight: int, max_requests: int
    ) -> tuple[Device | None, int, str]:
        m = native()
        cfg = m.ffi.new("qatpy_config *")
        cfg.process_name = m.ffi.NULL
        cfg.poll_mode = poll_mode
        cfg.poll_delay_ns = poll_delay_ns
        cfg.max_instances = max_instances
        cfg.inflight_per_instance = inflight
        cfg.max_requests = max_requests
        out = m.ffi.new("qatpy_device **")
        err = m.ffi.new("char[]", ERRBUF)
        rc = m.lib.qatpy_device_open(cfg, out, err, ERRBUF)
        if rc != 0:
            return None, rc, _err(err)
        return Device(out[0]), 0, ""

    def rsa_key(
        self, engine: CEngine, n: bytes, e: bytes, p: bytes, q: bytes, dp: bytes, dq: bytes, qinv: bytes
    ) -> tuple[Key | None, str]:
        """A device copy of an RSA key whose requests take `engine`'s settings."""
        m = self._m
        err = m.ffi.new("char[]", ERRBUF)
        ptr = m.lib.qatpy_rsa_key_new(
            self._ptr,
            engine._ptr,
            n,
            len(n),
            e,
            len(e),
            p,
            len(p),
            q,
            len(q),
            dp,
            len(dp),
            dq,
            len(dq),
            qinv,
            len(qinv),
            err,
            ERRBUF,
        )
        if ptr == m.ffi.NULL:
            return None, _err(err)
        return Key(ptr), ""

    def ec_key(self, engine: CEngine, curve: int, d: bytes, x: bytes, y: bytes) -> tuple[Key | None, str]:
        """A device copy of an EC key (private scalar d, public point (x, y))
        whose requests take `engine`'s settings."""
        m = self._m
        err = m.ffi.new("char[]", ERRBUF)
        ptr = m.lib.qatpy_ec_key_new(self._ptr, engine._ptr, curve, d, len(d), x, len(x), y, len(y), err, ERRBUF)
        if ptr == m.ffi.NULL:
            return None, _err(err)
        return Key(ptr), ""

    def submit_rsa(self, key: Key, encoding: int, hash_id: int, data: bytes, tag: int) -> int:
        rc: int = self._lib.qatpy_submit_rsa(self._ptr, key._ptr, encoding, hash_id, data, len(data), tag)
        return rc

    def sign_wait(self, key: Key, op: int, encoding: int, hash_id: int, data: bytes) -> tuple[int, int, bytes]:
        """One operation, this thread waiting for it (GIL released): (status,
        cpa status, result bytes); a negative status is a QATPY_SUBMIT_* refusal."""
        bufs = getattr(self._tls, "bufs", None)
        if bufs is None:
            ffi = self._m.ffi
            bufs = self._tls.bufs = (ffi.new("uint8_t[]", self._stride), ffi.new("size_t *"), ffi.new("int32_t *"))
        out, out_len, cpa = bufs
        st = self._lib.qatpy_sign_wait(
            key._ptr, op, encoding, hash_id, data, len(data), out, self._stride, out_len, cpa
        )
        if st != 0:
            return int(st), int(cpa[0]), b""
        return 0, 0, self._m.ffi.buffer(out, out_len[0])[:]

    def submit_ecdsa(self, key: Key, digest: bytes, tag: int) -> int:
        rc: int = self._lib.qatpy_submit_ecdsa(self._ptr, key._ptr, digest, len(digest), tag)
        return rc

    def submit_driven(self, key: Key, op: int, encoding: int, hash_id: int, data: bytes, tag: int) -> int:
        """submit_rsa/submit_ecdsa for an event loop that polls for its
        request itself when it is alone (drive_fd, drive_tick)."""
        rc: int = self._lib.qatpy_submit_driven(self._ptr, key._ptr, op, encoding, hash_id, data, len(data), tag)
        return rc

    def submit_rsa_many(
        self, key: Key, encoding: int, hash_id: int, inputs: bytes, input_len: int, n: int, tag0: int
    ) -> tuple[int, int]:
        done = self._m.ffi.new("size_t *")
        rc = self._m.lib.qatpy_submit_rsa_many(self._ptr, key._ptr, encoding, hash_id, inputs, input_len, n, tag0, done)
        return int(rc), int(done[0])

    def submit_ecdsa_many(self, key: Key, digests: bytes, digest_len: int, n: int, tag0: int) -> tuple[int, int]:
        done = self._m.ffi.new("size_t *")
        rc = self._m.lib.qatpy_submit_ecdsa_many(self._ptr, key._ptr, digests, digest_len, n, tag0, done)
        return int(rc), int(done[0])

    def _enter(self) -> Any:
        """The device pointer, registered as in use until _leave(); None once
        free() has begun.  Callers use the pointer they got, never re-read
        self._ptr (free() clears it before waiting for them)."""
        with self._live_lock:
            if self._ptr is None:
                return None
            self._users += 1
            return self._ptr

    def _leave(self) -> None:
        with self._live_lock:
            self._users -= 1
            if self._users == 0 and self._ptr is None:
                self._idle.set()  # free() is waiting, or will find none inside

    # -- taking completions ---------------------------------------------------
    # The arrays hold one batch taken from the ring at a time; how many is
    # written by C (self._filled) during the call, so a caller interrupted
    # right after it (an exception from a signal handler) loses nothing:
    # the batch stays here until its taker has gone through all of it and
    # asks for the next one.  The caller serialises refill()/view() (qatpy's
    # Delivery holds its lock).

    def refill(self) -> bool:
        """Take the next batch from the ring into the arrays (replacing the
        previous one, which the caller has finished).  False once the device
        is gone."""
        ptr = self._enter()
        if ptr is None:
            return False
        try:
            self._view = None
            self._filled[0] = 0
            self._lib.qatpy_drain_arrays(
                ptr,
                self._tags,
                self._sts,
                self._cpas,
                self._lens,
                self._insts,
                self._results,
                self._stride,
                DRAIN_MAX,
                self._filled,
            )
            self._drained += self._filled[0]
            return True
        finally:
            self._leave()

    def view(self) -> tuple[int, list[int], list[int], list[int], list[int], list[int]]:
        """The current batch: (count, tags, statuses, cpa statuses, result lengths, instances)."""
        v = self._view
        if v is None:
            ffi = self._m.ffi
            n = int(self._filled[0])
            v = (
                n,
                ffi.unpack(self._tags, n),
                ffi.unpack(self._sts, n),
                ffi.unpack(self._cpas, n),
                ffi.unpack(self._lens, n),
                ffi.unpack(self._insts, n),
            )
            self._view = v
        return v

    def results_buffer(self) -> tuple[Any, int]:
        """(buffer, stride): entry i's result of the current batch is
        buffer[i * stride : i * stride + length] (sliced in the drain loop,
        without a call per result)."""
        return self._results_buf, self._stride

    def _guarded(self, default: Any, fn: Any, *args: Any) -> Any:
        """fn(device pointer, *args) while the device is alive, else `default`."""
        ptr = self._enter()
        if ptr is None:
            return default
        try:
            return fn(ptr, *args)
        finally:
            self._leave()

    def backlog(self) -> int:
        """Completions waiting to be drained, read without a C call (so
        without a GIL release).  Only while the device is certainly alive:
        the caller is inside a submit, which free() waits for."""
        n: int = self._seq_addr[0] - self._drained
        return n

    def seq(self) -> int:
        return int(self._guarded(0, self._m.lib.qatpy_completion_seq))

    def wait(self, seen: int, timeout_ns: int) -> int:
        return int(self._guarded(seen, self._m.lib.qatpy_wait, seen, timeout_ns))

    def wait_unclaimed(self, seen: int, grace_ns: int, timeout_ns: int) -> int:
        return int(self._guarded(seen, self._m.lib.qatpy_wait_unclaimed, seen, grace_ns, timeout_ns))

    def event_fd(self) -> int:
        return int(self._m.lib.qatpy_event_fd(self._ptr))

    def event_clear(self) -> None:
        self._guarded(None, self._m.lib.qatpy_event_clear)

    def drive_fd(self) -> int:
        return int(self._m.lib.qatpy_drive_fd(self._ptr))

    def drive_tick(self) -> int:
        """One look at the device for driven requests; > 0: answers went to
        the ring unannounced, and the caller drains at once."""
        ptr = self._enter()  # as _guarded, without its extra call: per loop wake-up
        if ptr is None:
            return -1
        try:
            return int(self._lib.qatpy_drive_tick(ptr))
        finally:
            self._leave()

    def poll(self) -> int:
        return int(self._guarded(0, self._m.lib.qatpy_poll))

    def set_poll(self, mode: int, delay_ns: int) -> int:
        return int(self._m.lib.qatpy_device_set_poll(self._ptr, mode, delay_ns))

    def stats(self) -> dict[str, int]:
        """The device's counters; {} once it is gone."""
        m = self._m
        s = m.ffi.new("qatpy_stats_t *")
        if not self._guarded(False, lambda ptr: m.lib.qatpy_stats(ptr, s) or True):
            return {}
        return {name: int(getattr(s, name)) for name, _ in m.ffi.typeof("qatpy_stats_t").fields}

    def instance_healthy(self, index: int) -> int:
        return int(self._guarded(0, self._m.lib.qatpy_instance_healthy, index))

    def shutdown(self, timeout_ns: int) -> None:
        self._m.lib.qatpy_device_shutdown(self._ptr, timeout_ns)

    def free(self, timeout: float = 10.0) -> bool:
        """Free the device once no waiter, drainer or poller is inside it
        (after shutdown their waits return promptly: the ring is closed).
        False, with the memory left allocated, if one is still inside after
        `timeout` seconds: never freed under a user."""
        with self._live_lock:
            p, self._ptr = self._ptr, None  # no one enters from here on
            inside = self._users > 0
        if inside and not self._idle.wait(timeout):
            return False
        if p is not None:
            self._m.lib.qatpy_device_free(p)
        return True


# -- engine objects and the ssl provider (csrc/shim/engine.c, csrc/provider) --


def limits() -> dict[str, int]:
    """The largest values the shim takes (QATPY_MAX_*), by lower-case name."""
    lib = native().lib
    pre = "QATPY_MAX_"
    names = [n for n in dir(lib) if n.startswith(pre) and n != "QATPY_MAX_RESULT"]
    return {n[len(pre) :].lower(): int(getattr(lib, n)) for n in names}


def fallback_code(policy: str) -> int:
    """The shim's QATPY_FALLBACK_* value for a policy name ("never", "on_error", ...)."""
    return int(getattr(native().lib, "QATPY_FALLBACK_" + policy.upper()))


class CEngine:
    """The shim's engine object: policy and the counters of signatures made
    in C (the ssl provider).  Python holds one reference, released once."""

    __slots__ = ("_ptr", "__weakref__")

    def __init__(self, ptr: Any) -> None:
        self._ptr = ptr

    @staticmethod
    def new(device: Device | None, fallback: int, verify: bool, verify_ecdsa: bool, deadline_ns: int) -> CEngine | None:
        m = native()
        cfg = m.ffi.new("qatpy_engine_config *")
        cfg.fallback = fallback
        cfg.verify = 1 if verify else 0
        cfg.verify_ecdsa = 1 if verify_ecdsa else 0
        cfg.deadline_ns = deadline_ns
        ptr = m.lib.qatpy_engine_new(device._ptr if device is not None else m.ffi.NULL, cfg)
        return None if ptr == m.ffi.NULL else CEngine(ptr)

    def close(self) -> None:
        if self._ptr is not None:
            native().lib.qatpy_engine_close(self._ptr)

    def sim_fault_scope(self, on: bool) -> None:
        """Simulator only: device keys made from now on scope its fault plans."""
        if self._ptr is not None:
            native().lib.qatpy_engine_sim_fault_scope(self._ptr, 1 if on else 0)

    def release(self) -> None:
        p, self._ptr = self._ptr, None
        if p is not None:
            native().lib.qatpy_engine_release(p)

    def stats(self) -> dict[str, int]:
        if self._ptr is None:
            return {}
        m = native()
        s = m.ffi.new("qatpy_engine_stats_t *")
        m.lib.qatpy_engine_stats(self._ptr, s)
        return {name: int(getattr(s, name)) for name, _ in m.ffi.typeof("qatpy_engine_stats_t").fields}


def provider_load(ssl_module: str | None, version: int) -> tuple[int, str]:
    m = native()
    err = m.ffi.new("char[]", ERRBUF)
    path = os.fsencode(ssl_module) if ssl_module else m.ffi.NULL
    rc = m.lib.qatpy_provider_load(path, version, err, ERRBUF)
    return int(rc), _err(err)


def provider_error_names() -> dict[int, str]:
    """QATPY_PV_ERR_* value -> its name without the prefix, from the compiled module."""
    lib = native().lib
    pre = "QATPY_PV_ERR_"
    return {int(getattr(lib, n)): n[len(pre) :] for n in dir(lib) if n.startswith(pre)}


class PKey:
    """A provider key (csrc/provider/keys.c), Python's reference released once."""

    __slots__ = ("_ptr", "__weakref__")

    def __init__(self, ptr: Any) -> None:
        self._ptr = ptr

    def register(self) -> str | None:
        """A fresh reference id for this key, or None (no memory / no randomness)."""
        m = native()
        size = m.lib.QATPY_PKEY_ID_SIZE
        buf = m.ffi.new("char[]", size)
        if m.lib.qatpy_pkey_register(self._ptr, buf, size) != 0:
            return None
        return str(m.ffi.string(buf).decode("ascii"))

    def attach_device(self, key: Key) -> bool:
        """Give the provider key its device copy (it takes its own reference)."""
        return bool(native().lib.qatpy_pkey_attach_device(self._ptr, key._ptr) == 0)

    def refs(self) -> int:
        return int(native().lib.qatpy_pkey_refs(self._ptr))

    def release(self) -> None:
        p, self._ptr = self._ptr, None
        if p is not None:
            native().lib.qatpy_pkey_release(p)


def pkey_unregister(ref_id: str) -> bool:
    return bool(native().lib.qatpy_pkey_unregister(ref_id.encode("ascii")) == 0)


def pkey_registered() -> int:
    return int(native().lib.qatpy_pkey_registered())


def pkey_new_rsa(engine: CEngine, components: list[bytes]) -> tuple[PKey | None, str]:
    """components: n, e, d, p, q, dp, dq, qinv as big-endian bytes."""
    m = native()
    err = m.ffi.new("char[]", ERRBUF)
    args: list[Any] = []
    for c in components:
        args += [c, len(c)]
    ptr = m.lib.qatpy_pkey_new_rsa(engine._ptr, *args, err, ERRBUF)
    if ptr == m.ffi.NULL:
        return None, _err(err)
    return PKey(ptr), ""


def pkey_new_ec(engine: CEngine, group: str, d: bytes, pub: bytes) -> tuple[PKey | None, str]:
    m = native()
    err = m.ffi.new("char[]", ERRBUF)
    ptr = m.lib.qatpy_pkey_new_ec(engine._ptr, group.encode("ascii"), d, len(d), pub, len(pub), err, ERRBUF)
    if ptr == m.ffi.NULL:
        return None, _err(err)
    return PKey(ptr), ""
