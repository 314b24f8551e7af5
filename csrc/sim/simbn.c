/*
 * Arithmetic for the simulated device, on top of libcrypto.so.3 loaded with
 * dlopen.  The declarations below are ours: opaque struct pointers and the
 * C signatures of the OpenSSL 3 public functions we call.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nistcurves.h"
#include "simbn.h"

typedef struct sim_bignum BIGNUM;
typedef struct sim_bn_ctx BN_CTX;
typedef struct sim_ec_group EC_GROUP;
typedef struct sim_ec_point EC_POINT;

#define SIMBN_FUNCS(X)                                                                    \
    X(BN_CTX *, BN_CTX_new, (void))                                                       \
    X(void, BN_CTX_free, (BN_CTX *))                                                      \
    X(BIGNUM *, BN_new, (void))                                                           \
    X(void, BN_clear_free, (BIGNUM *))                                                    \
    X(BIGNUM *, BN_bin2bn, (const unsigned char *, int, BIGNUM *))                        \
    X(int, BN_bn2binpad, (const BIGNUM *, unsigned char *, int))                          \
    X(int, BN_num_bits, (const BIGNUM *))                                                 \
    X(int, BN_cmp, (const BIGNUM *, const BIGNUM *))                                      \
    X(int, BN_is_zero, (const BIGNUM *))                                                  \
    X(int, BN_mod_exp, (BIGNUM *, const BIGNUM *, const BIGNUM *, const BIGNUM *, BN_CTX *)) \
    X(int, BN_nnmod, (BIGNUM *, const BIGNUM *, const BIGNUM *, BN_CTX *))                \
    X(int, BN_mod_sub, (BIGNUM *, const BIGNUM *, const BIGNUM *, const BIGNUM *, BN_CTX *)) \
    X(int, BN_mod_add, (BIGNUM *, const BIGNUM *, const BIGNUM *, const BIGNUM *, BN_CTX *)) \
    X(int, BN_mod_mul, (BIGNUM *, const BIGNUM *, const BIGNUM *, const BIGNUM *, BN_CTX *)) \
    X(int, BN_mul, (BIGNUM *, const BIGNUM *, const BIGNUM *, BN_CTX *))                  \
    X(int, BN_add, (BIGNUM *, const BIGNUM *, const BIGNUM *))                            \
    X(BIGNUM *, BN_mod_inverse, (BIGNUM *, const BIGNUM *, const BIGNUM *, BN_CTX *))     \
    X(EC_GROUP *, EC_GROUP_new_by_curve_name, (int))                                      \
    X(void, EC_GROUP_free, (EC_GROUP *))                                                  \
    X(EC_POINT *, EC_POINT_new, (const EC_GROUP *))                                       \
    X(void, EC_POINT_free, (EC_POINT *))                                                  \
    X(int, EC_POINT_mul,                                                                  \
      (const EC_GROUP *, EC_POINT *, const BIGNUM *, const EC_POINT *, const BIGNUM *, BN_CTX *)) \
    X(int, EC_POINT_get_affine_coordinates,                                               \
      (const EC_GROUP *, const EC_POINT *, BIGNUM *, BIGNUM *, BN_CTX *))                 \
    X(int, EC_POINT_set_affine_coordinates,                                               \
      (const EC_GROUP *, EC_POINT *, const BIGNUM *, const BIGNUM *, BN_CTX *))           \
    X(int, EC_POINT_is_at_infinity, (const EC_GROUP *, const EC_POINT *))

#define SIMBN_DECL(ret, name, args) static ret(*p_##name) args;
SIMBN_FUNCS(SIMBN_DECL)

/* OpenSSL NIDs of the NIST prime curves (stable public numbers). */
static const int k_nid[SIMBN_NCURVES] = {415, 715, 716};

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_ok;
static char g_err[256];

/* ---- NIST curves (constants in nistcurves.h) ------------------------- */
_Static_assert(sizeof sim_nist_curves / sizeof sim_nist_curves[0] == SIMBN_NCURVES,
               "one nistcurves.h entry per SIMBN_ curve");

static uint8_t g_curve_bytes[SIMBN_NCURVES][6][66];
static simbn_curve g_curves[SIMBN_NCURVES];
static pthread_once_t g_curve_once = PTHREAD_ONCE_INIT;

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    return c - 'a' + 10;
}

static void curves_init(void)
{
    for (int c = 0; c < SIMBN_NCURVES; c++) {
        const sim_nist_curve *nc = &sim_nist_curves[c];
        const char *hex[6] = {nc->p, nc->a, nc->b, nc->n, nc->xg, nc->yg};
        const uint8_t *mins[6];
        size_t lens[6];
        for (int f = 0; f < 6; f++) {
            uint8_t *dst = g_curve_bytes[c][f];
            for (size_t i = 0; i < nc->len; i++)
                dst[i] = (uint8_t)(hexval(hex[f][2 * i]) << 4 | hexval(hex[f][2 * i + 1]));
            size_t z = 0;
            while (z < nc->len && dst[z] == 0)
                z++;
            mins[f] = dst + z;
            lens[f] = nc->len - z;
        }
        g_curves[c] = (simbn_curve){.name = nc->name, .len = nc->len,
                                    .p = mins[0], .plen = lens[0], .a = mins[1], .alen = lens[1],
                                    .b = mins[2], .blen = lens[2], .n = mins[3], .nlen = lens[3],
                                    .xg = mins[4], .xglen = lens[4], .yg = mins[5], .yglen = lens[5]};
    }
}

const simbn_curve *simbn_curve_get(int id)
{
    pthread_once(&g_curve_once, curves_init);
    if (id < 0 || id >= SIMBN_NCURVES)
        return NULL;
    return &g_curves[id];
}

static void load(void)
{
    /* The handle is kept for the life of the process: resolved pointers
     * must stay valid for worker threads of any later start. */
    void *h = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        snprintf(g_err, sizeof(g_err), "qatpy-sim: cannot load libcrypto.so.3: %s", dlerror());
        return;
    }
#define SIMBN_LOAD(ret, name, args)                                                        \
    *(void **)(&p_##name) = dlsym(h, #name);                                               \
    if (p_##name == NULL) {                                                                \
        snprintf(g_err, sizeof(g_err), "qatpy-sim: libcrypto.so.3 lacks %s", #name);       \
        return;                                                                            \
    }
    SIMBN_FUNCS(SIMBN_LOAD)
    g_ok = 1;
}

int simbn_init(void)
{
    pthread_once(&g_once, load);
    pthread_once(&g_curve_once, curves_init);
    return g_ok ? 0 : -1;
}

const char *simbn_error(void)
{
    return g_err;
}

#define SIMBN_TMP 12

struct simbn_ctx {
    BN_CTX *bn;
    EC_GROUP *group[SIMBN_NCURVES];
    BIGNUM *t[SIMBN_TMP];
};

simbn_ctx *simbn_ctx_new(void)
{
    if (simbn_init() != 0)
        return NULL;
    simbn_ctx *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->bn = p_BN_CTX_new();
    int ok = c->bn != NULL;
    for (int i = 0; ok && i < SIMBN_NCURVES; i++)
        ok = (c->group[i] = p_EC_GROUP_new_by_curve_name(k_nid[i])) != NULL;
    for (int i = 0; ok && i < SIMBN_TMP; i++)
        ok = (c->t[i] = p_BN_new()) != NULL;
    if (!ok) {
        simbn_ctx_free(c);
        return NULL;
    }
    return c;
}

void simbn_ctx_free(simbn_ctx *c)
{
    if (c == NULL)
        return;
    /* BN_clear_free wipes: the temporaries held key material. */
    for (int i = 0; i < SIMBN_TMP; i++)
        if (c->t[i] != NULL)
            p_BN_clear_free(c->t[i]);
    for (int i = 0; i < SIMBN_NCURVES; i++)
        if (c->group[i] != NULL)
            p_EC_GROUP_free(c->group[i]);
    if (c->bn != NULL)
        p_BN_CTX_free(c->bn);
    free(c);
}

static BIGNUM *set(simbn_ctx *c, int i, const uint8_t *b, size_t len)
{
    return p_BN_bin2bn(b, (int)len, c->t[i]);
}

static int out(const BIGNUM *v, uint8_t *dst, size_t len)
{
    return p_BN_bn2binpad(v, dst, (int)len) == (int)len ? 0 : -1;
}

int simbn_rsa_crt(simbn_ctx *c, const uint8_t *in, size_t inlen, const uint8_t *p, size_t plen,
                  const uint8_t *q, size_t qlen, const uint8_t *dp, size_t dplen,
                  const uint8_t *dq, size_t dqlen, const uint8_t *qinv, size_t qinvlen,
                  uint8_t *dst, size_t outlen)
{
    BIGNUM *C = set(c, 0, in, inlen), *P = set(c, 1, p, plen), *Q = set(c, 2, q, qlen);
    BIGNUM *DP = set(c, 3, dp, dplen), *DQ = set(c, 4, dq, dqlen), *QI = set(c, 5, qinv, qinvlen);
    BIGNUM *m1 = c->t[6], *m2 = c->t[7], *h = c->t[8], *t = c->t[9], *r = c->t[10];
    if (!C || !P || !Q || !DP || !DQ || !QI)
        return -1;
    /* m1 = c^dP mod p, m2 = c^dQ mod q, h = qInv (m1 - m2) mod p, m = m2 + h q */
    if (!p_BN_nnmod(t, C, P, c->bn) || !p_BN_mod_exp(m1, t, DP, P, c->bn))
        return -1;
    if (!p_BN_nnmod(t, C, Q, c->bn) || !p_BN_mod_exp(m2, t, DQ, Q, c->bn))
        return -1;
    if (!p_BN_nnmod(t, m2, P, c->bn) || !p_BN_mod_sub(h, m1, t, P, c->bn) ||
        !p_BN_mod_mul(h, h, QI, P, c->bn))
        return -1;
    if (!p_BN_mul(t, h, Q, c->bn) || !p_BN_add(r, t, m2))
        return -1;
    if (p_BN_num_bits(r) > (int)(outlen * 8))
        return -1;
    return out(r, dst, outlen);
}

int simbn_rsa_exp(simbn_ctx *c, const uint8_t *in, size_t inlen, const uint8_t *n, size_t nlen,
                  const uint8_t *e, size_t elen, uint8_t *dst, size_t outlen)
{
    BIGNUM *C = set(c, 0, in, inlen), *N = set(c, 1, n, nlen), *E = set(c, 2, e, elen);
    BIGNUM *r = c->t[3];
    if (!C || !N || !E)
        return -1;
    if (!p_BN_mod_exp(r, C, E, N, c->bn))
        return -1;
    return out(r, dst, outlen);
}

int simbn_ecdsa_sign(simbn_ctx *c, int curve, const uint8_t *m, size_t mlen, const uint8_t *d,
                     size_t dlen, const uint8_t *k, size_t klen, uint8_t *rdst, uint8_t *sdst,
                     int *ok)
{
    const simbn_curve *cv = simbn_curve_get(curve);
    EC_GROUP *g = c->group[curve];
    BIGNUM *M = set(c, 0, m, mlen), *D = set(c, 1, d, dlen), *K = set(c, 2, k, klen);
    BIGNUM *N = set(c, 3, cv->n, cv->nlen);
    BIGNUM *x = c->t[4], *y = c->t[5], *r = c->t[6], *s = c->t[7], *ki = c->t[8], *t = c->t[9];
    *ok = 0;
    if (!M || !D || !K || !N)
        return -1;
    EC_POINT *R = p_EC_POINT_new(g);
    if (R == NULL)
        return -1;
    int rc = -1;
    /* r = x(kG) mod n; s = k^-1 (m + r d) mod n */
    if (!p_EC_POINT_mul(g, R, K, NULL, NULL, c->bn) ||
        !p_EC_POINT_get_affine_coordinates(g, R, x, y, c->bn) || !p_BN_nnmod(r, x, N, c->bn))
        goto done;
    if (p_BN_mod_inverse(ki, K, N, c->bn) == NULL)
        goto done;
    if (!p_BN_mod_mul(t, r, D, N, c->bn) || !p_BN_nnmod(s, M, N, c->bn) ||
        !p_BN_mod_add(t, t, s, N, c->bn) || !p_BN_mod_mul(s, ki, t, N, c->bn))
        goto done;
    *ok = !p_BN_is_zero(r) && !p_BN_is_zero(s);
    if (out(r, rdst, cv->len) != 0 || out(s, sdst, cv->len) != 0)
        goto done;
    rc = 0;
done:
    p_EC_POINT_free(R);
    return rc;
}

int simbn_ecdsa_verify(simbn_ctx *c, int curve, const uint8_t *m, size_t mlen, const uint8_t *r,
                       size_t rlen, const uint8_t *s, size_t slen, const uint8_t *xp,
                       size_t xplen, const uint8_t *yp, size_t yplen, int *valid)
{
    const simbn_curve *cv = simbn_curve_get(curve);
    EC_GROUP *g = c->group[curve];
    BIGNUM *M = set(c, 0, m, mlen), *R = set(c, 1, r, rlen), *S = set(c, 2, s, slen);
    BIGNUM *X = set(c, 3, xp, xplen), *Y = set(c, 4, yp, yplen), *N = set(c, 5, cv->n, cv->nlen);
    BIGNUM *w = c->t[6], *u1 = c->t[7], *u2 = c->t[8], *x = c->t[9], *y = c->t[10];
    *valid = 0;
    if (!M || !R || !S || !X || !Y || !N)
        return -1;
    /* Out-of-range r or s, or a point off the curve, is simply "not valid". */
    if (p_BN_is_zero(R) || p_BN_is_zero(S) || p_BN_cmp(R, N) >= 0 || p_BN_cmp(S, N) >= 0)
        return 0;
    EC_POINT *Q = p_EC_POINT_new(g), *P = p_EC_POINT_new(g);
    int rc = -1;
    if (Q == NULL || P == NULL)
        goto done;
    if (!p_EC_POINT_set_affine_coordinates(g, Q, X, Y, c->bn)) {
        rc = 0;
        goto done;
    }
    if (p_BN_mod_inverse(w, S, N, c->bn) == NULL || !p_BN_nnmod(u1, M, N, c->bn) ||
        !p_BN_mod_mul(u1, u1, w, N, c->bn) || !p_BN_mod_mul(u2, R, w, N, c->bn))
        goto done;
    if (!p_EC_POINT_mul(g, P, u1, Q, u2, c->bn))
        goto done;
    rc = 0;
    if (p_EC_POINT_is_at_infinity(g, P))
        goto done;
    if (!p_EC_POINT_get_affine_coordinates(g, P, x, y, c->bn) || !p_BN_nnmod(x, x, N, c->bn)) {
        rc = -1;
        goto done;
    }
    *valid = p_BN_cmp(x, R) == 0;
done:
    if (Q != NULL)
        p_EC_POINT_free(Q);
    if (P != NULL)
        p_EC_POINT_free(P);
    return rc;
}
