/*
 * The device hook: where a provider signature goes to the QAT device.
 *
 * A private provider key made on a device engine carries a device copy of
 * the key (k->device_key, a qatpy_key made for the same engine object, so
 * its requests take that engine's verify and deadline).  A signature is
 * submitted to the shim and this thread blocks until the answer
 * (qps_sign_wait: no ring, no Python, no spinning).  RSA PKCS#1 v1.5 goes
 * as a digest (the shim builds the DigestInfo block); RSA-PSS is encoded
 * here (EMSA-PSS, RFC 8017 9.1.1) and goes as a raw block; ECDSA goes as
 * the digest (the shim truncates it and draws the nonce).  The caller
 * (signature.c) applies the engine's fallback policy to what comes back.
 */
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "qpv.h"

/* Sizes and schemes the shim's device path takes (RSA 2048-8192 in the
 * standard sizes, P-256/384/521, SHA-2 digests). */
int qpv_device_supports(const struct qatpy_pkey *k, const struct qpv_sign_req *req)
{
    if (!req->hash->shim_id)
        return 0;
    if (k->type == QPV_EC)
        return k->curve != 0;
    if (req->scheme == QPV_SIG_RSA_PSS && !req->mgf1->shim_id)
        return 0;
    return k->bits == 2048 || k->bits == 3072 || k->bits == 4096 || k->bits == 8192;
}

/* The default provider's digest for a hash, fetched once per process (an
 * EVP_MD fetch costs microseconds; MGF1 needs one digest per block). */
static qpv_evp_md *cached_md(const struct qpv_hash *h)
{
    static _Atomic(qpv_evp_md *) cache[8];
    if (h->shim_id <= 0 || h->shim_id >= 8)
        return NULL;
    qpv_evp_md *md = atomic_load_explicit(&cache[h->shim_id], memory_order_acquire);
    if (md)
        return md;
    md = qpv_c.EVP_MD_fetch(NULL, h->name, QPV_DEFAULT_PQ);
    if (!md)
        return NULL;
    qpv_evp_md *none = NULL;
    if (!atomic_compare_exchange_strong(&cache[h->shim_id], &none, md)) {
        qpv_c.EVP_MD_free(md); /* another thread cached it first */
        md = none;
    }
    return md;
}

/* out = Hash(a || b) with `ctx`; 0 on failure. */
static int hash2(qpv_evp_md_ctx *ctx, const struct qpv_hash *h, const uint8_t *a, size_t alen,
                 const uint8_t *b, size_t blen, uint8_t *out)
{
    qpv_evp_md *md = cached_md(h);
    unsigned int n = 0;
    return md && qpv_c.EVP_DigestInit_ex(ctx, md, NULL) > 0 &&
           qpv_c.EVP_DigestUpdate(ctx, a, alen) > 0 &&
           (blen == 0 || qpv_c.EVP_DigestUpdate(ctx, b, blen) > 0) &&
           qpv_c.EVP_DigestFinal_ex(ctx, out, &n) > 0 && n == h->size;
}

/* EMSA-PSS-ENCODE of a message hash for a modulus of `bits` bits, written
 * left-padded into em[0..mod_len).  Returns 1 on success. */
static int pss_encode(const struct qpv_sign_req *req, int bits, uint8_t *em, size_t mod_len)
{
    const struct qpv_hash *h = req->hash, *mgf = req->mgf1;
    size_t hlen = h->size, slen = req->salt_len;
    size_t em_bits = (size_t)bits - 1, em_len = (em_bits + 7) / 8;
    if (req->digest_len != hlen || em_len < hlen + slen + 2 || em_len > mod_len)
        return 0;
    uint8_t salt[QATPY_MAX_RESULT];
    uint8_t mprime[8 + 64];
    uint8_t hh[64];
    if (slen && qps_rng_os(salt, slen) != 0)
        return 0;
    qpv_evp_md_ctx *ctx = qpv_c.EVP_MD_CTX_new();
    if (!ctx)
        goto fail;
    memset(mprime, 0, 8);
    memcpy(mprime + 8, req->digest, hlen);
    if (!hash2(ctx, h, mprime, 8 + hlen, salt, slen, hh))
        goto fail;
    /* EM = maskedDB || H || 0xbc, with DB = zeros || 0x01 || salt. */
    uint8_t *out = em + (mod_len - em_len);
    memset(em, 0, mod_len);
    size_t db_len = em_len - hlen - 1;
    out[db_len - slen - 1] = 0x01;
    memcpy(out + db_len - slen, salt, slen);
    /* MGF1(H, db_len) xored in, one hash block per counter. */
    for (uint32_t counter = 0, done = 0; done < db_len; counter++) {
        uint8_t c[4] = {(uint8_t)(counter >> 24), (uint8_t)(counter >> 16), (uint8_t)(counter >> 8),
                        (uint8_t)counter};
        uint8_t mask[64];
        if (!hash2(ctx, mgf, hh, hlen, c, 4, mask))
            goto fail;
        for (size_t i = 0; i < mgf->size && done < db_len; i++)
            out[done++] ^= mask[i];
    }
    out[0] &= (uint8_t)(0xff >> (8 * em_len - em_bits));
    memcpy(out + db_len, hh, hlen);
    out[em_len - 1] = 0xbc;
    qpv_c.EVP_MD_CTX_free(ctx);
    qps_wipe(salt, sizeof salt);
    return 1;
fail:
    if (ctx)
        qpv_c.EVP_MD_CTX_free(ctx);
    qps_wipe(salt, sizeof salt);
    memset(em, 0, mod_len);
    return 0;
}

static int map_status(int rc)
{
    switch (rc) {
    case QATPY_ST_OK:
        return QPV_DEV_OK;
    case QATPY_ST_VERIFY_FAIL:
        return QPV_DEV_VERIFY;
    case QATPY_ST_TIMEOUT:
        return QPV_DEV_DEADLINE;
    case QATPY_ST_CLOSED:
    case QATPY_SUBMIT_CLOSED:
        return QPV_DEV_CLOSED;
    case QATPY_ST_UNAVAILABLE: /* no usable instance (recovering): failed at once */
        return QPV_DEV_UNAVAILABLE;
    default: /* DEVICE_FAIL, SUBMIT_FAIL, BADARG, BADKEY */
        return QPV_DEV_ERROR;
    }
}

int qpv_device_sign(struct qatpy_pkey *k, const struct qpv_sign_req *req, uint8_t *sig,
                    size_t *siglen, size_t sigsize)
{
    struct qatpy_key *dk = k->device_key;
    if (!dk)
        return QPV_DEV_NONE;
    const qatpy_engine_config *cfg = qatpy_engine_config_of(k->eng);
    uint8_t em[QATPY_MAX_RESULT];
    const uint8_t *input = req->digest;
    size_t input_len = req->digest_len;
    int op = QPS_OP_RSA, encoding = QATPY_RSA_PKCS1, hash_id = req->hash->shim_id;
    if (req->scheme == QPV_SIG_ECDSA) {
        op = QPS_OP_ECDSA;
    } else if (req->scheme == QPV_SIG_RSA_PSS) {
        size_t mod_len = ((size_t)k->bits + 7) / 8;
        if (mod_len > sizeof em || !pss_encode(req, k->bits, em, mod_len))
            return QPV_DEV_ERROR;
        input = em;
        input_len = mod_len;
        encoding = QATPY_RSA_RAW;
        hash_id = 0;
    }
    int32_t cpa = 0;
    size_t n = 0;
    int rc;
    uint64_t waited = 0;
    for (;;) {
        rc = qps_sign_wait(dk, op, encoding, hash_id, input, input_len, sig, sigsize, &n, &cpa);
        if (rc != QATPY_SUBMIT_FULL)
            break;
        /* Every request slot is busy: overflow to software where the policy
         * says so, else wait for one (bounded by the engine's deadline). */
        if (cfg->fallback == QATPY_FALLBACK_ON_ERROR_OR_OVERFLOW ||
            (cfg->deadline_ns && waited >= cfg->deadline_ns)) {
            rc = cfg->fallback == QATPY_FALLBACK_ON_ERROR_OR_OVERFLOW ? QPV_DEV_OVERFLOW : QPV_DEV_DEADLINE;
            qps_wipe(em, sizeof em);
            return rc;
        }
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
        waited += 100000;
    }
    qps_wipe(em, sizeof em);
    if (rc == QATPY_ST_OK)
        *siglen = n;
    return map_status(rc);
}
