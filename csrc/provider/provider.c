/*
 * The provider's entry point and algorithm tables.
 *
 * Registered with OSSL_PROVIDER_add_builtin (libcrypto.c), so OpenSSL calls
 * qpv_provider_init in this process when the provider is activated.  The
 * provider holds no state of its own beyond the core's BIO_read_ex upcall:
 * keys and engines are refcounted objects that outlive it, so teardown
 * (which OPENSSL_cleanup may run after Python has finalised) frees nothing
 * that a key could still reach.
 */
#include <string.h>

#include "qpv.h"

qpv_bio_read_ex_fn *qpv_bio_read_ex;

static int provctx_token;

#define ALG(names, impl, desc) {names, QPV_PROVIDER_PROPS, impl, desc}
#define ALG_END {NULL, NULL, NULL, NULL}

static const qpv_algorithm keymgmts[] = {
    ALG("RSA:rsaEncryption", qpv_rsa_keymgmt, "qatpy RSA key reference"),
    ALG("EC:id-ecPublicKey", qpv_ec_keymgmt, "qatpy EC key reference"),
    ALG_END};

static const qpv_algorithm signatures[] = {
    ALG("RSA:rsaEncryption", qpv_rsa_signature, "qatpy RSA PKCS#1 v1.5 and PSS signatures"),
    ALG("ECDSA", qpv_ecdsa_signature, "qatpy ECDSA signatures"),
    ALG_END};

static const qpv_algorithm asym_ciphers[] = {
    ALG("RSA:rsaEncryption", qpv_rsa_asym_cipher, "qatpy RSA decryption (TLS 1.2 RSA key exchange)"),
    ALG_END};

static const qpv_algorithm decoders[] = {
    {"RSA", QPV_PROVIDER_PROPS ",input=pem", qpv_rsa_decoder, "qatpy RSA key reference PEM"},
    {"EC", QPV_PROVIDER_PROPS ",input=pem", qpv_ec_decoder, "qatpy EC key reference PEM"},
    ALG_END};

static const qpv_algorithm *query_operation(void *provctx, int op, int *no_cache)
{
    (void)provctx;
    *no_cache = 0;
    switch (op) {
    case QPV_OSSL_OP_KEYMGMT:
        return keymgmts;
    case QPV_OSSL_OP_SIGNATURE:
        return signatures;
    case QPV_OSSL_OP_ASYM_CIPHER:
        return asym_ciphers;
    case QPV_OSSL_OP_DECODER:
        return decoders;
    default:
        return NULL;
    }
}

static const qpv_param provider_gettable[] = {
    QPV_P_UTF8_PTR(QPV_OSSL_PROV_PARAM_NAME), QPV_P_UTF8_PTR(QPV_OSSL_PROV_PARAM_VERSION),
    QPV_P_UTF8_PTR(QPV_OSSL_PROV_PARAM_BUILDINFO), QPV_P_INT(QPV_OSSL_PROV_PARAM_STATUS), QPV_P_END};

static const qpv_param *gettable_params(void *provctx)
{
    (void)provctx;
    return provider_gettable;
}

static int get_params(void *provctx, qpv_param params[])
{
    qpv_param *p;
    (void)provctx;
    if ((p = qpv_param_locate_mut(params, QPV_OSSL_PROV_PARAM_NAME)) &&
        !qpv_param_set_utf8(p, "qatpy ssl provider"))
        return 0;
    if ((p = qpv_param_locate_mut(params, QPV_OSSL_PROV_PARAM_VERSION)) &&
        !qpv_param_set_utf8(p, "1"))
        return 0;
    if ((p = qpv_param_locate_mut(params, QPV_OSSL_PROV_PARAM_BUILDINFO)) &&
        !qpv_param_set_utf8(p, "built into qatpy._native"))
        return 0;
    if ((p = qpv_param_locate_mut(params, QPV_OSSL_PROV_PARAM_STATUS)) && !qpv_param_set_int(p, 1))
        return 0;
    return 1;
}

static void teardown(void *provctx) { (void)provctx; }

static const qpv_dispatch provider_table[] = {
    {QPV_OSSL_FUNC_PROVIDER_TEARDOWN, QPV_FN(teardown)},
    {QPV_OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, QPV_FN(gettable_params)},
    {QPV_OSSL_FUNC_PROVIDER_GET_PARAMS, QPV_FN(get_params)},
    {QPV_OSSL_FUNC_PROVIDER_QUERY_OPERATION, QPV_FN(query_operation)},
    {0, NULL}};

int qpv_provider_init(const void *handle, const qpv_dispatch *in, const qpv_dispatch **out,
                      void **provctx)
{
    (void)handle;
    for (const qpv_dispatch *d = in; d && d->function_id; d++) {
        if (d->function_id == QPV_OSSL_FUNC_BIO_READ_EX) {
            qpv_bio_read_ex_fn *f;
            memcpy(&f, &d->function, sizeof f);
            qpv_bio_read_ex = f;
        }
    }
    if (!qpv_bio_read_ex)
        return 0;
    *out = provider_table;
    *provctx = &provctx_token;
    return 1;
}
