/*
 * Private declarations shared by the provider's C files (never fed to cffi).
 *
 * Ownership map:
 *   - struct qatpy_pkey is refcounted: Python's handle, each registration
 *     in the id table, and each key object OpenSSL holds (keymgmt load /
 *     dup) own one reference.  The last unref frees the default-provider
 *     EVP_PKEY (OpenSSL wipes its private numbers) and drops the key's
 *     engine reference.  Keys are immutable once made, so any thread may
 *     use them without a lock.
 *   - Public-only keys (made by keymgmt new + import, e.g. the public key
 *     of the certificate that OpenSSL compares with ours) have no engine.
 *   - The libcrypto function table is written once under the load lock
 *     before `qpv_loaded` turns true and never changes after; libcrypto is
 *     never dlclosed (Python's _ssl keeps it mapped for the process life).
 */
#ifndef QPV_H
#define QPV_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "ossl_abi.h"
#include "qatpy_provider.h"

/* ---- libcrypto, resolved at run time (libcrypto.c) --------------------- */

/* Opaque libcrypto objects: we only pass their pointers around. */
typedef struct qpv_evp_pkey qpv_evp_pkey;
typedef struct qpv_evp_pkey_ctx qpv_evp_pkey_ctx;
typedef struct qpv_evp_md qpv_evp_md;
typedef struct qpv_evp_md_ctx qpv_evp_md_ctx;
typedef struct qpv_evp_keymgmt qpv_evp_keymgmt;

#define QPV_CRYPTO_FUNCS(X)                                                                   \
    X(unsigned long, OpenSSL_version_num, (void))                                             \
    X(int, OSSL_PROVIDER_add_builtin, (void *libctx, const char *name,                        \
                                       qpv_provider_init_fn *init))                           \
    X(void *, OSSL_PROVIDER_try_load, (void *libctx, const char *name, int retain_fallbacks)) \
    X(int, EVP_default_properties_is_fips_enabled, (void *libctx))                            \
    X(qpv_evp_keymgmt *, EVP_KEYMGMT_fetch, (void *libctx, const char *alg, const char *pq))  \
    X(void, EVP_KEYMGMT_free, (qpv_evp_keymgmt * km))                                         \
    X(qpv_evp_pkey_ctx *, EVP_PKEY_CTX_new_from_name, (void *libctx, const char *name,        \
                                                       const char *pq))                       \
    X(qpv_evp_pkey_ctx *, EVP_PKEY_CTX_new_from_pkey, (void *libctx, qpv_evp_pkey *pkey,      \
                                                       const char *pq))                       \
    X(void, EVP_PKEY_CTX_free, (qpv_evp_pkey_ctx * ctx))                                      \
    X(int, EVP_PKEY_fromdata_init, (qpv_evp_pkey_ctx * ctx))                                  \
    X(int, EVP_PKEY_fromdata, (qpv_evp_pkey_ctx * ctx, qpv_evp_pkey **pkey, int selection,    \
                               qpv_param *params))                                            \
    X(int, EVP_PKEY_todata, (const qpv_evp_pkey *pkey, int selection, qpv_param **params))    \
    X(void, OSSL_PARAM_free, (qpv_param * params))                                            \
    X(void, EVP_PKEY_free, (qpv_evp_pkey * pkey))                                             \
    X(int, EVP_PKEY_get_params, (const qpv_evp_pkey *pkey, qpv_param *params))                \
    X(int, EVP_PKEY_eq, (const qpv_evp_pkey *a, const qpv_evp_pkey *b))                       \
    X(int, EVP_PKEY_sign_init_ex, (qpv_evp_pkey_ctx * ctx, const qpv_param *params))          \
    X(int, EVP_PKEY_sign, (qpv_evp_pkey_ctx * ctx, unsigned char *sig, size_t *siglen,        \
                           const unsigned char *tbs, size_t tbslen))                          \
    X(int, EVP_PKEY_decrypt_init_ex, (qpv_evp_pkey_ctx * ctx, const qpv_param *params))       \
    X(int, EVP_PKEY_decrypt, (qpv_evp_pkey_ctx * ctx, unsigned char *out, size_t *outlen,     \
                              const unsigned char *in, size_t inlen))                         \
    X(qpv_evp_md *, EVP_MD_fetch, (void *libctx, const char *name, const char *pq))           \
    X(void, EVP_MD_free, (qpv_evp_md * md))                                                   \
    X(int, EVP_MD_up_ref, (qpv_evp_md * md))                                                  \
    X(qpv_evp_md_ctx *, EVP_MD_CTX_new, (void))                                               \
    X(void, EVP_MD_CTX_free, (qpv_evp_md_ctx * ctx))                                          \
    X(int, EVP_MD_CTX_copy_ex, (qpv_evp_md_ctx * out, const qpv_evp_md_ctx *in))              \
    X(int, EVP_DigestInit_ex, (qpv_evp_md_ctx * ctx, const qpv_evp_md *md, void *engine))     \
    X(int, EVP_DigestUpdate, (qpv_evp_md_ctx * ctx, const void *d, size_t n))                 \
    X(int, EVP_DigestFinal_ex, (qpv_evp_md_ctx * ctx, unsigned char *md, unsigned int *n))    \
    X(int, EVP_Digest, (const void *data, size_t count, unsigned char *md, unsigned int *n,   \
                        const qpv_evp_md *type, void *engine))

struct qpv_crypto {
#define QPV_CRYPTO_FIELD(ret, name, args) ret(*name) args;
    QPV_CRYPTO_FUNCS(QPV_CRYPTO_FIELD)
#undef QPV_CRYPTO_FIELD
};

extern struct qpv_crypto qpv_c;
/* Query that pins our own helper operations to OpenSSL's default provider. */
#define QPV_DEFAULT_PQ "provider=default"
#define QPV_PROVIDER_NAME "qatpy"
#define QPV_PROVIDER_PROPS "provider=qatpy"

/* ---- the provider (provider.c) ---------------------------------------- */
qpv_provider_init_fn qpv_provider_init;
/* The core's BIO_read_ex upcall, NULL before init. */
typedef int(qpv_bio_read_ex_fn)(void *bio, void *data, size_t len, size_t *nread);
extern qpv_bio_read_ex_fn *qpv_bio_read_ex;

/* ---- keys (keys.c) ----------------------------------------------------- */
enum { QPV_RSA = 1, QPV_EC = 2 };

struct qatpy_pkey {
    _Atomic uint32_t refs;
    int type;                 /* QPV_RSA / QPV_EC */
    int has_private;          /* a registered private key (else public only) */
    int bits;                 /* modulus / order bits */
    int curve;                /* QATPY_CURVE_* for EC, 0 for RSA */
    size_t max_sig;           /* largest signature in bytes */
    qpv_evp_pkey *soft;       /* default-provider EVP_PKEY: private or public */
    qatpy_engine *eng;        /* reference; NULL for public-only keys */
    /* The device copy of the key (a reference on a qatpy_key made on the
     * engine's device, for the engine), attached once before the key is
     * registered; NULL: every signature is made in software. */
    struct qatpy_key *device_key;
};

/* An empty key of `type` (keymgmt new), filled once by
 * qpv_key_import_public, which refuses params that carry private material
 * or are not a valid public key (returns 0). */
struct qatpy_pkey *qpv_key_new_empty(int type);
int qpv_key_import_public(struct qatpy_pkey *k, const qpv_param *params);
/* Once, before the first registration (fork handlers for the table). */
void qpv_keys_init(void);
void qpv_key_ref(struct qatpy_pkey *k);
void qpv_key_unref(struct qatpy_pkey *k);
/* The key registered under `id` (len bytes, not NUL-terminated), with a
 * new reference; NULL if unknown. */
struct qatpy_pkey *qpv_key_lookup(const char *id, size_t len);

/* ---- parameters (params.c) -------------------------------------------- */
const qpv_param *qpv_param_locate(const qpv_param *params, const char *key);
qpv_param *qpv_param_locate_mut(qpv_param *params, const char *key);
int qpv_param_get_int(const qpv_param *p, int *out);
/* A UTF8 string (or pointer) parameter, copied NUL-terminated into buf. */
int qpv_param_get_utf8(const qpv_param *p, char *buf, size_t size);
int qpv_param_set_utf8(qpv_param *p, const char *s);
int qpv_param_set_int(qpv_param *p, int v);
qpv_param qpv_param_utf8(const char *key, const char *s);
qpv_param qpv_param_int(const char *key, int *v);
qpv_param qpv_param_octets(const char *key, const void *data, size_t len);
qpv_param qpv_param_native_uint(const char *key, void *data, size_t len);
qpv_param qpv_param_end(void);
/* Big-endian bytes into a native-endian unsigned integer of the same
 * length (what OSSL_PARAM_UNSIGNED_INTEGER carries). */
void qpv_be_to_native(uint8_t *out, const uint8_t *in, size_t len);
void qpv_wipe(void *p, size_t len);

/* ---- digests (signature.c) -------------------------------------------- */
struct qpv_hash {
    const char *name;         /* OpenSSL's canonical name */
    const char *aliases[3];
    size_t size;
    int shim_id;              /* QATPY_HASH_*, 0 when the device has no DigestInfo for it */
};
const struct qpv_hash *qpv_hash_by_name(const char *name);

/* ---- device hook (device_hook.c) --------------------------------------- */
enum { QPV_SIG_RSA_PKCS1 = 1, QPV_SIG_RSA_PSS = 2, QPV_SIG_ECDSA = 3 };

/* One signature, already hashed. */
struct qpv_sign_req {
    int scheme;                   /* QPV_SIG_* */
    const struct qpv_hash *hash;  /* the message digest's */
    const uint8_t *digest;
    size_t digest_len;
    const struct qpv_hash *mgf1;  /* PSS only */
    size_t salt_len;              /* PSS only: resolved to bytes */
};

enum {
    QPV_DEV_OK = 0,          /* signature written */
    QPV_DEV_NONE = 1,        /* no device path for this key: sign in software */
    QPV_DEV_ERROR = 2,       /* the device failed (fallback per policy) */
    QPV_DEV_VERIFY = 3,      /* the device's result did not verify */
    QPV_DEV_DEADLINE = 4,    /* no answer within the engine's deadline */
    QPV_DEV_CLOSED = 5,      /* the device is shut down (its engines closed) */
    QPV_DEV_OVERFLOW = 6,    /* every request slot busy and the policy overflows */
    QPV_DEV_UNAVAILABLE = 7  /* no usable instance now (recovering): failed at once */
};

/* 1 if the device could take this signature at all (key size, curve,
 * digest); 0 means it is signed in software, counted as unsupported. */
int qpv_device_supports(const struct qatpy_pkey *k, const struct qpv_sign_req *req);
/* Sign on the device, blocking this thread until the answer (QPV_DEV_*). */
int qpv_device_sign(struct qatpy_pkey *k, const struct qpv_sign_req *req, uint8_t *sig,
                    size_t *siglen, size_t sigsize);

/* ---- dispatch tables -------------------------------------------------- */
extern const qpv_dispatch qpv_rsa_keymgmt[], qpv_ec_keymgmt[];
extern const qpv_dispatch qpv_rsa_signature[], qpv_ecdsa_signature[];
extern const qpv_dispatch qpv_rsa_asym_cipher[];
extern const qpv_dispatch qpv_rsa_decoder[], qpv_ec_decoder[];

#define QPV_FN(f) ((void (*)(void))(f))

/* Entries of the static "gettable/settable" descriptor arrays (no data). */
#define QPV_P_INT(k) {k, QPV_OSSL_PARAM_INTEGER, NULL, 0, 0}
#define QPV_P_UINT(k) {k, QPV_OSSL_PARAM_UNSIGNED_INTEGER, NULL, 0, 0}
#define QPV_P_UTF8(k) {k, QPV_OSSL_PARAM_UTF8_STRING, NULL, 0, 0}
#define QPV_P_UTF8_PTR(k) {k, QPV_OSSL_PARAM_UTF8_PTR, NULL, 0, 0}
#define QPV_P_OCTETS(k) {k, QPV_OSSL_PARAM_OCTET_STRING, NULL, 0, 0}
#define QPV_P_END {NULL, 0, NULL, 0, 0}

#endif /* QPV_H */
