/*
 * Device-side keys.  The private parts are copied into DMA memory once per
 * instance (on the instance's NUMA node) when the key is created, so a
 * signing op never allocates or copies key material.
 *
 * Lifetime: refs = 1 (Python's handle) + 1 per request slot holding the
 * key (+ 1 per C holder, e.g. an ssl provider key).  The key holds a
 * reference on its engine object, whose settings its requests take.  The last unref wipes and frees the DMA copies, then the key, then
 * drops the key's reference on the device struct.  qatpy_device_free wipes
 * and frees the DMA of keys Python still holds (no request can use them
 * any more); their later release frees only ordinary memory.  Error texts
 * never contain key bytes.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "shim_internal.h"

void qps_key_ref(struct qatpy_key *key) { atomic_fetch_add(&key->refs, 1); }

/* The simulator's fault scope (tests): a key of a scoped engine registers
 * its DMA blocks, and takes them out before they are freed. */
static void sim_scope(struct qatpy_key *key, const char *op)
{
    if (!key->sim_scoped || !qps_lib.sim_set)
        return;
    for (uint32_t i = 0; i < key->ninst; i++)
        if (key->inst[i].dma)
            qps_lib.sim_set(op, (long long)(uintptr_t)key->inst[i].dma);
}

void qps_key_free_dma_locked(struct qatpy_key *key)
{
    if (key->dma_freed)
        return;
    sim_scope(key, "fault.scope.remove");
    for (uint32_t i = 0; i < key->ninst; i++) {
        struct qps_key_inst *ki = &key->inst[i];
        qps_dma_free(key->dev, ki->dma, ki->dma_len);
        ki->dma = NULL;
        qps_wipe(&ki->rsa, sizeof ki->rsa);
    }
    key->dma_freed = true;
}

static void key_destroy(struct qatpy_key *key)
{
    struct qatpy_device *dev = key->dev;
    pthread_mutex_lock(&dev->key_lock);
    if (key->prev)
        key->prev->next = key->next;
    else if (dev->keys == key)
        dev->keys = key->next;
    if (key->next)
        key->next->prev = key->prev;
    qps_key_free_dma_locked(key);
    pthread_mutex_unlock(&dev->key_lock);
    free(key->n);
    free(key->e);
    qps_mont_free(key->mont);
    struct qatpy_engine *eng = key->eng;
    uint32_t ninst = key->ninst;
    qps_wipe(key, sizeof *key + ninst * sizeof(struct qps_key_inst));
    free(key);
    qatpy_engine_release(eng);
    qps_dev_unref(dev);
}

void qps_key_unref(struct qatpy_key *key)
{
    if (atomic_fetch_sub(&key->refs, 1) == 1)
        key_destroy(key);
}

void qatpy_key_release(qatpy_key *key)
{
    if (!key)
        return;
    if (qps_forked(key->dev))
        return; /* parent's key in a forked child: its DMA is not mapped here; leak */
    qps_key_unref(key);
}

static struct qatpy_key *key_alloc(struct qatpy_device *dev, struct qatpy_engine *eng, int type,
                                   char *err, size_t errlen)
{
    if (!dev) {
        qps_errf(err, errlen, "no device");
        return NULL;
    }
    if (!eng || qatpy_engine_device(eng) != dev) {
        qps_errf(err, errlen, "the key's engine object is not one on this device");
        return NULL;
    }
    if (qps_forked(dev)) {
        qps_errf(err, errlen, "the device belongs to the parent process (used after fork)");
        return NULL;
    }
    if (atomic_load(&dev->closing) || !dev->inst) {
        qps_errf(err, errlen, "the device is shut down");
        return NULL;
    }
    struct qatpy_key *key = calloc(1, sizeof *key + dev->ninst * sizeof(struct qps_key_inst));
    if (!key) {
        qps_errf(err, errlen, "out of memory");
        return NULL;
    }
    key->dev = dev;
    key->type = type;
    key->eng = eng; /* referenced once the key is published (key_register) */
    const qatpy_engine_config *cfg = qatpy_engine_config_of(eng);
    key->verify = cfg->verify != 0;
    key->verify_ecdsa = cfg->verify_ecdsa != 0;
    key->deadline_ns = cfg->deadline_ns;
    key->ninst = dev->ninst;
    atomic_init(&key->refs, 1);
    return key;
}

/* Publish: list it on the device (so device_free can wipe it) and pin the struct. */
static void key_register(struct qatpy_key *key)
{
    struct qatpy_device *dev = key->dev;
    atomic_fetch_add(&dev->refs, 1);
    qatpy_engine_ref(key->eng);
    key->sim_scoped = qatpy_engine_in_sim_fault_scope(key->eng) != 0;
    sim_scope(key, "fault.scope.add");
    pthread_mutex_lock(&dev->key_lock);
    key->prev = NULL;
    key->next = dev->keys;
    if (dev->keys)
        dev->keys->prev = key;
    dev->keys = key;
    pthread_mutex_unlock(&dev->key_lock);
}

/* Undo a half-built key that was never registered. */
static void key_abort(struct qatpy_key *key)
{
    qps_key_free_dma_locked(key);
    free(key->n);
    free(key->e);
    qps_mont_free(key->mont);
    free(key);
}

qatpy_key *qatpy_rsa_key_new(qatpy_device *dev, qatpy_engine *eng, const uint8_t *n, size_t n_len,
                             const uint8_t *e, size_t e_len, const uint8_t *p, size_t p_len,
                             const uint8_t *q, size_t q_len, const uint8_t *dp, size_t dp_len,
                             const uint8_t *dq, size_t dq_len, const uint8_t *qinv,
                             size_t qinv_len, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    const uint8_t *comp[5] = {p, q, dp, dq, qinv};
    size_t clen[5] = {p_len, q_len, dp_len, dq_len, qinv_len};
    static const char *const cname[5] = {"p", "q", "dmp1", "dmq1", "iqmp"};
    if (!n || !e) {
        qps_errf(err, errlen, "RSA key: missing modulus or public exponent");
        return NULL;
    }
    n_len = qps_be_strip(&n, n_len);
    e_len = qps_be_strip(&e, e_len);
    if (n_len == 0 || e_len == 0) {
        qps_errf(err, errlen, "RSA key: zero modulus or public exponent");
        return NULL;
    }
    if (n_len > QATPY_MAX_RESULT) {
        qps_errf(err, errlen, "RSA key: modulus of %zu bytes is larger than 8192 bits", n_len);
        return NULL;
    }
    if (e_len > n_len) {
        qps_errf(err, errlen, "RSA key: public exponent longer than the modulus");
        return NULL;
    }
    if ((n[n_len - 1] & 1) == 0) {
        qps_errf(err, errlen, "RSA key: modulus is even");
        return NULL;
    }
    /* Rep2 components, each left-padded to half the modulus length. */
    uint32_t half = (uint32_t)((n_len + 1) / 2);
    for (int i = 0; i < 5; i++) {
        if (!comp[i]) {
            qps_errf(err, errlen, "RSA key: missing CRT component %s", cname[i]);
            return NULL;
        }
        clen[i] = qps_be_strip(&comp[i], clen[i]);
        if (clen[i] == 0 || clen[i] > half) {
            qps_errf(err, errlen,
                     "RSA key: CRT component %s is zero or longer than half the modulus",
                     cname[i]);
            return NULL;
        }
    }

    struct qatpy_key *key = key_alloc(dev, eng, QPS_KEY_RSA, err, errlen);
    if (!key)
        return NULL;
    key->n_len = (uint32_t)n_len;
    key->half = half;
    key->n = malloc(n_len);
    key->e = malloc(e_len);
    if (!key->n || !key->e) {
        key_abort(key);
        qps_errf(err, errlen, "out of memory");
        return NULL;
    }
    memcpy(key->n, n, n_len);
    memcpy(key->e, e, e_len);
    key->e_len = (uint32_t)e_len;
    key->mont = qps_mont_new(n, n_len); /* n is odd and <= 8192 bits: only ENOMEM fails */
    if (!key->mont) {
        key_abort(key);
        qps_errf(err, errlen, "out of memory");
        return NULL;
    }

    for (uint32_t i = 0; i < key->ninst; i++) {
        struct qps_key_inst *ki = &key->inst[i];
        ki->dma_len = 5 * (size_t)half;
        ki->dma = qps_dma_alloc(dev, ki->dma_len, dev->inst[i].node);
        if (!ki->dma) {
            key_abort(key);
            qps_errf(err, errlen,
                     "qaeMemAllocNUMA failed for an RSA key on instance %u; hint: raise "
                     "RLIMIT_MEMLOCK",
                     i);
            return NULL;
        }
        memset(ki->dma, 0, ki->dma_len);
        CpaFlatBuffer *fb[5] = {&ki->rsa.privateKeyRep2.prime1P, &ki->rsa.privateKeyRep2.prime2Q,
                                &ki->rsa.privateKeyRep2.exponent1Dp,
                                &ki->rsa.privateKeyRep2.exponent2Dq,
                                &ki->rsa.privateKeyRep2.coefficientQInv};
        for (int c = 0; c < 5; c++) {
            uint8_t *dst = ki->dma + (size_t)c * half;
            memcpy(dst + (half - clen[c]), comp[c], clen[c]);
            fb[c]->dataLenInBytes = half;
            fb[c]->pData = dst;
        }
        ki->rsa.version = CPA_CY_RSA_VERSION_TWO_PRIME;
        ki->rsa.privateKeyRepType = CPA_CY_RSA_PRIVATE_KEY_REP_TYPE_2;
    }
    key_register(key);
    return key;
}

/* A public coordinate as cv->len bytes, left-padded; false unless below q. */
static bool ec_coord(const struct qps_curve *cv, const uint8_t *c, size_t c_len, uint8_t *out)
{
    if (!c)
        return false;
    c_len = qps_be_strip(&c, c_len);
    if (c_len > cv->len)
        return false;
    memset(out, 0, cv->len);
    memcpy(out + (cv->len - c_len), c, c_len);
    return qps_be_less(out, cv->q, cv->len);
}

qatpy_key *qatpy_ec_key_new(qatpy_device *dev, qatpy_engine *eng, int curve, const uint8_t *d,
                            size_t d_len, const uint8_t *x, size_t x_len, const uint8_t *y,
                            size_t y_len, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    const struct qps_curve *cv = qps_curve_get(curve);
    if (!cv) {
        qps_errf(err, errlen, "EC key: unsupported curve id %d", curve);
        return NULL;
    }
    if (!d) {
        qps_errf(err, errlen, "EC key: missing private scalar");
        return NULL;
    }
    d_len = qps_be_strip(&d, d_len);
    uint8_t padded[QPS_MAX_CURVE_LEN];
    if (d_len == 0 || d_len > cv->len) {
        qps_errf(err, errlen, "EC key: private scalar out of range for the curve");
        return NULL;
    }
    memset(padded, 0, cv->len);
    memcpy(padded + (cv->len - d_len), d, d_len);
    if (!qps_be_less(padded, cv->n, cv->len)) {
        qps_wipe(padded, sizeof padded);
        qps_errf(err, errlen, "EC key: private scalar out of range for the curve");
        return NULL;
    }
    uint8_t px[QPS_MAX_CURVE_LEN], py[QPS_MAX_CURVE_LEN];
    if (!ec_coord(cv, x, x_len, px) || !ec_coord(cv, y, y_len, py)) {
        qps_wipe(padded, sizeof padded);
        qps_errf(err, errlen, "EC key: public point missing or out of range for the curve");
        return NULL;
    }
    struct qatpy_key *key = key_alloc(dev, eng, QPS_KEY_EC, err, errlen);
    if (!key) {
        qps_wipe(padded, sizeof padded);
        return NULL;
    }
    key->cv = cv;
    for (uint32_t i = 0; i < key->ninst; i++) {
        struct qps_key_inst *ki = &key->inst[i];
        /* d, then the public point the device's check verifies against. */
        ki->dma_len = 3 * (size_t)cv->len;
        ki->dma = qps_dma_alloc(dev, ki->dma_len, dev->inst[i].node);
        if (!ki->dma) {
            qps_wipe(padded, sizeof padded);
            key_abort(key);
            qps_errf(err, errlen,
                     "qaeMemAllocNUMA failed for an EC key on instance %u; hint: raise "
                     "RLIMIT_MEMLOCK",
                     i);
            return NULL;
        }
        memcpy(ki->dma, padded, cv->len);
        memcpy(ki->dma + cv->len, px, cv->len);
        memcpy(ki->dma + 2 * cv->len, py, cv->len);
    }
    qps_wipe(padded, sizeof padded);
    key_register(key);
    return key;
}
