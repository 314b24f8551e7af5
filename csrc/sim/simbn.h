/*
 * The simulated device's arithmetic: RSA and ECDSA on NIST P-256/384/521,
 * done with the system's OpenSSL 3 libcrypto.so.3, loaded at run time
 * through our own declarations of the few BN/EC functions used (no OpenSSL
 * headers at build time).  Inputs are minimal big-endian byte strings;
 * outputs are written zero-padded to exactly the given length.
 */
#ifndef QATPY_SIMBN_H
#define QATPY_SIMBN_H

#include <stddef.h>
#include <stdint.h>

#define SIMBN_P256 0
#define SIMBN_P384 1
#define SIMBN_P521 2
#define SIMBN_NCURVES 3

typedef struct {
    const char *name;
    size_t len; /* bytes of each parameter (32/48/66) */
    const uint8_t *p, *a, *b, *n, *xg, *yg; /* minimal-length big-endian */
    size_t plen, alen, blen, nlen, xglen, yglen;
} simbn_curve;

/* NULL-terminated description of the supported curves (for parameter checks). */
const simbn_curve *simbn_curve_get(int id);

/* 0 if libcrypto.so.3 could be loaded and resolved, -1 otherwise (message in
 * simbn_error()). */
int simbn_init(void);
const char *simbn_error(void);

typedef struct simbn_ctx simbn_ctx;
simbn_ctx *simbn_ctx_new(void);
void simbn_ctx_free(simbn_ctx *c);

/* Each returns 0 on success, -1 on an arithmetic failure. */
int simbn_rsa_crt(simbn_ctx *c, const uint8_t *in, size_t inlen, const uint8_t *p, size_t plen,
                  const uint8_t *q, size_t qlen, const uint8_t *dp, size_t dplen,
                  const uint8_t *dq, size_t dqlen, const uint8_t *qinv, size_t qinvlen,
                  uint8_t *out, size_t outlen);
int simbn_rsa_exp(simbn_ctx *c, const uint8_t *in, size_t inlen, const uint8_t *n, size_t nlen,
                  const uint8_t *e, size_t elen, uint8_t *out, size_t outlen);
/* *ok = 0 when r or s came out zero (the "multiplyStatus FALSE" case). */
int simbn_ecdsa_sign(simbn_ctx *c, int curve, const uint8_t *m, size_t mlen, const uint8_t *d,
                     size_t dlen, const uint8_t *k, size_t klen, uint8_t *r, uint8_t *s,
                     int *ok);
int simbn_ecdsa_verify(simbn_ctx *c, int curve, const uint8_t *m, size_t mlen, const uint8_t *r,
                       size_t rlen, const uint8_t *s, size_t slen, const uint8_t *xp,
                       size_t xplen, const uint8_t *yp, size_t yplen, int *valid);

#endif /* QATPY_SIMBN_H */
