"""The seam between the engine and the things that sign: the `Backend`
protocol and the `Operation` value every backend takes.

    Engine -> FallbackPolicy (qatpy._fallback) -> QatBackend (qatpy._qat)
                                                -> SoftwareBackend (qatpy._software)
    Engine -> SoftwareBackend                      (backend="software", or auto without a device)

A backend never imports the engine or the key classes: it sees operations
(a cryptography private key, the checked arguments, the messages) and
targets that it resolves through `qatpy._completion.deliver`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ._ops import EcSpec, RsaSpec

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class Operation:
    """Signatures to make with one key and one set of arguments: result i is
    the signature of ``datas[i]``.

    ``key`` is the cryptography key: its numbers are the key material and
    its ``sign`` the software path.  cryptography's key objects take no weak
    references, so backends keep their per-key state (device copies, clones)
    against ``owner``, an object that lives exactly as long as the key is in
    use (the qatpy key object wrapping it); they never call its methods.
    """

    __slots__ = ("key", "spec", "datas", "owner")

    def __init__(self, key: PrivateKey, spec: RsaSpec | EcSpec, datas: list[bytes], owner: object) -> None:
        self.key = key
        self.spec = spec  # checked by qatpy._ops before any backend sees it
        self.datas = datas
        self.owner = owner

    def software_sign(self, index: int, key: PrivateKey | None = None) -> bytes:
        """Signature `index` made by cryptography itself (with `key`, a clone, if given)."""
        return (key or self.key).sign(self.datas[index], *self.spec.sw_args)


class Backend(Protocol):
    """What the engine asks of whatever signs for it.

    Results go to targets (see qatpy._completion): result i of an operation
    submitted with `target` is delivered as (target, i).  Every method may be
    called from any thread.
    """

    #: "qat", "sim" or "software": what Engine.backend reports.
    name: str

    def accepts(self, op: Operation) -> bool:
        """Prepare op's key (once per key) and say whether this backend signs
        with it itself.  Raises EngineClosedError once closed."""
        ...

    def sign(self, op: Operation) -> bytes:
        """Make op's single signature, blocking this thread until it is done."""
        ...

    def submit(self, op: Operation, target: Any, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Queue op's signatures; `loop` is the running loop when `target`
        resolves in it (asyncio futures)."""
        ...

    def sign_future(self, op: Operation) -> cf.Future[bytes]:
        """Start op's single signature; the future (already running: it cannot
        be cancelled) resolves to it."""
        ...

    def wait(self, op: Operation, fut: cf.Future[Any], timeout: float | None = None) -> None:
        """Return once `fut`, which op's results resolve, is done (or `timeout`
        passed), doing useful work on this thread where the backend can
        (draining the device)."""
        ...

    def poll(self) -> int:
        """Poll the device once (manual poll mode); results delivered."""
        ...

    def stats(self) -> dict[str, Any]:
        """This backend's counters (see docs/reference.md, stats())."""
        ...

    def fail_after_fork(self) -> None:
        """In a forked child, right after fork(): fail every operation the
        parent's backend held (EngineForkedError), touching none of its
        threads or device memory."""
        ...

    def close(self, deadline: float) -> None:
        """Refuse new work, let in-flight work finish until `deadline`
        (time.monotonic()), fail what is left with EngineClosedError and free
        everything.  Idempotent."""
        ...
