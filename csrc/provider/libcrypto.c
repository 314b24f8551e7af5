/*
 * Finding the libcrypto that Python's _ssl uses and loading our provider
 * into it.
 *
 * Nothing links against libcrypto: it is already mapped once Python has
 * imported ssl, so dlopen(RTLD_NOLOAD) finds it.  We then make sure it is
 * the very library _ssl resolves its symbols to (dlsym on _ssl's own handle
 * searches _ssl and its dependencies), and that its version is the one
 * Python reports, before registering the provider with
 * OSSL_PROVIDER_add_builtin and activating it with OSSL_PROVIDER_try_load
 * (retain_fallbacks=1 keeps the default provider that an empty
 * configuration loads implicitly).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "qpv.h"

struct qpv_crypto qpv_c;

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static int loaded;   /* the provider is active: later calls return at once */
static int added;    /* OSSL_PROVIDER_add_builtin done (it must not be repeated) */

#define LIBCRYPTO "libcrypto.so.3"

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

static int resolve_all(void *h, char *err, size_t errlen)
{
    struct qpv_crypto t;
    void *sym;
    memset(&t, 0, sizeof t);
#define QPV_RESOLVE(ret, name, args)                                                            \
    sym = dlsym(h, #name);                                                                      \
    memcpy(&t.name, &sym, sizeof sym);                                                          \
    if (!sym)                                                                                   \
        return fail(err, errlen, QATPY_PV_ERR_SYMBOL,                                           \
                    LIBCRYPTO " lacks %s: qatpy's ssl provider needs OpenSSL 3.0 or later",     \
                    #name);
    QPV_CRYPTO_FUNCS(QPV_RESOLVE)
#undef QPV_RESOLVE
    qpv_c = t;
    return QATPY_PV_OK;
}

static int load_locked(const char *ssl_module, unsigned long expected, char *err, size_t errlen)
{
    void *h = dlopen(LIBCRYPTO, RTLD_NOW | RTLD_NOLOAD);
    if (!h)
        return fail(err, errlen, QATPY_PV_ERR_NO_LIBCRYPTO,
                    LIBCRYPTO " is not loaded in this process (is Python's ssl module built "
                    "against OpenSSL 3, and imported?)");
    void *ours = dlsym(h, "OpenSSL_version_num");
    if (!ours)
        return fail(err, errlen, QATPY_PV_ERR_TOO_OLD,
                    LIBCRYPTO " has no OpenSSL_version_num: not OpenSSL 3");
    if (!ssl_module)
        return fail(err, errlen, QATPY_PV_ERR_STATIC,
                    "Python's _ssl is built into the interpreter: its OpenSSL is linked "
                    "statically and a provider in " LIBCRYPTO " cannot reach it");
    void *hs = dlopen(ssl_module, RTLD_NOW | RTLD_NOLOAD);
    void *theirs = hs ? dlsym(hs, "OpenSSL_version_num") : NULL;
    if (!theirs)
        return fail(err, errlen, QATPY_PV_ERR_STATIC,
                    "%s does not resolve OpenSSL_version_num from a shared libcrypto: "
                    "its OpenSSL is linked statically and cannot take a provider",
                    ssl_module);
    if (theirs != ours) {
        Dl_info a, b;
        const char *fa = dladdr(theirs, &a) && a.dli_fname ? a.dli_fname : "?";
        const char *fb = dladdr(ours, &b) && b.dli_fname ? b.dli_fname : "?";
        return fail(err, errlen, QATPY_PV_ERR_OTHER_LIBCRYPTO,
                    "Python's _ssl uses %s, not %s (found as " LIBCRYPTO ")", fa, fb);
    }
    unsigned long v = ((unsigned long (*)(void))ours)();
    if (v < 0x30000000UL)
        return fail(err, errlen, QATPY_PV_ERR_TOO_OLD,
                    "OpenSSL %#lx is older than 3.0: it has no providers", v);
    if (v != expected)
        return fail(err, errlen, QATPY_PV_ERR_VERSION,
                    LIBCRYPTO " reports version %#lx but ssl.OPENSSL_VERSION_NUMBER is %#lx", v,
                    expected);
    /* Resolved once: after add_builtin the provider may already be running
     * on other threads, which read the table without a lock. */
    if (!added) {
        int rc = resolve_all(h, err, errlen);
        if (rc != QATPY_PV_OK)
            return rc;
    }
    if (qpv_c.EVP_default_properties_is_fips_enabled(NULL))
        return fail(err, errlen, QATPY_PV_ERR_FIPS,
                    "OpenSSL's default properties require FIPS providers (fips=yes): a "
                    "non-FIPS provider such as qatpy's is excluded");
    if (!added && !qpv_c.OSSL_PROVIDER_add_builtin(NULL, QPV_PROVIDER_NAME, qpv_provider_init))
        return fail(err, errlen, QATPY_PV_ERR_LOAD, "OSSL_PROVIDER_add_builtin failed");
    added = 1;
    qpv_keys_init();
    if (!qpv_c.OSSL_PROVIDER_try_load(NULL, QPV_PROVIDER_NAME, 1))
        return fail(err, errlen, QATPY_PV_ERR_LOAD,
                    "OSSL_PROVIDER_try_load(\"" QPV_PROVIDER_NAME "\") failed");
    /* The fetch merges the default property query: if it excludes us, no
     * key reference could ever be decoded. */
    qpv_evp_keymgmt *km = qpv_c.EVP_KEYMGMT_fetch(NULL, "RSA", QPV_PROVIDER_PROPS);
    if (!km)
        return fail(err, errlen, QATPY_PV_ERR_EXCLUDED,
                    "provider " QPV_PROVIDER_NAME " loaded but the default property query "
                    "excludes it (see EVP_set_default_properties / the OpenSSL config)");
    qpv_c.EVP_KEYMGMT_free(km);
    return QATPY_PV_OK;
}

int qatpy_provider_load(const char *ssl_module, unsigned long expected_version, char *err,
                        size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    pthread_mutex_lock(&load_lock);
    int rc = loaded ? QATPY_PV_OK : load_locked(ssl_module, expected_version, err, errlen);
    if (rc == QATPY_PV_OK)
        loaded = 1;
    pthread_mutex_unlock(&load_lock);
    return rc;
}
