/*
 * Batch forms of submit and drain, built on the single-operation entry
 * points.  They exist for the cost model of the Python side: cffi releases
 * and re-acquires the GIL on every call, which is cheap alone but costs a
 * thread switch whenever the completion thread is waiting for the GIL, so
 * one call per batch instead of one per operation matters.
 */
#include "shim_internal.h"

int qatpy_submit_rsa_many(qatpy_device *dev, qatpy_key *key, int encoding, int hash_id,
                          const uint8_t *inputs, size_t input_len, size_t n, uint64_t tag0,
                          size_t *n_done)
{
    size_t i = 0;
    int rc = QATPY_SUBMIT_OK;
    for (; i < n; i++) {
        rc = qatpy_submit_rsa(dev, key, encoding, hash_id, inputs + i * input_len, input_len,
                              tag0 + i);
        if (rc != QATPY_SUBMIT_OK)
            break;
    }
    if (n_done)
        *n_done = i;
    return rc;
}

int qatpy_submit_ecdsa_many(qatpy_device *dev, qatpy_key *key, const uint8_t *digests,
                            size_t digest_len, size_t n, uint64_t tag0, size_t *n_done)
{
    size_t i = 0;
    int rc = QATPY_SUBMIT_OK;
    for (; i < n; i++) {
        rc = qatpy_submit_ecdsa(dev, key, digests + i * digest_len, digest_len, tag0 + i);
        if (rc != QATPY_SUBMIT_OK)
            break;
    }
    if (n_done)
        *n_done = i;
    return rc;
}

#define QPS_DRAIN_CHUNK 64

size_t qatpy_drain_arrays(qatpy_device *dev, uint64_t *tags, int32_t *status, int32_t *cpa_status,
                          uint32_t *lens, uint32_t *instance, uint8_t *results, size_t stride,
                          size_t max)
{
    qatpy_completion c[QPS_DRAIN_CHUNK];
    size_t total = 0;
    while (total < max) {
        size_t want = max - total < QPS_DRAIN_CHUNK ? max - total : QPS_DRAIN_CHUNK;
        size_t got = qatpy_drain(dev, c, results + total * stride, stride, want);
        for (size_t i = 0; i < got; i++) {
            tags[total + i] = c[i].tag;
            status[total + i] = c[i].status;
            cpa_status[total + i] = c[i].cpa_status;
            lens[total + i] = c[i].len;
            instance[total + i] = c[i].instance;
        }
        total += got;
        if (got < want)
            break;
    }
    return total;
}
