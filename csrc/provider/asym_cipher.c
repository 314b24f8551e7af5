/*
 * RSA decryption with a referenced key, for TLS 1.2's RSA key exchange.
 *
 * A key held by reference refuses private export, so without this a
 * context that allows RSA key exchange (Python's default ciphers do not,
 * `set_ciphers("DEFAULT")` does) would fail those handshakes with
 * "decrypt error".  libssl decrypts the premaster secret with pad mode
 * RSA_PKCS1_WITH_TLS_PADDING and the client's and negotiated versions
 * (for OpenSSL's implicit rejection); we hand the same settings to the
 * default provider's RSA decryption with the key's software EVP_PKEY.
 * Not offloaded and not counted: it is not a signature.
 */
#include <stdlib.h>
#include <string.h>

#include "qpv.h"

struct decctx {
    struct qatpy_pkey *key;
    int pad;
    int client_version, negotiated_version; /* -1: not given */
};

static void *dec_newctx(void *provctx)
{
    (void)provctx;
    struct decctx *c = calloc(1, sizeof *c);
    if (c) {
        c->pad = QPV_RSA_PKCS1_PADDING;
        c->client_version = c->negotiated_version = -1;
    }
    return c;
}

static void dec_freectx(void *vctx)
{
    struct decctx *c = vctx;
    if (c) {
        qpv_key_unref(c->key);
        free(c);
    }
}

static void *dec_dupctx(void *vctx)
{
    struct decctx *c = malloc(sizeof *c);
    if (!c)
        return NULL;
    *c = *(struct decctx *)vctx;
    if (c->key)
        qpv_key_ref(c->key);
    return c;
}

static int dec_set_ctx_params(void *vctx, const qpv_param params[])
{
    struct decctx *c = vctx;
    const qpv_param *p;
    char s[16];
    int v;
    if ((p = qpv_param_locate(params, QPV_OSSL_ASYM_CIPHER_PARAM_PAD_MODE))) {
        if (p->data_type == QPV_OSSL_PARAM_UTF8_STRING) {
            if (!qpv_param_get_utf8(p, s, sizeof s) || strcmp(s, QPV_OSSL_PKEY_RSA_PAD_MODE_PKCSV15))
                return 0;
            v = QPV_RSA_PKCS1_PADDING;
        } else if (!qpv_param_get_int(p, &v)) {
            return 0;
        }
        if (v != QPV_RSA_PKCS1_PADDING && v != QPV_RSA_PKCS1_WITH_TLS_PADDING)
            return 0; /* OAEP and raw decryption are not offered */
        c->pad = v;
    }
    if ((p = qpv_param_locate(params, QPV_OSSL_ASYM_CIPHER_PARAM_TLS_CLIENT_VERSION)) &&
        !qpv_param_get_int(p, &c->client_version))
        return 0;
    if ((p = qpv_param_locate(params, QPV_OSSL_ASYM_CIPHER_PARAM_TLS_NEGOTIATED_VERSION)) &&
        !qpv_param_get_int(p, &c->negotiated_version))
        return 0;
    return 1;
}

static const qpv_param dec_settable[] = {
    QPV_P_UTF8(QPV_OSSL_ASYM_CIPHER_PARAM_PAD_MODE),
    QPV_P_UINT(QPV_OSSL_ASYM_CIPHER_PARAM_TLS_CLIENT_VERSION),
    QPV_P_UINT(QPV_OSSL_ASYM_CIPHER_PARAM_TLS_NEGOTIATED_VERSION), QPV_P_END};

static const qpv_param *dec_settable_ctx_params(void *vctx, void *provctx)
{
    (void)vctx, (void)provctx;
    return dec_settable;
}

static int dec_decrypt_init(void *vctx, void *provkey, const qpv_param params[])
{
    struct decctx *c = vctx;
    struct qatpy_pkey *k = provkey;
    if (!c || !k || !k->has_private || k->type != QPV_RSA)
        return 0;
    qpv_key_ref(k);
    qpv_key_unref(c->key);
    c->key = k;
    c->pad = QPV_RSA_PKCS1_PADDING;
    c->client_version = c->negotiated_version = -1;
    return params ? dec_set_ctx_params(c, params) : 1;
}

static int dec_decrypt(void *vctx, unsigned char *out, size_t *outlen, size_t outsize,
                       const unsigned char *in, size_t inlen)
{
    struct decctx *c = vctx;
    if (!c || !c->key)
        return 0;
    if (!out) {
        *outlen = c->key->max_sig;
        return 1;
    }
    qpv_evp_pkey_ctx *pctx = qpv_c.EVP_PKEY_CTX_new_from_pkey(NULL, c->key->soft, QPV_DEFAULT_PQ);
    if (!pctx)
        return 0;
    unsigned cv = (unsigned)c->client_version, nv = (unsigned)c->negotiated_version;
    qpv_param ps[4];
    size_t n = 0;
    ps[n++] = qpv_param_int(QPV_OSSL_ASYM_CIPHER_PARAM_PAD_MODE, &c->pad);
    if (c->client_version >= 0)
        ps[n++] = qpv_param_native_uint(QPV_OSSL_ASYM_CIPHER_PARAM_TLS_CLIENT_VERSION, &cv, sizeof cv);
    if (c->negotiated_version >= 0)
        ps[n++] =
            qpv_param_native_uint(QPV_OSSL_ASYM_CIPHER_PARAM_TLS_NEGOTIATED_VERSION, &nv, sizeof nv);
    ps[n] = qpv_param_end();
    size_t len = outsize;
    int ok = qpv_c.EVP_PKEY_decrypt_init_ex(pctx, ps) > 0 &&
             qpv_c.EVP_PKEY_decrypt(pctx, out, &len, in, inlen) > 0;
    qpv_c.EVP_PKEY_CTX_free(pctx);
    if (ok)
        *outlen = len;
    return ok;
}

const qpv_dispatch qpv_rsa_asym_cipher[] = {
    {QPV_OSSL_FUNC_ASYM_CIPHER_NEWCTX, QPV_FN(dec_newctx)},
    {QPV_OSSL_FUNC_ASYM_CIPHER_DECRYPT_INIT, QPV_FN(dec_decrypt_init)},
    {QPV_OSSL_FUNC_ASYM_CIPHER_DECRYPT, QPV_FN(dec_decrypt)},
    {QPV_OSSL_FUNC_ASYM_CIPHER_FREECTX, QPV_FN(dec_freectx)},
    {QPV_OSSL_FUNC_ASYM_CIPHER_DUPCTX, QPV_FN(dec_dupctx)},
    {QPV_OSSL_FUNC_ASYM_CIPHER_SET_CTX_PARAMS, QPV_FN(dec_set_ctx_params)},
    {QPV_OSSL_FUNC_ASYM_CIPHER_SETTABLE_CTX_PARAMS, QPV_FN(dec_settable_ctx_params)},
    {0, NULL}};
