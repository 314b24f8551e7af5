"""A small certificate authority whose CA key signs on the engine."""

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import qatpy


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


with qatpy.Engine() as engine:
    ca_key = engine.wrap_key(ec.generate_private_key(ec.SECP384R1()))
    now = datetime.datetime.now(datetime.timezone.utc)
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("qatpy demo CA"))
        .issuer_name(name("qatpy demo CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA384())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(name("server.test")).sign(leaf_key, hashes.SHA256())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=7))
        .sign(ca_key, hashes.SHA384())
    )
    leaf.verify_directly_issued_by(ca)
    print(f"issued {leaf.subject.rfc4514_string()} by {ca.subject.rfc4514_string()} on {engine.backend}")
