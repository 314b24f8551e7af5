/*
 * Pure encoding helpers: EMSA-PKCS1-v1_5, ECDSA digest truncation, nonce
 * sampling, DER for (r, s), NIST curve constants.  No device, no locks
 * (except the one-time curve table init), so they are unit-tested alone.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include "shim_internal.h"

/* ---- EMSA-PKCS1-v1_5 ---------------------------------------------------- */

/* DER of DigestInfo up to (not including) the hash value: RFC 8017 9.2 note 1. */
static const uint8_t di_sha224[] = {0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                    0x65, 0x03, 0x04, 0x02, 0x04, 0x05, 0x00, 0x04, 0x1c};
static const uint8_t di_sha256[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                    0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20};
static const uint8_t di_sha384[] = {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                    0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30};
static const uint8_t di_sha512[] = {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                    0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40};

static const uint8_t *digest_info(int hash_id, size_t *prefix_len, size_t *hash_len)
{
    switch (hash_id) {
    case QATPY_HASH_SHA224:
        *prefix_len = sizeof di_sha224;
        *hash_len = 28;
        return di_sha224;
    case QATPY_HASH_SHA256:
        *prefix_len = sizeof di_sha256;
        *hash_len = 32;
        return di_sha256;
    case QATPY_HASH_SHA384:
        *prefix_len = sizeof di_sha384;
        *hash_len = 48;
        return di_sha384;
    case QATPY_HASH_SHA512:
        *prefix_len = sizeof di_sha512;
        *hash_len = 64;
        return di_sha512;
    default:
        return NULL;
    }
}

size_t qps_hash_len(int hash_id)
{
    size_t pl, hl;
    return digest_info(hash_id, &pl, &hl) ? hl : 0;
}

int qps_pkcs1_encode(int hash_id, const uint8_t *digest, size_t digest_len, uint8_t *em,
                     size_t em_len)
{
    size_t plen, hlen;
    const uint8_t *prefix = digest_info(hash_id, &plen, &hlen);
    if (!prefix || !digest || digest_len != hlen)
        return -1;
    size_t tlen = plen + hlen;
    /* 0x00 0x01 PS(>= 8 x 0xff) 0x00 T */
    if (em_len < tlen + 11)
        return -1;
    size_t ps = em_len - tlen - 3;
    em[0] = 0x00;
    em[1] = 0x01;
    memset(em + 2, 0xff, ps);
    em[2 + ps] = 0x00;
    memcpy(em + 3 + ps, prefix, plen);
    memcpy(em + 3 + ps + plen, digest, hlen);
    return 0;
}

/* ---- big-endian helpers ------------------------------------------------- */

int qps_be_less(const uint8_t *a, const uint8_t *b, size_t len)
{
    /* a - b from the least significant byte; a final borrow means a < b. */
    unsigned borrow = 0;
    for (size_t i = len; i-- > 0;) {
        unsigned d = (unsigned)a[i] - (unsigned)b[i] - borrow;
        borrow = (d >> 8) & 1u;
    }
    return (int)borrow;
}

int qps_be_is_zero(const uint8_t *a, size_t len)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < len; i++)
        acc |= a[i];
    return acc == 0;
}

size_t qps_be_strip(const uint8_t **p, size_t len)
{
    const uint8_t *q = *p;
    while (len > 0 && *q == 0) {
        q++;
        len--;
    }
    *p = q;
    return len;
}

void qps_wipe(void *p, size_t len)
{
    if (p && len)
        explicit_bzero(p, len);
}

/* ---- ECDSA -------------------------------------------------------------- */

void qps_truncate_digest(const uint8_t *digest, size_t digest_len, unsigned bits, uint8_t *m,
                         size_t len)
{
    memset(m, 0, len);
    if (digest_len * 8 <= bits) {
        /* Whole digest fits (digest_len <= len follows from bits <= 8 * len). */
        if (digest_len)
            memcpy(m + len - digest_len, digest, digest_len);
        return;
    }
    /* digest_len > bits/8 implies digest_len >= len: take the leftmost len
     * bytes, then drop the 8*len - bits surplus low bits (only P-521: 7). */
    memcpy(m, digest, len);
    unsigned shift = (unsigned)(len * 8 - bits);
    if (shift == 0)
        return;
    for (size_t i = len; i-- > 0;) {
        unsigned v = (unsigned)m[i] >> shift;
        if (i > 0)
            v |= ((unsigned)m[i - 1] << (8 - shift)) & 0xffu;
        m[i] = (uint8_t)v;
    }
}

int qps_rng_os(uint8_t *buf, size_t len)
{
    while (len > 0) {
        ssize_t got = getrandom(buf, len, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += got;
        len -= (size_t)got;
    }
    return 0;
}

int qps_random_scalar(uint8_t *k, const uint8_t *n, size_t len, unsigned bits, qps_rng_fn rng)
{
    unsigned excess = (unsigned)(len * 8 - bits); /* 0..7 */
    uint8_t mask = (uint8_t)(0xffu >> excess);
    /* Each draw is uniform on [0, 2^bits); accept iff 0 < k < n.  For the NIST
     * orders a rejection happens with probability < 2^-32 per draw. */
    for (int tries = 0; tries < 1024; tries++) {
        if (rng(k, len) != 0)
            break;
        k[0] &= mask;
        if (!qps_be_is_zero(k, len) && qps_be_less(k, n, len))
            return 0;
    }
    qps_wipe(k, len);
    return -1;
}

static size_t der_integer(const uint8_t *v, size_t len, uint8_t *out)
{
    size_t i = 0;
    while (i + 1 < len && v[i] == 0)
        i++;
    size_t n = len - i;
    size_t pad = (v[i] & 0x80) ? 1 : 0; /* keep the INTEGER positive */
    out[0] = 0x02;
    out[1] = (uint8_t)(n + pad); /* <= 67: short form */
    if (pad)
        out[2] = 0x00;
    memcpy(out + 2 + pad, v + i, n);
    return 2 + pad + n;
}

size_t qps_der_ecdsa(const uint8_t *r, const uint8_t *s, size_t len, uint8_t *out)
{
    uint8_t body[2 * (3 + QPS_MAX_CURVE_LEN)];
    if (len == 0 || len > QPS_MAX_CURVE_LEN)
        return 0;
    size_t a = der_integer(r, len, body);
    size_t b = der_integer(s, len, body + a);
    size_t content = a + b;
    size_t h = 0;
    out[h++] = 0x30;
    if (content > 127)
        out[h++] = 0x81; /* content <= 2 * 69 < 256: one length byte */
    out[h++] = (uint8_t)content;
    memcpy(out + h, body, content);
    return h + content;
}

/* ---- NIST curves ----------------------------------------------------- */

/* SEC 2 v2.0 sections 2.4.2, 2.5.1, 2.6.1 (= FIPS 186-4 D.1.2.3-D.1.2.5),
 * the shim's one copy; csrc/shim/tests/check_curves.py compares every byte
 * with the table in tests/abi_facts.py.  q is the field prime p. */

struct curve_hex {
    int id;
    unsigned bits;
    uint32_t len;
    const char *q, *a, *b, *n, *xg, *yg;
};

static const struct curve_hex curve_hex[QPS_NUM_CURVES] = {
    {QATPY_CURVE_P256, 256, 32,
     "ffffffff00000001000000000000000000000000ffffffffffffffffffffffff",
     "ffffffff00000001000000000000000000000000fffffffffffffffffffffffc",
     "5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b",
     "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551",
     "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296",
     "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5"},
    {QATPY_CURVE_P384, 384, 48,
     "fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000"
     "ffffffff",
     "fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000"
     "fffffffc",
     "b3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8ed"
     "d3ec2aef",
     "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196a"
     "ccc52973",
     "aa87ca22be8b05378eb1c71ef320ad746e1d3b628ba79b9859f741e082542a385502f25dbf55296c3a545e38"
     "72760ab7",
     "3617de4a96262c6f5d9e98bf9292dc29f8f41dbd289a147ce9da3113b5f0b8c00a60b1ce1d7e819d7a431d7c"
     "90ea0e5f"},
    {QATPY_CURVE_P521, 521, 66,
     "01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
     "ffffffffffffffffffffffffffffffffffffffffffff",
     "01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
     "fffffffffffffffffffffffffffffffffffffffffffc",
     "0051953eb9618e1c9a1f929a21a0b68540eea2da725b99b315f3b8b489918ef109e156193951ec7e937b1652"
     "c0bd3bb1bf073573df883d2c34f1ef451fd46b503f00",
     "01fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffa51868783bf2f966b7fcc"
     "0148f709a5d03bb5c9b8899c47aebb6fb71e91386409",
     "00c6858e06b70404e9cd9e3ecb662395b4429c648139053fb521f828af606b4d3dbaa14b5e77efe75928fe1d"
     "c127a2ffa8de3348b3c1856a429bf97e7e31c2e5bd66",
     "011839296a789a3bc0045c8a5fb42c7d1bd998f54449579b446817afbd17273e662c97ee72995ef42640c550"
     "b9013fad0761353c7086a272c24088be94769fd16650"},
};

static struct qps_curve curves[QPS_NUM_CURVES];
static pthread_once_t curves_once = PTHREAD_ONCE_INIT;

static unsigned hexval(char c)
{
    if (c >= '0' && c <= '9')
        return (unsigned)(c - '0');
    if (c >= 'a' && c <= 'f')
        return (unsigned)(c - 'a' + 10);
    return (unsigned)(c - 'A' + 10);
}

static void hex_to(uint8_t *out, size_t len, const char *hex)
{
    for (size_t i = 0; i < len; i++)
        out[i] = (uint8_t)(hexval(hex[2 * i]) << 4 | hexval(hex[2 * i + 1]));
}

static void curves_init(void)
{
    for (int i = 0; i < QPS_NUM_CURVES; i++) {
        const struct curve_hex *h = &curve_hex[i];
        struct qps_curve *c = &curves[i];
        c->id = h->id;
        c->bits = h->bits;
        c->len = h->len;
        hex_to(c->q, h->len, h->q);
        hex_to(c->a, h->len, h->a);
        hex_to(c->b, h->len, h->b);
        hex_to(c->n, h->len, h->n);
        hex_to(c->xg, h->len, h->xg);
        hex_to(c->yg, h->len, h->yg);
    }
}

const struct qps_curve *qps_curve_get(int curve_id)
{
    if (curve_id < QATPY_CURVE_P256 || curve_id > QATPY_CURVE_P521)
        return NULL;
    pthread_once(&curves_once, curves_init);
    return &curves[curve_id - QATPY_CURVE_P256];
}
