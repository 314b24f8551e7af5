"""Drop-in keys: PyJWT and cryptography's x509 builders accept qatpy keys unchanged."""

from __future__ import annotations

import datetime

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.x509.oid import NameOID

import qatpy


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256"])
def test_pyjwt(engine, rsa_keys, ec_keys, alg):
    """PyJWT signs with a qatpy key and the token verifies with the real public key."""
    raw = ec_keys["secp256r1"] if alg == "ES256" else rsa_keys[2048]
    key = engine.wrap_key(raw)
    token = jwt.encode({"sub": "qatpy", "n": 1}, key, algorithm=alg)
    assert jwt.decode(token, raw.public_key(), algorithms=[alg]) == {"sub": "qatpy", "n": 1}


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@pytest.mark.parametrize("kind", ["rsa", "rsa-pss", "ec"])
def test_certificate_builder(engine, rsa_keys, ec_keys, kind):
    """CertificateBuilder.sign accepts a qatpy key; the self-signed certificate verifies."""
    raw = ec_keys["secp384r1"] if kind == "ec" else rsa_keys[2048]
    key = engine.wrap_key(raw)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name("qatpy test"))
        .issuer_name(_name("qatpy test"))
        .public_key(raw.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    kwargs = {}
    if kind == "rsa-pss":
        kwargs["rsa_padding"] = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
    cert = builder.sign(key, hashes.SHA256(), **kwargs)
    cert.verify_directly_issued_by(cert)
    if kind == "rsa":
        # Deterministic: identical to signing with cryptography's own key.
        assert cert.signature == raw.sign(cert.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA256())


def test_csr_builder(engine, ec_keys):
    """CertificateSigningRequestBuilder.sign accepts a qatpy key; the CSR's signature is valid."""
    key = engine.wrap_key(ec_keys["secp256r1"])
    csr = x509.CertificateSigningRequestBuilder().subject_name(_name("csr")).sign(key, hashes.SHA256())
    assert csr.is_signature_valid


def test_crl_builder(engine, rsa_keys):
    """CertificateRevocationListBuilder.sign accepts a qatpy key; the CRL's signature is valid."""
    raw = rsa_keys[2048]
    key = engine.wrap_key(raw)
    now = datetime.datetime.now(datetime.timezone.utc)
    revoked = x509.RevokedCertificateBuilder().serial_number(7).revocation_date(now).build()
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(_name("qatpy CA"))
        .last_update(now)
        .next_update(now + datetime.timedelta(days=1))
        .add_revoked_certificate(revoked)
        .sign(key, hashes.SHA256())
    )
    assert crl.is_signature_valid(raw.public_key())


def _self_signed(raw, key):
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(_name("localhost"))
        .public_key(raw.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_aioquic_server_handshake(engine, rsa_keys, ec_keys, kind):
    """An aioquic server configured with a qatpy key completes a QUIC handshake the client verifies."""
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection
    from aioquic.quic.events import HandshakeCompleted

    raw = rsa_keys[2048] if kind == "rsa" else ec_keys["secp256r1"]
    key = engine.wrap_key(raw)
    cert = _self_signed(raw, key)
    server_cfg = QuicConfiguration(is_client=False, alpn_protocols=["hq-interop"])
    server_cfg.certificate = cert
    server_cfg.private_key = key
    client_cfg = QuicConfiguration(is_client=True, alpn_protocols=["hq-interop"], server_name="localhost")
    client_cfg.cadata = cert.public_bytes(serialization.Encoding.PEM)

    before = _signed_count(engine)
    client = QuicConnection(configuration=client_cfg)
    server: QuicConnection | None = None
    client_addr, server_addr = ("127.0.0.1", 4433), ("127.0.0.1", 1234)
    now = 0.0
    client.connect(server_addr, now=now)
    done = {"client": False, "server": False}
    for _ in range(20):  # datagrams passed in memory, no sockets; bounded
        for data, _addr in client.datagrams_to_send(now=now):
            if server is None:
                server = QuicConnection(
                    configuration=server_cfg,
                    original_destination_connection_id=client.original_destination_connection_id,
                )
            server.receive_datagram(data, client_addr, now=now)
        if server is not None:
            for data, _addr in server.datagrams_to_send(now=now):
                client.receive_datagram(data, server_addr, now=now)
        for conn, name in ((client, "client"), (server, "server")):
            while conn is not None and (ev := conn.next_event()) is not None:
                if isinstance(ev, HandshakeCompleted):
                    done[name] = True
        if all(done.values()):
            break
    assert done == {"client": True, "server": True}
    assert _signed_count(engine) == before + 1  # the CertificateVerify went through the engine


def _signed_count(engine) -> int:
    st = engine.stats()
    sw = st.get("software", {})
    return int(st.get("completed", 0)) + int(sw.get("completed", 0)) + int(sw.get("sync_ops", 0))


def test_pyopenssl_gets_a_software_copy_and_is_warned_once(ec_keys):
    """A qatpy key handed to pyOpenSSL (which copies it into its bundled OpenSSL) warns once that it signs in software there."""
    crypto = pytest.importorskip("OpenSSL.crypto", reason="REPORT: pyOpenSSL is not installed; this case did not run")
    from qatpy import _keys

    _keys._warned_pyopenssl = False
    with qatpy.Engine("software") as eng:
        key = eng.wrap_key(ec_keys["secp256r1"])
        with pytest.warns(RuntimeWarning, match="pyOpenSSL.*software"):
            pkey = crypto.PKey.from_cryptography_key(key)
        assert pkey.bits() == 256
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            crypto.PKey.from_cryptography_key(key)  # once per process
            key.private_bytes(  # qatpy's own callers are not warned
                serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
