/*
 * The request pipeline behind a submit: sim_dispatch (faults, ring space,
 * engine time slot, replay lookup), the worker threads that compute, the
 * latency timer that holds each response until its modeled time, and the
 * hand-over to the instance's response list (or its lost list).  Delivery
 * from the response list is poll.c; reset cycles are heartbeat.c.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "sim.h"

/* worker pool */
static pthread_mutex_t g_wq_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_wq_cv;
static sim_job *g_wq_head, *g_wq_tail;
static int g_wq_quit;
static pthread_t g_workers[64];
static int g_nworkers;

/* latency timer: a min-heap of jobs by ready_ns */
static pthread_mutex_t g_tm_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_tm_cv;
static sim_job **g_heap;
static size_t g_heap_n, g_heap_cap;
static int g_tm_quit;
static pthread_t g_timer;
static int g_timer_running;

static pthread_condattr_t g_mono_attr;

void sim_pipeline_once(void)
{
    pthread_condattr_init(&g_mono_attr);
    pthread_condattr_setclock(&g_mono_attr, CLOCK_MONOTONIC);
    pthread_cond_init(&g_wq_cv, &g_mono_attr);
    pthread_cond_init(&g_tm_cv, &g_mono_attr);
}

void sim_pipeline_reinit_locks(void)
{
    pthread_mutex_init(&g_wq_mu, NULL);
    pthread_mutex_init(&g_tm_mu, NULL);
    pthread_cond_init(&g_wq_cv, &g_mono_attr);
    pthread_cond_init(&g_tm_cv, &g_mono_attr);
}

void sim_pipeline_forget(void)
{
    g_wq_head = g_wq_tail = NULL;
    g_nworkers = 0;
    g_timer_running = 0;
    g_heap = NULL;
    g_heap_n = g_heap_cap = 0;
}

/* ---- job ownership ---------------------------------------------------- */

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

void sim_inflight_done(sim_job *job)
{
    atomic_fetch_sub_explicit(&job->inst->inflight, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&g_inflight, 1, memory_order_relaxed);
}

/* A response that will never be delivered (icp_sal_userStop). */
static void job_discard(sim_job *job)
{
    sim_inflight_done(job);
    ctr_add(C_COMPLETED_DISCARDED, 1);
    if (job->sync) {
        pthread_mutex_lock(&job->smu);
        if (job->sstate == SYNC_ABANDONED) {
            pthread_mutex_unlock(&job->smu);
            sim_job_free(job);
            return;
        }
        job->status = CPA_STATUS_FAIL;
        job->sstate = SYNC_DONE;
        pthread_cond_signal(&job->scv);
        pthread_mutex_unlock(&job->smu);
        return;
    }
    sim_job_free(job);
}

void sim_discard_chain(sim_job *j)
{
    while (j != NULL) {
        sim_job *next = j->next;
        job_discard(j);
        j = next;
    }
}

void sim_efd_signal(sim_inst *in)
{
    uint64_t one = 1;
    if (in->efd >= 0 && write(in->efd, &one, sizeof(one)) < 0) {
        /* EAGAIN means the counter is saturated: still readable. */
    }
}

/* ---- response list, timer heap, workers ------------------------------- */

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
    if ((job->faults & (1u << F_LOST)) &&
        job->restart_gen == atomic_load(&in->restart_gen)) {
        /* The answer never comes: the request keeps its ring slot until a
         * reset's error state fails it (heartbeat.c) or icp_sal_userStop.
         * One that crossed a reset already is failed by it (delivered FAIL). */
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
        sim_efd_signal(in);
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

/* Put job into the hole at i, moving it down below its smaller children. */
static void sift_down(size_t i, sim_job *job)
{
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= g_heap_n)
            break;
        if (c + 1 < g_heap_n && g_heap[c + 1]->ready_ns < g_heap[c]->ready_ns)
            c++;
        if (job->ready_ns <= g_heap[c]->ready_ns)
            break;
        g_heap[i] = g_heap[c];
        i = c;
    }
    g_heap[i] = job;
}

static sim_job *heap_pop(void)
{
    sim_job *top = g_heap[0];
    sim_job *last = g_heap[--g_heap_n];
    if (g_heap_n > 0)
        sift_down(0, last);
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
    /* Named, so a measurement can tell the simulated hardware's CPU from
     * the application's (benchmarks/ssl_handshakes.py). */
    pthread_setname_np(pthread_self(), "qatsim-worker");
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
        if (knob(K_COMPUTE_MODE) == COMPUTE_REPLAY && job->status == CPA_STATUS_SUCCESS)
            sim_replay_insert(job);
        post_or_delay(job);
    }
    simbn_ctx_free(ctx);
    return NULL;
}

/* ---- latency timer ------------------------------------------------------ */

static void *timer_main(void *arg)
{
    (void)arg;
    /* Modeled latency is only as exact as the sleeps: drop the default 50 us
     * timer slack (a "100 us" service time measured 136-169 us with it). */
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    pthread_setname_np(pthread_self(), "qatsim-timer");
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
        if (due != NULL) {
            pthread_mutex_unlock(&g_tm_mu);
            while (due != NULL) {
                sim_job *n = due->next;
                post_job(due);
                due = n;
            }
            pthread_mutex_lock(&g_tm_mu);
            continue;
        }
        if (g_heap_n == 0) {
            pthread_cond_wait(&g_tm_cv, &g_tm_mu);
        } else {
            uint64_t next = g_heap[0]->ready_ns;
            struct timespec ts = {.tv_sec = (time_t)(next / 1000000000u),
                                  .tv_nsec = (long)(next % 1000000000u)};
            pthread_cond_timedwait(&g_tm_cv, &g_tm_mu, &ts);
        }
    }
    pthread_mutex_unlock(&g_tm_mu);
    return NULL;
}

/* ---- a reset's view of the pipeline ------------------------------------- */

/* Restore the heap property of g_heap[0..g_heap_n) after removals. */
static void heap_rebuild(void)
{
    for (size_t k = g_heap_n / 2; k-- > 0;)
        sift_down(k, g_heap[k]);
}

sim_job *sim_pipeline_take(sim_inst *in)
{
    sim_job *out = NULL;
    pthread_mutex_lock(&g_wq_mu);
    sim_job **pp = &g_wq_head;
    g_wq_tail = NULL;
    while (*pp != NULL) {
        sim_job *j = *pp;
        if (j->inst == in) {
            *pp = j->next;
            j->next = out;
            out = j;
        } else {
            g_wq_tail = j;
            pp = &j->next;
        }
    }
    pthread_mutex_unlock(&g_wq_mu);
    pthread_mutex_lock(&g_tm_mu);
    size_t kept = 0;
    for (size_t i = 0; i < g_heap_n; i++) {
        sim_job *j = g_heap[i];
        if (j->inst == in) {
            j->next = out;
            out = j;
        } else {
            g_heap[kept++] = j;
        }
    }
    if (kept != g_heap_n) {
        g_heap_n = kept;
        heap_rebuild();
    }
    pthread_mutex_unlock(&g_tm_mu);
    return out;
}

uint64_t sim_pipeline_oldest(sim_inst *in)
{
    uint64_t oldest = UINT64_MAX;
    pthread_mutex_lock(&g_wq_mu);
    for (sim_job *j = g_wq_head; j != NULL; j = j->next)
        if (j->inst == in && j->submit_ns < oldest)
            oldest = j->submit_ns;
    pthread_mutex_unlock(&g_wq_mu);
    pthread_mutex_lock(&g_tm_mu);
    for (size_t i = 0; i < g_heap_n; i++)
        if (g_heap[i]->inst == in && g_heap[i]->submit_ns < oldest)
            oldest = g_heap[i]->submit_ns;
    pthread_mutex_unlock(&g_tm_mu);
    return oldest;
}

/* ---- submit side ------------------------------------------------------ */

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
    if (sim_job_fault_fires(job, F_RESTART)) {
        sim_begin_restart(in);
        st = CPA_STATUS_RESTARTING;
    } else if (sim_job_fault_fires(job, F_SUBMIT_RETRY)) {
        ctr_add(C_RETRY_RETURNED, 1);
        st = CPA_STATUS_RETRY;
    } else if (sim_job_fault_fires(job, F_SUBMIT_FAIL)) {
        st = CPA_STATUS_FAIL;
    } else if (sim_job_fault_fires(job, F_SUBMIT_RESTARTING)) {
        st = CPA_STATUS_RESTARTING;
    } else if (sim_job_fault_fires(job, F_SUBMIT_UNSUPPORTED)) {
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
        sim_job_fault_fires(job, F_RSA_BITFLIP))
        job->faults |= 1u << F_RSA_BITFLIP;
    if (job->op == OP_EC_SIGN && sim_job_fault_fires(job, F_ECDSA_MULT_FALSE))
        job->faults |= 1u << F_ECDSA_MULT_FALSE;
    if (job->op == OP_EC_SIGN && sim_job_fault_fires(job, F_ECDSA_BITFLIP))
        job->faults |= 1u << F_ECDSA_BITFLIP;
    if (sim_job_fault_fires(job, F_CB_FAIL))
        job->faults |= 1u << F_CB_FAIL;
    if (sim_job_fault_fires(job, F_LOST))
        job->faults |= 1u << F_LOST;

    /* Stable: epoch only changes under the state write lock. */
    job->epoch = in->epoch;
    job->submit_ns = sim_now_ns();
    job->restart_gen = atomic_load(&in->restart_gen);
    long long lat = knob(K_LATENCY_NS);
    job->ready_ns = lat > 0 ? engine_slot(in, (uint64_t)lat) : 0;

    if (knob(K_COMPUTE_MODE) == COMPUTE_REPLAY) {
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

/* ---- worker and timer threads ----------------------------------------- */

int sim_pipeline_start(void)
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

void sim_pipeline_stop(void)
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
    sim_discard_chain(rest);

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
