/*
 * Decoder for qatpy key references:
 *
 *     -----BEGIN QATPY KEY REFERENCE-----
 *     <64 hex digits: the id of a registered key>
 *     -----END QATPY KEY REFERENCE-----
 *
 * One decoder per key type ("RSA", "EC"): OpenSSL binds a decoder to the
 * keymgmt of the same name.  The decoder reads the input through the
 * core's BIO_read_ex upcall, and for an id registered with a key of its type
 * passes OpenSSL an object reference (the id); OpenSSL then calls our
 * keymgmt's load with it, because keymgmt and decoder come from the same
 * provider.  Anything else (another PEM label, an unknown id, the other key
 * type) is "not ours": return 1 without calling data_cb, so the other
 * decoders get their turn.  A decoder returns 0 only to stop decoding.
 */
#include <ctype.h>
#include <string.h>

#include "qpv.h"

#define BEGIN_LABEL "-----BEGIN QATPY KEY REFERENCE-----"
#define END_LABEL "-----END QATPY KEY REFERENCE-----"
#define ID_HEX 64
/* Enough for the block with generous whitespace; longer input is not ours. */
#define READ_MAX 512

static int decoder_ctx_token;

static void *dec_newctx(void *provctx)
{
    (void)provctx;
    return &decoder_ctx_token;
}

static void dec_freectx(void *ctx) { (void)ctx; }

static int dec_does_selection(void *provctx, int selection)
{
    (void)provctx;
    return selection == 0 || (selection & QPV_OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0;
}

static const char *skip_space(const char *p, const char *end)
{
    while (p < end && isspace((unsigned char)*p))
        p++;
    return p;
}

/* The id inside a well-formed block, or NULL. */
static const char *parse_block(const char *buf, size_t len)
{
    const char *end = buf + len;
    const char *p = skip_space(buf, end);
    size_t bl = strlen(BEGIN_LABEL), el = strlen(END_LABEL);
    if ((size_t)(end - p) < bl || memcmp(p, BEGIN_LABEL, bl) != 0)
        return NULL;
    p = skip_space(p + bl, end);
    const char *id = p;
    if ((size_t)(end - p) < ID_HEX)
        return NULL;
    for (int i = 0; i < ID_HEX; i++)
        if (!isxdigit((unsigned char)p[i]) || isupper((unsigned char)p[i]))
            return NULL;
    p = skip_space(p + ID_HEX, end);
    if ((size_t)(end - p) < el || memcmp(p, END_LABEL, el) != 0)
        return NULL;
    return id;
}

static int decode_typed(int type, void *in, qpv_callback *data_cb, void *data_cbarg)
{
    char buf[READ_MAX];
    size_t len = 0;
    if (!qpv_bio_read_ex)
        return 1;
    while (len < sizeof buf) {
        size_t got = 0;
        if (!qpv_bio_read_ex(in, buf + len, sizeof buf - len, &got) || got == 0)
            break;
        len += got;
    }
    const char *id = parse_block(buf, len);
    if (!id)
        return 1;
    struct qatpy_pkey *k = qpv_key_lookup(id, ID_HEX);
    if (!k)
        return 1;
    int mine = k->type == type;
    qpv_key_unref(k);
    if (!mine)
        return 1;
    int object_type = QPV_OSSL_OBJECT_PKEY;
    qpv_param ps[4] = {
        qpv_param_int(QPV_OSSL_OBJECT_PARAM_TYPE, &object_type),
        qpv_param_utf8(QPV_OSSL_OBJECT_PARAM_DATA_TYPE, type == QPV_RSA ? "RSA" : "EC"),
        qpv_param_octets(QPV_OSSL_OBJECT_PARAM_REFERENCE, id, ID_HEX),
        qpv_param_end(),
    };
    return data_cb(ps, data_cbarg);
}

static int rsa_decode(void *ctx, void *in, int selection, qpv_callback *data_cb, void *data_cbarg,
                      qpv_passphrase_callback *pw_cb, void *pw_cbarg)
{
    (void)ctx, (void)selection, (void)pw_cb, (void)pw_cbarg;
    return decode_typed(QPV_RSA, in, data_cb, data_cbarg);
}

static int ec_decode(void *ctx, void *in, int selection, qpv_callback *data_cb, void *data_cbarg,
                     qpv_passphrase_callback *pw_cb, void *pw_cbarg)
{
    (void)ctx, (void)selection, (void)pw_cb, (void)pw_cbarg;
    return decode_typed(QPV_EC, in, data_cb, data_cbarg);
}

#define DECODER_TABLE(name, DECODE)                                                             \
    const qpv_dispatch name[] = {                                                               \
        {QPV_OSSL_FUNC_DECODER_NEWCTX, QPV_FN(dec_newctx)},                                     \
        {QPV_OSSL_FUNC_DECODER_FREECTX, QPV_FN(dec_freectx)},                                   \
        {QPV_OSSL_FUNC_DECODER_DOES_SELECTION, QPV_FN(dec_does_selection)},                     \
        {QPV_OSSL_FUNC_DECODER_DECODE, QPV_FN(DECODE)},                                         \
        {0, NULL}}

DECODER_TABLE(qpv_rsa_decoder, rsa_decode);
DECODER_TABLE(qpv_ec_decoder, ec_decode);
