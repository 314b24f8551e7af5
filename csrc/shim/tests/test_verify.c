/*
 * Unit tests of verify.c (the verify-after-sign modular exponentiation),
 * against vectors computed offline with Python's pow() (verify_vectors.h),
 * plus a timing of the RSA check per operation.
 *
 * usage: test_verify [--bench]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shim_internal.h"
#include "verify_vectors.h"

#include "check.h"

static uint8_t nb[1024], eb[1024], xb[1024], yb[1024], out[1024];
static int libcrypto_keys;

static void test_vectors(void)
{
    size_t count = sizeof modexp_vectors / sizeof modexp_vectors[0];
    for (size_t i = 0; i < count; i++) {
        size_t nl = unhex(modexp_vectors[i].n, nb);
        size_t el = unhex(modexp_vectors[i].e, eb);
        size_t xl = unhex(modexp_vectors[i].x, xb);
        size_t yl = unhex(modexp_vectors[i].y, yb);
        struct qps_mont *m = qps_mont_new(nb, nl);
        CHECK(m, "mont_new %zu", i);
        if (!m)
            continue;
        memset(out, 0xa5, sizeof out);
        CHECK(qps_mont_modexp(m, xb, xl, eb, el, out, yl) == 0, "modexp %zu", i);
        CHECK(memcmp(out, yb, yl) == 0, "vector %zu (%zu-byte n, %zu-byte e) differs", i, nl, el);
        /* both implementations: libcrypto's (where loaded) and the portable one */
        memset(out, 0xa5, sizeof out);
        CHECK(qps_mont_modexp_portable(m, xb, xl, eb, el, out, yl) == 0, "portable modexp %zu", i);
        CHECK(memcmp(out, yb, yl) == 0, "portable vector %zu differs", i);
        libcrypto_keys += qps_mont_uses_libcrypto(m);
        /* the verify form: y = x^e, so x^e == y holds and a flipped bit does not */
        CHECK(qps_rsa_verify_block(m, eb, el, xb, yb, nl), "verify %zu", i);
        yb[nl / 2] ^= 0x10;
        CHECK(!qps_rsa_verify_block(m, eb, el, xb, yb, nl), "flipped bit accepted %zu", i);
        qps_mont_free(m);
    }
    printf("  %zu modexp vectors, each on both implementations (libcrypto's bignum for %d)\n", count,
           libcrypto_keys);
    /* This driver runs where libcrypto.so.3 is (it is linked by the shim's
     * other driver): the fast path must be in use, not silently absent. */
    CHECK(libcrypto_keys == (int)count, "libcrypto's bignum used for %d of %zu keys", libcrypto_keys,
          count);
}

static void test_edges(void)
{
    uint8_t n[2] = {0x00, 0x0f}, x[1] = {15}, e[1] = {3}, o[1];
    CHECK(qps_mont_new(n, 0) == NULL, "empty n");
    uint8_t even[2] = {0x01, 0x00};
    CHECK(qps_mont_new(even, 2) == NULL, "even n");
    struct qps_mont *m = qps_mont_new(n, 2); /* n = 15 after stripping */
    CHECK(m && m->k == 1, "small n");
    if (!m)
        return;
    CHECK(qps_mont_modexp(m, x, 1, e, 1, o, 1) == -1, "x == n refused");
    x[0] = 16;
    CHECK(qps_mont_modexp(m, x, 1, e, 1, o, 1) == -1, "x > n refused");
    x[0] = 7;
    CHECK(qps_mont_modexp(m, x, 1, e, 1, o, 1) == 0 && o[0] == (7 * 7 * 7) % 15, "7^3 mod 15");
    uint8_t zero[1] = {0};
    CHECK(qps_mont_modexp(m, x, 1, zero, 1, o, 1) == 0 && o[0] == 1, "x^0 = 1");
    qps_mont_free(m);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Cost of one check (sig^65537 mod n and the compare) by modulus size. */
static void bench(void)
{
    static const size_t sizes[] = {256, 384, 512, 1024};
    uint8_t e[3] = {1, 0, 1};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t len = sizes[s];
        if (len < 2 || len > sizeof nb)
            continue;
        for (size_t i = 0; i < len; i++) {
            nb[i] = (uint8_t)(0x9d * i + 0x31);
            xb[i] = (uint8_t)(0x57 * i + 0x05);
        }
        nb[0] |= 0xc0;
        nb[len - 1] |= 1;
        xb[0] &= 0x3f;
        struct qps_mont *m = qps_mont_new(nb, len);
        qps_mont_modexp(m, xb, len, e, 3, yb, len);
        int iters = len <= 256 ? 20000 : len <= 512 ? 4000 : 500;
        int ok = 0;
        double t0 = now_s();
        for (int i = 0; i < iters; i++)
            ok += qps_rsa_verify_block(m, e, 3, xb, yb, len);
        double dt = now_s() - t0;
        CHECK(ok == iters, "bench verify");
        double t1 = now_s();
        for (int i = 0; i < iters; i++)
            ok += qps_mont_modexp_portable(m, xb, len, e, 3, out, len) == 0 &&
                  memcmp(out, yb, len) == 0;
        double dt2 = now_s() - t1;
        CHECK(ok == 2 * iters, "bench portable");
        printf("  RSA-%zu verify-after-sign: %.2f us/op (%s; portable code %.2f us/op)\n", len * 8,
               dt / iters * 1e6, qps_mont_uses_libcrypto(m) ? "libcrypto's bignum" : "portable code",
               dt2 / iters * 1e6);
        qps_mont_free(m);
    }
}

int main(int argc, char **argv)
{
    test_vectors();
    test_edges();
    if (argc > 1 && strcmp(argv[1], "--bench") == 0)
        bench();
    if (failures) {
        fprintf(stderr, "test_verify: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_verify: all passed\n");
    return 0;
}
