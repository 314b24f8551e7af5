/*
 * The completion ring: requests the shim has settled wait here, in order,
 * for qatpy_drain.  Also the ring's wake-ups: the condition variable behind
 * qatpy_wait and qatpy_wait_unclaimed (the completion thread's wait), and
 * the eventfd behind qatpy_event_fd (asyncio's reader).
 */
#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shim_internal.h"

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
/* Set while an event loop's look at the device (qatpy_drive_tick) runs on
 * this thread: its caller drains the ring right after, so what it pushes
 * does not wake the completion thread (across CPUs, for nothing) nor write
 * the eventfd.  Threads blocked in qatpy_wait for a result are still woken.
 * Should that drain not happen, the completion thread's bounded wait still
 * finds the entries (the binding's completion loop wakes every 50 ms). */
_Thread_local bool qps_tl_drains_next;

/* Under ring_lock: after entries were appended, publish them and wake. */
static void ring_publish_locked(struct qatpy_device *dev, bool was_empty, uint32_t n)
{
    atomic_fetch_add(&dev->seq, n);
    bool quiet = qps_tl_drains_next;
    if (dev->ring_waiters || (dev->lazy_waiters && !quiet))
        pthread_cond_broadcast(&dev->ring_cond);
    if (was_empty && !quiet) {
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

/* Push a list (linked by ->next) of n requests whose status is set.  A
 * request a C caller waits for (->waiter) goes to that caller instead. */
void qps_ring_push_list(struct qatpy_device *dev, struct qps_req *list, uint32_t n)
{
    uint32_t ok = 0;
    for (struct qps_req *r = list; r; r = r->next) {
        if (r->status == QATPY_ST_OK)
            ok++;
        else
            r->result_len = 0;
    }
    atomic_fetch_add(&dev->st.completed, n);
    atomic_fetch_add(&dev->st.completed_ok, ok);
    atomic_fetch_add(&dev->st.completed_error, n - ok);

    struct qps_req *ring_list = NULL, **tail = &ring_list;
    uint32_t nring = 0;
    for (struct qps_req *r = list, *nx; r; r = nx) {
        nx = r->next; /* read first: a waiter's slot is free once completed */
        if (r->waiter) {
            qps_waiter_complete(dev, r, false);
            continue;
        }
        qps_undrive(dev, r);
        atomic_store(&r->state, QPS_SLOT_DONE);
        r->next = NULL;
        *tail = r;
        tail = &r->next;
        nring++;
    }
    if (nring == 0)
        return;
    pthread_mutex_lock(&dev->ring_lock);
    bool was_empty = dev->ring_count == 0;
    for (struct qps_req *r = ring_list; r; r = r->next)
        ring_append_locked(dev, r->index);
    ring_publish_locked(dev, was_empty, nring);
    pthread_mutex_unlock(&dev->ring_lock);
}

/* TIMEOUT entries for zombies (linked by ->dl_next): the slot stays ONDEV;
 * the entry carries QPS_RING_TIMEOUT so drain reports TIMEOUT and only
 * drops the ring's hold.  A slot is still in the ring at most once: a
 * zombie's late answer never reaches the ring.  A waiter's zombie is
 * reported to its waiter, which takes the ring's hold. */
void qps_ring_push_timeouts(struct qatpy_device *dev, struct qps_req *list, uint32_t n)
{
    atomic_fetch_add(&dev->st.completed, n);
    atomic_fetch_add(&dev->st.completed_error, n);
    atomic_fetch_add(&dev->st.timeouts, n);
    uint32_t nring = 0;
    struct qps_req *ring_list = NULL, **tail = &ring_list;
    for (struct qps_req *r = list, *nx; r; r = nx) {
        nx = r->dl_next;
        if (r->waiter) {
            qps_waiter_complete(dev, r, true);
            continue;
        }
        qps_undrive(dev, r);
        r->dl_next = NULL;
        *tail = r;
        tail = &r->dl_next;
        nring++;
    }
    if (nring == 0)
        return;
    pthread_mutex_lock(&dev->ring_lock);
    bool was_empty = dev->ring_count == 0;
    for (struct qps_req *r = ring_list; r; r = r->dl_next)
        ring_append_locked(dev, r->index | QPS_RING_TIMEOUT);
    ring_publish_locked(dev, was_empty, nring);
    pthread_mutex_unlock(&dev->ring_lock);
}

void qps_complete(struct qatpy_device *dev, struct qps_req *req, int status, int cpa_status)
{
    req->status = status;
    req->cpa_status = cpa_status;
    req->next = NULL;
    qps_ring_push_list(dev, req, 1);
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
                qps_zombie_release(dev, z);
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
            qps_slot_free_many(dev, done, ndone);
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

static uint64_t ring_wait(qatpy_device *dev, uint64_t seen, int64_t timeout_ns, bool lazy)
{
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
        uint32_t *count = lazy ? &dev->lazy_waiters : &dev->ring_waiters;
        (*count)++;
        int rc = timeout_ns < 0 ? pthread_cond_wait(&dev->ring_cond, &dev->ring_lock)
                                : pthread_cond_timedwait(&dev->ring_cond, &dev->ring_lock, &dl);
        (*count)--;
        if (rc == ETIMEDOUT)
            break;
    }
    uint64_t s = atomic_load(&dev->seq);
    pthread_mutex_unlock(&dev->ring_lock);
    return s;
}

uint64_t qatpy_wait(qatpy_device *dev, uint64_t seen, int64_t timeout_ns)
{
    return dev ? ring_wait(dev, seen, timeout_ns, false) : 0;
}

/* ---- eventfd ------------------------------------------------------------ */

int qatpy_event_fd(qatpy_device *dev) { return dev ? dev->efd : -1; }

void qatpy_event_clear(qatpy_device *dev)
{
    if (!dev || dev->efd < 0 || qps_forked(dev))
        return;
    uint64_t v;
    /* Non-blocking read resets the counter; EAGAIN just means it was clear. */
    while (read(dev->efd, &v, sizeof v) < 0 && errno == EINTR) {
    }
}

/* ---- batch drain and the completion thread's wait ----------------------- */

/* One call, and one GIL release, for many completions (see the batch
 * forms in submit.c). */
#define QPS_DRAIN_CHUNK 64

size_t qatpy_drain_arrays(qatpy_device *dev, uint64_t *tags, int32_t *status, int32_t *cpa_status,
                          uint32_t *lens, uint32_t *instance, uint8_t *results, size_t stride,
                          size_t max, size_t *filled)
{
    qatpy_completion c[QPS_DRAIN_CHUNK];
    size_t total = 0;
    while (total < max) {
        size_t want = max - total < QPS_DRAIN_CHUNK ? max - total : QPS_DRAIN_CHUNK;
        size_t got = qatpy_drain(dev, c, results + total * stride, stride, want);
        for (size_t i = 0; i < got; i++) {
            tags[total + i] = c[i].tag;
            status[total + i] = c[i].status;
            cpa_status[total + i] = c[i].cpa_status;
            lens[total + i] = c[i].len;
            instance[total + i] = c[i].instance;
        }
        total += got;
        if (got < want)
            break;
    }
    if (filled)
        *filled = total;
    return total;
}

/* The completion thread's wait.  Other drainers (a waiter in result(), an
 * event loop's eventfd reader) usually take completions within microseconds;
 * the completion thread exists for results nobody is waiting on (futures
 * with only callbacks).  So after new completions arrive it gives the
 * other drainers `grace_ns`, and only returns to Python if completions are
 * still unclaimed.  Waking Python for nothing would cost a GIL hand-off
 * against the very threads doing the work. */
uint64_t qatpy_wait_unclaimed(qatpy_device *dev, uint64_t seen, int64_t grace_ns,
                              int64_t timeout_ns)
{
    if (!dev)
        return 0;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t start = (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec;
    int64_t left = timeout_ns;
    for (;;) {
        uint64_t s = ring_wait(dev, seen, qps_drive_wait_cap(dev, left), true);
        if (s <= seen) {
            /* Timed out (or woken early by a driven request's deadline), or
             * closed, with nothing new.  A request an event loop polls for
             * itself (drive.c) whose loop stopped looking gets its look
             * here, deadline check included: latency, never a lost answer.
             * The caller waits again. */
            if (atomic_load(&dev->driven) && qps_drive_once(dev) > 0)
                return atomic_load(&dev->seq);
            return s;
        }
        if (grace_ns > 0) {
            struct timespec g = {(time_t)(grace_ns / 1000000000LL), (long)(grace_ns % 1000000000LL)};
            nanosleep(&g, NULL);
        }
        pthread_mutex_lock(&dev->ring_lock);
        uint32_t waiting = dev->ring_count;
        bool closed = dev->ring_closed;
        pthread_mutex_unlock(&dev->ring_lock);
        if (waiting > 0 || closed || qps_forked(dev))
            return atomic_load(&dev->seq);
        seen = s;
        if (timeout_ns >= 0) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            left = timeout_ns - ((int64_t)now.tv_sec * 1000000000LL + now.tv_nsec - start);
            if (left <= 0)
                return atomic_load(&dev->seq);
        }
    }
}
