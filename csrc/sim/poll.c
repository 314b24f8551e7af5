/*
 * Delivery: icp_sal_CyPollInstance takes responses from an instance's list,
 * writes the outputs and calls the callbacks on the polling thread (or
 * wakes a sync caller); and icp_sal_userStop's teardown, which discards
 * what is still on the device so that no callback comes after it.
 * cpaCyStopInstance does not stop delivery (instances.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <time.h>
#include <unistd.h>

#include "sim.h"

/* Thread-local: the instance this thread is polling right now (callbacks
 * run inside poll).  Used to refuse re-entrant polls and to let a callback
 * tear the device down (icp_sal_userStop) without self-deadlock. */
static _Thread_local sim_inst *tl_polling;

void sim_poll_atfork_child(void)
{
    tl_polling = NULL;
}

CpaStatus sim_sync_wait(sim_job *job)
{
    uint64_t deadline = sim_now_ns() + (uint64_t)knob(K_SYNC_TIMEOUT_MS) * 1000000u;
    struct timespec ts = {.tv_sec = (time_t)(deadline / 1000000000u),
                          .tv_nsec = (long)(deadline % 1000000000u)};
    pthread_mutex_lock(&job->smu);
    while (job->sstate == SYNC_WAITING) {
        if (pthread_cond_timedwait(&job->scv, &job->smu, &ts) == ETIMEDOUT &&
            job->sstate == SYNC_WAITING) {
            /* Whoever completes or discards the job later frees it. */
            job->sstate = SYNC_ABANDONED;
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

/* ---- completion ------------------------------------------------------- */

static void deliver(sim_job *job)
{
    sim_inflight_done(job);
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
        if (job->sstate == SYNC_ABANDONED) {
            /* The caller gave up (RESOURCE): the late response is dropped. */
            pthread_mutex_unlock(&job->smu);
            sim_job_free(job);
            return;
        }
        if (st == CPA_STATUS_SUCCESS)
            sim_write_outputs(job);
        if (job->pbool != NULL)
            *job->pbool = st == CPA_STATUS_SUCCESS ? job->flag : CPA_FALSE;
        job->sstate = SYNC_DONE;
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
    sim_ensure_init();
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
            sim_efd_signal(in);
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

/* ---- teardown --------------------------------------------------------- */

void sim_inst_teardown(sim_inst *in)
{
    int own_poll = tl_polling == in;
    if (!own_poll)
        pthread_mutex_lock(&in->poll_mu);
    pthread_rwlock_wrlock(&in->state);
    atomic_store(&in->started, 0);
    pthread_mutex_lock(&in->list_mu);
    /* Bumping the epoch makes every response still in a worker or the timer
     * a discard when it arrives: no callback after teardown. */
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
    sim_discard_chain(list);
    sim_discard_chain(lost);
}
