/*
 * Private declarations shared by the shim's C files (never fed to cffi).
 *
 * Ownership map (who frees what):
 *   - The library table (qps_lib) is process-wide; the handles are never
 *     dlclosed once a load succeeded, so function pointers stay valid for
 *     every device, key and thread that captured them.
 *   - A device owns its instances, their DMA (curve constants, request
 *     buffer pools), the request slots, the completion ring and the eventfd.
 *     All of that is freed by qatpy_device_free.
 *   - A key owns its per-instance DMA copies of the private parts.  It is
 *     referenced by Python (one ref) and by every request slot using it
 *     (one ref each); the last unref wipes and frees the DMA.  A key also
 *     holds a reference on the device *struct* (not on its resources), so
 *     qatpy_key_release stays safe after qatpy_device_free: device_free
 *     wipes and frees every key's DMA itself (no request can use it any
 *     more), and a later key release frees only the key's own malloc
 *     memory and drops the last device-struct reference.
 *   - USDM memory does not depend on icp_sal_userStart, so DMA may be
 *     freed after icp_sal_userStop; it must only outlive the last moment
 *     the device can touch it: icp_sal_userStop (cpaCyStopInstance leaves
 *     requests in the rings), or the completion of the request using it --
 *     an answer, or the FAIL a reset's error state gives every request in
 *     flight (recover.c).
 */
#ifndef QATPY_SHIM_INTERNAL_H
#define QATPY_SHIM_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qat_abi.h"
#include "qatpy_shim.h"

/* ---- library table --------------------------------------------------- */

/* Needed for anything to work; a missing one fails qatpy_lib_load. */
#define QPS_REQUIRED_QAT(X)                                                                  \
    X(icp_sal_userStart)                                                                     \
    X(icp_sal_userStop)                                                                      \
    X(icp_sal_userIsQatAvailable)                                                            \
    X(cpaCyGetNumInstances)                                                                  \
    X(cpaCyGetInstances)                                                                     \
    X(cpaCyInstanceGetInfo2)                                                                 \
    X(cpaCyQueryCapabilities)                                                                \
    X(cpaCySetAddressTranslation)                                                            \
    X(cpaCyStartInstance)                                                                    \
    X(cpaCyStopInstance)                                                                     \
    X(cpaCyRsaDecrypt)                                                                       \
    X(cpaCyEcdsaSignRS)                                                                      \
    X(icp_sal_CyPollInstance)

/* Looked up but optional: newer API (response mode, event fd) or calls the
 * shim can do without (device events and the heartbeat: recover.c).  NULL
 * pointer = not available ("HAS" = non-NULL). */
#define QPS_OPTIONAL_QAT(X)                                                                  \
    X(cpaGetNumInstances)                                                                    \
    X(cpaGetInstances)                                                                       \
    X(cpaCyInstanceSetNotificationCb)                                                        \
    X(cpaCyGetStatusText)                                                                    \
    X(cpaInstanceSetResponseMode)                                                            \
    X(cpaInstanceGetResponseMode)                                                            \
    X(icp_sal_CyGetFileDescriptor)                                                           \
    X(icp_sal_CyPutFileDescriptor)                                                           \
    X(cpaCyRsaEncrypt)                                                                       \
    X(cpaCyEcdsaVerify)                                                                      \
    X(icp_sal_poll_device_events)                                                            \
    X(icp_sal_check_device)                                                                  \
    X(icp_sal_check_all_devices)

#define QPS_REQUIRED_USDM(X)                                                                 \
    X(qaeMemAllocNUMA)                                                                       \
    X(qaeMemFreeNUMA)                                                                        \
    X(qaeVirtToPhysNUMA)

typedef int (*qps_sim_set_fn)(const char *, long long);
typedef int (*qps_sim_get_fn)(const char *, long long *);
typedef int (*qps_sim_reset_fn)(void);

struct qps_lib {
    void *qat;
    void *usdm;
#define QPS_FIELD(name) QATPY_FN(name) name;
    QPS_REQUIRED_QAT(QPS_FIELD)
    QPS_OPTIONAL_QAT(QPS_FIELD)
    QPS_REQUIRED_USDM(QPS_FIELD)
#undef QPS_FIELD
    qps_sim_set_fn sim_set;
    qps_sim_get_fn sim_get;
    qps_sim_reset_fn sim_reset;
};

/* Written once under the load lock before qps_loaded() turns true; read-only after. */
extern struct qps_lib qps_lib;
bool qps_loaded(void);
/* Serialises lib load and device open (one started device per process). */
void qps_global_lock(void);
void qps_global_unlock(void);
/* The open device, guarded by the global lock; reset in a forked child. */
extern struct qatpy_device *qps_open_dev;
/* Bumped in every forked child: a device whose fork_gen differs belongs to
 * the parent, and its DMA, mutexes and threads must not be touched. */
extern _Atomic unsigned qps_fork_gen;

/* ---- pure helpers (encode.c) ------------------------------------------ */

#define QPS_MAX_CURVE_LEN 66
#define QPS_MAX_ECDSA_DER (3 + 2 * (3 + QPS_MAX_CURVE_LEN))

struct qps_curve {
    int id;             /* QATPY_CURVE_* */
    unsigned bits;      /* bit length of the order n (= field bits for P curves) */
    uint32_t len;       /* bytes of every parameter, scalar and result half */
    uint8_t q[QPS_MAX_CURVE_LEN], a[QPS_MAX_CURVE_LEN], b[QPS_MAX_CURVE_LEN];
    uint8_t n[QPS_MAX_CURVE_LEN], xg[QPS_MAX_CURVE_LEN], yg[QPS_MAX_CURVE_LEN];
};

const struct qps_curve *qps_curve_get(int curve_id);
/* Hash size for a QATPY_HASH_* id, 0 if unknown. */
size_t qps_hash_len(int hash_id);
/* EMSA-PKCS1-v1_5 (RFC 8017 9.2) into em[0..em_len); 0 ok, -1 bad hash/length. */
int qps_pkcs1_encode(int hash_id, const uint8_t *digest, size_t digest_len, uint8_t *em,
                     size_t em_len);
/* a < b for equal-length big-endian numbers, without data-dependent branches. */
int qps_be_less(const uint8_t *a, const uint8_t *b, size_t len);
int qps_be_is_zero(const uint8_t *a, size_t len);
/* Leftmost `bits` bits of the digest as a big-endian integer of `len` bytes. */
void qps_truncate_digest(const uint8_t *digest, size_t digest_len, unsigned bits, uint8_t *m,
                         size_t len);
/* DER SEQUENCE { INTEGER r, INTEGER s } of two len-byte big-endian values;
 * returns bytes written to out (at most QPS_MAX_ECDSA_DER). */
size_t qps_der_ecdsa(const uint8_t *r, const uint8_t *s, size_t len, uint8_t *out);
/* Random source: fill buf, 0 on success. */
typedef int (*qps_rng_fn)(uint8_t *buf, size_t len);
int qps_rng_os(uint8_t *buf, size_t len);
/* Uniform k in [1, n-1] by rejection sampling (top bits masked to bitlen(n)).
 * 0 on success; on failure k is wiped and -1 returned. */
int qps_random_scalar(uint8_t *k, const uint8_t *n, size_t len, unsigned bits, qps_rng_fn rng);
/* Strip leading zero bytes; returns the new length (0 for zero). */
size_t qps_be_strip(const uint8_t **p, size_t len);
void qps_wipe(void *p, size_t len);

/* ---- verify-after-sign (verify.c): public-value modular arithmetic ------ */

/* Montgomery context of an odd modulus n (public, ordinary memory). */
struct qps_mont {
    size_t k;          /* 64-bit limbs of n */
    uint64_t n0;       /* -n^-1 mod 2^64 */
    uint64_t *n, *rr;  /* n and R^2 mod n (R = 2^(64k)), little-endian limbs */
    void *bn_n;        /* libcrypto's BIGNUM of n, or NULL (portable code only) */
    void *bn_mont;     /* libcrypto's BN_MONT_CTX of n, or NULL */
    uint64_t limbs[];
};
/* NULL if n is zero, even, or longer than QATPY_MAX_RESULT bytes (or no memory). */
struct qps_mont *qps_mont_new(const uint8_t *n, size_t n_len);
void qps_mont_free(struct qps_mont *m);
/* out = x^e mod n as out_len big-endian bytes; -1 if x >= n or out_len is too
 * short for n.  Variable time: public values only. */
int qps_mont_modexp(const struct qps_mont *m, const uint8_t *x, size_t x_len, const uint8_t *e,
                    size_t e_len, uint8_t *out, size_t out_len);
/* The same on our portable Montgomery code only (the test driver checks one
 * against the other; qps_mont_modexp uses libcrypto's when it could load it). */
int qps_mont_modexp_portable(const struct qps_mont *m, const uint8_t *x, size_t x_len,
                             const uint8_t *e, size_t e_len, uint8_t *out, size_t out_len);
/* True when qps_mont_modexp runs on libcrypto's bignum code. */
bool qps_mont_uses_libcrypto(const struct qps_mont *m);
/* sig^e mod n == em, both len bytes (the modulus length). */
bool qps_rsa_verify_block(const struct qps_mont *m, const uint8_t *e, size_t e_len,
                          const uint8_t *sig, const uint8_t *em, size_t len);

/* ---- device, instances, requests ---------------------------------------- */

/* Layout of one DMA request buffer ("bufset"): big enough for RSA-8192. */
#define QPS_BUFSET_SIZE 2048
#define QPS_RSA_IN_OFF 0
#define QPS_RSA_OUT_OFF 1024
#define QPS_EC_M_OFF 0
#define QPS_EC_K_OFF 128
#define QPS_EC_R_OFF 256
#define QPS_EC_S_OFF 384
#define QPS_BUFSETS_PER_CHUNK 32
/* Curve constants: 6 params x 72-byte stride per curve, 3 curves. */
#define QPS_CURVE_PARAM_STRIDE 72
#define QPS_CURVE_BLOCK (6 * QPS_CURVE_PARAM_STRIDE)
#define QPS_NUM_CURVES 3

#define QPS_ECDSA_MAX_ATTEMPTS 16
/* Poll delay limit, at open and in qatpy_device_set_poll (the public value). */
#define QPS_MAX_POLL_DELAY_NS ((uint64_t)QATPY_MAX_POLL_DELAY_NS)
#define QPS_RETRY_BACKOFF_NS 50000ULL

enum qps_slot_state {
    QPS_SLOT_FREE = 0,
    QPS_SLOT_PENDING, /* in the device's pending FIFO, waiting for ring space */
    QPS_SLOT_ONDEV,   /* submitted; owns a bufset and one unit of its instance's in-flight */
    QPS_SLOT_REDO,    /* ECDSA needs a fresh k; in an instance's redo list */
    QPS_SLOT_DONE     /* in the completion ring, waiting for qatpy_drain */
};

enum { QPS_OP_RSA = 1, QPS_OP_ECDSA = 2 };

/* Who settles a request that has a deadline (qps_req.claim), reset to OPEN
 * at each dispatch.  The deadline checker may only take OPEN -> TIMEDOUT;
 * the callback exchanges to ANSWERED and, if it finds TIMEDOUT, the answer
 * is late and dropped; a refused submit takes OPEN -> ANSWERED, or finds
 * TIMEDOUT and drops the device's hold itself. */
enum { QPS_CLAIM_OPEN = 0, QPS_CLAIM_ANSWERED, QPS_CLAIM_TIMEDOUT };

/* A completion-ring entry with this bit is a TIMEOUT for a slot that the
 * device still owns (a "zombie"); drain must not free that slot itself. */
#define QPS_RING_TIMEOUT 0x80000000u

struct qps_inst;

struct qps_req {
    struct qatpy_device *dev;
    uint32_t index;
    _Atomic int state;
    int op;
    uint64_t tag;
    struct qatpy_key *key;
    uint32_t in_len;          /* RSA: modulus bytes; ECDSA: curve bytes */
    uint32_t attempts;        /* ECDSA k draws */
    bool verify;              /* RSA: check the result (the key's engine's setting at submit) */
    bool ec_check;            /* ECDSA: the device verifies the result (likewise) */
    /* ECDSA: a sign's (r, s) awaits its check; result holds r || s raw
     * (in_len bytes each), DER-encoded only once it verifies. */
    bool checking;
    /* A C caller blocked on this request (qatpy_sign_wait): its completion
     * goes to the waiter, never to the ring.  NULL for ring requests. */
    struct qps_waiter *waiter;
    bool driven; /* counted in dev->driven (drive.c) */
    bool redo;                /* ECDSA: completed with an invalid (r, s); needs a fresh k */
    int32_t status;
    int32_t cpa_status;
    uint32_t result_len;
    uint32_t inst_index;      /* last instance that took it */
    struct qps_inst *inst;    /* while ONDEV */
    uint8_t *buf;             /* DMA bufset while ONDEV */
    struct qps_req *next;     /* pending FIFO / redo list link */
    /* Op-data structs live here (ordinary memory, CPU-read only); every
     * pData they point at is DMA memory. */
    union {
        CpaCyRsaDecryptOpData rsa;
        CpaCyEcdsaSignRSOpData ec;
        CpaCyEcdsaVerifyOpData ecv;
    } opd;
    CpaFlatBuffer out;        /* RSA output */
    CpaFlatBuffer r, s;       /* ECDSA outputs */
    CpaBoolean sign_status;
    CpaBoolean verify_status; /* the device's ECDSA check */
    /* Deadlines.  A timed-out request still on the device is a zombie: it
     * keeps its slot, bufset, in-flight unit and key reference; `holds`
     * counts its two owners (the TIMEOUT ring entry until drained, the
     * device until it answers or the instance stops) and the last one frees
     * the slot. */
    uint64_t deadline;        /* CLOCK_MONOTONIC ns, 0 = none; set at submit */
    _Atomic int claim;        /* QPS_CLAIM_* (only used when deadline != 0) */
    _Atomic uint32_t holds;
    bool late;                /* callback found TIMEDOUT: drop the answer */
    bool dl_linked;           /* in its instance's deadline list (inst->lock) */
    struct qps_req *dl_prev, *dl_next;
    uint8_t input[QATPY_MAX_RESULT];   /* RSA: encoded block (in_len); ECDSA: truncated m */
    uint8_t result[QATPY_MAX_RESULT];
};

struct qps_inst {
    struct qatpy_device *dev;
    uint32_t index;
    CpaInstanceHandle h;
    CpaAccelerationServiceType svc; /* CRYPTO_ASYM or CRYPTO: what SetResponseMode needs */
    int node;
    uint32_t package;          /* CpaInstanceInfo2.physInstId.packageId: icp_sal_check_device's */
    bool started;
    bool stop_failed;          /* cpaCyStopInstance failed: its DMA is leaked, never reused */
    _Atomic int healthy;       /* notification callback: RESTARTING -> 0, RESTARTED -> 1 */
    _Atomic int fatal;
    _Atomic int timed_out;     /* a request missed its deadline here; cleared by any answer / RESTARTED */
    _Atomic uint32_t inflight; /* requests on the device (incl. ones being submitted) */
    _Atomic int full;          /* device said RETRY; skip while inflight > 0 ... */
    _Atomic uint64_t full_ns;  /* ... for at most QPS_RETRY_HOLD_NS after it said so */
    int event_fd;              /* qatlib's fd in EVENT mode, else -1 */
    bool event_mode;           /* SetResponseMode(BY_EVENT) succeeded */
    uint8_t *curve_dma;        /* QPS_NUM_CURVES * QPS_CURVE_BLOCK */

    pthread_mutex_t lock;      /* free bufsets, redo list */
    uint8_t **free_bufs;
    uint32_t nfree;
    uint8_t **chunks;
    uint32_t nchunks;
    struct qps_req *redo_head, *redo_tail;
    _Atomic uint32_t redo_count;
    struct qps_req *dl_head, *dl_tail; /* on the device with a deadline (under lock) */
    _Atomic uint64_t next_deadline;    /* lower bound of their deadlines; UINT64_MAX none */
    _Atomic uint32_t zombies;          /* timed-out requests still on the device */
    _Atomic uint64_t last_fail_ns;     /* when a request last timed out here */
    _Atomic uint64_t hb_next_ns;       /* no heartbeat check for this package before (recover.c) */

    pthread_t thread;
    bool thread_running;
    pthread_mutex_t park_lock;
    pthread_cond_t park_cond;
    _Atomic int parked;
    bool locks_init;
    /* Poll thread only: see avoid_submitter_cpu() in poller.c. */
    uint32_t shared_cpu_polls;
    uint64_t last_nudge_ns;
};

struct qps_key_inst {
    uint8_t *dma;              /* RSA: p,q,dp,dq,qinv each `half` bytes; EC: d, x, y (cv->len each) */
    size_t dma_len;
    CpaCyRsaPrivateKey rsa;    /* ordinary memory; points into dma */
};

enum { QPS_KEY_RSA = 1, QPS_KEY_EC = 2 };

struct qatpy_key {
    struct qatpy_device *dev;
    _Atomic uint32_t refs;     /* Python's handle + one per request slot (+ C holders) */
    int type;
    /* The engine whose settings every request on this key takes (a
     * reference, dropped with the key); copied here at creation (an
     * engine's configuration never changes) so submit reads no pointer. */
    struct qatpy_engine *eng;
    bool verify;
    bool verify_ecdsa;
    uint64_t deadline_ns;
    const struct qps_curve *cv;
    uint32_t n_len;            /* RSA modulus bytes (minimal) */
    uint32_t half;             /* RSA: bytes of each CRT component */
    uint8_t *n;                /* RSA modulus (public), n_len bytes */
    uint8_t *e;                /* RSA public exponent, e_len bytes (kept for verify-after-sign) */
    uint32_t e_len;
    struct qps_mont *mont;     /* RSA: Montgomery context of n for verify-after-sign */
    bool dma_freed;            /* guarded by dev->key_lock */
    bool sim_scoped;           /* its DMA blocks are in the simulator's fault scope */
    bool released;             /* Python's reference dropped */
    struct qatpy_key *prev, *next; /* dev->keys list, guarded by dev->key_lock */
    uint32_t ninst;
    struct qps_key_inst inst[];
};

enum { QPS_STAGE_OPEN = 0, QPS_STAGE_CLOSED = 1, QPS_STAGE_FREED = 2 };

struct qps_counters {
    _Atomic uint64_t submitted, completed, completed_ok, completed_error, ring_retries;
    _Atomic uint64_t inflight_max, polls, polls_empty, dma_allocs, dma_live;
    _Atomic uint64_t ecdsa_retries, drained_batches;
    _Atomic uint64_t verify_failures, timeouts, late_answers, poller_moves;
    _Atomic uint64_t heartbeat_checks, heartbeat_failures, instance_restarts, recovered_slots;
    _Atomic uint64_t restart_requeued, fast_fails, ecdsa_checks, driven, drive_handovers;
};

struct qatpy_device {
    _Atomic uint32_t refs;     /* owner (until device_free) + one per live key */
    unsigned fork_gen;
    char process_name[128];
    int requested_mode;
    _Atomic int poll_mode;     /* effective */
    _Atomic uint64_t poll_delay_ns;
    uint32_t cap;              /* in-flight cap per instance */

    pthread_mutex_t state_lock; /* shutdown / free / set_poll / thread start */
    int stage;
    bool threads_started;
    bool user_started;
    _Atomic int stop_threads;

    /* Submit gate: submitters announce themselves, then check `closing`;
     * shutdown sets `closing`, then waits for the announcements to drain. */
    _Atomic int closing;
    _Atomic uint32_t submit_active;
    _Atomic int poll_closed;
    _Atomic uint32_t poll_active;
    /* Threads polling the device for their own request (wait.c): while every
     * request in flight is one of theirs, the poll threads leave it to them. */
    _Atomic uint32_t drivers;
    /* Requests an event loop polls for (drive.c): counted from submit until
     * their answer (or TIMEOUT) enters the ring; they are not the poll
     * threads' work either, while nothing else is in flight. */
    _Atomic uint32_t driven;
    /* TIMER mode: fruitless looks since the driven requests began; past
     * QPS_DRIVE_TIMER_LOOKS they are handed to the poll threads (drive.c). */
    _Atomic uint32_t drive_looks;
    _Atomic int drive_handed;
    int drive_epfd; /* epoll set: instance event fds (edge-triggered), drive_tfd */
    int drive_tfd;  /* timerfd: TIMER mode's poll delay for a driven request */
    pthread_mutex_t drive_lock;
    _Atomic bool drive_armed; /* the event fds report in drive_epfd (changed under drive_lock) */

    uint32_t ninst;
    struct qps_inst *inst;
    _Atomic uint32_t rr;
    _Atomic uint64_t inflight_total;
    _Atomic uint32_t zombies_total;

    uint32_t nslots;
    struct qps_req *slots;
    pthread_mutex_t slot_lock;
    uint32_t *free_slots;
    uint32_t nfree_slots;

    pthread_mutex_t pend_lock;
    struct qps_req *pend_head, *pend_tail;
    _Atomic uint32_t pend_count;
    _Atomic int dispatching;

    pthread_mutex_t ring_lock;
    pthread_cond_t ring_cond;
    uint32_t *ring;            /* slot indices, capacity nslots (a slot is in it at most once) */
    uint32_t ring_head, ring_count;
    uint32_t ring_waiters;
    uint32_t lazy_waiters; /* the completion thread's wait (qatpy_wait_unclaimed) */
    bool ring_closed;
    _Atomic uint64_t seq;
    int efd;
    _Atomic int submit_cpu;    /* the CPU the latest submit ran on (a hint) */

    pthread_mutex_t key_lock;
    struct qatpy_key *keys;

    /* recover.c: icp_sal_poll_device_events is not thread-safe (trylock). */
    pthread_mutex_t events_lock;
    _Atomic uint64_t events_last_ns;
    _Atomic int events_again;    /* a forced call found the lock taken: call once more */
    _Atomic int hb_unsupported;  /* the library said UNSUPPORTED once: never ask again */

    struct qps_counters st;
};

/*
 * The files, each owning one thing (its first comment says more):
 *   lib.c        loading libqat / libusdm; fork
 *   device.c     device open, shutdown, free
 *   settings.c   run-time settings and statistics
 *   instances.c  discovery, start / stop, per-instance DMA, event mode, notification
 *   poller.c     poll threads, parking, qatpy_poll
 *   submit.c     request slots, the submit gate, the public submits
 *   dispatch.c   instance reservation, dispatch, the pending FIFO
 *   callbacks.c  qatlib callbacks, the per-poll batch, verify-after-sign, ECDSA redo
 *   deadline.c   deadlines and zombies
 *   recover.c    device events, heartbeat checks: recovering zombies' slots
 *   ring.c       the completion ring, drain, waits, the eventfd
 *   key.c        device-side keys
 *   encode.c     pure encodings (PKCS#1, DER, nonces), NIST curve constants
 *   verify.c     verify-after-sign arithmetic (Montgomery)
 * Below, file by file: the functions other files call.
 */

/* device.c: open / shutdown / free, and helpers every file uses */
void qps_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
const char *qps_status_name(CpaStatus st);
void *qps_dma_alloc(struct qatpy_device *dev, size_t size, int node);
void qps_dma_free(struct qatpy_device *dev, void *p, size_t wipe_len);
bool qps_forked(const struct qatpy_device *dev);
void qps_dev_unref(struct qatpy_device *dev);
uint64_t qps_now_ns(void);
void qps_sleep_ns(uint64_t ns);

/* instances.c: discovery, start, per-instance DMA, event mode, notification */
/* Fills dev->inst and starts every instance; on failure the caller unwinds. */
int qps_instances_open(struct qatpy_device *dev, uint32_t max_instances, char *err,
                       size_t errlen);
/* EVENT mode on every instance, or none of them (then TIMER). */
void qps_setup_event_mode(struct qatpy_device *dev);
void qps_stop_instances(struct qatpy_device *dev);
void qps_instances_free(struct qatpy_device *dev);

/* poller.c: the poll threads, parking, wake-ups */
void qps_wake_inst(struct qps_inst *inst);
void qps_wake_all(struct qatpy_device *dev);
int qps_start_threads(struct qatpy_device *dev, char *err, size_t errlen);
void qps_stop_threads(struct qatpy_device *dev);

/* submit.c: slots, the submit gate, public submits */
void qps_slot_free_many(struct qatpy_device *dev, struct qps_req **reqs, uint32_t n);

/* dispatch.c: instance reservation, dispatch, the pending FIFO */
/* Dispatch or queue; `front` puts a requeued request at the head of the FIFO. */
void qps_submit_or_queue(struct qatpy_device *dev, struct qps_req *req, bool front);
/* Returns: >0 requests dispatched, 0 nothing to do, -1 blocked by device RETRY. */
int qps_dispatch_pending(struct qatpy_device *dev);
/* Bufset and in-flight unit back to the instance (the nonce wiped first). */
void qps_inst_release(struct qps_inst *inst, struct qps_req *req);

/* callbacks.c: qatlib callbacks, the per-poll batch, verify-after-sign, redo */
void qps_rsa_cb(void *tag, CpaStatus status, void *op_data, CpaFlatBuffer *out);
void qps_ecdsa_cb(void *tag, CpaStatus status, void *op_data, CpaBoolean multiply_status,
                  CpaFlatBuffer *pr, CpaFlatBuffer *ps);
void qps_ecdsa_verify_cb(void *tag, CpaStatus status, void *op_data, CpaBoolean verify_status);
/* A result that will not be delivered (its check could not run): wiped. */
void qps_result_drop(struct qps_req *req);
/* Poll one instance once and resubmit its ECDSA redos; returns responses seen. */
int qps_poll_instance(struct qps_inst *inst);

/* deadline.c: deadline lists, the checker, zombies */
/* Both under inst->lock. */
void qps_dl_link(struct qps_inst *inst, struct qps_req *req);
void qps_dl_unlink(struct qps_inst *inst, struct qps_req *req);
/* Time out this instance's requests past their deadline (cheap when none is
 * due); returns how many. */
uint32_t qps_check_deadlines(struct qps_inst *inst);
/* Drop one of a zombie's two holds (the ring's or the device's). */
void qps_zombie_release(struct qatpy_device *dev, struct qps_req *req);
/* A zombie leaves the device (late answer or instance stop): in-flight and
 * bufset already returned; drops the device's hold. */
void qps_zombie_gone(struct qps_inst *inst, struct qps_req *req);

/* recover.c: device events and the heartbeat */
/* icp_sal_poll_device_events now (`force`), or if the last call is older
 * than the interval; skipped while another thread is inside it. */
void qps_poll_device_events(struct qatpy_device *dev, bool force);
/* After each poll of a poll thread / qatpy_poll: a heartbeat check when the
 * instance holds zombies (rate-limited), device events when due. */
void qps_recover_tick(struct qps_inst *inst);
/* RESTARTING seen and RESTARTED not yet: neither healthy nor fatal. */
bool qps_inst_restarting(const struct qps_inst *inst);

/* ring.c: the completion ring and its wake-ups */
void qps_complete(struct qatpy_device *dev, struct qps_req *req, int status, int cpa_status);
/* A list (linked by ->next) of n requests whose status is set. */
void qps_ring_push_list(struct qatpy_device *dev, struct qps_req *list, uint32_t n);
/* TIMEOUT entries for n zombies (linked by ->dl_next). */
void qps_ring_push_timeouts(struct qatpy_device *dev, struct qps_req *list, uint32_t n);

/* submit.c: the device input of an operation (RSA: the modulus-length
 * block, em holds QATPY_MAX_RESULT; ECDSA: the truncated digest, m holds
 * QPS_MAX_CURVE_LEN), QATPY_SUBMIT_OK or the refusal; and the submit of a
 * prepared input (waiter NULL: the completion goes to the ring). */
int qps_rsa_block(struct qatpy_device *dev, struct qatpy_key *key, int encoding, int hash_id,
                  const uint8_t *input, size_t input_len, uint8_t *em);
/* Either of them by op (QPS_OP_RSA: encoding and hash_id apply; QPS_OP_ECDSA:
 * input is the digest), with the block's length (block holds
 * QATPY_MAX_RESULT). */
int qps_op_block(struct qatpy_device *dev, struct qatpy_key *key, int op, int encoding, int hash_id,
                 const uint8_t *input, size_t input_len, uint8_t *block, uint32_t *block_len);
int qps_ec_block(struct qatpy_device *dev, struct qatpy_key *key, const uint8_t *digest,
                 size_t digest_len, uint8_t *m);
int qps_submit(struct qatpy_device *dev, struct qatpy_key *key, int op, const uint8_t *input,
               uint32_t in_len, uint64_t tag, struct qps_waiter *waiter, bool driven);

/* Requests whose submitters poll for them (waiters in wait.c, event loops
 * in drive.c).  While everything in flight or queued is theirs, the poll
 * threads leave the device to them. */
static inline uint64_t qps_self_polled(struct qatpy_device *dev)
{
    uint64_t driven = atomic_load(&dev->drive_handed) ? 0 : atomic_load(&dev->driven);
    return (uint64_t)atomic_load(&dev->drivers) + driven;
}
static inline bool qps_others_work(struct qatpy_device *dev)
{
    /* Zombies (timed out, still on the device) are nobody's work. */
    uint64_t busy = atomic_load(&dev->inflight_total) + atomic_load(&dev->pend_count);
    uint64_t zombies = atomic_load(&dev->zombies_total);
    return busy > zombies + qps_self_polled(dev);
}
/* drive.c: a driven request stops being one (its answer is in the ring, or
 * it waits in the pending FIFO, which the poll threads serve). */
static inline void qps_undrive(struct qatpy_device *dev, struct qps_req *req)
{
    if (req->driven) {
        req->driven = false;
        atomic_fetch_sub(&dev->driven, 1);
        /* Work counted while this request was still "driven" but no longer
         * in flight (flush_batch gives the in-flight unit back before the
         * RSA check and the push) may have let a poll thread park beside
         * it: nobody else would wake it now. */
        if (qps_others_work(dev))
            qps_wake_all(dev);
    }
}
int qps_drive_open(struct qatpy_device *dev, char *err, size_t errlen);
extern _Thread_local bool qps_tl_drains_next; /* ring.c */
void qps_drive_close(struct qatpy_device *dev);
/* timeout_ns, shortened to the earliest deadline on the device while driven
 * requests are in flight (the completion thread's wait, ring.c). */
int64_t qps_drive_wait_cap(struct qatpy_device *dev, int64_t timeout_ns);
/* The driven requests become the poll threads' work (a slow answer in TIMER
 * mode, a poll mode change, shutdown); wakes them. */
void qps_drive_hand_over(struct qatpy_device *dev);

/* poller.c: one round of a waiter's own polling: every instance with work
 * polled once, recovery ticks, the pending FIFO dispatched.  Returns the
 * responses processed, or -1 once the device is closing. */
int qps_drive_once(struct qatpy_device *dev);

/* wait.c: a C caller blocked on one request (the ssl provider, sign()).
 * The waiter lives on the caller's stack; the completing thread fills it
 * under `m` and signals `c`.  A waiter that `drives` polls the device
 * itself while nothing else is in flight (see wait.c): its submit does not
 * wake a parked poll thread. */
struct qps_waiter {
    pthread_mutex_t m;
    pthread_cond_t c;
    int done;
    bool drives;
    int32_t status;
    int32_t cpa_status;
    uint32_t len;
    uint8_t *out;
    size_t cap;
};
/* Settle a waiter's request (instead of pushing it to the ring): result to
 * the waiter, key reference and slot given back, the waiter woken.  A
 * zombie's TIMEOUT (zombie = true) hands over only the ring's hold. */
void qps_waiter_complete(struct qatpy_device *dev, struct qps_req *req, bool zombie);
/* Sign one operation on `key`'s device and block this thread until it
 * completes; no ring entry, no Python.  op is QPS_OP_RSA (encoding and
 * hash_id as qatpy_submit_rsa) or QPS_OP_ECDSA (input = the digest).
 * Returns a QATPY_ST_* (the result in out, *out_len bytes, cpa status in
 * *cpa_status) or a negative QATPY_SUBMIT_* when nothing was queued
 * (FULL: no free request slot; CLOSED; BADARG; BADKEY). */
int qps_sign_wait(struct qatpy_key *key, int op, int encoding, int hash_id, const uint8_t *input,
                  size_t input_len, uint8_t *out, size_t out_cap, size_t *out_len,
                  int32_t *cpa_status);

/* key.c */
void qps_key_ref(struct qatpy_key *key);
void qps_key_unref(struct qatpy_key *key);
void qps_key_free_dma_locked(struct qatpy_key *key);

#endif /* QATPY_SHIM_INTERNAL_H */
