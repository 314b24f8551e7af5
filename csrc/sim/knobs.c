/*
 * Knobs, counters, fault plans and the qatpy_sim_* control API.
 *
 * Every knob is one relaxed atomic read on the hot path.  Defaults can be
 * overridden per process by QATPY_SIM_<NAME> environment variables (name
 * upper-cased, '.' -> '_'), read at first use and again by qatpy_sim_reset.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sim.h"

atomic_llong g_knob[K_COUNT];
atomic_llong g_fault_ppm[F_COUNT];
atomic_llong g_fault_next[F_COUNT];
atomic_llong g_ctr[C_COUNT];
atomic_llong g_refused[R_COUNT];
atomic_llong g_faults[F_COUNT];
atomic_llong g_inflight;

typedef struct {
    const char *name;
    long long def, min, max;
    int start_only; /* refused while icp_sal_userStart is in effect */
} knob_def;

static const knob_def k_knobs[K_COUNT] = {
    [K_INSTANCES] = {"instances", 1, 0, SIM_MAX_INSTANCES, 1},
    [K_RING_DEPTH] = {"ring_depth", 64, 2, 1 << 20, 0},
    [K_LATENCY_NS] = {"latency_ns", 0, 0, 60000000000LL, 0},
    [K_ENGINES] = {"engines", 8, 1, SIM_MAX_ENGINES, 0},
    [K_COMPUTE_MODE] = {"compute_mode", 0, 0, 1, 0},
    [K_WORKERS] = {"workers", 2, 1, 64, 1},
    [K_LEGACY_SIZES] = {"legacy_sizes", 0, 0, 1, 0},
    [K_SYNC_TIMEOUT_MS] = {"sync_timeout_ms", 2000, 1, 600000, 0},
    [K_SEED] = {"seed", 0, LLONG_MIN, LLONG_MAX, 0},
    [K_NODES] = {"nodes", 1, 1, 64, 1},
    [K_INSTANCE_SVC] = {"instance_svc", CPA_ACC_SVC_TYPE_CRYPTO_ASYM, CPA_ACC_SVC_TYPE_CRYPTO,
                        CPA_ACC_SVC_TYPE_CRYPTO_ASYM, 1},
    [K_CAP_RSA] = {"cap.rsa", 1, 0, 1, 0},
    [K_CAP_ECDSA] = {"cap.ecdsa", 1, 0, 1, 0},
    [K_QAT_AVAILABLE] = {"qat_available", 1, 0, 1, 0},
    [K_USER_START_FAIL] = {"user_start_fail", 0, 0, 2, 0},
    [K_RESTART_MS] = {"restart_ms", 20, 0, 600000, 0},
    [K_REPLAY_CACHE_MAX] = {"replay.cache_max", 4096, 0, 1 << 22, 0},
    [K_REPLAY_ECDSA_IGNORE_K] = {"replay.ecdsa_ignore_k", 0, 0, 1, 0},
    [K_MEM_QUARANTINE] = {"mem.quarantine", 0, 0, 1, 0},
    [K_HEARTBEAT] = {"heartbeat", 1, 0, 1, 0},
    [K_HEARTBEAT_OVERDUE_MS] = {"heartbeat_overdue_ms", 100, 1, 600000, 0},
};

static const char *const k_fault_names[F_COUNT] = {
    [F_SUBMIT_RETRY] = "submit_retry",
    [F_SUBMIT_FAIL] = "submit_fail",
    [F_SUBMIT_RESTARTING] = "submit_restarting",
    [F_SUBMIT_UNSUPPORTED] = "submit_unsupported",
    [F_CB_FAIL] = "cb_fail",
    [F_ECDSA_MULT_FALSE] = "ecdsa_mult_false",
    [F_RSA_BITFLIP] = "rsa_bitflip",
    [F_ECDSA_BITFLIP] = "ecdsa_bitflip",
    [F_LOST] = "lost",
    [F_POLL_FAIL] = "poll_fail",
    [F_RESTART] = "restart",
    [F_USER_START_FAIL] = "user_start_fail",
    [F_ZERO_INSTANCES] = "zero_instances",
};

static const char *const k_rule_names[R_COUNT] = {
    [R_BAD_HANDLE] = "bad_handle",
    [R_NOT_STARTED] = "not_started",
    [R_NO_TRANSLATION] = "no_translation",
    [R_NULL_PARAM] = "null_param",
    [R_ENUM] = "enum",
    [R_ZERO_LENGTH] = "zero_length",
    [R_DMA] = "dma",
    [R_DMA_FREED_INFLIGHT] = "dma_freed_inflight",
    [R_RSA_SIZE] = "rsa_size",
    [R_OUTPUT_SHORT] = "output_short",
    [R_INPUT_RANGE] = "input_range",
    [R_RSA_KEY] = "rsa_key",
    [R_EC_CURVE] = "ec_curve",
    [R_EC_SCALAR] = "ec_scalar",
    [R_EC_M_LENGTH] = "ec_m_length",
    [R_CAPABILITY] = "capability",
    [R_RESTARTING] = "restarting",
    [R_POLL_REENTRANT] = "poll_reentrant",
    [R_DMA_INHERITED] = "dma_inherited",
    [R_EVENTS_REENTRANT] = "events_reentrant",
};

static const char *const k_ctr_names[C_COUNT] = {
    [C_SUBMITTED] = "submitted",
    [C_COMPLETED_SUCCESS] = "completed.success",
    [C_COMPLETED_FAIL] = "completed.fail",
    [C_COMPLETED_DISCARDED] = "completed.discarded",
    [C_MULTIPLY_FALSE] = "completed.multiply_false",
    [C_VERIFY_FALSE] = "completed.verify_false",
    [C_INFLIGHT_MAX] = "inflight_max",
    [C_RETRY_RETURNED] = "retry_returned",
    [C_RING_FULL] = "ring_full",
    [C_SYNC_TIMEOUTS] = "sync_timeouts",
    [C_POLLS] = "polls",
    [C_EC_M_CUT] = "ec_m_cut",
    [C_REPLAY_HITS] = "replay.hits",
    [C_REPLAY_MISSES] = "replay.misses",
    [C_COMPUTED] = "computed",
    [C_RESTARTS] = "restarts",
    [C_NOTIFY_RESTARTING] = "notify.restarting",
    [C_NOTIFY_RESTARTED] = "notify.restarted",
    [C_USER_STARTS] = "user_starts",
    [C_FORK_RESETS] = "fork_resets",
    [C_HB_CHECKS] = "heartbeat.checks",
    [C_HB_FAILURES] = "heartbeat.failures",
    [C_HB_UNSUPPORTED] = "heartbeat.unsupported",
    [C_EVENT_POLLS] = "device_events.polls",
};

/* Read-only values computed on demand. */
enum { D_INFLIGHT, D_STARTED, D_INSTANCES_LIVE, D_REPLAY_ENTRIES, D_MEM_LIVE_ALLOCS,
       D_MEM_LIVE_BYTES, D_MEM_TOTAL_ALLOCS, D_MEM_ALLOC_REFUSED, D_MEM_FREED_WIPED,
       D_MEM_FREED_UNWIPED, D_MEM_KEY_FREED_UNWIPED, D_MEM_BAD_FREE, D_MEM_FREE_INHERITED,
       D_COUNT };
static const char *const k_derived_names[D_COUNT] = {
    "inflight", "started", "instances_live", "replay.entries", "mem.live_allocs",
    "mem.live_bytes", "mem.total_allocs", "mem.alloc_refused", "mem.freed_wiped",
    "mem.freed_unwiped", "mem.key_freed_unwiped", "mem.bad_free", "mem.free_inherited",
};

/* "fault.<kind>.ppm" / "fault.<kind>.next", "refused.<rule>", "faults.<kind>" */
static char g_fault_knob_names[F_COUNT][2][48];
static char g_refused_names[R_COUNT][40];
static char g_faults_names[F_COUNT][40];

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static atomic_ullong g_rng_ctr;

static int env_value(const char *name, long long *out)
{
    char env[96] = "QATPY_SIM_";
    size_t n = strlen(env);
    for (const char *c = name; *c && n + 1 < sizeof(env); c++)
        env[n++] = *c == '.' ? '_' : (char)toupper((unsigned char)*c);
    env[n] = '\0';
    const char *v = getenv(env);
    if (v == NULL || *v == '\0')
        return 0;
    char *end = NULL;
    errno = 0;
    long long x = strtoll(v, &end, 0);
    if (errno != 0 || end == v || *end != '\0') {
        fprintf(stderr, "qatpy-sim: ignoring %s=%s (not an integer)\n", env, v);
        return 0;
    }
    *out = x;
    return 1;
}

static void load_defaults(void)
{
    long long v;
    for (int k = 0; k < K_COUNT; k++) {
        long long x = k_knobs[k].def;
        if (env_value(k_knobs[k].name, &v) && v >= k_knobs[k].min && v <= k_knobs[k].max)
            x = v;
        atomic_store(&g_knob[k], x);
    }
    for (int f = 0; f < F_COUNT; f++) {
        atomic_store(&g_fault_ppm[f], env_value(g_fault_knob_names[f][0], &v) && v >= 0 && v <= 1000000 ? v : 0);
        atomic_store(&g_fault_next[f], env_value(g_fault_knob_names[f][1], &v) && v >= 0 ? v : 0);
    }
    qatpy_simmem_set_quarantine((int)knob(K_MEM_QUARANTINE));
}

static void init_once(void)
{
    for (int f = 0; f < F_COUNT; f++) {
        snprintf(g_fault_knob_names[f][0], sizeof(g_fault_knob_names[f][0]), "fault.%s.ppm", k_fault_names[f]);
        snprintf(g_fault_knob_names[f][1], sizeof(g_fault_knob_names[f][1]), "fault.%s.next", k_fault_names[f]);
        snprintf(g_faults_names[f], sizeof(g_faults_names[f]), "faults.%s", k_fault_names[f]);
    }
    for (int r = 0; r < R_COUNT; r++)
        snprintf(g_refused_names[r], sizeof(g_refused_names[r]), "refused.%s", k_rule_names[r]);
    load_defaults();
}

void sim_init_once(void)
{
    pthread_once(&g_once, init_once);
}

uint64_t sim_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t sim_random(void)
{
    /* splitmix64 over (seed, draw number): reproducible for one seed when
     * draws happen in the same order. */
    uint64_t z = (uint64_t)knob(K_SEED) +
                 (atomic_fetch_add_explicit(&g_rng_ctr, 1, memory_order_relaxed) + 1) *
                     0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* ---- fault scope ----------------------------------------------------------
 * Tests scope a fault plan to one engine's keys: the shim registers the DMA
 * blocks of those keys ("fault.scope.add" = address), and while the set is
 * not empty the per-request faults fire only on requests that use one of
 * them (a test hook, like the fault plans themselves; not device behaviour).
 * "fault.scope.on" turns scoping on with an empty set (no request is in
 * scope until a key is added); "fault.scope.clear" turns it off.  The set is
 * small and changes rarely: a mutex, and an atomic flag so an unscoped
 * device costs one load per request. */
#define SIM_MAX_SCOPE 256
static pthread_mutex_t g_scope_mu = PTHREAD_MUTEX_INITIALIZER;
static const void *g_scope[SIM_MAX_SCOPE];
static int g_nscope;
static atomic_int g_scope_on;

static int scope_change(const char *what, long long value)
{
    const void *p = (const void *)(uintptr_t)value;
    int rc = 0;
    int on = atomic_load(&g_scope_on);
    pthread_mutex_lock(&g_scope_mu);
    int n = g_nscope;
    if (strcmp(what, "on") == 0) {
        on = 1;
    } else if (strcmp(what, "add") == 0) {
        if (!p || n == SIM_MAX_SCOPE) {
            rc = -1;
        } else {
            g_scope[n++] = p;
            on = 1;
        }
    } else if (strcmp(what, "remove") == 0) {
        rc = -1;
        for (int i = 0; i < n; i++)
            if (g_scope[i] == p) {
                g_scope[i] = g_scope[--n];
                rc = 0;
                break;
            }
    } else if (strcmp(what, "clear") == 0) {
        n = 0;
        on = 0;
    } else {
        rc = -1;
    }
    g_nscope = n;
    atomic_store(&g_scope_on, on);
    pthread_mutex_unlock(&g_scope_mu);
    return rc;
}

int sim_job_in_fault_scope(const sim_job *job)
{
    if (!atomic_load_explicit(&g_scope_on, memory_order_relaxed))
        return 1;
    int in = 0;
    pthread_mutex_lock(&g_scope_mu);
    int n = g_nscope;
    for (int r = 0; r < job->nranges && !in; r++)
        if (job->ranges[r].is_key)
            for (int i = 0; i < n && !in; i++)
                in = g_scope[i] == job->ranges[r].p;
    pthread_mutex_unlock(&g_scope_mu);
    return in;
}

int sim_job_fault_fires(const sim_job *job, enum sim_fault f)
{
    return sim_job_in_fault_scope(job) && sim_fault_fires(f);
}

int sim_fault_fires(enum sim_fault f)
{
    int fired = 0;
    long long n = atomic_load_explicit(&g_fault_next[f], memory_order_relaxed);
    while (n > 0) {
        if (atomic_compare_exchange_weak(&g_fault_next[f], &n, n - 1)) {
            fired = 1;
            break;
        }
    }
    if (!fired) {
        long long ppm = atomic_load_explicit(&g_fault_ppm[f], memory_order_relaxed);
        if (ppm > 0 && (long long)(sim_random() % 1000000u) < ppm)
            fired = 1;
    }
    if (fired)
        atomic_fetch_add_explicit(&g_faults[f], 1, memory_order_relaxed);
    return fired;
}

static int find_knob(const char *name)
{
    for (int k = 0; k < K_COUNT; k++)
        if (strcmp(name, k_knobs[k].name) == 0)
            return k;
    return -1;
}

int qatpy_sim_set(const char *name, long long value)
{
    sim_init_once();
    if (name == NULL)
        return -1;
    if (strncmp(name, "fault.scope.", 12) == 0)
        return scope_change(name + 12, value);
    for (int f = 0; f < F_COUNT; f++) {
        if (strcmp(name, g_fault_knob_names[f][0]) == 0) {
            if (value < 0 || value > 1000000)
                return -1;
            atomic_store(&g_fault_ppm[f], value);
            return 0;
        }
        if (strcmp(name, g_fault_knob_names[f][1]) == 0) {
            if (value < 0)
                return -1;
            atomic_store(&g_fault_next[f], value);
            return 0;
        }
    }
    int k = find_knob(name);
    if (k < 0 || value < k_knobs[k].min || value > k_knobs[k].max)
        return -1;
    if (k == K_INSTANCE_SVC && value != CPA_ACC_SVC_TYPE_CRYPTO && value != CPA_ACC_SVC_TYPE_CRYPTO_ASYM)
        return -1;
    int rc = 0;
    sim_life_lock();
    if (k_knobs[k].start_only && sim_refcount() > 0)
        rc = -2;
    else
        atomic_store(&g_knob[k], value);
    sim_life_unlock();
    if (rc == 0 && k == K_MEM_QUARANTINE)
        qatpy_simmem_set_quarantine((int)value);
    return rc;
}

static long long derived(int d)
{
    qatpy_simmem_stats ms;
    qatpy_simmem_stats_get(&ms);
    switch (d) {
    case D_INFLIGHT: return atomic_load(&g_inflight);
    case D_STARTED: return sim_refcount();
    case D_INSTANCES_LIVE: {
        long long n = 0;
        for (int i = 0; i < SIM_MAX_INSTANCES; i++)
            n += atomic_load(&g_inst[i].live);
        return n;
    }
    case D_REPLAY_ENTRIES: return sim_replay_entries();
    case D_MEM_LIVE_ALLOCS: return ms.live_allocs;
    case D_MEM_LIVE_BYTES: return ms.live_bytes;
    case D_MEM_TOTAL_ALLOCS: return ms.total_allocs;
    case D_MEM_ALLOC_REFUSED: return ms.alloc_refused;
    case D_MEM_FREED_WIPED: return ms.freed_wiped;
    case D_MEM_FREED_UNWIPED: return ms.freed_unwiped;
    case D_MEM_KEY_FREED_UNWIPED: return ms.key_freed_unwiped;
    case D_MEM_FREE_INHERITED: return ms.free_inherited;
    default: return ms.bad_free;
    }
}

int qatpy_sim_get(const char *name, long long *out)
{
    sim_init_once();
    if (name == NULL || out == NULL)
        return -1;
    int k = find_knob(name);
    if (k >= 0) {
        *out = knob((enum sim_knob)k);
        return 0;
    }
    for (int f = 0; f < F_COUNT; f++) {
        if (strcmp(name, g_fault_knob_names[f][0]) == 0) {
            *out = atomic_load(&g_fault_ppm[f]);
            return 0;
        }
        if (strcmp(name, g_fault_knob_names[f][1]) == 0) {
            *out = atomic_load(&g_fault_next[f]);
            return 0;
        }
        if (strcmp(name, g_faults_names[f]) == 0) {
            *out = atomic_load(&g_faults[f]);
            return 0;
        }
    }
    for (int c = 0; c < C_COUNT; c++)
        if (strcmp(name, k_ctr_names[c]) == 0) {
            *out = atomic_load(&g_ctr[c]);
            return 0;
        }
    for (int r = 0; r < R_COUNT; r++)
        if (strcmp(name, g_refused_names[r]) == 0) {
            *out = atomic_load(&g_refused[r]);
            return 0;
        }
    for (int d = 0; d < D_COUNT; d++)
        if (strcmp(name, k_derived_names[d]) == 0) {
            *out = derived(d);
            return 0;
        }
    return -1;
}

int qatpy_sim_reset(void)
{
    sim_init_once();
    sim_life_lock();
    if (sim_refcount() > 0) {
        sim_life_unlock();
        return -1;
    }
    load_defaults();
    for (int c = 0; c < C_COUNT; c++)
        atomic_store(&g_ctr[c], 0);
    for (int r = 0; r < R_COUNT; r++)
        atomic_store(&g_refused[r], 0);
    for (int f = 0; f < F_COUNT; f++)
        atomic_store(&g_faults[f], 0);
    atomic_store(&g_rng_ctr, 0);
    qatpy_simmem_stats_reset();
    sim_replay_clear();
    scope_change("clear", 0);
    sim_life_unlock();
    return 0;
}

const char *qatpy_sim_version(void)
{
    return SIM_VERSION;
}

const char *qatpy_sim_name(int i)
{
    sim_init_once();
    if (i < 0)
        return NULL;
    if (i < K_COUNT)
        return k_knobs[i].name;
    i -= K_COUNT;
    if (i < 2 * F_COUNT)
        return g_fault_knob_names[i / 2][i % 2];
    i -= 2 * F_COUNT;
    if (i < C_COUNT)
        return k_ctr_names[i];
    i -= C_COUNT;
    if (i < D_COUNT)
        return k_derived_names[i];
    i -= D_COUNT;
    if (i < R_COUNT)
        return g_refused_names[i];
    i -= R_COUNT;
    if (i < F_COUNT)
        return g_faults_names[i];
    return NULL;
}

long long qatpy_sim_mem_freed_nonzero(const void *p)
{
    return qatpy_simmem_freed_nonzero(p);
}
