/*
 * Private interface between the simulated libqat.so.4 and the simulated
 * libusdm.so.0.  The real libraries share no such interface; ours exists so
 * the device can enforce "every pData lies inside a live qaeMemAllocNUMA
 * block" and can tell when key material is released without a wipe.
 * Exported from libusdm.so.0 under the qatpy_simmem_ prefix.
 */
#ifndef QATPY_SIMMEM_H
#define QATPY_SIMMEM_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const void *p;   /* in: first byte the device touches */
    size_t len;      /* in: number of bytes, > 0 */
    int is_key;      /* in: the block holds key material from now on */
    uint64_t serial; /* out: serial number of the block holding [p, p+len) */
    int inherited;   /* out: the range is in a block the parent allocated (fork child) */
} qatpy_simmem_range;

/* All ranges inside one live block each?  Fills serial.  Returns -1 if so,
 * otherwise the index of the first range that is not.  One lock round trip. */
int qatpy_simmem_check(qatpy_simmem_range *ranges, int n);

/* Are the blocks recorded by qatpy_simmem_check still the same live blocks?
 * -1 if so, otherwise the index of the first range whose block was freed. */
int qatpy_simmem_recheck(const qatpy_simmem_range *ranges, int n);

typedef struct {
    long long live_allocs;
    long long live_bytes;
    long long total_allocs;
    long long alloc_refused;
    long long freed_wiped;
    long long freed_unwiped;
    long long key_freed_unwiped;
    long long bad_free;
    long long free_inherited; /* frees of a parent's block in a fork child (no-ops) */
} qatpy_simmem_stats;

void qatpy_simmem_stats_get(qatpy_simmem_stats *out);
/* Zeroes the event counters; live_allocs/live_bytes describe state and stay. */
void qatpy_simmem_stats_reset(void);

/* Test probe: while quarantine is on, freed blocks stay mapped (not live)
 * so a test can prove the wipe.  Turning it off releases them. */
void qatpy_simmem_set_quarantine(int on);
/* Non-zero bytes left in the quarantined block that started at p, or -1. */
long long qatpy_simmem_freed_nonzero(const void *p);

/* Exported by the real libusdm too, but not used by qatpy (not in qat_api.h). */
void *qaePhysToVirtNUMA(uint64_t physAddress);
int32_t qaeMemInit(void);
void qaeMemDestroy(void);
void qaeAtFork(void);

#endif /* QATPY_SIMMEM_H */
