/* churn.c — multi-threaded allocator churn benchmark.
 *
 *   bench_churn --threads N --ops M --seed S [--slots K] [--xfer-permille P]
 *               --alloc {malloc|ht-process|ht-private|ht-private-nolock}
 * M is the total number of operations, split evenly over the N threads.
 *
 * Every thread owns K slots (default 8192). Each operation picks a random slot, frees the
 * block held there (checking the 1-byte tag written into its first and last byte) and
 * allocates a new block whose size is drawn from a skewed distribution:
 *   90 %   16 .. 256 B uniform
 *   9.9 %  257 B .. 64 KiB, log-uniform (a uniform octave 2^8..2^16, then uniform inside it)
 *   0.1 %  1 MiB
 * The new block is really used: its first min(size, 64) bytes are written, then one byte per
 * 4 KiB page and the last byte. Expected live set: ~2.3 KiB per slot, ~19 MiB per thread.
 * With two or more threads, P per mille (default 50 = 5 %) of the operations hand their new
 * block to the next thread ((t+1) % N) through a lock-free single-producer/single-consumer
 * ring (4096 entries; when it is full the block stays here). Every operation adopts at most one
 * block from the thread's own inbox into a slot, to be freed later like any other block:
 * about 5 % of the frees are cross-thread frees (xfer_recv counts them).
 *
 * Allocators:
 *   malloc             the process's malloc/free (glibc, or whatever LD_PRELOAD brings in)
 *   ht-process         ht_heap_alloc/ht_heap_free on ht_process_heap()
 *   ht-private         one private heap, ht_heap_create(0, 0, 0), shared by all threads
 *   ht-private-nolock  one HT_HEAP_NO_SERIALIZE heap per thread; a block freed by a thread
 *                      that does not own its heap goes back to the owner through a lock-free
 *                      remote-free list (intrusive, drained by the owner every 64 ops)
 *
 * The PRNG is per thread, seeded from seed + thread index, so the sequence of sizes and slots
 * is deterministic (only the interleaving of hand-offs depends on timing).
 *
 * Output: one line of key=value fields:
 *   churn alloc=… threads=… ops=… wall_s=… ops_per_s=… cpu_s=… maxrss_kib=… minflt=… …
 * wall_s, cpu_s (user+sys) and minflt cover the timed region (thread start .. join);
 * maxrss_kib is the process's peak RSS (ru_maxrss). Exit status 0 on success, 1 when an
 * allocation failed, a free was rejected or a block's tag was overwritten, 2 on bad usage.
 *
 * CHURN_DEBUG=1 in the environment: each thread reports when it finished (stderr).
 *
 * Build without heaptrail (malloc mode only) for quick tests:
 *   gcc -O2 -pthread -DCHURN_NO_HEAPTRAIL bench/churn.c -o /tmp/churn
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>

#ifndef CHURN_NO_HEAPTRAIL
#include "heaptrail.h"
#endif

enum alloc_kind { A_MALLOC, A_HT_PROCESS, A_HT_PRIVATE, A_HT_PRIVATE_NOLOCK };
static const char *const alloc_names[] = {"malloc", "ht-process", "ht-private",
                                          "ht-private-nolock"};

#define RING_CAP     4096u /* hand-off ring entries (power of two) */
#define TOUCH_PREFIX 64u
#define PAGE         4096u
#ifndef HUGE_SIZE
#define HUGE_SIZE (1u << 20) /* the 0.1 % size (-DHUGE_SIZE=... for experiments) */
#endif

typedef struct block {
    unsigned char *p;
    uint32_t size;
    uint16_t owner; /* thread whose heap the block came from (nolock mode) */
    uint8_t tag;
} block;

/* Single-producer (thread t-1) / single-consumer (thread t) ring. */
typedef struct ring {
    _Alignas(64) _Atomic size_t head; /* written by the consumer */
    _Alignas(64) _Atomic size_t tail; /* written by the producer */
    _Alignas(64) block e[RING_CAP];
} ring;

/* Intrusive remote-free node, lives inside the freed block (blocks are >= 16 bytes). */
typedef struct rnode {
    struct rnode *next;
} rnode;

typedef struct thread_ctx {
    _Alignas(64) int index;
    uint64_t ops;
    uint64_t rng;
    block *slots;
    size_t nslots;
    /* results */
    uint64_t xfer_sent, xfer_recv, remote_frees, bad_tags, failed_allocs, failed_frees;
    ring inbox;
    _Alignas(64) _Atomic(rnode *) remote; /* nolock: blocks of my heap freed by others */
#ifndef CHURN_NO_HEAPTRAIL
    ht_heap *heap; /* nolock: my own heap */
#endif
} thread_ctx;

static enum alloc_kind g_kind = A_MALLOC;
static int g_threads = 1;
static unsigned g_xfer_permille = 50;
static thread_ctx *g_ctx;
static pthread_barrier_t g_barrier;
#ifndef CHURN_NO_HEAPTRAIL
static ht_heap *g_heap; /* process or shared private heap */
#endif

/* ---- PRNG: splitmix64 seeding, xorshift64* stream ------------------------------------- */
static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}
static inline uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static inline uint32_t pick_size(uint64_t *s)
{
    uint64_t r = rng_next(s);
    unsigned p = (unsigned)((r >> 32) % 1000u);
    if (p < 900)
        return 16u + (uint32_t)((r & 0xffffffffu) % 241u); /* 16..256 */
    if (p < 999) {
        /* log-uniform 257..65536: uniform octave [2^k, 2^(k+1)), k = 8..15, then uniform */
        uint64_t r2 = rng_next(s);
        unsigned k = 8u + (unsigned)(r2 & 7u);
        uint32_t lo = 1u << k, sz = lo + (uint32_t)((r2 >> 8) % (lo + 1u)); /* inclusive top */
        return sz < 257u ? 257u : sz;
    }
    return HUGE_SIZE;
}

/* ---- allocator dispatch ----------------------------------------------------------------- */
static inline void *do_alloc(thread_ctx *c, size_t size)
{
    switch (g_kind) {
    case A_MALLOC:
        return malloc(size);
#ifndef CHURN_NO_HEAPTRAIL
    case A_HT_PROCESS:
    case A_HT_PRIVATE:
        return ht_heap_alloc(g_heap, 0, size);
    case A_HT_PRIVATE_NOLOCK:
        return ht_heap_alloc(c->heap, 0, size);
#endif
    default:
        (void)c;
        return NULL;
    }
}

static inline void remote_push(thread_ctx *owner, void *p)
{
    rnode *n = p;
    rnode *old = atomic_load_explicit(&owner->remote, memory_order_relaxed);
    do {
        n->next = old;
    } while (!atomic_compare_exchange_weak_explicit(&owner->remote, &old, n, memory_order_release,
                                                    memory_order_relaxed));
}

static inline void raw_free(thread_ctx *c, void *p)
{
    (void)c;
    switch (g_kind) {
    case A_MALLOC:
        free(p);
        return;
#ifndef CHURN_NO_HEAPTRAIL
    case A_HT_PROCESS:
    case A_HT_PRIVATE:
        if (!ht_heap_free(g_heap, 0, p))
            c->failed_frees++;
        return;
    case A_HT_PRIVATE_NOLOCK:
        if (!ht_heap_free(c->heap, 0, p))
            c->failed_frees++;
        return;
#endif
    default:
        return;
    }
}

/* Frees a block held by thread c (checks its tag first). */
static inline void free_block(thread_ctx *c, const block *b)
{
    if (!b->p)
        return;
    if (b->p[0] != b->tag || b->p[b->size - 1] != b->tag)
        c->bad_tags++;
    if (g_kind == A_HT_PRIVATE_NOLOCK && b->owner != c->index) {
        remote_push(&g_ctx[b->owner], b->p);
        c->remote_frees++;
        return;
    }
    raw_free(c, b->p);
}

static inline void drain_remote(thread_ctx *c)
{
    if (!atomic_load_explicit(&c->remote, memory_order_relaxed))
        return;
    rnode *n = atomic_exchange_explicit(&c->remote, NULL, memory_order_acquire);
    while (n) {
        rnode *next = n->next;
        raw_free(c, n);
        n = next;
    }
}

static inline void touch(unsigned char *p, uint32_t size, uint8_t tag)
{
    memset(p, tag, size < TOUCH_PREFIX ? size : TOUCH_PREFIX);
    for (uint32_t off = PAGE; off < size; off += PAGE)
        p[off] = tag;
    p[size - 1] = tag;
}

static inline int ring_push(ring *r, const block *b)
{
    size_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
    size_t h = atomic_load_explicit(&r->head, memory_order_acquire);
    if (t - h >= RING_CAP)
        return 0;
    r->e[t & (RING_CAP - 1)] = *b;
    atomic_store_explicit(&r->tail, t + 1, memory_order_release);
    return 1;
}

static inline int ring_pop(ring *r, block *out)
{
    size_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
    size_t t = atomic_load_explicit(&r->tail, memory_order_acquire);
    if (h == t)
        return 0;
    *out = r->e[h & (RING_CAP - 1)];
    atomic_store_explicit(&r->head, h + 1, memory_order_release);
    return 1;
}

static void *worker(void *arg)
{
    thread_ctx *c = arg;
    ring *out = &g_ctx[(c->index + 1) % g_threads].inbox;
    const int xfer = g_threads > 1 && g_xfer_permille > 0;
    const size_t nslots = c->nslots;
    block *slots = c->slots;

    pthread_barrier_wait(&g_barrier);
    for (uint64_t i = 0; i < c->ops; i++) {
        uint64_t r = rng_next(&c->rng);
        block *s = &slots[(size_t)((r >> 16) % nslots)];
        free_block(c, s);

        uint32_t size = pick_size(&c->rng);
        uint8_t tag = (uint8_t)(r | 1u);
        unsigned char *p = do_alloc(c, size);
        if (!p) {
            c->failed_allocs++;
            s->p = NULL;
            continue;
        }
        touch(p, size, tag);
        block nb = {p, size, (uint16_t)c->index, tag};

        if (xfer && (unsigned)((r & 0xffff) % 1000u) < g_xfer_permille && ring_push(out, &nb)) {
            c->xfer_sent++; /* handed to the next thread; the slot stays empty */
            s->p = NULL;
        } else {
            *s = nb; /* (also when the next thread's inbox is full) */
        }
        if (xfer) {
            /* adopt one block handed to us, if any: into this slot if it is empty, else into
             * another random slot (freeing what was there) */
            block rb;
            if (ring_pop(&c->inbox, &rb)) {
                c->xfer_recv++;
                if (s->p) {
                    s = &slots[(size_t)((rng_next(&c->rng) >> 16) % nslots)];
                    free_block(c, s);
                }
                *s = rb;
            }
        }
        if (g_kind == A_HT_PRIVATE_NOLOCK && (i & 63) == 0)
            drain_remote(c);
    }
    if (getenv("CHURN_DEBUG")) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        fprintf(stderr, "churn: thread %d done at %ld.%09ld sent=%llu recv=%llu\n", c->index,
                (long)ts.tv_sec, ts.tv_nsec, (unsigned long long)c->xfer_sent,
                (unsigned long long)c->xfer_recv);
    }
    /* leave the rest of the inbox for main (the producer may still be running) */
    return NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
static double tv_s(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec * 1e-6;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_churn --threads N --ops M --seed S "
                    "--alloc {malloc|ht-process|ht-private|ht-private-nolock} [--slots K] "
                    "[--xfer-permille P]\n"
                    "  --ops is the total over all threads (split evenly)\n");
    exit(2);
}

static unsigned long long parse_num(const char *s, const char *what)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end) {
        fprintf(stderr, "bench_churn: bad %s: %s\n", what, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    unsigned long long ops = 1000000, seed = 1, slots = 8192;
    const char *alloc = "malloc";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--threads"))
            g_threads = (int)parse_num(v, "--threads");
        else if (!strcmp(a, "--ops"))
            ops = parse_num(v, "--ops");
        else if (!strcmp(a, "--seed"))
            seed = parse_num(v, "--seed");
        else if (!strcmp(a, "--alloc"))
            alloc = v;
        else if (!strcmp(a, "--slots"))
            slots = parse_num(v, "--slots");
        else if (!strcmp(a, "--xfer-permille"))
            g_xfer_permille = (unsigned)parse_num(v, "--xfer-permille");
        else
            usage();
    }
    if (g_threads < 1 || g_threads > 1024 || slots < 1 || g_xfer_permille > 1000)
        usage();
    int found = 0;
    for (int k = 0; k < 4; k++)
        if (!strcmp(alloc, alloc_names[k]))
            g_kind = (enum alloc_kind)k, found = 1;
    if (!found)
        usage();
#ifdef CHURN_NO_HEAPTRAIL
    if (g_kind != A_MALLOC) {
        fprintf(stderr, "bench_churn: built without heaptrail; only --alloc malloc\n");
        return 2;
    }
#else
    if (g_kind == A_HT_PROCESS)
        g_heap = ht_process_heap();
    else if (g_kind == A_HT_PRIVATE)
        g_heap = ht_heap_create(0, 0, 0);
    if ((g_kind == A_HT_PROCESS || g_kind == A_HT_PRIVATE) && !g_heap) {
        perror("bench_churn: heap");
        return 1;
    }
#endif

    /* per-thread state: allocated with the system allocator, before timing */
    g_ctx = aligned_alloc(64, sizeof(thread_ctx) * (size_t)g_threads);
    if (!g_ctx)
        return 1;
    memset(g_ctx, 0, sizeof(thread_ctx) * (size_t)g_threads);
    for (int t = 0; t < g_threads; t++) {
        thread_ctx *c = &g_ctx[t];
        c->index = t;
        c->ops = ops / (unsigned)g_threads + ((unsigned long long)t < ops % (unsigned)g_threads);
        c->rng = splitmix64(seed + (uint64_t)t) | 1u;
        c->nslots = (size_t)slots;
        c->slots = calloc((size_t)slots, sizeof(block));
        if (!c->slots)
            return 1;
#ifndef CHURN_NO_HEAPTRAIL
        if (g_kind == A_HT_PRIVATE_NOLOCK) {
            c->heap = ht_heap_create(HT_HEAP_NO_SERIALIZE, 0, 0);
            if (!c->heap) {
                perror("bench_churn: heap");
                return 1;
            }
        }
#endif
    }

    pthread_t *tids = calloc((size_t)g_threads, sizeof(pthread_t));
    if (!tids || pthread_barrier_init(&g_barrier, NULL, (unsigned)g_threads + 1))
        return 1;
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    for (int t = 0; t < g_threads; t++) {
        int e = pthread_create(&tids[t], NULL, worker, &g_ctx[t]);
        if (e) {
            fprintf(stderr, "bench_churn: pthread_create: %s\n", strerror(e));
            return 1;
        }
    }
    pthread_barrier_wait(&g_barrier);
    double t0 = now_s();
    for (int t = 0; t < g_threads; t++)
        pthread_join(tids[t], NULL);
    double wall = now_s() - t0;
    getrusage(RUSAGE_SELF, &ru1);

    /* untimed cleanup: blocks still in the rings, then every slot, then remote lists */
    uint64_t sent = 0, recv = 0, remote = 0, bad = 0, fa = 0, ff = 0;
    for (int t = 0; t < g_threads; t++) {
        thread_ctx *c = &g_ctx[t];
        block b;
        while (ring_pop(&c->inbox, &b))
            free_block(c, &b);
        for (size_t i = 0; i < c->nslots; i++)
            free_block(c, &c->slots[i]);
    }
    for (int t = 0; t < g_threads; t++)
        drain_remote(&g_ctx[t]);
    for (int t = 0; t < g_threads; t++) {
        thread_ctx *c = &g_ctx[t];
        sent += c->xfer_sent;
        recv += c->xfer_recv;
        remote += c->remote_frees;
        bad += c->bad_tags;
        fa += c->failed_allocs;
        ff += c->failed_frees;
#ifndef CHURN_NO_HEAPTRAIL
        if (c->heap && !ht_heap_destroy(c->heap))
            ff++;
#endif
        free(c->slots);
    }
#ifndef CHURN_NO_HEAPTRAIL
    if (g_kind == A_HT_PRIVATE && !ht_heap_destroy(g_heap))
        ff++;
#endif

    double cpu = tv_s(ru1.ru_utime) + tv_s(ru1.ru_stime) - tv_s(ru0.ru_utime) - tv_s(ru0.ru_stime);
    printf("churn alloc=%s threads=%d ops=%llu wall_s=%.4f ops_per_s=%.0f cpu_s=%.3f "
           "maxrss_kib=%ld minflt=%ld majflt=%ld slots=%llu seed=%llu xfer_sent=%llu "
           "xfer_recv=%llu remote_frees=%llu bad_tags=%llu failed_allocs=%llu failed_frees=%llu\n",
           alloc, g_threads, ops, wall, wall > 0 ? (double)ops / wall : 0.0, cpu, ru1.ru_maxrss,
           ru1.ru_minflt - ru0.ru_minflt, ru1.ru_majflt - ru0.ru_majflt, slots, seed,
           (unsigned long long)sent, (unsigned long long)recv, (unsigned long long)remote,
           (unsigned long long)bad, (unsigned long long)fa, (unsigned long long)ff);
    fflush(stdout);
    free(tids);
    free(g_ctx);
    if (bad || fa || ff) {
        fprintf(stderr,
                "bench_churn: ERROR: %llu bad tags, %llu failed allocs, %llu failed frees\n",
                (unsigned long long)bad, (unsigned long long)fa, (unsigned long long)ff);
        return 1;
    }
    return 0;
}
