/*
 * Engine objects: one per Python Engine, holding its policy and the counters
 * of signatures made for it in C (the ssl provider).  See the end of
 * qatpy_shim.h for the contract.
 *
 * Invariants:
 *   - `refs` counts Python's handle plus one per provider key; the struct
 *     is freed only by the last qatpy_engine_release, so a key's pointer is
 *     valid for as long as the key lives, whatever Python did.
 *   - Nothing here touches the device's resources: `dev` is held by a
 *     struct reference (qps_dev_unref) so the pointer stays valid; the
 *     device path (phase 2) must check the device is open before using it.
 *   - Every field read on the signing path is atomic or set before the
 *     engine is published, so any thread may sign without a lock.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "engine.h"
#include "shim_internal.h"

struct qatpy_engine {
    _Atomic uint32_t refs;
    _Atomic int closed;
    unsigned fork_gen;            /* engine_fork_gen when made */
    qatpy_device *dev;            /* struct reference, NULL for software */
    qatpy_engine_config cfg;
    _Atomic uint64_t cnt[QATPY_ECNT_N];
};

/* Bumped in every forked child, so an engine can tell it belongs to the
 * parent without a getpid() per signature.  Own handler: the shim's runs
 * only once qatlib was loaded, and software engines never load it. */
static _Atomic unsigned engine_fork_gen;
static pthread_once_t engine_atfork_once = PTHREAD_ONCE_INIT;

static void engine_atfork_child(void) { atomic_fetch_add(&engine_fork_gen, 1); }
static void engine_register_atfork(void) { pthread_atfork(NULL, NULL, engine_atfork_child); }

qatpy_engine *qatpy_engine_new(qatpy_device *dev, const qatpy_engine_config *cfg)
{
    if (!cfg || cfg->fallback < QATPY_FALLBACK_NEVER ||
        cfg->fallback > QATPY_FALLBACK_ON_ERROR_OR_OVERFLOW ||
        cfg->deadline_ns > (uint64_t)QATPY_MAX_DEADLINE_NS)
        return NULL;
    pthread_once(&engine_atfork_once, engine_register_atfork);
    qatpy_engine *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    atomic_init(&e->refs, 1);
    atomic_init(&e->closed, 0);
    for (int i = 0; i < QATPY_ECNT_N; i++)
        atomic_init(&e->cnt[i], 0);
    e->cfg = *cfg;
    e->fork_gen = atomic_load(&engine_fork_gen);
    if (dev) {
        atomic_fetch_add(&dev->refs, 1);
        e->dev = dev;
    }
    return e;
}

void qatpy_engine_ref(qatpy_engine *e) { atomic_fetch_add(&e->refs, 1); }

void qatpy_engine_close(qatpy_engine *e)
{
    if (e)
        atomic_store(&e->closed, 1);
}

void qatpy_engine_release(qatpy_engine *e)
{
    if (!e || atomic_fetch_sub(&e->refs, 1) != 1)
        return;
    /* In a forked child the device struct is the parent's copy, whose
     * mutexes may have been held by threads that do not exist here: leave
     * it alone (as the shim does with the parent's device). */
    if (e->dev && e->fork_gen == atomic_load(&engine_fork_gen))
        qps_dev_unref(e->dev);
    free(e);
}

void qatpy_engine_count(qatpy_engine *e, int counter)
{
    if (counter >= 0 && counter < QATPY_ECNT_N)
        atomic_fetch_add_explicit(&e->cnt[counter], 1, memory_order_relaxed);
}

int qatpy_engine_unusable(const qatpy_engine *e)
{
    if (e->fork_gen != atomic_load_explicit(&engine_fork_gen, memory_order_relaxed))
        return QATPY_ECNT_FB_FORKED;
    if (atomic_load_explicit(&e->closed, memory_order_acquire))
        return QATPY_ECNT_FB_ENGINE_CLOSED;
    return 0;
}

int qatpy_engine_has_device(const qatpy_engine *e) { return e->dev != NULL; }

struct qatpy_device *qatpy_engine_device(const qatpy_engine *e) { return e->dev; }

int qatpy_engine_may_fall_back(const qatpy_engine *e, int reason)
{
    if (reason == QATPY_ECNT_FB_UNSUPPORTED || reason == QATPY_ECNT_FB_NO_DEVICE_KEY)
        return 1;
    if (reason == QATPY_ECNT_FB_OVERFLOW)
        return e->cfg.fallback == QATPY_FALLBACK_ON_ERROR_OR_OVERFLOW;
    return e->cfg.fallback != QATPY_FALLBACK_NEVER;
}

const qatpy_engine_config *qatpy_engine_config_of(const qatpy_engine *e) { return &e->cfg; }

void qatpy_engine_stats(qatpy_engine *e, qatpy_engine_stats_t *out)
{
    uint64_t v[QATPY_ECNT_N];
    for (int i = 0; i < QATPY_ECNT_N; i++)
        v[i] = atomic_load_explicit(&e->cnt[i], memory_order_relaxed);
    out->signs = v[QATPY_ECNT_SIGNS];
    out->device = v[QATPY_ECNT_DEVICE];
    out->software = v[QATPY_ECNT_SOFTWARE];
    out->failed = v[QATPY_ECNT_FAILED];
    out->fallback_unsupported = v[QATPY_ECNT_FB_UNSUPPORTED];
    out->fallback_no_device_key = v[QATPY_ECNT_FB_NO_DEVICE_KEY];
    out->fallback_engine_closed = v[QATPY_ECNT_FB_ENGINE_CLOSED];
    out->fallback_forked = v[QATPY_ECNT_FB_FORKED];
    out->fallback_device_error = v[QATPY_ECNT_FB_DEVICE_ERROR];
    out->fallback_verify_failed = v[QATPY_ECNT_FB_VERIFY_FAILED];
    out->fallback_deadline = v[QATPY_ECNT_FB_DEADLINE];
    out->fallback_overflow = v[QATPY_ECNT_FB_OVERFLOW];
    out->closed = (uint32_t)atomic_load(&e->closed);
    out->has_device = e->dev != NULL;
    out->refs = atomic_load(&e->refs);
}
