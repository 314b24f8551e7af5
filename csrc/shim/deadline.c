/*
 * Deadlines and zombies.  A request with a deadline is linked into its
 * instance's deadline list while it is on the device; the checker completes
 * the ones past due as TIMEOUT.  One that was still on the device becomes a
 * zombie: it keeps its slot and DMA until the device answers or the
 * instance stops, and the last of its two holds frees the slot.
 */
#include "shim_internal.h"

/* Both under inst->lock. */
void qps_dl_link(struct qps_inst *inst, struct qps_req *req)
{
    req->dl_next = NULL;
    req->dl_prev = inst->dl_tail;
    if (inst->dl_tail)
        inst->dl_tail->dl_next = req;
    else
        inst->dl_head = req;
    inst->dl_tail = req;
    req->dl_linked = true;
    if (req->deadline < atomic_load_explicit(&inst->next_deadline, memory_order_relaxed))
        atomic_store(&inst->next_deadline, req->deadline);
}

void qps_dl_unlink(struct qps_inst *inst, struct qps_req *req)
{
    if (req->dl_prev)
        req->dl_prev->dl_next = req->dl_next;
    else
        inst->dl_head = req->dl_next;
    if (req->dl_next)
        req->dl_next->dl_prev = req->dl_prev;
    else
        inst->dl_tail = req->dl_prev;
    req->dl_prev = req->dl_next = NULL;
    req->dl_linked = false;
}

/*
 * Runs on the instance's poller after each poll (and in qatpy_poll), so it
 * costs one atomic load while nothing is due.  The list holds at most the
 * instance's in-flight cap, so a scan is short.  A request the checker
 * claims becomes a zombie: TIMEOUT goes to the ring now; the slot, bufset,
 * in-flight unit and key reference stay until the device answers (dropped,
 * counted in late_answers) or the instance stops.  The instance is marked
 * timed_out (routed around) until any answer or a RESTARTED notification.
 */
uint32_t qps_check_deadlines(struct qps_inst *inst)
{
    uint64_t due = atomic_load_explicit(&inst->next_deadline, memory_order_relaxed);
    if (due == UINT64_MAX)
        return 0;
    uint64_t now = qps_now_ns();
    if (now < due)
        return 0;
    struct qatpy_device *dev = inst->dev;
    struct qps_req *expired = NULL, **tail = &expired;
    uint32_t n = 0;
    uint64_t next = UINT64_MAX;
    pthread_mutex_lock(&inst->lock);
    for (struct qps_req *r = inst->dl_head, *nx; r; r = nx) {
        nx = r->dl_next;
        if (now >= r->deadline) {
            atomic_store(&r->holds, 2);
            int open = QPS_CLAIM_OPEN;
            if (atomic_compare_exchange_strong(&r->claim, &open, QPS_CLAIM_TIMEDOUT)) {
                qps_dl_unlink(inst, r);
                *tail = r;
                tail = &r->dl_next;
                n++;
                continue;
            }
            /* Being answered right now: flush will unlink it. */
        }
        if (r->deadline < next)
            next = r->deadline;
    }
    atomic_store(&inst->next_deadline, next);
    if (n) {
        /* Under the lock: a late answer decrements only after it took the lock. */
        atomic_fetch_add(&inst->zombies, n);
        atomic_fetch_add(&dev->zombies_total, n);
        atomic_store(&inst->last_fail_ns, now);
        atomic_store(&inst->timed_out, 1);
    }
    pthread_mutex_unlock(&inst->lock);
    if (n)
        qps_ring_push_timeouts(dev, expired, n);
    return n;
}

/* ---- zombies ------------------------------------------------------------ */

/* Drop one of a zombie's two holds; the last one frees the slot. */
void qps_zombie_release(struct qatpy_device *dev, struct qps_req *req)
{
    if (atomic_fetch_sub(&req->holds, 1) != 1)
        return;
    struct qatpy_key *key = req->key;
    req->key = NULL;
    if (key)
        qps_key_unref(key);
    qps_slot_free_many(dev, &req, 1);
}

void qps_zombie_gone(struct qps_inst *inst, struct qps_req *req)
{
    atomic_fetch_sub(&inst->zombies, 1);
    atomic_fetch_sub(&inst->dev->zombies_total, 1);
    qps_zombie_release(inst->dev, req);
}
