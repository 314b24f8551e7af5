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
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include "shim_internal.h"


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

static bool waiter_done(struct qps_waiter *w)
{
    pthread_mutex_lock(&w->m);
    bool done = w->done != 0;
    pthread_mutex_unlock(&w->m);
    return done;
}

/* Work in flight or queued that is not a driver's own (each driver has one
 * request at most; an event loop's driven request counts as its own too). */
static bool others_work(struct qatpy_device *dev) { return qps_others_work(dev); }

/* Wait for the next answer the way the poll thread would: on the instances'
 * event fds (EVENT), a poll_delay sleep (TIMER), or not at all (BUSY). */
static void drive_wait(struct qatpy_device *dev, int mode)
{
    if (mode == QATPY_POLL_EVENT) {
        struct pollfd fds[64];
        nfds_t n = 0;
        for (uint32_t i = 0; i < dev->ninst && n < 64; i++)
            if (dev->inst[i].event_fd >= 0 && atomic_load(&dev->inst[i].inflight) > 0)
                fds[n++] = (struct pollfd){.fd = dev->inst[i].event_fd, .events = POLLIN};
        if (n > 0) {
            /* Bounded: deadlines, a reset and shutdown are noticed within 1 ms. */
            struct timespec ts = {0, 1000000};
            ppoll(fds, n, &ts, NULL);
            return;
        }
    }
    if (mode != QATPY_POLL_BUSY)
        qps_sleep_ns(atomic_load(&dev->poll_delay_ns));
}

/*
 * The latency path.  A lone request crossed three thread wake-ups: the
 * submitter woke the parked poll thread, the poll thread found the answer,
 * then woke the waiter.  A waiter whose request is the only work in flight
 * polls the device itself instead (the dispatch did not wake the poll
 * thread), so the answer is found on the thread that wants it.  As soon as
 * other work is in flight (a stream: the poll threads serve it) the waiter
 * stops driving, makes sure the poll threads are awake and waits on its
 * condition variable as before.  Two threads polling one instance are
 * serialized by qatlib (facts 5.10), so an overlap costs time, not safety.
 */
static void wait_driving(struct qatpy_device *dev, struct qps_waiter *w)
{
    /* The caller's thread sleeps like a poll thread meanwhile: without the
     * default 50 us timer slack (a 20 us poll_delay would become ~70 us);
     * its own setting comes back when it leaves. */
    int slack = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
    if (slack > 1)
        prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    atomic_fetch_add(&dev->drivers, 1);
    while (!waiter_done(w)) {
        int mode = atomic_load(&dev->poll_mode);
        if (mode == QATPY_POLL_MANUAL || others_work(dev))
            break;
        int got = qps_drive_once(dev);
        if (got < 0)
            break; /* closing: shutdown completes the request */
        if (got == 0 && !waiter_done(w))
            drive_wait(dev, mode);
    }
    if (atomic_fetch_sub(&dev->drivers, 1) == 1 && !waiter_done(w))
        qps_wake_all(dev); /* hand the rest to the poll threads */
    else if (others_work(dev))
        qps_wake_all(dev);
    if (slack > 1)
        prctl(PR_SET_TIMERSLACK, (unsigned long)slack, 0UL, 0UL, 0UL);
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
    int rc = qps_op_block(dev, key, op, encoding, hash_id, input, input_len, block, &block_len);
    if (rc != QATPY_SUBMIT_OK)
        return rc;

    struct qps_waiter w;
    memset(&w, 0, sizeof w);
    pthread_mutex_init(&w.m, NULL);
    pthread_cond_init(&w.c, NULL);
    w.out = out;
    w.cap = out_cap;
    /* Drive (poll for ourselves) only when nothing else is in flight; in
     * manual mode the application polls. */
    w.drives = atomic_load(&dev->poll_mode) != QATPY_POLL_MANUAL && !others_work(dev);
    rc = qps_submit(dev, key, op, block, block_len, 0, &w, false);
    if (rc == QATPY_SUBMIT_OK) {
        if (w.drives)
            wait_driving(dev, &w);
        /* The answer comes from whoever polls: this thread above, the poll
         * threads, or in manual mode the application's qatpy_poll loop. */
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
