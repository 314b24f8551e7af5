"""The provider inside qatpy._native, driven through libcrypto's own API (ctypes):
key references decode to our keys, private export is refused, parameters
and matching answer like OpenSSL's, every signature scheme verifies with
cryptography, and the interpreter checks refuse with typed errors."""

from __future__ import annotations

import ctypes
import os
import ssl
import subprocess
import sys
import textwrap

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

import qatpy
import qatpy.ssl
from qatpy import _binding, _sslprov

EVP_PKEY_KEYPAIR = 0x87
EVP_PKEY_PUBLIC_KEY = 0x86
RSA_PKCS1_PADDING = 1
RSA_PKCS1_PSS_PADDING = 6


def _libcrypto() -> ctypes.CDLL:
    ssl.OPENSSL_VERSION  # noqa: B018 - _ssl (and so libcrypto.so.3) is loaded
    lib = ctypes.CDLL("libcrypto.so.3", mode=os.RTLD_NOLOAD)
    vp, cp, sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
    sigs = {
        "BIO_new_mem_buf": (vp, [cp, ctypes.c_int]),
        "BIO_free": (ctypes.c_int, [vp]),
        "PEM_read_bio_PrivateKey": (vp, [vp, vp, vp, vp]),
        "EVP_PKEY_free": (None, [vp]),
        "EVP_PKEY_is_a": (ctypes.c_int, [vp, cp]),
        "EVP_PKEY_get0_provider": (vp, [vp]),
        "OSSL_PROVIDER_get0_name": (cp, [vp]),
        "EVP_PKEY_get_bits": (ctypes.c_int, [vp]),
        "EVP_PKEY_get_security_bits": (ctypes.c_int, [vp]),
        "EVP_PKEY_get_size": (ctypes.c_int, [vp]),
        "EVP_PKEY_get_utf8_string_param": (ctypes.c_int, [vp, cp, cp, sz, ctypes.POINTER(sz)]),
        "EVP_PKEY_todata": (ctypes.c_int, [vp, ctypes.c_int, ctypes.POINTER(vp)]),
        "OSSL_PARAM_free": (None, [vp]),
        "EVP_PKEY_eq": (ctypes.c_int, [vp, vp]),
        "EVP_MD_CTX_new": (vp, []),
        "EVP_MD_CTX_free": (None, [vp]),
        "EVP_DigestSignInit_ex": (ctypes.c_int, [vp, ctypes.POINTER(vp), cp, vp, cp, vp, vp]),
        "EVP_DigestSign": (ctypes.c_int, [vp, cp, ctypes.POINTER(sz), cp, sz]),
        "EVP_DigestSignUpdate": (ctypes.c_int, [vp, cp, sz]),
        "EVP_DigestSignFinal": (ctypes.c_int, [vp, cp, ctypes.POINTER(sz)]),
        "EVP_PKEY_CTX_set_rsa_padding": (ctypes.c_int, [vp, ctypes.c_int]),
        "EVP_PKEY_CTX_set_rsa_pss_saltlen": (ctypes.c_int, [vp, ctypes.c_int]),
        "EVP_PKEY_CTX_set_rsa_mgf1_md_name": (ctypes.c_int, [vp, cp, cp]),
        "ERR_clear_error": (None, []),
    }
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


C = _libcrypto()


class OsslKey:
    """An EVP_PKEY read by libcrypto from a PEM (here: a qatpy key reference)."""

    def __init__(self, pem: bytes) -> None:
        bio = C.BIO_new_mem_buf(pem, len(pem))
        self.ptr = C.PEM_read_bio_PrivateKey(bio, None, None, None)
        C.BIO_free(bio)
        C.ERR_clear_error()

    def free(self) -> None:
        if self.ptr:
            C.EVP_PKEY_free(self.ptr)
            self.ptr = None

    def provider(self) -> str:
        return C.OSSL_PROVIDER_get0_name(C.EVP_PKEY_get0_provider(self.ptr)).decode()

    def utf8(self, name: str) -> str | None:
        buf = ctypes.create_string_buffer(80)
        n = ctypes.c_size_t()
        if not C.EVP_PKEY_get_utf8_string_param(self.ptr, name.encode(), buf, 80, ctypes.byref(n)):
            return None
        return buf.value.decode()

    def sign(
        self,
        msg: bytes,
        md: str,
        pad: int | None = None,
        saltlen: int | None = None,
        mgf1: str | None = None,
        stream: bool = False,
    ) -> bytes:
        mdctx = C.EVP_MD_CTX_new()
        pctx = ctypes.c_void_p()
        try:
            assert C.EVP_DigestSignInit_ex(mdctx, ctypes.byref(pctx), md.encode(), None, None, self.ptr, None) == 1
            if pad is not None:
                assert C.EVP_PKEY_CTX_set_rsa_padding(pctx, pad) > 0
            if saltlen is not None:
                assert C.EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, saltlen) > 0
            if mgf1 is not None:
                assert C.EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, mgf1.encode(), None) > 0
            n = ctypes.c_size_t(0)
            if stream:
                half = len(msg) // 2
                assert C.EVP_DigestSignUpdate(mdctx, msg[:half], half) == 1
                assert C.EVP_DigestSignUpdate(mdctx, msg[half:], len(msg) - half) == 1
                assert C.EVP_DigestSignFinal(mdctx, None, ctypes.byref(n)) == 1
                buf = ctypes.create_string_buffer(n.value)
                assert C.EVP_DigestSignFinal(mdctx, buf, ctypes.byref(n)) == 1
            else:
                assert C.EVP_DigestSign(mdctx, None, ctypes.byref(n), msg, len(msg)) == 1
                buf = ctypes.create_string_buffer(n.value)
                assert C.EVP_DigestSign(mdctx, buf, ctypes.byref(n), msg, len(msg)) == 1
            return buf.raw[: n.value]
        finally:
            C.EVP_MD_CTX_free(mdctx)


@pytest.fixture(scope="module")
def engine():
    with qatpy.Engine("software") as eng:
        yield eng


@pytest.fixture
def reference(engine):
    """reference(key) -> an OsslKey read from a fresh key reference (freed, unregistered after)."""
    made: list[tuple[OsslKey, object]] = []

    def make(key: object) -> OsslKey:
        pkey = _sslprov.make_pkey(engine, key)
        ref_id = pkey.register()
        ok = OsslKey(_sslprov.reference_pem(ref_id))
        assert _binding.pkey_unregister(ref_id)
        made.append((ok, pkey))
        return ok

    yield make
    for ok, pkey in made:
        ok.free()
        pkey.release()


def test_reference_decodes_to_our_key(reference, rsa_keys, ec_keys):
    """A key reference PEM read by libcrypto is an RSA/EC key of provider qatpy with the key's size and curve."""
    r = reference(rsa_keys[2048])
    assert r.ptr and r.provider() == "qatpy" and C.EVP_PKEY_is_a(r.ptr, b"RSA") == 1
    assert (C.EVP_PKEY_get_bits(r.ptr), C.EVP_PKEY_get_size(r.ptr), C.EVP_PKEY_get_security_bits(r.ptr)) == (
        2048,
        256,
        112,
    )
    e = reference(ec_keys["secp384r1"])
    assert e.ptr and e.provider() == "qatpy" and C.EVP_PKEY_is_a(e.ptr, b"EC") == 1
    assert (C.EVP_PKEY_get_bits(e.ptr), C.EVP_PKEY_get_security_bits(e.ptr)) == (384, 192)
    assert e.utf8("group") == "secp384r1" and e.utf8("default-digest") == "SHA256"


def test_private_export_refused_public_export_given(reference, rsa_keys, ec_keys):
    """Export of the key pair fails (so OpenSSL signs with us); export of the public part succeeds."""
    for key in (rsa_keys[2048], ec_keys["secp256r1"]):
        r = reference(key)
        out = ctypes.c_void_p()
        assert C.EVP_PKEY_todata(r.ptr, EVP_PKEY_KEYPAIR, ctypes.byref(out)) == 0
        C.ERR_clear_error()
        assert C.EVP_PKEY_todata(r.ptr, EVP_PKEY_PUBLIC_KEY, ctypes.byref(out)) == 1 and out.value
        C.OSSL_PARAM_free(out)


def test_unregistered_or_unknown_reference_does_not_load(engine, rsa_keys):
    """Once unregistered, a reference no longer decodes; a made-up id never does."""
    pkey = _sslprov.make_pkey(engine, rsa_keys[2048])
    try:
        ref_id = pkey.register()
        assert _binding.pkey_unregister(ref_id)
        assert not _binding.pkey_unregister(ref_id)
        assert OsslKey(_sslprov.reference_pem(ref_id)).ptr is None
        assert OsslKey(_sslprov.reference_pem("ab" * 32)).ptr is None
    finally:
        pkey.release()


def test_matching_compares_public_keys(reference, rsa_keys):
    """Two references to one key are equal; references to different keys are not."""
    a, b, c = reference(rsa_keys[2048]), reference(rsa_keys[2048]), reference(rsa_keys[3072])
    assert C.EVP_PKEY_eq(a.ptr, b.ptr) == 1
    assert C.EVP_PKEY_eq(a.ptr, c.ptr) != 1
    C.ERR_clear_error()


HASHES = {
    "SHA256": hashes.SHA256(),
    "SHA384": hashes.SHA384(),
    "SHA512": hashes.SHA512(),
    "SHA224": hashes.SHA224(),
    "SHA1": hashes.SHA1(),
}


@pytest.mark.parametrize("md", list(HASHES))
@pytest.mark.parametrize("stream", [False, True], ids=["oneshot", "update-final"])
def test_rsa_pkcs1_signatures_verify(reference, rsa_keys, engine, md, stream):
    """RSA PKCS#1 v1.5 through the provider verifies with cryptography, one-shot and streamed, every digest."""
    key = rsa_keys[2048]
    before = engine.stats()["ssl"]["software"]
    sig = reference(key).sign(b"message to sign" * 10, md, RSA_PKCS1_PADDING, stream=stream)
    key.public_key().verify(sig, b"message to sign" * 10, padding.PKCS1v15(), HASHES[md])
    assert engine.stats()["ssl"]["software"] == before + 1


@pytest.mark.parametrize(
    "saltlen,expect",
    [(-1, "digest"), (-2, "max"), (-3, "max"), (20, 20)],
    ids=["digest", "auto", "max", "20"],
)
@pytest.mark.parametrize("bits", [2048, 4096])
def test_rsa_pss_signatures_verify(reference, rsa_keys, bits, saltlen, expect):
    """RSA-PSS with each salt length setting (and MGF1 = the digest) verifies with cryptography's exact salt length."""
    key = rsa_keys[bits]
    sig = reference(key).sign(b"pss", "SHA384", RSA_PKCS1_PSS_PADDING, saltlen)
    h = hashes.SHA384()
    salt = h.digest_size if expect == "digest" else (bits + 7) // 8 - h.digest_size - 2 if expect == "max" else expect
    key.public_key().verify(sig, b"pss", padding.PSS(padding.MGF1(h), salt), h)


def test_rsa_pss_with_other_mgf1_digest_verifies(reference, rsa_keys):
    """RSA-PSS with SHA-256 as message digest and SHA-512 for MGF1 verifies."""
    key = rsa_keys[3072]
    sig = reference(key).sign(b"mgf", "SHA256", RSA_PKCS1_PSS_PADDING, -1, mgf1="SHA512")
    key.public_key().verify(sig, b"mgf", padding.PSS(padding.MGF1(hashes.SHA512()), 32), hashes.SHA256())


@pytest.mark.parametrize("curve", ["secp256r1", "secp384r1", "secp521r1"])
@pytest.mark.parametrize("stream", [False, True], ids=["oneshot", "update-final"])
def test_ecdsa_signatures_verify(reference, ec_keys, curve, stream):
    """ECDSA on each curve through the provider verifies with cryptography."""
    key = ec_keys[curve]
    md = {"secp256r1": "SHA256", "secp384r1": "SHA384", "secp521r1": "SHA512"}[curve]
    sig = reference(key).sign(b"ecdsa message", md, stream=stream)
    key.public_key().verify(sig, b"ecdsa message", ec.ECDSA(HASHES[md]))


def test_unsupported_keys_raise_unsupported(engine):
    """Ed25519 and secp256k1 keys are refused with qatpy's Unsupported naming the type or curve."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    with pytest.raises(_sslprov.Unsupported, match="Ed25519"):
        _sslprov.make_pkey(engine, ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(_sslprov.Unsupported, match="secp256k1"):
        _sslprov.make_pkey(engine, ec.generate_private_key(ec.SECP256K1()))


def test_keys_and_registrations_are_released(engine, rsa_keys):
    """A provider key's references go back to Python's alone after a load; no registration is left behind."""
    pkey = _sslprov.make_pkey(engine, rsa_keys[2048])
    try:
        before = _binding.pkey_registered()
        with _sslprov.registered(pkey) as path:
            assert _binding.pkey_registered() == before + 1 and pkey.refs() == 2
            k = OsslKey(open(path, "rb").read())
            assert k.ptr and pkey.refs() == 3
            k.free()
        assert _binding.pkey_registered() == before and pkey.refs() == 1
    finally:
        pkey.release()


def test_available_here():
    """This interpreter's _ssl links the system libcrypto.so.3: available() is True and check() passes."""
    assert qatpy.ssl.available() is True
    qatpy.ssl.check()


def _run_fresh(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60, env=env
    )


def test_refusals_name_the_cause():
    """An _ssl built in (no module path), a different version number and an _ssl that is not a loaded shared
    object each refuse with their cause, before the provider is loaded; then the real one loads."""
    p = _run_fresh(
        """
        from qatpy import _binding
        names = _binding.provider_error_names()
        print(names[_binding.provider_load(None, 0)[0]])
        import ssl, _ssl
        rc, msg = _binding.provider_load(_ssl.__file__, ssl.OPENSSL_VERSION_NUMBER + 1)
        print(names[rc], "ssl.OPENSSL_VERSION_NUMBER" in msg)
        rc, msg = _binding.provider_load("/nonexistent/_ssl.so", ssl.OPENSSL_VERSION_NUMBER)
        print(names[rc])
        print(_binding.provider_load(_ssl.__file__, ssl.OPENSSL_VERSION_NUMBER)[0])
        """
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.split("\n")[:4] == ["STATIC", "VERSION True", "STATIC", "0"]


def test_fips_default_properties_refused(tmp_path):
    """An OpenSSL config with default_properties=fips=yes makes check() raise SslProviderError(cause='fips')."""
    conf = tmp_path / "fips.cnf"
    conf.write_text("openssl_conf = init\n[init]\nalg_section = algs\n[algs]\ndefault_properties = fips=yes\n")
    env = dict(os.environ, OPENSSL_CONF=str(conf))
    p = _run_fresh(
        """
        import qatpy.ssl
        try:
            qatpy.ssl.check()
        except qatpy.SslProviderError as exc:
            print(exc.cause, "fips=yes" in str(exc))
        print(qatpy.ssl.available())
        """,
        env,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["fips", "True", "False"]
