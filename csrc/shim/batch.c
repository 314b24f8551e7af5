/*
 * Batch forms of submit and drain, built on the single-operation entry
 * points.  They exist for the cost model of the Python side: cffi releases
 * and re-acquires the GIL on every call, which is cheap alone but costs a
 * thread switch whenever the completion thread is waiting for the GIL, so
 * one call per batch instead of one per operation matters.
 */
#include <time.h>

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

/* The completion thread's wait.  Other drainers (a waiter in result(), an
 * event loop's eventfd reader) usually take completions within microseconds;
 * the completion thread exists for results nobody is waiting on (futures
 * with only callbacks).  So after new completions arrive it gives the
 * other drainers `grace_ns`, and only returns to Python if completions are
 * still unclaimed.  Waking Python for nothing would cost a GIL hand-off
 * against the very threads doing the work. */
uint64_t qatpy_wait_unclaimed(qatpy_device *dev, uint64_t seen, int64_t grace_ns,
                              int64_t timeout_ns)
{
    if (!dev)
        return 0;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t start = (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec;
    int64_t left = timeout_ns;
    for (;;) {
        uint64_t s = qatpy_wait(dev, seen, left);
        if (s <= seen)
            return s; /* timed out, or closed with nothing new */
        if (grace_ns > 0) {
            struct timespec g = {(time_t)(grace_ns / 1000000000LL), (long)(grace_ns % 1000000000LL)};
            nanosleep(&g, NULL);
        }
        pthread_mutex_lock(&dev->ring_lock);
        uint32_t waiting = dev->ring_count;
        bool closed = dev->ring_closed;
        pthread_mutex_unlock(&dev->ring_lock);
        if (waiting > 0 || closed || qps_forked(dev))
            return atomic_load(&dev->seq);
        seen = s;
        if (timeout_ns >= 0) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            left = timeout_ns - ((int64_t)now.tv_sec * 1000000000LL + now.tv_nsec - start);
            if (left <= 0)
                return atomic_load(&dev->seq);
        }
    }
}
