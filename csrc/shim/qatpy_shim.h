/*
 * The C shim's public interface: everything the Python package (through
 * qatpy/_native, the one module that imports the compiled `lib`) may call.
 *
 * Fed verbatim to cffi's cdef() and included by the shim's C sources, so:
 * declarations and integer #defines only, no #include / #if.
 *
 * Model: one process-wide "device" (qatlib is process-global: one
 * icp_sal_userStart per process).  The shim dlopens libusdm.so.0 and
 * libqat.so.4 (or the simulated device, through the same code), starts the
 * asym instances, owns the poll thread(s), the request slots, the DMA pools
 * and the completion ring.  Python submits with a 64-bit tag and later drains
 * completions in batches; no Python code ever runs in a qatlib callback.
 * Python refcounts engines on top of this.
 */

/* ---- result codes of qatpy_lib_load / qatpy_device_open -------------- */
#define QATPY_OK 0
#define QATPY_ERR_LIBRARY 1        /* a library could not be dlopened / a symbol is missing */
#define QATPY_ERR_NO_DEVICE 2      /* icp_sal_userIsQatAvailable() said FALSE */
#define QATPY_ERR_START 3          /* icp_sal_userStart failed */
#define QATPY_ERR_NO_INSTANCE 4    /* no asym/cy instance */
#define QATPY_ERR_CAPABILITY 5     /* instances lack rsa/ecdsa */
#define QATPY_ERR_INSTANCE 6       /* cpaCyStartInstance / SetAddressTranslation / GetInfo2 failed */
#define QATPY_ERR_NOMEM 7          /* malloc or qaeMemAllocNUMA failed */
#define QATPY_ERR_CONFIG 8         /* invalid configuration value */
#define QATPY_ERR_STATE 9          /* already open / not loaded / loaded from other paths */

/* ---- poll modes -------------------------------------------------------- */
#define QATPY_POLL_TIMER 0   /* poll; if nothing came, sleep poll_delay; park on a condvar while idle */
#define QATPY_POLL_BUSY 1    /* poll continuously while requests are in flight; park while idle */
#define QATPY_POLL_EVENT 2   /* wait on the instance's event fd (falls back to TIMER if unsupported) */
#define QATPY_POLL_MANUAL 3  /* no thread; the caller runs qatpy_poll() */

/* ---- per-request statuses carried in a completion ------------------- */
#define QATPY_ST_OK 0
#define QATPY_ST_DEVICE_FAIL 1     /* callback status != SUCCESS (cpa status in .cpa_status) */
#define QATPY_ST_SUBMIT_FAIL 2     /* submit returned FAIL/UNSUPPORTED/RESTARTING/INVALID_PARAM... */
#define QATPY_ST_CLOSED 3          /* device shut down before the request completed */
#define QATPY_ST_VERIFY_FAIL 4     /* result did not pass the shim's check */
#define QATPY_ST_TIMEOUT 5         /* deadline passed */
#define QATPY_ST_UNAVAILABLE 6     /* failed at once, never sent: no usable instance (every one
                                      restarting, fatal, or with all its slots held by requests
                                      past their deadline); .cpa_status RESTARTING, RESOURCE or FATAL */

/* ---- submit return codes (negative = nothing queued) ----------------- */
#define QATPY_SUBMIT_OK 0
#define QATPY_SUBMIT_FULL -1       /* all request slots in use: drain and retry */
#define QATPY_SUBMIT_CLOSED -2     /* device shutting down */
#define QATPY_SUBMIT_BADARG -3     /* input rejected before reaching the device (e.g. input >= n) */
#define QATPY_SUBMIT_BADKEY -4

/* ---- RSA encodings the shim performs --------------------------------- */
#define QATPY_RSA_RAW 0            /* input is the full encoded block, modulus length */
#define QATPY_RSA_PKCS1 1          /* input is a digest; shim builds EMSA-PKCS1-v1_5 */

/* hash ids for QATPY_RSA_PKCS1 DigestInfo */
#define QATPY_HASH_SHA224 1
#define QATPY_HASH_SHA256 2
#define QATPY_HASH_SHA384 3
#define QATPY_HASH_SHA512 4

/* curve ids */
#define QATPY_CURVE_P256 1
#define QATPY_CURVE_P384 2
#define QATPY_CURVE_P521 3

/* largest result: RSA-8192 signature = 1024 bytes; ECDSA DER <= 139 bytes */
#define QATPY_MAX_RESULT 1024

typedef struct qatpy_device qatpy_device;
typedef struct qatpy_key qatpy_key;
/* An engine object: one per Python Engine (see "engine objects" below). */
typedef struct qatpy_engine qatpy_engine;

/* ---- limits of the values the shim takes (Python checks them first) ---- */
#define QATPY_MAX_POLL_DELAY_NS 1000000000        /* 1 s */
#define QATPY_MAX_DEADLINE_NS 3600000000000       /* 1 h */
#define QATPY_MAX_INFLIGHT 65536                  /* per instance */
#define QATPY_MAX_REQUESTS 4194304                /* request slots */
#define QATPY_MAX_INSTANCES 4096                  /* instances asked for */

typedef struct {
    const char *process_name;        /* NULL: "SSL" */
    int poll_mode;                   /* QATPY_POLL_* */
    uint64_t poll_delay_ns;          /* TIMER mode sleep after an empty poll */
    uint32_t max_instances;          /* 0: all */
    uint32_t inflight_per_instance;  /* 0: 48 (ring admits ~63) */
    uint32_t max_requests;           /* request slots; 0: 4096 */
} qatpy_config;

typedef struct {
    uint64_t tag;
    int32_t status;       /* QATPY_ST_* */
    int32_t cpa_status;   /* CpaStatus from the device when relevant, else 0 */
    uint32_t len;         /* bytes of result */
    uint32_t instance;    /* index of the instance that served it */
} qatpy_completion;

typedef struct {
    uint64_t submitted;
    uint64_t completed;
    uint64_t completed_ok;
    uint64_t completed_error;
    uint64_t ring_retries;       /* submit RETRY from the device (requeued, no spin) */
    uint64_t queued_now;         /* waiting in the shim for ring space */
    uint64_t inflight_now;       /* on the device */
    uint64_t inflight_max;
    uint64_t polls;
    uint64_t polls_empty;
    uint64_t dma_allocs;         /* qaeMemAllocNUMA calls made by the shim, ever */
    uint64_t dma_live;           /* shim-owned DMA blocks now */
    uint64_t ecdsa_retries;      /* multiplyStatus FALSE -> fresh k */
    uint64_t drained_batches;
    uint32_t num_instances;
    uint32_t poll_mode;          /* effective mode (EVENT may fall back to TIMER) */
    uint64_t verify_failures;    /* results that failed their check (never delivered): RSA
                                    sig^e mod n != input; ECDSA (r, s) the check refused */
    uint64_t timeouts;           /* requests completed with QATPY_ST_TIMEOUT */
    uint64_t late_answers;       /* device answers to timed-out requests, dropped */
    uint32_t unhealthy_instances; /* instances now routed around (timed out, restarting, fatal) */
    uint64_t poller_moves;       /* poll threads that left their submitter's CPU */
    uint64_t heartbeat_checks;   /* icp_sal_check_device calls (an instance held timed-out requests) */
    uint64_t heartbeat_failures; /* checks that found the device unresponsive (the driver restarts it) */
    uint64_t instance_restarts;  /* RESTARTED notifications */
    uint64_t recovered_slots;    /* timed-out requests a reset gave back (completed FAIL) */
    uint64_t restart_requeued;   /* requests a reset failed, sent to the device again */
    uint64_t fast_fails;         /* completed QATPY_ST_UNAVAILABLE at once */
    uint32_t heartbeat_unsupported; /* 1: the library has no heartbeat here (not asked again) */
    uint64_t ecdsa_checks;       /* ECDSA results the device gave a verdict on (verify_ecdsa) */
    uint64_t driven;             /* requests an event loop polled for itself (qatpy_submit_driven) */
    uint64_t drive_handovers;    /* TIMER mode: driven requests left to the poll threads after 8 looks */
} qatpy_stats_t;

/* Load the two libraries (NULL = "libusdm.so.0" / "libqat.so.4" via the
 * loader's search path).  Idempotent for the same paths; QATPY_ERR_STATE if
 * already loaded from different ones.  `err` gets a readable reason. */
int qatpy_lib_load(const char *libqat_path, const char *libusdm_path, char *err, size_t errlen);
/* 1 if the loaded libqat is qatpy's simulated device (exports qatpy_sim_set). */
int qatpy_lib_is_sim(void);
/* Pass-through to the simulator's control API; -1 when not the sim. */
int qatpy_sim_knob_set(const char *knob, long long value);
int qatpy_sim_knob_get(const char *name, long long *out);
int qatpy_sim_knob_reset(void);

/* Start the device: IsQatAvailable -> userStart -> asym instances (else cy
 * instances with rsa/ecdsa capability) -> per instance start, address
 * translation, info (node) -> poll threads.  Returns QATPY_ERR_* and a
 * reason naming the cause in `err`. */
int qatpy_device_open(const qatpy_config *cfg, qatpy_device **out, char *err, size_t errlen);
/* Refuse new work; wait up to timeout_ns for in-flight requests; complete
 * the rest with QATPY_ST_CLOSED (they stay drainable); stop the poll
 * threads and instances; icp_sal_userStop.  Idempotent. */
void qatpy_device_shutdown(qatpy_device *dev, int64_t timeout_ns);
/* Free everything (after shutdown and a final drain). */
void qatpy_device_free(qatpy_device *dev);
/* Change poll settings at run time. */
int qatpy_device_set_poll(qatpy_device *dev, int poll_mode, uint64_t poll_delay_ns);

/* Keys: components are big-endian unsigned integers.  The shim copies the
 * private parts into DMA memory once per instance; qatpy_key_release wipes
 * and frees them when the last in-flight request using the key is done.
 * A key belongs to one engine object (`eng`, on `dev`; the key holds a
 * reference on it): every request on the key takes that engine's settings
 * (verify, deadline), so one engine's settings never apply to another's. */
qatpy_key *qatpy_rsa_key_new(qatpy_device *dev, qatpy_engine *eng, const uint8_t *n, size_t n_len,
                             const uint8_t *e, size_t e_len, const uint8_t *p, size_t p_len,
                             const uint8_t *q, size_t q_len, const uint8_t *dp, size_t dp_len,
                             const uint8_t *dq, size_t dq_len, const uint8_t *qinv,
                             size_t qinv_len, char *err, size_t errlen);
/* EC: d is the private scalar, (x, y) the public point (affine, each at
 * most the curve's length): the ECDSA check (verify_ecdsa) verifies every
 * result against it. */
qatpy_key *qatpy_ec_key_new(qatpy_device *dev, qatpy_engine *eng, int curve, const uint8_t *d,
                            size_t d_len, const uint8_t *x, size_t x_len, const uint8_t *y,
                            size_t y_len, char *err, size_t errlen);
void qatpy_key_release(qatpy_key *key);

/* Submit one operation; the result arrives as a completion carrying `tag`.
 * RSA: QATPY_RSA_PKCS1 takes a digest of the hash's size; QATPY_RSA_RAW the
 * encoded block (exactly the modulus length, < n).  The result is the
 * big-endian signature, modulus length.  ECDSA: `digest` is the message
 * hash (any length; truncated to the order's bit length); the result is the
 * DER-encoded (r, s). */
int qatpy_submit_rsa(qatpy_device *dev, qatpy_key *key, int encoding, int hash_id,
                     const uint8_t *input, size_t input_len, uint64_t tag);
int qatpy_submit_ecdsa(qatpy_device *dev, qatpy_key *key, const uint8_t *digest,
                       size_t digest_len, uint64_t tag);

/* One operation, and this thread waits for it: no tag, no ring, no drain.
 * op is QATPY_OP_RSA (encoding and hash_id as qatpy_submit_rsa) or
 * QATPY_OP_ECDSA (input = the digest).  Returns a QATPY_ST_* with the
 * result in out[0 .. *out_len) (out_cap >= QATPY_MAX_RESULT) and the cpa
 * status in *cpa_status, or a negative QATPY_SUBMIT_* when nothing was
 * queued (FULL: no free request slot).  Blocking: call without the GIL
 * (cffi releases it); in MANUAL mode another thread must poll. */
#define QATPY_OP_RSA 1
#define QATPY_OP_ECDSA 2
int qatpy_sign_wait(qatpy_key *key, int op, int encoding, int hash_id, const uint8_t *input,
                    size_t input_len, uint8_t *out, size_t out_cap, size_t *out_len,
                    int32_t *cpa_status);

/* Completions.  qatpy_drain copies up to `max` completions; the result bytes
 * of out[i] go to results + i * stride (stride >= QATPY_MAX_RESULT). */
size_t qatpy_drain(qatpy_device *dev, qatpy_completion *out, uint8_t *results, size_t stride,
                   size_t max);
/* Counter of completions pushed so far; wait until it exceeds `seen` or
 * timeout (ns, <0 = forever).  Returns the counter.  Blocking: call without
 * the GIL (cffi releases it). */
uint64_t qatpy_completion_seq(qatpy_device *dev);
/* Where that counter lives, for reads without a call: the binding's submit
 * path checks it to drain waiting completions on the submitting thread
 * (a call would release and retake the GIL).  A plain aligned 64-bit load;
 * valid until qatpy_device_free. */
const volatile uint64_t *qatpy_completion_seq_addr(qatpy_device *dev);
uint64_t qatpy_wait(qatpy_device *dev, uint64_t seen, int64_t timeout_ns);
/* An eventfd that is readable while completions wait (for asyncio
 * add_reader).  The drainer must call qatpy_event_clear before draining. */
int qatpy_event_fd(qatpy_device *dev);
void qatpy_event_clear(qatpy_device *dev);
/* An event loop's own polling: the latency path of a lone asynchronous
 * request (asyncio's sign_async), which then crosses one wake-up instead of
 * two.  qatpy_submit_driven queues like qatpy_submit_rsa/_ecdsa (op and
 * inputs as qatpy_sign_wait) and, when nothing else is in flight and the
 * poll mode is TIMER or EVENT, leaves the request to the caller's polling:
 * no poll thread is woken for it.  The caller watches qatpy_drive_fd (an
 * epoll fd: readable when an instance's event fd fires, or in TIMER mode
 * when the poll delay since the last look has passed) and calls
 * qatpy_drive_tick when it is readable; the answer goes to the ring like
 * any other.  In TIMER mode a request still unanswered after 8 looks is
 * left to the poll threads (the fd stops firing for it).  A caller that stops polling costs latency, never the answer:
 * qatpy_wait_unclaimed looks at the device for it whenever its wait times
 * out with driven requests in flight.
 * qatpy_drive_tick returns how many completions entered the ring meanwhile,
 * or -1 once the device is closing; when it returns > 0 the caller must
 * drain at once: the completions it pushed announce themselves neither on
 * the eventfd nor to the completion thread's wait (which finds them within
 * its bound). */
int qatpy_submit_driven(qatpy_device *dev, qatpy_key *key, int op, int encoding, int hash_id,
                        const uint8_t *input, size_t input_len, uint64_t tag);
int qatpy_drive_fd(qatpy_device *dev);
int qatpy_drive_tick(qatpy_device *dev);
/* MANUAL mode: poll every instance once; returns responses processed. */
int qatpy_poll(qatpy_device *dev);

void qatpy_stats(qatpy_device *dev, qatpy_stats_t *out);

/* ---- batch forms (csrc/shim/submit.c, ring.c): one call, and one GIL
 * release, for many operations.  Operation i uses input bytes
 * [i*input_len, (i+1)*input_len) and tag tag0 + i.  They stop at the first result other than
 * QATPY_SUBMIT_OK and return it; *n_done says how many were queued. */
int qatpy_submit_rsa_many(qatpy_device *dev, qatpy_key *key, int encoding, int hash_id,
                          const uint8_t *inputs, size_t input_len, size_t n, uint64_t tag0,
                          size_t *n_done);
int qatpy_submit_ecdsa_many(qatpy_device *dev, qatpy_key *key, const uint8_t *digests,
                            size_t digest_len, size_t n, uint64_t tag0, size_t *n_done);
/* The completion thread's wait: like qatpy_wait, but after new completions
 * arrive it gives other drainers grace_ns to take them, and returns only if
 * some are still waiting (or on timeout/shutdown). */
uint64_t qatpy_wait_unclaimed(qatpy_device *dev, uint64_t seen, int64_t grace_ns,
                              int64_t timeout_ns);
/* qatpy_drain into parallel arrays (cheap to unpack from Python).  The
 * count is also stored in *filled (if not NULL) before returning: the
 * entries have left the ring, and a caller interrupted right after the call
 * (a Python exception from a signal handler) still finds how many the
 * arrays hold. */
size_t qatpy_drain_arrays(qatpy_device *dev, uint64_t *tags, int32_t *status, int32_t *cpa_status,
                          uint32_t *lens, uint32_t *instance, uint8_t *results, size_t stride,
                          size_t max, size_t *filled);

/* ---- reliability (csrc/shim/verify.c, callbacks.c, deadline.c) --------
 * These settings are the engine's (qatpy_engine_config), carried by every
 * request made on one of its keys.
 * Verify-after-sign (cfg.verify): every successful RSA result is checked in
 * C on the poll thread (sig^e mod n == the submitted block) before it is
 * delivered; a mismatch completes as QATPY_ST_VERIFY_FAIL with no result
 * bytes.
 * ECDSA check (cfg.verify_ecdsa): every successful ECDSA (r, s) is verified
 * by the device against the key's public point before it is delivered: the
 * poller submits a cpaCyEcdsaVerify after the sign's answer, and the
 * request keeps its slot and deadline meanwhile.  A signature the device
 * does not verify completes as QATPY_ST_VERIFY_FAIL; a check that cannot
 * run completes as what it met (SUBMIT_FAIL refused, DEVICE_FAIL failed,
 * TIMEOUT, CLOSED); always with no result bytes, and nothing is retried on
 * the device.  (A check in software was measured and not kept: it costs more
 * CPU than signing in software; benchmarks/ecdsa_verify_cost.py.)
 * Deadline (cfg.deadline_ns, CLOCK_MONOTONIC from the submit call; 0 =
 * none).  A request unanswered at its deadline completes with
 * QATPY_ST_TIMEOUT; if it was on the device its slot and DMA stay with the
 * shim until the device answers (the late answer is dropped and counted)
 * a reset fails it (the heartbeat check the shim then makes restarts an
 * unresponsive device: recover.c), or the device shuts down; its instance
 * is marked unhealthy until it answers again or reports RESTARTED. */
/* 1 healthy, 0 routed around (timed out / restarting / fatal), -1 bad index. */
int qatpy_instance_healthy(qatpy_device *dev, uint32_t index);

/* ==== engine objects (csrc/shim/engine.c) ================================
 * One per Python Engine: its fallback policy and device settings, and the
 * counters of the signatures made for it outside Python (the ssl provider,
 * csrc/provider).  Refcounted: Python holds one reference, every provider
 * key made on the engine holds one, so provider keys that outlive the
 * Engine (an SSLContext kept to process exit, OPENSSL_cleanup after
 * Python's finalisation) never touch freed memory.  After
 * qatpy_engine_close, signatures fall back to software (counted as
 * engine_closed) or fail under QATPY_FALLBACK_NEVER.  An engine used in a
 * forked child likewise signs in software (counted as forked). */
#define QATPY_FALLBACK_NEVER 0
#define QATPY_FALLBACK_ON_ERROR 1
#define QATPY_FALLBACK_ON_ERROR_OR_OVERFLOW 2

typedef struct {
    int fallback;          /* QATPY_FALLBACK_* */
    int verify;            /* check RSA results (in C) before use */
    int verify_ecdsa;      /* check ECDSA results (on the device) before use */
    uint64_t deadline_ns;  /* per device request, 0 = none */
} qatpy_engine_config;

typedef struct {
    uint64_t signs;               /* signatures asked of the provider */
    uint64_t device;              /* made on the device (offloaded) */
    uint64_t software;            /* made in software because the engine is software */
    uint64_t failed;              /* no signature produced */
    /* made in software by fallback, by reason */
    uint64_t fallback_unsupported;    /* key size, curve or digest the device does not take */
    uint64_t fallback_no_device_key;  /* the key has no device copy (the device refused the key) */
    uint64_t fallback_engine_closed;  /* the engine was closed */
    uint64_t fallback_forked;         /* the engine belongs to the parent process */
    uint64_t fallback_device_error;
    uint64_t fallback_verify_failed;
    uint64_t fallback_deadline;
    uint64_t fallback_overflow;       /* every request slot busy (fallback="on_error_or_overflow") */
    uint64_t fallback_device_unavailable; /* no usable instance (all recovering): failed at once */
    uint32_t closed;
    uint32_t has_device;
    uint32_t refs;
} qatpy_engine_stats_t;

/* NULL when out of memory or for a configuration out of range (fallback
 * not a QATPY_FALLBACK_*, deadline_ns > QATPY_MAX_DEADLINE_NS).  `dev` NULL
 * for a software engine; else the engine holds a reference on the device
 * struct (not its resources). */
qatpy_engine *qatpy_engine_new(qatpy_device *dev, const qatpy_engine_config *cfg);
void qatpy_engine_close(qatpy_engine *e);
/* Simulator only (qatpy.testing): device keys made on this engine from now
 * on are registered as the simulator's fault scope, so a fault plan fires on
 * this engine's requests only (no effect on a real device). */
void qatpy_engine_sim_fault_scope(qatpy_engine *e, int on);
void qatpy_engine_release(qatpy_engine *e);
void qatpy_engine_stats(qatpy_engine *e, qatpy_engine_stats_t *out);
