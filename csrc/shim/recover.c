/*
 * Recovering from answers that never come, with the mechanisms qatlib has
 * (qatlib 26.08: sal_user.c, adf_user_device.c, sal_crypto.c):
 *
 *   - cpaCyStopInstance only marks an instance stopped; requests in flight
 *     stay in its rings and keep their slots.  So the shim never stops and
 *     restarts an instance to get slots back.
 *   - icp_sal_check_device(packageId) asks for a device's heartbeat; the
 *     driver restarts a device it finds unresponsive.  The instances are
 *     told through their notification callbacks (instances.c), which qatlib
 *     calls only inside icp_sal_poll_device_events, on the calling thread.
 *     After RESTARTING, the instance is in its error state: its next polls
 *     complete every request still in flight with CPA_STATUS_FAIL.  That
 *     FAIL is what frees a zombie (deadline.c): its late "answer" is
 *     dropped and its slot, bufset and in-flight unit come back
 *     (callbacks.c, counted in recovered_slots).  Requests that were not
 *     zombies yet are sent to the device again (restart_requeued).
 *
 * Who calls what: a poll thread (or qatpy_poll) after each poll, through
 * qps_recover_tick.  A heartbeat check when its instance holds zombies, at
 * most once per QPS_HEARTBEAT_INTERVAL_NS per instance, never on the submit
 * path.  icp_sal_poll_device_events, which is neither thread-safe nor
 * reentrant, by one thread at a time (trylock): every
 * QPS_EVENTS_INTERVAL_NS while a poll thread is awake, every
 * QPS_EVENTS_URGENT_NS while its instance has zombies or is restarting (the
 * poll thread parks with a timeout then, see poller.c), and at once after a
 * failed check or a submit refused with RESTARTING (dispatch.c).
 *
 * Where the heartbeat is UNSUPPORTED (qatlib says so on a VM, or without the
 * driver's heartbeat files, and logs an error line each time), the shim
 * asks once and never again.  Zombies then stay until the device answers or
 * the device restarts for another reason; an instance whose slots are all
 * held by zombies is routed around, and with no usable instance left a
 * submit fails at once (QATPY_ST_UNAVAILABLE, dispatch.c) rather than
 * waiting out its deadline.  The last resort qatlib offers a process,
 * icp_sal_userStop + icp_sal_userStart, is not taken here: it discards
 * every instance and ring of the process under every engine at once, so it
 * is left to the application (closing its last engine stops the device;
 * the next engine starts it afresh).
 */
#include "shim_internal.h"

/* Device events while a poll thread is awake, and while one of its
 * instance's requests is overdue or the instance is restarting. */
#define QPS_EVENTS_INTERVAL_NS 10000000ULL
#define QPS_EVENTS_URGENT_NS 1000000ULL
/* A heartbeat check reads the driver's status (a file, through qatmgr): not
 * for every poll. */
#define QPS_HEARTBEAT_INTERVAL_NS 100000000ULL

bool qps_inst_restarting(const struct qps_inst *inst)
{
    return !atomic_load(&inst->healthy) && !atomic_load(&inst->fatal);
}

/* A forced call that finds another thread inside leaves events_again set;
 * that thread calls once more after it lets go, so an event asked for is
 * never left for a poll thread that may be parked. */
static void poll_events(struct qatpy_device *dev, bool force, uint64_t interval)
{
    if (!qps_lib.icp_sal_poll_device_events)
        return;
    if (force)
        atomic_store(&dev->events_again, 1);
    else if (qps_now_ns() - atomic_load_explicit(&dev->events_last_ns, memory_order_relaxed) <
             interval)
        return;
    while (pthread_mutex_trylock(&dev->events_lock) == 0) {
        atomic_store(&dev->events_again, 0);
        atomic_store_explicit(&dev->events_last_ns, qps_now_ns(), memory_order_relaxed);
        qps_lib.icp_sal_poll_device_events();
        pthread_mutex_unlock(&dev->events_lock);
        if (!atomic_load(&dev->events_again))
            break;
    }
}

void qps_poll_device_events(struct qatpy_device *dev, bool force)
{
    poll_events(dev, force, QPS_EVENTS_INTERVAL_NS);
}

/* The instance holds zombies: is its device alive?  FAIL means the driver
 * restarts it; fetch the RESTARTING notification at once. */
static void heartbeat(struct qps_inst *inst)
{
    struct qatpy_device *dev = inst->dev;
    if (atomic_load_explicit(&dev->hb_unsupported, memory_order_relaxed) || qps_inst_restarting(inst))
        return;
    if (!qps_lib.icp_sal_check_device && !qps_lib.icp_sal_check_all_devices) {
        atomic_store(&dev->hb_unsupported, 1);
        return;
    }
    uint64_t now = qps_now_ns();
    uint64_t next = atomic_load(&inst->hb_next_ns);
    if (now < next ||
        !atomic_compare_exchange_strong(&inst->hb_next_ns, &next, now + QPS_HEARTBEAT_INTERVAL_NS))
        return;
    CpaStatus st = qps_lib.icp_sal_check_device ? qps_lib.icp_sal_check_device(inst->package)
                                                : qps_lib.icp_sal_check_all_devices();
    atomic_fetch_add(&dev->st.heartbeat_checks, 1);
    if (st == CPA_STATUS_UNSUPPORTED) {
        atomic_store(&dev->hb_unsupported, 1);
    } else if (st != CPA_STATUS_SUCCESS) {
        atomic_fetch_add(&dev->st.heartbeat_failures, 1);
        poll_events(dev, true, 0);
    }
}

void qps_recover_tick(struct qps_inst *inst)
{
    bool zombies = atomic_load_explicit(&inst->zombies, memory_order_relaxed) > 0;
    if (zombies)
        heartbeat(inst);
    bool urgent = zombies || qps_inst_restarting(inst);
    poll_events(inst->dev, false, urgent ? QPS_EVENTS_URGENT_NS : QPS_EVENTS_INTERVAL_NS);
}
