/* test_sources.c — the Source of every operation, path by path, exactly as docs/heap.md states
 * it. A recorder consumer keeps every event; each test works on fresh private heaps created
 * after the session started, so the whole history of each heap is in the trace, and ends by
 * comparing the heap's statistics with a replay of its events. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* also set by the build */
#endif
#include "harness.h"
#include "trace_rec.h"

#include <heaptrail.h>

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

enum {
    LA = HT_SOURCE_LOOKASIDE,
    LF = HT_SOURCE_LOWFRAG,
    MP = HT_SOURCE_MAINPATH,
    SP = HT_SOURCE_SLOWPATH,
    INV = HT_SOURCE_INVALID
};

static uint32_t last_src; /* Source of the last alloc_src / free_src event */

/* Allocates (aligned when align != 0) and checks: exactly one HEAP_ALLOC for it, with its
 * address and size, only HEAP_EXPAND besides, and (want != 0) its Source (rec_check_src). */
static void *alloc_src_(ht_heap *h, size_t size, size_t align, uint32_t want, const char *f, int l)
{
    unsigned mark = rec_count();
    void *p = align ? ht_heap_alloc_aligned(h, 0, size, align) : ht_heap_alloc(h, 0, size);
    last_src = 0;
    if (p == NULL) {
        fprintf(stderr, "%s:%d: alloc of %zu failed (errno %d)\n", f, l, size, errno);
        harness_failures_++;
        return NULL;
    }
    int i = rec_one_(h, HT_EVENT_HEAP_ALLOC, mark, f, l);
    if (i < 0)
        return p;
    const ht_event *e = &rec_ev_[i];
    if (e->alloc.address != (uintptr_t)p || e->alloc.size != size) {
        fprintf(stderr, "%s:%d: HEAP_ALLOC says %#lx/%" PRIu64 ", call gave %p/%zu\n", f, l,
                (unsigned long)e->alloc.address, (uint64_t)e->alloc.size, p, size);
        harness_failures_++;
    }
    if (rec_count_of(h, 0, mark) != 1 + rec_count_of(h, HT_EVENT_HEAP_EXPAND, mark)) {
        fprintf(stderr, "%s:%d: alloc logged events other than HEAP_ALLOC/HEAP_EXPAND\n", f, l);
        harness_failures_++;
    }
    last_src = e->alloc.source;
    if (want != 0)
        rec_check_src_(h, i, want, f, l);
    return p;
}
#define alloc_src(h, size, want)        alloc_src_((h), (size), 0, (want), __FILE__, __LINE__)
#define alloc_al_src(h, size, al, want) alloc_src_((h), (size), (al), (want), __FILE__, __LINE__)

static void free_src_(ht_heap *h, void *p, uint32_t want, const char *f, int l)
{
    unsigned mark = rec_count();
    last_src = 0;
    if (!ht_heap_free(h, 0, p)) {
        fprintf(stderr, "%s:%d: free of %p failed (errno %d)\n", f, l, p, errno);
        harness_failures_++;
    }
    int i = rec_one_(h, HT_EVENT_HEAP_FREE, mark, f, l);
    if (i < 0)
        return;
    const ht_event *e = &rec_ev_[i];
    if (e->free.address != (uintptr_t)p) {
        fprintf(stderr, "%s:%d: HEAP_FREE address %#lx, freed %p\n", f, l,
                (unsigned long)e->free.address, p);
        harness_failures_++;
    }
    if (rec_count_of(h, 0, mark) != 1 + rec_count_of(h, HT_EVENT_HEAP_CONTRACT, mark)) {
        fprintf(stderr, "%s:%d: free logged events other than HEAP_FREE/HEAP_CONTRACT\n", f, l);
        harness_failures_++;
    }
    last_src = e->free.source;
    if (want != 0)
        rec_check_src_(h, i, want, f, l);
}
#define free_src(h, p, want) free_src_((h), (p), (want), __FILE__, __LINE__)

/* Each EXPAND/CONTRACT moves CommittedSpace by exactly its Size, starting from the create
 * event's CommittedSpace. */
static void check_commit_chain_(ht_heap *h, const char *f, int l)
{
    unsigned n = rec_count();
    bool have = false;
    uint64_t c = 0;
    for (unsigned i = 0; i < n; i++) {
        const ht_event *e = &rec_ev_[i];
        if (e->heap_handle != (uintptr_t)h)
            continue;
        if (e->type == HT_EVENT_HEAP_CREATE) {
            c = e->create.committed_space;
            have = true;
        } else if (e->type == HT_EVENT_HEAP_EXPAND) {
            if (have && e->expand.committed_space != c + e->expand.size) {
                fprintf(stderr, "%s:%d: EXPAND of %" PRIu64 " from %" PRIu64 " says %" PRIu64 "\n",
                        f, l, (uint64_t)e->expand.size, c, (uint64_t)e->expand.committed_space);
                harness_failures_++;
            }
            if (e->expand.size == 0) {
                fprintf(stderr, "%s:%d: EXPAND of 0 bytes\n", f, l);
                harness_failures_++;
            }
            c = e->expand.committed_space;
        } else if (e->type == HT_EVENT_HEAP_CONTRACT) {
            if (have && e->contract.committed_space + e->contract.size != c) {
                fprintf(stderr,
                        "%s:%d: CONTRACT of %" PRIu64 " from %" PRIu64 " says %" PRIu64 "\n", f, l,
                        (uint64_t)e->contract.size, c, (uint64_t)e->contract.committed_space);
                harness_failures_++;
            }
            if (e->contract.size == 0) {
                fprintf(stderr, "%s:%d: CONTRACT of 0 bytes\n", f, l);
                harness_failures_++;
            }
            c = e->contract.committed_space;
        }
    }
    if (!have) {
        fprintf(stderr, "%s:%d: no HEAP_CREATE recorded\n", f, l);
        harness_failures_++;
    }
}
#define check_commit_chain(h) check_commit_chain_((h), __FILE__, __LINE__)

/* Ends a test heap: statistics against the replay, commit chain, destroy. */
static void finish_heap(ht_heap *h)
{
    rec_check_stats(h);
    check_commit_chain(h);
    CHECK(ht_heap_validate(h, 0, NULL));
    CHECK(ht_heap_destroy(h));
}

static size_t class_lo(unsigned c)
{
    return c == 0 ? 0 : ht_lfh_class_size(c - 1);
}

static bool entry_of(ht_heap *h, const void *p, ht_heap_entry *out)
{
    ht_heap_entry e;
    memset(&e, 0, sizeof e);
    while (ht_heap_walk(h, &e))
        if (e.address == p && (e.state & HT_ENTRY_BUSY)) {
            *out = e;
            return true;
        }
    return false;
}

/* ---- LFH activation ------------------------------------------------------------------- */

static void lfh_activation_default_17(void)
{
    REQUIRE(rec_begin() == 0);
    static const unsigned classes[] = {0, 1, 3, 7, 8, 11, 15, 19, 23, 27, 31, 35};
    for (size_t k = 0; k < sizeof classes / sizeof classes[0]; k++) {
        unsigned c = classes[k];
        size_t lo = class_lo(c), cs = ht_lfh_class_size(c);
        ht_heap *h = ht_heap_create(0, 0, 0);
        REQUIRE(h != NULL);
        void *ps[20];
        /* sizes spread over the class (lo, cs] (0 counts as 1: class 16) */
        for (int i = 1; i <= 20; i++) {
            size_t s = lo + 1 + (size_t)(i * 7) % (cs - lo);
            if (c == 0 && i == 3)
                s = 0;
            int before = harness_failures_;
            ps[i - 1] = alloc_src(h, s, i <= 17 ? MP : LF);
            if (harness_failures_ != before)
                fprintf(stderr, "  (class %zu, allocation %d)\n", cs, i);
        }
        ht_heap_entry e;
        if (ps[17] != NULL && entry_of(h, ps[17], &e))
            CHECK(e.state & HT_ENTRY_LFH);
        if (ps[0] != NULL && entry_of(h, ps[0], &e))
            CHECK(!(e.state & HT_ENTRY_LFH));
        /* another class still goes to the main path */
        unsigned other = c == 35 ? 34 : c + 1;
        alloc_src(h, ht_lfh_class_size(other), MP);
        finish_heap(h);
    }
    rec_end();
}

static void lfh_threshold_option(void)
{
    REQUIRE(rec_begin() == 0);
    static const size_t thresholds[] = {5, 1, 30};
    for (size_t k = 0; k < 3; k++) {
        size_t t = thresholds[k];
        ht_heap *h = ht_heap_create(0, 0, 0);
        REQUIRE(h != NULL);
        REQUIRE(ht_heap_set_option(h, HT_OPT_LFH_THRESHOLD, t));
        for (size_t i = 1; i <= t + 3; i++)
            alloc_src(h, 200, i <= t ? MP : LF);
        finish_heap(h);
    }
    /* 0 = active at once */
    ht_heap *h = ht_heap_create(0, 0, 0);
    REQUIRE(h != NULL);
    REQUIRE(ht_heap_set_option(h, HT_OPT_LFH_THRESHOLD, 0));
    for (unsigned c = 0; c < ht_lfh_class_count(); c += 5)
        alloc_src(h, ht_lfh_class_size(c), LF);
    finish_heap(h);
    rec_end();
}

static void enable_lfh_flag(void)
{
    REQUIRE(rec_begin() == 0);
    ht_heap *h = ht_heap_create(HT_HEAP_ENABLE_LFH, 0, 0);
    REQUIRE(h != NULL);
    int ic = rec_one(h, HT_EVENT_HEAP_CREATE, 0);
    if (ic >= 0)
        CHECK_EQ_U(rec_ev_[ic].create.flags, HT_HEAP_ENABLE_LFH);
    for (unsigned c = 0; c < ht_lfh_class_count(); c++) {
        size_t cs = ht_lfh_class_size(c);
        int before = harness_failures_;
        void *p = alloc_src(h, cs, LF); /* the first of its class */
        if (harness_failures_ != before)
            fprintf(stderr, "  (class %zu)\n", cs);
        alloc_src(h, class_lo(c) + 1, LF);
        alloc_src(h, cs, LF);
        ht_heap_entry e;
        if (p != NULL && entry_of(h, p, &e)) {
            CHECK(e.state & HT_ENTRY_LFH);
            CHECK(e.source == LF || e.source == SP);
        }
    }
    /* beyond the classes: main path */
    alloc_src(h, 16385, MP);
    finish_heap(h);
    rec_end();
}

/* ---- lookaside ------------------------------------------------------------------------ */

static void lookaside_lifo(void)
{
    REQUIRE(rec_begin() == 0);
    for (int lfh = 0; lfh < 2; lfh++) {
        uint32_t owner = lfh ? LF : MP;
        ht_heap *h = ht_heap_create(lfh ? HT_HEAP_ENABLE_LFH : 0, 0, 0);
        REQUIRE(h != NULL);
        void *a = alloc_src(h, 64, owner);
        free_src(h, a, LA);
        void *a2 = alloc_src(h, 50, LA); /* same class (49..64) */
        CHECK(a2 == a);
        void *b = alloc_src(h, 64, owner), *c = alloc_src(h, 64, owner),
             *d = alloc_src(h, 64, owner);
        free_src(h, b, LA);
        free_src(h, c, LA);
        free_src(h, d, LA);
        alloc_src(h, 100, owner); /* another class: not from this lookaside */
        CHECK(alloc_src(h, 64, LA) == d);
        CHECK(alloc_src(h, 64, LA) == c);
        CHECK(alloc_src(h, 64, LA) == b);
        alloc_src(h, 64, owner); /* empty again */
        /* a lookaside hit with ZERO_MEMORY is zeroed */
        memset(b, 0xAA, 64);
        free_src(h, b, LA);
        unsigned mark = rec_count();
        unsigned char *z = ht_heap_alloc(h, HT_HEAP_ZERO_MEMORY, 64);
        CHECK(z == b);
        int i = rec_one(h, HT_EVENT_HEAP_ALLOC, mark);
        if (i >= 0)
            CHECK_EQ_U(rec_ev_[i].alloc.source, LA);
        for (int k = 0; z != NULL && k < 64; k++)
            if (z[k] != 0) {
                CHECK(false);
                break;
            }
        finish_heap(h);
    }
    rec_end();
}

static void lookaside_hits_do_not_count(void)
{
    REQUIRE(rec_begin() == 0);
    ht_heap *h = ht_heap_create(0, 0, 0);
    REQUIRE(h != NULL);
    void *p = alloc_src(h, 64, MP); /* main-path allocation #1 */
    for (int i = 0; i < 30; i++) {
        free_src(h, p, LA);
        CHECK(alloc_src(h, 64, LA) == p);
    }
    for (int i = 2; i <= 17; i++)
        alloc_src(h, 64, MP);
    alloc_src(h, 64, LF); /* #18 */
    finish_heap(h);
    rec_end();
}

static size_t default_depth(size_t cs)
{
    size_t d = 65536 / cs;
    return d < 4 ? 4 : d > 128 ? 128 : d;
}

static void lookaside_depth_option(void)
{
    REQUIRE(rec_begin() == 0);
    void *ps[1100];
    /* depth 4: 4 LOOKASIDE frees, then back to the owner */
    for (int lfh = 0; lfh < 2; lfh++) {
        ht_heap *h = ht_heap_create(lfh ? HT_HEAP_ENABLE_LFH : 0, 0, 0);
        REQUIRE(h != NULL);
        REQUIRE(ht_heap_set_option(h, HT_OPT_LOOKASIDE_DEPTH, 4));
        static const size_t sizes[] = {32, 1000, 16384};
        for (size_t k = 0; k < 3; k++) {
            for (int i = 0; i < 6; i++)
                ps[i] = alloc_src(h, sizes[k], lfh ? LF : MP);
            for (int i = 0; i < 6; i++)
                free_src(h, ps[i], i < 4 ? LA : lfh ? LF : MP);
        }
        finish_heap(h);
    }
    /* depth N for every class */
    {
        ht_heap *h = ht_heap_create(HT_HEAP_ENABLE_LFH, 0, 0);
        REQUIRE(h != NULL);
        REQUIRE(ht_heap_set_option(h, HT_OPT_LOOKASIDE_DEPTH, 10));
        static const size_t sizes[] = {16, 128, 4096, 16384};
        for (size_t k = 0; k < 4; k++) {
            for (int i = 0; i < 12; i++)
                ps[i] = alloc_src(h, sizes[k], LF);
            for (int i = 0; i < 12; i++)
                free_src(h, ps[i], i < 10 ? LA : LF);
        }
        finish_heap(h);
    }
    /* depth 1024 */
    {
        ht_heap *h = ht_heap_create(HT_HEAP_ENABLE_LFH, 0, 0);
        REQUIRE(h != NULL);
        REQUIRE(ht_heap_set_option(h, HT_OPT_LOOKASIDE_DEPTH, 1024));
        for (int i = 0; i < 1026; i++)
            ps[i] = alloc_src(h, 48, LF);
        unsigned n_la = 0;
        for (int i = 0; i < 1026; i++) {
            free_src(h, ps[i], i < 1024 ? LA : LF);
            n_la += last_src == LA;
        }
        CHECK_EQ_U(n_la, 1024);
        finish_heap(h);
    }
    /* depth 0: never LOOKASIDE */
    for (int lfh = 0; lfh < 2; lfh++) {
        ht_heap *h = ht_heap_create(lfh ? HT_HEAP_ENABLE_LFH : 0, 0, 0);
        REQUIRE(h != NULL);
        REQUIRE(ht_heap_set_option(h, HT_OPT_LOOKASIDE_DEPTH, 0));
        for (int i = 1; i <= 40; i++) {
            /* alloc/free pairs: every allocation is main path until the class is active */
            uint32_t path = lfh || i > 17 ? LF : MP;
            void *p = alloc_src(h, 64, path);
            free_src(h, p, path);
        }
        for (int i = 0; i < 8; i++)
            ps[i] = alloc_src(h, 3000, lfh ? LF : MP);
        for (int i = 0; i < 8; i++)
            free_src(h, ps[i], lfh ? LF : MP);
        finish_heap(h);
    }
    rec_end();
}

static void lookaside_default_depth_per_class(void)
{
    REQUIRE(rec_begin() == 0);
    ht_heap *h = ht_heap_create(HT_HEAP_ENABLE_LFH, 0, 0);
    REQUIRE(h != NULL);
    static void *ps[140];
    for (unsigned c = 0; c < ht_lfh_class_count(); c++) {
        size_t cs = ht_lfh_class_size(c), d = default_depth(cs);
        for (size_t i = 0; i < d + 2; i++)
            ps[i] = alloc_src(h, cs, LF);
        size_t n_la = 0;
        for (size_t i = 0; i < d + 2; i++) {
            free_src(h, ps[i], i < d ? LA : LF);
            n_la += last_src == LA;
        }
        if (n_la != d) {
            fprintf(stderr, "  class %zu: %zu LOOKASIDE frees, default depth is %zu\n", cs, n_la,
                    d);
            CHECK(false);
        }
    }
    finish_heap(h);
    rec_end();
}

/* another thread's free goes to that thread's lookaside — unless the block is an LFH block
 * and the two threads sit in different LFH affinity slots (thread id mod 4): then it goes
 * straight back to its run (docs/heap.md) */
typedef struct xthread {
    ht_heap *h;
    void *p;
    sem_t go, freed;
    uint32_t tid;
    void *again;
} xthread;

static void *xthread_main(void *arg)
{
    xthread *x = arg;
    x->tid = rec_gettid();
    ht_heap_free(x->h, 0, x->p);
    sem_post(&x->freed);
    sem_wait(&x->go);
    x->again = ht_heap_alloc(x->h, 0, 64); /* this thread's lookaside: p again */
    ht_heap_free(x->h, 0, x->again);
    return NULL; /* exit: the lookaside goes back to its owners */
}

static void lookaside_cross_thread(void)
{
    REQUIRE(rec_begin() == 0);
    /* the LFH case five times: new threads get new ids, so both affinity cases come up */
    for (int round = 0; round < 6; round++) {
        int lfh = round > 0;
        uint32_t owner = lfh ? LF : MP;
        ht_heap *h = ht_heap_create(lfh ? HT_HEAP_ENABLE_LFH : 0, 0, 0);
        REQUIRE(h != NULL);
        xthread x;
        memset(&x, 0, sizeof x);
        x.h = h;
        x.p = alloc_src(h, 64, owner);
        REQUIRE(x.p != NULL);
        sem_init(&x.go, 0, 0);
        sem_init(&x.freed, 0, 0);
        unsigned mark = rec_count();
        pthread_t t;
        REQUIRE(pthread_create(&t, NULL, xthread_main, &x) == 0);
        sem_wait(&x.freed);
        bool home = lfh && x.tid % 4 != rec_gettid() % 4; /* goes back to its run */
        int i = rec_one(h, HT_EVENT_HEAP_FREE, mark);
        if (i >= 0) {
            CHECK_EQ_U(rec_ev_[i].tid, x.tid);
            CHECK_EQ_U(rec_ev_[i].free.source, home ? LF : LA);
            CHECK(rec_ev_[i].free.address == (uintptr_t)x.p);
        }
        CHECK(!ht_heap_validate(h, 0, x.p)); /* free at once */
        void *q = alloc_src(h, 64, owner);   /* not this thread's lookaside */
        CHECK(last_src != LA);
        if (!home)
            CHECK(q != x.p); /* parked on the other thread's lookaside */
        sem_post(&x.go);
        pthread_join(t, NULL);
        if (!home)
            CHECK(x.again == x.p);
        int ia = rec_find(h, HT_EVENT_HEAP_ALLOC, (unsigned)i + 1);
        while (ia >= 0 && rec_ev_[ia].tid != x.tid)
            ia = rec_find(h, HT_EVENT_HEAP_ALLOC, (unsigned)ia + 1);
        CHECK(ia >= 0);
        if (ia >= 0) {
            CHECK_EQ_U(rec_ev_[ia].alloc.source, home ? LF : LA);
            if (!home)
                CHECK(rec_ev_[ia].alloc.address == (uintptr_t)x.p);
        }
        sem_destroy(&x.go);
        sem_destroy(&x.freed);
        CHECK(ht_heap_validate(h, 0, NULL));
        /* the exited thread's blocks are usable again; this thread's lookaside is still empty */
        for (int k = 0; k < 4; k++)
            alloc_src(h, 64, owner);
        free_src(h, q, LA);
        finish_heap(h);
    }
    rec_end();
}

/* ---- medium, large, aligned ----------------------------------------------------------- */

static void medium_sizes_main_path(void)
{
    REQUIRE(rec_begin() == 0);
    static const size_t sizes[] = {16385, 20000, 65536, 500000, MiB - 1};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        ht_heap *h = ht_heap_create(HT_HEAP_ENABLE_LFH, 0, 0); /* even with the LFH on */
        REQUIRE(h != NULL);
        void *ps[20];
        for (int r = 0; r < 30; r++) {
            void *p = alloc_src(h, sizes[k], MP);
            free_src(h, p, MP);
        }
        int n = sizes[k] > 100000 ? 6 : 20;
        for (int i = 0; i < n; i++)
            ps[i] = alloc_src(h, sizes[k], MP);
        for (int i = 0; i < n; i++)
            free_src(h, ps[i], MP);
        finish_heap(h);
    }
    rec_end();
}

static void large_sizes_slow_path(void)
{
    REQUIRE(rec_begin() == 0);
    ht_heap *h = ht_heap_create(0, 2 * MiB, 0);
    REQUIRE(h != NULL);
    static const size_t sizes[] = {MiB, MiB + 1, 3 * MiB, 8 * MiB + 100};
    for (int round = 0; round < 3; round++) /* rounds 2 and 3 may reuse cached mappings */
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            void *p = alloc_src(h, sizes[k], SP);
            ht_heap_entry e;
            if (p != NULL && entry_of(h, p, &e)) {
                CHECK(e.state & HT_ENTRY_LARGE);
                CHECK_EQ_U(e.source, SP);
            }
            free_src(h, p, SP);
        }
    /* 1 MiB - 1 is below the threshold: main path */
    void *m = alloc_src(h, MiB - 1, MP);
    ht_heap_entry e;
    if (m != NULL && entry_of(h, m, &e))
        CHECK(!(e.state & HT_ENTRY_LARGE));
    free_src(h, m, MP);
    finish_heap(h);

    /* the threshold option moves the line */
    h = ht_heap_create(0, 0, 0);
    REQUIRE(h != NULL);
    REQUIRE(ht_heap_set_option(h, HT_OPT_LARGE_THRESHOLD, 64 * KiB));
    void *a = alloc_src(h, 64 * KiB, SP);
    void *b = alloc_src(h, 64 * KiB - 1, MP);
    void *c = alloc_src(h, 100 * KiB, SP);
    free_src(h, a, SP);
    free_src(h, b, MP);
    free_src(h, c, SP);
    finish_heap(h);

    /* alignment: size + alignment that does not fit in a segment (4 MiB) is large */
    h = ht_heap_create(0, 0, 0);
    REQUIRE(h != NULL);
    void *x = alloc_al_src(h, 100, 4 * MiB, SP);
    CHECK(x == NULL || ((uintptr_t)x & (4 * MiB - 1)) == 0);
    void *y = alloc_al_src(h, 100, MiB, MP);     /* fits: main path */
    void *z = alloc_al_src(h, 100, 2 * MiB, MP); /* 2 MiB + 100 fits in a segment, too */
    if (y != NULL && entry_of(h, y, &e))
        CHECK(!(e.state & HT_ENTRY_LARGE));
    if (z != NULL && entry_of(h, z, &e))
        CHECK(!(e.state & HT_ENTRY_LARGE));
    free_src(h, x, SP);
    free_src(h, y, MP);
    free_src(h, z, MP);
    finish_heap(h);
    rec_end();
}

static void aligned_small_main_path(void)
{
    REQUIRE(rec_begin() == 0);
    for (int lfh = 0; lfh < 2; lfh++) {
        ht_heap *h = ht_heap_create(lfh ? HT_HEAP_ENABLE_LFH : 0, 0, 0);
        REQUIRE(h != NULL);
        static const size_t aligns[] = {32, 64, 128, 4096};
        for (size_t k = 0; k < 4; k++)
            for (int i = 0; i < 30; i++) {
                void *p = alloc_al_src(h, 32, aligns[k], MP);
                CHECK(p == NULL || ((uintptr_t)p & (aligns[k] - 1)) == 0);
                free_src(h, p, MP); /* not LOOKASIDE */
            }
        /* alignment <= 16 is an ordinary small request: lookaside and LFH apply */
        static const size_t small_al[] = {1, 2, 8, 16};
        void *p = alloc_al_src(h, 32, 16, lfh ? LF : MP); /* class 32, main-path count 1 */
        for (size_t k = 0; k < 4; k++) {
            free_src(h, p, LA);
            CHECK(alloc_al_src(h, 32, small_al[k], LA) == p);
        }
        free_src(h, p, LA);
        if (!lfh) {
            /* docs/heap.md: only a *small request* (alignment <= 16) of a class counts towards
             * its activation, so the 120 aligned (> 16) allocations above did not: after the
             * one main-path allocation of class 32 so far, 16 more are main path, then LFH. */
            alloc_src(h, 32, LA); /* p, from the lookaside */
            for (int i = 2; i <= 17; i++)
                alloc_src(h, 32, MP);
            alloc_src(h, 32, LF);
        }
        finish_heap(h);
    }
    rec_end();
}

/* ---- realloc -------------------------------------------------------------------------- */

static int realloc_ev_(ht_heap *h, void *old, size_t size, unsigned flags, void **out,
                       const char *f, int l)
{
    unsigned mark = rec_count();
    errno = 0;
    *out = ht_heap_realloc(h, flags, old, size);
    if (rec_count_of(h, HT_EVENT_HEAP_FREE, mark) != 0 ||
        rec_count_of(h, HT_EVENT_HEAP_ALLOC, mark) != 0) {
        fprintf(stderr, "%s:%d: realloc logged HEAP_FREE/HEAP_ALLOC\n", f, l);
        harness_failures_++;
    }
    int i = rec_one_(h, HT_EVENT_HEAP_REALLOC, mark, f, l);
    if (i >= 0) {
        const ht_event *e = &rec_ev_[i];
        if (e->realloc.new_address != (uintptr_t)*out || e->realloc.old_address != (uintptr_t)old ||
            e->realloc.new_size != size) {
            fprintf(stderr, "%s:%d: HEAP_REALLOC fields %#lx<-%#lx size %" PRIu64 "\n", f, l,
                    (unsigned long)e->realloc.new_address, (unsigned long)e->realloc.old_address,
                    (uint64_t)e->realloc.new_size);
            harness_failures_++;
        }
    }
    return i;
}
#define realloc_ev(h, old, size, flags, out)                                                       \
    realloc_ev_((h), (old), (size), (flags), (out), __FILE__, __LINE__)

static void realloc_sources(void)
{
    REQUIRE(rec_begin() == 0);
    ht_heap *h = ht_heap_create(HT_HEAP_ENABLE_LFH, 0, 0);
    REQUIRE(h != NULL);
    void *p = alloc_src(h, 100, LF), *np;
    /* in place on an LFH block: LOWFRAG */
    int i = realloc_ev(h, p, 110, 0, &np);
    CHECK(np == p);
    if (i >= 0) {
        CHECK_EQ_U(rec_ev_[i].realloc.old_size, 100);
        rec_check_src(h, i, LF);
    }
    i = realloc_ev(h, p, 60, 0, &np); /* usable/2 < 60 <= usable */
    CHECK(np == p);
    rec_check_src(h, i, LF);
    /* in-place-only that cannot be done: NULL, ENOMEM, no event */
    unsigned mark = rec_count();
    errno = 0;
    CHECK(ht_heap_realloc(h, HT_HEAP_REALLOC_IN_PLACE_ONLY, p, 5000) == NULL);
    CHECK_EQ_U(errno, ENOMEM);
    CHECK_EQ_U(rec_count_of(h, 0, mark), 0);
    /* moved: the Source of the new block — here a lookaside hit */
    void *q = alloc_src(h, 500, LF);
    free_src(h, q, LA);
    i = realloc_ev(h, p, 500, 0, &np);
    CHECK(np == q);
    if (i >= 0) {
        CHECK_EQ_U(rec_ev_[i].realloc.old_size, 60);
        CHECK_EQ_U(rec_ev_[i].realloc.source, LA);
    }
    void *old = p;
    p = np;
    /* moved to a fresh LFH block */
    i = realloc_ev(h, p, 1500, 0, &np);
    CHECK(np != NULL && np != p);
    rec_check_src(h, i, LF);
    p = np;
    /* a freed block: INVALID, NewAddress 0, OldSize 0 */
    i = realloc_ev(h, old, 50, 0, &np);
    CHECK(np == NULL);
    CHECK_EQ_U(errno, EINVAL);
    if (i >= 0) {
        CHECK_EQ_U(rec_ev_[i].realloc.source, INV);
        CHECK_EQ_U(rec_ev_[i].realloc.new_address, 0);
        CHECK_EQ_U(rec_ev_[i].realloc.old_size, 0);
    }
    /* main path: shrink in place — MAINPATH */
    void *m = alloc_src(h, 100000, MP);
    i = realloc_ev(h, m, 50000, 0, &np);
    CHECK(np == m);
    rec_check_src(h, i, MP);
    /* grow back into the free neighbour it just left */
    i = realloc_ev(h, m, 60000, 0, &np);
    CHECK(np == m);
    rec_check_src(h, i, MP);
    /* large: in place — SLOWPATH */
    void *L = alloc_src(h, 2 * MiB, SP);
    i = realloc_ev(h, L, 3 * MiB / 2, 0, &np);
    CHECK(np == L);
    if (i >= 0)
        CHECK_EQ_U(rec_ev_[i].realloc.source, SP);
    /* moved to a large block: SLOWPATH */
    i = realloc_ev(h, m, 3 * MiB, 0, &np);
    CHECK(np != NULL && np != m);
    if (i >= 0)
        CHECK_EQ_U(rec_ev_[i].realloc.source, SP);
    m = np;
    /* moved from large to a medium main-path block */
    i = realloc_ev(h, L, 100000, 0, &np);
    CHECK(np != NULL && np != L);
    rec_check_src(h, i, MP);
    L = np;
    /* realloc(NULL): HEAP_ALLOC */
    mark = rec_count();
    void *n0 = ht_heap_realloc(h, 0, NULL, 40);
    CHECK(n0 != NULL);
    CHECK_EQ_U(rec_count_of(h, HT_EVENT_HEAP_REALLOC, mark), 0);
    int ia = rec_one(h, HT_EVENT_HEAP_ALLOC, mark);
    if (ia >= 0)
        rec_check_src(h, ia, LF);
    finish_heap(h);
    rec_end();
}

/* ---- commit and decommit -------------------------------------------------------------- */

static void expand_on_first_alloc(void)
{
    REQUIRE(rec_begin() == 0);
    ht_heap *h = ht_heap_create(0, 0, 0);
    REQUIRE(h != NULL);
    unsigned mark = rec_count();
    void *p = alloc_src(h, 900 * KiB, 0);
    CHECK_EQ_U(last_src, SP);
    int ia = rec_find(h, HT_EVENT_HEAP_ALLOC, mark);
    CHECK(rec_count_of(h, HT_EVENT_HEAP_EXPAND, mark) >= 1);
    const ht_event *prev = ia >= 0 ? rec_prev_of_heap(h, ia) : NULL;
    CHECK(prev != NULL && prev->type == HT_EVENT_HEAP_EXPAND);
    ht_heap_stats st;
    ht_heap_get_stats(h, &st);
    if (prev != NULL && prev->type == HT_EVENT_HEAP_EXPAND) {
        CHECK_EQ_U(st.committed, prev->expand.committed_space);
        CHECK(prev->expand.size >= 256 * KiB); /* steps of at least 256 KiB */
    }
    for (unsigned i = mark; i < rec_count(); i++)
        if (rec_ev_[i].heap_handle == (uintptr_t)h && rec_ev_[i].type == HT_EVENT_HEAP_EXPAND)
            CHECK(rec_ev_[i].expand.size >= 256 * KiB);
    /* another one needs more again */
    void *p2 = alloc_src(h, 900 * KiB, MP); /* SLOWPATH when it needs more: then after EXPAND */
    /* freed and taken again: the committed memory is reused, no EXPAND, MAINPATH (free main
     * memory stays below the 4 MiB decommit threshold) */
    free_src(h, p2, MP);
    CHECK_EQ_U(last_src, MP);
    mark = rec_count();
    p2 = alloc_src(h, 900 * KiB, MP);
    CHECK_EQ_U(last_src, MP);
    CHECK_EQ_U(rec_count_of(h, HT_EVENT_HEAP_EXPAND, mark), 0);
    (void)p;
    finish_heap(h);
    rec_end();
}

static void decommit_threshold(void)
{
    REQUIRE(rec_begin() == 0);
    ht_heap *h = ht_heap_create(0, 0, 0);
    REQUIRE(h != NULL);
    REQUIRE(ht_heap_set_option(h, HT_OPT_DECOMMIT_THRESHOLD, 256 * KiB));
    enum { N = 64 };
    void *ps[N];
    for (int i = 0; i < N; i++) {
        ps[i] = alloc_src(h, 64 * KiB, MP);
        REQUIRE(ps[i] != NULL);
        memset(ps[i], 0x33, 64 * KiB);
    }
    ht_heap_stats st0;
    ht_heap_get_stats(h, &st0);
    unsigned mark = rec_count();
    for (int i = 0; i < N; i++)
        free_src(h, ps[i], MP); /* SLOWPATH only with a HEAP_CONTRACT right after */
    unsigned n_contract = rec_count_of(h, HT_EVENT_HEAP_CONTRACT, mark);
    CHECK(n_contract >= 1);
    /* every CONTRACT follows (after possibly more CONTRACTs) the SLOWPATH free that caused it
     * ("the HEAP_CONTRACT events follow its HEAP_FREE") */
    unsigned n_bad = 0;
    for (unsigned i = mark; i < rec_count(); i++) {
        const ht_event *e = &rec_ev_[i];
        if (e->heap_handle != (uintptr_t)h || e->type != HT_EVENT_HEAP_CONTRACT)
            continue;
        int j = (int)i - 1;
        while (j >= 0 && (rec_ev_[j].heap_handle != (uintptr_t)h ||
                          rec_ev_[j].type == HT_EVENT_HEAP_CONTRACT))
            j--;
        if (j < 0 || rec_ev_[j].type != HT_EVENT_HEAP_FREE || rec_ev_[j].free.source != SP) {
            if (n_bad++ == 0)
                fprintf(stderr, "  event %u (HEAP_CONTRACT) follows %s (Source %u)\n", i,
                        j < 0 ? "nothing" : "an event that is not a SLOWPATH free",
                        j < 0 ? 0 : rec_source_of(&rec_ev_[j]));
        }
    }
    CHECK_EQ_U(n_bad, 0);
    ht_heap_stats st1;
    ht_heap_get_stats(h, &st1);
    int lc = -1;
    for (unsigned i = 0; i < rec_count(); i++)
        if (rec_ev_[i].heap_handle == (uintptr_t)h &&
            (rec_ev_[i].type == HT_EVENT_HEAP_CONTRACT || rec_ev_[i].type == HT_EVENT_HEAP_EXPAND))
            lc = (int)i;
    REQUIRE(lc >= 0);
    CHECK_EQ_U(st1.committed, rec_ev_[lc].contract.committed_space); /* same layout as expand */
    /* 4 MiB freed, at most 256 KiB of it (and page-rounding slack) kept committed */
    CHECK(st0.committed - st1.committed >= 3 * MiB);
    /* taking the memory again recommits: HEAP_EXPAND, and those allocations are SLOWPATH */
    mark = rec_count();
    for (int i = 0; i < N; i++) {
        ps[i] = alloc_src(h, 64 * KiB, MP);
        if (ps[i] != NULL)
            memset(ps[i], 0x44, 64 * KiB);
    }
    CHECK(rec_count_of(h, HT_EVENT_HEAP_EXPAND, mark) >= 1);
    for (int i = 0; i < N; i++)
        free_src(h, ps[i], MP);
    finish_heap(h);
    rec_end();
}

/* the default decommit threshold is 32 MiB: freeing 36 MiB of main-path blocks decommits,
 * freeing less than 32 MiB does not */
static void decommit_default_threshold(void)
{
    REQUIRE(rec_begin() == 0);
    ht_heap *h = ht_heap_create(0, 0, 0);
    REQUIRE(h != NULL);
    size_t v = 0;
    CHECK(ht_heap_get_option(h, HT_OPT_DECOMMIT_THRESHOLD, &v));
    CHECK_EQ_U(v, 32 * MiB);
    enum { N = 576 }; /* 36 MiB of 64 KiB blocks */
    static void *ps[N];
    for (int i = 0; i < N; i++) {
        ps[i] = alloc_src(h, 64 * KiB, MP);
        REQUIRE(ps[i] != NULL);
        memset(ps[i], 0x33, 64 * KiB);
    }
    unsigned mark = rec_count();
    unsigned n_slow = 0, first_slow = 0;
    for (int i = 0; i < N; i++) {
        free_src(h, ps[i], MP);
        if (last_src == SP && n_slow++ == 0)
            first_slow = (unsigned)i + 1;
    }
    CHECK(rec_count_of(h, HT_EVENT_HEAP_CONTRACT, mark) >= 1);
    CHECK(n_slow >= 1);
    /* none before 32 MiB (512 blocks, plus headers) were free */
    CHECK(n_slow == 0 || first_slow > 500);
    finish_heap(h);
    rec_end();
}

static void compact_contracts(void)
{
    REQUIRE(rec_begin() == 0);
    ht_heap *h = ht_heap_create(0, 0, 0);
    REQUIRE(h != NULL);
    static void *ps[300];
    for (int i = 0; i < 300; i++)
        ps[i] = alloc_src(h, i % 3 == 0 ? 20000 : (size_t)(i % 50) * 40, 0);
    void *L1 = alloc_src(h, 2 * MiB, SP), *L2 = alloc_src(h, 3 * MiB, SP);
    void *keep = alloc_src(h, 64, 0);
    for (int i = 0; i < 300; i++)
        free_src(h, ps[i], 0);
    free_src(h, L1, SP);
    free_src(h, L2, SP);
    /* some blocks of class 64 parked on this thread's lookaside */
    void *s1 = alloc_src(h, 64, 0), *s2 = alloc_src(h, 64, 0);
    free_src(h, s1, LA);
    free_src(h, s2, LA);
    ht_heap_stats before, after;
    ht_heap_get_stats(h, &before);
    unsigned mark = rec_count();
    ht_heap_compact(h, 0);
    ht_heap_get_stats(h, &after);
    CHECK(rec_count_of(h, HT_EVENT_HEAP_CONTRACT, mark) >= 1);
    CHECK_EQ_U(rec_count_of(h, 0, mark), rec_count_of(h, HT_EVENT_HEAP_CONTRACT, mark));
    CHECK(after.committed < before.committed);
    CHECK(after.reserved < before.reserved); /* cached large mappings given back */
    /* compact emptied this thread's lookaside lists */
    alloc_src(h, 64, 0);
    CHECK(last_src != LA);
    CHECK(ht_heap_validate(h, 0, keep));
    free_src(h, keep, LA);
    finish_heap(h);
    rec_end();
}

/* Blocks freed by other threads (lookaside pushes, remote LFH frees, main-path frees from
 * threads that then exit): afterwards the statistics are exact and match the events. */
typedef struct remote_arg {
    ht_heap *h;
    void **ps;
    int from, to;
} remote_arg;
static void *remote_free_thread(void *arg)
{
    remote_arg *a = arg;
    for (int i = a->from; i < a->to; i++)
        ht_heap_free(a->h, 0, a->ps[i]);
    return NULL;
}

static void cross_thread_frees_stats(void)
{
    REQUIRE(rec_begin() == 0);
    for (int lfh = 0; lfh < 2; lfh++) {
        ht_heap *h = ht_heap_create(lfh ? HT_HEAP_ENABLE_LFH : 0, 0, 0);
        REQUIRE(h != NULL);
        enum { N = 4000, NT = 4 };
        static void *ps[N];
        for (int i = 0; i < N; i++) {
            size_t s = i % 97 == 0 ? 40000 : i % 401 == 0 ? 2 * MiB : (size_t)(i % 300) * 8;
            ps[i] = ht_heap_alloc(h, 0, s);
            REQUIRE(ps[i] != NULL);
        }
        pthread_t t[NT];
        remote_arg a[NT];
        for (int k = 0; k < NT; k++) {
            a[k].h = h;
            a[k].ps = ps;
            a[k].from = k * N / NT;
            a[k].to = (k + 1) * N / NT;
            REQUIRE(pthread_create(&t[k], NULL, remote_free_thread, &a[k]) == 0);
        }
        for (int k = 0; k < NT; k++)
            pthread_join(t[k], NULL);
        ht_heap_stats st;
        ht_heap_get_stats(h, &st);
        CHECK_EQ_U(st.live_blocks, 0);
        CHECK_EQ_U(st.live_bytes, 0);
        /* the exited threads' lookaside blocks went back: this thread can use them all */
        for (int i = 0; i < N; i++) {
            size_t s = i % 97 == 0 ? 40000 : i % 401 == 0 ? 2 * MiB : (size_t)(i % 300) * 8;
            ps[i] = ht_heap_alloc(h, 0, s);
            REQUIRE(ps[i] != NULL);
            memset(ps[i], 0x21, s);
        }
        for (int i = 0; i < N; i++)
            CHECK(ht_heap_free(h, 0, ps[i]));
        finish_heap(h);
    }
    rec_end();
}

/* ---- a mixed workload: Sources are 1..5 and statistics match the events ---------------- */

static void mixed_workload_stats(void)
{
    REQUIRE(rec_begin() == 0);
    ht_heap *h = ht_heap_create(0, 0, 0);
    REQUIRE(h != NULL);
    enum { N = 256 };
    static void *ps[N];
    uint64_t x = 88172645463325252ull;
    for (int it = 0; it < 6000; it++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        unsigned k = (unsigned)(x % N);
        unsigned op = (unsigned)(x >> 20) % 8;
        size_t sz = (x >> 32) % 100 == 0  ? MiB + (x >> 40) % MiB
                    : (x >> 32) % 10 == 0 ? (x >> 40) % 200000
                                          : (x >> 40) % 2048;
        if (ps[k] == NULL) {
            ps[k] = op == 0 ? ht_heap_alloc_aligned(h, 0, sz, 256) : ht_heap_alloc(h, 0, sz);
            CHECK(ps[k] != NULL);
        } else if (op < 2) {
            void *q = ht_heap_realloc(h, 0, ps[k], sz);
            CHECK(q != NULL);
            if (q != NULL)
                ps[k] = q;
        } else {
            CHECK(ht_heap_free(h, 0, ps[k]));
            ps[k] = NULL;
        }
    }
    ht_heap_free(h, 0,
                 (void *)((uintptr_t)ps[0] + 1)); /* one INVALID free too (if ps[0] is live) */
    unsigned n = rec_count();
    for (unsigned i = 0; i < n; i++) {
        uint32_t s = rec_source_of(&rec_ev_[i]);
        unsigned t = rec_ev_[i].type;
        if (t == HT_EVENT_HEAP_ALLOC || t == HT_EVENT_HEAP_FREE || t == HT_EVENT_HEAP_REALLOC)
            CHECK(s >= 1 && s <= 5);
    }
    ht_heap_stats st;
    ht_heap_get_stats(h, &st);
    for (int s = 1; s <= 4; s++)
        CHECK(st.by_source[s].n_alloc > 0);
    finish_heap(h);
    rec_end();
}

TEST_MAIN(TEST(lfh_activation_default_17), TEST(lfh_threshold_option), TEST(enable_lfh_flag),
          TEST(lookaside_lifo), TEST(lookaside_hits_do_not_count), TEST(lookaside_depth_option),
          TEST(lookaside_default_depth_per_class), TEST(lookaside_cross_thread),
          TEST(medium_sizes_main_path), TEST(large_sizes_slow_path), TEST(aligned_small_main_path),
          TEST(realloc_sources), TEST(expand_on_first_alloc), TEST(decommit_threshold),
          TEST(decommit_default_threshold), TEST(compact_contracts), TEST(cross_thread_frees_stats),
          TEST(mixed_workload_stats))
