"""TLS server integration (tlslite-ng): adapters, and real handshakes on 127.0.0.1.

Servers are examples/tls_server.py's TLSServer run in a thread of this
process (so the test can read the engine's stats), each bounded by
max_connections and a timeout; clients are `openssl s_client` and Python's
ssl module, both verifying the server certificate against a throwaway CA.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import select
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from sslhelp import client_env

import qatpy
from qatpy.integrations.tlslite import (
    QatTlsliteECDSAKey,
    QatTlsliteRSAKey,
    handshake_args,
    load_cert_chain,
    load_tlslite_key,
    server_settings,
)

EXAMPLE = Path(__file__).parent.parent / "examples" / "tls_server.py"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
SERVER_TIMEOUT = 20.0  # every server stops by itself after this, clients or not


def _load_example() -> Any:
    spec = importlib.util.spec_from_file_location("qatpy_example_tls_server", EXAMPLE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod


ex = _load_example()


@pytest.fixture(scope="module")
def pkis(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A throwaway CA + server certificate per key type, made once."""
    out = {}
    for key_type in ("rsa", "ec"):
        d = tmp_path_factory.mktemp(f"pki-{key_type}")
        out[key_type] = ex.make_pki(d, key_type)
    return out


def engine_signatures(engine: qatpy.Engine) -> int:
    """Signatures the engine has completed on its own backend (device or software pool)."""
    s = engine.stats()
    if engine.backend == "software":
        return int(s["software"]["sync_ops"] + s["software"]["completed"])
    return int(s["completed"])


class Running:
    """A TLSServer serving in a background thread; stops by itself (max_connections, timeout)."""

    def __init__(self, server: Any, mode: str) -> None:
        self.server = server
        run = server.serve_threaded if mode == "threaded" else server.serve_asyncio
        self.thread = threading.Thread(target=run, name=f"test-tls-{mode}", daemon=True)
        self.thread.start()

    def join(self) -> Any:
        self.thread.join(SERVER_TIMEOUT + 5)
        assert not self.thread.is_alive(), "server did not stop by itself"
        return self.server


@pytest.fixture
def serve(engine: qatpy.Engine, pkis: dict[str, Any]) -> Iterator[Any]:
    started: list[Running] = []

    def start(key_type: str, mode: str, connections: int = 1) -> tuple[Running, Any]:
        pki = pkis[key_type]
        key = load_tlslite_key(engine.load_private_key_file(pki.key))
        server = ex.TLSServer(pki.cert.read_text(), key, max_connections=connections, timeout=SERVER_TIMEOUT)
        r = Running(server, mode)
        started.append(r)
        return r, pki

    yield start
    for r in started:  # a failed test must not leave a server behind
        r.server.stop()
        r.thread.join(SERVER_TIMEOUT + 5)


def s_client(port: int, ca: Path, *flags: str) -> str:
    """`openssl s_client` as the README runs it, plus `flags`, sending a GET and reading the reply."""
    p = subprocess.run(
        [
            OPENSSL,
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-CAfile",
            str(ca),
            "-verify_return_error",
            *flags,
            "-ign_eof",
        ],
        input=b"GET / HTTP/1.0\r\n\r\n",
        capture_output=True,
        timeout=20,
        check=False,
        env=client_env(),
    )
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, out + p.stderr.decode(errors="replace")
    return out


MODES = ["threaded", "asyncio"]
KEYS = ["rsa", "ec"]
OPENSSL_VERSIONS = {"-tls1_3": ("TLSv1.3", (3, 4)), "-tls1_2": ("TLSv1.2", (3, 3))}
PY_VERSIONS = {"TLSv1.3": (ssl.TLSVersion.TLSv1_3, (3, 4)), "TLSv1.2": (ssl.TLSVersion.TLSv1_2, (3, 3))}


# -- handshakes ------------------------------------------------------------------
@pytest.mark.parametrize("version_flag", list(OPENSSL_VERSIONS))
@pytest.mark.parametrize("key_type", KEYS)
@pytest.mark.parametrize("mode", MODES)
def test_openssl_s_client_handshake(
    serve: Any, engine: qatpy.Engine, mode: str, key_type: str, version_flag: str
) -> None:
    """openssl s_client completes a verified handshake and gets the reply; the signature ran on the engine."""
    before = engine_signatures(engine)
    running, pki = serve(key_type, mode)
    out = s_client(running.server.port, pki.ca_cert, version_flag, "-verify_ip", "127.0.0.1")
    server = running.join()
    name, wire = OPENSSL_VERSIONS[version_flag]
    assert "Verify return code: 0 (ok)" in out
    assert f"New, {name}, Cipher is" in out
    assert f"Peer signature type: {'ECDSA' if key_type == 'ec' else 'RSA-PSS'}" in out
    assert f"hello from qatpy over TLS ({engine.backend})" in out
    assert server.errors == [] and [s.version for s in server.served] == [wire]
    assert (server.key.offloaded, server.key.software_fallbacks) == (1, 0)
    assert engine_signatures(engine) - before == 1


@pytest.mark.parametrize("tls_version", list(PY_VERSIONS))
@pytest.mark.parametrize("key_type", KEYS)
@pytest.mark.parametrize("mode", MODES)
def test_python_ssl_client_handshake(
    serve: Any, engine: qatpy.Engine, mode: str, key_type: str, tls_version: str
) -> None:
    """Python's ssl client (create_default_context with the CA) verifies the server and gets the reply via the engine."""
    before = engine_signatures(engine)
    running, pki = serve(key_type, mode)
    version, body = ex.fetch(running.server.port, pki.ca_cert, PY_VERSIONS[tls_version][0])
    server = running.join()
    assert version == tls_version
    assert body == f"hello from qatpy over TLS ({engine.backend})\n"
    assert server.errors == [] and [s.version for s in server.served] == [PY_VERSIONS[tls_version][1]]
    assert (server.key.offloaded, server.key.software_fallbacks) == (1, 0)
    assert engine_signatures(engine) - before == 1


@pytest.mark.parametrize("mode", MODES)
def test_concurrent_clients(serve: Any, engine: qatpy.Engine, mode: str) -> None:
    """Six clients at once are all served, each handshake signing on the engine."""
    n = 6
    before = engine_signatures(engine)
    running, pki = serve("rsa", mode, connections=n)
    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(lambda _: ex.fetch(running.server.port, pki.ca_cert), range(n)))
    server = running.join()
    assert all(body == f"hello from qatpy over TLS ({engine.backend})\n" for _, body in results)
    assert server.errors == [] and len(server.served) == n
    assert server.key.offloaded == n and engine_signatures(engine) - before == n


def test_server_stops_on_timeout_without_clients(engine: qatpy.Engine, pkis: dict[str, Any]) -> None:
    """A server nobody connects to returns after its timeout, in both modes."""
    pki = pkis["ec"]
    key = load_tlslite_key(engine.load_private_key_file(pki.key))
    for mode in MODES:
        server = ex.TLSServer(pki.cert.read_text(), key, timeout=0.3)
        r = Running(server, mode)
        r.thread.join(5)
        assert not r.thread.is_alive() and server.served == []


def test_example_serve_mode_subprocess(pkis: dict[str, Any], backend: str) -> None:
    """`tls_server.py --serve --max-connections 1` prints its port, serves one client and exits 0."""
    env = dict(os.environ, QATPY_BACKEND=backend)
    pki = pkis["rsa"]
    p = subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLE),
            "--serve",
            "--asyncio",
            "--cert",
            str(pki.cert),
            "--keyfile",
            str(pki.key),
            "--max-connections",
            "1",
            "--timeout",
            str(SERVER_TIMEOUT),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert p.stdout is not None
        lines = [p.stdout.readline(), p.stdout.readline()]
        port = int(lines[1].split("https://127.0.0.1:")[1].split("/")[0])
        out = s_client(port, pki.ca_cert, "-tls1_3")
        rest, err = p.communicate(timeout=SERVER_TIMEOUT + 5)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert f"hello from qatpy over TLS ({backend})" in out
    assert p.returncode == 0, err
    assert f"served 1 TLS connection(s), 0 failed, 1 signatures on {backend}" in rest


# -- what browsers and curl need ----------------------------------------------------
@pytest.mark.parametrize("tls_version", list(PY_VERSIONS))
@pytest.mark.parametrize("mode", MODES)
def test_client_offering_alpn_gets_http11(serve: Any, engine: qatpy.Engine, mode: str, tls_version: str) -> None:
    """A client offering ALPN (h2, http/1.1), as curl and browsers do, completes the handshake and gets http/1.1."""
    running, pki = serve("ec", mode)
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.minimum_version = ctx.maximum_version = PY_VERSIONS[tls_version][0]
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection(running.server.address, timeout=ex.CONN_TIMEOUT) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.selected_alpn_protocol() == "http/1.1"
        body = get(tls)
    server = running.join()
    assert body.endswith(f"hello from qatpy over TLS ({engine.backend})\n")
    assert server.errors == [] and server.key.offloaded == 1


def get(tls: ssl.SSLSocket) -> str:
    """GET / on an established connection; the whole response."""
    tls.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    data = bytearray()
    while chunk := tls.recv(4096):
        data += chunk
    return data.decode()


@pytest.mark.parametrize("mode", MODES)
def test_server_answers_the_client_finished_at_once(serve: Any, engine: qatpy.Engine, mode: str) -> None:
    """Sequential TLS 1.3 clients with Nagle on: the server sends a ticket after each client Finished, unprompted.

    Without it such a client holds its request until the server's delayed ACK
    (~40 ms per connection); here each client sends nothing until the server
    has spoken, which it does only if it answers the Finished by itself.
    """
    n = 5
    running, pki = serve("ec", mode, connections=n)
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    for _ in range(n):
        with (
            socket.create_connection(running.server.address, timeout=ex.CONN_TIMEOUT) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0  # the stalling kind of client
            readable, _, _ = select.select([tls], [], [], ex.CONN_TIMEOUT)
            assert readable, "the server sent nothing after the client's Finished"
            tls.setblocking(False)
            with pytest.raises(ssl.SSLWantReadError):
                tls.recv(1)  # what came was handshake data (the ticket), no application data
            tls.setblocking(True)
            assert tls.session is not None and tls.session.has_ticket
            assert get(tls).endswith(f"hello from qatpy over TLS ({engine.backend})\n")
    server = running.join()
    assert server.errors == [] and server.key.offloaded == n


@pytest.mark.parametrize("mode", MODES)
def test_server_sockets_send_without_nagle(serve: Any, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every connection the server handshakes on has TCP_NODELAY, so its TLS 1.2 ticket write cannot hold back its Finished."""
    seen: list[int] = []

    class Recording(ex.TLSConnection):  # type: ignore[misc]
        def __init__(self, sock: socket.socket) -> None:
            seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            super().__init__(sock)

    monkeypatch.setattr(ex, "TLSConnection", Recording)
    running, pki = serve("rsa", mode, connections=2)
    for version in ("TLSv1.2", "TLSv1.3"):
        ex.fetch(running.server.port, pki.ca_cert, PY_VERSIONS[version][0])
    server = running.join()
    assert server.errors == [] and len(seen) == 2 and all(seen)


def test_resumed_session_does_not_sign(serve: Any, engine: qatpy.Engine) -> None:
    """A TLS 1.3 client resuming with the server's ticket is served without a new signature."""
    running, pki = serve("rsa", "threaded", connections=2)
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    addr = running.server.address
    with socket.create_connection(addr) as raw, ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        get(tls)  # reading to the end also takes in the ticket
        session = tls.session
    assert session is not None and session.has_ticket
    with (
        socket.create_connection(addr) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as tls,
    ):
        assert tls.session_reused
        body = get(tls)
    server = running.join()
    assert body.endswith(f"hello from qatpy over TLS ({engine.backend})\n")
    assert server.errors == [] and len(server.served) == 2 and server.key.offloaded == 1


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("mode", MODES)
def test_readme_commands_against_the_example(tmp_path: Path, mode: str) -> None:
    """The README's commands work: `tls_server.py --serve`, then curl and `openssl s_client` (with and without ALPN)."""
    n = 4
    cmd = [sys.executable, str(EXAMPLE), "--serve", "--max-connections", str(n), "--timeout", str(SERVER_TIMEOUT)]
    p = subprocess.Popen(
        cmd + (["--asyncio"] if mode == "asyncio" else []),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, QATPY_BACKEND="software"),
    )
    try:
        assert p.stdout is not None
        p.stdout.readline()  # backend: ...
        listening = p.stdout.readline()  # listening on https://127.0.0.1:<port>/ (mode); CA certificate: <path>
        port = int(listening.split("https://127.0.0.1:")[1].split("/")[0])
        ca = Path(listening.split("CA certificate: ")[1].strip())
        url = f"https://127.0.0.1:{port}/"
        curls = [
            subprocess.run(
                ["curl", "-sS", "--cacert", str(ca), url], capture_output=True, text=True, timeout=20, env=client_env()
            ),
            subprocess.run(
                ["curl", "-sS", "--tlsv1.2", "--tls-max", "1.2", "--cacert", str(ca), url],
                capture_output=True,
                text=True,
                timeout=20,
                env=client_env(),
            ),
        ]
        plain = s_client(port, ca)
        alpn = s_client(port, ca, "-alpn", "http/1.1")
        rest, err = p.communicate(timeout=SERVER_TIMEOUT + 5)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    for c in curls:
        assert c.returncode == 0 and c.stdout == "hello from qatpy over TLS (software)\n", c.stderr
    for out in (plain, alpn):
        assert "Verify return code: 0 (ok)" in out and "hello from qatpy over TLS (software)" in out
    assert "ALPN protocol: http/1.1" in alpn
    assert p.returncode == 0, err
    assert f"served {n} TLS connection(s), 0 failed, {n} signatures on software" in rest, rest + err


def test_handshake_args() -> None:
    """handshake_args always carries an ALPN list and ticket-enabled settings; an empty or bare-string list is refused."""
    chain, key = object(), object()
    args = handshake_args(chain, key)  # type: ignore[arg-type]
    assert args["certChain"] is chain and args["privateKey"] is key
    assert args["alpn"] == [bytearray(b"http/1.1")]
    assert args["settings"].ticketKeys and args["settings"].psk_modes == ["psk_dhe_ke"]
    assert handshake_args(chain, key, alpn=["h2", b"http/1.1"])["alpn"] == [b"h2", b"http/1.1"]  # type: ignore[arg-type]
    for bad in ([], "http/1.1", [""]):
        with pytest.raises(ValueError, match="alpn|ALPN"):
            handshake_args(chain, key, alpn=bad)  # type: ignore[arg-type]


# -- the adapters ------------------------------------------------------------------
@pytest.mark.parametrize("hash_name", ["sha224", "sha256", "sha384", "sha512"])
def test_rsa_adapter_signs_prehashed_on_engine(
    engine: qatpy.Engine, rsa_keys: dict[int, rsa.RSAPrivateKey], hash_name: str
) -> None:
    """PKCS#1 v1.5 and PSS over a tlslite digest go to the qatpy key and verify with cryptography."""
    key = load_tlslite_key(engine.wrap_key(rsa_keys[2048]))
    assert isinstance(key, QatTlsliteRSAKey) and len(key) == 2048 and key.hasPrivateKey()
    h = getattr(hashes, hash_name.upper())()
    digest = hashlib.new(hash_name, b"transcript").digest()
    before = engine_signatures(engine)
    pub = rsa_keys[2048].public_key()
    sig = key.sign(bytearray(digest), "pkcs1", hash_name)
    pub.verify(bytes(sig), digest, padding.PKCS1v15(), Prehashed(h))
    sig = key.sign(bytearray(digest), padding="pss", hashAlg=hash_name, saltLen=h.digest_size)
    pub.verify(bytes(sig), digest, padding.PSS(padding.MGF1(h), h.digest_size), Prehashed(h))
    assert key.verify(sig, bytearray(digest), "pss", hash_name, h.digest_size)  # tlslite's own check
    assert (key.offloaded, key.software_fallbacks) == (2, 0)
    assert engine_signatures(engine) - before == 2


def test_rsa_adapter_falls_back_for_what_qatpy_cannot_express(
    engine: qatpy.Engine, rsa_keys: dict[int, rsa.RSAPrivateKey]
) -> None:
    """TLS 1.0's MD5+SHA-1 blob and SHA-1 take tlslite's encoding and a software raw op, still valid."""
    key = load_tlslite_key(engine.wrap_key(rsa_keys[2048]))
    pub = rsa_keys[2048].public_key()
    sha1 = hashlib.sha1(b"transcript").digest()
    sig = key.sign(bytearray(sha1), "pkcs1", "sha1")
    pub.verify(bytes(sig), sha1, padding.PKCS1v15(), Prehashed(hashes.SHA1()))
    blob = bytearray(hashlib.md5(b"t").digest() + sha1)
    sig = key.sign(blob, "pkcs1", None)
    assert key.verify(sig, blob, "pkcs1", None)
    assert (key.offloaded, key.software_fallbacks) == (0, 2)


@pytest.mark.parametrize("curve", ["secp256r1", "secp384r1", "secp521r1"])
def test_ecdsa_adapter_handles_truncated_and_short_digests(
    engine: qatpy.Engine, ec_keys: dict[str, ec.EllipticCurvePrivateKey], curve: str
) -> None:
    """Every digest tlslite may pass (full, truncated to the curve size as in TLS 1.2, SHA-1) signs to a valid ECDSA signature of the full hash."""
    key = load_tlslite_key(engine.wrap_key(ec_keys[curve]))
    assert isinstance(key, QatTlsliteECDSAKey)
    assert len(key) == ec_keys[curve].curve.key_size
    pub = ec_keys[curve].public_key()
    before = engine_signatures(engine)
    names = ["sha1", "sha224", "sha256", "sha384", "sha512"]
    for name in names:
        full = hashlib.new(name, b"server key exchange").digest()
        sent = full[: key.private_key.curve.baselen]  # exactly what tlslite's TLS 1.2 path does
        der = key.sign(bytearray(sent), hashAlg=name)
        pub.verify(bytes(der), full, ec.ECDSA(Prehashed(getattr(hashes, name.upper())())))
        assert key.verify(der, bytearray(sent))
        assert not key.verify(der, bytearray(hashlib.new(name, b"other").digest()[: len(sent)]))
    assert key.offloaded == len(names) and engine_signatures(engine) - before == len(names)


def test_load_tlslite_key_rejects_foreign_keys(ec_keys: dict[str, ec.EllipticCurvePrivateKey]) -> None:
    """A plain cryptography key or anything else is a TypeError that says to wrap it first."""
    with pytest.raises(TypeError, match="wrap_key"):
        load_tlslite_key(ec_keys["secp256r1"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="QatRSAPrivateKey or QatECPrivateKey"):
        load_tlslite_key("key.pem")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        QatTlsliteRSAKey(ec_keys["secp256r1"])  # type: ignore[arg-type]


def test_load_cert_chain_and_settings(pkis: dict[str, Any]) -> None:
    """PEM (str or bytes) gives a tlslite chain; junk is a ValueError; settings keep every signature offloadable."""
    chain = load_cert_chain(pkis["rsa"].cert.read_bytes())
    assert chain.getNumCerts() == 1
    assert load_cert_chain(pkis["ec"].cert.read_text() + pkis["ec"].ca_cert.read_text()).getNumCerts() == 2
    with pytest.raises(ValueError, match="BEGIN CERTIFICATE"):
        load_cert_chain("not a certificate")
    s = server_settings(rsaSigHashes=["sha256"])
    assert s.minVersion == (3, 3) and "rsa" not in s.keyExchangeNames and s.rsaSigHashes == ["sha256"]
    assert s.ticketKeys == server_settings().ticketKeys != []  # one ticket key per process
    assert server_settings(ticketKeys=[]).ticketKeys == []
    assert "sha1" not in s.ecdsaSigHashes
    with pytest.raises(AttributeError, match="no setting"):
        server_settings(noSuchSetting=1)


# -- optional dependency -------------------------------------------------------------
def test_import_qatpy_does_not_import_tlslite() -> None:
    """`import qatpy` and `import qatpy.integrations` leave tlslite unimported."""
    code = "import sys, qatpy, qatpy.integrations; assert 'tlslite' not in sys.modules, 'imported'"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr


def test_missing_tlslite_is_a_clear_import_error() -> None:
    """Without tlslite-ng, importing the integration raises ImportError naming `pip install tlslite-ng`."""
    code = (
        "import sys; sys.modules['tlslite'] = None\n"
        "try:\n    import qatpy.integrations.tlslite\nexcept ImportError as e:\n    print(e)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert "pip install tlslite-ng" in p.stdout, p.stdout + p.stderr
