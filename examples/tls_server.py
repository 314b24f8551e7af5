"""An HTTPS server (tlslite-ng) whose TLS handshake signatures run on a qatpy engine.

With no arguments: a bounded self-test.  It makes a throwaway CA and server
certificates, serves one connection threaded (RSA) and one through the
asyncio driver (ECDSA) on 127.0.0.1, connects with Python's ssl module
(verifying against the CA) and prints ``served 2 TLS connections ... on
<backend>``.

Interactive::

    python examples/tls_server.py --serve [--asyncio] [--key rsa|ec] [--port 8443]
        [--cert cert.pem --keyfile key.pem] [--max-connections N] [--timeout S]
    curl --cacert <printed CA path> https://127.0.0.1:<port>/
    openssl s_client -connect 127.0.0.1:<port> -CAfile <printed CA path> -verify_return_error -alpn http/1.1

The port comes from --port, else $PORT, else 0 (the chosen port is printed).
The backend is QATPY_BACKEND (auto by default) or --backend.  The server
binds to 127.0.0.1 only.  It stops after --max-connections connections or
--timeout seconds, whichever comes first (both unlimited by default).

Needs tlslite-ng (pip install tlslite-ng).  tlslite-ng is pure Python
(~10 ms of CPU per handshake), so this shows qatpy working inside a TLS
server, not a faster TLS server: see the README, "TLS server (tlslite-ng)".
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import ipaddress
import os
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from tlslite.tlsconnection import TLSConnection

import qatpy
from qatpy.integrations.tlslite import (
    TlsliteKey,
    handshake_args,
    load_cert_chain,
    load_tlslite_key,
)

HOST = "127.0.0.1"  # never anything else
CONN_TIMEOUT = 10.0  # seconds of socket inactivity before a connection is dropped
MAX_REQUEST = 16 * 1024


# -- certificates --------------------------------------------------------------
@dataclass(frozen=True)
class Pki:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost, as PEM files."""

    ca_cert: Path
    cert: Path
    key: Path


def make_pki(directory: str | os.PathLike[str], key_type: str = "rsa") -> Pki:
    """Write ca.pem, cert.pem and key.pem (RSA-2048 or P-256 server key) into `directory`."""
    if key_type not in ("rsa", "ec"):
        raise ValueError(f"key_type must be 'rsa' or 'ec', not {key_type!r}")
    d = Path(directory)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qatpy throwaway CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        rsa.generate_private_key(65537, 2048) if key_type == "rsa" else ec.generate_private_key(ec.SECP256R1())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, key_type == "rsa", False, False, False, False, False, False), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(d / "ca.pem", d / "cert.pem", d / "key.pem")
    pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return pki


# -- the server ----------------------------------------------------------------
def _http_response(backend: str) -> bytes:
    body = f"hello from qatpy over TLS ({backend})\n".encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return head.encode() + body


def _request_complete(buf: bytes | bytearray) -> bool:
    return b"\r\n\r\n" in buf or b"\n\n" in buf or len(buf) >= MAX_REQUEST


@dataclass
class Served:
    """What one connection negotiated."""

    version: tuple[int, int]
    cipher: str


@dataclass
class TLSServer:
    """Serves HTTPS with tlslite-ng on 127.0.0.1 until `max_connections` or `timeout`.

    ``serve_threaded()`` runs a thread per connection; ``serve_asyncio()``
    drives tlslite's non-blocking generators from an event loop.  Both
    return when the listener stops accepting and every accepted connection
    has finished; ``stop()`` ends them early from another thread.
    """

    cert_pem: str
    key: TlsliteKey
    port: int = 0
    max_connections: int | None = None
    timeout: float | None = None
    served: list[Served] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.max_connections is not None and self.max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError("timeout must be > 0")
        self.backend = self.key.qatpy_key.engine.backend
        # One set of handshake arguments for every connection: server_settings()
        # inside it holds the session-ticket key, and the ALPN list is what
        # keeps tlslite from failing TLS 1.3 clients that offer ALPN (curl).
        self._handshake = handshake_args(load_cert_chain(self.cert_pem), self.key)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._listener = socket.create_server((HOST, self.port), backlog=64)
        self.port = self._listener.getsockname()[1]

    @property
    def address(self) -> tuple[str, int]:
        return HOST, self.port

    def stop(self) -> None:
        """Stop accepting; connections in progress finish (bounded by CONN_TIMEOUT)."""
        self._stop.set()

    def _deadline(self) -> float:
        return time.monotonic() + self.timeout if self.timeout is not None else float("inf")

    def _accepting(self, accepted: int, deadline: float) -> bool:
        return (
            not self._stop.is_set()
            and time.monotonic() < deadline
            and (self.max_connections is None or accepted < self.max_connections)
        )

    def _negotiated(self, conn: TLSConnection) -> Served:
        # Read right after the handshake: close() resets conn.version.
        return Served(tuple(conn.version), conn.getCipherName() or "")

    def _record(self, served: Served | None, exc: BaseException | None) -> None:
        with self._lock:
            if exc is None and served is not None:
                self.served.append(served)
            else:
                self.errors.append(f"{type(exc).__name__}: {exc}")

    # threaded ------------------------------------------------------------------
    def serve_threaded(self) -> None:
        """Accept on this thread, handshake and reply on a thread per connection."""
        deadline = self._deadline()
        workers: list[threading.Thread] = []
        accepted = 0
        with self._listener:
            self._listener.settimeout(0.1)  # wake up to check stop/deadline
            while self._accepting(accepted, deadline):
                try:
                    sock, _ = self._listener.accept()
                except TimeoutError:
                    continue
                accepted += 1
                t = threading.Thread(
                    target=self._handle_blocking, args=(sock,), name=f"tls-conn-{accepted}", daemon=True
                )
                t.start()
                workers.append(t)
        for t in workers:
            t.join(CONN_TIMEOUT * 3)

    def _handle_blocking(self, sock: socket.socket) -> None:
        sock.settimeout(CONN_TIMEOUT)
        _no_nagle(sock)
        conn = TLSConnection(sock)
        try:
            # The handshake signature is key.sign(): it blocks this thread on
            # the qatpy engine while other connections keep going.
            conn.handshakeServer(**self._handshake)
            served = self._negotiated(conn)
            request = bytearray()
            while not _request_complete(request):
                chunk = conn.read(max=4096, min=1)
                if not chunk:
                    break
                request += chunk
            conn.write(_http_response(self.backend))
            conn.close()
            self._record(served, None)
        except Exception as exc:  # noqa: BLE001 - one bad client must not stop the server
            self._record(None, exc)
        finally:
            sock.close()

    # asyncio -------------------------------------------------------------------
    def serve_asyncio(self) -> None:
        """Run `serve_async` in a new event loop."""
        asyncio.run(self.serve_async())

    async def serve_async(self) -> None:
        """Accept on the running loop; each connection is a task driving tlslite's generators."""
        loop = asyncio.get_running_loop()
        deadline = self._deadline()
        tasks: set[asyncio.Task[None]] = set()
        accepted = 0
        with self._listener:
            self._listener.setblocking(False)
            while self._accepting(accepted, deadline):
                try:
                    sock, _ = await asyncio.wait_for(loop.sock_accept(self._listener), 0.1)
                except asyncio.TimeoutError:
                    continue
                accepted += 1
                tasks.add(asyncio.create_task(self._handle_async(sock)))
        if tasks:
            await asyncio.wait(tasks)

    async def _converse(self, sock: socket.socket, conn: TLSConnection) -> Served:
        await _drive(sock, conn.handshakeServerAsync(**self._handshake))
        served = self._negotiated(conn)
        request = bytearray()
        while not _request_complete(request):
            chunk = await _drive(sock, conn.readAsync(max=4096, min=1))
            if not chunk:
                break
            request += chunk
        await _drive(sock, conn.writeAsync(_http_response(self.backend)))
        await _drive(sock, conn.closeAsync())
        return served

    async def _handle_async(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        _no_nagle(sock)
        conn = TLSConnection(sock)
        try:
            served = await asyncio.wait_for(self._converse(sock, conn), CONN_TIMEOUT * 3)
            self._record(served, None)
        except Exception as exc:  # noqa: BLE001 - as above
            self._record(None, exc)
        finally:
            sock.close()


def _no_nagle(sock: socket.socket) -> None:
    """Send each flight at once.  In TLS 1.2 tlslite writes the session ticket
    and then ChangeCipherSpec + Finished separately; with Nagle's algorithm the
    second write waits for the client's delayed ACK of the first (~40 ms)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


_DONE = object()


async def _drive(sock: socket.socket, gen: Generator[Any, None, None]) -> Any:
    """Run a tlslite async generator to completion without blocking the loop.

    tlslite yields 0 (wants to read), 1 (wants to write) or, for readAsync,
    the data read.  Each step runs in a worker thread because it may do
    tens of milliseconds of pure-Python crypto, or block on the engine for
    the handshake signature; the loop only waits for socket readiness.
    (tlslite flushes a handshake flight with sendall(), which assumes the
    flight fits in the socket buffer; on 127.0.0.1 it does.)
    """
    loop = asyncio.get_running_loop()
    while True:
        step = await asyncio.to_thread(next, gen, _DONE)
        if step is _DONE:
            return None
        if step == 0 or step == 1:
            ready: asyncio.Future[None] = loop.create_future()

            def wake(fut: asyncio.Future[None] = ready) -> None:
                if not fut.done():
                    fut.set_result(None)

            fd = sock.fileno()
            (loop.add_reader if step == 0 else loop.add_writer)(fd, wake)
            try:
                await ready
            finally:
                (loop.remove_reader if step == 0 else loop.remove_writer)(fd)
            continue
        return step


# -- a client, for the self-test -------------------------------------------------
def fetch(port: int, ca_file: str | os.PathLike[str], tls_version: ssl.TLSVersion | None = None) -> tuple[str, str]:
    """GET / over TLS from 127.0.0.1:`port`, verifying against `ca_file`; (TLS version, body)."""
    ctx = ssl.create_default_context(cafile=os.fspath(ca_file))
    if tls_version is not None:
        ctx.minimum_version = ctx.maximum_version = tls_version
    with (
        socket.create_connection((HOST, port), timeout=CONN_TIMEOUT) as raw,
        ctx.wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        tls.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = bytearray()
        while chunk := tls.recv(4096):
            data += chunk
        version = tls.version() or ""
    body = bytes(data).split(b"\r\n\r\n", 1)[-1].decode()
    return version, body


def _self_test(engine: qatpy.Engine) -> None:
    with tempfile.TemporaryDirectory(prefix="qatpy-tls-") as tmp:
        for mode, key_type in (("threaded", "rsa"), ("asyncio", "ec")):
            pki_dir = Path(tmp) / key_type
            pki_dir.mkdir()
            pki = make_pki(pki_dir, key_type)
            key = load_tlslite_key(engine.load_private_key_file(pki.key))
            server = TLSServer(pki.cert.read_text(), key, max_connections=1, timeout=60)
            run = server.serve_threaded if mode == "threaded" else server.serve_asyncio
            t = threading.Thread(target=run, name=f"tls-server-{mode}")
            t.start()
            try:
                version, body = fetch(server.port, pki.ca_cert)
            finally:
                server.stop()
                t.join(CONN_TIMEOUT * 4)
            if server.errors or not body.startswith("hello from qatpy over TLS"):
                raise SystemExit(f"self-test failed ({mode}): {server.errors or body!r}")
            print(f"{mode:8} {key_type.upper():5} {version}: {body.strip()}  [engine signatures: {key.offloaded}]")
    print(f"served 2 TLS connections (threaded RSA, asyncio ECDSA) on {engine.backend}")


# -- command line --------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--serve", action="store_true", help="serve until --max-connections/--timeout (default: self-test)")
    p.add_argument("--asyncio", action="store_true", help="asyncio driver instead of a thread per connection")
    p.add_argument("--key", choices=("rsa", "ec"), default="rsa", help="generated server key type (default rsa)")
    p.add_argument("--cert", help="server certificate chain, PEM (with --keyfile; default: generate)")
    p.add_argument("--keyfile", help="server private key, PEM or DER")
    p.add_argument("--pki-dir", help="where generated certificates go (default: a temporary directory)")
    p.add_argument(
        "--port", type=int, default=int(os.environ.get("PORT", "0")), help="default $PORT or 0 (any free port)"
    )
    p.add_argument("--max-connections", type=int, default=None, help="stop after N connections")
    p.add_argument("--timeout", type=float, default=None, help="stop after S seconds")
    p.add_argument(
        "--backend", choices=("auto", "qat", "sim", "software"), default=None, help="default $QATPY_BACKEND or auto"
    )
    args = p.parse_args(argv)
    if bool(args.cert) != bool(args.keyfile):
        p.error("--cert and --keyfile go together")

    with qatpy.Engine(args.backend) as engine:
        print(
            f"backend: {engine.backend}" + (f" (fallback: {engine.fallback_reason})" if engine.fallback_reason else "")
        )
        if not args.serve:
            _self_test(engine)
            return 0
        with tempfile.TemporaryDirectory(prefix="qatpy-tls-") as tmp:
            if args.cert:
                cert_path, key_path, ca_note = Path(args.cert), Path(args.keyfile), ""
            else:
                pki_dir = Path(args.pki_dir) if args.pki_dir else Path(tmp)
                pki_dir.mkdir(parents=True, exist_ok=True)
                pki = make_pki(pki_dir, args.key)
                cert_path, key_path, ca_note = pki.cert, pki.key, f"; CA certificate: {pki.ca_cert}"
            key = load_tlslite_key(engine.load_private_key_file(key_path))
            server = TLSServer(
                cert_path.read_text(), key, port=args.port, max_connections=args.max_connections, timeout=args.timeout
            )
            mode = "asyncio" if args.asyncio else "threaded"
            print(f"listening on https://{HOST}:{server.port}/ ({mode}){ca_note}", flush=True)
            try:
                server.serve_asyncio() if args.asyncio else server.serve_threaded()
            except KeyboardInterrupt:
                pass
        print(
            f"served {len(server.served)} TLS connection(s), {len(server.errors)} failed, "
            f"{key.offloaded} signatures on {engine.backend}"
        )
        for err in server.errors:
            print("  error:", err, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
