/*
 * Simulated libusdm.so.0: DMA-able memory for the simulated QAT device.
 *
 * Model (qatlib's qae_mem.h): size 1..64 MiB, alignment a
 * power of two <= 4 MiB, works without a device, qaeVirtToPhysNUMA gives a
 * non-zero fake IOVA for addresses inside a live block and 0 for any other
 * memory, qaeMemFreeNUMA wipes and NULLs the caller's pointer,
 * qaeMemFreeNonZeroNUMA does not wipe.
 *
 * Invariant: g_blocks[0..g_n) is sorted by start and the blocks never
 * overlap, so "which block holds p" is one binary search under the read
 * lock.  Block records are only freed under the write lock.
 *
 * fork (facts 5.3, pitfall 7): real USDM slabs are MADV_DONTFORK, so in a
 * child the parent's blocks are not mapped (touching them is SIGSEGV).  We
 * keep them mapped (a crash would hide which code touched them) but dead:
 * each block records the fork generation it was allocated in; in a child,
 * qaeVirtToPhysNUMA gives 0 for them, qatpy_simmem_check flags them
 * `inherited` (the device refuses the op, refused.dma_inherited), and
 * freeing one is a counted no-op (mem.free_inherited).  The lock is held
 * across fork() so the child gets a consistent table, and the live counts
 * start from zero in the child.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../qat_abi.h"
#include "simmem.h"

#define SIMMEM_MAX_SIZE ((size_t)64 << 20)
#define SIMMEM_MAX_ALIGN ((size_t)4 << 20)
#define SIMMEM_MIN_ALIGN ((size_t)64)
#define SIMMEM_PAGE ((uint64_t)4096)
#define SIMMEM_QUARANTINE_MAX 256

typedef struct simmem_block {
    uintptr_t start;
    size_t size;
    uint64_t serial;
    uint64_t iova;
    atomic_int key;
    unsigned gen;               /* fork generation it was allocated in */
    struct simmem_block *qnext; /* quarantine list link */
} simmem_block;

static pthread_rwlock_t g_lock = PTHREAD_RWLOCK_INITIALIZER;
static simmem_block **g_blocks;
static size_t g_n;
static size_t g_cap;
static uint64_t g_serial;
/* First IOVA handed out matches the one measured on a real libusdm. */
static uint64_t g_next_iova = 0x202000;

/* Quarantine (test probe), guarded by g_lock's write side. */
static int g_quarantine;
static simmem_block *g_qhead;
static int g_qcount;

static atomic_llong s_live_allocs, s_live_bytes, s_total_allocs, s_alloc_refused;
static atomic_llong s_freed_wiped, s_freed_unwiped, s_key_freed_unwiped, s_bad_free;
static atomic_llong s_free_inherited;
/* Bumped in every fork child; blocks of an older generation are the parent's. */
static atomic_uint g_gen;

static void atfork_prepare(void) { pthread_rwlock_wrlock(&g_lock); }
static void atfork_parent(void) { pthread_rwlock_unlock(&g_lock); }
static void atfork_child(void)
{
    /* Only the forking thread exists here, and it holds g_lock: start over. */
    pthread_rwlock_init(&g_lock, NULL);
    atomic_fetch_add(&g_gen, 1);
    atomic_store(&s_live_allocs, 0);
    atomic_store(&s_live_bytes, 0);
}

__attribute__((constructor)) static void simmem_init(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

static int inherited(const simmem_block *b)
{
    return b->gen != atomic_load_explicit(&g_gen, memory_order_relaxed);
}

/* Index of the block with the largest start <= p, or g_n if none.  Caller
 * holds g_lock. */
static size_t find_floor(uintptr_t p)
{
    size_t lo = 0, hi = g_n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (g_blocks[mid]->start <= p)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == 0 ? g_n : lo - 1;
}

static simmem_block *find_containing(uintptr_t p, size_t len)
{
    size_t i = find_floor(p);
    if (i == g_n)
        return NULL;
    simmem_block *b = g_blocks[i];
    if (p - b->start >= b->size || len > b->size - (p - b->start))
        return NULL;
    return b;
}

static void release_block(simmem_block *b)
{
    free((void *)b->start);
    free(b);
}

void *qaeMemAllocNUMA(size_t size, int node, size_t phys_alignment_byte)
{
    (void)node;
    if (size == 0 || size > SIMMEM_MAX_SIZE || phys_alignment_byte == 0 ||
        phys_alignment_byte > SIMMEM_MAX_ALIGN ||
        (phys_alignment_byte & (phys_alignment_byte - 1)) != 0) {
        atomic_fetch_add_explicit(&s_alloc_refused, 1, memory_order_relaxed);
        return NULL;
    }
    size_t align = phys_alignment_byte < SIMMEM_MIN_ALIGN ? SIMMEM_MIN_ALIGN : phys_alignment_byte;
    void *mem = NULL;
    if (posix_memalign(&mem, align, size) != 0)
        return NULL;
    memset(mem, 0, size);
    simmem_block *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        free(mem);
        return NULL;
    }
    b->start = (uintptr_t)mem;
    b->size = size;
    b->gen = atomic_load(&g_gen);
    atomic_init(&b->key, 0);

    pthread_rwlock_wrlock(&g_lock);
    if (g_n == g_cap) {
        size_t ncap = g_cap ? g_cap * 2 : 256;
        simmem_block **nb = realloc(g_blocks, ncap * sizeof(*nb));
        if (nb == NULL) {
            pthread_rwlock_unlock(&g_lock);
            free(mem);
            free(b);
            return NULL;
        }
        g_blocks = nb;
        g_cap = ncap;
    }
    size_t pos = g_n == 0 ? 0 : find_floor(b->start);
    pos = (pos == g_n) ? 0 : pos + 1;
    memmove(&g_blocks[pos + 1], &g_blocks[pos], (g_n - pos) * sizeof(*g_blocks));
    g_blocks[pos] = b;
    g_n++;
    b->serial = ++g_serial;
    uint64_t ia = align < SIMMEM_PAGE ? SIMMEM_PAGE : (uint64_t)align;
    b->iova = (g_next_iova + ia - 1) & ~(ia - 1);
    /* One unmapped guard page between blocks keeps IOVAs of neighbours apart. */
    g_next_iova = b->iova + (((uint64_t)size + SIMMEM_PAGE - 1) & ~(SIMMEM_PAGE - 1)) + SIMMEM_PAGE;
    pthread_rwlock_unlock(&g_lock);

    atomic_fetch_add_explicit(&s_live_allocs, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s_live_bytes, (long long)size, memory_order_relaxed);
    atomic_fetch_add_explicit(&s_total_allocs, 1, memory_order_relaxed);
    return mem;
}

static void free_common(void **ptr, int wipe)
{
    if (ptr == NULL || *ptr == NULL) {
        atomic_fetch_add_explicit(&s_bad_free, 1, memory_order_relaxed);
        return;
    }
    uintptr_t p = (uintptr_t)*ptr;
    simmem_block *b = NULL;
    simmem_block *evict = NULL;
    int quarantined = 0;
    size_t bsize = 0;
    int bkey = 0;
    pthread_rwlock_wrlock(&g_lock);
    size_t i = find_floor(p);
    if (i != g_n && g_blocks[i]->start == p && inherited(g_blocks[i])) {
        /* The parent's block in a fork child: not ours to free. */
        pthread_rwlock_unlock(&g_lock);
        atomic_fetch_add_explicit(&s_free_inherited, 1, memory_order_relaxed);
        return;
    }
    if (i != g_n && g_blocks[i]->start == p) {
        b = g_blocks[i];
        memmove(&g_blocks[i], &g_blocks[i + 1], (g_n - i - 1) * sizeof(*g_blocks));
        g_n--;
        bsize = b->size;
        bkey = atomic_load_explicit(&b->key, memory_order_relaxed);
        /* Wiped before the lock is dropped, so no probe can see key bytes. */
        if (wipe)
            explicit_bzero((void *)b->start, b->size);
        if (g_quarantine) {
            quarantined = 1;
            b->qnext = g_qhead;
            g_qhead = b;
            if (++g_qcount > SIMMEM_QUARANTINE_MAX) {
                simmem_block **pp = &g_qhead;
                while ((*pp)->qnext != NULL)
                    pp = &(*pp)->qnext;
                evict = *pp;
                *pp = NULL;
                g_qcount--;
            }
        }
    }
    pthread_rwlock_unlock(&g_lock);
    if (b == NULL) {
        atomic_fetch_add_explicit(&s_bad_free, 1, memory_order_relaxed);
        return;
    }
    atomic_fetch_sub_explicit(&s_live_allocs, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&s_live_bytes, (long long)bsize, memory_order_relaxed);
    if (wipe) {
        atomic_fetch_add_explicit(&s_freed_wiped, 1, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&s_freed_unwiped, 1, memory_order_relaxed);
        if (bkey)
            atomic_fetch_add_explicit(&s_key_freed_unwiped, 1, memory_order_relaxed);
    }
    *ptr = NULL;
    if (evict != NULL)
        release_block(evict);
    if (!quarantined)
        release_block(b);
}

void qaeMemFreeNUMA(void **ptr)
{
    free_common(ptr, 1);
}

void qaeMemFreeNonZeroNUMA(void **ptr)
{
    free_common(ptr, 0);
}

uint64_t qaeVirtToPhysNUMA(void *pVirtAddr)
{
    uint64_t r = 0;
    pthread_rwlock_rdlock(&g_lock);
    simmem_block *b = find_containing((uintptr_t)pVirtAddr, 1);
    if (b != NULL && !inherited(b))
        r = b->iova + ((uintptr_t)pVirtAddr - b->start);
    pthread_rwlock_unlock(&g_lock);
    return r;
}

void *qaePhysToVirtNUMA(uint64_t physAddress)
{
    void *r = NULL;
    pthread_rwlock_rdlock(&g_lock);
    for (size_t i = 0; i < g_n; i++) {
        simmem_block *b = g_blocks[i];
        if (physAddress >= b->iova && physAddress - b->iova < b->size) {
            r = (void *)(b->start + (uintptr_t)(physAddress - b->iova));
            break;
        }
    }
    pthread_rwlock_unlock(&g_lock);
    return r;
}

int32_t qaeMemInit(void)
{
    return 0;
}

void qaeMemDestroy(void)
{
}

void qaeAtFork(void)
{
}

int qatpy_simmem_check(qatpy_simmem_range *ranges, int n)
{
    int bad = -1;
    pthread_rwlock_rdlock(&g_lock);
    for (int i = 0; i < n; i++) {
        simmem_block *b = ranges[i].len == 0 ? NULL
                                             : find_containing((uintptr_t)ranges[i].p, ranges[i].len);
        ranges[i].inherited = b != NULL && inherited(b);
        if (b == NULL || ranges[i].inherited) {
            bad = i;
            break;
        }
        ranges[i].serial = b->serial;
        if (ranges[i].is_key && !atomic_load_explicit(&b->key, memory_order_relaxed))
            atomic_store_explicit(&b->key, 1, memory_order_relaxed);
    }
    pthread_rwlock_unlock(&g_lock);
    return bad;
}

int qatpy_simmem_recheck(const qatpy_simmem_range *ranges, int n)
{
    int bad = -1;
    pthread_rwlock_rdlock(&g_lock);
    for (int i = 0; i < n; i++) {
        simmem_block *b = find_containing((uintptr_t)ranges[i].p, ranges[i].len);
        if (b == NULL || b->serial != ranges[i].serial) {
            bad = i;
            break;
        }
    }
    pthread_rwlock_unlock(&g_lock);
    return bad;
}

void qatpy_simmem_stats_get(qatpy_simmem_stats *out)
{
    out->live_allocs = atomic_load(&s_live_allocs);
    out->live_bytes = atomic_load(&s_live_bytes);
    out->total_allocs = atomic_load(&s_total_allocs);
    out->alloc_refused = atomic_load(&s_alloc_refused);
    out->freed_wiped = atomic_load(&s_freed_wiped);
    out->freed_unwiped = atomic_load(&s_freed_unwiped);
    out->key_freed_unwiped = atomic_load(&s_key_freed_unwiped);
    out->bad_free = atomic_load(&s_bad_free);
    out->free_inherited = atomic_load(&s_free_inherited);
}

void qatpy_simmem_stats_reset(void)
{
    atomic_store(&s_total_allocs, 0);
    atomic_store(&s_alloc_refused, 0);
    atomic_store(&s_freed_wiped, 0);
    atomic_store(&s_freed_unwiped, 0);
    atomic_store(&s_key_freed_unwiped, 0);
    atomic_store(&s_bad_free, 0);
    atomic_store(&s_free_inherited, 0);
}

void qatpy_simmem_set_quarantine(int on)
{
    simmem_block *list = NULL;
    pthread_rwlock_wrlock(&g_lock);
    g_quarantine = on != 0;
    if (!g_quarantine) {
        list = g_qhead;
        g_qhead = NULL;
        g_qcount = 0;
    }
    pthread_rwlock_unlock(&g_lock);
    while (list != NULL) {
        simmem_block *next = list->qnext;
        release_block(list);
        list = next;
    }
}

long long qatpy_simmem_freed_nonzero(const void *p)
{
    long long r = -1;
    pthread_rwlock_rdlock(&g_lock);
    for (simmem_block *q = g_qhead; q != NULL; q = q->qnext) {
        if (q->start == (uintptr_t)p) {
            const unsigned char *c = (const unsigned char *)q->start;
            r = 0;
            for (size_t i = 0; i < q->size; i++)
                r += c[i] != 0;
            break;
        }
    }
    pthread_rwlock_unlock(&g_lock);
    return r;
}
