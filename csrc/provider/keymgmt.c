/*
 * Key management for RSA and EC keys held by reference.
 *
 * The one rule that makes OpenSSL sign with us: export of private material
 * FAILS.  do_sigver_init first tries the signature implementation it
 * fetches by property (the default provider's) and exports the key to that
 * provider's keymgmt; when the export fails it falls back to the signature
 * implementation of the key's own provider, ours.  (Exporting only the
 * public part with success would make OpenSSL sign with a public-only key
 * and fail the handshake with alert 80.)
 *
 * Everything else answers from the key's default-provider EVP_PKEY:
 * parameters (with private ones filtered out), public export, and matching
 * against the certificate's public key (which OpenSSL imports into this
 * keymgmt with new + import before calling match).
 */
#include <string.h>

#include "qpv.h"

static int is_private_param(const char *key)
{
    static const char *const names[] = {
        QPV_OSSL_PKEY_PARAM_RSA_D,         QPV_OSSL_PKEY_PARAM_RSA_FACTOR1,
        QPV_OSSL_PKEY_PARAM_RSA_FACTOR2,   QPV_OSSL_PKEY_PARAM_RSA_EXPONENT1,
        QPV_OSSL_PKEY_PARAM_RSA_EXPONENT2, QPV_OSSL_PKEY_PARAM_RSA_COEFFICIENT1,
        QPV_OSSL_PKEY_PARAM_PRIV_KEY};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (strcmp(key, names[i]) == 0)
            return 1;
    return 0;
}

static void *rsa_new(void *provctx)
{
    (void)provctx;
    return qpv_key_new_empty(QPV_RSA);
}

static void *ec_new(void *provctx)
{
    (void)provctx;
    return qpv_key_new_empty(QPV_EC);
}

static void km_free(void *keydata) { qpv_key_unref(keydata); }

static void *load_typed(int type, const void *ref, size_t ref_sz)
{
    struct qatpy_pkey *k = qpv_key_lookup(ref, ref_sz);
    if (k && k->type != type) {
        qpv_key_unref(k);
        return NULL;
    }
    return k;
}

static void *rsa_load(const void *ref, size_t ref_sz) { return load_typed(QPV_RSA, ref, ref_sz); }
static void *ec_load(const void *ref, size_t ref_sz) { return load_typed(QPV_EC, ref, ref_sz); }

static int km_has(const void *keydata, int selection)
{
    const struct qatpy_pkey *k = keydata;
    if (!k || !k->soft)
        return 0;
    if ((selection & QPV_OSSL_KEYMGMT_SELECT_PRIVATE_KEY) && !k->has_private)
        return 0;
    return 1;
}

static int km_match(const void *a, const void *b, int selection)
{
    const struct qatpy_pkey *k1 = a, *k2 = b;
    (void)selection;
    if (!k1 || !k2 || !k1->soft || !k2->soft || k1->type != k2->type)
        return 0;
    /* Public values and domain parameters; private values are never
     * compared (and a key pair's public part determines them). */
    return qpv_c.EVP_PKEY_eq(k1->soft, k2->soft) == 1;
}

#define MAX_GET_PARAMS 24

static int km_get_params(void *keydata, qpv_param params[])
{
    struct qatpy_pkey *k = keydata;
    if (!k || !k->soft)
        return 0;
    /* A copy without private names, so the default provider never writes
     * private material into the caller's buffers; results copied back. */
    qpv_param sub[MAX_GET_PARAMS + 1];
    size_t map[MAX_GET_PARAMS];
    size_t n = 0;
    for (size_t i = 0; params && params[i].key; i++) {
        if (is_private_param(params[i].key))
            continue;
        if (n == MAX_GET_PARAMS)
            return 0;
        sub[n] = params[i];
        map[n++] = i;
    }
    if (n == 0)
        return 1;
    sub[n] = qpv_param_end();
    if (!qpv_c.EVP_PKEY_get_params(k->soft, sub))
        return 0;
    for (size_t j = 0; j < n; j++)
        params[map[j]].return_size = sub[j].return_size;
    return 1;
}


static const qpv_param rsa_gettable[] = {
    QPV_P_INT(QPV_OSSL_PKEY_PARAM_BITS),       QPV_P_INT(QPV_OSSL_PKEY_PARAM_SECURITY_BITS),
    QPV_P_INT(QPV_OSSL_PKEY_PARAM_MAX_SIZE),   QPV_P_UTF8(QPV_OSSL_PKEY_PARAM_DEFAULT_DIGEST),
    QPV_P_UINT(QPV_OSSL_PKEY_PARAM_RSA_N),     QPV_P_UINT(QPV_OSSL_PKEY_PARAM_RSA_E),
    QPV_P_END};

static const qpv_param ec_gettable[] = {
    QPV_P_INT(QPV_OSSL_PKEY_PARAM_BITS),
    QPV_P_INT(QPV_OSSL_PKEY_PARAM_SECURITY_BITS),
    QPV_P_INT(QPV_OSSL_PKEY_PARAM_MAX_SIZE),
    QPV_P_UTF8(QPV_OSSL_PKEY_PARAM_DEFAULT_DIGEST),
    QPV_P_UTF8(QPV_OSSL_PKEY_PARAM_GROUP_NAME),
    QPV_P_OCTETS(QPV_OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY),
    QPV_P_OCTETS(QPV_OSSL_PKEY_PARAM_PUB_KEY),
    QPV_P_UTF8(QPV_OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT),
    QPV_P_END};

static const qpv_param rsa_public_types[] = {QPV_P_UINT(QPV_OSSL_PKEY_PARAM_RSA_N),
                                             QPV_P_UINT(QPV_OSSL_PKEY_PARAM_RSA_E), QPV_P_END};

static const qpv_param ec_public_types[] = {
    QPV_P_UTF8(QPV_OSSL_PKEY_PARAM_GROUP_NAME), QPV_P_OCTETS(QPV_OSSL_PKEY_PARAM_PUB_KEY),
    QPV_P_UTF8(QPV_OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT), QPV_P_END};

static const qpv_param *rsa_gettable_params(void *provctx)
{
    (void)provctx;
    return rsa_gettable;
}

static const qpv_param *ec_gettable_params(void *provctx)
{
    (void)provctx;
    return ec_gettable;
}

static const qpv_param *rsa_types(int selection)
{
    return (selection & QPV_EVP_PKEY_PUBLIC_KEY) ? rsa_public_types : NULL;
}

static const qpv_param *ec_types(int selection)
{
    return (selection & QPV_EVP_PKEY_PUBLIC_KEY) ? ec_public_types : NULL;
}

static const char *rsa_query_operation_name(int op)
{
    return op == QPV_OSSL_OP_SIGNATURE || op == QPV_OSSL_OP_ASYM_CIPHER ? "RSA" : NULL;
}

static const char *ec_query_operation_name(int op)
{
    return op == QPV_OSSL_OP_SIGNATURE ? "ECDSA" : NULL;
}

static int km_import(void *keydata, int selection, const qpv_param params[])
{
    struct qatpy_pkey *k = keydata;
    if (!k || (selection & QPV_EVP_PKEY_PUBLIC_KEY) == 0)
        return 0;
    return qpv_key_import_public(k, params);
}

static int km_export(void *keydata, int selection, qpv_callback *cb, void *cbarg)
{
    struct qatpy_pkey *k = keydata;
    if (!k || !k->soft || (selection & QPV_OSSL_KEYMGMT_SELECT_PRIVATE_KEY))
        return 0; /* see the comment at the top of this file */
    int sel = selection & QPV_EVP_PKEY_PUBLIC_KEY;
    if (!sel)
        return 0;
    qpv_param *out = NULL;
    if (!qpv_c.EVP_PKEY_todata(k->soft, sel, &out) || !out)
        return 0;
    int ok = cb(out, cbarg);
    qpv_c.OSSL_PARAM_free(out);
    return ok;
}

/* Keys are immutable, so a duplicate is another reference to the same key. */
static void *km_dup(const void *keydata, int selection)
{
    struct qatpy_pkey *k = (struct qatpy_pkey *)(uintptr_t)keydata;
    (void)selection;
    if (!k || !k->soft)
        return NULL;
    qpv_key_ref(k);
    return k;
}

#define KEYMGMT_TABLE(name, NEW, LOAD, GETTABLE, TYPES, OPNAME)                                 \
    const qpv_dispatch name[] = {                                                               \
        {QPV_OSSL_FUNC_KEYMGMT_NEW, QPV_FN(NEW)},                                               \
        {QPV_OSSL_FUNC_KEYMGMT_LOAD, QPV_FN(LOAD)},                                             \
        {QPV_OSSL_FUNC_KEYMGMT_FREE, QPV_FN(km_free)},                                          \
        {QPV_OSSL_FUNC_KEYMGMT_GET_PARAMS, QPV_FN(km_get_params)},                              \
        {QPV_OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, QPV_FN(GETTABLE)},                              \
        {QPV_OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, QPV_FN(OPNAME)},                           \
        {QPV_OSSL_FUNC_KEYMGMT_HAS, QPV_FN(km_has)},                                            \
        {QPV_OSSL_FUNC_KEYMGMT_MATCH, QPV_FN(km_match)},                                        \
        {QPV_OSSL_FUNC_KEYMGMT_IMPORT, QPV_FN(km_import)},                                      \
        {QPV_OSSL_FUNC_KEYMGMT_IMPORT_TYPES, QPV_FN(TYPES)},                                    \
        {QPV_OSSL_FUNC_KEYMGMT_EXPORT, QPV_FN(km_export)},                                      \
        {QPV_OSSL_FUNC_KEYMGMT_EXPORT_TYPES, QPV_FN(TYPES)},                                    \
        {QPV_OSSL_FUNC_KEYMGMT_DUP, QPV_FN(km_dup)},                                            \
        {0, NULL}}

KEYMGMT_TABLE(qpv_rsa_keymgmt, rsa_new, rsa_load, rsa_gettable_params, rsa_types,
              rsa_query_operation_name);
KEYMGMT_TABLE(qpv_ec_keymgmt, ec_new, ec_load, ec_gettable_params, ec_types,
              ec_query_operation_name);
