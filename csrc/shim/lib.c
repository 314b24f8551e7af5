/*
 * Loading libusdm.so.0 and libqat.so.4 (real or simulated) with dlopen and
 * resolving the entry points into qps_lib.  The handles are never dlclosed
 * after a successful load: poll threads, keys and devices hold function
 * pointers into them, and qatlib keeps process-global state that must not
 * disappear under a started instance.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "shim_internal.h"

struct qps_lib qps_lib;
struct qatpy_device *qps_open_dev;
_Atomic unsigned qps_fork_gen;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t g_atfork_once = PTHREAD_ONCE_INIT;
static _Atomic int g_loaded;
static char g_qat_path[4096];
static char g_usdm_path[4096];

#define DEFAULT_LIBQAT "libqat.so.4"
#define DEFAULT_LIBUSDM "libusdm.so.0"

void qps_global_lock(void) { pthread_mutex_lock(&g_lock); }
void qps_global_unlock(void) { pthread_mutex_unlock(&g_lock); }

bool qps_loaded(void) { return atomic_load_explicit(&g_loaded, memory_order_acquire) != 0; }

/* fork: the global lock is taken around fork() so the child never inherits
 * it held by a thread that does not exist there.  The child forgets the
 * parent's device (its DMA is MADV_DONTFORK, its poll threads are gone) so a
 * fresh device can be opened; the parent's device object is left alone. */
static void atfork_prepare(void) { pthread_mutex_lock(&g_lock); }
static void atfork_parent(void) { pthread_mutex_unlock(&g_lock); }
static void atfork_child(void)
{
    atomic_fetch_add(&qps_fork_gen, 1);
    qps_open_dev = NULL;
    pthread_mutex_unlock(&g_lock);
}

static void register_atfork(void) { pthread_atfork(atfork_prepare, atfork_parent, atfork_child); }

static int resolve(void *handle, const char *lib, const char *name, bool required, void **out,
                   char *err, size_t errlen)
{
    dlerror();
    void *p = dlsym(handle, name);
    if (!p && required) {
        const char *why = dlerror();
        qps_errf(err, errlen,
                 "%s lacks the required symbol %s (%s); it is not a usable qatlib %s",
                 lib, name, why ? why : "not found",
                 strstr(lib, "usdm") ? "libusdm" : "(need qatlib >= 23.08)");
        return -1;
    }
    *out = p;
    return 0;
}

int qatpy_lib_load(const char *libqat_path, const char *libusdm_path, char *err, size_t errlen)
{
    const char *qp = libqat_path ? libqat_path : DEFAULT_LIBQAT;
    const char *up = libusdm_path ? libusdm_path : DEFAULT_LIBUSDM;
    if (err && errlen)
        err[0] = '\0';
    pthread_once(&g_atfork_once, register_atfork);
    if (strlen(qp) >= sizeof g_qat_path || strlen(up) >= sizeof g_usdm_path) {
        qps_errf(err, errlen, "library path too long");
        return QATPY_ERR_CONFIG;
    }

    pthread_mutex_lock(&g_lock);
    if (atomic_load(&g_loaded)) {
        int same = strcmp(qp, g_qat_path) == 0 && strcmp(up, g_usdm_path) == 0;
        if (!same)
            qps_errf(err, errlen,
                     "qatlib is already loaded from %s and %s in this process; cannot switch "
                     "to %s and %s",
                     g_qat_path, g_usdm_path, qp, up);
        pthread_mutex_unlock(&g_lock);
        return same ? QATPY_OK : QATPY_ERR_STATE;
    }

    struct qps_lib t;
    memset(&t, 0, sizeof t);
    /* libusdm first and RTLD_GLOBAL: libqat resolves its qae* imports from it. */
    t.usdm = dlopen(up, RTLD_NOW | RTLD_GLOBAL);
    if (!t.usdm) {
        const char *why = dlerror();
        qps_errf(err, errlen,
                 "cannot load %s (%s); install qatlib (it provides libusdm.so.0) or set "
                 "QATPY_LIBUSDM to its path",
                 up, why ? why : "unknown error");
        pthread_mutex_unlock(&g_lock);
        return QATPY_ERR_LIBRARY;
    }
    t.qat = dlopen(qp, RTLD_NOW);
    if (!t.qat) {
        const char *why = dlerror();
        qps_errf(err, errlen,
                 "cannot load %s (%s); install qatlib (it provides libqat.so.4) or set "
                 "QATPY_LIBQAT to its path",
                 qp, why ? why : "unknown error");
        dlclose(t.usdm);
        pthread_mutex_unlock(&g_lock);
        return QATPY_ERR_LIBRARY;
    }

    void *p;
    int bad = 0;
#define QPS_REQ(name)                                                                        \
    if (!bad) {                                                                              \
        if (resolve(t.qat, qp, #name, true, &p, err, errlen) != 0)                           \
            bad = 1;                                                                         \
        else                                                                                 \
            t.name = (QATPY_FN(name))p;                                                      \
    }
#define QPS_OPT(name)                                                                        \
    if (!bad) {                                                                              \
        resolve(t.qat, qp, #name, false, &p, err, errlen);                                   \
        t.name = (QATPY_FN(name))p;                                                          \
    }
#define QPS_USDM(name)                                                                       \
    if (!bad) {                                                                              \
        if (resolve(t.usdm, up, #name, true, &p, err, errlen) != 0)                          \
            bad = 1;                                                                         \
        else                                                                                 \
            t.name = (QATPY_FN(name))p;                                                      \
    }
    QPS_REQUIRED_QAT(QPS_REQ)
    QPS_OPTIONAL_QAT(QPS_OPT)
    QPS_REQUIRED_USDM(QPS_USDM)
#undef QPS_REQ
#undef QPS_OPT
#undef QPS_USDM
    if (bad) {
        /* Nothing was started with these handles, so closing them is safe. */
        dlclose(t.qat);
        dlclose(t.usdm);
        pthread_mutex_unlock(&g_lock);
        return QATPY_ERR_LIBRARY;
    }
    /* The simulated device exports its control API from libqat.so.4. */
    t.sim_set = (qps_sim_set_fn)dlsym(t.qat, "qatpy_sim_set");
    t.sim_get = (qps_sim_get_fn)dlsym(t.qat, "qatpy_sim_get");
    t.sim_reset = (qps_sim_reset_fn)dlsym(t.qat, "qatpy_sim_reset");
    if (!t.sim_set || !t.sim_get || !t.sim_reset)
        t.sim_set = NULL, t.sim_get = NULL, t.sim_reset = NULL;
    dlerror();

    qps_lib = t;
    snprintf(g_qat_path, sizeof g_qat_path, "%s", qp);
    snprintf(g_usdm_path, sizeof g_usdm_path, "%s", up);
    atomic_store_explicit(&g_loaded, 1, memory_order_release);
    pthread_mutex_unlock(&g_lock);
    if (err && errlen)
        err[0] = '\0';
    return QATPY_OK;
}

int qatpy_lib_is_sim(void) { return qps_loaded() && qps_lib.sim_set != NULL; }

int qatpy_sim_knob_set(const char *knob, long long value)
{
    if (!qatpy_lib_is_sim() || !knob)
        return -1;
    return qps_lib.sim_set(knob, value);
}

int qatpy_sim_knob_get(const char *name, long long *out)
{
    if (!qatpy_lib_is_sim() || !name || !out)
        return -1;
    return qps_lib.sim_get(name, out);
}

int qatpy_sim_knob_reset(void)
{
    if (!qatpy_lib_is_sim())
        return -1;
    return qps_lib.sim_reset();
}
