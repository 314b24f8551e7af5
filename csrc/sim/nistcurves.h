/*
 * NIST P-256 / P-384 / P-521 domain parameters (SEC 2 v2.0 sections 2.4.2,
 * 2.5.1 and 2.6.1; the same curves as FIPS 186-4 D.1.2.3-D.1.2.5): the
 * simulator's one copy.  The device recognises a curve by them (simbn.c)
 * and the C driver builds its requests from them (simcheck.c).
 * tests/test_sim_device.py checks them against the table in
 * tests/abi_facts.py.  Big-endian hex, each padded to `len` bytes; p is the
 * field prime (qatlib's q), n the order of (xg, yg).
 */
#ifndef QATPY_NISTCURVES_H
#define QATPY_NISTCURVES_H

#include <stddef.h>

typedef struct {
    const char *name;
    size_t len; /* bytes of every parameter */
    const char *p, *a, *b, *n, *xg, *yg;
} sim_nist_curve;

/* Indexed by SIMBN_P256, SIMBN_P384, SIMBN_P521. */
static const sim_nist_curve sim_nist_curves[3] = {
    {.name = "P-256",
     .len = 32,
     .p = "ffffffff00000001000000000000000000000000ffffffffffffffffffffffff",
     .a = "ffffffff00000001000000000000000000000000fffffffffffffffffffffffc",
     .b = "5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b",
     .n = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551",
     .xg = "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296",
     .yg = "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5"},
    {.name = "P-384",
     .len = 48,
     .p = "fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000"
          "ffffffff",
     .a = "fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000"
          "fffffffc",
     .b = "b3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8ed"
          "d3ec2aef",
     .n = "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196a"
          "ccc52973",
     .xg = "aa87ca22be8b05378eb1c71ef320ad746e1d3b628ba79b9859f741e082542a385502f25dbf55296c3a545e38"
           "72760ab7",
     .yg = "3617de4a96262c6f5d9e98bf9292dc29f8f41dbd289a147ce9da3113b5f0b8c00a60b1ce1d7e819d7a431d7c"
           "90ea0e5f"},
    {.name = "P-521",
     .len = 66,
     .p = "01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
          "ffffffffffffffffffffffffffffffffffffffffffff",
     .a = "01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
          "fffffffffffffffffffffffffffffffffffffffffffc",
     .b = "0051953eb9618e1c9a1f929a21a0b68540eea2da725b99b315f3b8b489918ef109e156193951ec7e937b1652"
          "c0bd3bb1bf073573df883d2c34f1ef451fd46b503f00",
     .n = "01fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffa51868783bf2f966b7fcc"
          "0148f709a5d03bb5c9b8899c47aebb6fb71e91386409",
     .xg = "00c6858e06b70404e9cd9e3ecb662395b4429c648139053fb521f828af606b4d3dbaa14b5e77efe75928fe1d"
           "c127a2ffa8de3348b3c1856a429bf97e7e31c2e5bd66",
     .yg = "011839296a789a3bc0045c8a5fb42c7d1bd998f54449579b446817afbd17273e662c97ee72995ef42640c550"
           "b9013fad0761353c7086a272c24088be94769fd16650"},
};

#endif /* QATPY_NISTCURVES_H */
