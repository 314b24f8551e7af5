/*
 * Engine internals shared with the ssl provider (csrc/provider); never fed
 * to cffi.  The public half is at the end of qatpy_shim.h.
 */
#ifndef QATPY_ENGINE_H
#define QATPY_ENGINE_H

/* qatpy_shim.h has no include guard (cffi reads it): take it through the
 * guarded internal header. */
#include "shim_internal.h"

/* Counter indices; QATPY_ECNT_FB_* are the fallback reasons. */
enum {
    QATPY_ECNT_SIGNS,
    QATPY_ECNT_DEVICE,
    QATPY_ECNT_SOFTWARE,
    QATPY_ECNT_FAILED,
    QATPY_ECNT_FB_UNSUPPORTED,
    QATPY_ECNT_FB_NO_DEVICE_KEY,
    QATPY_ECNT_FB_ENGINE_CLOSED,
    QATPY_ECNT_FB_FORKED,
    QATPY_ECNT_FB_DEVICE_ERROR,
    QATPY_ECNT_FB_VERIFY_FAILED,
    QATPY_ECNT_FB_DEADLINE,
    QATPY_ECNT_FB_OVERFLOW,
    QATPY_ECNT_FB_DEVICE_UNAVAILABLE,
    QATPY_ECNT_N
};

void qatpy_engine_ref(qatpy_engine *e);
void qatpy_engine_count(qatpy_engine *e, int counter);
/* QATPY_ECNT_FB_ENGINE_CLOSED or _FORKED when the engine cannot take work
 * in this process any more, else 0. */
int qatpy_engine_unusable(const qatpy_engine *e);
/* 1 when the engine was made on a device (in this process). */
int qatpy_engine_has_device(const qatpy_engine *e);
/* 1 when a signature refused for `reason` (a QATPY_ECNT_FB_*) may be made
 * in software under the engine's policy.  Keys or digests the device does
 * not take are always signed in software (as Engine does for Python keys);
 * the other reasons need a policy other than QATPY_FALLBACK_NEVER. */
int qatpy_engine_may_fall_back(const qatpy_engine *e, int reason);
const qatpy_engine_config *qatpy_engine_config_of(const qatpy_engine *e);
/* 1 when keys made on the engine scope the simulator's fault plans. */
int qatpy_engine_in_sim_fault_scope(const qatpy_engine *e);
/* The device the engine was made on (NULL for a software engine). */
struct qatpy_device *qatpy_engine_device(const qatpy_engine *e);

#endif /* QATPY_ENGINE_H */
