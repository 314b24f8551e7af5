"""Helpers for the qatpy.ssl tests: throwaway PKIs for any key, a threaded
HTTPS server on 127.0.0.1, `openssl s_client` runs, and counters."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HOST = "127.0.0.1"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
CURL = shutil.which("curl")
TIMEOUT = 20


def client_env() -> dict[str, str]:
    """The environment for client programs (openssl, curl): the test process's, without
    LD_PRELOAD, so a sanitizer preloaded into the Python under test (README, Sanitizers)
    does not load into them (curl hangs with libasan preloaded)."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    return env


def pem_key(key: Any, password: bytes | None = None) -> bytes:
    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


@dataclass
class Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    path: Path


def make_ca(directory: Path) -> Ca:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qatpy test CA")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = directory / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Ca(key, cert, path)


def issue(ca: Ca, key: Any, directory: Path, stem: str, client: bool = False) -> tuple[Path, Path]:
    """A leaf certificate for `key` (server: localhost and 127.0.0.1); returns (cert.pem, key.pem)."""
    now = dt.datetime.now(dt.timezone.utc)
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "client" if client else "localhost")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    if not client:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
    cert = b.sign(ca.key, hashes.SHA256())
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(pem_key(key))
    return cert_path, key_path


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class TLSServer(ThreadingHTTPServer):
    """A stdlib threaded HTTPS server: each connection's handshake runs in its own thread."""

    daemon_threads = True

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__((HOST, 0), _Handler)
        self.context = context
        self.handshakes = 0
        self.failures = 0
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(TIMEOUT)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            self.failures += 1
            return
        self.handshakes += 1
        try:
            self.RequestHandlerClass(tls, client_address, self)
        except OSError:
            pass
        finally:
            tls.close()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(TIMEOUT)

    def __enter__(self) -> TLSServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class SClient:
    returncode: int
    protocol: str | None
    sigtype: str | None
    digest: str | None
    verified: bool
    output: str


def s_client(port: int, ca: Path, *args: str, cert: Path | None = None, key: Path | None = None) -> SClient:
    """One `openssl s_client` handshake (stdin closed at once), verifying the server against `ca`."""
    cmd = [OPENSSL, "s_client", "-connect", f"{HOST}:{port}", "-CAfile", str(ca), "-verify_return_error", *args]
    if cert is not None and key is not None:
        cmd += ["-cert", str(cert), "-key", str(key)]
    p = subprocess.run(cmd, input=b"", capture_output=True, timeout=TIMEOUT, env=client_env())
    out = p.stdout.decode(errors="replace")

    def field(prefix: str) -> str | None:
        for line in out.splitlines():
            if line.strip().startswith(prefix):
                return line.split(":", 1)[1].strip()
        return None

    return SClient(
        p.returncode,
        field("Protocol"),
        field("Peer signature type"),
        field("Peer signing digest"),
        "Verification: OK" in out,
        out + p.stderr.decode(errors="replace"),
    )


def python_client(port: int, ca: Path, version: ssl.TLSVersion | None = None, **load: Any) -> str:
    """One handshake and GET with Python's ssl (server verified against `ca`); returns the TLS version."""
    ctx = ssl.create_default_context(cafile=str(ca))
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if load:
        ctx.load_cert_chain(**load)
    with socket.create_connection((HOST, port), timeout=TIMEOUT) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            data = tls.recv(1024)
            assert data.startswith(b"HTTP/1.0 200"), data
            return str(tls.version())


def ssl_counts(engine: Any) -> dict[str, int]:
    """The engine's provider counters, flattened (fallbacks as fallback_<reason>); on a device
    engine also the device's successful completions (`device_completed`)."""
    st = engine.stats()
    s = dict(st["ssl"])
    for reason, n in s.pop("fallbacks").items():
        s[f"fallback_{reason}"] = n
    s.pop("closed")
    if st.get("device"):
        s["device_completed"] = st["device"]["completed_ok"]
    return s


def signed(engine: Any, n: int) -> dict[str, int]:
    """The counter increments of `n` handshake signatures made by qatpy on `engine`: in software
    on a software engine; on a device engine by the device, each one a device completion."""
    if engine.backend == "software":
        return {"signs": n, "software": n}
    return {"signs": n, "device": n, "device_completed": n}


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """Counters that changed, with their increments."""
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
