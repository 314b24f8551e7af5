/*
 * The simulated device's process-wide life: icp_sal_userStart / Stop, the
 * instance table, one-time initialisation, and fork.  See sim.h for the
 * request pipeline and the lock order.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "sim.h"

sim_inst g_inst[SIM_MAX_INSTANCES];
atomic_int g_ninst;

static pthread_mutex_t g_life = PTHREAD_MUTEX_INITIALIZER;
static int g_refcount;
static pthread_once_t g_inst_once = PTHREAD_ONCE_INIT;

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
    sim_pipeline_once();
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
    sim_pipeline_reinit_locks();
    sim_heartbeat_reinit_locks();
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
    sim_poll_atfork_child();
    if (pthread_once(&g_inst_once, inst_once) == 0)
        init_locks();
    sim_replay_atfork_child();
}

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, atfork_child);
}

static pthread_once_t g_atfork_once = PTHREAD_ONCE_INIT;

void sim_ensure_init(void)
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
        in->restart_phase = RESTART_NONE;
        in->notify_cb = NULL;
        in->notify_tag = NULL;
    }
    atomic_store(&g_ninst, 0);
    sim_pipeline_forget();
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

/* ---- start / stop ----------------------------------------------------- */

static void teardown(void)
{
    int n = atomic_load(&g_ninst);
    for (int i = 0; i < n; i++)
        atomic_store(&g_inst[i].live, 0);
    for (int i = 0; i < n; i++)
        sim_inst_teardown(&g_inst[i]);
    sim_pipeline_stop();
    atomic_store(&g_ninst, 0);
    for (int i = 0; i < n; i++) {
        sim_inst *in = &g_inst[i];
        pthread_mutex_lock(&in->list_mu);
        if (in->efd >= 0)
            close(in->efd);
        in->efd = -1;
        in->mode = CPA_INST_RX_NOTIFY_NONE;
        pthread_mutex_unlock(&in->list_mu);
        sim_reset_lock();
        in->restart_phase = RESTART_NONE;
        atomic_store(&in->restarting, 0);
        in->notify_cb = NULL;
        in->notify_tag = NULL;
        sim_reset_unlock();
        atomic_store(&in->v2p, NULL);
    }
}

CpaStatus icp_sal_userStart(const char *pProcessName)
{
    sim_ensure_init();
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
    if (fail == START_OK && sim_fault_fires(F_USER_START_FAIL))
        fail = START_FAIL_NO_VFIO;
    if (fail != START_OK) {
        /* The stderr text a real libqat prints on a host without QAT. */
        if (fail == START_FAIL_NO_DEVICES) {
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
    if (sim_pipeline_start() != 0) {
        sim_pipeline_stop();
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
    sim_ensure_init();
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
    sim_ensure_init();
    return knob(K_QAT_AVAILABLE) ? CPA_TRUE : CPA_FALSE;
}
