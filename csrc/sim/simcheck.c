/*
 * Stand-alone driver for the simulated device, for sanitizer builds: runs
 * every pipeline path (async, sync, sync timeout, latency timer, lost
 * response, stop that keeps it, heartbeat reset that frees it, restart
 * cycle, event mode, replay, teardown with work still queued, fork) without
 * Python in the process, so LeakSanitizer's report is about the device
 * alone.  Exit status 0 = all checks held.
 *
 *   python csrc/sim/build.py --asan --out /tmp/simasan --check
 */
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../qat_abi.h"
#include "nistcurves.h"
#include "qatpy_sim.h"
#include "simbn.h" /* SIMBN_P256: which nistcurves.h entry */

#define CHECK(cond)                                                                \
    do {                                                                           \
        if (!(cond)) {                                                             \
            fprintf(stderr, "simcheck: %s:%d: check failed: %s\n", __FILE__,      \
                    __LINE__, #cond);                                              \
            exit(1);                                                               \
        }                                                                          \
    } while (0)

static atomic_int g_done;
static atomic_int g_fail;
static atomic_int g_events;

static void rsa_cb(void *tag, CpaStatus st, void *op, CpaFlatBuffer *out)
{
    (void)tag, (void)op, (void)out;
    if (st != CPA_STATUS_SUCCESS)
        atomic_fetch_add(&g_fail, 1);
    atomic_fetch_add(&g_done, 1);
}

static void sign_cb(void *tag, CpaStatus st, void *op, CpaBoolean ok, CpaFlatBuffer *r, CpaFlatBuffer *s)
{
    (void)tag, (void)op, (void)r, (void)s;
    if (st != CPA_STATUS_SUCCESS || !ok)
        atomic_fetch_add(&g_fail, 1);
    atomic_fetch_add(&g_done, 1);
}

static void notify_cb(const CpaInstanceHandle h, void *tag, const CpaInstanceEvent ev)
{
    (void)h, (void)tag, (void)ev;
    atomic_fetch_add(&g_events, 1);
}

static long long get(const char *name)
{
    long long v = -1;
    CHECK(qatpy_sim_get(name, &v) == 0);
    return v;
}

static void set(const char *name, long long v)
{
    CHECK(qatpy_sim_set(name, v) == 0);
}

static CpaFlatBuffer dma(size_t len, unsigned char fill)
{
    CpaFlatBuffer fb = {(Cpa32U)len, qaeMemAllocNUMA(len, 0, 64)};
    CHECK(fb.pData != NULL);
    memset(fb.pData, fill, len);
    return fb;
}

static void dma_free(CpaFlatBuffer *fb)
{
    void *p = fb->pData;
    qaeMemFreeNUMA(&p);
    CHECK(p == NULL);
}

static void hex(CpaFlatBuffer *fb, const char *h)
{
    size_t n = strlen(h) / 2;
    CHECK(n <= fb->dataLenInBytes);
    memset(fb->pData, 0, fb->dataLenInBytes);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        CHECK(sscanf(h + 2 * i, "%2x", &v) == 1);
        fb->pData[fb->dataLenInBytes - n + i] = (Cpa8U)v;
    }
}

/* A Rep2 request of 2048 bits whose numbers satisfy every range rule. */
typedef struct {
    CpaCyRsaPrivateKey key;
    CpaCyRsaDecryptOpData op;
    CpaFlatBuffer out;
} rsa_req;

static void rsa_req_init(rsa_req *r)
{
    memset(r, 0, sizeof(*r));
    r->key.version = CPA_CY_RSA_VERSION_TWO_PRIME;
    r->key.privateKeyRepType = CPA_CY_RSA_PRIVATE_KEY_REP_TYPE_2;
    CpaCyRsaPrivateKeyRep2 *k = &r->key.privateKeyRep2;
    k->prime1P = dma(128, 0xC3);
    k->prime2Q = dma(128, 0xA5);
    k->exponent1Dp = dma(128, 0x11);
    k->exponent2Dq = dma(128, 0x22);
    k->coefficientQInv = dma(128, 0x33);
    r->op.pRecipientPrivateKey = &r->key;
    r->op.inputData = dma(256, 0x07);
    r->out = dma(256, 0);
}

static void rsa_req_free(rsa_req *r)
{
    CpaCyRsaPrivateKeyRep2 *k = &r->key.privateKeyRep2;
    dma_free(&k->prime1P);
    dma_free(&k->prime2Q);
    dma_free(&k->exponent1Dp);
    dma_free(&k->exponent2Dq);
    dma_free(&k->coefficientQInv);
    dma_free(&r->op.inputData);
    dma_free(&r->out);
}

typedef struct {
    CpaCyEcdsaSignRSOpData op;
    CpaFlatBuffer r, s;
    CpaBoolean status;
} sign_req;

static void sign_req_init(sign_req *q)
{
    const sim_nist_curve *p256 = &sim_nist_curves[SIMBN_P256];
    memset(q, 0, sizeof(*q));
    q->op.q = dma(32, 0);
    hex(&q->op.q, p256->p);
    q->op.a = dma(32, 0);
    hex(&q->op.a, p256->a);
    q->op.b = dma(32, 0);
    hex(&q->op.b, p256->b);
    q->op.n = dma(32, 0);
    hex(&q->op.n, p256->n);
    q->op.xg = dma(32, 0);
    hex(&q->op.xg, p256->xg);
    q->op.yg = dma(32, 0);
    hex(&q->op.yg, p256->yg);
    q->op.k = dma(32, 0x42);
    q->op.d = dma(32, 0x17);
    q->op.m = dma(32, 0x99);
    q->op.fieldType = CPA_CY_EC_FIELD_TYPE_PRIME;
    q->r = dma(32, 0);
    q->s = dma(32, 0);
}

static void sign_req_free(sign_req *q)
{
    CpaFlatBuffer *all[] = {&q->op.q, &q->op.a, &q->op.b, &q->op.n, &q->op.xg, &q->op.yg,
                            &q->op.k, &q->op.d, &q->op.m, &q->r, &q->s};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        dma_free(all[i]);
}

static CpaInstanceHandle start_device(void)
{
    CHECK(icp_sal_userStart("SSL") == CPA_STATUS_SUCCESS);
    CpaInstanceHandle h[4];
    Cpa16U n = 0;
    CHECK(cpaGetNumInstances(CPA_ACC_SVC_TYPE_CRYPTO_ASYM, &n) == CPA_STATUS_SUCCESS && n >= 1);
    CHECK(cpaGetInstances(CPA_ACC_SVC_TYPE_CRYPTO_ASYM, 1, h) == CPA_STATUS_SUCCESS);
    CHECK(cpaCyStartInstance(h[0]) == CPA_STATUS_SUCCESS);
    CHECK(cpaCySetAddressTranslation(h[0], qaeVirtToPhysNUMA) == CPA_STATUS_SUCCESS);
    return h[0];
}

static void poll_until(CpaInstanceHandle h, int n)
{
    for (int i = 0; atomic_load(&g_done) < n; i++) {
        CHECK(i < 200000);
        if (icp_sal_CyPollInstance(h, 0) == CPA_STATUS_RETRY)
            usleep(50);
    }
}

static atomic_int g_poller_stop;

static void *poller(void *h)
{
    while (!atomic_load(&g_poller_stop))
        if (icp_sal_CyPollInstance(h, 0) == CPA_STATUS_RETRY)
            usleep(50);
    return NULL;
}

int main(void)
{
    CHECK(qatpy_sim_reset() == 0);
    rsa_req rr;
    sign_req sr;

    /* 1. async RSA + ECDSA, real mode, several start/stop cycles */
    for (int cycle = 0; cycle < 3; cycle++) {
        CpaInstanceHandle h = start_device();
        rsa_req_init(&rr);
        sign_req_init(&sr);
        atomic_store(&g_done, 0);
        for (int i = 0; i < 20; i++)
            CHECK(cpaCyRsaDecrypt(h, rsa_cb, NULL, &rr.op, &rr.out) == CPA_STATUS_SUCCESS);
        for (int i = 0; i < 20; i++)
            CHECK(cpaCyEcdsaSignRS(h, sign_cb, NULL, &sr.op, &sr.status, &sr.r, &sr.s) ==
                  CPA_STATUS_SUCCESS);
        poll_until(h, 40);
        CHECK(atomic_load(&g_fail) == 0);
        CHECK(cpaCyStopInstance(h) == CPA_STATUS_SUCCESS);
        CHECK(icp_sal_userStop() == CPA_STATUS_SUCCESS);
        rsa_req_free(&rr);
        sign_req_free(&sr);
    }

    /* 2. sync mode with a poller thread; then a sync timeout with none */
    {
        CpaInstanceHandle h = start_device();
        sign_req_init(&sr);
        pthread_t t;
        atomic_store(&g_poller_stop, 0);
        CHECK(pthread_create(&t, NULL, poller, h) == 0);
        CHECK(cpaCyEcdsaSignRS(h, NULL, NULL, &sr.op, &sr.status, &sr.r, &sr.s) == CPA_STATUS_SUCCESS);
        CHECK(sr.status == CPA_TRUE);
        atomic_store(&g_poller_stop, 1);
        pthread_join(t, NULL);
        set("sync_timeout_ms", 30);
        CHECK(cpaCyEcdsaSignRS(h, NULL, NULL, &sr.op, &sr.status, &sr.r, &sr.s) == CPA_STATUS_RESOURCE);
        for (int i = 0; get("inflight") > 0; i++) { /* abandoned job freed by poll */
            CHECK(i < 100000);
            icp_sal_CyPollInstance(h, 0);
            usleep(50);
        }
        /* a second abandoned one is freed by teardown instead */
        set("latency_ns", 200000000);
        CHECK(cpaCyEcdsaSignRS(h, NULL, NULL, &sr.op, &sr.status, &sr.r, &sr.s) == CPA_STATUS_RESOURCE);
        CHECK(icp_sal_userStop() == CPA_STATUS_SUCCESS);
        sign_req_free(&sr);
        CHECK(qatpy_sim_reset() == 0);
    }

    /* 3. latency timer, replay, lost response, ring full, work queued at teardown */
    {
        set("compute_mode", 1);
        set("latency_ns", 2000000);
        set("ring_depth", 16);
        CpaInstanceHandle h = start_device();
        rsa_req_init(&rr);
        atomic_store(&g_done, 0);
        /* Computed once before the burst, so every request below is a hit. */
        CHECK(cpaCyRsaDecrypt(h, rsa_cb, NULL, &rr.op, &rr.out) == CPA_STATUS_SUCCESS);
        poll_until(h, 1);
        atomic_store(&g_done, 0);
        set("fault.lost.next", 1);
        int accepted = 0;
        while (cpaCyRsaDecrypt(h, rsa_cb, NULL, &rr.op, &rr.out) == CPA_STATUS_SUCCESS)
            accepted++;
        CHECK(accepted == 15);
        poll_until(h, 14); /* one is lost */
        CHECK(get("inflight") == 1);
        CHECK(get("replay.hits") == 15 && get("replay.misses") == 1);
        set("latency_ns", 500000000);
        for (int i = 0; i < 5; i++)
            CHECK(cpaCyRsaDecrypt(h, rsa_cb, NULL, &rr.op, &rr.out) == CPA_STATUS_SUCCESS);
        CHECK(icp_sal_userStop() == CPA_STATUS_SUCCESS); /* discards lost + timer-held */
        CHECK(get("inflight") == 0);
        rsa_req_free(&rr);
        CHECK(qatpy_sim_reset() == 0);
    }

    /* 4. restart cycle with notifications; event mode */
    {
        set("restart_ms", 20);
        CpaInstanceHandle h = start_device();
        rsa_req_init(&rr);
        CHECK(cpaCyInstanceSetNotificationCb(h, notify_cb, NULL) == CPA_STATUS_SUCCESS);
        CHECK(qatpy_sim_restart_instance(0) == 0);
        CHECK(cpaCyRsaDecrypt(h, rsa_cb, NULL, &rr.op, &rr.out) == CPA_STATUS_RESTARTING);
        /* Notifications come only from icp_sal_poll_device_events. */
        usleep(30000);
        CHECK(atomic_load(&g_events) == 0);
        for (int i = 0; atomic_load(&g_events) < 2; i++) {
            CHECK(i < 10000);
            CHECK(icp_sal_poll_device_events() == CPA_STATUS_SUCCESS);
            usleep(1000);
        }
        int fd = -1;
        CHECK(icp_sal_CyGetFileDescriptor(h, &fd) == CPA_STATUS_UNSUPPORTED && fd == 0);
        CHECK(cpaInstanceSetResponseMode(h, CPA_ACC_SVC_TYPE_CRYPTO_ASYM, CPA_INST_RX_NOTIFY_BY_EVENT) ==
              CPA_STATUS_SUCCESS);
        CHECK(icp_sal_CyGetFileDescriptor(h, &fd) == CPA_STATUS_SUCCESS && fd > 0);
        atomic_store(&g_done, 0);
        CHECK(cpaCyRsaDecrypt(h, rsa_cb, NULL, &rr.op, &rr.out) == CPA_STATUS_SUCCESS);
        struct pollfd pfd = {fd, POLLIN, 0};
        CHECK(poll(&pfd, 1, 5000) == 1);
        CHECK(icp_sal_CyPollInstance(h, 0) == CPA_STATUS_SUCCESS);
        pfd.revents = 0;
        CHECK(poll(&pfd, 1, 0) == 0);
        CHECK(icp_sal_userStop() == CPA_STATUS_SUCCESS);
        rsa_req_free(&rr);
    }

    /* 4b. cpaCyStopInstance keeps a lost request (and its ring slot) on the
     *     device; a heartbeat check restarts the device, the error state
     *     fails the request at the next poll and frees the slot. */
    {
        CHECK(qatpy_sim_reset() == 0);
        set("restart_ms", 5);
        set("heartbeat_overdue_ms", 600000);
        CpaInstanceHandle h = start_device();
        rsa_req_init(&rr);
        CHECK(cpaCyInstanceSetNotificationCb(h, notify_cb, NULL) == CPA_STATUS_SUCCESS);
        atomic_store(&g_done, 0);
        atomic_store(&g_fail, 0);
        atomic_store(&g_events, 0);
        set("fault.lost.next", 1);
        CHECK(cpaCyRsaDecrypt(h, rsa_cb, NULL, &rr.op, &rr.out) == CPA_STATUS_SUCCESS); /* lost */
        CHECK(cpaCyRsaDecrypt(h, rsa_cb, NULL, &rr.op, &rr.out) == CPA_STATUS_SUCCESS);
        poll_until(h, 1);
        CHECK(get("inflight") == 1);
        CHECK(cpaCyStopInstance(h) == CPA_STATUS_SUCCESS);
        CHECK(cpaCyRsaDecrypt(h, rsa_cb, NULL, &rr.op, &rr.out) == CPA_STATUS_FAIL);
        CHECK(cpaCyStartInstance(h) == CPA_STATUS_SUCCESS);
        CHECK(get("inflight") == 1 && get("completed.discarded") == 0);
        CHECK(icp_sal_check_device(0) == CPA_STATUS_SUCCESS); /* not overdue yet */
        CHECK(icp_sal_check_device(7) == CPA_STATUS_FAIL);    /* no such package */
        set("heartbeat", 0);
        CHECK(icp_sal_check_device(0) == CPA_STATUS_UNSUPPORTED);
        CHECK(icp_sal_check_all_devices() == CPA_STATUS_UNSUPPORTED);
        set("heartbeat", 1);
        set("heartbeat_overdue_ms", 1);
        usleep(2000);
        CHECK(icp_sal_check_all_devices() == CPA_STATUS_FAIL);
        CHECK(get("restarts") == 1 && get("heartbeat.failures") == 1);
        CHECK(cpaCyRsaDecrypt(h, rsa_cb, NULL, &rr.op, &rr.out) == CPA_STATUS_RESTARTING);
        CHECK(icp_sal_CyPollInstance(h, 0) == CPA_STATUS_RESTARTING); /* nothing yet */
        CHECK(icp_sal_poll_device_events() == CPA_STATUS_SUCCESS);
        CHECK(atomic_load(&g_events) == 1); /* RESTARTING */
        poll_until(h, 2);
        CHECK(atomic_load(&g_fail) == 1 && get("inflight") == 0);
        for (int i = 0; atomic_load(&g_events) < 2; i++) {
            CHECK(i < 10000);
            CHECK(icp_sal_poll_device_events() == CPA_STATUS_SUCCESS);
            usleep(1000);
        }
        CHECK(cpaCyRsaDecrypt(h, rsa_cb, NULL, &rr.op, &rr.out) == CPA_STATUS_SUCCESS);
        poll_until(h, 3);
        CHECK(atomic_load(&g_fail) == 1);
        CHECK(icp_sal_userStop() == CPA_STATUS_SUCCESS);
        rsa_req_free(&rr);
    }

    /* 5. fork with work in flight: the child cannot use the parent's
     *    instances or DMA, starts its own device, signs, exits cleanly; the
     *    parent's device is unaffected. */
    {
        CHECK(qatpy_sim_reset() == 0);
        set("latency_ns", 20000000);
        CpaInstanceHandle h = start_device();
        rsa_req_init(&rr);
        sign_req_init(&sr);
        atomic_store(&g_done, 0);
        atomic_store(&g_fail, 0);
        for (int i = 0; i < 4; i++)
            CHECK(cpaCyRsaDecrypt(h, rsa_cb, NULL, &rr.op, &rr.out) == CPA_STATUS_SUCCESS);
        long long parent_live = get("mem.live_allocs");
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            /* CHECK exits 1 in the child too; _exit keeps LeakSanitizer off
             * the parent's jobs, which the child drops without freeing. */
            CHECK(get("mem.live_allocs") == 0);
            CHECK(cpaCyRsaDecrypt(h, rsa_cb, NULL, &rr.op, &rr.out) == CPA_STATUS_INVALID_PARAM);
            CHECK(get("refused.bad_handle") == 1);
            CHECK(qaeVirtToPhysNUMA(rr.out.pData) == 0);
            set("latency_ns", 0);
            CpaInstanceHandle h2 = start_device(); /* resets, fresh worker threads */
            CHECK(get("fork_resets") == 1 && get("started") == 1 && get("inflight") == 0);
            CHECK(cpaCyRsaDecrypt(h2, rsa_cb, NULL, &rr.op, &rr.out) == CPA_STATUS_FAIL);
            CHECK(get("refused.dma_inherited") == 1);
            CpaFlatBuffer inherited = rr.out;
            qaeMemFreeNUMA((void **)&inherited.pData); /* counted no-op */
            CHECK(get("mem.free_inherited") == 1 && inherited.pData == rr.out.pData);
            rsa_req crr;
            sign_req csr;
            rsa_req_init(&crr);
            sign_req_init(&csr);
            atomic_store(&g_done, 0);
            for (int i = 0; i < 3; i++) {
                CHECK(cpaCyRsaDecrypt(h2, rsa_cb, NULL, &crr.op, &crr.out) == CPA_STATUS_SUCCESS);
                CHECK(cpaCyEcdsaSignRS(h2, sign_cb, NULL, &csr.op, &csr.status, &csr.r, &csr.s) ==
                      CPA_STATUS_SUCCESS);
            }
            poll_until(h2, 6);
            CHECK(atomic_load(&g_fail) == 0);
            CHECK(cpaCyStopInstance(h2) == CPA_STATUS_SUCCESS);
            CHECK(icp_sal_userStop() == CPA_STATUS_SUCCESS);
            rsa_req_free(&crr);
            sign_req_free(&csr);
            CHECK(get("mem.live_allocs") == 0);
            _exit(0);
        }
        int st = -1;
        CHECK(waitpid(pid, &st, 0) == pid);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        /* the parent's in-flight work completes as if nothing happened */
        poll_until(h, 4);
        CHECK(atomic_load(&g_fail) == 0);
        CHECK(get("fork_resets") == 0 && get("refused.dma_inherited") == 0);
        CHECK(get("mem.live_allocs") == parent_live && get("mem.free_inherited") == 0);
        CHECK(icp_sal_userStop() == CPA_STATUS_SUCCESS);
        rsa_req_free(&rr);
        sign_req_free(&sr);
    }

    CHECK(get("mem.live_allocs") == 0 && get("mem.live_bytes") == 0);
    CHECK(get("mem.key_freed_unwiped") == 0);
    CHECK(qatpy_sim_reset() == 0); /* frees the replay cache */
    printf("simcheck: ok\n");
    return 0;
}
