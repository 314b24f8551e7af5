/*
 * The simulated device: process start/stop, instances, the request pipeline
 * (worker threads, latency timer, response lists) and polling.
 * See sim.h for the pipeline and the lock order.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "sim.h"

CpaStatus icp_sal_userStartMultiProcess(const char *pProcessName, CpaBoolean limitDevAccess);
CpaStatus icp_sal_CyPollAsymRing(CpaInstanceHandle instanceHandle, Cpa32U response_quota);
void sim_life_lock(void);
void sim_life_unlock(void);
int sim_refcount(void);
void sim_compute(simbn_ctx *c, sim_job *job);      /* ops.c */
void sim_write_outputs(sim_job *job);              /* ops.c */

sim_inst g_inst[SIM_MAX_INSTANCES];
atomic_int g_ninst;

static pthread_mutex_t g_life = PTHREAD_MUTEX_INITIALIZER;
static int g_refcount;
static pthread_once_t g_inst_once = PTHREAD_ONCE_INIT;
static pthread_condattr_t g_mono_attr;

/* Thread-local: the instance this thread is polling right now (callbacks
 * run inside poll).  Used to refuse re-entrant polls and to let a callback
 * stop its own instance without self-deadlock. */
static _Thread_local sim_inst *tl_polling;

/* worker pool */
static pthread_mutex_t g_wq_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_wq_cv;
static sim_job *g_wq_head, *g_wq_tail;
static int g_wq_quit;
static pthread_t g_workers[64];
static int g_nworkers;

/* latency timer: a min-heap of jobs by ready_ns, plus restart cycles */
static pthread_mutex_t g_tm_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_tm_cv;
static sim_job **g_heap;
static size_t g_heap_n, g_heap_cap;
static int g_tm_quit;
static pthread_t g_timer;
static int g_timer_running;

/*
 * fork (facts 5.1, 5.3, pitfall 7).  A forked child has none of the
 * device's threads (workers, timer) and must not use the parent's
 * instances or DMA.  The child handler re-initialises every lock (their
 * owners may not exist in the child) and bumps g_fork_gen; instances of an
 * older generation resolve to nothing (bad_handle), and the child's
 * icp_sal_userStart, like qatlib's from a new pid, first drops the parent's
 * library state without joining threads that are not there, then starts
 * fresh workers.  Dropped jobs are leaked, not freed: their lists may have
 * been mid-update in the parent.
 */
static atomic_uint g_fork_gen;
static atomic_uint g_start_gen; /* generation of the current start */

void sim_life_lock(void)
{
    pthread_mutex_lock(&g_life);
}

void sim_life_unlock(void)
{
    pthread_mutex_unlock(&g_life);
}

int sim_refcount(void)
{
    return g_refcount;
}

int sim_is_started(void)
{
    return g_refcount > 0;
}

static void inst_once(void)
{
    pthread_condattr_init(&g_mono_attr);
    pthread_condattr_setclock(&g_mono_attr, CLOCK_MONOTONIC);
    pthread_cond_init(&g_wq_cv, &g_mono_attr);
    pthread_cond_init(&g_tm_cv, &g_mono_attr);
    /* Instance locks live for the whole process: a handle used after
     * icp_sal_userStop must find a valid (dead) instance, not freed memory. */
    for (int i = 0; i < SIM_MAX_INSTANCES; i++) {
        sim_inst *in = &g_inst[i];
        in->index = i;
        in->efd = -1;
        in->mode = CPA_INST_RX_NOTIFY_NONE;
        pthread_rwlock_init(&in->state, NULL);
        pthread_mutex_init(&in->poll_mu, NULL);
        pthread_mutex_init(&in->list_mu, NULL);
        pthread_mutex_init(&in->eng_mu, NULL);
    }
}

static void init_locks(void)
{
    pthread_mutex_init(&g_life, NULL);
    pthread_mutex_init(&g_wq_mu, NULL);
    pthread_mutex_init(&g_tm_mu, NULL);
    pthread_cond_init(&g_wq_cv, &g_mono_attr);
    pthread_cond_init(&g_tm_cv, &g_mono_attr);
    for (int i = 0; i < SIM_MAX_INSTANCES; i++) {
        sim_inst *in = &g_inst[i];
        pthread_rwlock_init(&in->state, NULL);
        pthread_mutex_init(&in->poll_mu, NULL);
        pthread_mutex_init(&in->list_mu, NULL);
        pthread_mutex_init(&in->eng_mu, NULL);
    }
}

static void atfork_child(void)
{
    atomic_fetch_add(&g_fork_gen, 1);
    tl_polling = NULL;
    if (pthread_once(&g_inst_once, inst_once) == 0)
        init_locks();
    sim_replay_atfork_child();
}

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, atfork_child);
}

static pthread_once_t g_atfork_once = PTHREAD_ONCE_INIT;

static void ensure_init(void)
{
    sim_init_once();
    pthread_once(&g_inst_once, inst_once);
    pthread_once(&g_atfork_once, register_atfork);
}

/* In a fork child, before its own start: forget the parent's device.  No
 * join (those threads do not exist here), no free (see above). */
static void fork_reset(void)
{
    int n = atomic_load(&g_ninst);
    for (int i = 0; i < SIM_MAX_INSTANCES; i++) {
        sim_inst *in = &g_inst[i];
        atomic_store(&in->live, 0);
        atomic_store(&in->started, 0);
        atomic_store(&in->inflight, 0);
        atomic_store(&in->restarting, 0);
        atomic_store(&in->v2p, NULL);
        in->head = in->tail = in->lost = NULL;
        in->epoch++;
        if (i < n && in->efd >= 0)
            close(in->efd); /* our copy of the fd; the parent's stays open */
        in->efd = -1;
        in->mode = CPA_INST_RX_NOTIFY_NONE;
        in->restart_phase = 0;
        in->notify_cb = NULL;
        in->notify_tag = NULL;
    }
    atomic_store(&g_ninst, 0);
    g_wq_head = g_wq_tail = NULL;
    g_nworkers = 0;
    g_timer_running = 0;
    g_heap = NULL;
    g_heap_n = g_heap_cap = 0;
    atomic_store(&g_inflight, 0);
    g_refcount = 0;
    ctr_add(C_FORK_RESETS, 1);
}

static int from_parent(void)
{
    return atomic_load_explicit(&g_start_gen, memory_order_relaxed) !=
           atomic_load_explicit(&g_fork_gen, memory_order_relaxed);
}

sim_inst *sim_resolve(CpaInstanceHandle h)
{
    /* The parent's instances in a fork child: gone. */
    if (from_parent())
        return NULL;
    if (h == CPA_INSTANCE_HANDLE_SINGLE) {
        sim_inst *first = &g_inst[0];
        return atomic_load(&g_ninst) > 0 && atomic_load(&first->live) ? first : NULL;
    }
    uintptr_t u = (uintptr_t)h, base = (uintptr_t)g_inst;
    if (u < base || u >= base + sizeof(g_inst) || (u - base) % sizeof(sim_inst) != 0)
        return NULL;
    sim_inst *in = &g_inst[(u - base) / sizeof(sim_inst)];
    return atomic_load(&in->live) ? in : NULL;
}

/* ---- job ownership ----------------------------------------------------- */

void sim_job_free(sim_job *job)
{
    if (job->sync) {
        pthread_cond_destroy(&job->scv);
        pthread_mutex_destroy(&job->smu);
    }
    /* The snapshot holds key material (d, p, q, dP, dQ, qInv, k). */
    explicit_bzero(job->data, (size_t)job->snap_len + job->res_len);
    free(job);
}

static void inflight_done(sim_job *job)
{
    atomic_fetch_sub_explicit(&job->inst->inflight, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&g_inflight, 1, memory_order_relaxed);
}

/* A response that will never be delivered (instance stopped / shut down). */
static void job_discard(sim_job *job)
{
    inflight_done(job);
    ctr_add(C_COMPLETED_DISCARDED, 1);
    if (job->sync) {
        pthread_mutex_lock(&job->smu);
        if (job->sstate == 2) {
            pthread_mutex_unlock(&job->smu);
            sim_job_free(job);
            return;
        }
        job->status = CPA_STATUS_FAIL;
        job->sstate = 1;
        pthread_cond_signal(&job->scv);
        pthread_mutex_unlock(&job->smu);
        return;
    }
    sim_job_free(job);
}

static void discard_chain(sim_job *j)
{
    while (j != NULL) {
        sim_job *next = j->next;
        job_discard(j);
        j = next;
    }
}

static void efd_signal(sim_inst *in)
{
    uint64_t one = 1;
    if (in->efd >= 0 && write(in->efd, &one, sizeof(one)) < 0) {
        /* EAGAIN means the counter is saturated: still readable. */
    }
}

/* Make a computed response visible to pollers. */
static void post_job(sim_job *job)
{
    sim_inst *in = job->inst;
    job->next = NULL;
    pthread_mutex_lock(&in->list_mu);
    if (job->epoch != in->epoch) {
        pthread_mutex_unlock(&in->list_mu);
        job_discard(job);
        return;
    }
    if (job->faults & (1u << F_LOST)) {
        /* Held until the instance stops: it occupies its ring slot forever. */
        job->next = in->lost;
        in->lost = job;
        pthread_mutex_unlock(&in->list_mu);
        return;
    }
    int was_empty = in->head == NULL;
    if (in->tail != NULL)
        in->tail->next = job;
    else
        in->head = job;
    in->tail = job;
    if (was_empty && in->mode == CPA_INST_RX_NOTIFY_BY_EVENT)
        efd_signal(in);
    pthread_mutex_unlock(&in->list_mu);
}

static void heap_push(sim_job *job)
{
    if (g_heap_n == g_heap_cap) {
        size_t ncap = g_heap_cap ? g_heap_cap * 2 : 256;
        sim_job **nh = realloc(g_heap, ncap * sizeof(*nh));
        if (nh == NULL) {
            /* Out of memory: deliver early rather than lose the response. */
            pthread_mutex_unlock(&g_tm_mu);
            post_job(job);
            pthread_mutex_lock(&g_tm_mu);
            return;
        }
        g_heap = nh;
        g_heap_cap = ncap;
    }
    size_t i = g_heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (g_heap[parent]->ready_ns <= job->ready_ns)
            break;
        g_heap[i] = g_heap[parent];
        i = parent;
    }
    g_heap[i] = job;
}

static sim_job *heap_pop(void)
{
    sim_job *top = g_heap[0];
    sim_job *last = g_heap[--g_heap_n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= g_heap_n)
            break;
        if (c + 1 < g_heap_n && g_heap[c + 1]->ready_ns < g_heap[c]->ready_ns)
            c++;
        if (last->ready_ns <= g_heap[c]->ready_ns)
            break;
        g_heap[i] = g_heap[c];
        i = c;
    }
    if (g_heap_n > 0)
        g_heap[i] = last;
    return top;
}

static void post_or_delay(sim_job *job)
{
    if (job->ready_ns != 0 && job->ready_ns > sim_now_ns()) {
        pthread_mutex_lock(&g_tm_mu);
        heap_push(job);
        if (g_heap_n > 0 && g_heap[0] == job)
            pthread_cond_signal(&g_tm_cv);
        pthread_mutex_unlock(&g_tm_mu);
        return;
    }
    post_job(job);
}

static void *worker_main(void *arg)
{
    simbn_ctx *ctx = arg;
    for (;;) {
        pthread_mutex_lock(&g_wq_mu);
        while (!g_wq_quit && g_wq_head == NULL)
            pthread_cond_wait(&g_wq_cv, &g_wq_mu);
        if (g_wq_quit) {
            pthread_mutex_unlock(&g_wq_mu);
            break;
        }
        sim_job *job = g_wq_head;
        g_wq_head = job->next;
        if (g_wq_head == NULL)
            g_wq_tail = NULL;
        pthread_mutex_unlock(&g_wq_mu);

        sim_compute(ctx, job);
        if (knob(K_COMPUTE_MODE) == 1 && job->status == CPA_STATUS_SUCCESS)
            sim_replay_insert(job);
        post_or_delay(job);
    }
    simbn_ctx_free(ctx);
    return NULL;
}

typedef struct {
    sim_inst *inst;
    CpaCyInstanceNotificationCbFunc cb;
    void *tag;
    CpaInstanceEvent ev;
} sim_note;

static void *timer_main(void *arg)
{
    (void)arg;
    /* Modeled latency is only as exact as the sleeps: drop the default 50 us
     * timer slack (a "100 us" service time measured 136-169 us with it). */
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    sim_note notes[2 * SIM_MAX_INSTANCES];
    pthread_mutex_lock(&g_tm_mu);
    while (!g_tm_quit) {
        uint64_t now = sim_now_ns();
        sim_job *due = NULL, **tailp = &due;
        while (g_heap_n > 0 && g_heap[0]->ready_ns <= now) {
            sim_job *j = heap_pop();
            j->next = NULL;
            *tailp = j;
            tailp = &j->next;
        }
        int nn = 0;
        uint64_t next = g_heap_n > 0 ? g_heap[0]->ready_ns : UINT64_MAX;
        int ninst = atomic_load(&g_ninst);
        for (int i = 0; i < ninst; i++) {
            sim_inst *in = &g_inst[i];
            if (in->restart_phase == 1) {
                notes[nn++] = (sim_note){in, in->notify_cb, in->notify_tag, CPA_INSTANCE_EVENT_RESTARTING};
                in->restart_phase = 2;
            }
            if (in->restart_phase == 2) {
                if (now >= in->restart_until) {
                    in->restart_phase = 0;
                    atomic_store(&in->restarting, 0);
                    notes[nn++] = (sim_note){in, in->notify_cb, in->notify_tag, CPA_INSTANCE_EVENT_RESTARTED};
                } else if (in->restart_until < next) {
                    next = in->restart_until;
                }
            }
        }
        if (due != NULL || nn > 0) {
            pthread_mutex_unlock(&g_tm_mu);
            while (due != NULL) {
                sim_job *n = due->next;
                post_job(due);
                due = n;
            }
            for (int i = 0; i < nn; i++) {
                ctr_add(notes[i].ev == CPA_INSTANCE_EVENT_RESTARTING ? C_NOTIFY_RESTARTING
                                                                      : C_NOTIFY_RESTARTED, 1);
                if (notes[i].cb != NULL)
                    notes[i].cb((CpaInstanceHandle)notes[i].inst, notes[i].tag, notes[i].ev);
            }
            pthread_mutex_lock(&g_tm_mu);
            continue;
        }
        if (next == UINT64_MAX) {
            pthread_cond_wait(&g_tm_cv, &g_tm_mu);
        } else {
            struct timespec ts = {.tv_sec = (time_t)(next / 1000000000u),
                                  .tv_nsec = (long)(next % 1000000000u)};
            pthread_cond_timedwait(&g_tm_cv, &g_tm_mu, &ts);
        }
    }
    pthread_mutex_unlock(&g_tm_mu);
    return NULL;
}

int sim_begin_restart(sim_inst *in)
{
    int rc = -1;
    pthread_mutex_lock(&g_tm_mu);
    if (g_timer_running && !atomic_load(&in->restarting)) {
        atomic_store(&in->restarting, 1);
        atomic_fetch_add(&in->restart_gen, 1);
        in->restart_phase = 1;
        in->restart_until = sim_now_ns() + (uint64_t)knob(K_RESTART_MS) * 1000000u;
        ctr_add(C_RESTARTS, 1);
        pthread_cond_signal(&g_tm_cv);
        rc = 0;
    }
    pthread_mutex_unlock(&g_tm_mu);
    return rc;
}

int qatpy_sim_restart_instance(int index)
{
    ensure_init();
    if (index < 0 || index >= SIM_MAX_INSTANCES)
        return -1;
    sim_inst *in = sim_resolve((CpaInstanceHandle)&g_inst[index]);
    return in == NULL ? -1 : sim_begin_restart(in);
}

/* ---- submit side -------------------------------------------------------- */

static uint64_t engine_slot(sim_inst *in, uint64_t latency)
{
    uint64_t now = sim_now_ns();
    int ne = (int)knob(K_ENGINES);
    pthread_mutex_lock(&in->eng_mu);
    int best = 0;
    for (int i = 1; i < ne; i++)
        if (in->eng_free[i] < in->eng_free[best])
            best = i;
    uint64_t start = in->eng_free[best] > now ? in->eng_free[best] : now;
    uint64_t ready = start + latency;
    in->eng_free[best] = ready;
    pthread_mutex_unlock(&in->eng_mu);
    return ready;
}

/* Caller holds in->state for reading.  Consumes job on any non-SUCCESS
 * return; on SUCCESS the job belongs to the pipeline (and, when sync, is
 * shared with sim_sync_wait). */
CpaStatus sim_dispatch(sim_job *job)
{
    sim_inst *in = job->inst;
    CpaStatus st = CPA_STATUS_SUCCESS;
    if (sim_fault_fires(F_RESTART)) {
        sim_begin_restart(in);
        st = CPA_STATUS_RESTARTING;
    } else if (sim_fault_fires(F_SUBMIT_RETRY)) {
        ctr_add(C_RETRY_RETURNED, 1);
        st = CPA_STATUS_RETRY;
    } else if (sim_fault_fires(F_SUBMIT_FAIL)) {
        st = CPA_STATUS_FAIL;
    } else if (sim_fault_fires(F_SUBMIT_RESTARTING)) {
        st = CPA_STATUS_RESTARTING;
    } else if (sim_fault_fires(F_SUBMIT_UNSUPPORTED)) {
        st = CPA_STATUS_UNSUPPORTED;
    }
    if (st != CPA_STATUS_SUCCESS) {
        sim_job_free(job);
        return st;
    }
    /* The ring holds depth messages and admits depth - 1 in flight. */
    int depth = (int)knob(K_RING_DEPTH);
    if (atomic_fetch_add_explicit(&in->inflight, 1, memory_order_relaxed) >= depth - 1) {
        atomic_fetch_sub_explicit(&in->inflight, 1, memory_order_relaxed);
        ctr_add(C_RETRY_RETURNED, 1);
        ctr_add(C_RING_FULL, 1);
        sim_job_free(job);
        return CPA_STATUS_RETRY;
    }
    long long cur = atomic_fetch_add_explicit(&g_inflight, 1, memory_order_relaxed) + 1;
    long long mx = atomic_load_explicit(&g_ctr[C_INFLIGHT_MAX], memory_order_relaxed);
    while (cur > mx && !atomic_compare_exchange_weak(&g_ctr[C_INFLIGHT_MAX], &mx, cur)) {
    }
    ctr_add(C_SUBMITTED, 1);

    if ((job->op == OP_RSA_DEC1 || job->op == OP_RSA_DEC2 || job->op == OP_RSA_ENC) &&
        sim_fault_fires(F_RSA_BITFLIP))
        job->faults |= 1u << F_RSA_BITFLIP;
    if (job->op == OP_EC_SIGN && sim_fault_fires(F_ECDSA_MULT_FALSE))
        job->faults |= 1u << F_ECDSA_MULT_FALSE;
    if (sim_fault_fires(F_CB_FAIL))
        job->faults |= 1u << F_CB_FAIL;
    if (sim_fault_fires(F_LOST))
        job->faults |= 1u << F_LOST;

    /* Stable: epoch only changes under the state write lock. */
    job->epoch = in->epoch;
    job->restart_gen = atomic_load(&in->restart_gen);
    long long lat = knob(K_LATENCY_NS);
    job->ready_ns = lat > 0 ? engine_slot(in, (uint64_t)lat) : 0;

    if (knob(K_COMPUTE_MODE) == 1) {
        sim_job_hash(job);
        if (sim_replay_lookup(job)) {
            job->computed = 1;
            ctr_add(C_REPLAY_HITS, 1);
        } else {
            ctr_add(C_REPLAY_MISSES, 1);
        }
    }
    if (job->computed) {
        post_or_delay(job);
    } else {
        job->next = NULL;
        pthread_mutex_lock(&g_wq_mu);
        if (g_wq_tail != NULL)
            g_wq_tail->next = job;
        else
            g_wq_head = job;
        g_wq_tail = job;
        pthread_cond_signal(&g_wq_cv);
        pthread_mutex_unlock(&g_wq_mu);
    }
    return CPA_STATUS_SUCCESS;
}

CpaStatus sim_sync_wait(sim_job *job)
{
    uint64_t deadline = sim_now_ns() + (uint64_t)knob(K_SYNC_TIMEOUT_MS) * 1000000u;
    struct timespec ts = {.tv_sec = (time_t)(deadline / 1000000000u),
                          .tv_nsec = (long)(deadline % 1000000000u)};
    pthread_mutex_lock(&job->smu);
    while (job->sstate == 0) {
        if (pthread_cond_timedwait(&job->scv, &job->smu, &ts) == ETIMEDOUT && job->sstate == 0) {
            /* Whoever completes or discards the job later frees it. */
            job->sstate = 2;
            pthread_mutex_unlock(&job->smu);
            ctr_add(C_SYNC_TIMEOUTS, 1);
            return CPA_STATUS_RESOURCE;
        }
    }
    CpaStatus st = job->status;
    pthread_mutex_unlock(&job->smu);
    sim_job_free(job);
    return st;
}

/* ---- completion --------------------------------------------------------- */

static void deliver(sim_job *job)
{
    inflight_done(job);
    sim_inst *in = job->inst;
    CpaStatus st = job->status;
    if (job->restart_gen != atomic_load(&in->restart_gen))
        st = CPA_STATUS_FAIL; /* pending across a device reset */
    else if (job->faults & (1u << F_CB_FAIL))
        st = CPA_STATUS_FAIL;
    if (st == CPA_STATUS_SUCCESS && qatpy_simmem_recheck(job->ranges, job->nranges) >= 0) {
        atomic_fetch_add_explicit(&g_refused[R_DMA_FREED_INFLIGHT], 1, memory_order_relaxed);
        st = CPA_STATUS_FAIL;
    }
    job->status = st;
    if (job->faults & (1u << F_ECDSA_MULT_FALSE))
        job->flag = CPA_FALSE;
    ctr_add(st == CPA_STATUS_SUCCESS ? C_COMPLETED_SUCCESS : C_COMPLETED_FAIL, 1);
    if (st == CPA_STATUS_SUCCESS && job->op == OP_EC_SIGN && !job->flag)
        ctr_add(C_MULTIPLY_FALSE, 1);
    if (st == CPA_STATUS_SUCCESS && job->op == OP_EC_VERIFY && !job->flag)
        ctr_add(C_VERIFY_FALSE, 1);

    if (job->sync) {
        pthread_mutex_lock(&job->smu);
        if (job->sstate == 2) {
            /* The caller gave up (RESOURCE): the late response is dropped. */
            pthread_mutex_unlock(&job->smu);
            sim_job_free(job);
            return;
        }
        if (st == CPA_STATUS_SUCCESS)
            sim_write_outputs(job);
        if (job->pbool != NULL)
            *job->pbool = st == CPA_STATUS_SUCCESS ? job->flag : CPA_FALSE;
        job->sstate = 1;
        pthread_cond_signal(&job->scv);
        pthread_mutex_unlock(&job->smu);
        return;
    }
    if (st == CPA_STATUS_SUCCESS)
        sim_write_outputs(job);
    CpaBoolean flag = st == CPA_STATUS_SUCCESS ? job->flag : CPA_FALSE;
    switch (job->op) {
    case OP_EC_SIGN:
        ((CpaCyEcdsaSignRSCbFunc)job->cb)(job->tag, st, job->opdata, flag, job->out[0].fb,
                                          job->out[1].fb);
        break;
    case OP_EC_VERIFY:
        ((CpaCyEcdsaVerifyCbFunc)job->cb)(job->tag, st, job->opdata, flag);
        break;
    default:
        ((CpaCyGenFlatBufCbFunc)job->cb)(job->tag, st, job->opdata, job->out[0].fb);
        break;
    }
    sim_job_free(job);
}

CpaStatus icp_sal_CyPollInstance(CpaInstanceHandle instanceHandle, Cpa32U response_quota)
{
    ensure_init();
    if (instanceHandle == NULL)
        return CPA_STATUS_INVALID_PARAM;
    sim_inst *in = sim_resolve(instanceHandle);
    if (in == NULL)
        return CPA_STATUS_INVALID_PARAM;
    if (tl_polling == in) {
        /* The real library self-deadlocks here (non-recursive ring mutex). */
        atomic_fetch_add_explicit(&g_refused[R_POLL_REENTRANT], 1, memory_order_relaxed);
        return CPA_STATUS_FAIL;
    }
    ctr_add(C_POLLS, 1);
    if (sim_fault_fires(F_POLL_FAIL))
        return CPA_STATUS_FAIL;
    Cpa32U quota = response_quota == 0 ? SIM_POLL_CAP : response_quota;

    pthread_mutex_lock(&in->poll_mu);
    sim_inst *prev = tl_polling;
    tl_polling = in;
    pthread_mutex_lock(&in->list_mu);
    sim_job *batch = in->head, *last = NULL;
    Cpa32U n = 0;
    for (sim_job *j = in->head; j != NULL && n < quota; j = j->next) {
        last = j;
        n++;
    }
    if (last != NULL) {
        in->head = last->next;
        if (in->head == NULL)
            in->tail = NULL;
        last->next = NULL;
    } else {
        batch = NULL;
    }
    if (in->mode == CPA_INST_RX_NOTIFY_BY_EVENT && in->efd >= 0) {
        /* The fd is readable exactly while responses wait: drained when the
         * list is empty, re-armed when a quota left some behind. */
        if (in->head == NULL) {
            uint64_t v;
            if (read(in->efd, &v, sizeof(v)) < 0) {
                /* EAGAIN: already not readable. */
            }
        } else {
            efd_signal(in);
        }
    }
    pthread_mutex_unlock(&in->list_mu);

    while (batch != NULL) {
        sim_job *next = batch->next;
        deliver(batch);
        batch = next;
    }
    tl_polling = prev;
    pthread_mutex_unlock(&in->poll_mu);
    if (n > 0)
        return CPA_STATUS_SUCCESS;
    return atomic_load(&in->restarting) ? CPA_STATUS_RESTARTING : CPA_STATUS_RETRY;
}

CpaStatus icp_sal_CyPollAsymRing(CpaInstanceHandle instanceHandle, Cpa32U response_quota)
{
    return icp_sal_CyPollInstance(instanceHandle, response_quota);
}

/* ---- lifecycle ------------------------------------------------------------ */

static void inst_stop(sim_inst *in)
{
    int own_poll = tl_polling == in;
    if (!own_poll)
        pthread_mutex_lock(&in->poll_mu);
    pthread_rwlock_wrlock(&in->state);
    atomic_store(&in->started, 0);
    pthread_mutex_lock(&in->list_mu);
    /* Bumping the epoch makes every response still in a worker or the timer
     * a discard when it arrives: no callback after stop. */
    in->epoch++;
    sim_job *list = in->head, *lost = in->lost;
    in->head = in->tail = in->lost = NULL;
    if (in->efd >= 0) {
        uint64_t v;
        if (read(in->efd, &v, sizeof(v)) < 0) {
        }
    }
    pthread_mutex_unlock(&in->list_mu);
    pthread_rwlock_unlock(&in->state);
    if (!own_poll)
        pthread_mutex_unlock(&in->poll_mu);
    discard_chain(list);
    discard_chain(lost);
}

static int start_threads(void)
{
    g_wq_quit = 0;
    g_tm_quit = 0;
    g_nworkers = 0;
    int nw = (int)knob(K_WORKERS);
    for (int i = 0; i < nw; i++) {
        simbn_ctx *ctx = simbn_ctx_new();
        if (ctx == NULL)
            return -1;
        if (pthread_create(&g_workers[i], NULL, worker_main, ctx) != 0) {
            simbn_ctx_free(ctx);
            return -1;
        }
        g_nworkers++;
    }
    if (pthread_create(&g_timer, NULL, timer_main, NULL) != 0)
        return -1;
    g_timer_running = 1;
    return 0;
}

static void stop_threads(void)
{
    pthread_mutex_lock(&g_wq_mu);
    g_wq_quit = 1;
    pthread_cond_broadcast(&g_wq_cv);
    pthread_mutex_unlock(&g_wq_mu);
    for (int i = 0; i < g_nworkers; i++)
        pthread_join(g_workers[i], NULL);
    g_nworkers = 0;
    pthread_mutex_lock(&g_wq_mu);
    sim_job *rest = g_wq_head;
    g_wq_head = g_wq_tail = NULL;
    pthread_mutex_unlock(&g_wq_mu);
    discard_chain(rest);

    if (g_timer_running) {
        pthread_mutex_lock(&g_tm_mu);
        g_tm_quit = 1;
        pthread_cond_signal(&g_tm_cv);
        pthread_mutex_unlock(&g_tm_mu);
        pthread_join(g_timer, NULL);
    }
    pthread_mutex_lock(&g_tm_mu);
    g_timer_running = 0;
    while (g_heap_n > 0) {
        sim_job *j = heap_pop();
        pthread_mutex_unlock(&g_tm_mu);
        job_discard(j);
        pthread_mutex_lock(&g_tm_mu);
    }
    free(g_heap);
    g_heap = NULL;
    g_heap_cap = 0;
    pthread_mutex_unlock(&g_tm_mu);
}

static void teardown(void)
{
    int n = atomic_load(&g_ninst);
    for (int i = 0; i < n; i++)
        atomic_store(&g_inst[i].live, 0);
    for (int i = 0; i < n; i++)
        inst_stop(&g_inst[i]);
    stop_threads();
    atomic_store(&g_ninst, 0);
    for (int i = 0; i < n; i++) {
        sim_inst *in = &g_inst[i];
        pthread_mutex_lock(&in->list_mu);
        if (in->efd >= 0)
            close(in->efd);
        in->efd = -1;
        in->mode = CPA_INST_RX_NOTIFY_NONE;
        pthread_mutex_unlock(&in->list_mu);
        pthread_mutex_lock(&g_tm_mu);
        in->restart_phase = 0;
        atomic_store(&in->restarting, 0);
        in->notify_cb = NULL;
        in->notify_tag = NULL;
        pthread_mutex_unlock(&g_tm_mu);
        atomic_store(&in->v2p, NULL);
    }
}

CpaStatus icp_sal_userStart(const char *pProcessName)
{
    ensure_init();
    if (pProcessName == NULL || pProcessName[0] == '\0' || strlen(pProcessName) > 127)
        return CPA_STATUS_INVALID_PARAM;
    pthread_mutex_lock(&g_life);
    if (g_refcount > 0 && from_parent())
        fork_reset(); /* a start from a new pid resets the library state first */
    if (g_refcount > 0) {
        CpaStatus st = CPA_STATUS_FAIL;
        if (g_refcount < 64) {
            g_refcount++;
            st = CPA_STATUS_SUCCESS;
        }
        pthread_mutex_unlock(&g_life);
        return st;
    }
    long long fail = knob(K_USER_START_FAIL);
    if (fail == 0 && sim_fault_fires(F_USER_START_FAIL))
        fail = 1;
    if (fail != 0) {
        /* The stderr text a real libqat prints on a host without QAT. */
        if (fail == 2) {
            fprintf(stderr, "No devices found\n");
            fprintf(stderr, "No device found\n");
        } else {
            fprintf(stderr, "Failed to open /dev/vfio for locking: errno=2\n");
        }
        fprintf(stderr, "[error] ADF_IO_PROXY: icp_adf_userProcessToStart: Failed to start %s\n",
                pProcessName);
        pthread_mutex_unlock(&g_life);
        return CPA_STATUS_FAIL;
    }
    if (simbn_init() != 0) {
        fprintf(stderr, "%s\n", simbn_error());
        pthread_mutex_unlock(&g_life);
        return CPA_STATUS_FAIL;
    }
    int n = (int)knob(K_INSTANCES);
    if (sim_fault_fires(F_ZERO_INSTANCES))
        n = 0;
    if (start_threads() != 0) {
        stop_threads();
        pthread_mutex_unlock(&g_life);
        return CPA_STATUS_FAIL;
    }
    int nodes = (int)knob(K_NODES);
    for (int i = 0; i < n; i++) {
        sim_inst *in = &g_inst[i];
        pthread_rwlock_wrlock(&in->state);
        pthread_mutex_lock(&in->list_mu);
        in->epoch++;
        in->head = in->tail = in->lost = NULL;
        in->mode = CPA_INST_RX_NOTIFY_NONE;
        pthread_mutex_unlock(&in->list_mu);
        in->node = (Cpa32U)(i % nodes);
        atomic_store(&in->inflight, 0);
        atomic_store(&in->started, 0);
        atomic_store(&in->v2p, NULL);
        memset(in->eng_free, 0, sizeof(in->eng_free));
        atomic_store(&in->live, 1);
        pthread_rwlock_unlock(&in->state);
    }
    atomic_store(&g_ninst, n);
    g_refcount = 1;
    atomic_store(&g_start_gen, atomic_load(&g_fork_gen));
    ctr_add(C_USER_STARTS, 1);
    pthread_mutex_unlock(&g_life);
    return CPA_STATUS_SUCCESS;
}

CpaStatus icp_sal_userStartMultiProcess(const char *pProcessName, CpaBoolean limitDevAccess)
{
    (void)limitDevAccess;
    return icp_sal_userStart(pProcessName);
}

CpaStatus icp_sal_userStop(void)
{
    ensure_init();
    pthread_mutex_lock(&g_life);
    if (g_refcount > 0 && from_parent())
        fork_reset(); /* the parent's start is not this process's to stop */
    if (g_refcount == 0) {
        pthread_mutex_unlock(&g_life);
        return CPA_STATUS_FAIL;
    }
    if (--g_refcount == 0)
        teardown();
    pthread_mutex_unlock(&g_life);
    return CPA_STATUS_SUCCESS;
}

CpaBoolean icp_sal_userIsQatAvailable(void)
{
    ensure_init();
    return knob(K_QAT_AVAILABLE) ? CPA_TRUE : CPA_FALSE;
}

/* ---- discovery and instance control --------------------------------------- */

static int count_for(CpaAccelerationServiceType type, int *known)
{
    int n = atomic_load(&g_ninst);
    *known = 1;
    switch ((int)type) {
    case CPA_ACC_SVC_TYPE_CRYPTO_ASYM:
        return n;
    case CPA_ACC_SVC_TYPE_CRYPTO:
        return knob(K_INSTANCE_SVC) == CPA_ACC_SVC_TYPE_CRYPTO ? n : 0;
    case CPA_ACC_SVC_TYPE_DATA_COMPRESSION:
    case CPA_ACC_SVC_TYPE_RAID:
    case CPA_ACC_SVC_TYPE_XML:
    case CPA_ACC_SVC_TYPE_PATTERN_MATCH:
    case CPA_ACC_SVC_TYPE_CRYPTO_SYM:
    case CPA_ACC_SVC_TYPE_DATA_DECOMPRESSION:
        return 0;
    default:
        *known = 0;
        return 0;
    }
}

static CpaStatus fill_instances(int avail, Cpa16U num, CpaInstanceHandle *out)
{
    if (out == NULL || num == 0) {
        fprintf(stderr, "Invalid number of instances requested: %u\n", (unsigned)num);
        return CPA_STATUS_INVALID_PARAM;
    }
    if (num > avail) {
        fprintf(stderr, "Only %d instances available\n", avail);
        return CPA_STATUS_RESOURCE;
    }
    for (int i = 0; i < num; i++)
        out[i] = (CpaInstanceHandle)&g_inst[i];
    return CPA_STATUS_SUCCESS;
}

CpaStatus cpaGetNumInstances(const CpaAccelerationServiceType accelerationServiceType,
                             Cpa16U *pNumInstances)
{
    ensure_init();
    int known;
    int n = count_for(accelerationServiceType, &known);
    if (pNumInstances == NULL || !known)
        return CPA_STATUS_INVALID_PARAM;
    *pNumInstances = (Cpa16U)n;
    return CPA_STATUS_SUCCESS;
}

CpaStatus cpaGetInstances(const CpaAccelerationServiceType accelerationServiceType,
                          Cpa16U numInstances, CpaInstanceHandle *cpaInstances)
{
    ensure_init();
    int known;
    int n = count_for(accelerationServiceType, &known);
    if (!known)
        return CPA_STATUS_INVALID_PARAM;
    return fill_instances(n, numInstances, cpaInstances);
}

CpaStatus cpaCyGetNumInstances(Cpa16U *pNumInstances)
{
    ensure_init();
    if (pNumInstances == NULL)
        return CPA_STATUS_INVALID_PARAM;
    *pNumInstances = (Cpa16U)atomic_load(&g_ninst);
    return CPA_STATUS_SUCCESS;
}

CpaStatus cpaCyGetInstances(Cpa16U numInstances, CpaInstanceHandle *cyInstances)
{
    ensure_init();
    return fill_instances(atomic_load(&g_ninst), numInstances, cyInstances);
}

static void put_str(Cpa8U *dst, size_t cap, const char *s)
{
    memset(dst, 0, cap);
    size_t n = strlen(s);
    memcpy(dst, s, n < cap - 1 ? n : cap - 1);
}

CpaStatus cpaCyInstanceGetInfo2(const CpaInstanceHandle instanceHandle,
                                CpaInstanceInfo2 *pInstanceInfo2)
{
    ensure_init();
    sim_inst *in = sim_resolve(instanceHandle);
    if (in == NULL || pInstanceInfo2 == NULL)
        return CPA_STATUS_INVALID_PARAM;
    CpaInstanceInfo2 *p = pInstanceInfo2;
    memset(p, 0, sizeof(*p));
    char buf[CPA_INST_ID_SIZE];
    p->accelerationServiceType = (CpaAccelerationServiceType)knob(K_INSTANCE_SVC);
    put_str(p->vendorName, sizeof(p->vendorName), "qatpy");
    put_str(p->partName, sizeof(p->partName), "simulated QAT (qatpy-sim)");
    put_str(p->swVersion, sizeof(p->swVersion), SIM_VERSION);
    snprintf(buf, sizeof(buf), "SSL_INT_0_%s_%d",
             knob(K_INSTANCE_SVC) == CPA_ACC_SVC_TYPE_CRYPTO ? "cy" : "asym", in->index);
    put_str(p->instName, sizeof(p->instName), buf);
    snprintf(buf, sizeof(buf), "qatpy-sim:%04x:00:%02x.0/%d", in->node, in->index, in->index);
    put_str(p->instID, sizeof(p->instID), buf);
    p->physInstId.packageId = (Cpa16U)in->node;
    p->physInstId.acceleratorId = 0;
    p->physInstId.executionEngineId = (Cpa16U)in->index;
    p->physInstId.busAddress = (Cpa16U)(in->index << 3);
    long cores = sysconf(_SC_NPROCESSORS_CONF);
    for (long c = 0; c < cores && c < 128 * 32; c++)
        p->coreAffinity[c / 32] |= 1u << (c % 32);
    p->nodeAffinity = in->node;
    p->operState = CPA_OPER_STATE_UP;
    p->requiresPhysicallyContiguousMemory = CPA_TRUE;
    p->isPolled = CPA_TRUE;
    p->isOffloaded = CPA_TRUE;
    return CPA_STATUS_SUCCESS;
}

CpaStatus cpaCyQueryCapabilities(const CpaInstanceHandle instanceHandle,
                                 CpaCyCapabilitiesInfo *pCapInfo)
{
    ensure_init();
    if (sim_resolve(instanceHandle) == NULL || pCapInfo == NULL)
        return CPA_STATUS_INVALID_PARAM;
    memset(pCapInfo, 0, sizeof(*pCapInfo));
    pCapInfo->rsaSupported = knob(K_CAP_RSA) ? CPA_TRUE : CPA_FALSE;
    pCapInfo->ecdsaSupported = knob(K_CAP_ECDSA) ? CPA_TRUE : CPA_FALSE;
    return CPA_STATUS_SUCCESS;
}

CpaStatus cpaCySetAddressTranslation(const CpaInstanceHandle instanceHandle,
                                     CpaVirtualToPhysical virtual2Physical)
{
    ensure_init();
    sim_inst *in = sim_resolve(instanceHandle);
    if (in == NULL || virtual2Physical == NULL)
        return CPA_STATUS_INVALID_PARAM;
    atomic_store(&in->v2p, virtual2Physical);
    return CPA_STATUS_SUCCESS;
}

CpaStatus cpaCyStartInstance(CpaInstanceHandle instanceHandle)
{
    ensure_init();
    sim_inst *in = sim_resolve(instanceHandle);
    if (in == NULL)
        return CPA_STATUS_INVALID_PARAM;
    atomic_store(&in->started, 1);
    return CPA_STATUS_SUCCESS;
}

CpaStatus cpaCyStopInstance(CpaInstanceHandle instanceHandle)
{
    ensure_init();
    sim_inst *in = sim_resolve(instanceHandle);
    if (in == NULL)
        return CPA_STATUS_INVALID_PARAM;
    inst_stop(in);
    return CPA_STATUS_SUCCESS;
}

CpaStatus cpaCyGetStatusText(const CpaInstanceHandle instanceHandle, CpaStatus errStatus,
                             Cpa8S *pStatusText)
{
    (void)instanceHandle;
    if (pStatusText == NULL)
        return CPA_STATUS_INVALID_PARAM;
    const char *t;
    switch (errStatus) {
    case CPA_STATUS_SUCCESS: t = "Operation completed successfully."; break;
    case CPA_STATUS_FAIL: t = "Operation failed."; break;
    case CPA_STATUS_RETRY: t = "Resource busy (ring full): poll, then retry."; break;
    case CPA_STATUS_RESOURCE: t = "Out of a resource (or a synchronous request timed out)."; break;
    case CPA_STATUS_INVALID_PARAM: t = "Invalid parameter."; break;
    case CPA_STATUS_FATAL: t = "Fatal error: the device must be restarted."; break;
    case CPA_STATUS_UNSUPPORTED: t = "Operation not supported by this instance."; break;
    case CPA_STATUS_RESTARTING: t = "Device restart in progress: retry later."; break;
    default: return CPA_STATUS_INVALID_PARAM;
    }
    size_t n = strlen(t);
    memcpy(pStatusText, t, n + 1);
    return CPA_STATUS_SUCCESS;
}

CpaStatus cpaCyInstanceSetNotificationCb(const CpaInstanceHandle instanceHandle,
                                         const CpaCyInstanceNotificationCbFunc pInstanceNotificationCb,
                                         void *pCallbackTag)
{
    ensure_init();
    sim_inst *in = sim_resolve(instanceHandle);
    if (in == NULL)
        return CPA_STATUS_INVALID_PARAM;
    pthread_mutex_lock(&g_tm_mu);
    in->notify_cb = pInstanceNotificationCb;
    in->notify_tag = pCallbackTag;
    pthread_mutex_unlock(&g_tm_mu);
    return CPA_STATUS_SUCCESS;
}

CpaStatus cpaInstanceSetResponseMode(const CpaInstanceHandle instanceHandle,
                                     const CpaAccelerationServiceType accelerationServiceType,
                                     const CpaInstanceResponseMode responseMode)
{
    ensure_init();
    sim_inst *in = sim_resolve(instanceHandle);
    if (in == NULL || (long long)accelerationServiceType != knob(K_INSTANCE_SVC) ||
        (responseMode != CPA_INST_RX_NOTIFY_NONE && responseMode != CPA_INST_RX_NOTIFY_BY_EVENT))
        return CPA_STATUS_INVALID_PARAM;
    CpaStatus st = CPA_STATUS_SUCCESS;
    pthread_mutex_lock(&in->list_mu);
    if (atomic_load(&in->inflight) > 0) {
        st = CPA_STATUS_RETRY;
    } else if (responseMode == CPA_INST_RX_NOTIFY_BY_EVENT && in->efd < 0) {
        in->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (in->efd < 0)
            st = CPA_STATUS_RESOURCE;
    }
    if (st == CPA_STATUS_SUCCESS)
        in->mode = (int)responseMode;
    pthread_mutex_unlock(&in->list_mu);
    return st;
}

CpaStatus cpaInstanceGetResponseMode(const CpaInstanceHandle instanceHandle,
                                     const CpaAccelerationServiceType accelerationServiceType,
                                     CpaInstanceResponseMode *pResponseMode)
{
    ensure_init();
    sim_inst *in = sim_resolve(instanceHandle);
    if (in == NULL || pResponseMode == NULL ||
        (long long)accelerationServiceType != knob(K_INSTANCE_SVC))
        return CPA_STATUS_INVALID_PARAM;
    pthread_mutex_lock(&in->list_mu);
    *pResponseMode = (CpaInstanceResponseMode)in->mode;
    pthread_mutex_unlock(&in->list_mu);
    return CPA_STATUS_SUCCESS;
}

CpaStatus icp_sal_CyGetFileDescriptor(CpaInstanceHandle instanceHandle, int *fd)
{
    ensure_init();
    sim_inst *in = sim_resolve(instanceHandle);
    if (in == NULL || fd == NULL)
        return CPA_STATUS_INVALID_PARAM;
    CpaStatus st = CPA_STATUS_SUCCESS;
    pthread_mutex_lock(&in->list_mu);
    if (in->mode != CPA_INST_RX_NOTIFY_BY_EVENT || in->efd < 0) {
        *fd = 0;
        st = CPA_STATUS_UNSUPPORTED;
    } else {
        *fd = in->efd;
    }
    pthread_mutex_unlock(&in->list_mu);
    return st;
}

CpaStatus icp_sal_CyPutFileDescriptor(CpaInstanceHandle instanceHandle, int fd)
{
    ensure_init();
    (void)fd;
    return sim_resolve(instanceHandle) == NULL ? CPA_STATUS_INVALID_PARAM : CPA_STATUS_SUCCESS;
}
