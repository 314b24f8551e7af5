/*
 * What can be changed or read while a device is open: poll mode and delay
 * (device-wide: one set of poll threads serves every engine), and the
 * statistics.  Verify-after-sign and deadlines are per engine (key.c).
 */
#include <string.h>

#include "shim_internal.h"

int qatpy_device_set_poll(qatpy_device *dev, int poll_mode, uint64_t poll_delay_ns)
{
    if (!dev || poll_mode < QATPY_POLL_TIMER || poll_mode > QATPY_POLL_MANUAL ||
        poll_delay_ns > QPS_MAX_POLL_DELAY_NS)
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
    /* Requests a loop polls for were set up for the old mode (its timer or
     * its event fds): the poll threads take them (woken below). */
    if (atomic_load(&dev->driven))
        atomic_store(&dev->drive_handed, 1);
    int rc = QATPY_OK;
    if (eff != QATPY_POLL_MANUAL && !dev->threads_started) {
        atomic_store(&dev->stop_threads, 0);
        rc = qps_start_threads(dev, NULL, 0);
        if (rc != QATPY_OK) {
            qps_stop_threads(dev);
            atomic_store(&dev->stop_threads, 0);
            dev->threads_started = false;
            atomic_store(&dev->poll_mode, QATPY_POLL_MANUAL);
        }
    }
    qps_wake_all(dev);
    pthread_mutex_unlock(&dev->state_lock);
    return rc;
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
    out->ecdsa_checks = atomic_load(&c->ecdsa_checks);
    out->driven = atomic_load(&c->driven);
    out->drive_handovers = atomic_load(&c->drive_handovers);
    out->timeouts = atomic_load(&c->timeouts);
    out->late_answers = atomic_load(&c->late_answers);
    out->poller_moves = atomic_load(&c->poller_moves);
    out->heartbeat_checks = atomic_load(&c->heartbeat_checks);
    out->heartbeat_failures = atomic_load(&c->heartbeat_failures);
    out->instance_restarts = atomic_load(&c->instance_restarts);
    out->recovered_slots = atomic_load(&c->recovered_slots);
    out->restart_requeued = atomic_load(&c->restart_requeued);
    out->fast_fails = atomic_load(&c->fast_fails);
    out->heartbeat_unsupported = (uint32_t)atomic_load(&dev->hb_unsupported);
    uint32_t unhealthy = 0;
    if (!qps_forked(dev) && dev->inst)
        for (uint32_t i = 0; i < dev->ninst; i++)
            unhealthy += qatpy_instance_healthy(dev, i) == 0;
    out->unhealthy_instances = unhealthy;
}
