"""Real handshakes of Python's ssl servers with the key held by qatpy's provider:
a threaded stdlib HTTPS server and an asyncio server on 127.0.0.1, against
`openssl s_client`, curl and Python's ssl, for RSA-2048/3072/4096 and
P-256/384/521.  Each handshake is verified by its client (certificate chain
and the server's signature), and the engine's counters must show exactly the
handshakes' signatures."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from sslhelp import (
    CURL,
    HOST,
    TIMEOUT,
    Ca,
    TLSServer,
    client_env,
    delta,
    issue,
    make_ca,
    pem_key,
    python_client,
    s_client,
    signed,
    ssl_counts,
)

import qatpy
import qatpy.ssl

KEYS = ["rsa2048", "rsa3072", "rsa4096", "p256", "p384", "p521"]
CURVE = {"p256": "secp256r1", "p384": "secp384r1", "p521": "secp521r1"}
TLS13_ECDSA = {"p256": "ecdsa_secp256r1_sha256", "p384": "ecdsa_secp384r1_sha384", "p521": "ecdsa_secp521r1_sha512"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory, rsa_keys, ec_keys) -> dict[str, Any]:
    """A CA and one server certificate per key kind (plus a client certificate), made once."""
    d = tmp_path_factory.mktemp("ssl-pki")
    ca = make_ca(d)
    out: dict[str, Any] = {"ca": ca, "dir": d}
    for kind in KEYS:
        key = rsa_keys[int(kind[3:])] if kind.startswith("rsa") else ec_keys[CURVE[kind]]
        out[kind] = issue(ca, key, d, kind)
    out["client"] = issue(ca, ec_keys["secp256r1"], d, "client", client=True)
    return out


@pytest.fixture(scope="module", params=["software", "sim"])
def engine(request):
    """The engine the servers' keys are loaded on: software, and the simulated device (where every handshake signature must be a device completion)."""
    with qatpy.Engine(request.param) as eng:
        assert eng.backend == request.param
        yield eng


@pytest.fixture(scope="module")
def servers(pki, engine):
    """One threaded HTTPS server per key kind, its context loaded through qatpy.ssl.load_cert_chain."""
    running: dict[str, TLSServer] = {}
    for kind in KEYS:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert, key = pki[kind]
        qatpy.ssl.load_cert_chain(ctx, cert, key, engine=engine)
        running[kind] = TLSServer(ctx)
    yield running
    for srv in running.values():
        srv.stop()


def expect_signatures(engine: Any, before: dict[str, int], n: int = 1) -> None:
    assert delta(ssl_counts(engine), before) == signed(engine, n)


CASES = [
    (kind, args, sigtype, digest, proto)
    for kind in KEYS
    for args, sigtype, digest, proto in (
        [
            (["-tls1_3"], "RSA-PSS", "SHA256", "TLSv1.3"),
            (["-tls1_2", "-sigalgs", "RSA+SHA256"], "RSA", "SHA256", "TLSv1.2"),
            (["-tls1_2", "-sigalgs", "rsa_pss_rsae_sha384"], "RSA-PSS", "SHA384", "TLSv1.2"),
            (["-tls1_3", "-sigalgs", "rsa_pss_rsae_sha512"], "RSA-PSS", "SHA512", "TLSv1.3"),
        ]
        if kind.startswith("rsa")
        else [
            (["-tls1_3", "-sigalgs", TLS13_ECDSA[kind]], "ECDSA", TLS13_ECDSA[kind][-6:].upper(), "TLSv1.3"),
            (["-tls1_2", "-sigalgs", "ECDSA+SHA256"], "ECDSA", "SHA256", "TLSv1.2"),
        ]
    )
]


@pytest.mark.parametrize("kind,args,sigtype,digest,proto", CASES, ids=[f"{c[0]}-{'_'.join(c[1])}" for c in CASES])
def test_s_client_handshake(servers, pki, engine, kind, args, sigtype, digest, proto):
    """s_client verifies the chain and the server's signature of the forced scheme; qatpy made exactly that one."""
    before = ssl_counts(engine)
    r = s_client(servers[kind].port, pki["ca"].path, *args)
    assert r.returncode == 0 and r.verified, r.output
    assert (r.sigtype, r.digest) == (sigtype, digest), r.output
    assert proto in r.output
    expect_signatures(engine, before)


@pytest.mark.parametrize("kind", ["rsa2048", "p384"])
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2], ids=["tls1.3", "tls1.2"])
def test_python_client_handshake(servers, pki, engine, kind, version):
    """Python's ssl client verifies the server (chain and signature) and gets its page; one signature by qatpy."""
    before = ssl_counts(engine)
    assert python_client(servers[kind].port, pki["ca"].path, version) == version.name.replace("v1_", "v1.")
    expect_signatures(engine, before)


@pytest.mark.skipif(CURL is None, reason="REPORT: curl is not installed; the curl client case did not run")
@pytest.mark.parametrize("kind", ["rsa3072", "p256"])
def test_curl_handshake(servers, pki, engine, kind):
    """curl verifies the server against the CA and gets 200; one signature by qatpy."""
    before = ssl_counts(engine)
    p = subprocess.run(
        [
            str(CURL),
            "-sS",
            "--cacert",
            str(pki["ca"].path),
            "-o",
            "-",
            "-w",
            "%{http_code}",
            f"https://{HOST}:{servers[kind].port}/",
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=client_env(),
    )
    assert p.returncode == 0 and p.stdout.endswith("200"), p.stderr
    expect_signatures(engine, before)


def test_without_qatpy_counters_stay_zero(pki, engine):
    """A context loaded by the stdlib alone serves the same handshakes and qatpy's counters do not move."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*pki["rsa2048"])
    with TLSServer(ctx) as srv:
        before = ssl_counts(engine)
        for args in (["-tls1_3"], ["-tls1_2"]):
            r = s_client(srv.port, pki["ca"].path, *args)
            assert r.returncode == 0 and r.verified and r.sigtype == "RSA-PSS", r.output
        assert delta(ssl_counts(engine), before) == {}


@pytest.mark.parametrize("backend", ["software", "sim"])
def test_asyncio_server(pki, backend):
    """asyncio.start_server(ssl=ctx) with the key in qatpy: three Python clients verify; three signatures by qatpy."""

    async def main() -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        with qatpy.Engine(backend) as eng:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            qatpy.ssl.load_cert_chain(ctx, *pki["p256"], engine=eng)

            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await reader.readline()
                writer.write(b"hello\n")
                await writer.drain()
                writer.close()

            server = await asyncio.start_server(handle, HOST, 0, ssl=ctx)
            port = server.sockets[0].getsockname()[1]
            cctx = ssl.create_default_context(cafile=str(pki["ca"].path))
            before = ssl_counts(eng)
            async with server:
                for _ in range(3):
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(HOST, port, ssl=cctx, server_hostname="localhost"), TIMEOUT
                    )
                    writer.write(b"hi\n")
                    assert await asyncio.wait_for(reader.readline(), TIMEOUT) == b"hello\n"
                    writer.close()
            return before, ssl_counts(eng), signed(eng, 3)

    before, after, want = asyncio.run(main())
    assert delta(after, before) == want


@pytest.mark.parametrize("backend", ["software", "sim"])
def test_mutual_tls_client_signature_by_qatpy(pki, backend):
    """A client context with its certificate loaded through qatpy signs CertificateVerify in the provider; the server requires and verifies it."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(*pki["rsa2048"])
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(pki["ca"].path)
    with TLSServer(server_ctx) as srv:
        with qatpy.Engine(backend) as client_engine:
            before = ssl_counts(client_engine)  # the device's completions are counted for the whole device
            cctx = ssl.create_default_context(cafile=str(pki["ca"].path))
            qatpy.ssl.load_cert_chain(cctx, *pki["client"], engine=client_engine)
            for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
                cctx.minimum_version = cctx.maximum_version = version
                with socket.create_connection((HOST, srv.port), timeout=TIMEOUT) as raw:
                    with cctx.wrap_socket(raw, server_hostname="localhost") as tls:
                        tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
                        assert tls.recv(64).startswith(b"HTTP/1.0 200")
            assert delta(ssl_counts(client_engine), before) == signed(client_engine, 2)
        assert srv.handshakes == 2 and srv.failures == 0


@pytest.mark.parametrize("order", ["load-first", "load-last"])
def test_calling_order(pki, engine, order):
    """load_cert_chain before or after ciphers, ALPN, versions and verify locations: both contexts serve and sign in qatpy."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)

    def setup() -> None:
        ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
        ctx.set_alpn_protocols(["http/1.1"])
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_verify_locations(pki["ca"].path)

    if order == "load-last":
        setup()
    qatpy.ssl.load_cert_chain(ctx, *pki["p384"], engine=engine)
    if order == "load-first":
        setup()
    with TLSServer(ctx) as srv:
        before = ssl_counts(engine)
        for args in (["-tls1_3"], ["-tls1_2"]):
            r = s_client(srv.port, pki["ca"].path, *args)
            assert r.returncode == 0 and r.verified and r.sigtype == "ECDSA", r.output
        assert delta(ssl_counts(engine), before) == signed(engine, 2)


def test_second_context_on_the_same_key(pki, engine, servers):
    """A second context loaded from the same files signs too, and the first keeps working."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    qatpy.ssl.load_cert_chain(ctx, *pki["rsa2048"], engine=engine)
    with TLSServer(ctx) as srv:
        before = ssl_counts(engine)
        python_client(srv.port, pki["ca"].path)
        python_client(servers["rsa2048"].port, pki["ca"].path)
        assert delta(ssl_counts(engine), before) == signed(engine, 2)


@pytest.mark.parametrize("policy,ok", [("on_error", True), ("never", False)])
def test_closed_engine_falls_back_or_fails(pki, policy, ok):
    """After the engine closes, its contexts sign in software counted as engine_closed, or (fallback='never') refuse the handshake; nothing crashes."""
    eng = qatpy.Engine("software", fallback=policy)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    qatpy.ssl.load_cert_chain(ctx, *pki["rsa2048"], engine=eng)
    eng.close()
    with TLSServer(ctx) as srv:
        r = s_client(srv.port, pki["ca"].path, "-tls1_3")
        assert (r.returncode == 0 and r.verified) is ok, r.output
        expect = {"signs": 1, "fallback_engine_closed": 1} if ok else {"signs": 1, "failed": 1}
        assert delta(ssl_counts(eng), {}) == expect
        assert eng.stats()["ssl"]["closed"] is True


def test_forked_child_signs_in_software_counted_as_forked(pki, engine):
    """A context loaded before fork() (gunicorn --preload) still serves in the child, in software, counted as 'forked'."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    qatpy.ssl.load_cert_chain(ctx, *pki["p256"], engine=engine)
    lsock = socket.create_server((HOST, 0))
    port = lsock.getsockname()[1]
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: serve one handshake, report the engine's counters, exit
        status = 1
        try:
            os.close(rfd)
            before = ssl_counts(engine)
            conn, _ = lsock.accept()
            conn.settimeout(TIMEOUT)
            with ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(16)
            os.write(wfd, json.dumps(delta(ssl_counts(engine), before)).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(wfd)
    lsock.close()
    try:
        ctx_c = ssl.create_default_context(cafile=str(pki["ca"].path))
        with socket.create_connection((HOST, port), timeout=TIMEOUT) as raw:
            with ctx_c.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"x")
        report = json.loads(os.read(rfd, 4096) or b"null")
    finally:
        os.close(rfd)
        _, status = os.waitpid(pid, 0)
    assert status == 0
    assert report == {"signs": 1, "fallback_forked": 1}


# -- transparent mode ------------------------------------------------------------


@pytest.fixture
def installed(engine):
    """qatpy.ssl.install(engine=...) for one test, undone after."""
    qatpy.ssl.install(engine=engine)
    yield engine
    qatpy.ssl.uninstall()


def test_install_is_idempotent_and_reversible(installed):
    """install() twice wraps load_cert_chain once; uninstall() restores the stdlib's method."""
    wrapper = ssl.SSLContext.load_cert_chain
    qatpy.ssl.install()
    assert ssl.SSLContext.load_cert_chain is wrapper and qatpy.ssl.installed()
    assert wrapper.__qatpy_original__ is ssl.SSLContext.__mro__[1].load_cert_chain
    qatpy.ssl.uninstall()
    assert "load_cert_chain" not in vars(ssl.SSLContext) and not qatpy.ssl.installed()
    qatpy.ssl.install()
    assert ssl.SSLContext.load_cert_chain is wrapper


def test_transparent_context_signs_in_qatpy(installed, pki):
    """With install(), a plain ctx.load_cert_chain(cert, key) serves handshakes signed by qatpy."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*pki["rsa3072"])
    with TLSServer(ctx) as srv:
        before = ssl_counts(installed)
        r = s_client(srv.port, pki["ca"].path, "-tls1_2", "-sigalgs", "RSA+SHA384")
        assert r.returncode == 0 and r.verified and (r.sigtype, r.digest) == ("RSA", "SHA384"), r.output
        assert delta(ssl_counts(installed), before) == signed(installed, 1)


def test_transparent_key_in_cert_file_and_password(installed, pki, rsa_keys, tmp_path):
    """A certfile that also holds the key, and an encrypted key with a str or callable password, are offloaded."""
    cert, _ = pki["rsa2048"]
    combined = tmp_path / "combined.pem"
    combined.write_bytes(cert.read_bytes() + pem_key(rsa_keys[2048]))
    enc = tmp_path / "enc.key"
    enc.write_bytes(pem_key(rsa_keys[2048], b"s3cret"))
    for args in ((combined,), (cert, enc, "s3cret"), (cert, enc, lambda: b"s3cret")):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*args)
        with TLSServer(ctx) as srv:
            before = ssl_counts(installed)
            python_client(srv.port, pki["ca"].path)
            assert delta(ssl_counts(installed), before) == signed(installed, 1)


def _outcome(fn: Any, *args: Any) -> tuple[type[BaseException] | None, Any]:
    try:
        fn(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), *args)
    except Exception as exc:
        return type(exc), getattr(exc, "reason", None) or getattr(exc, "errno", None)
    return None, None


def test_bad_inputs_raise_what_the_stdlib_raises(installed, pki, rsa_keys, ec_keys, tmp_path):
    """Wrong password, missing files, a file with no key and a mismatched cert/key raise the stdlib's exceptions, through both entry points."""
    cert, key = pki["rsa2048"]
    enc = tmp_path / "enc.key"
    enc.write_bytes(pem_key(rsa_keys[2048], b"right"))
    cases = {
        "wrong password": (cert, enc, b"wrong"),
        "missing key": (cert, tmp_path / "nope.key"),
        "missing cert": (tmp_path / "nope.crt", key),
        "not a key": (cert, cert),
        "mismatch": (cert, pki["p256"][1]),
    }
    std = ssl.SSLContext.__mro__[1].load_cert_chain
    for name, args in cases.items():
        expected = _outcome(std, *args)
        assert expected[0] is not None, name
        assert _outcome(ssl.SSLContext.load_cert_chain, *args) == expected, name
        assert _outcome(qatpy.ssl.load_cert_chain, *args) == expected, name


def test_unsupported_key_left_to_stdlib_with_a_log(installed, pki, tmp_path, caplog):
    """Transparent mode hands an Ed25519 key to the stdlib (logged, works, not counted); the explicit API raises UnsupportedAlgorithm."""
    ca: Ca = pki["ca"]
    cert, key = issue(ca, ed25519.Ed25519PrivateKey.generate(), tmp_path, "ed")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with caplog.at_level(logging.WARNING, logger="qatpy.ssl"):
        ctx.load_cert_chain(cert, key)
    assert any("not offloaded" in r.getMessage() and "Ed25519" in r.getMessage() for r in caplog.records)
    with TLSServer(ctx) as srv:
        before = ssl_counts(installed)
        r = s_client(srv.port, ca.path, "-tls1_3")
        assert r.returncode == 0 and r.verified and r.sigtype == "ed25519", r.output
        assert delta(ssl_counts(installed), before) == {}
    with pytest.raises(UnsupportedAlgorithm, match="Ed25519"):
        qatpy.ssl.load_cert_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cert, key)


def test_key_reference_path_for_other_loaders(pki, engine):
    """key_reference() gives a path that a plain load_cert_chain reads as the key while open; closed, it no longer loads."""
    cert, key = pki["p521"]
    with qatpy.ssl.key_reference(key, engine=engine) as ref:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, ref.path)
    with TLSServer(ctx) as srv:
        before = ssl_counts(engine)
        r = s_client(srv.port, pki["ca"].path, "-tls1_3", "-sigalgs", "ecdsa_secp521r1_sha512")
        assert r.returncode == 0 and r.verified and r.sigtype == "ECDSA", r.output
        assert delta(ssl_counts(engine), before) == signed(engine, 1)
    with pytest.raises((ssl.SSLError, FileNotFoundError)):
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, ref.path)


SIM_FAULTS = [
    # fault plan, the key kind it hits, the fallback reason it is counted under, engine options
    ({"cb_fail": 2}, "p256", "device_error", {}),
    ({"lost": 2}, "p384", "deadline", {}),
    ({"rsa_bitflip": 2}, "rsa2048", "verify_failed", {}),
    ({"ecdsa_bitflip": 2}, "p256", "verify_failed", {"verify_ecdsa": True}),
]


@pytest.mark.parametrize(
    "faults,kind,reason,options", SIM_FAULTS, ids=[f"{next(iter(f[0]))}-{f[2]}" for f in SIM_FAULTS]
)
def test_device_faults_never_break_a_handshake(pki, qatpy_sim, faults, kind, reason, options):
    """A failed answer, a lost one (short deadline), a corrupted RSA result or (verify_ecdsa=True) a corrupted ECDSA one: every handshake completes and verifies, the bad ones re-signed in software and counted by reason."""
    eng = qatpy_sim(faults=faults, deadline=0.2, fallback="on_error", **options)
    before = ssl_counts(eng)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    qatpy.ssl.load_cert_chain(ctx, *pki[kind], engine=eng)
    with TLSServer(ctx) as srv:
        for _ in range(4):
            r = s_client(srv.port, pki["ca"].path, "-tls1_3")
            assert r.returncode == 0 and r.verified, r.output
    got = delta(ssl_counts(eng), before)
    # Two answers lost make the shim check the device's heartbeat and reset it: handshakes meanwhile
    # are signed in software at once (device_unavailable) rather than waiting for a deadline.
    resetting = got.pop("fallback_device_unavailable", 0) if reason == "deadline" else 0
    want = {"signs": 4, "device": 2 - resetting, "device_completed": 2 - resetting, f"fallback_{reason}": 2}
    assert got == {k: v for k, v in want.items() if v}, got
    assert eng.stats()["fallbacks"].get(reason) == 2


def _two_handshakes(pki, eng, kind):
    """Two TLS 1.3 handshakes against a server with `kind`'s key on `eng`: the s_client results and the counter increments."""
    before = ssl_counts(eng)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    qatpy.ssl.load_cert_chain(ctx, *pki[kind], engine=eng)
    with TLSServer(ctx) as srv:
        first = s_client(srv.port, pki["ca"].path, "-tls1_3")
        second = s_client(srv.port, pki["ca"].path, "-tls1_3")
    return first, second, delta(ssl_counts(eng), before)


def test_ecdsa_fault_reaches_the_client_without_verify_ecdsa(pki, qatpy_sim):
    """With verify_ecdsa off (the default) a corrupted ECDSA handshake signature leaves the server and the client rejects that handshake: the check is what keeps it in."""
    bad, good, counts = _two_handshakes(pki, qatpy_sim(faults={"ecdsa_bitflip": 1}, fallback="on_error"), "p256")
    # The chain verifies; the handshake signature does not (OpenSSL: "bad signature").
    assert bad.returncode != 0 and "bad signature" in bad.output, bad.output
    assert good.returncode == 0 and good.verified, good.output
    assert counts == {"signs": 2, "device": 2, "device_completed": 2}


def test_device_fault_under_never_fails_the_handshake_only(pki, qatpy_sim):
    """Under fallback='never' a corrupted result fails that handshake (the client sees an alert, never a bad signature); the next one succeeds."""
    bad, good, counts = _two_handshakes(pki, qatpy_sim(faults={"rsa_bitflip": 1}, fallback="never"), "rsa2048")
    # The server aborts that handshake with an alert: the client never receives a signature.
    assert bad.returncode != 0 and bad.sigtype is None and "alert" in bad.output, bad.output
    assert good.returncode == 0 and good.verified, good.output
    assert counts == {"signs": 2, "device": 1, "device_completed": 1, "failed": 1}


@pytest.mark.parametrize("backend", ["software", "sim"])
def test_rsa_1024_and_other_sizes_sign_too(tmp_path, pki, backend):
    """An RSA-1024 key (not a size the device takes) is held and signs in software like any other, counted as such on a device engine."""
    key = rsa.generate_private_key(65537, 1024)
    cert, keyfile = issue(pki["ca"], key, tmp_path, "small")
    with qatpy.Engine(backend) as eng:
        before = ssl_counts(eng)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        qatpy.ssl.load_cert_chain(ctx, cert, keyfile, engine=eng)
        with TLSServer(ctx) as srv:
            r = s_client(srv.port, pki["ca"].path, "-tls1_2", "-cipher", "DEFAULT:@SECLEVEL=0")
            assert r.returncode == 0 and r.verified, r.output
        want = {"signs": 1, "software": 1} if backend == "software" else {"signs": 1, "fallback_unsupported": 1}
        assert delta(ssl_counts(eng), before) == want


def test_unsupported_curve_in_explicit_api(tmp_path, pki):
    """A secp256k1 key is refused by qatpy.ssl.load_cert_chain with UnsupportedAlgorithm naming the curve."""
    key = ec.generate_private_key(ec.SECP256K1())
    cert, keyfile = issue(pki["ca"], key, tmp_path, "k1")
    with qatpy.Engine("software") as eng, pytest.raises(UnsupportedAlgorithm, match="secp256k1"):
        qatpy.ssl.load_cert_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cert, keyfile, engine=eng)


def test_stats_reports_the_install_engine(installed):
    """qatpy.ssl.stats() reports this process, the install engine's backend and its counters."""
    st = qatpy.ssl.stats()
    assert st["pid"] == os.getpid() and st["installed"] is True and st["backend"] == installed.backend
    assert st["signs"] == ssl_counts(installed)["signs"]


def test_context_must_be_an_sslcontext(tmp_path: Path):
    """load_cert_chain refuses a context that is not an SSLContext with TypeError."""
    with pytest.raises(TypeError, match="SSLContext"):
        qatpy.ssl.load_cert_chain(object(), tmp_path / "c", tmp_path / "k")  # type: ignore[arg-type]


def test_tls12_rsa_key_exchange_still_works(pki, engine):
    """A context that allows TLS 1.2 RSA key exchange (set_ciphers('DEFAULT')) completes it: the provider decrypts in software; no signature is made or counted."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers("DEFAULT")
    qatpy.ssl.load_cert_chain(ctx, *pki["rsa2048"], engine=engine)
    with TLSServer(ctx) as srv:
        before = ssl_counts(engine)
        r = s_client(srv.port, pki["ca"].path, "-tls1_2", "-cipher", "AES128-GCM-SHA256")
        assert r.returncode == 0 and r.verified and "Cipher is AES128-GCM-SHA256" in r.output, r.output
        assert r.sigtype is None and delta(ssl_counts(engine), before) == {}
        python_client(srv.port, pki["ca"].path, ssl.TLSVersion.TLSv1_2)  # and ECDHE still signs
        assert delta(ssl_counts(engine), before) == signed(engine, 1)


def test_install_from_many_threads_at_once(engine):
    """Eight threads calling install() together leave exactly one interception in place."""
    barrier = threading.Barrier(8)

    def go() -> None:
        barrier.wait(TIMEOUT)
        qatpy.ssl.install(engine=engine)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    try:
        wrapper = ssl.SSLContext.load_cert_chain
        assert wrapper.__qatpy_original__ is ssl.SSLContext.__mro__[1].load_cert_chain
        assert qatpy.ssl.installed()
    finally:
        qatpy.ssl.uninstall()
    assert "load_cert_chain" not in vars(ssl.SSLContext)


EXIT_SCRIPT = """
import gc, socket, ssl, sys, threading
import qatpy, qatpy.ssl
cert, key, ca = sys.argv[1:4]
eng = qatpy.Engine("software")
CTX = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)          # kept alive to interpreter exit
qatpy.ssl.load_cert_chain(CTX, cert, key, engine=eng)
eng.close()
del eng
gc.collect()                                            # Python's engine object is gone
a, b = socket.socketpair()
t = threading.Thread(target=lambda: CTX.wrap_socket(a, server_side=True).recv(1))
t.start()
client = ssl.create_default_context(cafile=ca)
with client.wrap_socket(b, server_hostname="localhost") as tls:
    tls.sendall(b"x")
    print(tls.version())
t.join()
"""


def test_context_outlives_its_engine_to_interpreter_exit(pki):
    """A context whose engine was closed and collected still handshakes (software fallback) and the process exits cleanly: keys hold the C engine, exit only drops references."""
    cert, key = pki["p256"]
    p = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, str(cert), str(key), str(pki["ca"].path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "TLSv1.3"
