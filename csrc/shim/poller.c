/*
 * The poll threads, and qatpy_poll (MANUAL mode's poll).
 *
 * One thread per instance.  qatlib serialises pollers of one instance on
 * its response-ring mutex anyway, callbacks do real work (result copy, DER
 * encoding), and an idle thread costs nothing because it parks on its
 * condition variable whenever its instance has nothing in flight and
 * nothing is queued.  After a stream of requests a poller lingers briefly
 * before it parks, and it moves itself off the submitter's CPU.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include "shim_internal.h"

#define EVENT_WAIT_MS 10
/* An instance whose only in-flight requests are timed-out zombies, or that
 * is being reset, is polled this often (a timed park): to notice a late
 * answer or a reset's FAIL completions, and to fetch the device events and
 * make heartbeat checks (recover.c), without spinning. */
#define PROBE_POLL_NS 1000000ULL
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

/* ---- parking ------------------------------------------------------------ */

/* Zombies (timed out, still on the device) are not work: they get a slow
 * probe poll from park() instead.  Nor are the requests of waiters polling
 * for themselves while they are all the device has (wait.c). */
static bool inst_has_work(struct qps_inst *inst)
{
    struct qatpy_device *dev = inst->dev;
    if (qps_self_polled(dev) && !qps_others_work(dev) && atomic_load(&inst->redo_count) == 0)
        return false;
    return atomic_load(&inst->inflight) > atomic_load(&inst->zombies) ||
           atomic_load(&inst->redo_count) > 0 || atomic_load(&dev->pend_count) > 0;
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

/* Returns true when it woke only to probe (zombies, a reset): poll once,
 * then park again. */
static bool park(struct qps_inst *inst)
{
    struct qatpy_device *dev = inst->dev;
    bool probe = false;
    pthread_mutex_lock(&inst->park_lock);
    atomic_store(&inst->parked, 1);
    while (!atomic_load(&dev->stop_threads) &&
           (atomic_load(&dev->poll_mode) == QATPY_POLL_MANUAL || !inst_has_work(inst))) {
        if (atomic_load(&dev->poll_mode) != QATPY_POLL_MANUAL &&
            (atomic_load(&inst->zombies) || qps_inst_restarting(inst))) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            uint64_t ns = (uint64_t)ts.tv_nsec + PROBE_POLL_NS;
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
                mode = QATPY_POLL_TIMER; /* probe: one poll, no event wait */
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
        qps_recover_tick(inst);
        int disp = qps_dispatch_pending(dev);
        if (got > 0) {
            avoid_submitter_cpu(inst);
            continue; /* productive: poll again at once */
        }
        uint64_t delay = atomic_load(&dev->poll_delay_ns);
        if (disp < 0) {
            /* The device refused with RETRY and nothing came back: back off,
             * never spin on RETRY. */
            qps_sleep_ns(delay > QPS_RETRY_BACKOFF_NS ? delay : QPS_RETRY_BACKOFF_NS);
        } else if (mode == QATPY_POLL_TIMER || (mode == QATPY_POLL_EVENT && inst->event_fd < 0)) {
            qps_sleep_ns(delay);
        }
        /* BUSY: poll again at once; EVENT: the next poll() waits. */
    }
    return NULL;
}

int qps_start_threads(struct qatpy_device *dev, char *err, size_t errlen)
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

void qps_stop_threads(struct qatpy_device *dev)
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

/* ---- a waiter's own polling (wait.c) ------------------------------------- */

int qps_drive_once(struct qatpy_device *dev)
{
    if (qps_forked(dev))
        return -1;
    atomic_fetch_add(&dev->poll_active, 1);
    if (atomic_load(&dev->poll_closed)) {
        atomic_fetch_sub(&dev->poll_active, 1);
        return -1;
    }
    int total = 0;
    for (uint32_t i = 0; i < dev->ninst; i++) {
        struct qps_inst *inst = &dev->inst[i];
        if (atomic_load(&inst->inflight) == 0 && atomic_load(&inst->redo_count) == 0)
            continue;
        total += qps_poll_instance(inst);
        qps_recover_tick(inst);
    }
    qps_dispatch_pending(dev);
    atomic_fetch_sub(&dev->poll_active, 1);
    return total;
}

/* ---- MANUAL mode -------------------------------------------------------- */

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
    for (uint32_t i = 0; i < dev->ninst; i++) {
        total += qps_poll_instance(&dev->inst[i]);
        qps_recover_tick(&dev->inst[i]);
    }
    qps_dispatch_pending(dev);
    atomic_fetch_sub(&dev->poll_active, 1);
    return total;
}
