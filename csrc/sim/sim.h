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
    K_HEARTBEAT,
    K_HEARTBEAT_OVERDUE_MS,
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
    F_ECDSA_BITFLIP,
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
    R_EVENTS_REENTRANT,
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
    C_HB_CHECKS,
    C_HB_FAILURES,
    C_HB_UNSUPPORTED,
    C_EVENT_POLLS,
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

/* Values of knob compute_mode. */
enum sim_compute_mode { COMPUTE_REAL = 0, COMPUTE_REPLAY = 1 };
/* Values of knob user_start_fail: which real stderr text a failed start prints. */
enum sim_start_fail { START_OK = 0, START_FAIL_NO_VFIO = 1, START_FAIL_NO_DEVICES = 2 };

/* ---- requests ---------------------------------------------------------- */
enum sim_op { OP_RSA_DEC1 = 1, OP_RSA_DEC2, OP_RSA_ENC, OP_EC_SIGN, OP_EC_VERIFY };

/* A sync (NULL callback) job's handshake between its caller and the device. */
enum sim_sync_state {
    SYNC_WAITING = 0, /* the caller waits in sim_sync_wait */
    SYNC_DONE,        /* delivered or discarded: status is final, the caller frees */
    SYNC_ABANDONED    /* the caller timed out (RESOURCE): whoever finishes it frees */
};

/* An instance's reset cycle (a failed heartbeat check, fault restart,
 * qatpy_sim_restart_instance).  Like qatlib's, it advances only inside
 * icp_sal_poll_device_events, on the thread that calls it (heartbeat.c). */
enum sim_restart_phase {
    RESTART_NONE = 0,
    RESTART_ANNOUNCE, /* reset begun: submits refused; RESTARTING not yet delivered */
    RESTART_UNDERWAY  /* RESTARTING delivered and the instance in its error state:
                         every request in flight completes FAIL at the next polls;
                         RESTARTED once restart_until passed and none is left */
};

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
    enum sim_op op;
    int param;           /* RSA: operation size in bytes; EC: curve id */
    int sync;
    unsigned faults;     /* bit (1u << F_x) for per-response faults */
    void *cb;
    void *tag;
    void *opdata;
    sim_out out[2];
    CpaBoolean *pbool;   /* sync sign/verify status */
    uint64_t epoch;      /* instance teardown epoch at submit */
    uint64_t submit_ns;  /* accepted at (heartbeat: how long it has been on the device) */
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
    enum sim_sync_state sstate;
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
    /* started: cpaCyStart/StopInstance.  Stop only clears it (qatlib 26.08
     * sal_crypto.c): requests in flight stay on the device, keep their ring
     * slots, and a poll still delivers their responses. */
    sim_job *head, *tail;
    sim_job *lost;
    uint64_t epoch;
    CpaInstanceResponseMode mode;
    int efd;
    atomic_int inflight;
    pthread_mutex_t eng_mu;
    uint64_t eng_free[SIM_MAX_ENGINES];
    /* reset cycle, guarded by the reset lock (heartbeat.c) */
    atomic_int restarting;
    atomic_ullong restart_gen;
    enum sim_restart_phase restart_phase;
    uint64_t restart_until;
    CpaCyInstanceNotificationCbFunc notify_cb;
    void *notify_tag;
};

extern sim_inst g_inst[SIM_MAX_INSTANCES];
extern atomic_int g_ninst;

/* ---- functions called across files, file by file ------------------------ */

/* knobs.c */
void sim_init_once(void);
/* Should fault f fire now?  Consumes one scripted shot, else draws ppm. */
int sim_fault_fires(enum sim_fault f);
/* A per-request fault: fires only for requests within the fault scope (all
 * of them while no scope is set; see knobs.c). */
int sim_job_in_fault_scope(const sim_job *job);
int sim_job_fault_fires(const sim_job *job, enum sim_fault f);
uint64_t sim_random(void);
uint64_t sim_now_ns(void);

/* lifecycle.c: icp_sal_userStart / Stop, one-time init, fork */
/* Every entry point calls this first (knobs, instance locks, atfork). */
void sim_ensure_init(void);
void sim_life_lock(void);
void sim_life_unlock(void);
int sim_refcount(void);
int sim_is_started(void); /* icp_sal_userStart refcount > 0 */
/* The live instance a handle names, NULL if none (or the parent's, after fork). */
sim_inst *sim_resolve(CpaInstanceHandle h);

/* pipeline.c: dispatch, workers, latency timer, reset cycles */
/* Caller holds inst->state for reading; consumes job unless SUCCESS. */
CpaStatus sim_dispatch(sim_job *job);
void sim_job_free(sim_job *job);
/* The job left the device: its instance's and the global in-flight counts. */
void sim_inflight_done(sim_job *job);
/* Discard every job of a ->next chain: no callback, sync waiters get FAIL. */
void sim_discard_chain(sim_job *j);
/* Make an event-mode instance's fd readable. */
void sim_efd_signal(sim_inst *in);
/* Take every job of `in` that waits for a worker or for the latency timer
 * out of the pipeline (a ->next chain), for the error state of a reset. */
sim_job *sim_pipeline_take(sim_inst *in);
/* Earliest submit time of a job of `in` waiting for a worker or for the
 * latency timer, UINT64_MAX if none. */
uint64_t sim_pipeline_oldest(sim_inst *in);
/* Worker and timer threads at icp_sal_userStart (0 ok, -1 failed), and
 * their end at the last icp_sal_userStop (queued jobs discarded). */
int sim_pipeline_start(void);
void sim_pipeline_stop(void);
/* Once per process: the condition variables (CLOCK_MONOTONIC). */
void sim_pipeline_once(void);
/* Fork child handler: fresh locks (their owners may not exist here). */
void sim_pipeline_reinit_locks(void);
/* Fork child, before its own start: forget the parent's queues and threads
 * (no join, no free). */
void sim_pipeline_forget(void);

/* heartbeat.c: reset cycles, heartbeat checks, device events */
/* Begin a reset cycle of a live instance; -1 if one is already under way. */
int sim_begin_restart(sim_inst *inst);
/* The reset lock guards each instance's cycle and notify_cb/tag.  Lock
 * order: inst.state < reset < inst.list_mu. */
void sim_reset_lock(void);
void sim_reset_unlock(void);
/* Fork child handler. */
void sim_heartbeat_reinit_locks(void);

/* poll.c: delivery (icp_sal_CyPollInstance), sync waits, teardown */
/* A sync job after sim_dispatch accepted it: wait for its response. */
CpaStatus sim_sync_wait(sim_job *job);
/* icp_sal_userStop: discard what is on the device; no callback after. */
void sim_inst_teardown(sim_inst *in);
/* Fork child handler: this thread polls nothing. */
void sim_poll_atfork_child(void);

/* ops.c */
/* Worker thread: compute job's result into its snapshot. */
void sim_compute(simbn_ctx *c, sim_job *job);
/* Poller, at delivery: write the result to the caller's output buffers. */
void sim_write_outputs(sim_job *job);

/* replay.c */
void sim_job_hash(sim_job *job);
int sim_replay_lookup(sim_job *job);
void sim_replay_insert(const sim_job *job);
void sim_replay_clear(void);
long long sim_replay_entries(void);
void sim_replay_atfork_child(void);

/* Exported by the real libqat too, but not used by qatpy (not in qat_api.h). */
CpaStatus icp_sal_userStartMultiProcess(const char *pProcessName, CpaBoolean limitDevAccess);
CpaStatus icp_sal_CyPollAsymRing(CpaInstanceHandle instanceHandle, Cpa32U response_quota);

#endif /* QATPY_SIM_H */
