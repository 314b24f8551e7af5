/*
 * Answers from the device: the qatlib callbacks, and what the poller does
 * with them after each poll call (qps_poll_instance): bufsets and in-flight
 * units back, verify-after-sign, the completion ring, ECDSA redos.
 *
 * Callbacks run on the thread inside icp_sal_CyPollInstance (facts 5.9).
 * They copy the result (or build the DER) into the slot and append the slot
 * to the poller's thread-local batch; nothing else.  They never poll, never
 * submit, never take a lock, never sleep.  After the poll call returns the
 * poller hands the batch over (bufsets, in-flight units, ring, wake-ups).
 * An ECDSA result with multiplyStatus FALSE, and a request a reset failed
 * (finish_failed), go to the instance's redo list and are resubmitted (with
 * a fresh k) by the poller, outside the call.
 * With the ECDSA check on (verify_ecdsa), a good-looking (r, s) is held
 * back, raw, until the device verifies it: the request takes the same redo
 * path and is resubmitted as a cpaCyEcdsaVerify, whose answer comes to
 * qps_ecdsa_verify_cb.  A held-back result that is not verified (FALSE, or
 * a check that could not run) is wiped, never delivered.
 */
#include <string.h>

#include "shim_internal.h"

/* Callbacks run on the polling thread: counting them per thread gives each
 * poller an exact "responses processed" for its own poll call. */
static __thread unsigned tl_callbacks;

/* Completions produced inside one icp_sal_CyPollInstance call are collected
 * here and handed over once after the call returns (qps_flush_batch): one
 * bufset-pool lock, one ring lock, one broadcast and at most one eventfd
 * write per poll instead of per response. */
struct qps_batch {
    struct qps_inst *inst;
    struct qps_req *head, *tail;
    uint32_t n;
};
static __thread struct qps_batch *tl_batch;

/* ---- callbacks ---------------------------------------------------------- */

static void redo_push(struct qps_inst *inst, struct qps_req *req)
{
    atomic_store(&req->state, QPS_SLOT_REDO);
    req->next = NULL;
    pthread_mutex_lock(&inst->lock);
    if (inst->redo_tail)
        inst->redo_tail->next = req;
    else
        inst->redo_head = req;
    inst->redo_tail = req;
    atomic_fetch_add(&inst->redo_count, 1);
    pthread_mutex_unlock(&inst->lock);
}

void qps_result_drop(struct qps_req *req)
{
    qps_wipe(req->result, sizeof req->result);
    req->result_len = 0;
    req->checking = false;
}

/* A result that failed its check: wiped, never delivered. */
static void reject(struct qatpy_device *dev, struct qps_req *req)
{
    qps_result_drop(req);
    req->status = QATPY_ST_VERIFY_FAIL;
    atomic_fetch_add(&dev->st.verify_failures, 1);
}

/* A checked (r, s), held raw in result, becomes the DER signature. */
static void ec_deliverable(struct qps_req *req)
{
    uint8_t der[QPS_MAX_ECDSA_DER];
    uint32_t len = req->in_len;
    req->result_len = (uint32_t)qps_der_ecdsa(req->result, req->result + len, len, der);
    memcpy(req->result, der, req->result_len);
    req->checking = false;
}

/* Verify-after-sign (CVE-2017-5681; OpenSSL's RSA-CRT self-check): a
 * successful RSA result must satisfy sig^e mod n == the submitted block, or
 * it is wiped and completes as VERIFY_FAIL.  Runs on the poller after the
 * poll call returned, outside the library's response-ring lock, never in
 * Python.  ~18 us for RSA-2048 at e = 65537 on libcrypto's bignum, ~36 us on
 * the portable code (csrc/shim/tests/test_verify --bench prints both). */
static void verify_result(struct qatpy_device *dev, struct qps_req *req)
{
    if (req->op != QPS_OP_RSA || req->status != QATPY_ST_OK || !req->verify)
        return;
    const struct qatpy_key *key = req->key;
    if (qps_rsa_verify_block(key->mont, key->e, key->e_len, req->result, req->input,
                             req->in_len))
        return;
    reject(dev, req);
}

/* A zombie's late answer, dropped.  A FAIL one is a reset giving its slot
 * back (recover.c): the request was never answered. */
static void count_late(struct qatpy_device *dev, const struct qps_req *req)
{
    atomic_fetch_add(&dev->st.late_answers, 1);
    if (req->cpa_status != CPA_STATUS_SUCCESS)
        atomic_fetch_add(&dev->st.recovered_slots, 1);
}

/* End of a device round trip: status and result are in req; hand the
 * bufset and in-flight unit back and complete it (or park it for a fresh k).
 * Inside qps_poll_instance this is deferred to qps_flush_batch. */
static void finish(struct qps_inst *inst, struct qps_req *req, int status, int cpa, bool redo)
{
    req->status = status;
    req->cpa_status = cpa;
    req->redo = redo;
    struct qps_batch *b = tl_batch;
    if (b && b->inst == inst) {
        req->next = NULL;
        if (b->tail)
            b->tail->next = req;
        else
            b->head = req;
        b->tail = req;
        b->n++;
        return;
    }
    /* Not on our poller (a library that calls back from elsewhere). */
    atomic_store(&inst->full, 0);
    atomic_store(&inst->timed_out, 0); /* it answered */
    qps_inst_release(inst, req);
    if (req->late) {
        count_late(inst->dev, req);
        qps_zombie_gone(inst, req);
    } else if (redo) {
        redo_push(inst, req);
        qps_wake_inst(inst);
    } else {
        verify_result(inst->dev, req);
        qps_complete(inst->dev, req, req->status, cpa);
    }
}

static void flush_batch(struct qps_batch *b)
{
    struct qps_inst *inst = b->inst;
    struct qatpy_device *dev = inst->dev;
    if (b->n == 0)
        return;
    /* Bufsets back (k wiped first), then the in-flight units: a dispatcher
     * that sees the lower count is guaranteed a free bufset. */
    pthread_mutex_lock(&inst->lock);
    for (struct qps_req *r = b->head; r; r = r->next) {
        if (r->dl_linked)
            qps_dl_unlink(inst, r);
        if (r->op == QPS_OP_ECDSA)
            qps_wipe(r->buf + QPS_EC_K_OFF, r->in_len);
        inst->free_bufs[inst->nfree++] = r->buf;
        r->buf = NULL;
        r->inst = NULL;
    }
    pthread_mutex_unlock(&inst->lock);
    atomic_store(&inst->full, 0);
    if (atomic_load_explicit(&inst->timed_out, memory_order_relaxed))
        atomic_store(&inst->timed_out, 0); /* it answered: rejoin */
    atomic_fetch_sub(&dev->inflight_total, b->n);
    atomic_fetch_sub(&inst->inflight, b->n);

    struct qps_req *done = NULL, **tail = &done, *redo = NULL;
    uint32_t ndone = 0;
    for (struct qps_req *r = b->head, *next; r; r = next) {
        next = r->next;
        r->next = NULL;
        if (r->late) {
            /* Answer to a request already completed as TIMEOUT: dropped. */
            count_late(dev, r);
            qps_zombie_gone(inst, r);
        } else if (r->redo) {
            r->next = redo;
            redo = r;
        } else {
            verify_result(dev, r);
            *tail = r;
            tail = &r->next;
            ndone++;
        }
    }
    if (ndone)
        qps_ring_push_list(dev, done, ndone);
    for (struct qps_req *r = redo, *next; r; r = next) {
        next = r->next;
        redo_push(inst, r);
    }
}

/* A request with a deadline is settled by whoever claims it first: false
 * means the checker already completed it as TIMEOUT (late answer). */
static bool claim_answer(struct qps_req *req)
{
    if (!req->deadline)
        return true;
    return atomic_exchange(&req->claim, QPS_CLAIM_ANSWERED) != QPS_CLAIM_TIMEDOUT;
}

static void finish_late(struct qps_req *req, CpaStatus status)
{
    req->late = true;
    finish(req->inst, req, QATPY_ST_TIMEOUT, status, false);
}

/* A FAIL while the instance is being reset is its error state failing what
 * was in flight, not an answer (recover.c): the request goes to the device
 * again, on a usable instance (through the redo list), instead of failing. */
static void finish_failed(struct qps_req *req, CpaStatus status)
{
    struct qps_inst *inst = req->inst;
    bool again = qps_inst_restarting(inst);
    if (again)
        atomic_fetch_add(&req->dev->st.restart_requeued, 1);
    finish(inst, req, QATPY_ST_DEVICE_FAIL, status, again);
}

/* Where every callback starts: false when the answer came too late (the
 * request already completed as TIMEOUT) and was dropped. */
static bool take_answer(struct qps_req *req, CpaStatus status)
{
    tl_callbacks++;
    if (claim_answer(req))
        return true;
    finish_late(req, status);
    return false;
}

void qps_rsa_cb(void *tag, CpaStatus status, void *op_data, CpaFlatBuffer *out)
{
    (void)op_data;
    (void)out; /* same as req->out */
    struct qps_req *req = tag;
    if (!take_answer(req, status))
        return;
    if (status != CPA_STATUS_SUCCESS) {
        finish_failed(req, status);
        return;
    }
    /* Output is right-aligned in a 2*half buffer; the signature is the last
     * n_len bytes (the rest is zero because the result is < n). */
    memcpy(req->result, req->out.pData + (req->out.dataLenInBytes - req->in_len), req->in_len);
    req->result_len = req->in_len;
    finish(req->inst, req, QATPY_ST_OK, 0, false);
}

void qps_ecdsa_cb(void *tag, CpaStatus status, void *op_data, CpaBoolean multiply_status,
                     CpaFlatBuffer *pr, CpaFlatBuffer *ps)
{
    (void)op_data;
    (void)pr;
    (void)ps;
    struct qps_req *req = tag;
    uint32_t len = req->in_len;
    if (!take_answer(req, status))
        return;
    if (status != CPA_STATUS_SUCCESS) {
        finish_failed(req, status);
        return;
    }
    const uint8_t *r = req->buf + QPS_EC_R_OFF;
    const uint8_t *s = req->buf + QPS_EC_S_OFF;
    if (multiply_status == CPA_TRUE && !qps_be_is_zero(r, len) && !qps_be_is_zero(s, len)) {
        if (req->ec_check) {
            /* Held back until the device verifies it: a second submit,
             * made by the poller after this poll call (the redo path). */
            memcpy(req->result, r, len);
            memcpy(req->result + len, s, len);
            req->result_len = 2 * len;
            req->checking = true;
            finish(req->inst, req, QATPY_ST_OK, 0, true);
            return;
        }
        req->result_len = (uint32_t)qps_der_ecdsa(r, s, len, req->result);
        finish(req->inst, req, QATPY_ST_OK, 0, false);
        return;
    }
    /* Invalid (r, s) for this k: retry with a fresh k, never the same one. */
    atomic_fetch_add(&req->dev->st.ecdsa_retries, 1);
    if (req->attempts >= QPS_ECDSA_MAX_ATTEMPTS)
        finish(req->inst, req, QATPY_ST_DEVICE_FAIL, CPA_STATUS_FAIL, false);
    else
        finish(req->inst, req, 0, 0, true);
}

/* The device's answer to the check of a sign's (r, s): delivered only if
 * the device says it verifies.  FALSE completes VERIFY_FAIL; a check that
 * failed (callback status) completes DEVICE_FAIL, which is what happened:
 * either way the result is dropped, and nothing is retried on the device
 * (the fallback policy may re-sign in software). */
void qps_ecdsa_verify_cb(void *tag, CpaStatus status, void *op_data, CpaBoolean verify_status)
{
    (void)op_data;
    struct qps_req *req = tag;
    if (!take_answer(req, status))
        return;
    if (status != CPA_STATUS_SUCCESS) {
        qps_result_drop(req);
        finish(req->inst, req, QATPY_ST_DEVICE_FAIL, status, false);
        return;
    }
    atomic_fetch_add(&req->dev->st.ecdsa_checks, 1);
    if (verify_status == CPA_TRUE) {
        ec_deliverable(req);
        finish(req->inst, req, QATPY_ST_OK, 0, false);
        return;
    }
    reject(req->dev, req);
    finish(req->inst, req, QATPY_ST_VERIFY_FAIL, 0, false);
}

/* ---- polling one instance ----------------------------------------------- */

int qps_poll_instance(struct qps_inst *inst)
{
    struct qatpy_device *dev = inst->dev;
    unsigned before = tl_callbacks;
    struct qps_batch batch = {.inst = inst};
    struct qps_batch *outer = tl_batch;
    tl_batch = &batch;
    CpaStatus st = qps_lib.icp_sal_CyPollInstance(inst->h, 0);
    tl_batch = outer;
    flush_batch(&batch);
    unsigned got = tl_callbacks - before;
    qps_check_deadlines(inst);
    atomic_fetch_add(&dev->st.polls, 1);
    if (got == 0) {
        atomic_fetch_add(&dev->st.polls_empty, 1);
        if (st == CPA_STATUS_SUCCESS)
            got = 1; /* responses processed whose callbacks ran elsewhere */
    }
    /* Resubmit ECDSA requests whose k gave an invalid signature; done here,
     * after the poll call returned, never from inside the callback. */
    if (atomic_load(&inst->redo_count) > 0) {
        pthread_mutex_lock(&inst->lock);
        struct qps_req *list = inst->redo_head;
        inst->redo_head = inst->redo_tail = NULL;
        atomic_store(&inst->redo_count, 0);
        pthread_mutex_unlock(&inst->lock);
        while (list) {
            struct qps_req *next = list->next;
            list->next = NULL;
            qps_submit_or_queue(dev, list, true);
            list = next;
        }
    }
    return (int)got;
}
