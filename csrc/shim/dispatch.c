/*
 * Dispatch: a request goes to the least-loaded usable instance
 * (reservation), with a fresh ECDSA nonce, or waits in the device's pending
 * FIFO (backpressure) until an instance has room.
 *
 * A request slot moves FREE -> (PENDING <-> ONDEV <-> REDO)* -> DONE -> FREE.
 * While ONDEV it owns one unit of its instance's in-flight count and one
 * DMA bufset from that instance's pool; both are returned before the slot
 * reaches the ring, so the pools never run dry and a steady state
 * allocates no DMA.
 */
#include <string.h>

#include "shim_internal.h"

/* ECDSA nonces: OS CSPRNG bytes fetched 512 at a time per thread instead of
 * one getrandom() per signature.  Bytes are wiped as they are handed out.
 * Fork safety: a child inherits the forking thread's buffer, so the buffer
 * is discarded when qps_fork_gen changed (bumped in the child by the atfork
 * handler); parent and child can never draw the same bytes. */
static __thread struct {
    uint8_t buf[512];
    size_t avail;
    unsigned gen;
} tl_rng;

static int rng_buffered(uint8_t *out, size_t len)
{
    unsigned gen = atomic_load_explicit(&qps_fork_gen, memory_order_relaxed);
    if (tl_rng.gen != gen) {
        qps_wipe(tl_rng.buf, sizeof tl_rng.buf);
        tl_rng.avail = 0;
        tl_rng.gen = gen;
    }
    if (len > sizeof tl_rng.buf)
        return qps_rng_os(out, len);
    if (tl_rng.avail < len) {
        if (qps_rng_os(tl_rng.buf, sizeof tl_rng.buf) != 0)
            return -1;
        tl_rng.avail = sizeof tl_rng.buf;
    }
    uint8_t *src = tl_rng.buf + (sizeof tl_rng.buf - tl_rng.avail);
    memcpy(out, src, len);
    qps_wipe(src, len);
    tl_rng.avail -= len;
    return 0;
}

/* ---- instance reservation ----------------------------------------------- */

/* How long an instance that answered RETRY is left alone when none of its
 * requests completes in the meantime (1 ms: a ring drains far sooner). */
#define QPS_RETRY_HOLD_NS 1000000ULL

/* Least loaded usable instance under the cap; an instance that answered
 * RETRY is skipped until one of its requests completes (or it is empty).
 * Ties rotate so equal instances share the load.  Returns with one unit of
 * the instance's in-flight taken.
 *
 * Usable: not RESTARTING, not fatal, and not every slot held by zombies
 * (requests past their deadline the device still holds: no answer will
 * free those until the device answers late or a reset fails them,
 * recover.c).  Instances marked timed_out (a request missed its deadline
 * there) are routed around while any other usable instance exists.  When
 * every usable instance is timed out, the one whose last timeout is oldest
 * still gets work: that is how a single-instance device, or one that lost
 * a single response, gets the chance to answer and rejoin (each such
 * request is bounded by its own deadline).
 *
 * NULL with *why 0: usable instances exist but are busy (queue the request).
 * NULL with *why a CpaStatus: none is usable -- RESTARTING if one is being
 * reset, else RESOURCE if zombies fill one, else FATAL -- and the request
 * fails at once instead of waiting out its deadline in the queue. */
static struct qps_inst *reserve(struct qatpy_device *dev, int *why)
{
    uint32_t n = dev->ninst;
    uint32_t start = atomic_fetch_add_explicit(&dev->rr, 1, memory_order_relaxed) % n;
    for (;;) {
        struct qps_inst *best = NULL, *probe = NULL;
        uint32_t best_load = UINT32_MAX, probe_load = 0;
        uint64_t probe_fail = UINT64_MAX;
        bool any_good = false, any_usable = false, any_restarting = false, any_full = false;
        for (uint32_t j = 0; j < n; j++) {
            struct qps_inst *inst = &dev->inst[(start + j) % n];
            if (!atomic_load(&inst->healthy)) {
                any_restarting |= !atomic_load(&inst->fatal);
                continue;
            }
            if (atomic_load(&inst->zombies) >= dev->cap) {
                any_full = true;
                continue;
            }
            any_usable = true;
            uint32_t load = atomic_load(&inst->inflight);
            /* After a RETRY, wait for one of the instance's requests to
             * complete -- but not forever: the requests still counted in
             * its load may be zombies whose answers never come. */
            bool full = load > 0 && atomic_load(&inst->full) &&
                        qps_now_ns() - atomic_load(&inst->full_ns) < QPS_RETRY_HOLD_NS;
            bool open = load < dev->cap && !full;
            if (atomic_load_explicit(&inst->timed_out, memory_order_relaxed)) {
                uint64_t f = atomic_load_explicit(&inst->last_fail_ns, memory_order_relaxed);
                if (open && f < probe_fail) {
                    probe = inst;
                    probe_fail = f;
                    probe_load = load;
                }
                continue;
            }
            any_good = true;
            if (open && load < best_load) {
                best = inst;
                best_load = load;
            }
        }
        if (!best && !any_good && probe) {
            best = probe;
            best_load = probe_load;
        }
        if (!best) {
            *why = any_usable       ? 0
                   : any_restarting ? CPA_STATUS_RESTARTING
                   : any_full       ? CPA_STATUS_RESOURCE
                                    : CPA_STATUS_FATAL;
            return NULL;
        }
        if (atomic_compare_exchange_weak(&best->inflight, &best_load, best_load + 1)) {
            uint64_t total = atomic_fetch_add(&dev->inflight_total, 1) + 1;
            uint64_t m = atomic_load(&dev->st.inflight_max);
            while (total > m && !atomic_compare_exchange_weak(&dev->st.inflight_max, &m, total)) {
            }
            return best;
        }
    }
}

void qps_inst_release(struct qps_inst *inst, struct qps_req *req)
{
    if (req->op == QPS_OP_ECDSA && req->buf)
        qps_wipe(req->buf + QPS_EC_K_OFF, req->in_len); /* the nonce never outlives its use */
    pthread_mutex_lock(&inst->lock);
    if (req->dl_linked)
        qps_dl_unlink(inst, req);
    inst->free_bufs[inst->nfree++] = req->buf;
    pthread_mutex_unlock(&inst->lock);
    req->buf = NULL;
    req->inst = NULL;
    /* Total first: reserve() raises the instance count before the total, so
     * this order keeps inflight_total <= sum of instance counts at all times. */
    atomic_fetch_sub(&inst->dev->inflight_total, 1);
    atomic_fetch_sub(&inst->inflight, 1);
}

/* ---- dispatch ----------------------------------------------------------- */

enum { QPS_D_OK, QPS_D_NOCAP, QPS_D_RETRY, QPS_D_DONE };

/* The curve's six constants from the instance's DMA copy, in the order
 * every ECDSA op-data names them (xg, yg, n, q, a, b). */
static void curve_params(const struct qps_inst *inst, const struct qps_curve *cv,
                         CpaFlatBuffer *const params[6])
{
    uint8_t *cb = inst->curve_dma + (size_t)(cv->id - QATPY_CURVE_P256) * QPS_CURVE_BLOCK;
    for (int p = 0; p < 6; p++) {
        params[p]->dataLenInBytes = cv->len;
        params[p]->pData = cb + p * QPS_CURVE_PARAM_STRIDE;
    }
}

static void flat(CpaFlatBuffer *fb, uint8_t *p, uint32_t len)
{
    fb->dataLenInBytes = len;
    fb->pData = p;
}

/* The device's check of a sign's (r, s) (held raw in req->result) against
 * the key's public point, which the key's DMA copy holds after d. */
static CpaStatus submit_check(struct qps_inst *inst, struct qps_req *req,
                              const struct qps_key_inst *ki, uint8_t *buf)
{
    const struct qps_curve *cv = req->key->cv;
    uint32_t len = cv->len;
    CpaCyEcdsaVerifyOpData *op = &req->opd.ecv;
    curve_params(inst, cv, (CpaFlatBuffer *const[6]){&op->xg, &op->yg, &op->n, &op->q, &op->a,
                                                     &op->b});
    memcpy(buf + QPS_EC_M_OFF, req->input, len);
    memcpy(buf + QPS_EC_R_OFF, req->result, len);
    memcpy(buf + QPS_EC_S_OFF, req->result + len, len);
    flat(&op->m, buf + QPS_EC_M_OFF, len);
    flat(&op->r, buf + QPS_EC_R_OFF, len);
    flat(&op->s, buf + QPS_EC_S_OFF, len);
    flat(&op->xp, ki->dma + len, len);
    flat(&op->yp, ki->dma + 2 * len, len);
    op->fieldType = CPA_CY_EC_FIELD_TYPE_PRIME;
    req->verify_status = CPA_FALSE;
    if (!qps_lib.cpaCyEcdsaVerify)
        return CPA_STATUS_UNSUPPORTED; /* a library without it: nothing is delivered unchecked */
    return qps_lib.cpaCyEcdsaVerify(inst->h, qps_ecdsa_verify_cb, req, op, &req->verify_status);
}

/* A request that will not reach the device fails to submit; if it was the
 * check of a sign's result, that result is dropped, never delivered
 * unchecked. */
static void refused(struct qatpy_device *dev, struct qps_req *req, int status, CpaStatus st)
{
    if (req->checking)
        qps_result_drop(req);
    qps_complete(dev, req, status, st);
}

static int dispatch(struct qatpy_device *dev, struct qps_req *req)
{
    int why = 0;
    struct qps_inst *inst = reserve(dev, &why);
    if (!inst) {
        if (!why)
            return QPS_D_NOCAP;
        /* No usable instance: fail now so the fallback policy runs it. */
        atomic_fetch_add(&dev->st.fast_fails, 1);
        refused(dev, req, QATPY_ST_UNAVAILABLE, why);
        return QPS_D_DONE;
    }
    /* Not yet visible to the checker (linked below) and no answer pending. */
    if (req->deadline)
        atomic_store(&req->claim, QPS_CLAIM_OPEN);
    pthread_mutex_lock(&inst->lock);
    /* nfree > 0 is guaranteed: bufsets == cap >= in-flight units. */
    req->buf = inst->free_bufs[--inst->nfree];
    if (req->deadline)
        qps_dl_link(inst, req);
    pthread_mutex_unlock(&inst->lock);
    req->inst = inst;
    req->inst_index = inst->index;
    struct qps_key_inst *ki = &req->key->inst[inst->index];
    uint8_t *buf = req->buf;
    bool has_deadline = req->deadline != 0;
    /* A waiter that polls for itself needs no poll thread (wait.c). */
    bool driven = (req->waiter && req->waiter->drives) ||
                  (req->driven && !atomic_load(&dev->drive_handed));
    CpaStatus st;

    atomic_store(&req->state, QPS_SLOT_ONDEV);
    if (req->op == QPS_OP_RSA) {
        uint32_t n_len = req->in_len;
        memcpy(buf + QPS_RSA_IN_OFF, req->input, n_len);
        req->opd.rsa.pRecipientPrivateKey = &ki->rsa;
        req->opd.rsa.inputData.dataLenInBytes = n_len;
        req->opd.rsa.inputData.pData = buf + QPS_RSA_IN_OFF;
        req->out.dataLenInBytes = 2 * req->key->half;
        req->out.pData = buf + QPS_RSA_OUT_OFF;
        st = qps_lib.cpaCyRsaDecrypt(inst->h, qps_rsa_cb, req, &req->opd.rsa, &req->out);
    } else if (req->checking) {
        st = submit_check(inst, req, ki, buf);
    } else {
        const struct qps_curve *cv = req->key->cv;
        uint32_t len = cv->len;
        uint8_t *k = buf + QPS_EC_K_OFF;
        req->attempts++;
        if (qps_random_scalar(k, cv->n, len, cv->bits, rng_buffered) != 0) {
            int open = QPS_CLAIM_OPEN;
            if (has_deadline &&
                !atomic_compare_exchange_strong(&req->claim, &open, QPS_CLAIM_ANSWERED)) {
                qps_inst_release(inst, req); /* timed out meanwhile: settled */
                qps_zombie_gone(inst, req);
                return QPS_D_DONE;
            }
            qps_inst_release(inst, req);
            qps_complete(dev, req, QATPY_ST_SUBMIT_FAIL, CPA_STATUS_FAIL);
            return QPS_D_DONE;
        }
        memcpy(buf + QPS_EC_M_OFF, req->input, len);
        memset(buf + QPS_EC_R_OFF, 0, len);
        memset(buf + QPS_EC_S_OFF, 0, len);
        CpaCyEcdsaSignRSOpData *op = &req->opd.ec;
        curve_params(inst, cv,
                     (CpaFlatBuffer *const[6]){&op->xg, &op->yg, &op->n, &op->q, &op->a, &op->b});
        flat(&op->k, k, len);
        flat(&op->m, buf + QPS_EC_M_OFF, len);
        flat(&op->d, ki->dma, len);
        op->fieldType = CPA_CY_EC_FIELD_TYPE_PRIME;
        flat(&req->r, buf + QPS_EC_R_OFF, len);
        flat(&req->s, buf + QPS_EC_S_OFF, len);
        req->sign_status = CPA_FALSE;
        st = qps_lib.cpaCyEcdsaSignRS(inst->h, qps_ecdsa_cb, req, op, &req->sign_status, &req->r,
                                      &req->s);
    }
    if (st == CPA_STATUS_SUCCESS) {
        /* req may already be completed by a poller: touch only inst now. */
        if (!driven)
            qps_wake_inst(inst);
        return QPS_D_OK;
    }
    /* Refused: no answer will come.  If the checker timed it out while the
     * submit call ran, TIMEOUT is already in the ring: it is settled, and
     * we drop the hold the device would have dropped. */
    int open = QPS_CLAIM_OPEN;
    if (has_deadline && !atomic_compare_exchange_strong(&req->claim, &open, QPS_CLAIM_ANSWERED)) {
        qps_inst_release(inst, req);
        qps_zombie_gone(inst, req);
        return QPS_D_DONE;
    }
    qps_inst_release(inst, req);
    if (st == CPA_STATUS_RETRY) {
        /* Ring full: nothing was queued and no callback will come. */
        atomic_store(&inst->full_ns, qps_now_ns());
        atomic_store(&inst->full, 1);
        atomic_fetch_add(&dev->st.ring_retries, 1);
        if (req->op == QPS_OP_ECDSA && !req->checking)
            req->attempts--; /* that k never reached the device */
        return QPS_D_RETRY;
    }
    refused(dev, req, QATPY_ST_SUBMIT_FAIL, st);
    if (st == CPA_STATUS_RESTARTING)
        qps_poll_device_events(dev, true); /* learn of the reset now: route around it */
    return QPS_D_DONE;
}

static void pend_push(struct qatpy_device *dev, struct qps_req *req, bool front)
{
    atomic_store(&req->state, QPS_SLOT_PENDING);
    pthread_mutex_lock(&dev->pend_lock);
    if (front) {
        req->next = dev->pend_head;
        dev->pend_head = req;
        if (!dev->pend_tail)
            dev->pend_tail = req;
    } else {
        req->next = NULL;
        if (dev->pend_tail)
            dev->pend_tail->next = req;
        else
            dev->pend_head = req;
        dev->pend_tail = req;
    }
    atomic_fetch_add(&dev->pend_count, 1);
    pthread_mutex_unlock(&dev->pend_lock);
}

static struct qps_req *pend_pop(struct qatpy_device *dev)
{
    pthread_mutex_lock(&dev->pend_lock);
    struct qps_req *req = dev->pend_head;
    if (req) {
        dev->pend_head = req->next;
        if (!dev->pend_head)
            dev->pend_tail = NULL;
        req->next = NULL;
        atomic_fetch_sub(&dev->pend_count, 1);
    }
    pthread_mutex_unlock(&dev->pend_lock);
    return req;
}

void qps_submit_or_queue(struct qatpy_device *dev, struct qps_req *req, bool front)
{
    /* With work already queued, join the queue so order is kept (FIFO) and
     * nothing overtakes a request that is waiting for ring space. */
    if (atomic_load(&dev->pend_count) == 0) {
        int r = dispatch(dev, req);
        if (r == QPS_D_OK || r == QPS_D_DONE)
            return;
    }
    qps_undrive(dev, req); /* queued: the poll threads dispatch it */
    pend_push(dev, req, front);
    /* The pollers take queued work after their next poll; wake parked ones. */
    qps_wake_all(dev);
}

int qps_dispatch_pending(struct qatpy_device *dev)
{
    if (atomic_load(&dev->pend_count) == 0)
        return 0;
    /* One dispatcher at a time keeps FIFO order and avoids N pollers racing
     * the same RETRY; the others just go back to polling. */
    int expected = 0;
    if (!atomic_compare_exchange_strong(&dev->dispatching, &expected, 1))
        return 0;
    int done = 0, blocked = 0;
    uint64_t now = 0;
    struct qps_req *req;
    while ((req = pend_pop(dev)) != NULL) {
        if (req->deadline) {
            if (!now)
                now = qps_now_ns();
            if (now >= req->deadline) {
                /* Never reached the device: no instance is to blame.  The
                 * FIFO is in submit order (requeues return to the head and
                 * are older), so expired requests surface here first; the
                 * pollers run this every iteration while anything is queued. */
                atomic_fetch_add(&dev->st.timeouts, 1);
                qps_complete(dev, req, QATPY_ST_TIMEOUT, 0);
                done++;
                continue;
            }
        }
        int r = dispatch(dev, req);
        if (r == QPS_D_NOCAP || r == QPS_D_RETRY) {
            pend_push(dev, req, true);
            blocked = r == QPS_D_RETRY;
            break;
        }
        done++;
    }
    atomic_store(&dev->dispatching, 0);
    return blocked && done == 0 ? -1 : done;
}
