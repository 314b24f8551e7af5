/*
 * Device resets the way qatlib 26.08 runs them (its sal_user.c,
 * adf_user_device.c, sal_crypto.c): icp_sal_check_device /
 * icp_sal_check_all_devices ask for a device's heartbeat and, when it is
 * unresponsive, the driver restarts it; the instances learn of it through
 * their notification callbacks, which run only inside
 * icp_sal_poll_device_events, on the thread that calls it.
 *
 * One reset cycle of an instance:
 *   begin (a failed check, fault.restart, qatpy_sim_restart_instance):
 *     submits get RESTARTING; a poll that delivers nothing says RESTARTING.
 *   icp_sal_poll_device_events: RESTARTING is delivered and the instance
 *     enters its error state: every request still in flight -- answered or
 *     not, lost ones included -- completes with CPA_STATUS_FAIL at the next
 *     polls (callbacks only from a poll, as always), which frees its ring slot.
 *   icp_sal_poll_device_events, once restart_ms passed and nothing is in
 *     flight any more: RESTARTED; submits are accepted again.
 * A caller that never calls icp_sal_poll_device_events never sees its
 * instance come back, as with qatlib.
 *
 * "Unresponsive" here: an instance of the package holds a request it has
 * not answered (waiting for a worker, held by the latency timer, or lost)
 * for heartbeat_overdue_ms or longer.  Requests a worker is computing at the
 * moment of the check are not looked at.
 */
#define _GNU_SOURCE
#include <errno.h>

#include "sim.h"

static pthread_mutex_t g_reset_mu = PTHREAD_MUTEX_INITIALIZER;
/* icp_sal_poll_device_events is neither thread-safe nor reentrant in qatlib. */
static pthread_mutex_t g_events_mu = PTHREAD_MUTEX_INITIALIZER;

void sim_reset_lock(void)
{
    pthread_mutex_lock(&g_reset_mu);
}

void sim_reset_unlock(void)
{
    pthread_mutex_unlock(&g_reset_mu);
}

void sim_heartbeat_reinit_locks(void)
{
    pthread_mutex_init(&g_reset_mu, NULL);
    pthread_mutex_init(&g_events_mu, NULL);
}

int sim_begin_restart(sim_inst *in)
{
    int rc = -1;
    pthread_mutex_lock(&g_reset_mu);
    if (atomic_load(&in->live) && !atomic_load(&in->restarting)) {
        atomic_store(&in->restarting, 1);
        /* Responses of earlier requests now complete FAIL (poll.c deliver). */
        atomic_fetch_add(&in->restart_gen, 1);
        in->restart_phase = RESTART_ANNOUNCE;
        in->restart_until = sim_now_ns() + (uint64_t)knob(K_RESTART_MS) * 1000000u;
        ctr_add(C_RESTARTS, 1);
        rc = 0;
    }
    pthread_mutex_unlock(&g_reset_mu);
    return rc;
}

int qatpy_sim_restart_instance(int index)
{
    sim_ensure_init();
    if (index < 0 || index >= SIM_MAX_INSTANCES)
        return -1;
    sim_inst *in = sim_resolve((CpaInstanceHandle)&g_inst[index]);
    return in == NULL ? -1 : sim_begin_restart(in);
}

/* ---- error state -------------------------------------------------------- */

/* Every request of `in` still on the device goes to its response list, to
 * be delivered FAIL by the next polls (their restart_gen is older than the
 * instance's).  A worker computing one right now posts it there itself. */
static void fail_inflight(sim_inst *in)
{
    sim_job *chain = sim_pipeline_take(in);
    pthread_mutex_lock(&in->list_mu);
    while (in->lost != NULL) {
        sim_job *j = in->lost;
        in->lost = j->next;
        j->next = chain;
        chain = j;
    }
    int was_empty = in->head == NULL;
    while (chain != NULL) {
        sim_job *j = chain;
        chain = j->next;
        j->next = NULL;
        if (in->tail != NULL)
            in->tail->next = j;
        else
            in->head = j;
        in->tail = j;
    }
    if (was_empty && in->head != NULL && in->mode == CPA_INST_RX_NOTIFY_BY_EVENT)
        sim_efd_signal(in);
    pthread_mutex_unlock(&in->list_mu);
}

/* ---- device events ------------------------------------------------------ */

typedef struct {
    sim_inst *inst;
    CpaCyInstanceNotificationCbFunc cb;
    void *tag;
    CpaInstanceEvent ev;
} sim_note;

CpaStatus icp_sal_poll_device_events(void)
{
    sim_ensure_init();
    if (pthread_mutex_trylock(&g_events_mu) != 0) {
        /* Another thread is inside, or a notification callback called us. */
        atomic_fetch_add_explicit(&g_refused[R_EVENTS_REENTRANT], 1, memory_order_relaxed);
        return CPA_STATUS_FAIL;
    }
    ctr_add(C_EVENT_POLLS, 1);
    sim_note notes[SIM_MAX_INSTANCES];
    sim_inst *failing[SIM_MAX_INSTANCES];
    int nn = 0, nf = 0;
    uint64_t now = sim_now_ns();
    /* The life lock keeps icp_sal_userStop out while jobs move; it is let go
     * before the callbacks, which may call anything (even userStop). */
    sim_life_lock();
    int ninst = atomic_load(&g_ninst);
    pthread_mutex_lock(&g_reset_mu);
    for (int i = 0; i < ninst; i++) {
        sim_inst *in = &g_inst[i];
        if (!atomic_load(&in->live))
            continue;
        if (in->restart_phase == RESTART_ANNOUNCE) {
            in->restart_phase = RESTART_UNDERWAY;
            failing[nf++] = in;
            notes[nn++] = (sim_note){in, in->notify_cb, in->notify_tag, CPA_INSTANCE_EVENT_RESTARTING};
        } else if (in->restart_phase == RESTART_UNDERWAY && now >= in->restart_until &&
                   atomic_load(&in->inflight) == 0) {
            in->restart_phase = RESTART_NONE;
            atomic_store(&in->restarting, 0);
            notes[nn++] = (sim_note){in, in->notify_cb, in->notify_tag, CPA_INSTANCE_EVENT_RESTARTED};
        }
    }
    pthread_mutex_unlock(&g_reset_mu);
    for (int i = 0; i < nf; i++)
        fail_inflight(failing[i]);
    sim_life_unlock();
    for (int i = 0; i < nn; i++) {
        ctr_add(notes[i].ev == CPA_INSTANCE_EVENT_RESTARTING ? C_NOTIFY_RESTARTING
                                                              : C_NOTIFY_RESTARTED, 1);
        if (notes[i].cb != NULL)
            notes[i].cb((CpaInstanceHandle)notes[i].inst, notes[i].tag, notes[i].ev);
    }
    pthread_mutex_unlock(&g_events_mu);
    return CPA_STATUS_SUCCESS;
}

/* ---- heartbeat ---------------------------------------------------------- */

/* Earliest submit time of a request `in` has not answered, UINT64_MAX if none. */
static uint64_t oldest_unanswered(sim_inst *in)
{
    uint64_t oldest = sim_pipeline_oldest(in);
    pthread_mutex_lock(&in->list_mu);
    for (sim_job *j = in->lost; j != NULL; j = j->next)
        if (j->submit_ns < oldest)
            oldest = j->submit_ns;
    pthread_mutex_unlock(&in->list_mu);
    return oldest;
}

/* One package: SUCCESS alive, FAIL unresponsive (its instances begin a reset
 * cycle) or no such package. */
static CpaStatus check_package(Cpa32U package)
{
    int ninst = atomic_load(&g_ninst);
    int found = 0, overdue = 0;
    uint64_t now = sim_now_ns();
    uint64_t limit = (uint64_t)knob(K_HEARTBEAT_OVERDUE_MS) * 1000000u;
    for (int i = 0; i < ninst; i++) {
        sim_inst *in = &g_inst[i];
        if (!atomic_load(&in->live) || in->node != package)
            continue;
        found = 1;
        if (atomic_load(&in->restarting))
            continue; /* already being reset */
        uint64_t oldest = oldest_unanswered(in);
        if (oldest != UINT64_MAX && now - oldest >= limit)
            overdue = 1;
    }
    if (!found)
        return CPA_STATUS_FAIL;
    if (!overdue)
        return CPA_STATUS_SUCCESS;
    ctr_add(C_HB_FAILURES, 1);
    for (int i = 0; i < ninst; i++) {
        sim_inst *in = &g_inst[i];
        if (atomic_load(&in->live) && in->node == package)
            sim_begin_restart(in);
    }
    return CPA_STATUS_FAIL;
}

/* The heartbeat knob off: what qatlib returns on a VM or without the
 * driver's heartbeat files (it also logs an error line per call). */
static int heartbeat_unsupported(void)
{
    ctr_add(C_HB_CHECKS, 1);
    if (knob(K_HEARTBEAT))
        return 0;
    ctr_add(C_HB_UNSUPPORTED, 1);
    return 1;
}

CpaStatus icp_sal_check_device(Cpa32U packageId)
{
    sim_ensure_init();
    if (heartbeat_unsupported())
        return CPA_STATUS_UNSUPPORTED;
    sim_life_lock();
    CpaStatus st = sim_is_started() ? check_package(packageId) : CPA_STATUS_FAIL;
    sim_life_unlock();
    return st;
}

CpaStatus icp_sal_check_all_devices(void)
{
    sim_ensure_init();
    if (heartbeat_unsupported())
        return CPA_STATUS_UNSUPPORTED;
    sim_life_lock();
    CpaStatus st = CPA_STATUS_FAIL;
    if (sim_is_started() && atomic_load(&g_ninst) > 0) {
        /* Packages are the NUMA nodes in use: instance i is on node i % nodes. */
        int n = atomic_load(&g_ninst);
        int packages = (int)knob(K_NODES) < n ? (int)knob(K_NODES) : n;
        st = CPA_STATUS_SUCCESS;
        for (int p = 0; p < packages; p++)
            if (check_package((Cpa32U)p) != CPA_STATUS_SUCCESS)
                st = CPA_STATUS_FAIL;
    }
    sim_life_unlock();
    return st;
}
