/*
 * Replay mode: each distinct request is computed once, then answered from
 * this cache at the modeled latency, so a benchmark measures the library
 * and not the simulator's arithmetic.  Keyed by the full input snapshot
 * (hash first, then an exact compare), so a hit is always the correct
 * answer.  Entries hold key material and are wiped when dropped.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "sim.h"

#define REPLAY_BUCKETS 16384u

typedef struct centry {
    struct centry *next;
    uint64_t hash;
    enum sim_op op;
    int param, nkey;
    uint32_t flen[SIM_MAX_FIELDS];
    uint32_t key_len, res_len;
    CpaBoolean flag;
    size_t size;
    uint8_t data[]; /* key bytes, then result */
} centry;

static pthread_rwlock_t g_lock = PTHREAD_RWLOCK_INITIALIZER;
static centry *g_buckets[REPLAY_BUCKETS];
static long long g_count;

/* fork child: the lock may have been held by a thread that is gone; the
 * entries themselves stay valid (written only under the write lock). */
void sim_replay_atfork_child(void)
{
    pthread_rwlock_init(&g_lock, NULL);
}

/* Fields that identify the request: all of them, except k for ECDSA sign
 * when replay.ecdsa_ignore_k is set (k is always the last sign field). */
static int key_fields(const sim_job *job)
{
    if (job->op == OP_EC_SIGN && knob(K_REPLAY_ECDSA_IGNORE_K))
        return job->nfields - 1;
    return job->nfields;
}

static uint32_t key_len(const sim_job *job, int nkey)
{
    return nkey == job->nfields ? job->snap_len : job->foff[nkey];
}

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v;
    h *= 0x9E3779B97F4A7C15ull;
    return h ^ (h >> 32);
}

void sim_job_hash(sim_job *job)
{
    int nkey = key_fields(job);
    uint32_t len = key_len(job, nkey);
    uint64_t h = mix(0x51AB5EEDull, (uint64_t)job->op << 32 | (uint32_t)job->param);
    for (int i = 0; i < nkey; i++)
        h = mix(h, job->flen[i]);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, job->data + i, 8);
        h = mix(h, w);
    }
    uint64_t tail = 0;
    memcpy(&tail, job->data + i, len - i);
    job->hash = mix(h, tail ^ len);
}

static int matches(const centry *e, const sim_job *job, int nkey, uint32_t klen)
{
    if (e->hash != job->hash || e->op != job->op || e->param != job->param || e->nkey != nkey ||
        e->key_len != klen || e->res_len != job->res_len)
        return 0;
    for (int i = 0; i < nkey; i++)
        if (e->flen[i] != job->flen[i])
            return 0;
    return memcmp(e->data, job->data, klen) == 0;
}

int sim_replay_lookup(sim_job *job)
{
    int nkey = key_fields(job);
    uint32_t klen = key_len(job, nkey);
    int hit = 0;
    pthread_rwlock_rdlock(&g_lock);
    for (const centry *e = g_buckets[job->hash % REPLAY_BUCKETS]; e != NULL; e = e->next) {
        if (matches(e, job, nkey, klen)) {
            memcpy(job->data + job->snap_len, e->data + e->key_len, e->res_len);
            job->flag = e->flag;
            job->status = CPA_STATUS_SUCCESS;
            hit = 1;
            break;
        }
    }
    pthread_rwlock_unlock(&g_lock);
    return hit;
}

void sim_replay_insert(const sim_job *job)
{
    int nkey = key_fields(job);
    uint32_t klen = key_len(job, nkey);
    size_t size = sizeof(centry) + klen + job->res_len;
    centry *e = malloc(size);
    if (e == NULL)
        return;
    e->hash = job->hash;
    e->op = job->op;
    e->param = job->param;
    e->nkey = nkey;
    memcpy(e->flen, job->flen, sizeof(e->flen));
    e->key_len = klen;
    e->res_len = job->res_len;
    e->flag = job->flag;
    e->size = size;
    memcpy(e->data, job->data, klen);
    memcpy(e->data + klen, job->data + job->snap_len, job->res_len);
    int stored = 0;
    pthread_rwlock_wrlock(&g_lock);
    if (g_count < knob(K_REPLAY_CACHE_MAX)) {
        centry **b = &g_buckets[job->hash % REPLAY_BUCKETS];
        int dup = 0;
        for (const centry *x = *b; x != NULL; x = x->next)
            if (matches(x, job, nkey, klen)) {
                dup = 1;
                break;
            }
        if (!dup) {
            e->next = *b;
            *b = e;
            g_count++;
            stored = 1;
        }
    }
    pthread_rwlock_unlock(&g_lock);
    if (!stored) {
        explicit_bzero(e, size);
        free(e);
    }
}

void sim_replay_clear(void)
{
    pthread_rwlock_wrlock(&g_lock);
    for (unsigned i = 0; i < REPLAY_BUCKETS; i++) {
        centry *e = g_buckets[i];
        g_buckets[i] = NULL;
        while (e != NULL) {
            centry *next = e->next;
            explicit_bzero(e, e->size);
            free(e);
            e = next;
        }
    }
    g_count = 0;
    pthread_rwlock_unlock(&g_lock);
}

long long sim_replay_entries(void)
{
    pthread_rwlock_rdlock(&g_lock);
    long long n = g_count;
    pthread_rwlock_unlock(&g_lock);
    return n;
}
