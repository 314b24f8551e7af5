/*
 * The device hook: where a provider signature goes to the QAT device.
 *
 * PHASE 1: no key carries a device copy yet, so qpv_device_sign answers
 * QPV_DEV_NONE and the caller signs in software (counted as
 * fallback_no_device_key on a device engine).
 *
 * PHASE 2 (the lead wires this): make k->device_key a qatpy_key on the
 * engine's device when the key is registered, and here call the shim's
 * blocking sign with the engine's settings (qatpy_engine_config_of):
 * RSA PKCS#1 v1.5 as QATPY_RSA_PKCS1 with req->hash->shim_id and the
 * digest; RSA-PSS by encoding EMSA-PSS (req->mgf1, req->salt_len) in C and
 * submitting QATPY_RSA_RAW; ECDSA with the digest.  Map the outcome to
 * QPV_DEV_OK / _ERROR / _VERIFY / _DEADLINE; the caller applies the
 * engine's fallback policy and counts the route.
 */
#include "qpv.h"

/* Sizes and schemes the shim's device path takes (README: RSA 2048-8192 in
 * the standard sizes, P-256/384/521, SHA-2 digests). */
int qpv_device_supports(const struct qatpy_pkey *k, const struct qpv_sign_req *req)
{
    if (!req->hash->shim_id)
        return 0;
    if (k->type == QPV_EC)
        return k->curve != 0;
    if (req->scheme == QPV_SIG_RSA_PSS && !req->mgf1->shim_id)
        return 0;
    return k->bits == 2048 || k->bits == 3072 || k->bits == 4096 || k->bits == 8192;
}

int qpv_device_sign(struct qatpy_pkey *k, const struct qpv_sign_req *req, uint8_t *sig,
                    size_t *siglen, size_t sigsize)
{
    (void)k, (void)req, (void)sig, (void)siglen, (void)sigsize;
    return QPV_DEV_NONE;
}
