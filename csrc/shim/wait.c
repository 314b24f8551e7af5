/*
 * Blocking signs for C callers (the ssl provider): one request, submitted
 * like any other, whose completion goes to the thread waiting for it instead
 * of the ring.  No Python runs and the GIL is not needed.
 *
 * Ownership: the waiter lives on the caller's stack until it has seen
 * `done` under its mutex; the completing thread writes the result and sets
 * `done` under that mutex and never touches the waiter after unlocking.
 * The request slot and key reference are given back before the waiter is
 * woken (a zombie's slot stays with the device: only the ring's hold, which
 * the waiter stands in for, is dropped).
 */
#include <string.h>

#include "shim_internal.h"

struct qps_waiter {
    pthread_mutex_t m;
    pthread_cond_t c;
    int done;
    int32_t status;
    int32_t cpa_status;
    uint32_t len;
    uint8_t *out;
    size_t cap;
};

void qps_waiter_complete(struct qatpy_device *dev, struct qps_req *req, bool zombie)
{
    struct qps_waiter *w = req->waiter;
    req->waiter = NULL;
    int32_t status = zombie ? QATPY_ST_TIMEOUT : req->status;
    uint32_t len = 0;
    if (!zombie && status == QATPY_ST_OK) {
        len = req->result_len;
        if (len > w->cap)
            len = (uint32_t)w->cap;
        memcpy(w->out, req->result, len);
    }
    int32_t cpa = zombie ? 0 : req->cpa_status;
    if (zombie) {
        qps_zombie_release(dev, req);
    } else {
        struct qatpy_key *key = req->key;
        req->key = NULL;
        if (key)
            qps_key_unref(key);
        qps_slot_free_many(dev, &req, 1);
    }
    pthread_mutex_lock(&w->m);
    w->status = status;
    w->cpa_status = cpa;
    w->len = len;
    w->done = 1;
    pthread_cond_signal(&w->c);
    pthread_mutex_unlock(&w->m);
}

int qps_sign_wait(struct qatpy_key *key, int op, int encoding, int hash_id, const uint8_t *input,
                  size_t input_len, uint8_t *out, size_t out_cap, size_t *out_len,
                  int32_t *cpa_status)
{
    if (!key || !out || !out_len)
        return QATPY_SUBMIT_BADARG;
    struct qatpy_device *dev = key->dev;
    uint8_t block[QATPY_MAX_RESULT];
    uint32_t block_len;
    int rc;
    if (op == QPS_OP_RSA) {
        rc = qps_rsa_block(dev, key, encoding, hash_id, input, input_len, block);
        block_len = key->n_len;
    } else if (op == QPS_OP_ECDSA) {
        rc = qps_ec_block(dev, key, input, input_len, block);
        block_len = key->cv ? key->cv->len : 0;
    } else {
        rc = QATPY_SUBMIT_BADARG;
        block_len = 0;
    }
    if (rc != QATPY_SUBMIT_OK)
        return rc;

    struct qps_waiter w;
    memset(&w, 0, sizeof w);
    pthread_mutex_init(&w.m, NULL);
    pthread_cond_init(&w.c, NULL);
    w.out = out;
    w.cap = out_cap;
    rc = qps_submit(dev, key, op, block, block_len, 0, &w);
    if (rc == QATPY_SUBMIT_OK) {
        /* The answer comes from whoever polls: the poll threads, or in
         * manual mode the application's own qatpy_poll loop (never this
         * thread: two pollers on one instance at once are not allowed). */
        pthread_mutex_lock(&w.m);
        while (!w.done)
            pthread_cond_wait(&w.c, &w.m);
        pthread_mutex_unlock(&w.m);
        rc = w.status;
        *out_len = w.len;
        if (cpa_status)
            *cpa_status = w.cpa_status;
    }
    pthread_cond_destroy(&w.c);
    pthread_mutex_destroy(&w.m);
    return rc;
}

_Static_assert(QATPY_OP_RSA == QPS_OP_RSA && QATPY_OP_ECDSA == QPS_OP_ECDSA, "one numbering");

int qatpy_sign_wait(qatpy_key *key, int op, int encoding, int hash_id, const uint8_t *input,
                    size_t input_len, uint8_t *out, size_t out_cap, size_t *out_len,
                    int32_t *cpa_status)
{
    if (key && qps_forked(key->dev))
        return QATPY_SUBMIT_CLOSED;
    return qps_sign_wait(key, op, encoding, hash_id, input, input_len, out, out_cap, out_len,
                         cpa_status);
}
