/*
 * Submit: the request slots, the gate that shutdown closes, and the public
 * submit calls (one operation, and the *_many batch forms).
 */
#define _GNU_SOURCE
#include <sched.h>
#include <string.h>

#include "shim_internal.h"

/* ---- slots -------------------------------------------------------------- */

static struct qps_req *slot_get(struct qatpy_device *dev)
{
    struct qps_req *req = NULL;
    pthread_mutex_lock(&dev->slot_lock);
    if (dev->nfree_slots > 0)
        req = &dev->slots[dev->free_slots[--dev->nfree_slots]];
    pthread_mutex_unlock(&dev->slot_lock);
    return req;
}

void qps_slot_free_many(struct qatpy_device *dev, struct qps_req **reqs, uint32_t n)
{
    pthread_mutex_lock(&dev->slot_lock);
    for (uint32_t i = 0; i < n; i++) {
        atomic_store(&reqs[i]->state, QPS_SLOT_FREE);
        dev->free_slots[dev->nfree_slots++] = reqs[i]->index;
    }
    pthread_mutex_unlock(&dev->slot_lock);
}

/* ---- public submit ------------------------------------------------------ */

static bool gate_enter(struct qatpy_device *dev)
{
    atomic_fetch_add(&dev->submit_active, 1);
    if (atomic_load(&dev->closing)) {
        atomic_fetch_sub(&dev->submit_active, 1);
        return false;
    }
    return true;
}

static void gate_exit(struct qatpy_device *dev) { atomic_fetch_sub(&dev->submit_active, 1); }

int qps_submit(struct qatpy_device *dev, struct qatpy_key *key, int op, const uint8_t *input,
               uint32_t in_len, uint64_t tag, struct qps_waiter *waiter, bool driven)
{
    if (!gate_enter(dev))
        return QATPY_SUBMIT_CLOSED;
    struct qps_req *req = slot_get(dev);
    if (!req) {
        gate_exit(dev);
        return QATPY_SUBMIT_FULL;
    }
    req->op = op;
    req->tag = tag;
    req->key = key;
    qps_key_ref(key);
    req->in_len = in_len;
    req->attempts = 0;
    req->status = 0;
    req->cpa_status = 0;
    req->result_len = 0;
    req->inst_index = 0;
    req->next = NULL;
    req->late = false;
    req->verify = key->verify;
    req->ec_check = key->verify_ecdsa;
    req->checking = false;
    req->waiter = waiter;
    req->driven = driven;
    if (driven) {
        if (atomic_fetch_add(&dev->driven, 1) == 0) {
            /* The first driven request since none was: fresh state (a
             * handover decided for earlier ones does not carry over). */
            atomic_store(&dev->drive_looks, 0);
            atomic_store(&dev->drive_handed, 0);
        }
        atomic_fetch_add(&dev->st.driven, 1);
    }
    req->deadline = key->deadline_ns ? qps_now_ns() + key->deadline_ns : 0;
    atomic_store_explicit(&req->claim, QPS_CLAIM_OPEN, memory_order_relaxed);
    memcpy(req->input, input, in_len);
    atomic_fetch_add(&dev->st.submitted, 1);
    int cpu = sched_getcpu(); /* a hint for the poll threads (avoid_submitter_cpu) */
    if (atomic_load_explicit(&dev->submit_cpu, memory_order_relaxed) != cpu)
        atomic_store_explicit(&dev->submit_cpu, cpu, memory_order_relaxed); /* keep the line clean */
    qps_submit_or_queue(dev, req, false);
    gate_exit(dev);
    return QATPY_SUBMIT_OK;
}

int qps_rsa_block(struct qatpy_device *dev, struct qatpy_key *key, int encoding, int hash_id,
                  const uint8_t *input, size_t input_len, uint8_t *em)
{
    if (!dev || !input)
        return QATPY_SUBMIT_BADARG;
    if (qps_forked(dev))
        return QATPY_SUBMIT_CLOSED;
    if (!key || key->type != QPS_KEY_RSA || key->dev != dev)
        return QATPY_SUBMIT_BADKEY;
    uint32_t n_len = key->n_len;
    if (encoding == QATPY_RSA_PKCS1) {
        if (qps_pkcs1_encode(hash_id, input, input_len, em, n_len) != 0)
            return QATPY_SUBMIT_BADARG;
    } else if (encoding == QATPY_RSA_RAW) {
        /* A shorter block is the same integer left-padded with zeros. */
        if (input_len == 0 || input_len > n_len)
            return QATPY_SUBMIT_BADARG;
        memset(em, 0, n_len - input_len);
        memcpy(em + (n_len - input_len), input, input_len);
    } else {
        return QATPY_SUBMIT_BADARG;
    }
    /* Rep2 gives the device no n to check against (facts 5.5): we must. */
    if (!qps_be_less(em, key->n, n_len))
        return QATPY_SUBMIT_BADARG;
    return QATPY_SUBMIT_OK;
}

int qps_ec_block(struct qatpy_device *dev, struct qatpy_key *key, const uint8_t *digest,
                 size_t digest_len, uint8_t *m)
{
    if (!dev || (!digest && digest_len))
        return QATPY_SUBMIT_BADARG;
    if (qps_forked(dev))
        return QATPY_SUBMIT_CLOSED;
    if (!key || key->type != QPS_KEY_EC || key->dev != dev)
        return QATPY_SUBMIT_BADKEY;
    const struct qps_curve *cv = key->cv;
    qps_truncate_digest(digest, digest_len, cv->bits, m, cv->len);
    return QATPY_SUBMIT_OK;
}

int qps_op_block(struct qatpy_device *dev, struct qatpy_key *key, int op, int encoding, int hash_id,
                 const uint8_t *input, size_t input_len, uint8_t *block, uint32_t *block_len)
{
    int rc;
    if (op == QPS_OP_RSA)
        rc = qps_rsa_block(dev, key, encoding, hash_id, input, input_len, block);
    else if (op == QPS_OP_ECDSA)
        rc = qps_ec_block(dev, key, input, input_len, block);
    else
        rc = QATPY_SUBMIT_BADARG;
    /* The key was checked (type, device) before this is read. */
    *block_len = rc != QATPY_SUBMIT_OK ? 0 : op == QPS_OP_RSA ? key->n_len : key->cv->len;
    return rc;
}

int qatpy_submit_rsa(qatpy_device *dev, qatpy_key *key, int encoding, int hash_id,
                     const uint8_t *input, size_t input_len, uint64_t tag)
{
    uint8_t em[QATPY_MAX_RESULT];
    int rc = qps_rsa_block(dev, key, encoding, hash_id, input, input_len, em);
    if (rc != QATPY_SUBMIT_OK)
        return rc;
    return qps_submit(dev, key, QPS_OP_RSA, em, key->n_len, tag, NULL, false);
}

int qatpy_submit_ecdsa(qatpy_device *dev, qatpy_key *key, const uint8_t *digest,
                       size_t digest_len, uint64_t tag)
{
    uint8_t m[QPS_MAX_CURVE_LEN];
    int rc = qps_ec_block(dev, key, digest, digest_len, m);
    if (rc != QATPY_SUBMIT_OK)
        return rc;
    return qps_submit(dev, key, QPS_OP_ECDSA, m, key->cv->len, tag, NULL, false);
}

/* ---- batch forms -------------------------------------------------------- */

/* Built on the single-operation entry points.  They exist for the cost
 * model of the Python side: cffi releases and re-acquires the GIL on every
 * call, which is cheap alone but costs a thread switch whenever the
 * completion thread is waiting for the GIL, so one call per batch instead
 * of one per operation matters. */
int qatpy_submit_rsa_many(qatpy_device *dev, qatpy_key *key, int encoding, int hash_id,
                          const uint8_t *inputs, size_t input_len, size_t n, uint64_t tag0,
                          size_t *n_done)
{
    size_t i = 0;
    int rc = QATPY_SUBMIT_OK;
    for (; i < n; i++) {
        rc = qatpy_submit_rsa(dev, key, encoding, hash_id, inputs + i * input_len, input_len,
                              tag0 + i);
        if (rc != QATPY_SUBMIT_OK)
            break;
    }
    if (n_done)
        *n_done = i;
    return rc;
}

int qatpy_submit_ecdsa_many(qatpy_device *dev, qatpy_key *key, const uint8_t *digests,
                            size_t digest_len, size_t n, uint64_t tag0, size_t *n_done)
{
    size_t i = 0;
    int rc = QATPY_SUBMIT_OK;
    for (; i < n; i++) {
        rc = qatpy_submit_ecdsa(dev, key, digests + i * digest_len, digest_len, tag0 + i);
        if (rc != QATPY_SUBMIT_OK)
            break;
    }
    if (n_done)
        *n_done = i;
    return rc;
}
