/*
 * The device's lifecycle: open, shutdown and free; plus the helpers every
 * file uses (error text, DMA accounting, the clock).
 *
 * Start order (facts 5.1/7): icp_sal_userIsQatAvailable (silent) ->
 * icp_sal_userStart -> asym instances (else cy instances with rsa+ecdsa) ->
 * per instance cpaCyStartInstance, cpaCySetAddressTranslation,
 * cpaCyInstanceGetInfo2 (node), notification callback -> DMA pools on the
 * node -> poll threads.  Any failure unwinds in reverse.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "shim_internal.h"

#define DEFAULT_INFLIGHT 48
#define DEFAULT_MAX_REQUESTS 4096

void qps_errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

bool qps_forked(const struct qatpy_device *dev)
{
    return dev->fork_gen != atomic_load_explicit(&qps_fork_gen, memory_order_relaxed);
}

void *qps_dma_alloc(struct qatpy_device *dev, size_t size, int node)
{
    void *p = qps_lib.qaeMemAllocNUMA(size, node, 64);
    if (p) {
        atomic_fetch_add(&dev->st.dma_allocs, 1);
        atomic_fetch_add(&dev->st.dma_live, 1);
    }
    return p;
}

/* qaeMemFreeNUMA wipes too (facts 5.3); wipe_len > 0 wipes first anyway, so
 * key material never depends on which libusdm build is loaded. */
void qps_dma_free(struct qatpy_device *dev, void *p, size_t wipe_len)
{
    if (!p)
        return;
    qps_wipe(p, wipe_len);
    void *q = p;
    qps_lib.qaeMemFreeNUMA(&q);
    atomic_fetch_sub(&dev->st.dma_live, 1);
}

uint64_t qps_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void qps_sleep_ns(uint64_t ns)
{
    if (ns == 0)
        return;
    struct timespec ts = {(time_t)(ns / 1000000000ULL), (long)(ns % 1000000000ULL)};
    while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR) {
    }
}

const char *qps_status_name(CpaStatus st)
{
    switch (st) {
    case CPA_STATUS_SUCCESS: return "SUCCESS";
    case CPA_STATUS_FAIL: return "FAIL";
    case CPA_STATUS_RETRY: return "RETRY";
    case CPA_STATUS_RESOURCE: return "RESOURCE";
    case CPA_STATUS_INVALID_PARAM: return "INVALID_PARAM";
    case CPA_STATUS_FATAL: return "FATAL";
    case CPA_STATUS_UNSUPPORTED: return "UNSUPPORTED";
    case CPA_STATUS_RESTARTING: return "RESTARTING";
    default: return "unknown status";
    }
}

/* ---- open --------------------------------------------------------------- */

/* Frees what open built; used by a failed open and by device_free.  The
 * device must be stopped (no thread, no started instance). */
static void dev_release_resources(struct qatpy_device *dev)
{
    qps_instances_free(dev);
    free(dev->slots);
    dev->slots = NULL;
    free(dev->free_slots);
    dev->free_slots = NULL;
    free(dev->ring);
    dev->ring = NULL;
    if (dev->efd >= 0)
        close(dev->efd);
    dev->efd = -1;
    qps_drive_close(dev);
}

/* The struct itself: freed when the owner and every key let go. */
void qps_dev_unref(struct qatpy_device *dev)
{
    if (atomic_fetch_sub(&dev->refs, 1) != 1)
        return;
    pthread_mutex_destroy(&dev->drive_lock);
    pthread_mutex_destroy(&dev->state_lock);
    pthread_mutex_destroy(&dev->slot_lock);
    pthread_mutex_destroy(&dev->pend_lock);
    pthread_mutex_destroy(&dev->ring_lock);
    pthread_cond_destroy(&dev->ring_cond);
    pthread_mutex_destroy(&dev->key_lock);
    pthread_mutex_destroy(&dev->events_lock);
    free(dev);
}

static struct qatpy_device *dev_new(void)
{
    struct qatpy_device *dev = calloc(1, sizeof *dev);
    if (!dev)
        return NULL;
    atomic_init(&dev->refs, 1);
    atomic_init(&dev->submit_cpu, -1); /* no submit yet */
    dev->efd = -1;
    dev->drive_epfd = -1;
    dev->drive_tfd = -1;
    pthread_mutex_init(&dev->drive_lock, NULL);
    pthread_mutex_init(&dev->state_lock, NULL);
    pthread_mutex_init(&dev->slot_lock, NULL);
    pthread_mutex_init(&dev->pend_lock, NULL);
    pthread_mutex_init(&dev->ring_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&dev->ring_cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&dev->key_lock, NULL);
    pthread_mutex_init(&dev->events_lock, NULL);
    return dev;
}

static int dev_start(struct qatpy_device *dev, const qatpy_config *cfg, char *err, size_t errlen)
{
    CpaStatus st;
    int rc;

    if (qps_lib.icp_sal_userIsQatAvailable() != CPA_TRUE) {
        qps_errf(err, errlen,
                 "no QAT device: icp_sal_userIsQatAvailable() found no QAT VF under /dev/vfio; "
                 "hint: enable SR-IOV and bind the VFs to vfio-pci (qat.service / qat_init.sh), "
                 "with the IOMMU on (intel_iommu=on)");
        return QATPY_ERR_NO_DEVICE;
    }
    st = qps_lib.icp_sal_userStart(dev->process_name);
    if (st != CPA_STATUS_SUCCESS) {
        qps_errf(err, errlen,
                 "icp_sal_userStart(\"%s\") failed (%d %s): no usable QAT VF; check /dev/vfio "
                 "permissions (group qat, re-login), RLIMIT_MEMLOCK (ulimit -l), that "
                 "qat.service is running, and QAT_POLICY in containers",
                 dev->process_name, (int)st, qps_status_name(st));
        return QATPY_ERR_START;
    }
    dev->user_started = true;

    rc = qps_instances_open(dev, cfg->max_instances, err, errlen);
    if (rc != QATPY_OK)
        return rc;

    if (dev->requested_mode == QATPY_POLL_EVENT)
        qps_setup_event_mode(dev);
    else
        atomic_store(&dev->poll_mode, dev->requested_mode);
    rc = qps_drive_open(dev, err, errlen); /* after the event fds exist */
    if (rc != QATPY_OK)
        return rc;

    if (atomic_load(&dev->poll_mode) != QATPY_POLL_MANUAL) {
        rc = qps_start_threads(dev, err, errlen);
        if (rc != QATPY_OK)
            return rc;
    }
    return QATPY_OK;
}

int qatpy_device_open(const qatpy_config *cfg, qatpy_device **out, char *err, size_t errlen)
{
    qatpy_config def;
    if (err && errlen)
        err[0] = '\0';
    if (!out) {
        qps_errf(err, errlen, "qatpy_device_open: out is NULL");
        return QATPY_ERR_CONFIG;
    }
    *out = NULL;
    if (!cfg) {
        memset(&def, 0, sizeof def);
        cfg = &def;
    }
    if (!qps_loaded()) {
        qps_errf(err, errlen, "qatlib is not loaded (qatpy_lib_load has not succeeded)");
        return QATPY_ERR_STATE;
    }
    if (cfg->poll_mode < QATPY_POLL_TIMER || cfg->poll_mode > QATPY_POLL_MANUAL) {
        qps_errf(err, errlen, "invalid poll_mode %d", cfg->poll_mode);
        return QATPY_ERR_CONFIG;
    }
    if (cfg->poll_delay_ns > QPS_MAX_POLL_DELAY_NS) {
        qps_errf(err, errlen, "poll_delay_ns %llu exceeds 1 s",
                 (unsigned long long)cfg->poll_delay_ns);
        return QATPY_ERR_CONFIG;
    }
    uint32_t cap = cfg->inflight_per_instance ? cfg->inflight_per_instance : DEFAULT_INFLIGHT;
    uint32_t nreq = cfg->max_requests ? cfg->max_requests : DEFAULT_MAX_REQUESTS;
    if (cap > QATPY_MAX_INFLIGHT || nreq > QATPY_MAX_REQUESTS ||
        cfg->max_instances > QATPY_MAX_INSTANCES) {
        qps_errf(err, errlen,
                 "inflight_per_instance (%u), max_requests (%u) or max_instances (%u) out of range",
                 cap, nreq, cfg->max_instances);
        return QATPY_ERR_CONFIG;
    }
    const char *name = cfg->process_name ? cfg->process_name : "SSL";
    size_t nlen = strlen(name);
    if (nlen == 0 || nlen > 127) {
        qps_errf(err, errlen, "process_name must be 1..127 characters");
        return QATPY_ERR_CONFIG;
    }

    struct qatpy_device *dev = dev_new();
    if (!dev) {
        qps_errf(err, errlen, "out of memory");
        return QATPY_ERR_NOMEM;
    }
    memcpy(dev->process_name, name, nlen + 1);
    dev->requested_mode = cfg->poll_mode;
    atomic_store(&dev->poll_mode, cfg->poll_mode);
    atomic_store(&dev->poll_delay_ns, cfg->poll_delay_ns);
    dev->cap = cap;
    dev->fork_gen = atomic_load(&qps_fork_gen);

    dev->nslots = nreq;
    dev->slots = calloc(nreq, sizeof *dev->slots);
    dev->free_slots = calloc(nreq, sizeof *dev->free_slots);
    dev->ring = calloc(nreq, sizeof *dev->ring);
    dev->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!dev->slots || !dev->free_slots || !dev->ring || dev->efd < 0) {
        qps_errf(err, errlen, "out of memory for %u request slots (or eventfd failed)", nreq);
        dev_release_resources(dev);
        qps_dev_unref(dev);
        return QATPY_ERR_NOMEM;
    }
    for (uint32_t i = 0; i < nreq; i++) {
        dev->slots[i].dev = dev;
        dev->slots[i].index = i;
        /* LIFO free stack: hand out low indices first (warm cache lines). */
        dev->free_slots[i] = nreq - 1 - i;
    }
    dev->nfree_slots = nreq;

    qps_global_lock();
    if (qps_open_dev) {
        qps_global_unlock();
        qps_errf(err, errlen,
                 "a QAT device is already open in this process; shut it down before opening "
                 "another");
        dev_release_resources(dev);
        qps_dev_unref(dev);
        return QATPY_ERR_STATE;
    }
    int rc = dev_start(dev, cfg, err, errlen);
    if (rc != QATPY_OK) {
        /* Reverse order: threads, instances, DMA, userStop. */
        qps_stop_threads(dev);
        qps_stop_instances(dev);
        if (dev->user_started)
            qps_lib.icp_sal_userStop();
        dev->user_started = false;
        qps_global_unlock();
        dev_release_resources(dev);
        qps_dev_unref(dev);
        return rc;
    }
    qps_open_dev = dev;
    qps_global_unlock();
    *out = dev;
    return QATPY_OK;
}

/* ---- shutdown / free ---------------------------------------------------- */

static bool dev_idle(struct qatpy_device *dev)
{
    /* Zombies wait for an answer that may never come: shutdown releases them
     * after icp_sal_userStop (step 6), so they do not hold it up. */
    if (atomic_load(&dev->inflight_total) > atomic_load(&dev->zombies_total) ||
        atomic_load(&dev->pend_count))
        return false;
    for (uint32_t i = 0; i < dev->ninst; i++)
        if (atomic_load(&dev->inst[i].redo_count))
            return false;
    return true;
}

void qatpy_device_shutdown(qatpy_device *dev, int64_t timeout_ns)
{
    if (!dev || qps_forked(dev))
        return; /* a parent's device in a forked child: nothing here is ours to touch */
    pthread_mutex_lock(&dev->state_lock);
    if (dev->stage != QPS_STAGE_OPEN) {
        pthread_mutex_unlock(&dev->state_lock);
        return;
    }
    /* 1. Refuse new submits and wait out the ones already past the gate. */
    atomic_store(&dev->closing, 1);
    while (atomic_load(&dev->submit_active) > 0)
        sched_yield();

    /* 2. Grace period: keep polling (threads, or here in MANUAL mode) until
     *    nothing is in flight or queued, or the timeout passes.  Requests an
     *    event loop polled for become the poll threads' work: the loop may
     *    be gone, and shutdown may run on the completion thread, their
     *    other looker. */
    qps_drive_hand_over(dev);
    uint64_t deadline = timeout_ns < 0 ? UINT64_MAX : qps_now_ns() + (uint64_t)timeout_ns;
    while (!dev_idle(dev) && qps_now_ns() < deadline) {
        if (!dev->threads_started || atomic_load(&dev->poll_mode) == QATPY_POLL_MANUAL) {
            int got = 0;
            for (uint32_t i = 0; i < dev->ninst; i++)
                got += qps_poll_instance(&dev->inst[i]);
            qps_dispatch_pending(dev);
            if (got == 0)
                qps_sleep_ns(20000);
        } else {
            qps_sleep_ns(100000);
        }
    }

    /* 3. No more polling: threads joined, manual pollers drained. */
    atomic_store(&dev->poll_closed, 1);
    while (atomic_load(&dev->poll_active) > 0)
        sched_yield();
    qps_stop_threads(dev);

    /* 4. Stop the instances.  That does not take requests off the device
     *    (qatlib 26.08 only marks an instance stopped): what is in flight
     *    stays in the rings until icp_sal_userStop tears them down, and no
     *    callback comes because nothing polls any more (step 3). */
    qps_stop_instances(dev);

    /* 5. Release the process-wide start: after this the device cannot touch
     *    a request's buffers or key copies any more. */
    qps_global_lock();
    if (dev->user_started)
        qps_lib.icp_sal_userStop();
    dev->user_started = false;
    if (qps_open_dev == dev)
        qps_open_dev = NULL;
    qps_global_unlock();

    /* 6. Every request still owned by the shim completes exactly once, CLOSED.
     *    Only this thread touches slots now (no threads, no submitters, no
     *    pollers); drainers only touch DONE slots. */
    for (uint32_t i = 0; i < dev->nslots; i++) {
        struct qps_req *req = &dev->slots[i];
        int s = atomic_load(&req->state);
        if (s == QPS_SLOT_ONDEV && req->deadline &&
            atomic_load(&req->claim) == QPS_CLAIM_TIMEDOUT) {
            /* A zombie: TIMEOUT was delivered already; the device is gone,
             * so it gives back its buffer and the device's hold. */
            struct qps_inst *inst = req->inst;
            if (inst->stop_failed) {
                atomic_fetch_sub(&dev->inflight_total, 1);
                atomic_fetch_sub(&inst->inflight, 1);
                req->buf = NULL;
                req->inst = NULL;
            } else {
                qps_inst_release(inst, req);
            }
            qps_zombie_gone(inst, req);
        } else if (s == QPS_SLOT_ONDEV) {
            if (req->inst->stop_failed) {
                /* Leave the bufset with the device; account the unit. */
                atomic_fetch_sub(&dev->inflight_total, 1);
                atomic_fetch_sub(&req->inst->inflight, 1);
                req->buf = NULL;
                req->inst = NULL;
            } else {
                qps_inst_release(req->inst, req);
            }
            qps_complete(dev, req, QATPY_ST_CLOSED, 0);
        } else if (s == QPS_SLOT_PENDING || s == QPS_SLOT_REDO) {
            qps_complete(dev, req, QATPY_ST_CLOSED, 0);
        }
    }
    pthread_mutex_lock(&dev->pend_lock);
    dev->pend_head = dev->pend_tail = NULL;
    atomic_store(&dev->pend_count, 0);
    pthread_mutex_unlock(&dev->pend_lock);
    for (uint32_t i = 0; i < dev->ninst; i++) {
        struct qps_inst *inst = &dev->inst[i];
        pthread_mutex_lock(&inst->lock);
        inst->redo_head = inst->redo_tail = NULL;
        atomic_store(&inst->redo_count, 0);
        pthread_mutex_unlock(&inst->lock);
    }

    dev->stage = QPS_STAGE_CLOSED;
    pthread_mutex_lock(&dev->ring_lock);
    dev->ring_closed = true;
    pthread_cond_broadcast(&dev->ring_cond);
    pthread_mutex_unlock(&dev->ring_lock);
    pthread_mutex_unlock(&dev->state_lock);
}

void qatpy_device_free(qatpy_device *dev)
{
    if (!dev)
        return;
    if (qps_forked(dev))
        return; /* parent's memory: DMA is not mapped here and mutexes may be held; leak */
    qatpy_device_shutdown(dev, 0);
    pthread_mutex_lock(&dev->state_lock);
    if (dev->stage == QPS_STAGE_FREED) {
        pthread_mutex_unlock(&dev->state_lock);
        return;
    }
    dev->stage = QPS_STAGE_FREED;
    pthread_mutex_unlock(&dev->state_lock);

    /* Undrained completions still hold key references. */
    for (uint32_t i = 0; i < dev->nslots; i++) {
        struct qps_req *req = &dev->slots[i];
        if (req->key) {
            qps_key_unref(req->key);
            req->key = NULL;
        }
    }
    /* Keys Python still holds: wipe and free their DMA now; a later
     * qatpy_key_release frees only the key's own memory. */
    pthread_mutex_lock(&dev->key_lock);
    for (struct qatpy_key *k = dev->keys; k; k = k->next)
        qps_key_free_dma_locked(k);
    pthread_mutex_unlock(&dev->key_lock);

    dev_release_resources(dev);
    qps_dev_unref(dev);
}
