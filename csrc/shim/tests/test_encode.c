/*
 * Unit tests of the shim's pure parts (encode.c): EMSA-PKCS1-v1_5, DER of
 * (r, s), digest truncation, nonce rejection sampling, curve constants.
 *
 * The vectors were produced independently with pyca/cryptography 48:
 * PKCS1 blocks are pow(sig, e, n) of cryptography's PKCS1v15 signatures,
 * DER from utils.encode_dss_signature, truncation from bits2int
 * (RFC 6979 2.3.2: int(digest) >> max(0, 8*len - qlen)).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shim_internal.h"

#include "check.h"

static const struct {
    int hash;
    const char *digest, *em;
} pkcs1_vectors[] = {
    {QATPY_HASH_SHA224, "5e12e92488fe41f5571c2d297b66425c7fd1f2d0bd900726ee4515ac",
     "0001ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff00302d300d06096086480165030402040500041c5e12e92488fe41f5571c2d297b66425c7fd1f2d0bd900726ee4515ac"},
    {QATPY_HASH_SHA256, "e5b9f8f048c5e13c5f2284f7b3a9498ab45070be563ff63982dc573ffb3f01ab",
     "0001ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff003031300d060960864801650304020105000420e5b9f8f048c5e13c5f2284f7b3a9498ab45070be563ff63982dc573ffb3f01ab"},
    {QATPY_HASH_SHA384, "b8b1b8837d0e2f7274e4085eb88408e631734b92a49310850ca89c9b1b24629769e46548d22dedfb5e3b3287538fe592",
     "0001ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff003041300d060960864801650304020205000430b8b1b8837d0e2f7274e4085eb88408e631734b92a49310850ca89c9b1b24629769e46548d22dedfb5e3b3287538fe592"},
    {QATPY_HASH_SHA512, "5605d00ba622b0b93099ebdb76eb79bb5576f41a3b59d4e56f34f56277983613014cc5cb7cf65bec0a47651effc6068614c66b2fe65f3278a06a8e9ca32930a8",
     "0001ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff003051300d0609608648016503040203050004405605d00ba622b0b93099ebdb76eb79bb5576f41a3b59d4e56f34f56277983613014cc5cb7cf65bec0a47651effc6068614c66b2fe65f3278a06a8e9ca32930a8"},
};

static void test_pkcs1(void)
{
    uint8_t dg[64], want[256], em[256];
    for (size_t i = 0; i < sizeof pkcs1_vectors / sizeof pkcs1_vectors[0]; i++) {
        size_t dl = unhex(pkcs1_vectors[i].digest, dg);
        unhex(pkcs1_vectors[i].em, want);
        CHECK(qps_pkcs1_encode(pkcs1_vectors[i].hash, dg, dl, em, 256) == 0, "encode %zu", i);
        CHECK(memcmp(em, want, 256) == 0, "PKCS1 block differs from cryptography's (%zu)", i);
        CHECK(qps_hash_len(pkcs1_vectors[i].hash) == dl, "hash len %zu", i);
        /* wrong digest length and a block too short for T + 11 are refused */
        CHECK(qps_pkcs1_encode(pkcs1_vectors[i].hash, dg, dl - 1, em, 256) != 0, "short dg");
        CHECK(qps_pkcs1_encode(pkcs1_vectors[i].hash, dg, dl, em, 19 + dl + 10) != 0, "short em");
        CHECK(qps_pkcs1_encode(pkcs1_vectors[i].hash, dg, dl, em, 19 + dl + 11) == 0, "min em");
    }
    CHECK(qps_pkcs1_encode(99, dg, 32, em, 256) != 0, "unknown hash id accepted");
}

static const struct {
    size_t len;
    const char *r, *s, *der;
} der_vectors[] = {
    {32, "d23f0824128b2f330c5c7fd0a6a3a4506513270e269e0d37f2a74de452e6b438",
     "36f675cc81e74ef5e8e25d940ed904759531985d5d9dc9f81818e811892f902b",
     "3045022100d23f0824128b2f330c5c7fd0a6a3a4506513270e269e0d37f2a74de452e6b438022036f675cc81e74ef5e8e25d940ed904759531985d5d9dc9f81818e811892f902b"},
    {32, "8d116ece1738f7d93d9c172411e20b8f6b0d549b6f03675a1600a35a099950d8",
     "0000000000000000000000000a170b33839263059f28c105d1fb17c2390c192c",
     "30390221008d116ece1738f7d93d9c172411e20b8f6b0d549b6f03675a1600a35a099950d802140a170b33839263059f28c105d1fb17c2390c192c"},
    {32, "0000000000000000000000000000000000000000000000000000000000000001",
     "8000000000000000000000000000000000000000000000000000000000000000",
     "30260201010221008000000000000000000000000000000000000000000000000000000000000000"},
    {32, "00574bdd4a6876d417c7b682ac277c551c4913b32c0f13d0e0453531f61276f3",
     "0000000000000000000000000000000000000000000000000000000000000080",
     "3025021f574bdd4a6876d417c7b682ac277c551c4913b32c0f13d0e0453531f61276f302020080"},
    {48, "c6f877186d76b07e881ed162ae2eb1547f15052434b9b5df9e7769b10f4205b4907a70c31012f037b64ce4228c38fb29",
     "c7a2ea20b2f14c942e05319acb5c74273f98e2774cbd87ad5c90a9587403e430ec66a78795e761d17731af10506bf2ef",
     "3066023100c6f877186d76b07e881ed162ae2eb1547f15052434b9b5df9e7769b10f4205b4907a70c31012f037b64ce4228c38fb29023100c7a2ea20b2f14c942e05319acb5c74273f98e2774cbd87ad5c90a9587403e430ec66a78795e761d17731af10506bf2ef"},
    {48, "9be4bcfc49b64a0872e6cc3ababced2057ee05cde00902c77ebff206867347214cdd2055930d6eaf14f4733f3e7d1bfb",
     "00000000000000000000000006bf46c697d2caf82eeeacbe226e875555790f82ec1d3fcff2a3af4d46b0a18e8830e07b",
     "30590231009be4bcfc49b64a0872e6cc3ababced2057ee05cde00902c77ebff206867347214cdd2055930d6eaf14f4733f3e7d1bfb022406bf46c697d2caf82eeeacbe226e875555790f82ec1d3fcff2a3af4d46b0a18e8830e07b"},
    {48, "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001",
     "800000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
     "3036020101023100800000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"},
    {48, "005732c799ff1dc485c9fa2459d2d51e40a7a136e5d9ca7d9b5d96a10787c404058851eb595502f08d5938aca2bcaf41",
     "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000080",
     "3035022f5732c799ff1dc485c9fa2459d2d51e40a7a136e5d9ca7d9b5d96a10787c404058851eb595502f08d5938aca2bcaf4102020080"},
    {66, "00297f1b103cdf1582b0eab477d26415479c65dc9f503f63af83bd0561e6211c70cf49952399c4aaeac137dc76fb0f17a3007e62aa0a1df9fd789c6539382b0537e6",
     "015d5bd86d40fc891b4a6a50df4db4d66a3a47469a4d8cdb305fdd2e16096e36aab0d1bc52d9230d977ee22571594720771f8ca8181166d2287672fdf2022a96fb1a",
     "3081870241297f1b103cdf1582b0eab477d26415479c65dc9f503f63af83bd0561e6211c70cf49952399c4aaeac137dc76fb0f17a3007e62aa0a1df9fd789c6539382b0537e60242015d5bd86d40fc891b4a6a50df4db4d66a3a47469a4d8cdb305fdd2e16096e36aab0d1bc52d9230d977ee22571594720771f8ca8181166d2287672fdf2022a96fb1a"},
    {66, "01862eae05cf96d0cc5fd4c28c2e7c26847f0316909e3bbbe9eaa8948c893b61867626bb7dbd2d1c9af0153e7c2a26a2c0bd3b1287fff52ddf5d616499c9e25a7605",
     "0000000000000000000000000014f9e1a8ef4f341e07a83f73f16dbf4a8b2b0c4312d20203626f3fe39c0519088f590fbbd119c1caaf75e8766ed88daf4016b4013e",
     "307b024201862eae05cf96d0cc5fd4c28c2e7c26847f0316909e3bbbe9eaa8948c893b61867626bb7dbd2d1c9af0153e7c2a26a2c0bd3b1287fff52ddf5d616499c9e25a7605023514f9e1a8ef4f341e07a83f73f16dbf4a8b2b0c4312d20203626f3fe39c0519088f590fbbd119c1caaf75e8766ed88daf4016b4013e"},
    {66, "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001",
     "010000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
     "30470201010242010000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"},
    {66, "000058fa4cc6be2049fb6f513455439303b3ceb02848a54e99d00e1a9e318e6fea1f9b890019ce83439cfd4e8ef1502e8ac517f97727228cfcc8ce44afebd9935ca6",
     "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000080",
     "3046024058fa4cc6be2049fb6f513455439303b3ceb02848a54e99d00e1a9e318e6fea1f9b890019ce83439cfd4e8ef1502e8ac517f97727228cfcc8ce44afebd9935ca602020080"},
};

static void test_der(void)
{
    uint8_t r[66], s[66], want[160], got[QPS_MAX_ECDSA_DER];
    for (size_t i = 0; i < sizeof der_vectors / sizeof der_vectors[0]; i++) {
        unhex(der_vectors[i].r, r);
        unhex(der_vectors[i].s, s);
        size_t wl = unhex(der_vectors[i].der, want);
        size_t gl = qps_der_ecdsa(r, s, der_vectors[i].len, got);
        CHECK(gl == wl && memcmp(got, want, wl) == 0, "DER differs from cryptography's (%zu)", i);
        CHECK(gl <= QPS_MAX_ECDSA_DER, "DER too long");
    }
    /* buffer bound: 66 bytes of 0xff each (not a valid P-521 value) */
    memset(r, 0xff, 66);
    memset(s, 0xff, 66);
    size_t gl = qps_der_ecdsa(r, s, 66, got);
    CHECK(gl == QPS_MAX_ECDSA_DER && got[0] == 0x30 && got[1] == 0x81 && got[2] == 138,
          "bound DER %zu", gl);
    /* largest real P-521 signature: r = s = n - 1 -> 139 bytes, long-form length */
    const struct qps_curve *p521 = qps_curve_get(QATPY_CURVE_P521);
    memcpy(r, p521->n, 66);
    r[65] -= 1;
    memcpy(s, r, 66);
    gl = qps_der_ecdsa(r, s, 66, got);
    CHECK(gl == 139 && got[1] == 0x81 && got[2] == 136, "max P-521 DER %zu", gl);
}

static const struct {
    unsigned bits;
    size_t len;
    const char *digest, *m;
} trunc_vectors[] = {
    {256, 32, "380a3f2184639c6ee291b3669603e4697ef8d0b0",
     "000000000000000000000000380a3f2184639c6ee291b3669603e4697ef8d0b0"},
    {256, 32, "985009839a6557407b1154291ebae8ffb4bbdb74a1c8fbd6439562eb94b80711",
     "985009839a6557407b1154291ebae8ffb4bbdb74a1c8fbd6439562eb94b80711"},
    {256, 32, "c302d1b71b799abc5e7e50cb810f4fc2d36bb3d0d7d627a77f882f2d1c64fd45cd5e3decb376859b2cbe35db181e7a97",
     "c302d1b71b799abc5e7e50cb810f4fc2d36bb3d0d7d627a77f882f2d1c64fd45"},
    {256, 32, "a45582f20c715b0b6fd8f4073052ac6ba23656f7bbdcb24cf4b77b2006805d4408cd496ad7bd46d636d11d835b4ed0b84c7122b11aeb2f877d1685715c8db616",
     "a45582f20c715b0b6fd8f4073052ac6ba23656f7bbdcb24cf4b77b2006805d44"},
    {256, 32, "74d763b4cd7a529fa70e4acec3fdd966cfe78f7a6f417c1625cd01737ca20b16a4b5f16311d6d5afa89efcd7af74bf0bb550986edea6503734270b69dd43695540af",
     "74d763b4cd7a529fa70e4acec3fdd966cfe78f7a6f417c1625cd01737ca20b16"},
    {256, 32, "9bc5e1c33c7f0c625b7d519407929091231a613f9b9363af338696da0a6e06e00073d0c136c55fa05f6968499b329c5ae27f4e41fcb90116e49a11f32c075afb566c94d37bb56550b11221415e785d41",
     "9bc5e1c33c7f0c625b7d519407929091231a613f9b9363af338696da0a6e06e0"},
    {384, 48, "fac50dafcf5a5f4ea6ed9243ac921e9964ce9999",
     "00000000000000000000000000000000000000000000000000000000fac50dafcf5a5f4ea6ed9243ac921e9964ce9999"},
    {384, 48, "27011776793cc22d67831336401f26ea6dd522c77e098959be0b2c54ac4c5517",
     "0000000000000000000000000000000027011776793cc22d67831336401f26ea6dd522c77e098959be0b2c54ac4c5517"},
    {384, 48, "fa1d57cc42464c38e7fc2203bec59f5cb64bf06a484c1b9659171c82e365883294afb8b962d4c7963fe408ba66171caa",
     "fa1d57cc42464c38e7fc2203bec59f5cb64bf06a484c1b9659171c82e365883294afb8b962d4c7963fe408ba66171caa"},
    {384, 48, "fe437effdbf73bfd4f77d31cef2593cb3622b574e1877900aa207fe211393cead608ca1e2262e8c1f140ebc90b18278efea6d12f4bbc2a1971a6a01da12d61a8",
     "fe437effdbf73bfd4f77d31cef2593cb3622b574e1877900aa207fe211393cead608ca1e2262e8c1f140ebc90b18278e"},
    {384, 48, "18c4ef9d4397ae7207075c97678ef64838f4d4ea318a91823c76223981cd0b3d466f983d5939d2dbc6f8d825b1c2800904a3f29bb1c68e6b436e26ed9ec3f366b115",
     "18c4ef9d4397ae7207075c97678ef64838f4d4ea318a91823c76223981cd0b3d466f983d5939d2dbc6f8d825b1c28009"},
    {384, 48, "d4007172d3ddb173fc81f8202998c915c4a278395bbd05bbb4962f143840c8b53edfe9ef0d0c6ed5be99b1256c103627833ae53987beefa27f1c3fce6c3337300778af6e104d6f7cf0a7dd7c576f2fa5",
     "d4007172d3ddb173fc81f8202998c915c4a278395bbd05bbb4962f143840c8b53edfe9ef0d0c6ed5be99b1256c103627"},
    {521, 66, "1bd40944919dbbe971a0175ac27b3a95b73e233d",
     "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001bd40944919dbbe971a0175ac27b3a95b73e233d"},
    {521, 66, "36529a179910888c6d4c89ba1aaf1146dda4701ab0a4a7cf4a9fe41ce9da336c",
     "0000000000000000000000000000000000000000000000000000000000000000000036529a179910888c6d4c89ba1aaf1146dda4701ab0a4a7cf4a9fe41ce9da336c"},
    {521, 66, "e030faea8689ff605d17a111578ddc2c5d433a1f6ad722f3a86412327adddd69ab7cfc1551b6d357786655f1ce2be600",
     "000000000000000000000000000000000000e030faea8689ff605d17a111578ddc2c5d433a1f6ad722f3a86412327adddd69ab7cfc1551b6d357786655f1ce2be600"},
    {521, 66, "d0e1bfe06d45f3ef5b9e8521d7675675b9edc78224f9d050b67f6a8fefb12ed18a66d82b26e228ae5b775bba54862d4b77386375f66c7a41f234e52dca8cde7b",
     "0000d0e1bfe06d45f3ef5b9e8521d7675675b9edc78224f9d050b67f6a8fefb12ed18a66d82b26e228ae5b775bba54862d4b77386375f66c7a41f234e52dca8cde7b"},
    {521, 66, "351ab06e5965c959ce5dc9187af6c53057daa4a37c78d1b3a88bb24002ce317e9a20092dd9236cf69688c35719487e36c6ffd25c784f5142d78b1c8f643d5a3dcb5e",
     "006a3560dcb2cb92b39cbb9230f5ed8a60afb54946f8f1a36751176480059c62fd3440125bb246d9ed2d1186ae3290fc6d8dffa4b8f09ea285af16391ec87ab47b96"},
    {521, 66, "2365ce8c09f16a6472de7adbda5bf4d8b56d36cefa953586c97b17e770926d5081408dbf8196e745e33b4145b055375bf12b35b7faabb715058d7415c1e4b024a938af82c5667adadd2732a9b2cdd174",
     "0046cb9d1813e2d4c8e5bcf5b7b4b7e9b16ada6d9df52a6b0d92f62fcee124daa102811b7f032dce8bc676828b60aa6eb7e2566b6ff5576e2a0b1ae82b83c9604952"},
};

static void test_truncate(void)
{
    uint8_t dg[80], want[66], m[66];
    for (size_t i = 0; i < sizeof trunc_vectors / sizeof trunc_vectors[0]; i++) {
        size_t dl = unhex(trunc_vectors[i].digest, dg);
        unhex(trunc_vectors[i].m, want);
        qps_truncate_digest(dg, dl, trunc_vectors[i].bits, m, trunc_vectors[i].len);
        CHECK(memcmp(m, want, trunc_vectors[i].len) == 0, "truncation %zu (bits %u, dlen %zu)",
              i, trunc_vectors[i].bits, dl);
    }
    qps_truncate_digest(NULL, 0, 256, m, 32);
    CHECK(qps_be_is_zero(m, 32), "empty digest -> 0");
}

/* Scripted RNG: hands out the queued blocks in order. */
static const uint8_t *script[8];
static size_t script_n, script_i;
static int script_rng(uint8_t *buf, size_t len)
{
    if (script_i >= script_n)
        return -1;
    memcpy(buf, script[script_i++], len);
    return 0;
}

static void test_scalar(void)
{
    for (int c = QATPY_CURVE_P256; c <= QATPY_CURVE_P521; c++) {
        const struct qps_curve *cv = qps_curve_get(c);
        size_t len = cv->len;
        uint8_t ones[66], zero[66], n[66], nm1[66], k[66];
        memset(ones, 0xff, len);
        memset(zero, 0, len);
        memcpy(n, cv->n, len);
        memcpy(nm1, cv->n, len);
        nm1[len - 1] -= 1; /* n is odd */
        /* all-ones masks to 2^bits - 1 >= n: rejected; 0 rejected; n rejected; n-1 taken */
        script[0] = ones, script[1] = zero, script[2] = n, script[3] = nm1;
        script_n = 4, script_i = 0;
        CHECK(qps_random_scalar(k, cv->n, len, cv->bits, script_rng) == 0, "curve %d", c);
        CHECK(script_i == 4 && memcmp(k, nm1, len) == 0, "curve %d took draw %zu", c, script_i);
        /* top bits beyond bitlen(n) are masked off (P-521: top byte & 0x01) */
        uint8_t hi[66];
        memset(hi, 0, len);
        hi[0] = 0xfe;
        hi[len - 1] = 5;
        script[0] = hi, script_n = 1, script_i = 0;
        int rc = qps_random_scalar(k, cv->n, len, cv->bits, script_rng);
        if (c == QATPY_CURVE_P521)
            CHECK(rc == 0 && k[0] == 0 && k[len - 1] == 5, "P-521 mask");
        else
            CHECK(rc == 0 && k[0] == 0xfe, "no mask needed for curve %d", c);
        /* RNG failure: -1 and k wiped */
        script_n = 0, script_i = 0;
        memset(k, 0xaa, len);
        CHECK(qps_random_scalar(k, cv->n, len, cv->bits, script_rng) == -1 &&
                  qps_be_is_zero(k, len),
              "rng failure");
        /* the OS source gives values in range, and not twice the same */
        uint8_t k2[66];
        for (int i = 0; i < 1000; i++) {
            CHECK(qps_random_scalar(k, cv->n, len, cv->bits, qps_rng_os) == 0, "os rng");
            CHECK(!qps_be_is_zero(k, len) && qps_be_less(k, cv->n, len), "k out of range");
            CHECK(i == 0 || memcmp(k, k2, len) != 0, "repeated k");
            memcpy(k2, k, len);
        }
    }
}

static void test_be(void)
{
    uint8_t a[3] = {1, 2, 3}, b[3] = {1, 2, 4}, z[3] = {0, 0, 0};
    CHECK(qps_be_less(a, b, 3) && !qps_be_less(b, a, 3) && !qps_be_less(a, a, 3), "be_less");
    CHECK(qps_be_less(z, a, 3) && qps_be_is_zero(z, 3) && !qps_be_is_zero(a, 3), "zero");
    uint8_t c[3] = {0x00, 0xff, 0x00}, d[3] = {0x01, 0x00, 0x00};
    CHECK(qps_be_less(c, d, 3) && !qps_be_less(d, c, 3), "borrow chain");
    const uint8_t *p = z;
    CHECK(qps_be_strip(&p, 3) == 0, "strip zero");
    p = c;
    CHECK(qps_be_strip(&p, 3) == 2 && p == c + 1, "strip");
}

static void test_curves(void)
{
    /* spot checks; check_curves.py compares every byte with tests/abi_facts.py's table */
    const struct qps_curve *p256 = qps_curve_get(QATPY_CURVE_P256);
    const struct qps_curve *p521 = qps_curve_get(QATPY_CURVE_P521);
    CHECK(p256->len == 32 && p256->n[31] == 0x51 && p256->b[0] == 0x5a, "P-256");
    CHECK(p521->len == 66 && p521->n[0] == 0x01 && p521->n[65] == 0x09 && p521->xg[0] == 0,
          "P-521");
    CHECK(qps_curve_get(0) == NULL && qps_curve_get(4) == NULL, "bad id");
    for (int c = QATPY_CURVE_P256; c <= QATPY_CURVE_P521; c++) {
        const struct qps_curve *cv = qps_curve_get(c);
        printf("curve %d bits=%u q=", c, cv->bits);
        for (size_t i = 0; i < cv->len; i++) printf("%02x", cv->q[i]);
        printf(" a=");
        for (size_t i = 0; i < cv->len; i++) printf("%02x", cv->a[i]);
        printf(" b=");
        for (size_t i = 0; i < cv->len; i++) printf("%02x", cv->b[i]);
        printf(" n=");
        for (size_t i = 0; i < cv->len; i++) printf("%02x", cv->n[i]);
        printf(" xg=");
        for (size_t i = 0; i < cv->len; i++) printf("%02x", cv->xg[i]);
        printf(" yg=");
        for (size_t i = 0; i < cv->len; i++) printf("%02x", cv->yg[i]);
        printf("\n");
    }
}

int main(void)
{
    test_pkcs1();
    test_der();
    test_truncate();
    test_scalar();
    test_be();
    test_curves();
    if (failures) {
        fprintf(stderr, "test_encode: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_encode: all passed\n");
    return 0;
}
