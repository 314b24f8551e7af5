/*
 * OSSL_PARAM helpers: our own, over our declaration of the layout
 * (ossl_abi.h), so the provider resolves no OSSL_PARAM_* function.
 */
#include <string.h>

#include "qpv.h"

const qpv_param *qpv_param_locate(const qpv_param *params, const char *key)
{
    for (const qpv_param *p = params; p && p->key; p++)
        if (strcmp(p->key, key) == 0)
            return p;
    return NULL;
}

qpv_param *qpv_param_locate_mut(qpv_param *params, const char *key)
{
    for (qpv_param *p = params; p && p->key; p++)
        if (strcmp(p->key, key) == 0)
            return p;
    return NULL;
}

int qpv_param_get_int(const qpv_param *p, int *out)
{
    if (!p || !p->data)
        return 0;
    if (p->data_type == QPV_OSSL_PARAM_INTEGER) {
        if (p->data_size == sizeof(int32_t)) {
            int32_t v;
            memcpy(&v, p->data, sizeof v);
            *out = v;
            return 1;
        }
        if (p->data_size == sizeof(int64_t)) {
            int64_t v;
            memcpy(&v, p->data, sizeof v);
            if (v < -0x7fffffffLL || v > 0x7fffffffLL)
                return 0;
            *out = (int)v;
            return 1;
        }
    } else if (p->data_type == QPV_OSSL_PARAM_UNSIGNED_INTEGER) {
        if (p->data_size == sizeof(uint32_t)) {
            uint32_t v;
            memcpy(&v, p->data, sizeof v);
            if (v > 0x7fffffffU)
                return 0;
            *out = (int)v;
            return 1;
        }
        if (p->data_size == sizeof(uint64_t)) {
            uint64_t v;
            memcpy(&v, p->data, sizeof v);
            if (v > 0x7fffffffULL)
                return 0;
            *out = (int)v;
            return 1;
        }
    }
    return 0;
}

int qpv_param_get_utf8(const qpv_param *p, char *buf, size_t size)
{
    const char *s;
    size_t len;
    if (!p || size == 0)
        return 0;
    if (p->data_type == QPV_OSSL_PARAM_UTF8_STRING) {
        s = p->data;
        len = p->data_size;
    } else if (p->data_type == QPV_OSSL_PARAM_UTF8_PTR) {
        if (!p->data)
            return 0;
        memcpy(&s, p->data, sizeof s);
        len = s ? strlen(s) : 0;
    } else {
        return 0;
    }
    if (!s)
        return 0;
    /* data_size may or may not count a terminating NUL */
    const char *nul = memchr(s, '\0', len);
    if (nul)
        len = (size_t)(nul - s);
    if (len >= size)
        return 0;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return 1;
}

int qpv_param_set_utf8(qpv_param *p, const char *s)
{
    size_t len = strlen(s);
    p->return_size = len;
    if (p->data_type == QPV_OSSL_PARAM_UTF8_PTR) {
        if (!p->data)
            return 1;
        memcpy(p->data, &s, sizeof s);
        return 1;
    }
    if (p->data_type != QPV_OSSL_PARAM_UTF8_STRING)
        return 0;
    if (!p->data)
        return 1; /* a size query */
    if (p->data_size < len + 1)
        return 0;
    memcpy(p->data, s, len + 1);
    return 1;
}

int qpv_param_set_int(qpv_param *p, int v)
{
    if (p->data_type == QPV_OSSL_PARAM_INTEGER || p->data_type == QPV_OSSL_PARAM_UNSIGNED_INTEGER) {
        if (p->data_type == QPV_OSSL_PARAM_UNSIGNED_INTEGER && v < 0)
            return 0;
        if (p->data_size == sizeof(int32_t)) {
            int32_t x = v;
            p->return_size = sizeof x;
            if (p->data)
                memcpy(p->data, &x, sizeof x);
            return 1;
        }
        if (p->data_size == sizeof(int64_t)) {
            int64_t x = v;
            p->return_size = sizeof x;
            if (p->data)
                memcpy(p->data, &x, sizeof x);
            return 1;
        }
    }
    return 0;
}

static qpv_param make(const char *key, unsigned type, void *data, size_t size)
{
    qpv_param p = {key, type, data, size, QPV_OSSL_PARAM_UNMODIFIED};
    return p;
}

/* The const casts: OpenSSL's input parameters carry `void *data` but are
 * only read by the callee. */
qpv_param qpv_param_utf8(const char *key, const char *s)
{
    return make(key, QPV_OSSL_PARAM_UTF8_STRING, (void *)(uintptr_t)s, strlen(s));
}

qpv_param qpv_param_int(const char *key, int *v)
{
    return make(key, QPV_OSSL_PARAM_INTEGER, v, sizeof *v);
}

qpv_param qpv_param_octets(const char *key, const void *data, size_t len)
{
    return make(key, QPV_OSSL_PARAM_OCTET_STRING, (void *)(uintptr_t)data, len);
}

qpv_param qpv_param_native_uint(const char *key, void *data, size_t len)
{
    return make(key, QPV_OSSL_PARAM_UNSIGNED_INTEGER, data, len);
}

qpv_param qpv_param_end(void) { return make(NULL, 0, NULL, 0); }

void qpv_be_to_native(uint8_t *out, const uint8_t *in, size_t len)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    for (size_t i = 0; i < len; i++)
        out[i] = in[len - 1 - i];
#else
    memcpy(out, in, len);
#endif
}

void qpv_wipe(void *p, size_t len)
{
    volatile uint8_t *v = p;
    while (len--)
        *v++ = 0;
}
