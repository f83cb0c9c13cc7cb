/* test_stress_threads.c — multithreaded stress of the heap manager (label "stress").
 *
 * cross_thread: NT worker threads allocate blocks of mixed sizes (some large) from the
 * process heap, a shared private heap and their own private heap, stamp every byte with
 * (thread, counter), and hand a share of them to other threads through mutex-protected
 * rings and lock-free stacks (the node lives in the block). Receivers verify the stamp and
 * free the block (a cross-thread free) or realloc it and keep it. An auditor thread checks
 * ht_heap_validate(heap, 0, NULL), sane stats and non-overlapping walks meanwhile. At the end
 * every free succeeded exactly once, each heap's stats equal what the threads report, the
 * walk's busy set equals the remaining live set, and the private heaps are destroyed with
 * blocks still live (some parked in this thread's lookaside lists) without harm to heaps
 * created afterwards.
 *
 * double_free_race: two threads free the same block at the same moment, many times, for
 * small, LFH, main-path and large blocks: exactly one free succeeds, the other fails with
 * EINVAL, and n_invalid counts the losers.
 *
 * HT_STRESS_SECONDS=<s> sets the length of the cross-thread phase (default 8 s; the
 * double-free race runs half as long). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* also set by the build */
#endif
#include "harness.h"

#include <heaptrail.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#define NT        4
#define NHEAP     (2 + NT) /* 0: process heap, 1: shared private heap, 2 + t: thread t's heap */
#define LOCAL_CAP 256
#define QCAP      512
#define KiB       ((size_t)1 << 10)
#define MiB       ((size_t)1 << 20)
#define GOLD      0x9E3779B97F4A7C15ull

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double env_seconds(const char *name, double dflt)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return dflt;
    double v = strtod(s, NULL);
    return v > 0 ? v : dflt;
}

static uint64_t xrand(uint64_t *s) /* xorshift64* */
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* ---- stamps: byte i of a block stamped s is byte (i & 7) of s ^ ((i >> 3) * GOLD) ---------- */

static inline uint8_t stamp_byte(uint64_t s, size_t i)
{
    return (uint8_t)((s ^ ((uint64_t)(i >> 3) * GOLD)) >> ((i & 7) * 8));
}

static void stamp_fill(uint8_t *p, size_t from, size_t to, uint64_t s)
{
    size_t i = from;
    for (; i < to && (i & 7); i++)
        p[i] = stamp_byte(s, i);
    for (; i + 8 <= to; i += 8) {
        uint64_t w = s ^ ((uint64_t)(i >> 3) * GOLD);
        memcpy(p + i, &w, 8);
    }
    for (; i < to; i++)
        p[i] = stamp_byte(s, i);
}

static bool stamp_ok(const uint8_t *p, size_t from, size_t to, uint64_t s)
{
    size_t i = from;
    for (; i < to && (i & 7); i++)
        if (p[i] != stamp_byte(s, i))
            return false;
    for (; i + 8 <= to; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        if (w != (s ^ ((uint64_t)(i >> 3) * GOLD)))
            return false;
    }
    for (; i < to; i++)
        if (p[i] != stamp_byte(s, i))
            return false;
    return true;
}

static bool zero_ok(const uint8_t *p, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        if (p[i] != 0)
            return false;
    return true;
}

/* ---- shared state ------------------------------------------------------------------------- */

typedef struct item {
    uint8_t *p;
    size_t size;
    int heap;
    uint64_t stamp;
} item;

typedef struct mqueue {
    pthread_mutex_t mu;
    item buf[QCAP];
    unsigned head, n;
} mqueue;

/* lock-free stack node, written over the first bytes of the block it carries */
typedef struct lfnode {
    struct lfnode *next;
    uint64_t size, heap, stamp, magic;
} lfnode;
#define LF_MAGIC 0x4C464E4F44455F31ull
#define LF_MIN   64 /* blocks this big may travel on the lock-free stacks */
#define LF_LIMIT 2048u

typedef struct worker {
    int id;
    pthread_t th;
    uint64_t rng, counter;
    item local[LOCAL_CAP];
    unsigned nlocal;
    int64_t d_blocks[NHEAP], d_bytes[NHEAP]; /* live blocks/bytes this thread added */
    uint64_t n_alloc, n_free, n_realloc, n_moved, n_sent_q, n_sent_lf, n_recv;
    uint64_t f_alloc, f_free, f_realloc, f_stamp, f_zero, f_query, f_align;
    mqueue q;
    _Atomic(lfnode *) lf;
    atomic_uint lf_pending; /* bounds the lock-free stack (approximately) */
} worker;

static worker W[NT];
static ht_heap *g_heap[NHEAP];
static atomic_bool g_stop;
static atomic_uint_fast64_t g_ops;

/* auditor results */
static atomic_uint_fast64_t a_rounds, a_validate_bad, a_stats_bad, a_walk_bad, a_walks;
static atomic_uint_fast64_t a_validate_bad_heap[NHEAP];

static uint64_t make_stamp(worker *w)
{
    return ((uint64_t)(w->id + 1) << 56) | ++w->counter;
}

static size_t rand_size(uint64_t *rng)
{
    uint64_t r = xrand(rng) % 1000;
    if (r < 650)
        return 1 + xrand(rng) % 256;
    if (r < 900)
        return xrand(rng) % 4097;
    if (r < 985)
        return xrand(rng) % (64 * KiB + 1);
    if (r < 997)
        return xrand(rng) % (512 * KiB + 1);
    return MiB + xrand(rng) % (2 * MiB); /* large: mapped on its own */
}

static void account(worker *w, int heap, int64_t blocks, int64_t bytes)
{
    w->d_blocks[heap] += blocks;
    w->d_bytes[heap] += bytes;
}

static void free_item(worker *w, const item *it)
{
    if (!stamp_ok(it->p, 0, it->size, it->stamp))
        w->f_stamp++;
    if (ht_heap_free(g_heap[it->heap], 0, it->p)) {
        w->n_free++;
        account(w, it->heap, -1, -(int64_t)it->size);
    } else {
        w->f_free++;
    }
}

static bool local_push(worker *w, const item *it)
{
    if (w->nlocal >= LOCAL_CAP)
        return false;
    w->local[w->nlocal++] = *it;
    return true;
}

static item local_take(worker *w, unsigned i)
{
    item it = w->local[i];
    w->local[i] = w->local[--w->nlocal];
    return it;
}

static void w_alloc(worker *w)
{
    uint64_t r = xrand(&w->rng) % 3;
    int heap = r == 0 ? 0 : r == 1 ? 1 : 2 + w->id;
    size_t size = rand_size(&w->rng);
    unsigned flags = xrand(&w->rng) % 8 == 0 ? HT_HEAP_ZERO_MEMORY : 0;
    uint8_t *p = ht_heap_alloc(g_heap[heap], flags, size);
    if (!p) {
        w->f_alloc++;
        return;
    }
    if (((uintptr_t)p & 15) != 0)
        w->f_align++;
    if ((flags & HT_HEAP_ZERO_MEMORY) && !zero_ok(p, 0, size))
        w->f_zero++;
    w->n_alloc++;
    account(w, heap, 1, (int64_t)size);
    item it = {p, size, heap, make_stamp(w)};
    stamp_fill(p, 0, size, it.stamp);
    if (!local_push(w, &it))
        free_item(w, &it);
}

static void w_send(worker *w)
{
    if (w->nlocal == 0)
        return;
    item it = local_take(w, (unsigned)(xrand(&w->rng) % w->nlocal));
    worker *to = &W[(w->id + 1 + (int)(xrand(&w->rng) % (NT - 1))) % NT];
    if (it.size >= LF_MIN && xrand(&w->rng) % 2 &&
        atomic_load_explicit(&to->lf_pending, memory_order_relaxed) < LF_LIMIT) {
        atomic_fetch_add_explicit(&to->lf_pending, 1, memory_order_relaxed);
        lfnode *n = (lfnode *)it.p;
        n->size = it.size;
        n->heap = (uint64_t)it.heap;
        n->stamp = it.stamp;
        n->magic = LF_MAGIC;
        lfnode *head = atomic_load_explicit(&to->lf, memory_order_relaxed);
        do
            n->next = head;
        while (!atomic_compare_exchange_weak_explicit(&to->lf, &head, n, memory_order_release,
                                                      memory_order_relaxed));
        w->n_sent_lf++;
        return;
    }
    pthread_mutex_lock(&to->q.mu);
    bool sent = to->q.n < QCAP;
    if (sent) {
        to->q.buf[(to->q.head + to->q.n) % QCAP] = it;
        to->q.n++;
    }
    pthread_mutex_unlock(&to->q.mu);
    if (sent)
        w->n_sent_q++;
    else
        local_push(w, &it); /* a slot was just freed */
}

static void w_realloc_item(worker *w, item *it)
{
    size_t old = it->size, n = old / 2 + xrand(&w->rng) % (old + 64);
    if (xrand(&w->rng) % 16 == 0)
        n = rand_size(&w->rng);
    unsigned flags = xrand(&w->rng) % 4 == 0 ? HT_HEAP_ZERO_MEMORY : 0;
    uint8_t *p = ht_heap_realloc(g_heap[it->heap], flags, it->p, n);
    if (!p) {
        w->f_realloc++;
        return;
    }
    w->n_realloc++;
    if (p != it->p)
        w->n_moved++;
    if (((uintptr_t)p & 15) != 0)
        w->f_align++;
    size_t keep = old < n ? old : n;
    if (!stamp_ok(p, 0, keep, it->stamp))
        w->f_stamp++;
    if ((flags & HT_HEAP_ZERO_MEMORY) && n > old && !zero_ok(p, old, n))
        w->f_zero++;
    account(w, it->heap, 0, (int64_t)n - (int64_t)old);
    it->p = p;
    it->size = n;
    it->stamp = make_stamp(w);
    stamp_fill(p, 0, n, it->stamp);
}

/* a block from another thread: verify, then free it here or realloc and keep it */
static void w_received(worker *w, item *it)
{
    w->n_recv++;
    if (!stamp_ok(it->p, 0, it->size, it->stamp)) {
        w->f_stamp++;
        it->stamp = 0; /* do not count it again */
        stamp_fill(it->p, 0, it->size, 0);
    }
    if (xrand(&w->rng) % 10 < 7) {
        free_item(w, it);
        return;
    }
    w_realloc_item(w, it);
    if (!local_push(w, it))
        free_item(w, it);
}

static void w_drain(worker *w)
{
    item batch[64];
    unsigned n = 0;
    pthread_mutex_lock(&w->q.mu);
    while (w->q.n > 0 && n < 64) {
        batch[n++] = w->q.buf[w->q.head];
        w->q.head = (w->q.head + 1) % QCAP;
        w->q.n--;
    }
    pthread_mutex_unlock(&w->q.mu);
    for (unsigned i = 0; i < n; i++)
        w_received(w, &batch[i]);

    lfnode *l = atomic_exchange_explicit(&w->lf, NULL, memory_order_acquire);
    unsigned got = 0;
    for (lfnode *x = l; x; x = x->next)
        got++;
    atomic_fetch_sub_explicit(&w->lf_pending, got, memory_order_relaxed);
    while (l) {
        lfnode *next = l->next;
        item it = {(uint8_t *)l, (size_t)l->size, (int)l->heap, l->stamp};
        bool ok = l->magic == LF_MAGIC && it.heap >= 0 && it.heap < NHEAP &&
                  stamp_ok(it.p, sizeof(lfnode), it.size, it.stamp);
        if (!ok) {
            w->f_stamp++;
        } else {
            stamp_fill(it.p, 0, sizeof(lfnode), it.stamp); /* restore the node bytes */
            w_received(w, &it);
        }
        l = next;
    }
}

static void w_query(worker *w)
{
    if (w->nlocal == 0)
        return;
    const item *it = &w->local[xrand(&w->rng) % w->nlocal];
    ht_heap *h = g_heap[it->heap];
    if (ht_heap_size(h, 0, it->p) != it->size || !ht_heap_validate(h, 0, it->p) ||
        ht_heap_usable_size(h, it->p) < it->size)
        w->f_query++;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    uint64_t ops = 0;
    while (!atomic_load_explicit(&g_stop, memory_order_relaxed)) {
        uint64_t r = xrand(&w->rng) % 100;
        if (r < 38)
            w_alloc(w);
        else if (r < 58)
            w_send(w);
        else if (r < 72) {
            if (w->nlocal) {
                item it = local_take(w, (unsigned)(xrand(&w->rng) % w->nlocal));
                free_item(w, &it);
            }
        } else if (r < 78) {
            if (w->nlocal)
                w_realloc_item(w, &w->local[xrand(&w->rng) % w->nlocal]);
        } else if (r < 82)
            w_query(w);
        else
            w_drain(w);
        ops++;
    }
    atomic_fetch_add(&g_ops, ops);
    return NULL;
}

/* ---- the auditor: consistency while the workers run ------------------------------------------ */

typedef struct span {
    uintptr_t a;
    size_t sz;
    unsigned st;
} span;
#define AUD_CAP (1u << 18)
static span g_aud[AUD_CAP];

static int span_cmp(const void *x, const void *y)
{
    uintptr_t a = ((const span *)x)->a, b = ((const span *)y)->a;
    return a < b ? -1 : a > b;
}

/* walk under the heap lock; false if the walk does not end or entries overlap */
static bool walk_sane(ht_heap *h, size_t *nbusy)
{
    if (!ht_heap_lock(h))
        return false;
    ht_heap_entry e;
    memset(&e, 0, sizeof e);
    size_t n = 0;
    bool ok = true;
    while (ht_heap_walk(h, &e)) {
        if (n >= AUD_CAP) {
            ok = false;
            break;
        }
        g_aud[n++] = (span){(uintptr_t)e.address, e.size, e.state};
    }
    ht_heap_unlock(h);
    qsort(g_aud, n, sizeof g_aud[0], span_cmp);
    size_t busy = 0;
    for (size_t i = 0; i < n; i++) {
        if (g_aud[i].st & HT_ENTRY_BUSY)
            busy++;
        size_t ext = (g_aud[i].st & HT_ENTRY_BUSY) && g_aud[i].sz == 0 ? 1 : g_aud[i].sz;
        if (i + 1 < n && g_aud[i].a + ext > g_aud[i + 1].a)
            ok = false;
    }
    if (nbusy)
        *nbusy = busy;
    return ok;
}

static void *auditor_main(void *arg)
{
    (void)arg;
    unsigned k = 0;
    while (!atomic_load_explicit(&g_stop, memory_order_relaxed)) {
        for (int i = 0; i < NHEAP; i++) {
            ht_heap *h = g_heap[i];
            if (!ht_heap_validate(h, 0, NULL)) {
                atomic_fetch_add(&a_validate_bad, 1);
                atomic_fetch_add(&a_validate_bad_heap[i], 1);
            }
            ht_heap_stats st;
            ht_heap_get_stats(h, &st);
            /* a recent value of a count can never have been negative or absurd */
            if (st.live_blocks > ((uint64_t)1 << 24) || st.live_bytes > ((uint64_t)1 << 36))
                atomic_fetch_add(&a_stats_bad, 1);
        }
        if (!walk_sane(g_heap[k++ % NHEAP], NULL))
            atomic_fetch_add(&a_walk_bad, 1);
        atomic_fetch_add(&a_walks, 1);
        atomic_fetch_add(&a_rounds, 1);
        struct timespec ts = {0, 3 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

/* ---- cross_thread ------------------------------------------------------------------------- */

static item g_rest[NT * (LOCAL_CAP + QCAP) + 100000];

static int item_cmp(const void *x, const void *y)
{
    uintptr_t a = (uintptr_t)((const item *)x)->p, b = (uintptr_t)((const item *)y)->p;
    return a < b ? -1 : a > b;
}

/* the walk's busy entries (address, size) == items[0..n) (sorted by address) + baseline */
static void check_walk_equals(ht_heap *h, const char *name, const item *items, size_t n,
                              const span *base, size_t nbase)
{
    CHECK(ht_heap_lock(h));
    ht_heap_entry e;
    memset(&e, 0, sizeof e);
    size_t nb = 0;
    errno = 0;
    while (ht_heap_walk(h, &e)) {
        if (!(e.state & HT_ENTRY_BUSY))
            continue;
        if (nb >= AUD_CAP)
            break;
        g_aud[nb++] = (span){(uintptr_t)e.address, e.size, e.state};
    }
    int err = errno;
    CHECK(ht_heap_unlock(h));
    CHECK(err == ENOENT);
    qsort(g_aud, nb, sizeof g_aud[0], span_cmp);
    size_t i = 0, j = 0, k = 0, bad = 0;
    while (i < nb) {
        uintptr_t a = g_aud[i].a;
        if (j < n && (uintptr_t)items[j].p == a) {
            if (items[j].size != g_aud[i].sz)
                bad++;
            j++;
        } else if (k < nbase && base[k].a == a) {
            if (base[k].sz != g_aud[i].sz)
                bad++;
            k++;
        } else {
            if (bad++ < 3)
                fprintf(stderr, "  %s: walk has busy %#lx (%zu bytes) nobody owns\n", name,
                        (unsigned long)a, g_aud[i].sz);
        }
        i++;
    }
    if (j != n || k != nbase)
        fprintf(stderr, "  %s: %zu owned blocks missing from the walk\n", name,
                (n - j) + (nbase - k));
    CHECK(bad == 0 && j == n && k == nbase);
    CHECK_EQ_U(nb, n + nbase);
}

static void cross_thread(void)
{
    double secs = env_seconds("HT_STRESS_SECONDS", 8.0);
    ht_heap *ph = ht_process_heap();
    REQUIRE(ph != NULL);
    g_heap[0] = ph;
    g_heap[1] = ht_heap_create(0, 0, 0);
    REQUIRE(g_heap[1] != NULL);
    for (int t = 0; t < NT; t++) {
        g_heap[2 + t] = ht_heap_create(t % 2 ? HT_HEAP_ENABLE_LFH : 0, 0, 0);
        REQUIRE(g_heap[2 + t] != NULL);
    }
    ht_heap_stats st0[NHEAP];
    for (int i = 0; i < NHEAP; i++)
        ht_heap_get_stats(g_heap[i], &st0[i]);
    /* blocks live in the process heap before the test */
    static span base[4096];
    size_t nbase = 0;
    {
        ht_heap_entry e;
        memset(&e, 0, sizeof e);
        while (ht_heap_walk(ph, &e))
            if ((e.state & HT_ENTRY_BUSY) && nbase < 4096)
                base[nbase++] = (span){(uintptr_t)e.address, e.size, e.state};
        qsort(base, nbase, sizeof base[0], span_cmp);
        CHECK_EQ_U(nbase, st0[0].live_blocks);
    }

    atomic_store(&g_stop, false);
    for (int t = 0; t < NT; t++) {
        worker *w = &W[t];
        memset(w, 0, sizeof *w);
        w->id = t;
        w->rng = 0x9E3779B97F4A7C15ull * (uint64_t)(t + 1) + 12345;
        pthread_mutex_init(&w->q.mu, NULL);
        atomic_init(&w->lf, NULL);
        atomic_init(&w->lf_pending, 0);
    }
    double t0 = now_s();
    for (int t = 0; t < NT; t++)
        REQUIRE(pthread_create(&W[t].th, NULL, worker_main, &W[t]) == 0);
    pthread_t aud;
    REQUIRE(pthread_create(&aud, NULL, auditor_main, NULL) == 0);
    while (now_s() - t0 < secs) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    atomic_store(&g_stop, true);
    for (int t = 0; t < NT; t++)
        pthread_join(W[t].th, NULL);
    pthread_join(aud, NULL);
    double t1 = now_s();

    /* totals */
    uint64_t n_alloc = 0, n_free = 0, n_realloc = 0, n_moved = 0, n_sent = 0, n_recv = 0;
    int64_t d_blocks[NHEAP] = {0}, d_bytes[NHEAP] = {0};
    for (int t = 0; t < NT; t++) {
        worker *w = &W[t];
        n_alloc += w->n_alloc;
        n_free += w->n_free;
        n_realloc += w->n_realloc;
        n_moved += w->n_moved;
        n_sent += w->n_sent_q + w->n_sent_lf;
        n_recv += w->n_recv;
        for (int i = 0; i < NHEAP; i++) {
            d_blocks[i] += w->d_blocks[i];
            d_bytes[i] += w->d_bytes[i];
        }
        CHECK_EQ_U(w->f_alloc, 0);
        CHECK_EQ_U(w->f_free, 0);
        CHECK_EQ_U(w->f_realloc, 0);
        CHECK_EQ_U(w->f_stamp, 0);
        CHECK_EQ_U(w->f_zero, 0);
        CHECK_EQ_U(w->f_query, 0);
        CHECK_EQ_U(w->f_align, 0);
    }
    printf("cross_thread: %.1f s, %" PRIu64 " ops: %" PRIu64 " allocs, %" PRIu64 " frees, %" PRIu64
           " reallocs (%" PRIu64 " moved), %" PRIu64 " handed over, %" PRIu64
           " received; auditor %" PRIu64 " rounds\n",
           t1 - t0, (uint64_t)atomic_load(&g_ops), n_alloc, n_free, n_realloc, n_moved, n_sent,
           n_recv, (uint64_t)atomic_load(&a_rounds));
    CHECK(n_alloc > 1000 && n_recv > 100); /* the run did something */
    CHECK_EQ_U(atomic_load(&a_validate_bad), 0);
    if (atomic_load(&a_validate_bad))
        for (int i = 0; i < NHEAP; i++)
            fprintf(stderr,
                    "  ht_heap_validate(heap %d, 0, NULL) false %" PRIu64 " times while "
                    "threads worked\n",
                    i, (uint64_t)atomic_load(&a_validate_bad_heap[i]));
    CHECK_EQ_U(atomic_load(&a_stats_bad), 0);
    CHECK_EQ_U(atomic_load(&a_walk_bad), 0);
    CHECK(atomic_load(&a_rounds) > 0);

    /* the remaining live set: local lists and both kinds of queues */
    size_t nrest = 0;
    uint64_t bad_stamps = 0;
    for (int t = 0; t < NT; t++) {
        worker *w = &W[t];
        for (unsigned i = 0; i < w->nlocal; i++)
            g_rest[nrest++] = w->local[i];
        for (unsigned i = 0; i < w->q.n; i++)
            g_rest[nrest++] = w->q.buf[(w->q.head + i) % QCAP];
        for (lfnode *l = atomic_load(&w->lf), *next; l; l = next) {
            next = l->next; /* the node bytes are restored to the stamp below */
            item it = {(uint8_t *)l, (size_t)l->size, (int)l->heap, l->stamp};
            if (l->magic != LF_MAGIC || !stamp_ok(it.p, sizeof(lfnode), it.size, it.stamp))
                bad_stamps++;
            stamp_fill(it.p, 0, sizeof(lfnode), it.stamp);
            g_rest[nrest++] = it;
        }
        w->nlocal = 0;
        w->q.n = 0;
        atomic_store(&w->lf, NULL);
    }
    for (size_t i = 0; i < nrest; i++)
        if (!stamp_ok(g_rest[i].p, 0, g_rest[i].size, g_rest[i].stamp))
            bad_stamps++;
    CHECK_EQ_U(bad_stamps, 0);
    qsort(g_rest, nrest, sizeof g_rest[0], item_cmp);

    /* stats, validate and walk of each heap == the threads' accounts */
    static item per[NT * (LOCAL_CAP + QCAP) + 100000];
    for (int i = 0; i < NHEAP; i++) {
        ht_heap *h = g_heap[i];
        size_t n = 0;
        int64_t bytes = 0;
        for (size_t j = 0; j < nrest; j++)
            if (g_rest[j].heap == i) {
                per[n++] = g_rest[j];
                bytes += (int64_t)g_rest[j].size;
            }
        CHECK_EQ_U(n, d_blocks[i]);
        CHECK_EQ_U(bytes, d_bytes[i]);
        ht_heap_stats st;
        ht_heap_get_stats(h, &st);
        CHECK_EQ_U(st.live_blocks, st0[i].live_blocks + (uint64_t)d_blocks[i]);
        CHECK_EQ_U(st.live_bytes, st0[i].live_bytes + (uint64_t)d_bytes[i]);
        CHECK_EQ_U(st.n_invalid, st0[i].n_invalid);
        CHECK(ht_heap_validate(h, 0, NULL));
        char name[32];
        snprintf(name, sizeof name, "heap %d", i);
        check_walk_equals(h, name, per, n, i == 0 ? base : NULL, i == 0 ? nbase : 0);
    }

    /* private heaps: free about half of their blocks here (into this thread's lookaside
     * lists), then destroy them with the rest still live */
    uint64_t dropped = 0, main_frees = 0;
    for (size_t j = 0; j < nrest; j++) {
        item *it = &g_rest[j];
        if (it->heap < 2 || (j & 1))
            continue;
        CHECK(ht_heap_free(g_heap[it->heap], 0, it->p));
        main_frees++;
        it->p = NULL;
    }
    for (int t = 0; t < NT; t++) {
        ht_heap *h = g_heap[2 + t];
        CHECK(ht_heap_destroy(h));
        errno = 0;
        CHECK(!ht_heap_validate(h, 0, NULL) && errno == EINVAL);
        g_heap[2 + t] = NULL;
    }
    for (size_t j = 0; j < nrest; j++)
        if (g_rest[j].heap >= 2 && g_rest[j].p)
            dropped++;
    /* heaps made now must not hand out memory of the destroyed ones */
    {
        ht_heap *nh[NT];
        for (int t = 0; t < NT; t++) {
            nh[t] = ht_heap_create(t % 2 ? HT_HEAP_ENABLE_LFH : 0, 0, 0);
            CHECK(nh[t] != NULL);
        }
        uint64_t rng = 99, bad = 0;
        static item fresh[4096];
        size_t nf = 0;
        for (int round = 0; round < 4096; round++) {
            int t = round % NT;
            if (!nh[t])
                continue;
            size_t size = 1 + xrand(&rng) % 2048;
            uint8_t *p = ht_heap_alloc(nh[t], 0, size);
            if (!p) {
                bad++;
                continue;
            }
            stamp_fill(p, 0, size, (uint64_t)round);
            fresh[nf++] = (item){p, size, t, (uint64_t)round};
        }
        qsort(fresh, nf, sizeof fresh[0], item_cmp);
        for (size_t j = 0; j + 1 < nf; j++)
            if ((uintptr_t)fresh[j].p + fresh[j].size > (uintptr_t)fresh[j + 1].p)
                bad++;
        for (size_t j = 0; j < nf; j++) {
            if (!stamp_ok(fresh[j].p, 0, fresh[j].size, fresh[j].stamp))
                bad++;
            if (!ht_heap_free(nh[fresh[j].heap], 0, fresh[j].p))
                bad++;
        }
        CHECK_EQ_U(bad, 0);
        for (int t = 0; t < NT; t++) {
            if (!nh[t])
                continue;
            ht_heap_stats st;
            ht_heap_get_stats(nh[t], &st);
            CHECK_EQ_U(st.live_blocks, 0);
            CHECK(ht_heap_validate(nh[t], 0, NULL));
            CHECK(ht_heap_destroy(nh[t]));
        }
    }

    /* free the rest of the process heap's and the shared heap's blocks */
    for (size_t j = 0; j < nrest; j++) {
        item *it = &g_rest[j];
        if (it->heap >= 2)
            continue;
        CHECK(ht_heap_free(g_heap[it->heap], 0, it->p));
        main_frees++;
    }
    for (int i = 0; i < 2; i++) {
        ht_heap_stats st;
        ht_heap_get_stats(g_heap[i], &st);
        CHECK_EQ_U(st.live_blocks, st0[i].live_blocks);
        CHECK_EQ_U(st.live_bytes, st0[i].live_bytes);
        CHECK_EQ_U(st.n_invalid, st0[i].n_invalid);
        CHECK(ht_heap_validate(g_heap[i], 0, NULL));
        size_t nb = 0;
        CHECK(walk_sane(g_heap[i], &nb));
        CHECK_EQ_U(nb, st0[i].live_blocks);
    }
    /* every block was freed exactly once (or went away with its heap) */
    CHECK_EQ_U(n_free + main_frees + dropped, n_alloc);
    CHECK(ht_heap_destroy(g_heap[1]));
    g_heap[1] = NULL;
    for (int t = 0; t < NT; t++)
        pthread_mutex_destroy(&W[t].q.mu);
}

/* ---- double_free_race --------------------------------------------------------------------- */

static pthread_barrier_t g_bar;
static void *_Atomic g_race_ptr;
static ht_heap *_Atomic g_race_heap;
static atomic_int g_race_ok[2], g_race_err[2];
static atomic_bool g_race_stop;

static void *racer_main(void *arg)
{
    int me = (int)(intptr_t)arg;
    for (;;) {
        pthread_barrier_wait(&g_bar);
        if (atomic_load(&g_race_stop))
            break;
        void *p = atomic_load(&g_race_ptr);
        ht_heap *h = atomic_load(&g_race_heap);
        errno = 0;
        bool ok = ht_heap_free(h, 0, p);
        atomic_store(&g_race_ok[me], ok);
        atomic_store(&g_race_err[me], ok ? 0 : errno);
        pthread_barrier_wait(&g_bar);
    }
    return NULL;
}

static void double_free_race(void)
{
    double secs = env_seconds("HT_STRESS_SECONDS", 8.0) / 2;
    ht_heap *heaps[3] = {ht_process_heap(), ht_heap_create(0, 0, 0),
                         ht_heap_create(HT_HEAP_ENABLE_LFH, 0, 0)};
    REQUIRE(heaps[1] && heaps[2]);
    static const size_t sizes[] = {24, 200, 3000, 16384, 20000, 300000, 2 * MiB};
    ht_heap_stats st0[3];
    for (int i = 0; i < 3; i++)
        ht_heap_get_stats(heaps[i], &st0[i]);
    uint64_t losers[3] = {0}, rounds = 0, one_winner = 0, bad_errno = 0, alloc_fail = 0;
    REQUIRE(pthread_barrier_init(&g_bar, NULL, 3) == 0);
    atomic_store(&g_race_stop, false);
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        REQUIRE(pthread_create(&th[i], NULL, racer_main, (void *)(intptr_t)i) == 0);
    double t0 = now_s();
    while (rounds < 200000 && (rounds < 2000 || now_s() - t0 < secs)) {
        int hi = (int)(rounds % 3);
        size_t size = sizes[(rounds / 3) % (sizeof sizes / sizeof sizes[0])];
        void *p = ht_heap_alloc(heaps[hi], 0, size);
        if (!p) {
            alloc_fail++;
            break;
        }
        memset(p, 0x5A, size < 4096 ? size : 4096);
        atomic_store(&g_race_ptr, p);
        atomic_store(&g_race_heap, heaps[hi]);
        pthread_barrier_wait(&g_bar); /* go */
        pthread_barrier_wait(&g_bar); /* both freed */
        int a = atomic_load(&g_race_ok[0]), b = atomic_load(&g_race_ok[1]);
        if (a + b == 1)
            one_winner++;
        int err = a ? atomic_load(&g_race_err[1]) : atomic_load(&g_race_err[0]);
        if (a + b == 1 && err != EINVAL)
            bad_errno++;
        losers[hi] += (uint64_t)(2 - a - b);
        /* the block is gone */
        if (ht_heap_validate(heaps[hi], 0, p))
            bad_errno++;
        rounds++;
    }
    atomic_store(&g_race_stop, true);
    pthread_barrier_wait(&g_bar);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&g_bar);
    printf("double_free_race: %" PRIu64 " rounds in %.1f s\n", rounds, now_s() - t0);
    CHECK_EQ_U(alloc_fail, 0);
    CHECK_EQ_U(one_winner, rounds);
    CHECK_EQ_U(bad_errno, 0);
    for (int i = 0; i < 3; i++) {
        ht_heap_stats st;
        ht_heap_get_stats(heaps[i], &st);
        CHECK_EQ_U(st.n_invalid, st0[i].n_invalid + losers[i]);
        CHECK_EQ_U(st.live_blocks, st0[i].live_blocks);
        CHECK_EQ_U(st.live_bytes, st0[i].live_bytes);
        CHECK(ht_heap_validate(heaps[i], 0, NULL));
    }
    CHECK(ht_heap_destroy(heaps[1]));
    CHECK(ht_heap_destroy(heaps[2]));
}

TEST_MAIN(TEST(cross_thread), TEST(double_free_race))
