/*
 * Verify-after-sign for RSA: after the device answers a private-key
 * operation, check sig^e mod n == the block we submitted (the lesson of
 * CVE-2017-5681 and of OpenSSL's RSA-CRT self-check: a faulty CRT result
 * leaks the key if it is ever released).
 *
 * All values are public (n, e, the encoded block, the candidate
 * signature), so this is plain variable-time code: Montgomery
 * multiplication (CIOS) on 64-bit limbs with unsigned __int128 products,
 * left-to-right binary exponentiation.  For e = 65537 that is 16 squarings
 * and 2 multiplications plus the conversions in and out of Montgomery form.
 * The per-key context (limbs of n, -n^-1 mod 2^64, R^2 mod n) is built once
 * when the key is created.
 *
 * Where the process can load libcrypto.so.3 (OpenSSL 3, present wherever
 * Python's ssl module works), the exponentiation runs on its bignum code
 * instead: its assembly multiplies about twice as fast (RSA-2048 check: 36 us
 * portable, about 18 us libcrypto, on our 2-vCPU VM; test_verify --bench),
 * and the check runs on the poll thread for every RSA answer.  The functions
 * are resolved once by name with dlsym; nothing links against libcrypto, and
 * any missing function or failing call leaves the portable code to do it.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "shim_internal.h"

/* ---- libcrypto's bignum, resolved at run time --------------------------- */

/* The OpenSSL 3 functions used, with their documented signatures (BIGNUM,
 * BN_CTX and BN_MONT_CTX are opaque to callers, so void * stands for them). */
static struct {
    void *(*bin2bn)(const unsigned char *s, int len, void *ret);
    int (*bn2binpad)(const void *a, unsigned char *to, int tolen);
    void *(*bn_new)(void);
    void (*bn_free)(void *a);
    void *(*ctx_new)(void);
    void (*ctx_free)(void *c);
    void *(*mont_new)(void);
    int (*mont_set)(void *mont, const void *mod, void *ctx);
    void (*mont_free)(void *mont);
    int (*mod_exp_mont)(void *r, const void *a, const void *p, const void *m, void *ctx,
                        void *mont);
} bn;
static bool bn_ok;
static pthread_once_t bn_once = PTHREAD_ONCE_INIT;

#define BN_SYM(field, name)                                                                        \
    do {                                                                                           \
        void *f_ = dlsym(h, name);                                                                 \
        if (!f_)                                                                                   \
            return;                                                                                \
        memcpy(&bn.field, &f_, sizeof f_);                                                         \
    } while (0)

static void bn_load(void)
{
    /* Never dlclosed: keys made later keep using the functions. */
    void *h = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_LOCAL);
    if (!h)
        return;
    BN_SYM(bin2bn, "BN_bin2bn");
    BN_SYM(bn2binpad, "BN_bn2binpad");
    BN_SYM(bn_new, "BN_new");
    BN_SYM(bn_free, "BN_free");
    BN_SYM(ctx_new, "BN_CTX_new");
    BN_SYM(ctx_free, "BN_CTX_free");
    BN_SYM(mont_new, "BN_MONT_CTX_new");
    BN_SYM(mont_set, "BN_MONT_CTX_set");
    BN_SYM(mont_free, "BN_MONT_CTX_free");
    BN_SYM(mod_exp_mont, "BN_mod_exp_mont");
    bn_ok = true;
}

/* n and its Montgomery context in libcrypto's form, or both left NULL. */
static void bn_attach(struct qps_mont *m, const uint8_t *n, size_t n_len)
{
    pthread_once(&bn_once, bn_load);
    if (!bn_ok)
        return;
    void *bn_n = bn.bin2bn(n, (int)n_len, NULL);
    void *mont = bn.mont_new();
    void *ctx = bn.ctx_new();
    if (bn_n && mont && ctx && bn.mont_set(mont, bn_n, ctx) == 1) {
        m->bn_n = bn_n;
        m->bn_mont = mont;
        bn_n = mont = NULL;
    }
    bn.ctx_free(ctx);
    bn.mont_free(mont);
    bn.bn_free(bn_n);
}

/* x^e mod n with libcrypto into out (out_len bytes); false if any step failed. */
static bool bn_modexp(const struct qps_mont *m, const uint8_t *x, size_t x_len, const uint8_t *e,
                      size_t e_len, uint8_t *out, size_t out_len)
{
    void *ctx = bn.ctx_new();
    void *bx = bn.bin2bn(x, (int)x_len, NULL);
    void *be = bn.bin2bn(e, (int)e_len, NULL);
    void *r = bn.bn_new();
    bool ok = ctx && bx && be && r && bn.mod_exp_mont(r, bx, be, m->bn_n, ctx, m->bn_mont) == 1 &&
              bn.bn2binpad(r, out, (int)out_len) == (int)out_len;
    bn.bn_free(r);
    bn.bn_free(be);
    bn.bn_free(bx);
    bn.ctx_free(ctx);
    return ok;
}

typedef unsigned __int128 u128;

/* Big-endian bytes (len <= 8 * k) -> k little-endian limbs. */
static void limbs_from_be(uint64_t *out, size_t k, const uint8_t *be, size_t len)
{
    memset(out, 0, k * sizeof *out);
    for (size_t i = 0; i < len; i++) {
        size_t bit = 8 * (len - 1 - i);
        out[bit / 64] |= (uint64_t)be[i] << (bit % 64);
    }
}

/* a >= b over k limbs. */
static int limbs_ge(const uint64_t *a, const uint64_t *b, size_t k)
{
    for (size_t i = k; i-- > 0;) {
        if (a[i] != b[i])
            return a[i] > b[i];
    }
    return 1;
}

/* a -= b over k limbs; returns the borrow. */
static uint64_t limbs_sub(uint64_t *a, const uint64_t *b, size_t k)
{
    uint64_t borrow = 0;
    for (size_t i = 0; i < k; i++) {
        u128 d = (u128)a[i] - b[i] - borrow;
        a[i] = (uint64_t)d;
        borrow = (uint64_t)(d >> 64) & 1; /* all ones on underflow */
    }
    return borrow;
}

/* -n0^-1 mod 2^64 for odd n0 (Newton: each step doubles the correct bits). */
static uint64_t neg_inv64(uint64_t n0)
{
    uint64_t x = n0; /* correct to 3 bits: n0 * n0 == 1 mod 8 */
    for (int i = 0; i < 5; i++)
        x *= 2 - n0 * x;
    return (uint64_t)0 - x;
}

/* r = a * b * R^-1 mod n (CIOS, multiplication and reduction fused in one
 * pass over the limbs).  a, b < n; r may alias a or b.  t has k + 1 limbs. */
static void mont_mul(uint64_t *r, const uint64_t *a, const uint64_t *b,
                     const struct qps_mont *m, uint64_t *restrict t)
{
    size_t k = m->k;
    const uint64_t *restrict n = m->n;
    const uint64_t n0 = m->n0;
    memset(t, 0, (k + 1) * sizeof *t);
    for (size_t i = 0; i < k; i++) {
        uint64_t bi = b[i];
        /* t + a*bi + q*n with q chosen so the lowest limb is 0; shift one limb. */
        u128 c1 = (u128)a[0] * bi + t[0];
        uint64_t q = (uint64_t)c1 * n0;
        u128 c2 = (u128)q * n[0] + (uint64_t)c1;
        for (size_t j = 1; j < k; j++) {
            c1 = (u128)a[j] * bi + t[j] + (uint64_t)(c1 >> 64);
            c2 = (u128)q * n[j] + (uint64_t)c1 + (uint64_t)(c2 >> 64);
            t[j - 1] = (uint64_t)c2;
        }
        u128 s = (u128)t[k] + (uint64_t)(c1 >> 64) + (uint64_t)(c2 >> 64);
        t[k - 1] = (uint64_t)s;
        t[k] = (uint64_t)(s >> 64);
    }
    /* t < 2n: one conditional subtraction. */
    if (t[k] != 0 || limbs_ge(t, n, k))
        limbs_sub(t, n, k);
    memcpy(r, t, k * sizeof *r);
}

struct qps_mont *qps_mont_new(const uint8_t *n, size_t n_len)
{
    n_len = qps_be_strip(&n, n_len);
    if (n_len == 0 || n_len > QATPY_MAX_RESULT || (n[n_len - 1] & 1) == 0)
        return NULL;
    size_t k = (n_len + 7) / 8;
    struct qps_mont *m = calloc(1, sizeof *m + 2 * k * sizeof(uint64_t));
    if (!m)
        return NULL;
    m->k = k;
    m->n = m->limbs;
    m->rr = m->limbs + k;
    limbs_from_be(m->n, k, n, n_len);
    m->n0 = neg_inv64(m->n[0]);
    bn_attach(m, n, n_len);
    /* R^2 mod n, R = 2^(64k): start from 1 and double 2 * 64k times mod n.
     * One-time per key (~0.1 ms for 2048 bits). */
    uint64_t *x = m->rr;
    x[0] = 1;
    for (size_t i = 0; i < 128 * k; i++) {
        uint64_t top = x[k - 1] >> 63;
        for (size_t j = k; j-- > 1;)
            x[j] = (x[j] << 1) | (x[j - 1] >> 63);
        x[0] <<= 1;
        if (top || limbs_ge(x, m->n, k))
            limbs_sub(x, m->n, k);
    }
    return m;
}

void qps_mont_free(struct qps_mont *m)
{
    if (!m)
        return;
    if (m->bn_mont)
        bn.mont_free(m->bn_mont);
    if (m->bn_n)
        bn.bn_free(m->bn_n);
    free(m);
}

bool qps_mont_uses_libcrypto(const struct qps_mont *m) { return m && m->bn_mont; }

int qps_mont_modexp(const struct qps_mont *m, const uint8_t *x, size_t x_len, const uint8_t *e,
                    size_t e_len, uint8_t *out, size_t out_len)
{
    if (m->bn_mont) {
        /* The same argument checks as the portable code, then libcrypto. */
        const uint8_t *xs = x, *es = e;
        size_t xl = qps_be_strip(&xs, x_len), el = qps_be_strip(&es, e_len);
        uint64_t xv[QATPY_MAX_RESULT / 8];
        if (xl > 8 * m->k || out_len < 8 * m->k - 7 || out_len > QATPY_MAX_RESULT)
            return -1;
        limbs_from_be(xv, m->k, xs, xl);
        if (limbs_ge(xv, m->n, m->k))
            return -1;
        if (el > 0 && bn_modexp(m, xs, xl, es, el, out, out_len))
            return 0;
    }
    return qps_mont_modexp_portable(m, x, x_len, e, e_len, out, out_len);
}

int qps_mont_modexp_portable(const struct qps_mont *m, const uint8_t *x, size_t x_len,
                             const uint8_t *e, size_t e_len, uint8_t *out, size_t out_len)
{
    enum { KMAX = QATPY_MAX_RESULT / 8 };
    size_t k = m->k;
    uint64_t xv[KMAX], xm[KMAX], acc[KMAX], t[KMAX + 1];
    x_len = qps_be_strip(&x, x_len);
    e_len = qps_be_strip(&e, e_len);
    if (x_len > 8 * k || out_len < 8 * k - 7 || out_len > QATPY_MAX_RESULT)
        return -1;
    limbs_from_be(xv, k, x, x_len);
    if (limbs_ge(xv, m->n, k))
        return -1; /* not a residue: no valid signature looks like this */
    if (e_len == 0) {
        memset(acc, 0, k * sizeof *acc);
        acc[0] = 1;
    } else {
        mont_mul(xm, xv, m->rr, m, t); /* x R mod n */
        memcpy(acc, xm, k * sizeof *acc);
        int started = 0;
        for (size_t i = 0; i < e_len; i++) {
            for (int b = 7; b >= 0; b--) {
                int bit = (e[i] >> b) & 1;
                if (!started) {
                    started = bit; /* the top bit: acc = x already */
                    continue;
                }
                mont_mul(acc, acc, acc, m, t);
                if (bit)
                    mont_mul(acc, acc, xm, m, t);
            }
        }
        memset(xv, 0, k * sizeof *xv);
        xv[0] = 1;
        mont_mul(acc, acc, xv, m, t); /* out of Montgomery form */
    }
    /* Limbs -> big-endian, out_len bytes (the value is < n, so it fits). */
    for (size_t i = 0; i < out_len; i++) {
        size_t bit = 8 * (out_len - 1 - i);
        out[i] = bit / 64 < k ? (uint8_t)(acc[bit / 64] >> (bit % 64)) : 0;
    }
    return 0;
}

bool qps_rsa_verify_block(const struct qps_mont *m, const uint8_t *e, size_t e_len,
                          const uint8_t *sig, const uint8_t *em, size_t len)
{
    uint8_t back[QATPY_MAX_RESULT];
    if (!m || len == 0 || len > QATPY_MAX_RESULT)
        return false;
    if (qps_mont_modexp(m, sig, len, e, e_len, back, len) != 0)
        return false;
    return memcmp(back, em, len) == 0;
}
