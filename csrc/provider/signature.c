/*
 * Signatures with a referenced key: RSA (PKCS#1 v1.5 and PSS) and ECDSA.
 *
 * What libssl does per handshake (OpenSSL 3.0): newctx -> digest_sign_init
 * -> freectx once while it picks a signature algorithm (so init must be
 * cheap: it only records names, no fetch and no allocation), then newctx
 * -> digest_sign_init -> set_ctx_params (RSA-PSS: pad-mode, saltlen) ->
 * digest_sign(sig=NULL) for the size -> digest_sign(sig) -> freectx.
 * EVP_DigestSignUpdate/Final work too (Final signs a duplicate of the
 * context, hence dupctx copies the running digest).
 *
 * The sign path: hash with the default provider's digest -> if the key has
 * a device copy, the device hook -> else, or after a device failure the
 * engine's policy allows to recover from, sign in software with the key's
 * default-provider EVP_PKEY.  Every signature is counted on the key's
 * engine (csrc/shim/engine.c) by the route it took.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "qpv.h"

/* ---- digests ------------------------------------------------------------ */

static const struct qpv_hash hashes[] = {
    {"SHA1", {"SHA-1", "SSL3-SHA1", NULL}, 20, 0},
    {"SHA2-224", {"SHA-224", "SHA224", NULL}, 28, QATPY_HASH_SHA224},
    {"SHA2-256", {"SHA-256", "SHA256", NULL}, 32, QATPY_HASH_SHA256},
    {"SHA2-384", {"SHA-384", "SHA384", NULL}, 48, QATPY_HASH_SHA384},
    {"SHA2-512", {"SHA-512", "SHA512", NULL}, 64, QATPY_HASH_SHA512},
    /* TLS 1.0/1.1 RSA signatures: PKCS#1 v1.5 without DigestInfo */
    {"MD5-SHA1", {NULL, NULL, NULL}, 36, 0},
};

#define MAX_DIGEST 64

const struct qpv_hash *qpv_hash_by_name(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < sizeof hashes / sizeof *hashes; i++) {
        if (strcasecmp(name, hashes[i].name) == 0)
            return &hashes[i];
        for (int j = 0; j < 3 && hashes[i].aliases[j]; j++)
            if (strcasecmp(name, hashes[i].aliases[j]) == 0)
                return &hashes[i];
    }
    return NULL;
}

static int is_md5_sha1(const struct qpv_hash *h) { return h->size == 36; }

/* ---- context ------------------------------------------------------------ */

struct sigctx {
    int type;                     /* QPV_RSA / QPV_EC: the keys it takes */
    struct qatpy_pkey *key;       /* reference */
    const struct qpv_hash *hash;
    const struct qpv_hash *mgf1;  /* NULL: the message digest */
    int pad;                      /* QPV_RSA_PKCS1_PADDING / QPV_RSA_PKCS1_PSS_PADDING */
    int saltlen;                  /* QPV_RSA_PSS_SALTLEN_* or a byte count */
    qpv_evp_md *md;               /* fetched on first use */
    qpv_evp_md_ctx *mdctx;        /* streaming digest, made on first update */
    int digesting;                /* mdctx holds a started digest */
};

static void *newctx(int type)
{
    struct sigctx *c = calloc(1, sizeof *c);
    if (c)
        c->type = type;
    return c;
}

static void *rsa_newctx(void *provctx, const char *propq)
{
    (void)provctx, (void)propq;
    return newctx(QPV_RSA);
}

static void *ecdsa_newctx(void *provctx, const char *propq)
{
    (void)provctx, (void)propq;
    return newctx(QPV_EC);
}

static void freectx(void *vctx)
{
    struct sigctx *c = vctx;
    if (!c)
        return;
    if (c->mdctx)
        qpv_c.EVP_MD_CTX_free(c->mdctx);
    if (c->md)
        qpv_c.EVP_MD_free(c->md);
    qpv_key_unref(c->key);
    free(c);
}

static void *dupctx(void *vctx)
{
    struct sigctx *src = vctx;
    struct sigctx *c = malloc(sizeof *c);
    if (!c)
        return NULL;
    *c = *src;
    c->md = NULL;
    c->mdctx = NULL;
    if (c->key)
        qpv_key_ref(c->key);
    if (src->md) {
        if (!qpv_c.EVP_MD_up_ref(src->md))
            goto fail;
        c->md = src->md;
    }
    if (src->mdctx) {
        c->mdctx = qpv_c.EVP_MD_CTX_new();
        if (!c->mdctx || !qpv_c.EVP_MD_CTX_copy_ex(c->mdctx, src->mdctx))
            goto fail;
    }
    return c;
fail:
    freectx(c);
    return NULL;
}

/* ---- parameters --------------------------------------------------------- */

static int set_pad(struct sigctx *c, const qpv_param *p)
{
    char s[16];
    int v;
    if (p->data_type == QPV_OSSL_PARAM_UTF8_STRING || p->data_type == QPV_OSSL_PARAM_UTF8_PTR) {
        if (!qpv_param_get_utf8(p, s, sizeof s))
            return 0;
        if (strcmp(s, QPV_OSSL_PKEY_RSA_PAD_MODE_PKCSV15) == 0)
            v = QPV_RSA_PKCS1_PADDING;
        else if (strcmp(s, QPV_OSSL_PKEY_RSA_PAD_MODE_PSS) == 0)
            v = QPV_RSA_PKCS1_PSS_PADDING;
        else
            return 0;
    } else if (!qpv_param_get_int(p, &v)) {
        return 0;
    }
    if (v != QPV_RSA_PKCS1_PADDING && v != QPV_RSA_PKCS1_PSS_PADDING)
        return 0; /* signing takes PKCS#1 v1.5 or PSS only */
    c->pad = v;
    return 1;
}

static int set_saltlen(struct sigctx *c, const qpv_param *p)
{
    char s[16];
    int v;
    if (p->data_type == QPV_OSSL_PARAM_UTF8_STRING || p->data_type == QPV_OSSL_PARAM_UTF8_PTR) {
        if (!qpv_param_get_utf8(p, s, sizeof s))
            return 0;
        if (strcmp(s, QPV_OSSL_PKEY_RSA_PSS_SALT_LEN_DIGEST) == 0) {
            v = QPV_RSA_PSS_SALTLEN_DIGEST;
        } else if (strcmp(s, QPV_OSSL_PKEY_RSA_PSS_SALT_LEN_MAX) == 0) {
            v = QPV_RSA_PSS_SALTLEN_MAX;
        } else if (strcmp(s, QPV_OSSL_PKEY_RSA_PSS_SALT_LEN_AUTO) == 0) {
            v = QPV_RSA_PSS_SALTLEN_AUTO;
        } else {
            char *end;
            long l = strtol(s, &end, 10);
            if (end == s || *end || l < 0 || l > 0xffff)
                return 0;
            v = (int)l;
        }
    } else if (!qpv_param_get_int(p, &v)) {
        return 0;
    }
    if (v < QPV_RSA_PSS_SALTLEN_MAX)
        return 0;
    c->saltlen = v;
    return 1;
}

static int set_ctx_params(void *vctx, const qpv_param params[])
{
    struct sigctx *c = vctx;
    const qpv_param *p;
    char name[64];
    if (!c)
        return 0;
    if ((p = qpv_param_locate(params, QPV_OSSL_SIGNATURE_PARAM_DIGEST))) {
        const struct qpv_hash *h;
        if (c->digesting || !qpv_param_get_utf8(p, name, sizeof name) ||
            !(h = qpv_hash_by_name(name)) || (c->type == QPV_EC && is_md5_sha1(h)))
            return 0;
        if (h != c->hash && c->md) {
            qpv_c.EVP_MD_free(c->md);
            c->md = NULL;
        }
        c->hash = h;
    }
    if (c->type != QPV_RSA)
        return 1;
    if ((p = qpv_param_locate(params, QPV_OSSL_SIGNATURE_PARAM_PAD_MODE)) && !set_pad(c, p))
        return 0;
    if ((p = qpv_param_locate(params, QPV_OSSL_SIGNATURE_PARAM_PSS_SALTLEN)) &&
        !set_saltlen(c, p))
        return 0;
    if ((p = qpv_param_locate(params, QPV_OSSL_SIGNATURE_PARAM_MGF1_DIGEST))) {
        const struct qpv_hash *h;
        if (!qpv_param_get_utf8(p, name, sizeof name) || !(h = qpv_hash_by_name(name)) ||
            is_md5_sha1(h))
            return 0;
        c->mgf1 = h;
    }
    return 1;
}


static const qpv_param rsa_settable[] = {
    QPV_P_UTF8(QPV_OSSL_SIGNATURE_PARAM_DIGEST),      QPV_P_UTF8(QPV_OSSL_SIGNATURE_PARAM_PROPERTIES),
    QPV_P_UTF8(QPV_OSSL_SIGNATURE_PARAM_PAD_MODE),    QPV_P_UTF8(QPV_OSSL_SIGNATURE_PARAM_PSS_SALTLEN),
    QPV_P_UTF8(QPV_OSSL_SIGNATURE_PARAM_MGF1_DIGEST), QPV_P_UTF8(QPV_OSSL_SIGNATURE_PARAM_MGF1_PROPERTIES),
    QPV_P_END};

static const qpv_param ecdsa_settable[] = {QPV_P_UTF8(QPV_OSSL_SIGNATURE_PARAM_DIGEST),
                                           QPV_P_UTF8(QPV_OSSL_SIGNATURE_PARAM_PROPERTIES), QPV_P_END};

static const qpv_param rsa_gettable[] = {
    QPV_P_UTF8(QPV_OSSL_SIGNATURE_PARAM_DIGEST), QPV_P_UTF8(QPV_OSSL_SIGNATURE_PARAM_PAD_MODE),
    QPV_P_UTF8(QPV_OSSL_SIGNATURE_PARAM_PSS_SALTLEN), QPV_P_UTF8(QPV_OSSL_SIGNATURE_PARAM_MGF1_DIGEST),
    QPV_P_END};

static const qpv_param ecdsa_gettable[] = {QPV_P_UTF8(QPV_OSSL_SIGNATURE_PARAM_DIGEST), QPV_P_END};

static const qpv_param *rsa_settable_ctx_params(void *vctx, void *provctx)
{
    (void)vctx, (void)provctx;
    return rsa_settable;
}

static const qpv_param *ecdsa_settable_ctx_params(void *vctx, void *provctx)
{
    (void)vctx, (void)provctx;
    return ecdsa_settable;
}

static const qpv_param *rsa_gettable_ctx_params(void *vctx, void *provctx)
{
    (void)vctx, (void)provctx;
    return rsa_gettable;
}

static const qpv_param *ecdsa_gettable_ctx_params(void *vctx, void *provctx)
{
    (void)vctx, (void)provctx;
    return ecdsa_gettable;
}

static int get_ctx_params(void *vctx, qpv_param params[])
{
    struct sigctx *c = vctx;
    qpv_param *p;
    if (!c)
        return 0;
    if ((p = qpv_param_locate_mut(params, QPV_OSSL_SIGNATURE_PARAM_DIGEST)) &&
        !qpv_param_set_utf8(p, c->hash ? c->hash->name : ""))
        return 0;
    if (c->type != QPV_RSA)
        return 1;
    if ((p = qpv_param_locate_mut(params, QPV_OSSL_SIGNATURE_PARAM_PAD_MODE))) {
        int ok = p->data_type == QPV_OSSL_PARAM_INTEGER
                     ? qpv_param_set_int(p, c->pad)
                     : qpv_param_set_utf8(p, c->pad == QPV_RSA_PKCS1_PSS_PADDING
                                                 ? QPV_OSSL_PKEY_RSA_PAD_MODE_PSS
                                                 : QPV_OSSL_PKEY_RSA_PAD_MODE_PKCSV15);
        if (!ok)
            return 0;
    }
    if ((p = qpv_param_locate_mut(params, QPV_OSSL_SIGNATURE_PARAM_PSS_SALTLEN))) {
        int ok;
        if (p->data_type == QPV_OSSL_PARAM_INTEGER) {
            ok = qpv_param_set_int(p, c->saltlen);
        } else if (c->saltlen == QPV_RSA_PSS_SALTLEN_DIGEST) {
            ok = qpv_param_set_utf8(p, QPV_OSSL_PKEY_RSA_PSS_SALT_LEN_DIGEST);
        } else if (c->saltlen == QPV_RSA_PSS_SALTLEN_MAX) {
            ok = qpv_param_set_utf8(p, QPV_OSSL_PKEY_RSA_PSS_SALT_LEN_MAX);
        } else if (c->saltlen == QPV_RSA_PSS_SALTLEN_AUTO) {
            ok = qpv_param_set_utf8(p, QPV_OSSL_PKEY_RSA_PSS_SALT_LEN_AUTO);
        } else {
            char num[16];
            snprintf(num, sizeof num, "%d", c->saltlen);
            ok = qpv_param_set_utf8(p, num);
        }
        if (!ok)
            return 0;
    }
    if ((p = qpv_param_locate_mut(params, QPV_OSSL_SIGNATURE_PARAM_MGF1_DIGEST))) {
        const struct qpv_hash *h = c->mgf1 ? c->mgf1 : c->hash;
        if (!qpv_param_set_utf8(p, h ? h->name : ""))
            return 0;
    }
    return 1;
}

/* ---- init --------------------------------------------------------------- */

static int digest_sign_init(void *vctx, const char *mdname, void *provkey,
                            const qpv_param params[])
{
    struct sigctx *c = vctx;
    if (!c)
        return 0;
    if (provkey) {
        struct qatpy_pkey *k = provkey;
        /* Only registered private keys sign; they always carry an engine. */
        if (!k->has_private || !k->eng || k->type != c->type)
            return 0;
        qpv_key_ref(k);
        qpv_key_unref(c->key);
        c->key = k;
    } else if (!c->key) {
        return 0;
    }
    const struct qpv_hash *h = qpv_hash_by_name(mdname && *mdname ? mdname : "SHA2-256");
    if (!h || (c->type == QPV_EC && is_md5_sha1(h)))
        return 0;
    if (h != c->hash && c->md) {
        qpv_c.EVP_MD_free(c->md);
        c->md = NULL;
    }
    c->hash = h;
    c->mgf1 = NULL;
    c->pad = QPV_RSA_PKCS1_PADDING;
    c->saltlen = QPV_RSA_PSS_SALTLEN_AUTO;
    c->digesting = 0;
    return params ? set_ctx_params(c, params) : 1;
}

/* ---- signing ------------------------------------------------------------ */

static int fetch_md(struct sigctx *c)
{
    if (!c->md)
        c->md = qpv_c.EVP_MD_fetch(NULL, c->hash->name, QPV_DEFAULT_PQ);
    return c->md != NULL;
}

/* PSS salt length in bytes for the device path (RFC 8017 9.1.1: emLen is
 * ceil((modBits - 1) / 8)); "max" and "auto" mean the largest that fits. */
static size_t pss_salt_bytes(const struct sigctx *c)
{
    size_t em_len = ((size_t)c->key->bits - 1 + 7) / 8;
    size_t h = c->hash->size;
    size_t max = em_len >= h + 2 ? em_len - h - 2 : 0;
    if (c->saltlen == QPV_RSA_PSS_SALTLEN_DIGEST)
        return h;
    if (c->saltlen < 0)
        return max;
    return (size_t)c->saltlen;
}

static int software_sign(const struct sigctx *c, const uint8_t *digest, size_t dlen, uint8_t *sig,
                         size_t *siglen, size_t sigsize)
{
    qpv_evp_pkey_ctx *pctx = qpv_c.EVP_PKEY_CTX_new_from_pkey(NULL, c->key->soft, QPV_DEFAULT_PQ);
    if (!pctx)
        return 0;
    int pad = c->pad, salt = c->saltlen;
    qpv_param ps[5];
    size_t n = 0;
    ps[n++] = qpv_param_utf8(QPV_OSSL_SIGNATURE_PARAM_DIGEST, c->hash->name);
    if (c->type == QPV_RSA) {
        ps[n++] = qpv_param_int(QPV_OSSL_SIGNATURE_PARAM_PAD_MODE, &pad);
        if (pad == QPV_RSA_PKCS1_PSS_PADDING) {
            ps[n++] = qpv_param_int(QPV_OSSL_SIGNATURE_PARAM_PSS_SALTLEN, &salt);
            ps[n++] = qpv_param_utf8(QPV_OSSL_SIGNATURE_PARAM_MGF1_DIGEST,
                                     (c->mgf1 ? c->mgf1 : c->hash)->name);
        }
    }
    ps[n] = qpv_param_end();
    size_t len = sigsize;
    int ok = qpv_c.EVP_PKEY_sign_init_ex(pctx, ps) > 0 &&
             qpv_c.EVP_PKEY_sign(pctx, sig, &len, digest, dlen) > 0;
    qpv_c.EVP_PKEY_CTX_free(pctx);
    if (ok)
        *siglen = len;
    return ok;
}

static int device_reason(int rc)
{
    switch (rc) {
    case QPV_DEV_NONE:
        return QATPY_ECNT_FB_NO_DEVICE_KEY;
    case QPV_DEV_VERIFY:
        return QATPY_ECNT_FB_VERIFY_FAILED;
    case QPV_DEV_DEADLINE:
        return QATPY_ECNT_FB_DEADLINE;
    case QPV_DEV_CLOSED:
        return QATPY_ECNT_FB_ENGINE_CLOSED;
    case QPV_DEV_OVERFLOW:
        return QATPY_ECNT_FB_OVERFLOW;
    case QPV_DEV_UNAVAILABLE:
        return QATPY_ECNT_FB_DEVICE_UNAVAILABLE;
    default:
        return QATPY_ECNT_FB_DEVICE_ERROR;
    }
}

static int sign_digest(struct sigctx *c, const uint8_t *digest, size_t dlen, uint8_t *sig,
                       size_t *siglen, size_t sigsize)
{
    struct qatpy_pkey *k = c->key;
    qatpy_engine *e = k->eng;
    struct qpv_sign_req req = {
        .scheme = c->type == QPV_EC ? QPV_SIG_ECDSA
                  : c->pad == QPV_RSA_PKCS1_PSS_PADDING ? QPV_SIG_RSA_PSS
                                                        : QPV_SIG_RSA_PKCS1,
        .hash = c->hash,
        .digest = digest,
        .digest_len = dlen,
        .mgf1 = c->mgf1 ? c->mgf1 : c->hash,
        .salt_len = 0,
    };
    if (req.scheme == QPV_SIG_RSA_PSS)
        req.salt_len = pss_salt_bytes(c);

    qatpy_engine_count(e, QATPY_ECNT_SIGNS);
    int reason = qatpy_engine_unusable(e);
    if (!reason && qatpy_engine_has_device(e)) {
        if (!qpv_device_supports(k, &req)) {
            reason = QATPY_ECNT_FB_UNSUPPORTED;
        } else {
            size_t n = 0;
            int rc = qpv_device_sign(k, &req, sig, &n, sigsize);
            if (rc == QPV_DEV_OK) {
                qatpy_engine_count(e, QATPY_ECNT_DEVICE);
                *siglen = n;
                return 1;
            }
            reason = device_reason(rc);
        }
    }
    if (reason && !qatpy_engine_may_fall_back(e, reason)) {
        qatpy_engine_count(e, QATPY_ECNT_FAILED);
        return 0;
    }
    qatpy_engine_count(e, reason ? reason : QATPY_ECNT_SOFTWARE);
    if (!software_sign(c, digest, dlen, sig, siglen, sigsize)) {
        qatpy_engine_count(e, QATPY_ECNT_FAILED);
        return 0;
    }
    return 1;
}

static int digest_sign_update(void *vctx, const unsigned char *data, size_t len)
{
    struct sigctx *c = vctx;
    if (!c || !c->key || !c->hash || !fetch_md(c))
        return 0;
    if (!c->mdctx && !(c->mdctx = qpv_c.EVP_MD_CTX_new()))
        return 0;
    if (!c->digesting) {
        if (!qpv_c.EVP_DigestInit_ex(c->mdctx, c->md, NULL))
            return 0;
        c->digesting = 1;
    }
    return qpv_c.EVP_DigestUpdate(c->mdctx, data, len);
}

static int digest_sign_final(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize)
{
    struct sigctx *c = vctx;
    uint8_t digest[MAX_DIGEST];
    unsigned int dlen = 0;
    if (!c || !c->key)
        return 0;
    if (!sig) {
        *siglen = c->key->max_sig;
        return 1;
    }
    if (!c->digesting && !digest_sign_update(c, NULL, 0))
        return 0;
    c->digesting = 0;
    if (!qpv_c.EVP_DigestFinal_ex(c->mdctx, digest, &dlen) || dlen != c->hash->size)
        return 0;
    return sign_digest(c, digest, dlen, sig, siglen, sigsize);
}

static int digest_sign(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize,
                       const unsigned char *tbs, size_t tbslen)
{
    struct sigctx *c = vctx;
    uint8_t digest[MAX_DIGEST];
    unsigned int dlen = 0;
    if (!c || !c->key || !c->hash)
        return 0;
    if (!sig) {
        *siglen = c->key->max_sig;
        return 1;
    }
    if (!fetch_md(c) || !qpv_c.EVP_Digest(tbs, tbslen, digest, &dlen, c->md, NULL) ||
        dlen != c->hash->size)
        return 0;
    return sign_digest(c, digest, dlen, sig, siglen, sigsize);
}

#define SIGNATURE_TABLE(name, NEWCTX, SETTABLE, GETTABLE)                                      \
    const qpv_dispatch name[] = {                                                              \
        {QPV_OSSL_FUNC_SIGNATURE_NEWCTX, QPV_FN(NEWCTX)},                                      \
        {QPV_OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, QPV_FN(digest_sign_init)},                  \
        {QPV_OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, QPV_FN(digest_sign_update)},              \
        {QPV_OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, QPV_FN(digest_sign_final)},                \
        {QPV_OSSL_FUNC_SIGNATURE_DIGEST_SIGN, QPV_FN(digest_sign)},                            \
        {QPV_OSSL_FUNC_SIGNATURE_FREECTX, QPV_FN(freectx)},                                    \
        {QPV_OSSL_FUNC_SIGNATURE_DUPCTX, QPV_FN(dupctx)},                                      \
        {QPV_OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS, QPV_FN(get_ctx_params)},                      \
        {QPV_OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, QPV_FN(GETTABLE)},                       \
        {QPV_OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, QPV_FN(set_ctx_params)},                      \
        {QPV_OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, QPV_FN(SETTABLE)},                       \
        {0, NULL}}

SIGNATURE_TABLE(qpv_rsa_signature, rsa_newctx, rsa_settable_ctx_params, rsa_gettable_ctx_params);
SIGNATURE_TABLE(qpv_ecdsa_signature, ecdsa_newctx, ecdsa_settable_ctx_params,
                ecdsa_gettable_ctx_params);
