/*
 * RSA and ECDSA entry points: the parameter rules of qatlib's ICP_PARAM_CHECK
 * build (qatlib's cpa_cy_rsa.h, cpa_cy_ecdsa.h, cpa_cy_ec.h, and the checks in
 * its lac_rsa.c and lac_ecdsa.c), the DMA rule, the input snapshot, and the
 * arithmetic run on worker threads.
 *
 * Refusal order follows the real library: handle, reset in progress
 * (RESTARTING), instance started and address translation set (FAIL),
 * capability (UNSUPPORTED), parameters (INVALID_PARAM), then the DMA rule
 * (FAIL: the real library would hand address 0 to the device, and FAIL is
 * what it returns for translation problems it does detect).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

/* A big-endian integer without its leading zero bytes (len 0 = zero). */
typedef struct {
    const uint8_t *p;
    size_t len;
} mb;

static mb minb_raw(const uint8_t *p, size_t len)
{
    while (len > 0 && *p == 0) {
        p++;
        len--;
    }
    return (mb){p, len};
}

static mb minb(const CpaFlatBuffer *fb)
{
    return minb_raw(fb->pData, fb->dataLenInBytes);
}

static int cmp_mb(mb a, mb b)
{
    if (a.len != b.len)
        return a.len < b.len ? -1 : 1;
    return a.len == 0 ? 0 : memcmp(a.p, b.p, a.len);
}

static int is_zero(mb a)
{
    return a.len == 0;
}

static int is_one(mb a)
{
    return a.len == 1 && a.p[0] == 1;
}

/* a < p - 1 for odd p (so p - 1 only differs from p in its last byte). */
static int lt_pm1(mb a, mb p)
{
    if (a.len != p.len)
        return a.len < p.len;
    int c = a.len > 1 ? memcmp(a.p, p.p, a.len - 1) : 0;
    if (c != 0)
        return c < 0;
    return a.p[a.len - 1] < p.p[p.len - 1] - 1;
}

static int rsa_size_ok(size_t bytes)
{
    switch (bytes * 8) {
    case 2048: case 3072: case 4096: case 8192:
        return 1;
    case 512: case 1024: case 1536:
        return knob(K_LEGACY_SIZES) != 0;
    default:
        return 0;
    }
}

/* NULL pData with a length is a NULL parameter; a zero length is its own rule. */
static CpaStatus fb_check(const CpaFlatBuffer *fb)
{
    if (fb->dataLenInBytes == 0)
        return refuse(R_ZERO_LENGTH, CPA_STATUS_INVALID_PARAM);
    if (fb->pData == NULL)
        return refuse(R_NULL_PARAM, CPA_STATUS_INVALID_PARAM);
    return CPA_STATUS_SUCCESS;
}

typedef struct {
    int n;
    qatpy_simmem_range r[SIM_MAX_RANGES];
} ranges;

static void add_range(ranges *rs, const CpaFlatBuffer *fb, int is_key)
{
    rs->r[rs->n++] = (qatpy_simmem_range){fb->pData, fb->dataLenInBytes, is_key, 0, 0};
}

static CpaStatus dma_check(sim_inst *in, ranges *rs)
{
    CpaVirtualToPhysical v2p = atomic_load_explicit(&in->v2p, memory_order_relaxed);
    if (v2p != qaeVirtToPhysNUMA) {
        /* A caller-supplied translation is consulted like the real library
         * does; 0 is the "not DMA-able" answer. */
        for (int i = 0; i < rs->n; i++)
            if (v2p((void *)(uintptr_t)rs->r[i].p) == 0)
                return refuse(R_DMA, CPA_STATUS_FAIL);
    }
    int bad = qatpy_simmem_check(rs->r, rs->n);
    if (bad >= 0)
        /* In a fork child the parent's DMA is unmapped on real hardware. */
        return refuse(rs->r[bad].inherited ? R_DMA_INHERITED : R_DMA, CPA_STATUS_FAIL);
    return CPA_STATUS_SUCCESS;
}

/* Take the instance for one submit: on SUCCESS the state read lock is held. */
static CpaStatus enter(CpaInstanceHandle h, enum sim_knob cap, sim_inst **out)
{
    sim_init_once();
    sim_inst *in = sim_resolve(h);
    if (in == NULL)
        return refuse(R_BAD_HANDLE, CPA_STATUS_INVALID_PARAM);
    pthread_rwlock_rdlock(&in->state);
    CpaStatus st = CPA_STATUS_SUCCESS;
    if (atomic_load_explicit(&in->restarting, memory_order_relaxed))
        st = refuse(R_RESTARTING, CPA_STATUS_RESTARTING);
    else if (!atomic_load_explicit(&in->started, memory_order_relaxed))
        st = refuse(R_NOT_STARTED, CPA_STATUS_FAIL);
    else if (atomic_load_explicit(&in->v2p, memory_order_relaxed) == NULL) {
        fprintf(stderr, "[error] qatpy-sim: Address translation function not set\n");
        st = refuse(R_NO_TRANSLATION, CPA_STATUS_FAIL);
    } else if (!knob(cap))
        st = refuse(R_CAPABILITY, CPA_STATUS_UNSUPPORTED);
    if (st != CPA_STATUS_SUCCESS) {
        pthread_rwlock_unlock(&in->state);
        return st;
    }
    *out = in;
    return st;
}

/* Allocate the job and copy the (minimal) input fields into its snapshot. */
static sim_job *job_new(sim_inst *in, enum sim_op op, int param, const mb *fields, int nfields,
                        uint32_t res_len, void *cb, void *tag, const void *opdata,
                        const ranges *rs, CpaFlatBuffer *out0, CpaFlatBuffer *out1)
{
    size_t snap = 0;
    for (int i = 0; i < nfields; i++)
        snap += fields[i].len;
    sim_job *job = malloc(sizeof(*job) + snap + res_len);
    if (job == NULL)
        return NULL;
    memset(job, 0, sizeof(*job));
    job->inst = in;
    job->op = op;
    job->param = param;
    job->cb = cb;
    job->tag = tag;
    job->opdata = (void *)(uintptr_t)opdata;
    job->nfields = nfields;
    uint32_t off = 0;
    for (int i = 0; i < nfields; i++) {
        job->foff[i] = off;
        job->flen[i] = (uint32_t)fields[i].len;
        if (fields[i].len)
            memcpy(job->data + off, fields[i].p, fields[i].len);
        off += (uint32_t)fields[i].len;
    }
    job->snap_len = off;
    job->res_len = res_len;
    memset(job->data + off, 0, res_len);
    job->nranges = rs->n;
    memcpy(job->ranges, rs->r, sizeof(rs->r[0]) * (size_t)rs->n);
    job->status = CPA_STATUS_SUCCESS;
    job->flag = CPA_TRUE;
    if (out0 != NULL)
        job->out[0] = (sim_out){out0, out0->pData, out0->dataLenInBytes};
    if (out1 != NULL)
        job->out[1] = (sim_out){out1, out1->pData, out1->dataLenInBytes};
    if (cb == NULL) {
        job->sync = 1;
        job->sstate = SYNC_WAITING;
        pthread_mutex_init(&job->smu, NULL);
        pthread_condattr_t attr;
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&job->scv, &attr);
        pthread_condattr_destroy(&attr);
    }
    return job;
}

/* Hand a built job to the device and, for a NULL callback, wait for it. */
static CpaStatus submit(sim_inst *in, sim_job *job)
{
    /* Read before dispatch: once dispatched, an async job belongs to the
     * device and a poller may complete and free it at any moment. */
    int sync = job != NULL && job->sync;
    CpaStatus st = job == NULL ? CPA_STATUS_RESOURCE : sim_dispatch(job);
    pthread_rwlock_unlock(&in->state);
    if (st == CPA_STATUS_SUCCESS && sync)
        st = sim_sync_wait(job);
    return st;
}

static CpaStatus leave(sim_inst *in, CpaStatus st)
{
    pthread_rwlock_unlock(&in->state);
    return st;
}

/* ---- RSA ------------------------------------------------------------------ */

static CpaStatus check_modulus(mb n)
{
    if (!rsa_size_ok(n.len))
        return refuse(R_RSA_SIZE, CPA_STATUS_INVALID_PARAM);
    if ((n.p[0] & 0xC0) == 0 || (n.p[n.len - 1] & 1) == 0)
        return refuse(R_RSA_KEY, CPA_STATUS_INVALID_PARAM);
    return CPA_STATUS_SUCCESS;
}

static int msb_lsb_set(mb x, size_t len)
{
    return x.len == len && (x.p[0] & 0x80) && (x.p[x.len - 1] & 1);
}

CpaStatus cpaCyRsaDecrypt(const CpaInstanceHandle instanceHandle,
                          const CpaCyGenFlatBufCbFunc pRsaDecryptCb, void *pCallbackTag,
                          const CpaCyRsaDecryptOpData *pDecryptOpData,
                          CpaFlatBuffer *pOutputData)
{
    sim_inst *in;
    CpaStatus st = enter(instanceHandle, K_CAP_RSA, &in);
    if (st != CPA_STATUS_SUCCESS)
        return st;
    const CpaCyRsaDecryptOpData *op = pDecryptOpData;
    if (op == NULL || pOutputData == NULL || op->pRecipientPrivateKey == NULL)
        return leave(in, refuse(R_NULL_PARAM, CPA_STATUS_INVALID_PARAM));
    const CpaCyRsaPrivateKey *key = op->pRecipientPrivateKey;
    if (key->version != CPA_CY_RSA_VERSION_TWO_PRIME ||
        (key->privateKeyRepType != CPA_CY_RSA_PRIVATE_KEY_REP_TYPE_1 &&
         key->privateKeyRepType != CPA_CY_RSA_PRIVATE_KEY_REP_TYPE_2))
        return leave(in, refuse(R_ENUM, CPA_STATUS_INVALID_PARAM));
    int rep1 = key->privateKeyRepType == CPA_CY_RSA_PRIVATE_KEY_REP_TYPE_1;
    const CpaCyRsaPrivateKeyRep1 *k1 = &key->privateKeyRep1;
    const CpaCyRsaPrivateKeyRep2 *k2 = &key->privateKeyRep2;
    const CpaFlatBuffer *kb[5];
    int nk = 0;
    if (rep1) {
        kb[nk++] = &k1->modulusN;
        kb[nk++] = &k1->privateExponentD;
    } else {
        kb[nk++] = &k2->prime1P;
        kb[nk++] = &k2->prime2Q;
        kb[nk++] = &k2->exponent1Dp;
        kb[nk++] = &k2->exponent2Dq;
        kb[nk++] = &k2->coefficientQInv;
    }
    ranges rs = {0};
    if ((st = fb_check(&op->inputData)) != CPA_STATUS_SUCCESS ||
        (st = fb_check(pOutputData)) != CPA_STATUS_SUCCESS)
        return leave(in, st);
    add_range(&rs, &op->inputData, 0);
    add_range(&rs, pOutputData, 0);
    for (int i = 0; i < nk; i++) {
        if ((st = fb_check(kb[i])) != CPA_STATUS_SUCCESS)
            return leave(in, st);
        /* Rep1 n is public; everything else in a private key is secret. */
        add_range(&rs, kb[i], !(rep1 && i == 0));
    }
    if ((st = dma_check(in, &rs)) != CPA_STATUS_SUCCESS)
        return leave(in, st);

    mb input = minb(&op->inputData);
    mb f[6];
    size_t opsize;
    if (rep1) {
        mb n = minb(&k1->modulusN), d = minb(&k1->privateExponentD);
        if (n.len == 0)
            return leave(in, refuse(R_RSA_SIZE, CPA_STATUS_INVALID_PARAM));
        if ((st = check_modulus(n)) != CPA_STATUS_SUCCESS)
            return leave(in, st);
        opsize = n.len;
        if (pOutputData->dataLenInBytes < opsize)
            return leave(in, refuse(R_OUTPUT_SHORT, CPA_STATUS_INVALID_PARAM));
        if (is_zero(d) || cmp_mb(d, n) >= 0)
            return leave(in, refuse(R_RSA_KEY, CPA_STATUS_INVALID_PARAM));
        if (is_zero(input) || cmp_mb(input, n) >= 0)
            return leave(in, refuse(R_INPUT_RANGE, CPA_STATUS_INVALID_PARAM));
        f[0] = input;
        f[1] = n;
        f[2] = d;
        return submit(in, job_new(in, OP_RSA_DEC1, (int)opsize, f, 3, (uint32_t)opsize,
                                  (void *)pRsaDecryptCb, pCallbackTag, op, &rs, pOutputData, NULL));
    }
    mb p = minb(&k2->prime1P), q = minb(&k2->prime2Q);
    mb dp = minb(&k2->exponent1Dp), dq = minb(&k2->exponent2Dq), qi = minb(&k2->coefficientQInv);
    if (p.len != q.len || p.len == 0)
        return leave(in, refuse(R_RSA_KEY, CPA_STATUS_INVALID_PARAM));
    opsize = 2 * p.len;
    if (!rsa_size_ok(opsize))
        return leave(in, refuse(R_RSA_SIZE, CPA_STATUS_INVALID_PARAM));
    if (pOutputData->dataLenInBytes < opsize)
        return leave(in, refuse(R_OUTPUT_SHORT, CPA_STATUS_INVALID_PARAM));
    if (!msb_lsb_set(p, p.len) || !msb_lsb_set(q, p.len))
        return leave(in, refuse(R_RSA_KEY, CPA_STATUS_INVALID_PARAM));
    /* 1 < dP < p-1, 1 < dQ < q-1, 0 < qInv < p */
    if (is_zero(dp) || is_one(dp) || !lt_pm1(dp, p) || is_zero(dq) || is_one(dq) ||
        !lt_pm1(dq, q) || is_zero(qi) || cmp_mb(qi, p) >= 0)
        return leave(in, refuse(R_RSA_KEY, CPA_STATUS_INVALID_PARAM));
    if (input.len > opsize)
        return leave(in, refuse(R_INPUT_RANGE, CPA_STATUS_INVALID_PARAM));
    f[0] = input;
    f[1] = p;
    f[2] = q;
    f[3] = dp;
    f[4] = dq;
    f[5] = qi;
    return submit(in, job_new(in, OP_RSA_DEC2, (int)opsize, f, 6, (uint32_t)opsize,
                              (void *)pRsaDecryptCb, pCallbackTag, op, &rs, pOutputData, NULL));
}

CpaStatus cpaCyRsaEncrypt(const CpaInstanceHandle instanceHandle,
                          const CpaCyGenFlatBufCbFunc pRsaEncryptCb, void *pCallbackTag,
                          const CpaCyRsaEncryptOpData *pEncryptOpData,
                          CpaFlatBuffer *pOutputData)
{
    sim_inst *in;
    CpaStatus st = enter(instanceHandle, K_CAP_RSA, &in);
    if (st != CPA_STATUS_SUCCESS)
        return st;
    const CpaCyRsaEncryptOpData *op = pEncryptOpData;
    if (op == NULL || pOutputData == NULL || op->pPublicKey == NULL)
        return leave(in, refuse(R_NULL_PARAM, CPA_STATUS_INVALID_PARAM));
    const CpaCyRsaPublicKey *pk = op->pPublicKey;
    ranges rs = {0};
    const CpaFlatBuffer *bufs[4] = {&op->inputData, pOutputData, &pk->modulusN, &pk->publicExponentE};
    for (int i = 0; i < 4; i++) {
        if ((st = fb_check(bufs[i])) != CPA_STATUS_SUCCESS)
            return leave(in, st);
        add_range(&rs, bufs[i], 0);
    }
    if ((st = dma_check(in, &rs)) != CPA_STATUS_SUCCESS)
        return leave(in, st);
    mb n = minb(&pk->modulusN), e = minb(&pk->publicExponentE), input = minb(&op->inputData);
    if (n.len == 0)
        return leave(in, refuse(R_RSA_SIZE, CPA_STATUS_INVALID_PARAM));
    if ((st = check_modulus(n)) != CPA_STATUS_SUCCESS)
        return leave(in, st);
    size_t opsize = n.len;
    if (pOutputData->dataLenInBytes < opsize)
        return leave(in, refuse(R_OUTPUT_SHORT, CPA_STATUS_INVALID_PARAM));
    if (is_zero(e) || (e.p[e.len - 1] & 1) == 0 || e.len > n.len)
        return leave(in, refuse(R_RSA_KEY, CPA_STATUS_INVALID_PARAM));
    if (is_zero(input) || cmp_mb(input, n) >= 0)
        return leave(in, refuse(R_INPUT_RANGE, CPA_STATUS_INVALID_PARAM));
    mb f[3] = {input, n, e};
    return submit(in, job_new(in, OP_RSA_ENC, (int)opsize, f, 3, (uint32_t)opsize,
                              (void *)pRsaEncryptCb, pCallbackTag, op, &rs, pOutputData, NULL));
}

/* ---- ECDSA ------------------------------------------------------------------ */

/* Which NIST prime curve (q, n, a, b, xg, yg) describe, or -1. */
static int identify_curve(const CpaFlatBuffer *q, const CpaFlatBuffer *n, const CpaFlatBuffer *a,
                          const CpaFlatBuffer *b, const CpaFlatBuffer *xg, const CpaFlatBuffer *yg)
{
    mb mn = minb(n);
    for (int c = 0; c < SIMBN_NCURVES; c++) {
        const simbn_curve *cv = simbn_curve_get(c);
        if (cmp_mb(mn, (mb){cv->n, cv->nlen}) == 0 && cmp_mb(minb(q), (mb){cv->p, cv->plen}) == 0 &&
            cmp_mb(minb(a), (mb){cv->a, cv->alen}) == 0 && cmp_mb(minb(b), (mb){cv->b, cv->blen}) == 0 &&
            cmp_mb(minb(xg), (mb){cv->xg, cv->xglen}) == 0 &&
            cmp_mb(minb(yg), (mb){cv->yg, cv->yglen}) == 0)
            return c;
    }
    return -1;
}

/* The digest as the device sees it.  Operands above 72 bytes fit no range;
 * above 64 bytes only P-521 has one; on the P-256/P-384 firmware path an
 * over-long m keeps its least-significant bytes (the "wrong end"). */
static CpaStatus ec_message(int curve, mb *m)
{
    const simbn_curve *cv = simbn_curve_get(curve);
    if (m->len > 72 || (curve != SIMBN_P521 && m->len > 64))
        return refuse(R_EC_M_LENGTH, CPA_STATUS_INVALID_PARAM);
    if (curve != SIMBN_P521 && m->len > cv->len) {
        *m = minb_raw(m->p + (m->len - cv->len), cv->len);
        ctr_add(C_EC_M_CUT, 1);
    }
    return CPA_STATUS_SUCCESS;
}

static CpaStatus ec_field_type(CpaCyEcFieldType t)
{
    if (t == CPA_CY_EC_FIELD_TYPE_PRIME)
        return CPA_STATUS_SUCCESS;
    if (t == CPA_CY_EC_FIELD_TYPE_BINARY) /* valid enum, but no NIST binary curves here */
        return refuse(R_EC_CURVE, CPA_STATUS_INVALID_PARAM);
    return refuse(R_ENUM, CPA_STATUS_INVALID_PARAM);
}

CpaStatus cpaCyEcdsaSignRS(const CpaInstanceHandle instanceHandle,
                           const CpaCyEcdsaSignRSCbFunc pCb, void *pCallbackTag,
                           const CpaCyEcdsaSignRSOpData *pOpData, CpaBoolean *pSignStatus,
                           CpaFlatBuffer *pR, CpaFlatBuffer *pS)
{
    sim_inst *in;
    CpaStatus st = enter(instanceHandle, K_CAP_ECDSA, &in);
    if (st != CPA_STATUS_SUCCESS)
        return st;
    const CpaCyEcdsaSignRSOpData *op = pOpData;
    /* pSignStatus is required even on the async path (impl param check). */
    if (op == NULL || pSignStatus == NULL || pR == NULL || pS == NULL)
        return leave(in, refuse(R_NULL_PARAM, CPA_STATUS_INVALID_PARAM));
    if ((st = ec_field_type(op->fieldType)) != CPA_STATUS_SUCCESS)
        return leave(in, st);
    const CpaFlatBuffer *bufs[11] = {&op->xg, &op->yg, &op->n, &op->q, &op->a, &op->b,
                                     &op->m, &op->k, &op->d, pR, pS};
    ranges rs = {0};
    for (int i = 0; i < 11; i++) {
        if ((st = fb_check(bufs[i])) != CPA_STATUS_SUCCESS)
            return leave(in, st);
        add_range(&rs, bufs[i], i == 7 || i == 8);
    }
    if ((st = dma_check(in, &rs)) != CPA_STATUS_SUCCESS)
        return leave(in, st);
    int curve = identify_curve(&op->q, &op->n, &op->a, &op->b, &op->xg, &op->yg);
    if (curve < 0)
        return leave(in, refuse(R_EC_CURVE, CPA_STATUS_INVALID_PARAM));
    const simbn_curve *cv = simbn_curve_get(curve);
    if (pR->dataLenInBytes < cv->nlen || pS->dataLenInBytes < cv->nlen)
        return leave(in, refuse(R_OUTPUT_SHORT, CPA_STATUS_INVALID_PARAM));
    mb n = {cv->n, cv->nlen}, k = minb(&op->k), d = minb(&op->d), m = minb(&op->m);
    if (is_zero(k) || cmp_mb(k, n) >= 0 || is_zero(d) || cmp_mb(d, n) >= 0)
        return leave(in, refuse(R_EC_SCALAR, CPA_STATUS_INVALID_PARAM));
    if ((st = ec_message(curve, &m)) != CPA_STATUS_SUCCESS)
        return leave(in, st);
    /* k last: replay.ecdsa_ignore_k keys the cache on the fields before it. */
    mb f[3] = {m, d, k};
    sim_job *job = job_new(in, OP_EC_SIGN, curve, f, 3, (uint32_t)(2 * cv->len), (void *)pCb,
                           pCallbackTag, op, &rs, pR, pS);
    if (job != NULL)
        job->pbool = pSignStatus;
    return submit(in, job);
}

CpaStatus cpaCyEcdsaVerify(const CpaInstanceHandle instanceHandle,
                           const CpaCyEcdsaVerifyCbFunc pCb, void *pCallbackTag,
                           const CpaCyEcdsaVerifyOpData *pOpData, CpaBoolean *pVerifyStatus)
{
    sim_inst *in;
    CpaStatus st = enter(instanceHandle, K_CAP_ECDSA, &in);
    if (st != CPA_STATUS_SUCCESS)
        return st;
    const CpaCyEcdsaVerifyOpData *op = pOpData;
    if (op == NULL || pVerifyStatus == NULL)
        return leave(in, refuse(R_NULL_PARAM, CPA_STATUS_INVALID_PARAM));
    if ((st = ec_field_type(op->fieldType)) != CPA_STATUS_SUCCESS)
        return leave(in, st);
    const CpaFlatBuffer *bufs[11] = {&op->xg, &op->yg, &op->n, &op->q, &op->a, &op->b,
                                     &op->m, &op->r, &op->s, &op->xp, &op->yp};
    ranges rs = {0};
    for (int i = 0; i < 11; i++) {
        if ((st = fb_check(bufs[i])) != CPA_STATUS_SUCCESS)
            return leave(in, st);
        add_range(&rs, bufs[i], 0);
    }
    if ((st = dma_check(in, &rs)) != CPA_STATUS_SUCCESS)
        return leave(in, st);
    int curve = identify_curve(&op->q, &op->n, &op->a, &op->b, &op->xg, &op->yg);
    if (curve < 0)
        return leave(in, refuse(R_EC_CURVE, CPA_STATUS_INVALID_PARAM));
    mb m = minb(&op->m);
    if ((st = ec_message(curve, &m)) != CPA_STATUS_SUCCESS)
        return leave(in, st);
    mb f[5] = {m, minb(&op->r), minb(&op->s), minb(&op->xp), minb(&op->yp)};
    for (int i = 1; i < 5; i++)
        if (f[i].len > 72) /* no range holds it; cannot be a valid coordinate */
            return leave(in, refuse(R_EC_M_LENGTH, CPA_STATUS_INVALID_PARAM));
    sim_job *job = job_new(in, OP_EC_VERIFY, curve, f, 5, 0, (void *)pCb, pCallbackTag, op, &rs,
                           NULL, NULL);
    if (job != NULL)
        job->pbool = pVerifyStatus;
    return submit(in, job);
}

/* ---- device side --------------------------------------------------------------- */

#define FIELD(j, i) (j)->data + (j)->foff[i], (j)->flen[i]

void sim_compute(simbn_ctx *c, sim_job *job)
{
    uint8_t *res = job->data + job->snap_len;
    int rc = -1, ok = 0;
    switch (job->op) {
    case OP_RSA_DEC1:
    case OP_RSA_ENC:
        rc = simbn_rsa_exp(c, FIELD(job, 0), FIELD(job, 1), FIELD(job, 2), res, job->res_len);
        ok = 1;
        break;
    case OP_RSA_DEC2:
        rc = simbn_rsa_crt(c, FIELD(job, 0), FIELD(job, 1), FIELD(job, 2), FIELD(job, 3),
                           FIELD(job, 4), FIELD(job, 5), res, job->res_len);
        ok = 1;
        break;
    case OP_EC_SIGN:
        rc = simbn_ecdsa_sign(c, job->param, FIELD(job, 0), FIELD(job, 1), FIELD(job, 2), res,
                              res + job->res_len / 2, &ok);
        break;
    case OP_EC_VERIFY:
        rc = simbn_ecdsa_verify(c, job->param, FIELD(job, 0), FIELD(job, 1), FIELD(job, 2),
                                FIELD(job, 3), FIELD(job, 4), &ok);
        break;
    default:
        break;
    }
    job->status = rc == 0 ? CPA_STATUS_SUCCESS : CPA_STATUS_FAIL;
    job->flag = ok ? CPA_TRUE : CPA_FALSE;
    job->computed = 1;
    ctr_add(C_COMPUTED, 1);
}

/* The ECDSA fault: one bit of r or s flipped (of the curve-length value),
 * reported as SUCCESS with multiplyStatus TRUE.  Never a zero r or s: a
 * zero is the device's own "invalid, retry" answer, not a wrong one. */
static void ecdsa_bitflip(const sim_job *job)
{
    size_t half = job->res_len / 2, bits = half * 8;
    uint64_t pick = sim_random() % (2 * (uint64_t)bits);
    const sim_out *o = &job->out[pick / bits];
    uint8_t *v = o->p + (o->len - half);
    size_t bit = (size_t)(pick % bits);
    v[half - 1 - bit / 8] ^= (uint8_t)(1u << (bit % 8));
    int zero = 1;
    for (size_t i = 0; i < half && zero; i++)
        zero = v[i] == 0;
    if (zero) {
        /* It was exactly that bit: flip a neighbour instead. */
        v[half - 1 - bit / 8] ^= (uint8_t)(1u << (bit % 8));
        bit ^= 1;
        v[half - 1 - bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
}

/* Right-aligned, leading bytes zeroed; dataLenInBytes is not changed. */
static void put_right(const sim_out *o, const uint8_t *src, size_t len)
{
    memset(o->p, 0, o->len - len);
    memcpy(o->p + (o->len - len), src, len);
}

void sim_write_outputs(sim_job *job)
{
    const uint8_t *res = job->data + job->snap_len;
    switch (job->op) {
    case OP_RSA_DEC1:
    case OP_RSA_DEC2:
    case OP_RSA_ENC:
        put_right(&job->out[0], res, job->res_len);
        if (job->faults & (1u << F_RSA_BITFLIP)) {
            /* The fault attack: a wrong result reported as SUCCESS. */
            uint64_t bit = sim_random() % ((uint64_t)job->res_len * 8);
            job->out[0].p[job->out[0].len - job->res_len + bit / 8] ^= (uint8_t)(1u << (bit % 8));
        }
        break;
    case OP_EC_SIGN:
        if (!job->flag) {
            memset(job->out[0].p, 0, job->out[0].len);
            memset(job->out[1].p, 0, job->out[1].len);
            break;
        }
        put_right(&job->out[0], res, job->res_len / 2);
        put_right(&job->out[1], res + job->res_len / 2, job->res_len / 2);
        if (job->faults & (1u << F_ECDSA_BITFLIP))
            ecdsa_bitflip(job); /* a wrong (r, s) reported as a good one */
        break;
    default:
        break;
    }
}
