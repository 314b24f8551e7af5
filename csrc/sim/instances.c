/*
 * Instance discovery and control: cpa(Cy)GetNumInstances / GetInstances,
 * GetInfo2, capabilities, address translation, start / stop, status text,
 * the notification callback, response mode and the event fd.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "sim.h"

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
    sim_ensure_init();
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
    sim_ensure_init();
    int known;
    int n = count_for(accelerationServiceType, &known);
    if (!known)
        return CPA_STATUS_INVALID_PARAM;
    return fill_instances(n, numInstances, cpaInstances);
}

CpaStatus cpaCyGetNumInstances(Cpa16U *pNumInstances)
{
    sim_ensure_init();
    if (pNumInstances == NULL)
        return CPA_STATUS_INVALID_PARAM;
    *pNumInstances = (Cpa16U)atomic_load(&g_ninst);
    return CPA_STATUS_SUCCESS;
}

CpaStatus cpaCyGetInstances(Cpa16U numInstances, CpaInstanceHandle *cyInstances)
{
    sim_ensure_init();
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
    sim_ensure_init();
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
    sim_ensure_init();
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
    sim_ensure_init();
    sim_inst *in = sim_resolve(instanceHandle);
    if (in == NULL || virtual2Physical == NULL)
        return CPA_STATUS_INVALID_PARAM;
    atomic_store(&in->v2p, virtual2Physical);
    return CPA_STATUS_SUCCESS;
}

CpaStatus cpaCyStartInstance(CpaInstanceHandle instanceHandle)
{
    sim_ensure_init();
    sim_inst *in = sim_resolve(instanceHandle);
    if (in == NULL)
        return CPA_STATUS_INVALID_PARAM;
    atomic_store(&in->started, 1);
    return CPA_STATUS_SUCCESS;
}

CpaStatus cpaCyStopInstance(CpaInstanceHandle instanceHandle)
{
    sim_ensure_init();
    sim_inst *in = sim_resolve(instanceHandle);
    if (in == NULL)
        return CPA_STATUS_INVALID_PARAM;
    /* Like qatlib 26.08 (sal_crypto.c): only the started flag.  Requests in
     * flight stay on the device and keep their ring slots (a lost one for
     * good, until a reset or icp_sal_userStop), and a poll still delivers
     * whatever answers come, stopped or not -- whatever qatlib's header
     * promises about callbacks after stop. */
    pthread_rwlock_wrlock(&in->state);
    atomic_store(&in->started, 0);
    pthread_rwlock_unlock(&in->state);
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
    sim_ensure_init();
    sim_inst *in = sim_resolve(instanceHandle);
    if (in == NULL)
        return CPA_STATUS_INVALID_PARAM;
    sim_reset_lock();
    in->notify_cb = pInstanceNotificationCb;
    in->notify_tag = pCallbackTag;
    sim_reset_unlock();
    return CPA_STATUS_SUCCESS;
}

CpaStatus cpaInstanceSetResponseMode(const CpaInstanceHandle instanceHandle,
                                     const CpaAccelerationServiceType accelerationServiceType,
                                     const CpaInstanceResponseMode responseMode)
{
    sim_ensure_init();
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
        in->mode = responseMode;
    pthread_mutex_unlock(&in->list_mu);
    return st;
}

CpaStatus cpaInstanceGetResponseMode(const CpaInstanceHandle instanceHandle,
                                     const CpaAccelerationServiceType accelerationServiceType,
                                     CpaInstanceResponseMode *pResponseMode)
{
    sim_ensure_init();
    sim_inst *in = sim_resolve(instanceHandle);
    if (in == NULL || pResponseMode == NULL ||
        (long long)accelerationServiceType != knob(K_INSTANCE_SVC))
        return CPA_STATUS_INVALID_PARAM;
    pthread_mutex_lock(&in->list_mu);
    *pResponseMode = in->mode;
    pthread_mutex_unlock(&in->list_mu);
    return CPA_STATUS_SUCCESS;
}

CpaStatus icp_sal_CyGetFileDescriptor(CpaInstanceHandle instanceHandle, int *fd)
{
    sim_ensure_init();
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
    sim_ensure_init();
    (void)fd;
    return sim_resolve(instanceHandle) == NULL ? CPA_STATUS_INVALID_PARAM : CPA_STATUS_SUCCESS;
}
