/*
 * The ssl provider's interface to Python (through qatpy/_binding.py).
 * Fed verbatim to cffi's cdef() after qatpy_shim.h, so: declarations and
 * integer #defines only.
 *
 * qatpy registers an OpenSSL 3 provider named "qatpy" inside this
 * extension, in the libcrypto that Python's _ssl module uses (found at run
 * time with dlopen RTLD_NOLOAD; nothing links against libcrypto).  Python
 * loads a private key with `cryptography`, makes a provider key from its
 * components (qatpy_pkey_new_*), and registers it under an unguessable id;
 * a PEM block labelled QATPY KEY REFERENCE whose body is that id is then
 * decoded by the provider into the key, whose signatures are made in C.
 */

/* ---- qatpy_provider_load results ------------------------------------- */
#define QATPY_PV_OK 0
#define QATPY_PV_ERR_NO_LIBCRYPTO 1   /* no libcrypto.so.3 in this process (import ssl first) */
#define QATPY_PV_ERR_STATIC 2         /* _ssl does not resolve libcrypto dynamically */
#define QATPY_PV_ERR_OTHER_LIBCRYPTO 3 /* _ssl uses another libcrypto than libcrypto.so.3 */
#define QATPY_PV_ERR_VERSION 4        /* OpenSSL_version_num() differs from ssl.OPENSSL_VERSION_NUMBER */
#define QATPY_PV_ERR_TOO_OLD 5        /* OpenSSL older than 3.0 */
#define QATPY_PV_ERR_SYMBOL 6         /* a libcrypto function we need is missing */
#define QATPY_PV_ERR_FIPS 7           /* default properties ask for FIPS providers */
#define QATPY_PV_ERR_LOAD 8           /* OSSL_PROVIDER_add_builtin / try_load failed */
#define QATPY_PV_ERR_EXCLUDED 9       /* the default property query excludes provider=qatpy */

/* The PEM label of a key reference and the size of an id (hex + NUL). */
#define QATPY_PKEY_ID_SIZE 65

typedef struct qatpy_pkey qatpy_pkey;

/* Load the provider into the default library context, once per process.
 * `ssl_module` is the path of Python's _ssl extension (its libcrypto must be
 * the one found as libcrypto.so.3), `expected_version` is
 * ssl.OPENSSL_VERSION_NUMBER.  Returns QATPY_PV_* and a reason in err. */
int qatpy_provider_load(const char *ssl_module, unsigned long expected_version, char *err,
                        size_t errlen);

/* Provider keys (the provider must be loaded).  Components are big-endian
 * unsigned integers; the private ones are copied into a default-provider
 * EVP_PKEY (for the software path) and our copies wiped.  The key holds a
 * reference on `eng`.  NULL with a reason in err on failure. */
qatpy_pkey *qatpy_pkey_new_rsa(qatpy_engine *eng, const uint8_t *n, size_t n_len,
                               const uint8_t *e, size_t e_len, const uint8_t *d, size_t d_len,
                               const uint8_t *p, size_t p_len, const uint8_t *q, size_t q_len,
                               const uint8_t *dp, size_t dp_len, const uint8_t *dq,
                               size_t dq_len, const uint8_t *qinv, size_t qinv_len, char *err,
                               size_t errlen);
/* `group` is an OpenSSL group name (prime256v1, secp384r1, secp521r1); `pub`
 * the uncompressed point, `d` the private scalar. */
qatpy_pkey *qatpy_pkey_new_ec(qatpy_engine *eng, const char *group, const uint8_t *d,
                              size_t d_len, const uint8_t *pub, size_t pub_len, char *err,
                              size_t errlen);
/* Give a private provider key its device copy: `dk` (a device key made for
 * the same engine object) is referenced by the provider key, whose
 * signatures then go to the device, under the engine's settings and
 * fallback policy.  Before registering; 0 on success, -1 if refused. */
int qatpy_pkey_attach_device(qatpy_pkey *k, qatpy_key *dk);
/* Register the key under a fresh random id (written to id, hex, NUL
 * terminated; id_size >= QATPY_PKEY_ID_SIZE).  The registration holds a
 * reference until qatpy_pkey_unregister.  0 on success, -1 on failure. */
int qatpy_pkey_register(qatpy_pkey *k, char *id, size_t id_size);
/* 0 if the id was registered (and is no more), -1 if unknown. */
int qatpy_pkey_unregister(const char *id);
/* Python's reference. */
void qatpy_pkey_release(qatpy_pkey *k);
/* References held on the key now (Python's, registrations', OpenSSL's). */
uint32_t qatpy_pkey_refs(qatpy_pkey *k);
/* Registered ids now (for leak checks in tests). */
size_t qatpy_pkey_registered(void);
