/*
 * Device lifecycle (open / shutdown / free), instances, DMA pools and the
 * poll threads.
 *
 * Start order (facts 5.1/7): icp_sal_userIsQatAvailable (silent) ->
 * icp_sal_userStart -> asym instances (else cy instances with rsa+ecdsa) ->
 * per instance cpaCyStartInstance, cpaCySetAddressTranslation,
 * cpaCyInstanceGetInfo2 (node), notification callback -> DMA pools on the
 * node -> poll threads.  Any failure unwinds in reverse.
 *
 * Poll threads: one per instance.  qatlib serialises pollers of one
 * instance on its response-ring mutex anyway, callbacks do real work
 * (result copy, DER encoding), and an idle thread costs nothing because it
 * parks on its condition variable whenever its instance has nothing in
 * flight and nothing is queued.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/prctl.h>
#include <poll.h>
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
#define MAX_INFLIGHT 65536
#define MAX_REQUESTS (1u << 22)
#define MAX_POLL_DELAY_NS 1000000000ULL
#define EVENT_WAIT_MS 10
/* An instance whose only in-flight requests are timed-out zombies is polled
 * this often (a timed park), to notice a late answer without spinning. */
#define ZOMBIE_POLL_NS 1000000ULL
/* A poller whose instance runs out of work within QPS_STREAM_MEMORY_NS of
 * serving a stream (at least QPS_LINGER_MIN_PEAK requests in flight at once)
 * keeps polling, at the poll delay, for QPS_LINGER_NS before it parks.  The stream's next requests then
 * find it awake: no futex wake-up on the submitting thread (~1.3 us each),
 * and no wake-up that pulls the poller onto the submitter's CPU (see
 * avoid_submitter_cpu).  Measured on the sim at zero latency, sign_future @256:
 * 3.45x the direct loop with lingering, 3.0x without and some runs at 1.9x.
 * One request at a time does not linger: parking at once measured ~30 us
 * lower p50 for sign_async in timer mode (the lingering timer loop delays
 * other threads' wake-ups on 2 CPUs). */
#define QPS_LINGER_NS 1000000ULL
#define QPS_LINGER_MIN_PEAK 2
/* Judging only the busy period that just ended was too short-sighted: under
 * a steady stream some periods hold a single request, the poller parked
 * after them, and sign_future fell back to 2.0-2.9x in some runs.  A single
 * burst followed by one request at a time stops lingering after this long
 * (reviewed: lingering for good there cost 24% of a core). */
#define QPS_STREAM_MEMORY_NS 20000000ULL
#define MAX_DEADLINE_NS (3600ULL * 1000000000ULL)

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

static void sleep_ns(uint64_t ns)
{
    if (ns == 0)
        return;
    struct timespec ts = {(time_t)(ns / 1000000000ULL), (long)(ns % 1000000000ULL)};
    while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR) {
    }
}

static const char *status_name(CpaStatus st)
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

/* ---- parking ------------------------------------------------------------ */

/* Zombies (timed out, still on the device) are not work: they get a slow
 * probe poll from park() instead. */
static bool inst_has_work(struct qps_inst *inst)
{
    return atomic_load(&inst->inflight) > atomic_load(&inst->zombies) ||
           atomic_load(&inst->redo_count) > 0 || atomic_load(&inst->dev->pend_count) > 0;
}

/* Lost-wakeup argument: the poller stores parked=1 and then re-reads the
 * work counters; a waker changes a counter and then reads parked.  All are
 * seq_cst, so at least one side sees the other's write; a waker that sees
 * parked=1 takes park_lock, which the poller holds until it is inside
 * pthread_cond_wait, so the broadcast cannot fall between check and wait. */
void qps_wake_inst(struct qps_inst *inst)
{
    if (atomic_load(&inst->parked)) {
        pthread_mutex_lock(&inst->park_lock);
        pthread_cond_broadcast(&inst->park_cond);
        pthread_mutex_unlock(&inst->park_lock);
    }
}

void qps_wake_all(struct qatpy_device *dev)
{
    for (uint32_t i = 0; i < dev->ninst; i++)
        qps_wake_inst(&dev->inst[i]);
}

/* Returns true when it woke only to probe zombies: poll once, then park again. */
static bool park(struct qps_inst *inst)
{
    struct qatpy_device *dev = inst->dev;
    bool probe = false;
    pthread_mutex_lock(&inst->park_lock);
    atomic_store(&inst->parked, 1);
    while (!atomic_load(&dev->stop_threads) &&
           (atomic_load(&dev->poll_mode) == QATPY_POLL_MANUAL || !inst_has_work(inst))) {
        if (atomic_load(&dev->poll_mode) != QATPY_POLL_MANUAL && atomic_load(&inst->zombies)) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            uint64_t ns = (uint64_t)ts.tv_nsec + ZOMBIE_POLL_NS;
            ts.tv_sec += (time_t)(ns / 1000000000ULL);
            ts.tv_nsec = (long)(ns % 1000000000ULL);
            if (pthread_cond_timedwait(&inst->park_cond, &inst->park_lock, &ts) == ETIMEDOUT) {
                probe = true;
                break;
            }
        } else {
            pthread_cond_wait(&inst->park_cond, &inst->park_lock);
        }
    }
    atomic_store(&inst->parked, 0);
    pthread_mutex_unlock(&inst->park_lock);
    return probe;
}

/* Milliseconds until the instance's earliest deadline, capped at `cap`. */
static int ms_to_deadline(struct qps_inst *inst, int cap)
{
    uint64_t due = atomic_load_explicit(&inst->next_deadline, memory_order_relaxed);
    if (due == UINT64_MAX)
        return cap;
    uint64_t now = qps_now_ns();
    if (due <= now)
        return 0;
    uint64_t ms = (due - now + 999999) / 1000000;
    return ms < (uint64_t)cap ? (int)ms : cap;
}

/* The poll thread should not share a CPU with the thread that submits.
 * Measured on a 2-vCPU VM: the kernel sometimes wakes the poller on the
 * submitter's CPU and keeps it there (its timer wake-ups land on a busy CPU
 * and, with the LLC mostly busy, no idle CPU is searched), the two then
 * time-share one CPU while the other idles, and throughput halves (4.4 vs
 * 8.9 us per sign_future on the sim).  So after a productive poll the
 * poller compares its CPU with the latest submitter's; after
 * QPS_SHARED_CPU_POLLS such polls in a row it moves itself once to another
 * CPU of its own affinity mask (set without that CPU, then restored: the
 * move happens in the first call; the scheduler is free afterwards).  At
 * most one move per QPS_NUDGE_INTERVAL_NS; nothing when the mask has a single
 * CPU (the user pinned the process). */
#define QPS_SHARED_CPU_POLLS 64
#define QPS_NUDGE_INTERVAL_NS 100000000ULL

static void avoid_submitter_cpu(struct qps_inst *inst)
{
    int me = sched_getcpu();
    if (me < 0 || me != atomic_load_explicit(&inst->dev->submit_cpu, memory_order_relaxed)) {
        inst->shared_cpu_polls = 0;
        return;
    }
    if (++inst->shared_cpu_polls < QPS_SHARED_CPU_POLLS)
        return;
    inst->shared_cpu_polls = 0;
    uint64_t now = qps_now_ns();
    if (inst->last_nudge_ns && now - inst->last_nudge_ns < QPS_NUDGE_INTERVAL_NS)
        return;
    inst->last_nudge_ns = now;
    cpu_set_t all;
    if (sched_getaffinity(0, sizeof all, &all) != 0 || me >= CPU_SETSIZE || !CPU_ISSET(me, &all) ||
        CPU_COUNT(&all) < 2)
        return;
    cpu_set_t others = all;
    CPU_CLR(me, &others);
    if (sched_setaffinity(0, sizeof others, &others) == 0) {
        atomic_fetch_add(&inst->dev->st.poller_moves, 1);
        /* Give the scheduler its choice back.  If that fails (the cpuset
         * changed meanwhile) the narrower mask stays; it is still a subset
         * of what the process was allowed. */
        (void)sched_setaffinity(0, sizeof all, &all);
    }
}

static void *poll_main(void *arg)
{
    struct qps_inst *inst = arg;
    struct qatpy_device *dev = inst->dev;
    /* The default 50 us timer slack would stretch a 20 us poll_delay to ~70 us
     * (measured); the poll thread's sleeps are its latency budget. */
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    char name[16];
    snprintf(name, sizeof name, "qatpy-poll-%u", inst->index);
    pthread_setname_np(pthread_self(), name);

    uint64_t idle_since = 0;  /* when the instance last ran out of work (0: busy) */
    uint64_t stream_seen = 0; /* when it last had a stream (>= MIN_PEAK in flight) */
    while (!atomic_load(&dev->stop_threads)) {
        int mode = atomic_load(&dev->poll_mode);
        if (mode == QATPY_POLL_MANUAL || !inst_has_work(inst)) {
            uint64_t now = qps_now_ns();
            if (idle_since == 0)
                idle_since = now;
            bool linger = stream_seen && idle_since - stream_seen < QPS_STREAM_MEMORY_NS;
            if (mode == QATPY_POLL_MANUAL || !linger || now - idle_since >= QPS_LINGER_NS) {
                bool probe = park(inst);
                idle_since = 0;
                if (!probe)
                    continue;
                mode = QATPY_POLL_TIMER; /* zombie probe: one poll, no event wait */
            }
            /* else linger: a stream of requests is likely to go on */
        } else {
            idle_since = 0;
            if (atomic_load_explicit(&inst->inflight, memory_order_relaxed) >= QPS_LINGER_MIN_PEAK)
                stream_seen = qps_now_ns();
        }
        if (mode == QATPY_POLL_EVENT && inst->event_fd >= 0) {
            /* Bounded wait so stop_threads, mode changes and deadlines are noticed. */
            struct pollfd pfd = {.fd = inst->event_fd, .events = POLLIN};
            poll(&pfd, 1, ms_to_deadline(inst, EVENT_WAIT_MS));
        }
        int got = qps_poll_instance(inst);
        int disp = qps_dispatch_pending(dev);
        if (got > 0) {
            avoid_submitter_cpu(inst);
            continue; /* productive: poll again at once */
        }
        uint64_t delay = atomic_load(&dev->poll_delay_ns);
        if (disp < 0) {
            /* The device refused with RETRY and nothing came back: back off,
             * never spin on RETRY. */
            sleep_ns(delay > QPS_RETRY_BACKOFF_NS ? delay : QPS_RETRY_BACKOFF_NS);
        } else if (mode == QATPY_POLL_TIMER || (mode == QATPY_POLL_EVENT && inst->event_fd < 0)) {
            sleep_ns(delay);
        }
        /* BUSY: poll again at once; EVENT: the next poll() waits. */
    }
    return NULL;
}

static int start_threads(struct qatpy_device *dev, char *err, size_t errlen)
{
    for (uint32_t i = 0; i < dev->ninst; i++) {
        struct qps_inst *inst = &dev->inst[i];
        if (inst->thread_running)
            continue;
        int rc = pthread_create(&inst->thread, NULL, poll_main, inst);
        if (rc != 0) {
            qps_errf(err, errlen, "cannot start the poll thread for instance %u: %s", i,
                     strerror(rc));
            return QATPY_ERR_NOMEM;
        }
        inst->thread_running = true;
    }
    dev->threads_started = true;
    return QATPY_OK;
}

static void stop_threads(struct qatpy_device *dev)
{
    atomic_store(&dev->stop_threads, 1);
    for (uint32_t i = 0; i < dev->ninst; i++) {
        struct qps_inst *inst = &dev->inst[i];
        if (!inst->locks_init)
            continue;
        pthread_mutex_lock(&inst->park_lock);
        pthread_cond_broadcast(&inst->park_cond);
        pthread_mutex_unlock(&inst->park_lock);
    }
    for (uint32_t i = 0; i < dev->ninst; i++) {
        struct qps_inst *inst = &dev->inst[i];
        if (inst->thread_running) {
            pthread_join(inst->thread, NULL);
            inst->thread_running = false;
        }
    }
}

/* ---- instance notification (RESTARTING / RESTARTED) --------------------- */

static void notify_cb(const CpaInstanceHandle h, void *tag, const CpaInstanceEvent ev)
{
    (void)h;
    struct qps_inst *inst = tag;
    switch (ev) {
    case CPA_INSTANCE_EVENT_RESTARTING:
        atomic_store(&inst->healthy, 0);
        break;
    case CPA_INSTANCE_EVENT_RESTARTED:
        if (!atomic_load(&inst->fatal))
            atomic_store(&inst->healthy, 1);
        atomic_store(&inst->timed_out, 0); /* a fresh start: rejoin */
        break;
    case CPA_INSTANCE_EVENT_FATAL_ERROR:
        atomic_store(&inst->fatal, 1);
        atomic_store(&inst->healthy, 0);
        break;
    default:
        break;
    }
    /* Whatever changed, let parked pollers re-evaluate (queued work may now fit). */
    qps_wake_all(inst->dev);
}

/* ---- instance discovery ------------------------------------------------- */

static int find_instances(struct qatpy_device *dev, uint32_t max_instances,
                          CpaInstanceHandle **out_h, CpaAccelerationServiceType **out_svc,
                          uint32_t *out_n, char *err, size_t errlen)
{
    Cpa16U n = 0;
    CpaStatus st;
    CpaInstanceHandle *h = NULL;
    CpaAccelerationServiceType svc = CPA_ACC_SVC_TYPE_CRYPTO_ASYM;
    bool from_asym = false;
    (void)dev;

    if (qps_lib.cpaGetNumInstances && qps_lib.cpaGetInstances) {
        st = qps_lib.cpaGetNumInstances(CPA_ACC_SVC_TYPE_CRYPTO_ASYM, &n);
        if (st == CPA_STATUS_SUCCESS && n > 0) {
            h = calloc(n, sizeof *h);
            if (!h) {
                qps_errf(err, errlen, "out of memory listing instances");
                return QATPY_ERR_NOMEM;
            }
            st = qps_lib.cpaGetInstances(CPA_ACC_SVC_TYPE_CRYPTO_ASYM, n, h);
            if (st == CPA_STATUS_SUCCESS)
                from_asym = true;
            else {
                free(h);
                h = NULL;
                n = 0;
            }
        } else {
            n = 0;
        }
    }
    if (!from_asym) {
        svc = CPA_ACC_SVC_TYPE_CRYPTO;
        st = qps_lib.cpaCyGetNumInstances(&n);
        if (st != CPA_STATUS_SUCCESS || n == 0) {
            qps_errf(err, errlen,
                     "no asym or crypto instance (cpaCyGetNumInstances: %d, n=%u); hint: "
                     "the VFs given to this process have no crypto service; set "
                     "ServicesEnabled to asym or sym;asym in /etc/sysconfig/qat and restart "
                     "qat.service",
                     (int)st, (unsigned)n);
            return QATPY_ERR_NO_INSTANCE;
        }
        h = calloc(n, sizeof *h);
        if (!h) {
            qps_errf(err, errlen, "out of memory listing instances");
            return QATPY_ERR_NOMEM;
        }
        st = qps_lib.cpaCyGetInstances(n, h);
        if (st != CPA_STATUS_SUCCESS) {
            free(h);
            qps_errf(err, errlen, "cpaCyGetInstances(%u) failed (%d %s)", (unsigned)n, (int)st,
                     status_name(st));
            return QATPY_ERR_NO_INSTANCE;
        }
    }

    /* Keep only instances that can do RSA and ECDSA (cy lists may hold
     * sym-only instances; facts 5.2).  A failed query on an asym-only
     * instance is not held against it. */
    uint32_t kept = 0;
    for (uint32_t i = 0; i < n; i++) {
        CpaCyCapabilitiesInfo cap;
        memset(&cap, 0, sizeof cap);
        st = qps_lib.cpaCyQueryCapabilities(h[i], &cap);
        bool ok = st == CPA_STATUS_SUCCESS ? (cap.rsaSupported == CPA_TRUE &&
                                              cap.ecdsaSupported == CPA_TRUE)
                                           : from_asym;
        if (ok && (max_instances == 0 || kept < max_instances))
            h[kept++] = h[i];
    }
    if (kept == 0) {
        free(h);
        qps_errf(err, errlen,
                 "%u %s instance(s) found but none supports both RSA and ECDSA "
                 "(cpaCyQueryCapabilities); hint: enable the asym service on the VFs",
                 (unsigned)n, from_asym ? "asym" : "crypto");
        return QATPY_ERR_CAPABILITY;
    }
    CpaAccelerationServiceType *svcs = calloc(kept, sizeof *svcs);
    if (!svcs) {
        free(h);
        qps_errf(err, errlen, "out of memory listing instances");
        return QATPY_ERR_NOMEM;
    }
    for (uint32_t i = 0; i < kept; i++)
        svcs[i] = svc;
    *out_h = h;
    *out_svc = svcs;
    *out_n = kept;
    return QATPY_OK;
}

/* ---- per-instance resources --------------------------------------------- */

static int inst_alloc_dma(struct qatpy_device *dev, struct qps_inst *inst, char *err,
                          size_t errlen)
{
    inst->curve_dma = qps_dma_alloc(dev, QPS_NUM_CURVES * QPS_CURVE_BLOCK, inst->node);
    if (!inst->curve_dma)
        goto nomem;
    memset(inst->curve_dma, 0, QPS_NUM_CURVES * QPS_CURVE_BLOCK);
    for (int c = 0; c < QPS_NUM_CURVES; c++) {
        const struct qps_curve *cv = qps_curve_get(QATPY_CURVE_P256 + c);
        uint8_t *blk = inst->curve_dma + (size_t)c * QPS_CURVE_BLOCK;
        const uint8_t *params[6] = {cv->xg, cv->yg, cv->n, cv->q, cv->a, cv->b};
        for (int p = 0; p < 6; p++)
            memcpy(blk + p * QPS_CURVE_PARAM_STRIDE, params[p], cv->len);
    }

    /* One bufset per in-flight unit: a request only holds one while it is
     * on the device, so the pool never runs dry and steady state allocates
     * no DMA. */
    uint32_t nchunks = (dev->cap + QPS_BUFSETS_PER_CHUNK - 1) / QPS_BUFSETS_PER_CHUNK;
    inst->chunks = calloc(nchunks, sizeof *inst->chunks);
    inst->free_bufs = calloc(dev->cap, sizeof *inst->free_bufs);
    if (!inst->chunks || !inst->free_bufs)
        goto nomem;
    uint32_t left = dev->cap;
    for (uint32_t c = 0; c < nchunks; c++) {
        uint32_t cnt = left < QPS_BUFSETS_PER_CHUNK ? left : QPS_BUFSETS_PER_CHUNK;
        uint8_t *blk = qps_dma_alloc(dev, (size_t)cnt * QPS_BUFSET_SIZE, inst->node);
        if (!blk)
            goto nomem;
        inst->chunks[inst->nchunks++] = blk;
        memset(blk, 0, (size_t)cnt * QPS_BUFSET_SIZE);
        for (uint32_t j = 0; j < cnt; j++)
            inst->free_bufs[inst->nfree++] = blk + (size_t)j * QPS_BUFSET_SIZE;
        left -= cnt;
    }
    return QATPY_OK;
nomem:
    qps_errf(err, errlen,
             "qaeMemAllocNUMA failed on node %d for instance %u (DMA pools); hint: raise "
             "RLIMIT_MEMLOCK (ulimit -l) or lower inflight_per_instance",
             inst->node, inst->index);
    return QATPY_ERR_NOMEM;
}

static void inst_free_dma(struct qatpy_device *dev, struct qps_inst *inst)
{
    if (inst->stop_failed)
        return; /* the device may still write there: leak rather than reuse */
    qps_dma_free(dev, inst->curve_dma, 0);
    inst->curve_dma = NULL;
    for (uint32_t c = 0; c < inst->nchunks; c++)
        qps_dma_free(dev, inst->chunks[c], 0);
    inst->nchunks = 0;
    inst->nfree = 0;
}

static void setup_event_mode(struct qatpy_device *dev)
{
    bool ok = qps_lib.cpaInstanceSetResponseMode && qps_lib.icp_sal_CyGetFileDescriptor;
    for (uint32_t i = 0; ok && i < dev->ninst; i++) {
        struct qps_inst *inst = &dev->inst[i];
        CpaStatus st =
            qps_lib.cpaInstanceSetResponseMode(inst->h, inst->svc, CPA_INST_RX_NOTIFY_BY_EVENT);
        if (st != CPA_STATUS_SUCCESS) {
            ok = false;
            break;
        }
        inst->event_mode = true;
        int fd = 0;
        st = qps_lib.icp_sal_CyGetFileDescriptor(inst->h, &fd);
        if (st != CPA_STATUS_SUCCESS || fd <= 0) {
            ok = false;
            break;
        }
        inst->event_fd = fd;
    }
    if (ok) {
        atomic_store(&dev->poll_mode, QATPY_POLL_EVENT);
        return;
    }
    /* Not supported everywhere: undo and fall back to TIMER. */
    for (uint32_t i = 0; i < dev->ninst; i++) {
        struct qps_inst *inst = &dev->inst[i];
        if (inst->event_fd >= 0 && qps_lib.icp_sal_CyPutFileDescriptor)
            qps_lib.icp_sal_CyPutFileDescriptor(inst->h, inst->event_fd);
        inst->event_fd = -1;
        if (inst->event_mode)
            qps_lib.cpaInstanceSetResponseMode(inst->h, inst->svc, CPA_INST_RX_NOTIFY_NONE);
        inst->event_mode = false;
    }
    atomic_store(&dev->poll_mode, QATPY_POLL_TIMER);
}

static void stop_instances(struct qatpy_device *dev)
{
    for (uint32_t i = dev->ninst; i-- > 0;) {
        struct qps_inst *inst = &dev->inst[i];
        if (!inst->started)
            continue;
        if (inst->event_fd >= 0 && qps_lib.icp_sal_CyPutFileDescriptor)
            qps_lib.icp_sal_CyPutFileDescriptor(inst->h, inst->event_fd);
        inst->event_fd = -1;
        CpaStatus st = qps_lib.cpaCyStopInstance(inst->h);
        if (st != CPA_STATUS_SUCCESS)
            inst->stop_failed = true;
        inst->started = false;
    }
}

/* Frees what open built; used by a failed open and by device_free.  The
 * device must be stopped (no thread, no started instance). */
static void dev_release_resources(struct qatpy_device *dev)
{
    for (uint32_t i = 0; i < dev->ninst && dev->inst; i++) {
        struct qps_inst *inst = &dev->inst[i];
        inst_free_dma(dev, inst);
        free(inst->free_bufs);
        free(inst->chunks);
        inst->free_bufs = NULL;
        inst->chunks = NULL;
        if (inst->locks_init) {
            pthread_mutex_destroy(&inst->lock);
            pthread_mutex_destroy(&inst->park_lock);
            pthread_cond_destroy(&inst->park_cond);
            inst->locks_init = false;
        }
    }
    free(dev->inst);
    dev->inst = NULL;
    free(dev->slots);
    dev->slots = NULL;
    free(dev->free_slots);
    dev->free_slots = NULL;
    free(dev->ring);
    dev->ring = NULL;
    if (dev->efd >= 0)
        close(dev->efd);
    dev->efd = -1;
}

/* The struct itself: freed when the owner and every key let go. */
void qps_dev_unref(struct qatpy_device *dev)
{
    if (atomic_fetch_sub(&dev->refs, 1) != 1)
        return;
    pthread_mutex_destroy(&dev->state_lock);
    pthread_mutex_destroy(&dev->slot_lock);
    pthread_mutex_destroy(&dev->pend_lock);
    pthread_mutex_destroy(&dev->ring_lock);
    pthread_cond_destroy(&dev->ring_cond);
    pthread_mutex_destroy(&dev->key_lock);
    free(dev);
}

static struct qatpy_device *dev_new(void)
{
    struct qatpy_device *dev = calloc(1, sizeof *dev);
    if (!dev)
        return NULL;
    atomic_init(&dev->refs, 1);
    atomic_init(&dev->verify, 1);
    atomic_init(&dev->submit_cpu, -1); /* no submit yet */
    dev->efd = -1;
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
                 dev->process_name, (int)st, status_name(st));
        return QATPY_ERR_START;
    }
    dev->user_started = true;

    CpaInstanceHandle *handles = NULL;
    CpaAccelerationServiceType *svcs = NULL;
    uint32_t n = 0;
    rc = find_instances(dev, cfg->max_instances, &handles, &svcs, &n, err, errlen);
    if (rc != QATPY_OK)
        return rc;
    dev->inst = calloc(n, sizeof *dev->inst);
    if (!dev->inst) {
        free(handles);
        free(svcs);
        qps_errf(err, errlen, "out of memory for %u instances", n);
        return QATPY_ERR_NOMEM;
    }
    dev->ninst = n;
    for (uint32_t i = 0; i < n; i++) {
        struct qps_inst *inst = &dev->inst[i];
        inst->dev = dev;
        inst->index = i;
        inst->h = handles[i];
        inst->svc = svcs[i];
        inst->node = NUMA_ANY_NODE;
        inst->event_fd = -1;
        atomic_init(&inst->healthy, 1);
        atomic_init(&inst->next_deadline, UINT64_MAX);
        pthread_mutex_init(&inst->lock, NULL);
        pthread_mutex_init(&inst->park_lock, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&inst->park_cond, &ca);
        pthread_condattr_destroy(&ca);
        inst->locks_init = true;
    }
    free(handles);
    free(svcs);

    for (uint32_t i = 0; i < n; i++) {
        struct qps_inst *inst = &dev->inst[i];
        st = qps_lib.cpaCyStartInstance(inst->h);
        if (st != CPA_STATUS_SUCCESS) {
            qps_errf(err, errlen,
                     "cpaCyStartInstance failed on instance %u (%d %s); hint: check dmesg and "
                     "qat.service; the device may be resetting",
                     i, (int)st, status_name(st));
            return QATPY_ERR_INSTANCE;
        }
        inst->started = true;
        st = qps_lib.cpaCySetAddressTranslation(inst->h, qps_lib.qaeVirtToPhysNUMA);
        if (st != CPA_STATUS_SUCCESS) {
            qps_errf(err, errlen,
                     "cpaCySetAddressTranslation failed on instance %u (%d %s); hint: libusdm "
                     "and libqat must come from the same qatlib install",
                     i, (int)st, status_name(st));
            return QATPY_ERR_INSTANCE;
        }
        CpaInstanceInfo2 info;
        memset(&info, 0, sizeof info);
        st = qps_lib.cpaCyInstanceGetInfo2(inst->h, &info);
        if (st != CPA_STATUS_SUCCESS) {
            qps_errf(err, errlen, "cpaCyInstanceGetInfo2 failed on instance %u (%d %s)", i,
                     (int)st, status_name(st));
            return QATPY_ERR_INSTANCE;
        }
        /* nodeAffinity is a small NUMA node number; anything odd -> any node. */
        inst->node = info.nodeAffinity < 4096 ? (int)info.nodeAffinity : NUMA_ANY_NODE;
        if (qps_lib.cpaCyInstanceSetNotificationCb)
            qps_lib.cpaCyInstanceSetNotificationCb(inst->h, notify_cb, inst);
        rc = inst_alloc_dma(dev, inst, err, errlen);
        if (rc != QATPY_OK)
            return rc;
    }

    if (dev->requested_mode == QATPY_POLL_EVENT)
        setup_event_mode(dev);
    else
        atomic_store(&dev->poll_mode, dev->requested_mode);

    if (atomic_load(&dev->poll_mode) != QATPY_POLL_MANUAL) {
        rc = start_threads(dev, err, errlen);
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
    if (cfg->poll_delay_ns > MAX_POLL_DELAY_NS) {
        qps_errf(err, errlen, "poll_delay_ns %llu exceeds 1 s",
                 (unsigned long long)cfg->poll_delay_ns);
        return QATPY_ERR_CONFIG;
    }
    uint32_t cap = cfg->inflight_per_instance ? cfg->inflight_per_instance : DEFAULT_INFLIGHT;
    uint32_t nreq = cfg->max_requests ? cfg->max_requests : DEFAULT_MAX_REQUESTS;
    if (cap > MAX_INFLIGHT || nreq > MAX_REQUESTS) {
        qps_errf(err, errlen, "inflight_per_instance (%u) or max_requests (%u) out of range",
                 cap, nreq);
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
        stop_threads(dev);
        stop_instances(dev);
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

/* ---- shutdown / free ----------------------------------------------------- */

static bool dev_idle(struct qatpy_device *dev)
{
    /* Zombies wait for an answer that may never come: stopping the instance
     * is what releases them, so they do not hold up shutdown. */
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
     *    nothing is in flight or queued, or the timeout passes. */
    uint64_t deadline = timeout_ns < 0 ? UINT64_MAX : qps_now_ns() + (uint64_t)timeout_ns;
    while (!dev_idle(dev) && qps_now_ns() < deadline) {
        if (!dev->threads_started || atomic_load(&dev->poll_mode) == QATPY_POLL_MANUAL) {
            int got = 0;
            for (uint32_t i = 0; i < dev->ninst; i++)
                got += qps_poll_instance(&dev->inst[i]);
            qps_dispatch_pending(dev);
            if (got == 0)
                sleep_ns(20000);
        } else {
            sleep_ns(100000);
        }
    }

    /* 3. No more polling: threads joined, manual pollers drained. */
    atomic_store(&dev->poll_closed, 1);
    while (atomic_load(&dev->poll_active) > 0)
        sched_yield();
    stop_threads(dev);

    /* 4. Stop the instances: after cpaCyStopInstance no callback is
     *    delivered, so the buffers of requests still on the device are ours. */
    stop_instances(dev);

    /* 5. Every request still owned by the shim completes exactly once, CLOSED.
     *    Only this thread touches slots now (no threads, no submitters, no
     *    pollers); drainers only touch DONE slots. */
    for (uint32_t i = 0; i < dev->nslots; i++) {
        struct qps_req *req = &dev->slots[i];
        int s = atomic_load(&req->state);
        if (s == QPS_SLOT_ONDEV && req->deadline &&
            atomic_load(&req->claim) == QPS_CLAIM_TIMEDOUT) {
            /* A zombie: TIMEOUT was delivered already; the stopped instance
             * gives back its buffer and the device's hold. */
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

    /* 6. Release the process-wide start. */
    qps_global_lock();
    if (dev->user_started)
        qps_lib.icp_sal_userStop();
    dev->user_started = false;
    if (qps_open_dev == dev)
        qps_open_dev = NULL;
    qps_global_unlock();

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

/* ---- run-time settings, events, stats ------------------------------------ */

int qatpy_device_set_poll(qatpy_device *dev, int poll_mode, uint64_t poll_delay_ns)
{
    if (!dev || poll_mode < QATPY_POLL_TIMER || poll_mode > QATPY_POLL_MANUAL ||
        poll_delay_ns > MAX_POLL_DELAY_NS)
        return QATPY_ERR_CONFIG;
    if (qps_forked(dev))
        return QATPY_ERR_STATE;
    pthread_mutex_lock(&dev->state_lock);
    if (dev->stage != QPS_STAGE_OPEN) {
        pthread_mutex_unlock(&dev->state_lock);
        return QATPY_ERR_STATE;
    }
    int eff = poll_mode;
    if (eff == QATPY_POLL_EVENT) {
        bool fds = dev->ninst > 0;
        for (uint32_t i = 0; i < dev->ninst; i++)
            if (dev->inst[i].event_fd < 0)
                fds = false;
        if (!fds)
            eff = QATPY_POLL_TIMER; /* event fds exist only if set up at open */
    }
    atomic_store(&dev->poll_delay_ns, poll_delay_ns);
    atomic_store(&dev->poll_mode, eff);
    int rc = QATPY_OK;
    if (eff != QATPY_POLL_MANUAL && !dev->threads_started) {
        atomic_store(&dev->stop_threads, 0);
        rc = start_threads(dev, NULL, 0);
        if (rc != QATPY_OK) {
            stop_threads(dev);
            atomic_store(&dev->stop_threads, 0);
            dev->threads_started = false;
            atomic_store(&dev->poll_mode, QATPY_POLL_MANUAL);
        }
    }
    qps_wake_all(dev);
    pthread_mutex_unlock(&dev->state_lock);
    return rc;
}

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

void qatpy_stats(qatpy_device *dev, qatpy_stats_t *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!dev)
        return;
    struct qps_counters *c = &dev->st;
    out->submitted = atomic_load(&c->submitted);
    out->completed = atomic_load(&c->completed);
    out->completed_ok = atomic_load(&c->completed_ok);
    out->completed_error = atomic_load(&c->completed_error);
    out->ring_retries = atomic_load(&c->ring_retries);
    uint64_t queued = atomic_load(&dev->pend_count);
    if (!qps_forked(dev) && dev->inst)
        for (uint32_t i = 0; i < dev->ninst; i++)
            queued += atomic_load(&dev->inst[i].redo_count);
    out->queued_now = queued;
    out->inflight_now = atomic_load(&dev->inflight_total);
    out->inflight_max = atomic_load(&c->inflight_max);
    out->polls = atomic_load(&c->polls);
    out->polls_empty = atomic_load(&c->polls_empty);
    out->dma_allocs = atomic_load(&c->dma_allocs);
    out->dma_live = atomic_load(&c->dma_live);
    out->ecdsa_retries = atomic_load(&c->ecdsa_retries);
    out->drained_batches = atomic_load(&c->drained_batches);
    out->num_instances = dev->ninst;
    out->poll_mode = (uint32_t)atomic_load(&dev->poll_mode);
    out->verify_failures = atomic_load(&c->verify_failures);
    out->timeouts = atomic_load(&c->timeouts);
    out->late_answers = atomic_load(&c->late_answers);
    out->poller_moves = atomic_load(&c->poller_moves);
    uint32_t unhealthy = 0;
    if (!qps_forked(dev) && dev->inst)
        for (uint32_t i = 0; i < dev->ninst; i++)
            unhealthy += qatpy_instance_healthy(dev, i) == 0;
    out->unhealthy_instances = unhealthy;
}

int qatpy_device_set_verify(qatpy_device *dev, int enabled)
{
    if (!dev)
        return QATPY_ERR_CONFIG;
    if (qps_forked(dev))
        return QATPY_ERR_STATE;
    atomic_store(&dev->verify, enabled ? 1 : 0);
    return QATPY_OK;
}

int qatpy_device_set_deadline(qatpy_device *dev, uint64_t deadline_ns)
{
    if (!dev || deadline_ns > MAX_DEADLINE_NS)
        return QATPY_ERR_CONFIG;
    if (qps_forked(dev))
        return QATPY_ERR_STATE;
    atomic_store(&dev->deadline_ns, deadline_ns);
    qps_wake_all(dev);
    return QATPY_OK;
}

int qatpy_instance_healthy(qatpy_device *dev, uint32_t index)
{
    if (!dev || qps_forked(dev) || !dev->inst || index >= dev->ninst)
        return -1;
    struct qps_inst *inst = &dev->inst[index];
    return atomic_load(&inst->healthy) && !atomic_load(&inst->fatal) &&
           !atomic_load(&inst->timed_out);
}
