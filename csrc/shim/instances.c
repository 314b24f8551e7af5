/*
 * Instances: discovery (asym instances, else cy instances with RSA and
 * ECDSA), start, each instance's DMA (curve constants, request buffer pool),
 * event mode, the RESTARTING / RESTARTED notification, stop, and health.
 */
#include <stdlib.h>
#include <string.h>

#include "shim_internal.h"

/* ---- instance notification (RESTARTING / RESTARTED) --------------------- */

/* qatlib calls this only from inside icp_sal_poll_device_events, on the
 * thread that called it (recover.c). */
static void notify_cb(const CpaInstanceHandle h, void *tag, const CpaInstanceEvent ev)
{
    (void)h;
    struct qps_inst *inst = tag;
    switch (ev) {
    case CPA_INSTANCE_EVENT_RESTARTING:
        atomic_store(&inst->healthy, 0);
        break;
    case CPA_INSTANCE_EVENT_RESTARTED:
        atomic_fetch_add(&inst->dev->st.instance_restarts, 1);
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
                     qps_status_name(st));
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

void qps_setup_event_mode(struct qatpy_device *dev)
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

void qps_stop_instances(struct qatpy_device *dev)
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

/* ---- open / free -------------------------------------------------------- */

/* Per instance, in this order: cpaCyStartInstance, cpaCySetAddressTranslation,
 * cpaCyInstanceGetInfo2 (node), notification callback, DMA on the node.  On
 * failure the caller unwinds (qps_stop_instances, qps_instances_free). */
int qps_instances_open(struct qatpy_device *dev, uint32_t max_instances, char *err,
                       size_t errlen)
{
    CpaStatus st;
    int rc;

    CpaInstanceHandle *handles = NULL;
    CpaAccelerationServiceType *svcs = NULL;
    uint32_t n = 0;
    rc = find_instances(dev, max_instances, &handles, &svcs, &n, err, errlen);
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
                     i, (int)st, qps_status_name(st));
            return QATPY_ERR_INSTANCE;
        }
        inst->started = true;
        st = qps_lib.cpaCySetAddressTranslation(inst->h, qps_lib.qaeVirtToPhysNUMA);
        if (st != CPA_STATUS_SUCCESS) {
            qps_errf(err, errlen,
                     "cpaCySetAddressTranslation failed on instance %u (%d %s); hint: libusdm "
                     "and libqat must come from the same qatlib install",
                     i, (int)st, qps_status_name(st));
            return QATPY_ERR_INSTANCE;
        }
        CpaInstanceInfo2 info;
        memset(&info, 0, sizeof info);
        st = qps_lib.cpaCyInstanceGetInfo2(inst->h, &info);
        if (st != CPA_STATUS_SUCCESS) {
            qps_errf(err, errlen, "cpaCyInstanceGetInfo2 failed on instance %u (%d %s)", i,
                     (int)st, qps_status_name(st));
            return QATPY_ERR_INSTANCE;
        }
        /* nodeAffinity is a small NUMA node number; anything odd -> any node. */
        inst->node = info.nodeAffinity < 4096 ? (int)info.nodeAffinity : NUMA_ANY_NODE;
        inst->package = info.physInstId.packageId;
        if (qps_lib.cpaCyInstanceSetNotificationCb)
            qps_lib.cpaCyInstanceSetNotificationCb(inst->h, notify_cb, inst);
        rc = inst_alloc_dma(dev, inst, err, errlen);
        if (rc != QATPY_OK)
            return rc;
    }
    return QATPY_OK;
}

/* The device must be stopped (no thread, no started instance). */
void qps_instances_free(struct qatpy_device *dev)
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
}

int qatpy_instance_healthy(qatpy_device *dev, uint32_t index)
{
    if (!dev || qps_forked(dev) || !dev->inst || index >= dev->ninst)
        return -1;
    struct qps_inst *inst = &dev->inst[index];
    return atomic_load(&inst->healthy) && !atomic_load(&inst->fatal) &&
           !atomic_load(&inst->timed_out);
}
