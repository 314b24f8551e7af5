/*
 * Our own declarations of the subset of the OpenSSL 3 provider ABI that
 * qatpy's built-in provider uses.  Written from the facts of OpenSSL's
 * public headers core.h, core_dispatch.h, core_names.h, core_object.h,
 * evp.h and rsa.h (the provider ABI is stable since 3.0); no OpenSSL header
 * is included anywhere in csrc/.  Every value here is checked by
 * tests/test_ssl_abi.py against a facts table in tests/ and, where the
 * system has them, against the installed OpenSSL headers.
 *
 * Names: QPV_ + OpenSSL's macro name, so grep finds both.
 */
#ifndef QPV_OSSL_ABI_H
#define QPV_OSSL_ABI_H

#include <stddef.h>

/* ---- structures (core.h) ---------------------------------------------- */

/* One entry of a dispatch table; the table ends with function_id 0. */
typedef struct {
    int function_id;
    void (*function)(void);
} qpv_dispatch;

/* One parameter; an array ends with key NULL. */
typedef struct {
    const char *key;
    unsigned int data_type;
    void *data;
    size_t data_size;
    size_t return_size;
} qpv_param;

/* One algorithm offered by query_operation; an array ends with names NULL. */
typedef struct {
    const char *algorithm_names;
    const char *property_definition;
    const qpv_dispatch *implementation;
    const char *algorithm_description;
} qpv_algorithm;

/* OSSL_CALLBACK and OSSL_PASSPHRASE_CALLBACK (core.h) */
typedef int(qpv_callback)(const qpv_param params[], void *arg);
typedef int(qpv_passphrase_callback)(char *pass, size_t pass_size, size_t *pass_len,
                                     const qpv_param params[], void *arg);

/* OSSL_provider_init_fn: handle and in are the core's, out/provctx ours. */
typedef int(qpv_provider_init_fn)(const void *handle, const qpv_dispatch *in,
                                  const qpv_dispatch **out, void **provctx);

/* ---- parameter data types (core.h) ------------------------------------ */
#define QPV_OSSL_PARAM_INTEGER 1
#define QPV_OSSL_PARAM_UNSIGNED_INTEGER 2
#define QPV_OSSL_PARAM_REAL 3
#define QPV_OSSL_PARAM_UTF8_STRING 4
#define QPV_OSSL_PARAM_OCTET_STRING 5
#define QPV_OSSL_PARAM_UTF8_PTR 6
#define QPV_OSSL_PARAM_OCTET_PTR 7
/* return_size of a parameter nobody wrote (core.h: OSSL_PARAM_UNMODIFIED) */
#define QPV_OSSL_PARAM_UNMODIFIED ((size_t)-1)

/* ---- core upcalls we take from the `in` table (core_dispatch.h) ------- */
#define QPV_OSSL_FUNC_CORE_GET_LIBCTX 4
#define QPV_OSSL_FUNC_BIO_READ_EX 42

/* ---- provider functions (core_dispatch.h) ----------------------------- */
#define QPV_OSSL_FUNC_PROVIDER_TEARDOWN 1024
#define QPV_OSSL_FUNC_PROVIDER_GETTABLE_PARAMS 1025
#define QPV_OSSL_FUNC_PROVIDER_GET_PARAMS 1026
#define QPV_OSSL_FUNC_PROVIDER_QUERY_OPERATION 1027

/* ---- operation ids (core_dispatch.h) ---------------------------------- */
#define QPV_OSSL_OP_KEYMGMT 10
#define QPV_OSSL_OP_KEYEXCH 11
#define QPV_OSSL_OP_SIGNATURE 12
#define QPV_OSSL_OP_ASYM_CIPHER 13
#define QPV_OSSL_OP_DECODER 21

/* ---- key management (core_dispatch.h) --------------------------------- */
#define QPV_OSSL_FUNC_KEYMGMT_NEW 1
#define QPV_OSSL_FUNC_KEYMGMT_LOAD 8
#define QPV_OSSL_FUNC_KEYMGMT_FREE 10
#define QPV_OSSL_FUNC_KEYMGMT_GET_PARAMS 11
#define QPV_OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS 12
#define QPV_OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME 20
#define QPV_OSSL_FUNC_KEYMGMT_HAS 21
#define QPV_OSSL_FUNC_KEYMGMT_MATCH 23
#define QPV_OSSL_FUNC_KEYMGMT_IMPORT 40
#define QPV_OSSL_FUNC_KEYMGMT_IMPORT_TYPES 41
#define QPV_OSSL_FUNC_KEYMGMT_EXPORT 42
#define QPV_OSSL_FUNC_KEYMGMT_EXPORT_TYPES 43
#define QPV_OSSL_FUNC_KEYMGMT_DUP 44

/* key data selection bits */
#define QPV_OSSL_KEYMGMT_SELECT_PRIVATE_KEY 0x01
#define QPV_OSSL_KEYMGMT_SELECT_PUBLIC_KEY 0x02
#define QPV_OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS 0x04
#define QPV_OSSL_KEYMGMT_SELECT_OTHER_PARAMETERS 0x80
/* evp.h: the selections EVP_PKEY_fromdata/todata take */
#define QPV_EVP_PKEY_KEY_PARAMETERS 0x84
#define QPV_EVP_PKEY_PUBLIC_KEY 0x86
#define QPV_EVP_PKEY_KEYPAIR 0x87

/* ---- signature (core_dispatch.h) -------------------------------------- */
#define QPV_OSSL_FUNC_SIGNATURE_NEWCTX 1
#define QPV_OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT 8
#define QPV_OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE 9
#define QPV_OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL 10
#define QPV_OSSL_FUNC_SIGNATURE_DIGEST_SIGN 11
#define QPV_OSSL_FUNC_SIGNATURE_FREECTX 16
#define QPV_OSSL_FUNC_SIGNATURE_DUPCTX 17
#define QPV_OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS 18
#define QPV_OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS 19
#define QPV_OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS 20
#define QPV_OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS 21

/* ---- asymmetric cipher (core_dispatch.h) ------------------------------ */
#define QPV_OSSL_FUNC_ASYM_CIPHER_NEWCTX 1
#define QPV_OSSL_FUNC_ASYM_CIPHER_DECRYPT_INIT 4
#define QPV_OSSL_FUNC_ASYM_CIPHER_DECRYPT 5
#define QPV_OSSL_FUNC_ASYM_CIPHER_FREECTX 6
#define QPV_OSSL_FUNC_ASYM_CIPHER_DUPCTX 7
#define QPV_OSSL_FUNC_ASYM_CIPHER_SET_CTX_PARAMS 10
#define QPV_OSSL_FUNC_ASYM_CIPHER_SETTABLE_CTX_PARAMS 11

/* ---- decoder (core_dispatch.h) ---------------------------------------- */
#define QPV_OSSL_FUNC_DECODER_NEWCTX 1
#define QPV_OSSL_FUNC_DECODER_FREECTX 2
#define QPV_OSSL_FUNC_DECODER_DOES_SELECTION 10
#define QPV_OSSL_FUNC_DECODER_DECODE 11

/* ---- objects passed from a decoder (core_object.h, core_names.h) ------ */
#define QPV_OSSL_OBJECT_PKEY 2
#define QPV_OSSL_OBJECT_PARAM_TYPE "type"
#define QPV_OSSL_OBJECT_PARAM_DATA_TYPE "data-type"
#define QPV_OSSL_OBJECT_PARAM_REFERENCE "reference"

/* ---- parameter names (core_names.h) ----------------------------------- */
#define QPV_OSSL_PROV_PARAM_NAME "name"
#define QPV_OSSL_PROV_PARAM_VERSION "version"
#define QPV_OSSL_PROV_PARAM_BUILDINFO "buildinfo"
#define QPV_OSSL_PROV_PARAM_STATUS "status"

#define QPV_OSSL_PKEY_PARAM_BITS "bits"
#define QPV_OSSL_PKEY_PARAM_SECURITY_BITS "security-bits"
#define QPV_OSSL_PKEY_PARAM_MAX_SIZE "max-size"
#define QPV_OSSL_PKEY_PARAM_DEFAULT_DIGEST "default-digest"
#define QPV_OSSL_PKEY_PARAM_RSA_N "n"
#define QPV_OSSL_PKEY_PARAM_RSA_E "e"
#define QPV_OSSL_PKEY_PARAM_RSA_D "d"
#define QPV_OSSL_PKEY_PARAM_RSA_FACTOR1 "rsa-factor1"
#define QPV_OSSL_PKEY_PARAM_RSA_FACTOR2 "rsa-factor2"
#define QPV_OSSL_PKEY_PARAM_RSA_EXPONENT1 "rsa-exponent1"
#define QPV_OSSL_PKEY_PARAM_RSA_EXPONENT2 "rsa-exponent2"
#define QPV_OSSL_PKEY_PARAM_RSA_COEFFICIENT1 "rsa-coefficient1"
#define QPV_OSSL_PKEY_PARAM_GROUP_NAME "group"
#define QPV_OSSL_PKEY_PARAM_PUB_KEY "pub"
#define QPV_OSSL_PKEY_PARAM_PRIV_KEY "priv"
#define QPV_OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY "encoded-pub-key"
#define QPV_OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT "point-format"

#define QPV_OSSL_SIGNATURE_PARAM_DIGEST "digest"
#define QPV_OSSL_SIGNATURE_PARAM_PROPERTIES "properties"
#define QPV_OSSL_SIGNATURE_PARAM_PAD_MODE "pad-mode"
#define QPV_OSSL_SIGNATURE_PARAM_PSS_SALTLEN "saltlen"
#define QPV_OSSL_SIGNATURE_PARAM_MGF1_DIGEST "mgf1-digest"
#define QPV_OSSL_SIGNATURE_PARAM_MGF1_PROPERTIES "mgf1-properties"
#define QPV_OSSL_ASYM_CIPHER_PARAM_PAD_MODE "pad-mode"
#define QPV_OSSL_ASYM_CIPHER_PARAM_TLS_CLIENT_VERSION "tls-client-version"
#define QPV_OSSL_ASYM_CIPHER_PARAM_TLS_NEGOTIATED_VERSION "tls-negotiated-version"

/* string values of pad-mode and saltlen (core_names.h) */
#define QPV_OSSL_PKEY_RSA_PAD_MODE_PKCSV15 "pkcs1"
#define QPV_OSSL_PKEY_RSA_PAD_MODE_PSS "pss"
#define QPV_OSSL_PKEY_RSA_PSS_SALT_LEN_DIGEST "digest"
#define QPV_OSSL_PKEY_RSA_PSS_SALT_LEN_MAX "max"
#define QPV_OSSL_PKEY_RSA_PSS_SALT_LEN_AUTO "auto"

/* integer values of the same (rsa.h) */
#define QPV_RSA_PKCS1_PADDING 1
#define QPV_RSA_PKCS1_PSS_PADDING 6
#define QPV_RSA_PKCS1_WITH_TLS_PADDING 7
#define QPV_RSA_PSS_SALTLEN_DIGEST (-1)
#define QPV_RSA_PSS_SALTLEN_AUTO (-2)
#define QPV_RSA_PSS_SALTLEN_MAX (-3)

#endif /* QPV_OSSL_ABI_H */
