/*
 * Provider keys and the table of registered key references.
 *
 * A private key is made from Python's components into a default-provider
 * EVP_PKEY (EVP_PKEY_fromdata with "provider=default"), which signs on the
 * software path and answers parameter queries; our temporary native-endian
 * copies of the private numbers are wiped before they are freed.  A key
 * reference id is 32 random bytes in hex: only code that was handed the id
 * (the PEM written for load_cert_chain) can load the key.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "qpv.h"

static void errf(char *err, size_t errlen, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
}

static int pkey_get_int(qpv_evp_pkey *pkey, const char *name, int *out)
{
    qpv_param ps[2] = {qpv_param_int(name, out), qpv_param_end()};
    return qpv_c.EVP_PKEY_get_params(pkey, ps) && ps[0].return_size != QPV_OSSL_PARAM_UNMODIFIED;
}

static struct qatpy_pkey *key_alloc(int type, int has_private, qatpy_engine *eng)
{
    struct qatpy_pkey *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    atomic_init(&k->refs, 1);
    k->type = type;
    k->has_private = has_private;
    if (eng) {
        qatpy_engine_ref(eng);
        k->eng = eng;
    }
    return k;
}

/* Takes ownership of soft on success. */
static int key_set_soft(struct qatpy_pkey *k, qpv_evp_pkey *soft)
{
    int bits = 0, max_size = 0;
    if (!pkey_get_int(soft, QPV_OSSL_PKEY_PARAM_BITS, &bits) ||
        !pkey_get_int(soft, QPV_OSSL_PKEY_PARAM_MAX_SIZE, &max_size) || bits <= 0 ||
        max_size <= 0)
        return 0;
    k->bits = bits;
    k->max_sig = (size_t)max_size;
    k->soft = soft;
    return 1;
}

static struct qatpy_pkey *key_private(int type, qpv_evp_pkey *soft, qatpy_engine *eng,
                                      char *err, size_t errlen)
{
    struct qatpy_pkey *k = key_alloc(type, 1, eng);
    if (!k || !key_set_soft(k, soft)) {
        qpv_key_unref(k);
        qpv_c.EVP_PKEY_free(soft);
        errf(err, errlen, "out of memory, or OpenSSL reports no size for the key");
        return NULL;
    }
    return k;
}

static qpv_evp_pkey *fromdata(const char *keytype, int selection, qpv_param *params)
{
    qpv_evp_pkey *pkey = NULL;
    qpv_evp_pkey_ctx *ctx = qpv_c.EVP_PKEY_CTX_new_from_name(NULL, keytype, QPV_DEFAULT_PQ);
    if (!ctx)
        return NULL;
    if (qpv_c.EVP_PKEY_fromdata_init(ctx) <= 0 ||
        qpv_c.EVP_PKEY_fromdata(ctx, &pkey, selection, params) <= 0)
        pkey = NULL;
    qpv_c.EVP_PKEY_CTX_free(ctx);
    return pkey;
}

qatpy_pkey *qatpy_pkey_new_rsa(qatpy_engine *eng, const uint8_t *n, size_t n_len,
                               const uint8_t *e, size_t e_len, const uint8_t *d, size_t d_len,
                               const uint8_t *p, size_t p_len, const uint8_t *q, size_t q_len,
                               const uint8_t *dp, size_t dp_len, const uint8_t *dq,
                               size_t dq_len, const uint8_t *qinv, size_t qinv_len, char *err,
                               size_t errlen)
{
    if (!qpv_c.EVP_PKEY_fromdata) {
        errf(err, errlen, "the ssl provider is not loaded");
        return NULL;
    }
    const char *names[8] = {QPV_OSSL_PKEY_PARAM_RSA_N,         QPV_OSSL_PKEY_PARAM_RSA_E,
                            QPV_OSSL_PKEY_PARAM_RSA_D,         QPV_OSSL_PKEY_PARAM_RSA_FACTOR1,
                            QPV_OSSL_PKEY_PARAM_RSA_FACTOR2,   QPV_OSSL_PKEY_PARAM_RSA_EXPONENT1,
                            QPV_OSSL_PKEY_PARAM_RSA_EXPONENT2, QPV_OSSL_PKEY_PARAM_RSA_COEFFICIENT1};
    const uint8_t *src[8] = {n, e, d, p, q, dp, dq, qinv};
    size_t len[8] = {n_len, e_len, d_len, p_len, q_len, dp_len, dq_len, qinv_len};
    size_t total = 0;
    for (int i = 0; i < 8; i++) {
        if (!src[i] || len[i] == 0 || len[i] > 2048) {
            errf(err, errlen, "an RSA key component is empty or too long");
            return NULL;
        }
        total += len[i];
    }
    uint8_t *buf = malloc(total);
    if (!buf) {
        errf(err, errlen, "out of memory");
        return NULL;
    }
    qpv_param ps[9];
    size_t off = 0;
    for (int i = 0; i < 8; i++) {
        qpv_be_to_native(buf + off, src[i], len[i]);
        ps[i] = qpv_param_native_uint(names[i], buf + off, len[i]);
        off += len[i];
    }
    ps[8] = qpv_param_end();
    qpv_evp_pkey *soft = fromdata("RSA", QPV_EVP_PKEY_KEYPAIR, ps);
    qpv_wipe(buf, total);
    free(buf);
    if (!soft) {
        errf(err, errlen, "OpenSSL's default provider rejected the RSA key");
        return NULL;
    }
    return key_private(QPV_RSA, soft, eng, err, errlen);
}

static int curve_id(const char *group)
{
    if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0 ||
        strcmp(group, "secp256r1") == 0)
        return QATPY_CURVE_P256;
    if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0)
        return QATPY_CURVE_P384;
    if (strcmp(group, "secp521r1") == 0 || strcmp(group, "P-521") == 0)
        return QATPY_CURVE_P521;
    return 0;
}

qatpy_pkey *qatpy_pkey_new_ec(qatpy_engine *eng, const char *group, const uint8_t *d,
                              size_t d_len, const uint8_t *pub, size_t pub_len, char *err,
                              size_t errlen)
{
    if (!qpv_c.EVP_PKEY_fromdata) {
        errf(err, errlen, "the ssl provider is not loaded");
        return NULL;
    }
    int curve = group ? curve_id(group) : 0;
    if (!curve) {
        errf(err, errlen, "unsupported curve (P-256, P-384 and P-521 only)");
        return NULL;
    }
    if (!d || d_len == 0 || d_len > 66 || !pub || pub_len == 0 || pub_len > 133) {
        errf(err, errlen, "an EC key component is empty or too long");
        return NULL;
    }
    uint8_t priv[66];
    qpv_be_to_native(priv, d, d_len);
    qpv_param ps[4] = {qpv_param_utf8(QPV_OSSL_PKEY_PARAM_GROUP_NAME, group),
                       qpv_param_octets(QPV_OSSL_PKEY_PARAM_PUB_KEY, pub, pub_len),
                       qpv_param_native_uint(QPV_OSSL_PKEY_PARAM_PRIV_KEY, priv, d_len),
                       qpv_param_end()};
    qpv_evp_pkey *soft = fromdata("EC", QPV_EVP_PKEY_KEYPAIR, ps);
    qpv_wipe(priv, sizeof priv);
    if (!soft) {
        errf(err, errlen, "OpenSSL's default provider rejected the EC key");
        return NULL;
    }
    struct qatpy_pkey *k = key_private(QPV_EC, soft, eng, err, errlen);
    if (k)
        k->curve = curve;
    return k;
}

struct qatpy_pkey *qpv_key_new_empty(int type) { return key_alloc(type, 0, NULL); }

int qpv_key_import_public(struct qatpy_pkey *k, const qpv_param *params)
{
    static const char *const private_names[] = {
        QPV_OSSL_PKEY_PARAM_RSA_D,         QPV_OSSL_PKEY_PARAM_RSA_FACTOR1,
        QPV_OSSL_PKEY_PARAM_RSA_FACTOR2,   QPV_OSSL_PKEY_PARAM_RSA_EXPONENT1,
        QPV_OSSL_PKEY_PARAM_RSA_EXPONENT2, QPV_OSSL_PKEY_PARAM_RSA_COEFFICIENT1,
        QPV_OSSL_PKEY_PARAM_PRIV_KEY};
    if (k->soft)
        return 0; /* keys are immutable once filled */
    /* Private material is never taken in: a key we hold privately comes
     * only from Python through a registration. */
    for (size_t i = 0; i < sizeof private_names / sizeof *private_names; i++)
        if (qpv_param_locate(params, private_names[i]))
            return 0;
    /* EVP_PKEY_fromdata takes a non-const array it only reads. */
    qpv_param *mut = (qpv_param *)(uintptr_t)params;
    qpv_evp_pkey *soft =
        fromdata(k->type == QPV_RSA ? "RSA" : "EC", QPV_EVP_PKEY_PUBLIC_KEY, mut);
    if (!soft)
        return 0;
    if (!key_set_soft(k, soft)) {
        qpv_c.EVP_PKEY_free(soft);
        return 0;
    }
    return 1;
}

void qpv_key_ref(struct qatpy_pkey *k) { atomic_fetch_add(&k->refs, 1); }

void qpv_key_unref(struct qatpy_pkey *k)
{
    if (!k || atomic_fetch_sub(&k->refs, 1) != 1)
        return;
    if (k->soft)
        qpv_c.EVP_PKEY_free(k->soft);
    if (k->device_key)
        qatpy_key_release(k->device_key); /* left alone in a forked child, as Python's are */
    if (k->eng)
        qatpy_engine_release(k->eng);
    free(k);
}

int qatpy_pkey_attach_device(qatpy_pkey *k, qatpy_key *dk)
{
    if (!k || !dk || !k->has_private || k->device_key || !k->eng ||
        qatpy_engine_device(k->eng) != dk->dev || dk->eng != k->eng)
        return -1;
    qps_key_ref(dk);
    k->device_key = dk;
    return 0;
}

void qatpy_pkey_release(qatpy_pkey *k) { qpv_key_unref(k); }

uint32_t qatpy_pkey_refs(qatpy_pkey *k) { return atomic_load(&k->refs); }

/* ---- the id table --------------------------------------------------------
 * A small array under a mutex: registrations live from a load_cert_chain
 * call to its return (or while a key_reference context is open), so there
 * are few at a time. */

#define ID_HEX 64

struct reg {
    char id[ID_HEX + 1];
    struct qatpy_pkey *key;
};

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct reg *regs;
static size_t nregs, capregs;

/* fork: the table lock is taken around fork() so a child never inherits it
 * held by a thread that does not exist there. */
static void reg_prepare(void) { pthread_mutex_lock(&reg_lock); }
static void reg_unlock(void) { pthread_mutex_unlock(&reg_lock); }
void qpv_keys_init(void) { pthread_atfork(reg_prepare, reg_unlock, reg_unlock); }

int qatpy_pkey_register(qatpy_pkey *k, char *id, size_t id_size)
{
    uint8_t rnd[ID_HEX / 2];
    if (!k || !k->has_private || id_size < QATPY_PKEY_ID_SIZE)
        return -1;
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        return -1;
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(id + 2 * i, 3, "%02x", rnd[i]);
    pthread_mutex_lock(&reg_lock);
    if (nregs == capregs) {
        size_t cap = capregs ? 2 * capregs : 8;
        struct reg *r = realloc(regs, cap * sizeof *r);
        if (!r) {
            pthread_mutex_unlock(&reg_lock);
            return -1;
        }
        regs = r;
        capregs = cap;
    }
    memcpy(regs[nregs].id, id, ID_HEX + 1);
    qpv_key_ref(k);
    regs[nregs].key = k;
    nregs++;
    pthread_mutex_unlock(&reg_lock);
    return 0;
}

int qatpy_pkey_unregister(const char *id)
{
    struct qatpy_pkey *k = NULL;
    pthread_mutex_lock(&reg_lock);
    for (size_t i = 0; i < nregs; i++) {
        if (strcmp(regs[i].id, id) == 0) {
            k = regs[i].key;
            regs[i] = regs[--nregs];
            break;
        }
    }
    pthread_mutex_unlock(&reg_lock);
    if (!k)
        return -1;
    qpv_key_unref(k);
    return 0;
}

size_t qatpy_pkey_registered(void)
{
    pthread_mutex_lock(&reg_lock);
    size_t n = nregs;
    pthread_mutex_unlock(&reg_lock);
    return n;
}

struct qatpy_pkey *qpv_key_lookup(const char *id, size_t len)
{
    struct qatpy_pkey *k = NULL;
    if (len != ID_HEX)
        return NULL;
    pthread_mutex_lock(&reg_lock);
    for (size_t i = 0; i < nregs; i++) {
        if (memcmp(regs[i].id, id, ID_HEX) == 0) {
            k = regs[i].key;
            qpv_key_ref(k);
            break;
        }
    }
    pthread_mutex_unlock(&reg_lock);
    return k;
}
