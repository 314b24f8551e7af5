/*
 * Requests: submit, dispatch to the least-loaded healthy instance, the
 * pending FIFO (backpressure), the qatlib callbacks, the completion ring
 * and its wake-ups (condvar for qatpy_wait, eventfd for asyncio).
 *
 * A request slot moves FREE -> (PENDING <-> ONDEV <-> REDO)* -> DONE -> FREE.
 * While ONDEV it owns one unit of its instance's in-flight count and one
 * DMA bufset from that instance's pool; both are returned before the slot
 * reaches the ring, so the pools never run dry and a steady state
 * allocates no DMA.
 *
 * Callbacks run on the thread inside icp_sal_CyPollInstance (facts 5.9).
 * They copy the result (or build the DER) into the slot and append the slot
 * to the poller's thread-local batch; nothing else.  They never poll, never
 * submit, never take a lock, never sleep.  After the poll call returns the
 * poller hands the batch over (bufsets, in-flight units, ring, wake-ups).
 * An ECDSA result with multiplyStatus FALSE goes to the instance's redo
 * list and is resubmitted with a fresh k by the poller, outside the call.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

static void slot_free_many(struct qatpy_device *dev, struct qps_req **reqs, uint32_t n)
{
    pthread_mutex_lock(&dev->slot_lock);
    for (uint32_t i = 0; i < n; i++) {
        atomic_store(&reqs[i]->state, QPS_SLOT_FREE);
        dev->free_slots[dev->nfree_slots++] = reqs[i]->index;
    }
    pthread_mutex_unlock(&dev->slot_lock);
}

/* ---- completion ring ------------------------------------------------------ */

/*
 * Wake-up protocol.  The ring is the truth; the eventfd only says "look".
 * Producers write the eventfd when the ring goes from empty to non-empty.
 * The drainer calls qatpy_event_clear *before* draining and drains until
 * the ring is empty (or re-arms the eventfd itself if it stops early at
 * `max`).  Any completion pushed after the clear is either taken by that
 * drain pass or, if the pass already emptied the ring, is an
 * empty -> non-empty transition that writes the eventfd again.  So no
 * wake-up is lost; at worst a drain finds nothing.
 */
/* Under ring_lock: after entries were appended, publish them and wake. */
static void ring_publish_locked(struct qatpy_device *dev, bool was_empty, uint32_t n)
{
    atomic_fetch_add(&dev->seq, n);
    if (dev->ring_waiters)
        pthread_cond_broadcast(&dev->ring_cond);
    if (was_empty) {
        uint64_t one = 1;
        /* Cannot block (EFD_NONBLOCK) and cannot overflow in practice. */
        while (write(dev->efd, &one, sizeof one) < 0 && errno == EINTR) {
        }
    }
}

static void ring_append_locked(struct qatpy_device *dev, uint32_t entry)
{
    uint32_t pos = dev->ring_head + dev->ring_count;
    if (pos >= dev->nslots)
        pos -= dev->nslots;
    dev->ring[pos] = entry;
    dev->ring_count++;
}

/* Push a list (linked by ->next) of n requests whose status is set. */
static void ring_push_list(struct qatpy_device *dev, struct qps_req *list, uint32_t n)
{
    uint32_t ok = 0;
    for (struct qps_req *r = list; r; r = r->next) {
        if (r->status == QATPY_ST_OK)
            ok++;
        else
            r->result_len = 0;
        atomic_store(&r->state, QPS_SLOT_DONE);
    }
    atomic_fetch_add(&dev->st.completed, n);
    atomic_fetch_add(&dev->st.completed_ok, ok);
    atomic_fetch_add(&dev->st.completed_error, n - ok);

    pthread_mutex_lock(&dev->ring_lock);
    bool was_empty = dev->ring_count == 0;
    for (struct qps_req *r = list; r; r = r->next)
        ring_append_locked(dev, r->index);
    ring_publish_locked(dev, was_empty, n);
    pthread_mutex_unlock(&dev->ring_lock);
}

/* TIMEOUT entries for zombies (linked by ->dl_next): the slot stays ONDEV;
 * the entry carries QPS_RING_TIMEOUT so drain reports TIMEOUT and only
 * drops the ring's hold.  A slot is still in the ring at most once: a
 * zombie's late answer never reaches the ring. */
static void ring_push_timeouts(struct qatpy_device *dev, struct qps_req *list, uint32_t n)
{
    atomic_fetch_add(&dev->st.completed, n);
    atomic_fetch_add(&dev->st.completed_error, n);
    atomic_fetch_add(&dev->st.timeouts, n);
    pthread_mutex_lock(&dev->ring_lock);
    bool was_empty = dev->ring_count == 0;
    for (struct qps_req *r = list; r; r = r->dl_next)
        ring_append_locked(dev, r->index | QPS_RING_TIMEOUT);
    ring_publish_locked(dev, was_empty, n);
    pthread_mutex_unlock(&dev->ring_lock);
}

/* Drop one of a zombie's two holds; the last one frees the slot. */
static void zombie_release(struct qatpy_device *dev, struct qps_req *req)
{
    if (atomic_fetch_sub(&req->holds, 1) != 1)
        return;
    struct qatpy_key *key = req->key;
    req->key = NULL;
    if (key)
        qps_key_unref(key);
    slot_free_many(dev, &req, 1);
}

void qps_zombie_gone(struct qps_inst *inst, struct qps_req *req)
{
    atomic_fetch_sub(&inst->zombies, 1);
    atomic_fetch_sub(&inst->dev->zombies_total, 1);
    zombie_release(inst->dev, req);
}

void qps_complete(struct qatpy_device *dev, struct qps_req *req, int status, int cpa_status)
{
    req->status = status;
    req->cpa_status = cpa_status;
    req->next = NULL;
    ring_push_list(dev, req, 1);
}

size_t qatpy_drain(qatpy_device *dev, qatpy_completion *out, uint8_t *results, size_t stride,
                   size_t max)
{
    if (!dev || !out || max == 0 || qps_forked(dev) || !dev->ring)
        return 0;
    size_t total = 0;
    uint32_t left = 0;
    while (total < max) {
        uint32_t idx[64];
        uint32_t take = 0;
        pthread_mutex_lock(&dev->ring_lock);
        while (take < 64 && total + take < max && dev->ring_count > 0) {
            idx[take++] = dev->ring[dev->ring_head];
            if (++dev->ring_head == dev->nslots)
                dev->ring_head = 0;
            dev->ring_count--;
        }
        left = dev->ring_count;
        pthread_mutex_unlock(&dev->ring_lock);
        if (take == 0)
            break;
        struct qps_req *done[64];
        uint32_t ndone = 0;
        for (uint32_t i = 0; i < take; i++) {
            qatpy_completion *c = &out[total + i];
            if (idx[i] & QPS_RING_TIMEOUT) {
                /* A zombie: report TIMEOUT from fields the late answer never
                 * writes, then drop the ring's hold. */
                struct qps_req *z = &dev->slots[idx[i] & ~QPS_RING_TIMEOUT];
                c->tag = z->tag;
                c->status = QATPY_ST_TIMEOUT;
                c->cpa_status = 0;
                c->instance = z->inst_index;
                c->len = 0;
                zombie_release(dev, z);
                continue;
            }
            struct qps_req *req = &dev->slots[idx[i]];
            done[ndone++] = req;
            c->tag = req->tag;
            c->status = req->status;
            c->cpa_status = req->cpa_status;
            c->instance = req->inst_index;
            uint32_t len = req->result_len;
            if (results && len) {
                if (len > stride)
                    len = (uint32_t)stride;
                memcpy(results + (total + i) * stride, req->result, len);
            } else {
                len = 0;
            }
            c->len = len;
        }
        /* Keys first (may wipe and free key DMA), then the slots in one lock. */
        for (uint32_t i = 0; i < ndone; i++) {
            struct qatpy_key *key = done[i]->key;
            done[i]->key = NULL;
            if (key)
                qps_key_unref(key);
        }
        if (ndone)
            slot_free_many(dev, done, ndone);
        total += take;
    }
    if (total)
        atomic_fetch_add(&dev->st.drained_batches, 1);
    if (left > 0) {
        /* Stopped at `max` with completions left: re-arm so a reader that
         * cleared the eventfd before this drain comes back. */
        uint64_t one = 1;
        while (write(dev->efd, &one, sizeof one) < 0 && errno == EINTR) {
        }
    }
    return total;
}

uint64_t qatpy_completion_seq(qatpy_device *dev) { return dev ? atomic_load(&dev->seq) : 0; }

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2 && sizeof(_Atomic uint64_t) == sizeof(uint64_t),
               "seq must be a plain lock-free 64-bit word to be read in place");

const volatile uint64_t *qatpy_completion_seq_addr(qatpy_device *dev)
{
    return dev ? (const volatile uint64_t *)(const volatile void *)&dev->seq : NULL;
}

uint64_t qatpy_wait(qatpy_device *dev, uint64_t seen, int64_t timeout_ns)
{
    if (!dev)
        return 0;
    if (timeout_ns == 0 || qps_forked(dev) || atomic_load(&dev->seq) > seen)
        return atomic_load(&dev->seq);
    struct timespec dl;
    if (timeout_ns > 0) {
        clock_gettime(CLOCK_MONOTONIC, &dl);
        uint64_t ns = (uint64_t)dl.tv_nsec + (uint64_t)timeout_ns;
        dl.tv_sec += (time_t)(ns / 1000000000ULL);
        dl.tv_nsec = (long)(ns % 1000000000ULL);
    }
    pthread_mutex_lock(&dev->ring_lock);
    /* ring_closed: after shutdown nothing more will arrive; do not hang. */
    while (atomic_load(&dev->seq) <= seen && !dev->ring_closed) {
        dev->ring_waiters++;
        int rc = timeout_ns < 0 ? pthread_cond_wait(&dev->ring_cond, &dev->ring_lock)
                                : pthread_cond_timedwait(&dev->ring_cond, &dev->ring_lock, &dl);
        dev->ring_waiters--;
        if (rc == ETIMEDOUT)
            break;
    }
    uint64_t s = atomic_load(&dev->seq);
    pthread_mutex_unlock(&dev->ring_lock);
    return s;
}

/* ---- instance reservation ----------------------------------------------- */

/* How long an instance that answered RETRY is left alone when none of its
 * requests completes in the meantime (1 ms: a ring drains far sooner). */
#define QPS_RETRY_HOLD_NS 1000000ULL

/* Least loaded healthy instance under the cap; an instance that answered
 * RETRY is skipped until one of its requests completes (or it is empty).
 * Ties rotate so equal instances share the load.  Returns with one unit of
 * the instance's in-flight taken.
 *
 * Instances marked timed_out (a request missed its deadline there) are
 * routed around while any other healthy instance exists.  When every
 * instance that is not RESTARTING/fatal is timed out, the one whose last
 * timeout is oldest still gets work: that is how a single-instance device,
 * or one that lost a single response, gets the chance to answer and rejoin
 * (each such request is bounded by its own deadline).  Only when every
 * instance is RESTARTING or fatal does a request fail at once. */
static struct qps_inst *reserve(struct qatpy_device *dev, bool *any_healthy)
{
    uint32_t n = dev->ninst;
    uint32_t start = atomic_fetch_add_explicit(&dev->rr, 1, memory_order_relaxed) % n;
    *any_healthy = false;
    for (;;) {
        struct qps_inst *best = NULL, *probe = NULL;
        uint32_t best_load = UINT32_MAX, probe_load = 0;
        uint64_t probe_fail = UINT64_MAX;
        bool any_good = false;
        for (uint32_t j = 0; j < n; j++) {
            struct qps_inst *inst = &dev->inst[(start + j) % n];
            if (!atomic_load(&inst->healthy))
                continue;
            *any_healthy = true;
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
        if (!best)
            return NULL;
        if (atomic_compare_exchange_weak(&best->inflight, &best_load, best_load + 1)) {
            uint64_t total = atomic_fetch_add(&dev->inflight_total, 1) + 1;
            uint64_t m = atomic_load(&dev->st.inflight_max);
            while (total > m && !atomic_compare_exchange_weak(&dev->st.inflight_max, &m, total)) {
            }
            return best;
        }
    }
}

/* ---- deadlines ------------------------------------------------------------ */

/* Both under inst->lock. */
static void dl_link(struct qps_inst *inst, struct qps_req *req)
{
    req->dl_next = NULL;
    req->dl_prev = inst->dl_tail;
    if (inst->dl_tail)
        inst->dl_tail->dl_next = req;
    else
        inst->dl_head = req;
    inst->dl_tail = req;
    req->dl_linked = true;
    if (req->deadline < atomic_load_explicit(&inst->next_deadline, memory_order_relaxed))
        atomic_store(&inst->next_deadline, req->deadline);
}

static void dl_unlink(struct qps_inst *inst, struct qps_req *req)
{
    if (req->dl_prev)
        req->dl_prev->dl_next = req->dl_next;
    else
        inst->dl_head = req->dl_next;
    if (req->dl_next)
        req->dl_next->dl_prev = req->dl_prev;
    else
        inst->dl_tail = req->dl_prev;
    req->dl_prev = req->dl_next = NULL;
    req->dl_linked = false;
}

/*
 * Runs on the instance's poller after each poll (and in qatpy_poll), so it
 * costs one atomic load while nothing is due.  The list holds at most the
 * instance's in-flight cap, so a scan is short.  A request the checker
 * claims becomes a zombie: TIMEOUT goes to the ring now; the slot, bufset,
 * in-flight unit and key reference stay until the device answers (dropped,
 * counted in late_answers) or the instance stops.  The instance is marked
 * timed_out (routed around) until any answer or a RESTARTED notification.
 */
uint32_t qps_check_deadlines(struct qps_inst *inst)
{
    uint64_t due = atomic_load_explicit(&inst->next_deadline, memory_order_relaxed);
    if (due == UINT64_MAX)
        return 0;
    uint64_t now = qps_now_ns();
    if (now < due)
        return 0;
    struct qatpy_device *dev = inst->dev;
    struct qps_req *expired = NULL, **tail = &expired;
    uint32_t n = 0;
    uint64_t next = UINT64_MAX;
    pthread_mutex_lock(&inst->lock);
    for (struct qps_req *r = inst->dl_head, *nx; r; r = nx) {
        nx = r->dl_next;
        if (now >= r->deadline) {
            atomic_store(&r->holds, 2);
            int open = QPS_CLAIM_OPEN;
            if (atomic_compare_exchange_strong(&r->claim, &open, QPS_CLAIM_TIMEDOUT)) {
                dl_unlink(inst, r);
                *tail = r;
                tail = &r->dl_next;
                n++;
                continue;
            }
            /* Being answered right now: flush will unlink it. */
        }
        if (r->deadline < next)
            next = r->deadline;
    }
    atomic_store(&inst->next_deadline, next);
    if (n) {
        /* Under the lock: a late answer decrements only after it took the lock. */
        atomic_fetch_add(&inst->zombies, n);
        atomic_fetch_add(&dev->zombies_total, n);
        atomic_store(&inst->last_fail_ns, now);
        atomic_store(&inst->timed_out, 1);
    }
    pthread_mutex_unlock(&inst->lock);
    if (n)
        ring_push_timeouts(dev, expired, n);
    return n;
}

void qps_inst_release(struct qps_inst *inst, struct qps_req *req)
{
    if (req->op == QPS_OP_ECDSA && req->buf)
        qps_wipe(req->buf + QPS_EC_K_OFF, req->in_len); /* the nonce never outlives its use */
    pthread_mutex_lock(&inst->lock);
    if (req->dl_linked)
        dl_unlink(inst, req);
    inst->free_bufs[inst->nfree++] = req->buf;
    pthread_mutex_unlock(&inst->lock);
    req->buf = NULL;
    req->inst = NULL;
    /* Total first: reserve() raises the instance count before the total, so
     * this order keeps inflight_total <= sum of instance counts at all times. */
    atomic_fetch_sub(&inst->dev->inflight_total, 1);
    atomic_fetch_sub(&inst->inflight, 1);
}

/* ---- callbacks ------------------------------------------------------------ */

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

/* Verify-after-sign (CVE-2017-5681; OpenSSL's RSA-CRT self-check): a
 * successful RSA result must satisfy sig^e mod n == the submitted block, or
 * it is wiped and completes as VERIFY_FAIL.  Runs on the poller after the
 * poll call returned, outside the library's response-ring lock, never in
 * Python.  ~19 us for RSA-2048 at e = 65537 (csrc/shim/tests/test_verify). */
static void verify_result(struct qatpy_device *dev, struct qps_req *req)
{
    if (req->op != QPS_OP_RSA || req->status != QATPY_ST_OK ||
        !atomic_load_explicit(&dev->verify, memory_order_relaxed))
        return;
    const struct qatpy_key *key = req->key;
    if (qps_rsa_verify_block(key->mont, key->e, key->e_len, req->result, req->input,
                             req->in_len))
        return;
    qps_wipe(req->result, sizeof req->result);
    req->result_len = 0;
    req->status = QATPY_ST_VERIFY_FAIL;
    atomic_fetch_add(&dev->st.verify_failures, 1);
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
        atomic_fetch_add(&inst->dev->st.late_answers, 1);
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
            dl_unlink(inst, r);
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
            atomic_fetch_add(&dev->st.late_answers, 1);
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
        ring_push_list(dev, done, ndone);
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

static void finish_late(struct qps_req *req)
{
    req->late = true;
    finish(req->inst, req, QATPY_ST_TIMEOUT, 0, false);
}

static void rsa_cb(void *tag, CpaStatus status, void *op_data, CpaFlatBuffer *out)
{
    (void)op_data;
    (void)out; /* same as req->out */
    struct qps_req *req = tag;
    tl_callbacks++;
    if (!claim_answer(req)) {
        finish_late(req);
        return;
    }
    if (status != CPA_STATUS_SUCCESS) {
        finish(req->inst, req, QATPY_ST_DEVICE_FAIL, status, false);
        return;
    }
    /* Output is right-aligned in a 2*half buffer; the signature is the last
     * n_len bytes (the rest is zero because the result is < n). */
    memcpy(req->result, req->out.pData + (req->out.dataLenInBytes - req->in_len), req->in_len);
    req->result_len = req->in_len;
    finish(req->inst, req, QATPY_ST_OK, 0, false);
}

static void ecdsa_cb(void *tag, CpaStatus status, void *op_data, CpaBoolean multiply_status,
                     CpaFlatBuffer *pr, CpaFlatBuffer *ps)
{
    (void)op_data;
    (void)pr;
    (void)ps;
    struct qps_req *req = tag;
    uint32_t len = req->in_len;
    tl_callbacks++;
    if (!claim_answer(req)) {
        finish_late(req);
        return;
    }
    if (status != CPA_STATUS_SUCCESS) {
        finish(req->inst, req, QATPY_ST_DEVICE_FAIL, status, false);
        return;
    }
    const uint8_t *r = req->buf + QPS_EC_R_OFF;
    const uint8_t *s = req->buf + QPS_EC_S_OFF;
    if (multiply_status == CPA_TRUE && !qps_be_is_zero(r, len) && !qps_be_is_zero(s, len)) {
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

/* ---- dispatch -------------------------------------------------------------- */

enum { QPS_D_OK, QPS_D_NOCAP, QPS_D_RETRY, QPS_D_DONE };

static int dispatch(struct qatpy_device *dev, struct qps_req *req)
{
    bool any_healthy;
    struct qps_inst *inst = reserve(dev, &any_healthy);
    if (!inst) {
        if (any_healthy)
            return QPS_D_NOCAP;
        /* Every instance is restarting or dead: fail now so Python can fall back. */
        qps_complete(dev, req, QATPY_ST_SUBMIT_FAIL, CPA_STATUS_RESTARTING);
        return QPS_D_DONE;
    }
    /* Not yet visible to the checker (linked below) and no answer pending. */
    if (req->deadline)
        atomic_store(&req->claim, QPS_CLAIM_OPEN);
    pthread_mutex_lock(&inst->lock);
    /* nfree > 0 is guaranteed: bufsets == cap >= in-flight units. */
    req->buf = inst->free_bufs[--inst->nfree];
    if (req->deadline)
        dl_link(inst, req);
    pthread_mutex_unlock(&inst->lock);
    req->inst = inst;
    req->inst_index = inst->index;
    struct qps_key_inst *ki = &req->key->inst[inst->index];
    uint8_t *buf = req->buf;
    bool has_deadline = req->deadline != 0;
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
        st = qps_lib.cpaCyRsaDecrypt(inst->h, rsa_cb, req, &req->opd.rsa, &req->out);
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
        uint8_t *cb = inst->curve_dma + (size_t)(cv->id - QATPY_CURVE_P256) * QPS_CURVE_BLOCK;
        CpaCyEcdsaSignRSOpData *op = &req->opd.ec;
        CpaFlatBuffer *params[6] = {&op->xg, &op->yg, &op->n, &op->q, &op->a, &op->b};
        for (int p = 0; p < 6; p++) {
            params[p]->dataLenInBytes = len;
            params[p]->pData = cb + p * QPS_CURVE_PARAM_STRIDE;
        }
        op->k.dataLenInBytes = len;
        op->k.pData = k;
        op->m.dataLenInBytes = len;
        op->m.pData = buf + QPS_EC_M_OFF;
        op->d.dataLenInBytes = len;
        op->d.pData = ki->dma;
        op->fieldType = CPA_CY_EC_FIELD_TYPE_PRIME;
        req->r.dataLenInBytes = len;
        req->r.pData = buf + QPS_EC_R_OFF;
        req->s.dataLenInBytes = len;
        req->s.pData = buf + QPS_EC_S_OFF;
        req->sign_status = CPA_FALSE;
        st = qps_lib.cpaCyEcdsaSignRS(inst->h, ecdsa_cb, req, op, &req->sign_status, &req->r,
                                      &req->s);
    }
    if (st == CPA_STATUS_SUCCESS) {
        /* req may already be completed by a poller: touch only inst now. */
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
        if (req->op == QPS_OP_ECDSA)
            req->attempts--; /* that k never reached the device */
        return QPS_D_RETRY;
    }
    qps_complete(dev, req, QATPY_ST_SUBMIT_FAIL, st);
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

/* ---- public submit / poll ------------------------------------------------- */

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

static int submit_common(struct qatpy_device *dev, struct qatpy_key *key, int op,
                         const uint8_t *input, uint32_t in_len, uint64_t tag)
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
    uint64_t dl = atomic_load_explicit(&dev->deadline_ns, memory_order_relaxed);
    req->deadline = dl ? qps_now_ns() + dl : 0;
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

int qatpy_submit_rsa(qatpy_device *dev, qatpy_key *key, int encoding, int hash_id,
                     const uint8_t *input, size_t input_len, uint64_t tag)
{
    uint8_t em[QATPY_MAX_RESULT];
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
    return submit_common(dev, key, QPS_OP_RSA, em, n_len, tag);
}

int qatpy_submit_ecdsa(qatpy_device *dev, qatpy_key *key, const uint8_t *digest,
                       size_t digest_len, uint64_t tag)
{
    uint8_t m[QPS_MAX_CURVE_LEN];
    if (!dev || (!digest && digest_len))
        return QATPY_SUBMIT_BADARG;
    if (qps_forked(dev))
        return QATPY_SUBMIT_CLOSED;
    if (!key || key->type != QPS_KEY_EC || key->dev != dev)
        return QATPY_SUBMIT_BADKEY;
    const struct qps_curve *cv = key->cv;
    qps_truncate_digest(digest, digest_len, cv->bits, m, cv->len);
    return submit_common(dev, key, QPS_OP_ECDSA, m, cv->len, tag);
}

int qatpy_poll(qatpy_device *dev)
{
    if (!dev || qps_forked(dev))
        return 0;
    atomic_fetch_add(&dev->poll_active, 1);
    if (atomic_load(&dev->poll_closed)) {
        atomic_fetch_sub(&dev->poll_active, 1);
        return 0;
    }
    int total = 0;
    for (uint32_t i = 0; i < dev->ninst; i++)
        total += qps_poll_instance(&dev->inst[i]);
    qps_dispatch_pending(dev);
    atomic_fetch_sub(&dev->poll_active, 1);
    return total;
}
