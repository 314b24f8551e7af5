/*
 * The software ECDSA check (QATPY_VERIFY_ECDSA_SOFTWARE): a sign's (r, s)
 * verified on the poll thread, before delivery, by the system's
 * libcrypto.so.3 loaded at run time with our own declarations of the few
 * OpenSSL 3 functions used (opaque pointers; nothing links against it).
 *
 * Verification is textbook ECDSA (SEC 1, 4.1.4) on public values only:
 * r, s in [1, n-1]; w = s^-1; u1 = m w, u2 = r w (mod n);
 * valid iff x(u1 G + u2 Q) mod n == r.
 * Groups are made once per process and only read afterwards (EC_POINT_mul
 * takes them const), so every poll thread may use them at once.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "shim_internal.h"

typedef struct qps_bignum BIGNUM;
typedef struct qps_bn_ctx BN_CTX;
typedef struct qps_ec_group EC_GROUP;
typedef struct qps_ec_point EC_POINT;

#define QPS_EC_FUNCS(X)                                                                      \
    X(BN_CTX *, BN_CTX_new, (void))                                                          \
    X(void, BN_CTX_free, (BN_CTX *))                                                         \
    X(void, BN_CTX_start, (BN_CTX *))                                                        \
    X(BIGNUM *, BN_CTX_get, (BN_CTX *))                                                      \
    X(void, BN_CTX_end, (BN_CTX *))                                                          \
    X(BIGNUM *, BN_bin2bn, (const unsigned char *, int, BIGNUM *))                           \
    X(int, BN_cmp, (const BIGNUM *, const BIGNUM *))                                         \
    X(int, BN_is_zero, (const BIGNUM *))                                                     \
    X(int, BN_nnmod, (BIGNUM *, const BIGNUM *, const BIGNUM *, BN_CTX *))                   \
    X(int, BN_mod_mul, (BIGNUM *, const BIGNUM *, const BIGNUM *, const BIGNUM *, BN_CTX *)) \
    X(BIGNUM *, BN_mod_inverse, (BIGNUM *, const BIGNUM *, const BIGNUM *, BN_CTX *))        \
    X(EC_GROUP *, EC_GROUP_new_by_curve_name, (int))                                         \
    X(EC_POINT *, EC_POINT_new, (const EC_GROUP *))                                          \
    X(void, EC_POINT_free, (EC_POINT *))                                                     \
    X(int, EC_POINT_mul,                                                                     \
      (const EC_GROUP *, EC_POINT *, const BIGNUM *, const EC_POINT *, const BIGNUM *,       \
       BN_CTX *))                                                                            \
    X(int, EC_POINT_set_affine_coordinates,                                                  \
      (const EC_GROUP *, EC_POINT *, const BIGNUM *, const BIGNUM *, BN_CTX *))              \
    X(int, EC_POINT_get_affine_coordinates,                                                  \
      (const EC_GROUP *, const EC_POINT *, BIGNUM *, BIGNUM *, BN_CTX *))                    \
    X(int, EC_POINT_is_at_infinity, (const EC_GROUP *, const EC_POINT *))

static struct {
#define QPS_EC_FIELD(ret, name, args) ret(*name) args;
    QPS_EC_FUNCS(QPS_EC_FIELD)
#undef QPS_EC_FIELD
} lc;

/* OpenSSL's NIDs of P-256, P-384, P-521 (stable public numbers), by QATPY_CURVE_* - 1. */
static const int k_nid[QPS_NUM_CURVES] = {415, 715, 716};
static EC_GROUP *groups[QPS_NUM_CURVES];
static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static const char *load_error;

static void load(void)
{
    /* Kept open for the life of the process: keys and poll threads hold
     * what it resolved. */
    void *h = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        load_error = "libcrypto.so.3 cannot be loaded";
        return;
    }
    void *sym;
#define QPS_EC_RESOLVE(ret, name, args)                                                      \
    sym = dlsym(h, #name);                                                                   \
    if (!sym) {                                                                              \
        load_error = "libcrypto.so.3 lacks " #name;                                          \
        return;                                                                              \
    }                                                                                        \
    memcpy(&lc.name, &sym, sizeof sym);
    QPS_EC_FUNCS(QPS_EC_RESOLVE)
#undef QPS_EC_RESOLVE
    for (int i = 0; i < QPS_NUM_CURVES; i++) {
        groups[i] = lc.EC_GROUP_new_by_curve_name(k_nid[i]);
        if (!groups[i]) {
            load_error = "libcrypto.so.3 has no NIST P-256/384/521 group";
            return;
        }
    }
}

struct qps_ec_pub {
    const struct qps_curve *cv;
    const EC_GROUP *group;
    EC_POINT *q;
};

static BIGNUM *bn(BN_CTX *ctx, const uint8_t *b, size_t len)
{
    BIGNUM *v = lc.BN_CTX_get(ctx);
    return v ? lc.BN_bin2bn(b, (int)len, v) : NULL;
}

struct qps_ec_pub *qps_ec_pub_new(const struct qps_curve *cv, const uint8_t *x, const uint8_t *y,
                                  char *err, size_t errlen)
{
    pthread_once(&load_once, load);
    if (load_error) {
        qps_errf(err, errlen, "the software ECDSA check needs %s", load_error);
        return NULL;
    }
    struct qps_ec_pub *pub = calloc(1, sizeof *pub);
    BN_CTX *ctx = lc.BN_CTX_new();
    if (!pub || !ctx) {
        free(pub);
        if (ctx)
            lc.BN_CTX_free(ctx);
        qps_errf(err, errlen, "out of memory");
        return NULL;
    }
    pub->cv = cv;
    pub->group = groups[cv->id - QATPY_CURVE_P256];
    pub->q = lc.EC_POINT_new(pub->group);
    lc.BN_CTX_start(ctx);
    BIGNUM *bx = bn(ctx, x, cv->len), *by = bn(ctx, y, cv->len);
    /* set_affine_coordinates refuses a point that is not on the curve. */
    int ok = pub->q && bx && by &&
             lc.EC_POINT_set_affine_coordinates(pub->group, pub->q, bx, by, ctx) == 1;
    lc.BN_CTX_end(ctx);
    lc.BN_CTX_free(ctx);
    if (!ok) {
        qps_ec_pub_free(pub);
        qps_errf(err, errlen, "EC key: the public point is not on the curve");
        return NULL;
    }
    return pub;
}

void qps_ec_pub_free(struct qps_ec_pub *pub)
{
    if (!pub)
        return;
    if (pub->q)
        lc.EC_POINT_free(pub->q);
    free(pub);
}

int qps_ec_soft_verify(const struct qps_ec_pub *pub, const uint8_t *m, const uint8_t *r,
                       const uint8_t *s)
{
    size_t len = pub->cv->len;
    BN_CTX *ctx = lc.BN_CTX_new();
    EC_POINT *p = ctx ? lc.EC_POINT_new(pub->group) : NULL;
    int rc = -1;
    if (!p)
        goto out;
    lc.BN_CTX_start(ctx);
    BIGNUM *n = bn(ctx, pub->cv->n, len), *bm = bn(ctx, m, len), *br = bn(ctx, r, len);
    BIGNUM *bs = bn(ctx, s, len), *w = lc.BN_CTX_get(ctx), *u1 = lc.BN_CTX_get(ctx);
    BIGNUM *u2 = lc.BN_CTX_get(ctx), *x = lc.BN_CTX_get(ctx);
    if (!n || !bm || !br || !bs || !w || !u1 || !u2 || !x)
        goto end;
    rc = 0;
    if (lc.BN_is_zero(br) || lc.BN_is_zero(bs) || lc.BN_cmp(br, n) >= 0 || lc.BN_cmp(bs, n) >= 0)
        goto end;
    rc = -1;
    if (!lc.BN_mod_inverse(w, bs, n, ctx) || !lc.BN_nnmod(u1, bm, n, ctx) ||
        !lc.BN_mod_mul(u1, u1, w, n, ctx) || !lc.BN_mod_mul(u2, br, w, n, ctx) ||
        !lc.EC_POINT_mul(pub->group, p, u1, pub->q, u2, ctx))
        goto end;
    rc = 0;
    if (lc.EC_POINT_is_at_infinity(pub->group, p))
        goto end;
    if (!lc.EC_POINT_get_affine_coordinates(pub->group, p, x, NULL, ctx) ||
        !lc.BN_nnmod(x, x, n, ctx)) {
        rc = -1;
        goto end;
    }
    rc = lc.BN_cmp(x, br) == 0;
end:
    lc.BN_CTX_end(ctx);
out:
    if (p)
        lc.EC_POINT_free(p);
    if (ctx)
        lc.BN_CTX_free(ctx);
    return rc;
}
