/*
 * Internals of the simulated libqat.so.4 (not exported: the version script
 * exports only cpa*, icp_sal_* and qatpy_sim_*).
 *
 * Pipeline of one request, mirroring the hardware:
 *   submit (caller thread: checks, snapshot of inputs, ring slot)
 *     -> worker thread (computes; skipped on a replay-cache hit)
 *     -> timer thread (holds the response until the modeled latency passed)
 *     -> instance response list (+ eventfd in event mode)
 *     -> icp_sal_CyPollInstance on the polling thread (writes outputs, callback).
 * Lock order: inst.poll_mu < inst.state (rwlock) < inst.list_mu; the worker
 * queue and timer locks are leaves (never held while taking another lock).
 */
#ifndef QATPY_SIM_H
#define QATPY_SIM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "../qat_abi.h"
#include "qatpy_sim.h"
#include "simbn.h"
#include "simmem.h"

#define SIM_VERSION "qatpy-sim " QATPY_VERSION /* -D from csrc/sim/build.py: qatpy/__init__.py */
#define SIM_MAX_INSTANCES 64
#define SIM_MAX_ENGINES 256
#define SIM_MAX_FIELDS 8
#define SIM_MAX_RANGES 13
#define SIM_POLL_CAP 10000

/* ---- knobs ------------------------------------------------------------ */
enum sim_knob {
    K_INSTANCES,
    K_RING_DEPTH,
    K_LATENCY_NS,
    K_ENGINES,
    K_COMPUTE_MODE,
    K_WORKERS,
    K_LEGACY_SIZES,
    K_SYNC_TIMEOUT_MS,
    K_SEED,
    K_NODES,
    K_INSTANCE_SVC,
    K_CAP_RSA,
    K_CAP_ECDSA,
    K_QAT_AVAILABLE,
    K_USER_START_FAIL,
    K_RESTART_MS,
    K_REPLAY_CACHE_MAX,
    K_REPLAY_ECDSA_IGNORE_K,
    K_MEM_QUARANTINE,
    K_COUNT
};

enum sim_fault {
    F_SUBMIT_RETRY,
    F_SUBMIT_FAIL,
    F_SUBMIT_RESTARTING,
    F_SUBMIT_UNSUPPORTED,
    F_CB_FAIL,
    F_ECDSA_MULT_FALSE,
    F_RSA_BITFLIP,
    F_LOST,
    F_POLL_FAIL,
    F_RESTART,
    F_USER_START_FAIL,
    F_ZERO_INSTANCES,
    F_COUNT
};

enum sim_rule {
    R_BAD_HANDLE,
    R_NOT_STARTED,
    R_NO_TRANSLATION,
    R_NULL_PARAM,
    R_ENUM,
    R_ZERO_LENGTH,
    R_DMA,
    R_DMA_FREED_INFLIGHT,
    R_RSA_SIZE,
    R_OUTPUT_SHORT,
    R_INPUT_RANGE,
    R_RSA_KEY,
    R_EC_CURVE,
    R_EC_SCALAR,
    R_EC_M_LENGTH,
    R_CAPABILITY,
    R_RESTARTING,
    R_POLL_REENTRANT,
    R_DMA_INHERITED,
    R_COUNT
};

enum sim_counter {
    C_SUBMITTED,
    C_COMPLETED_SUCCESS,
    C_COMPLETED_FAIL,
    C_COMPLETED_DISCARDED,
    C_MULTIPLY_FALSE,
    C_VERIFY_FALSE,
    C_INFLIGHT_MAX,
    C_RETRY_RETURNED,
    C_RING_FULL,
    C_SYNC_TIMEOUTS,
    C_POLLS,
    C_EC_M_CUT,
    C_REPLAY_HITS,
    C_REPLAY_MISSES,
    C_COMPUTED,
    C_RESTARTS,
    C_NOTIFY_RESTARTING,
    C_NOTIFY_RESTARTED,
    C_USER_STARTS,
    C_FORK_RESETS,
    C_COUNT
};

extern atomic_llong g_knob[K_COUNT];
extern atomic_llong g_fault_ppm[F_COUNT];
extern atomic_llong g_fault_next[F_COUNT];
extern atomic_llong g_ctr[C_COUNT];
extern atomic_llong g_refused[R_COUNT];
extern atomic_llong g_faults[F_COUNT];
extern atomic_llong g_inflight;

static inline long long knob(enum sim_knob k)
{
    return atomic_load_explicit(&g_knob[k], memory_order_relaxed);
}

static inline void ctr_add(enum sim_counter c, long long v)
{
    atomic_fetch_add_explicit(&g_ctr[c], v, memory_order_relaxed);
}

static inline CpaStatus refuse(enum sim_rule r, CpaStatus st)
{
    atomic_fetch_add_explicit(&g_refused[r], 1, memory_order_relaxed);
    return st;
}

void sim_init_once(void);
/* Should fault f fire now?  Consumes one scripted shot, else draws ppm. */
int sim_fault_fires(enum sim_fault f);
uint64_t sim_random(void);
uint64_t sim_now_ns(void);
int sim_is_started(void); /* icp_sal_userStart refcount > 0 */

/* ---- requests ---------------------------------------------------------- */
enum sim_op { OP_RSA_DEC1 = 1, OP_RSA_DEC2, OP_RSA_ENC, OP_EC_SIGN, OP_EC_VERIFY };

typedef struct sim_inst sim_inst;
typedef struct sim_job sim_job;

/* Where a result goes at completion: captured at submit, like the DMA
 * address the real library translated then. */
typedef struct {
    CpaFlatBuffer *fb; /* the caller's header, handed back to the callback */
    uint8_t *p;
    uint32_t len;
} sim_out;

struct sim_job {
    sim_job *next;
    sim_inst *inst;
    int op;
    int param;           /* RSA: operation size in bytes; EC: curve id */
    int sync;
    unsigned faults;     /* bit (1u << F_x) for per-response faults */
    void *cb;
    void *tag;
    void *opdata;
    sim_out out[2];
    CpaBoolean *pbool;   /* sync sign/verify status */
    uint64_t epoch;      /* instance stop epoch at submit */
    uint64_t restart_gen;
    uint64_t ready_ns;   /* 0 = as soon as computed */
    int computed;
    CpaStatus status;
    CpaBoolean flag;     /* multiplyStatus / verifyStatus */
    int nranges;
    qatpy_simmem_range ranges[SIM_MAX_RANGES];
    int nfields;
    uint32_t foff[SIM_MAX_FIELDS], flen[SIM_MAX_FIELDS];
    uint32_t snap_len;   /* bytes of input snapshot at data[0] */
    uint32_t res_len;    /* bytes of result at data[snap_len] */
    uint64_t hash;
    /* sync mode handshake (only initialised when sync) */
    pthread_mutex_t smu;
    pthread_cond_t scv;
    int sstate;          /* 0 waiting, 1 done, 2 abandoned by a timed-out caller */
    uint8_t data[];
};

struct sim_inst {
    int index;
    atomic_int live;
    atomic_int started;
    _Atomic(CpaVirtualToPhysical) v2p;
    Cpa32U node;
    pthread_rwlock_t state;   /* submit holds read, stop holds write */
    pthread_mutex_t poll_mu;  /* serialises pollers, held across callbacks */
    pthread_mutex_t list_mu;  /* response list, lost list, epoch, eventfd */
    sim_job *head, *tail;
    sim_job *lost;
    uint64_t epoch;
    int mode;                 /* CpaInstanceResponseMode */
    int efd;
    atomic_int inflight;
    pthread_mutex_t eng_mu;
    uint64_t eng_free[SIM_MAX_ENGINES];
    /* restart cycle, guarded by the timer lock */
    atomic_int restarting;
    atomic_ullong restart_gen;
    int restart_phase;        /* 0 none, 1 RESTARTING to announce, 2 waiting to end */
    uint64_t restart_until;
    CpaCyInstanceNotificationCbFunc notify_cb;
    void *notify_tag;
};

extern sim_inst g_inst[SIM_MAX_INSTANCES];
extern atomic_int g_ninst;

/* device.c */
sim_inst *sim_resolve(CpaInstanceHandle h);
CpaStatus sim_dispatch(sim_job *job);
void sim_job_free(sim_job *job);
int sim_begin_restart(sim_inst *inst);

/* replay.c */
void sim_job_hash(sim_job *job);
int sim_replay_lookup(sim_job *job);
void sim_replay_insert(const sim_job *job);
void sim_replay_clear(void);
void sim_replay_atfork_child(void);

#endif /* QATPY_SIM_H */
