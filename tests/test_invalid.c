/* test_invalid.c — every kind of invalid operation (docs/heap.md "Invalid-pointer detection"):
 * free, realloc and size of an address that is not a live block of the heap fail with EINVAL,
 * log Source INVALID with the right address, are counted, and leave the heap untouched; the
 * blocks around keep their contents and the heap keeps working. Plus a double-free race. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* also set by the build */
#endif
#include "harness.h"
#include "trace_rec.h"

#include <heaptrail.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

/* ---- the check every invalid address goes through ------------------------------------- */

static void expect_invalid_(ht_heap *h, const void *addr, const char *f, int l)
{
    int before = harness_failures_;
    ht_heap_stats s0, s1;
    ht_heap_get_stats(h, &s0);
    unsigned mark = rec_count();
    uintptr_t a = (uintptr_t)addr;

    errno = 0;
    CHECK(!ht_heap_free(h, 0, (void *)a));
    CHECK_EQ_U(errno, EINVAL);
    errno = 0;
    CHECK(ht_heap_realloc(h, 0, (void *)a, 100) == NULL);
    CHECK_EQ_U(errno, EINVAL);
    errno = 0;
    CHECK(ht_heap_size(h, 0, (const void *)a) == (size_t)-1);
    CHECK_EQ_U(errno, EINVAL);
    CHECK(ht_heap_usable_size(h, (const void *)a) == (size_t)-1);
    CHECK(!ht_heap_validate(h, 0, (const void *)a));

    /* the three events, in order, and nothing else (validate and usable_size log nothing) */
    CHECK_EQ_U(rec_count_of(h, 0, mark), 3);
    int i1 = rec_find(h, HT_EVENT_HEAP_FREE, mark);
    int i2 = rec_find(h, HT_EVENT_HEAP_REALLOC, mark);
    int i3 = i1 >= 0 ? rec_find(h, HT_EVENT_HEAP_FREE, (unsigned)i1 + 1) : -1;
    CHECK(i1 >= 0 && i2 > i1 && i3 > i2);
    if (i1 >= 0) {
        const ht_event *e = &rec_ev_[i1];
        CHECK_EQ_U(e->free.source, HT_SOURCE_INVALID);
        CHECK_EQ_U(e->free.address, a);
        CHECK_EQ_U(e->flags & HT_EVENT_FROM_SIZE, 0);
    }
    if (i2 >= 0) {
        const ht_event *e = &rec_ev_[i2];
        CHECK_EQ_U(e->realloc.source, HT_SOURCE_INVALID);
        CHECK_EQ_U(e->realloc.old_address, a);
        CHECK_EQ_U(e->realloc.new_address, 0);
        CHECK_EQ_U(e->realloc.new_size, 100);
        CHECK_EQ_U(e->realloc.old_size, 0);
    }
    if (i3 >= 0) {
        const ht_event *e = &rec_ev_[i3];
        CHECK_EQ_U(e->free.source, HT_SOURCE_INVALID);
        CHECK_EQ_U(e->free.address, a);
        CHECK(e->flags & HT_EVENT_FROM_SIZE);
    }
    /* counted: n_invalid, and by_source[5] (the free and the size call as frees of 0 bytes,
     * the realloc as an alloc: docs/heap.md "Stats"; its bytes_alloc is asserted once, in
     * invalid_realloc_counts_new_size) */
    ht_heap_get_stats(h, &s1);
    CHECK_EQ_U(s1.n_invalid, s0.n_invalid + 3);
    CHECK_EQ_U(s1.by_source[5].n_free, s0.by_source[5].n_free + 2);
    CHECK_EQ_U(s1.by_source[5].bytes_free, s0.by_source[5].bytes_free);
    CHECK_EQ_U(s1.by_source[5].n_alloc, s0.by_source[5].n_alloc + 1);
    CHECK_EQ_U(s1.live_blocks, s0.live_blocks);
    CHECK_EQ_U(s1.live_bytes, s0.live_bytes);
    CHECK_EQ_U(s1.committed, s0.committed);
    for (int s = 1; s <= 4; s++) {
        CHECK_EQ_U(s1.by_source[s].n_alloc, s0.by_source[s].n_alloc);
        CHECK_EQ_U(s1.by_source[s].n_free, s0.by_source[s].n_free);
    }
    if (harness_failures_ != before)
        fprintf(stderr, "%s:%d: ^ for invalid address %#lx\n", f, l, (unsigned long)a);
}
#define expect_invalid(h, addr) expect_invalid_((h), (const void *)(addr), __FILE__, __LINE__)

/* ---- bystanders: live blocks whose contents must survive ------------------------------ */

#define NBY 48
typedef struct bystanders {
    void *p[NBY];
    size_t size[NBY];
} bystanders;

static void by_make(ht_heap *h, bystanders *b)
{
    for (int i = 0; i < NBY; i++) {
        size_t s;
        switch (i % 6) {
        case 0:
            s = 16;
            break;
        case 1:
            s = 64;
            break;
        case 2:
            s = 100 + (size_t)i * 10;
            break;
        case 3:
            s = 3000;
            break;
        case 4:
            s = 20000 + (size_t)i;
            break;
        default:
            s = i == 5 ? 2 * MiB : 48;
            break;
        }
        b->p[i] = ht_heap_alloc(h, 0, s);
        b->size[i] = s;
        CHECK(b->p[i] != NULL);
        if (b->p[i] != NULL)
            pat_fill(b->p[i], s);
    }
}

/* Verifies the contents, that the heap still allocates and frees, then frees the bystanders. */
static void by_check_free(ht_heap *h, bystanders *b)
{
    /* new blocks of every kind, written over their full size, before the check */
    static const size_t news[] = {0, 16, 64, 100, 3000, 20000, 2 * MiB};
    void *n[sizeof news / sizeof news[0]];
    for (size_t k = 0; k < sizeof news / sizeof news[0]; k++) {
        n[k] = ht_heap_alloc(h, 0, news[k]);
        CHECK(n[k] != NULL);
        if (n[k] != NULL)
            memset(n[k], 0xEE, news[k]);
    }
    for (int i = 0; i < NBY; i++) {
        if (b->p[i] == NULL)
            continue;
        if (!pat_check(b->p[i], b->size[i])) {
            fprintf(stderr, "  bystander %p (size %zu) was overwritten\n", b->p[i], b->size[i]);
            CHECK(false);
        }
        CHECK(ht_heap_validate(h, 0, b->p[i]));
        CHECK_EQ_U(ht_heap_size(h, 0, b->p[i]), b->size[i]);
    }
    CHECK(ht_heap_validate(h, 0, NULL));
    for (size_t k = 0; k < sizeof news / sizeof news[0]; k++)
        CHECK(ht_heap_free(h, 0, n[k]));
    for (int i = 0; i < NBY; i++)
        CHECK(ht_heap_free(h, 0, b->p[i]));
}

/* True when a is the start of one of the bystanders (then it is live, not a probe). */
static bool is_by(const bystanders *b, uintptr_t a)
{
    for (int i = 0; i < NBY; i++)
        if ((uintptr_t)b->p[i] == a)
            return true;
    return false;
}
/* expect_invalid for addresses that could, by layout, coincide with a bystander's start */
#define expect_invalid_nb(h, b, addr)                                                              \
    do {                                                                                           \
        uintptr_t a_ = (uintptr_t)(addr);                                                          \
        if (!is_by((b), a_))                                                                       \
            expect_invalid((h), a_);                                                               \
    } while (0)

/* After a bad free of a block of size s: new blocks of size s are distinct. */
static void no_duplicates(ht_heap *h, size_t s)
{
    void *x[3];
    for (int i = 0; i < 3; i++) {
        x[i] = ht_heap_alloc(h, 0, s);
        CHECK(x[i] != NULL);
    }
    CHECK(x[0] != x[1] && x[1] != x[2] && x[0] != x[2]);
    for (int i = 0; i < 3; i++)
        if (x[i] != NULL)
            memset(x[i], 0x5c, s);
    for (int i = 0; i < 3; i++)
        CHECK(ht_heap_free(h, 0, x[i]));
}

static ht_heap *begin(unsigned flags, bystanders *b)
{
    if (rec_begin() != 0)
        return NULL;
    ht_heap *h = ht_heap_create(flags, 0, 0);
    if (h != NULL && b != NULL)
        by_make(h, b);
    return h;
}

static void end(ht_heap *h, bystanders *b)
{
    if (b != NULL)
        by_check_free(h, b);
    CHECK(ht_heap_validate(h, 0, NULL));
    rec_check_stats(h);
    CHECK(ht_heap_destroy(h));
    rec_end();
}

static uint32_t free_source(ht_heap *h, void *p)
{
    unsigned mark = rec_count();
    CHECK(ht_heap_free(h, 0, p));
    int i = rec_find(h, HT_EVENT_HEAP_FREE, mark);
    return i >= 0 ? rec_ev_[i].free.source : 0;
}

/* ---- double frees --------------------------------------------------------------------- */

static void double_free_lookaside_block(void)
{
    bystanders b;
    ht_heap *h = begin(0, &b);
    REQUIRE(h != NULL);
    void *p = ht_heap_alloc(h, 0, 64);
    REQUIRE(p != NULL);
    CHECK_EQ_U(free_source(h, p), HT_SOURCE_LOOKASIDE);
    expect_invalid(h, p);
    expect_invalid(h, p);
    /* the lookaside holds p once: LIFO gives it back first, then fresh blocks */
    void *x = ht_heap_alloc(h, 0, 64), *y = ht_heap_alloc(h, 0, 64);
    CHECK(x == p);
    CHECK(y != NULL && y != x);
    CHECK(ht_heap_free(h, 0, x));
    CHECK(ht_heap_free(h, 0, y));
    no_duplicates(h, 64);
    /* same with an LFH block on the lookaside */
    ht_heap *h2 = ht_heap_create(HT_HEAP_ENABLE_LFH, 0, 0);
    REQUIRE(h2 != NULL);
    p = ht_heap_alloc(h2, 0, 200);
    REQUIRE(p != NULL);
    CHECK_EQ_U(free_source(h2, p), HT_SOURCE_LOOKASIDE);
    expect_invalid(h2, p);
    no_duplicates(h2, 200);
    rec_check_stats(h2);
    CHECK(ht_heap_destroy(h2));
    end(h, &b);
}

static void double_free_lfh_block(void)
{
    bystanders b;
    ht_heap *h = begin(HT_HEAP_ENABLE_LFH, &b);
    REQUIRE(h != NULL);
    REQUIRE(ht_heap_set_option(h, HT_OPT_LOOKASIDE_DEPTH, 0));
    static const size_t sizes[] = {16, 64, 100, 1000, 16384};
    for (size_t k = 0; k < 5; k++) {
        void *q = ht_heap_alloc(h, 0, sizes[k]); /* a neighbour in the same run */
        void *p = ht_heap_alloc(h, 0, sizes[k]);
        REQUIRE(p != NULL && q != NULL);
        pat_fill(q, sizes[k]);
        CHECK_EQ_U(free_source(h, p), HT_SOURCE_LOWFRAG);
        expect_invalid(h, p);
        no_duplicates(h, sizes[k]);
        CHECK(pat_check(q, sizes[k]));
        CHECK(ht_heap_free(h, 0, q));
        expect_invalid(h, q);
    }
    end(h, &b);
}

static void double_free_main_block(void)
{
    bystanders b;
    ht_heap *h = begin(0, &b);
    REQUIRE(h != NULL);
    REQUIRE(ht_heap_set_option(h, HT_OPT_LOOKASIDE_DEPTH, 0));
    static const size_t sizes[] = {64, 5000, 20000, 300000};
    for (size_t k = 0; k < 4; k++) {
        void *p = ht_heap_alloc(h, 0, sizes[k]);
        REQUIRE(p != NULL);
        uint32_t src = free_source(h, p);
        CHECK(src == HT_SOURCE_MAINPATH || src == HT_SOURCE_SLOWPATH);
        expect_invalid(h, p);
        no_duplicates(h, sizes[k]);
        expect_invalid(h, p);
    }
    /* a main block that was coalesced with free neighbours */
    void *a = ht_heap_alloc(h, 0, 30000), *c = ht_heap_alloc(h, 0, 30000),
         *d = ht_heap_alloc(h, 0, 30000);
    REQUIRE(a && c && d);
    CHECK(ht_heap_free(h, 0, c));
    CHECK(ht_heap_free(h, 0, a));
    expect_invalid(h, a);
    expect_invalid(h, c);
    CHECK(ht_heap_free(h, 0, d));
    expect_invalid(h, d);
    end(h, &b);
}

static void double_free_large_block(void)
{
    bystanders b;
    ht_heap *h = begin(0, &b);
    REQUIRE(h != NULL);
    void *p = ht_heap_alloc(h, 0, 2 * MiB);
    REQUIRE(p != NULL);
    CHECK_EQ_U(free_source(h, p), HT_SOURCE_SLOWPATH);
    expect_invalid(h, p); /* the mapping is cached */
    /* a cached mapping may be handed out again at the same address; two at once differ */
    void *x = ht_heap_alloc(h, 0, 2 * MiB), *y = ht_heap_alloc(h, 0, 2 * MiB);
    CHECK(x != NULL && y != NULL && x != y);
    if (x && y) {
        memset(x, 1, 2 * MiB);
        memset(y, 2, 2 * MiB);
    }
    CHECK(ht_heap_free(h, 0, x));
    CHECK(ht_heap_free(h, 0, y));
    expect_invalid(h, x);
    expect_invalid(h, y);
    ht_heap_compact(h, 0); /* unmapped now */
    expect_invalid(h, x);
    expect_invalid(h, y);
    expect_invalid(h, p);
    end(h, &b);
}

/* ---- interior, foreign and wild addresses --------------------------------------------- */

static void interior_pointers(void)
{
    for (int lfh = 0; lfh < 2; lfh++) {
        bystanders b;
        ht_heap *h = begin(lfh ? HT_HEAP_ENABLE_LFH : 0, &b);
        REQUIRE(h != NULL);
        static const size_t sizes[] = {48, 64, 100, 1000, 3000, 16384, 20000, 300000, 2 * MiB};
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            size_t s = sizes[k];
            char *p = ht_heap_alloc(h, 0, s);
            REQUIRE(p != NULL);
            pat_fill(p, s);
            expect_invalid(h, p + 1);
            expect_invalid(h, p + 8);
            expect_invalid(h, p + 16);
            expect_invalid(h, p + s / 2);
            expect_invalid(h, p + (s / 2 & ~(size_t)15));
            expect_invalid(h, p + s - 1);
            CHECK(pat_check(p, s));
            CHECK_EQ_U(ht_heap_size(h, 0, p), s);
            CHECK(ht_heap_free(h, 0, p)); /* the real start still frees */
        }
        /* an aligned block: the addresses between the aligned start and the block's header */
        char *al = ht_heap_alloc_aligned(h, 0, 100, 4096);
        REQUIRE(al != NULL);
        expect_invalid(h, al + 16);
        expect_invalid_nb(h, &b, al - 16); /* its header, or whatever lies before it */
        expect_invalid_nb(h, &b, al - 32);
        CHECK(ht_heap_free(h, 0, al));
        end(h, &b);
    }
}

static void other_heaps_block(void)
{
    bystanders b;
    ht_heap *h = begin(0, &b);
    REQUIRE(h != NULL);
    ht_heap *h2 = ht_heap_create(HT_HEAP_ENABLE_LFH, 0, 0);
    REQUIRE(h2 != NULL);
    static const size_t sizes[] = {16, 64, 1000, 20000, 2 * MiB};
    void *q[5];
    for (int k = 0; k < 5; k++) {
        q[k] = ht_heap_alloc(h2, 0, sizes[k]);
        REQUIRE(q[k] != NULL);
        pat_fill(q[k], sizes[k]);
    }
    for (int k = 0; k < 5; k++)
        expect_invalid(h, q[k]);
    /* and the other way round: h's bystanders are not h2's */
    for (int i = 0; i < NBY; i += 5)
        expect_invalid(h2, b.p[i]);
    ht_heap_stats st2;
    ht_heap_get_stats(h2, &st2);
    CHECK_EQ_U(st2.live_blocks, 5);
    CHECK_EQ_U(st2.n_invalid, (NBY + 4) / 5 * 3);
    for (int k = 0; k < 5; k++) {
        CHECK(pat_check(q[k], sizes[k]));
        CHECK(ht_heap_free(h2, 0, q[k]));
    }
    /* the process heap's block, too */
    void *ph = ht_heap_alloc(ht_process_heap(), 0, 64);
    REQUIRE(ph != NULL);
    expect_invalid(h, ph);
    CHECK(ht_heap_free(ht_process_heap(), 0, ph));
    rec_check_stats(h2);
    CHECK(ht_heap_destroy(h2));
    end(h, &b);
}

static void libc_malloc_pointer(void)
{
    bystanders b;
    ht_heap *h = begin(0, &b);
    REQUIRE(h != NULL);
    static const size_t sizes[] = {16, 100, 100000, 4 * MiB};
    for (int k = 0; k < 4; k++) {
        char *m = malloc(sizes[k]);
        REQUIRE(m != NULL);
        memset(m, 0x77, sizes[k]);
        expect_invalid(h, m);
        expect_invalid(h, m + 16);
        CHECK(m[0] == 0x77 && m[sizes[k] - 1] == 0x77);
        free(m); /* libc's heap is intact */
    }
    end(h, &b);
}

static void stack_addresses(void)
{
    bystanders b;
    ht_heap *h = begin(0, &b);
    REQUIRE(h != NULL);
    _Alignas(64) char buf[512];
    memset(buf, 0x42, sizeof buf);
    expect_invalid(h, &buf[0]);
    expect_invalid(h, &buf[1]);
    expect_invalid(h, &buf[16]);
    expect_invalid(h, &buf[256]);
    int local = 5;
    expect_invalid(h, &local);
    CHECK(buf[0] == 0x42 && buf[511] == 0x42 && local == 5);
    end(h, &b);
}

static void null_adjacent_addresses(void)
{
    bystanders b;
    ht_heap *h = begin(0, &b);
    REQUIRE(h != NULL);
    static const uintptr_t addrs[] = {0x1, 0x8, 0x10, 0x20, 0xff0, 0x1000, 0x10000, 0x400000};
    for (size_t k = 0; k < sizeof addrs / sizeof addrs[0]; k++)
        expect_invalid(h, addrs[k]);
    end(h, &b);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static void random_addresses(void)
{
    bystanders b;
    ht_heap *h = begin(0, &b);
    REQUIRE(h != NULL);
    for (int i = 0; i < 600; i++) {
        uint64_t r = rng();
        uintptr_t a;
        switch (i % 6) {
        case 0:
            a = (uintptr_t)r;
            break; /* anything */
        case 1:
            a = (uintptr_t)(r | 0x8000000000000000ull);
            break; /* kernel half */
        case 2:
            a = (uintptr_t)((r & 0x0000ffffffffffffull) | 0x0000800000000000ull);
            break;
            /* non-canonical, above 47 bits */
        case 3:
            a = (uintptr_t)(r & 0x00007ffffffffff0ull);
            break; /* user, aligned */
        case 4:
            a = (uintptr_t)(r & 0x00007fffffffffffull);
            break; /* user */
        default:
            a = (uintptr_t)(UINT64_MAX - (r & 0xffff));
            break; /* near the top */
        }
        if (a == 0)
            a = 16;
        expect_invalid(h, a);
    }
    end(h, &b);
}

static int cmp_uptr(const void *x, const void *y)
{
    uintptr_t a = *(const uintptr_t *)x, c = *(const uintptr_t *)y;
    return a < c ? -1 : a > c;
}

static bool in_sorted(const uintptr_t *v, size_t n, uintptr_t a)
{
    return bsearch(&a, v, n, sizeof *v, cmp_uptr) != NULL;
}

/* Random addresses inside the heap's own regions, next to live blocks, that are not block
 * starts: the live bitmap must say no, without touching uncommitted pages. */
static void random_addresses_inside_heap(void)
{
    for (int lfh = 0; lfh < 2; lfh++) {
        bystanders b;
        ht_heap *h = begin(lfh ? HT_HEAP_ENABLE_LFH : 0, &b);
        REQUIRE(h != NULL);
        enum { NB = 400 };
        static void *ps[NB];
        for (int i = 0; i < NB; i++) {
            uint64_t r = rng();
            size_t s = r % 7 == 0 ? 16385 + r % 100000 : r % 3000;
            ps[i] = ht_heap_alloc(h, 0, s);
            REQUIRE(ps[i] != NULL);
        }
        for (int i = 0; i < NB; i += 3) { /* some freed: to lookaside lists and back */
            CHECK(ht_heap_free(h, 0, ps[i]));
            ps[i] = NULL;
        }
        /* the live set and the regions, from a walk */
        static uintptr_t live[NB + NBY + 16];
        size_t nl = 0;
        uintptr_t reg[64];
        size_t regsz[64], nr = 0;
        ht_heap_entry e;
        memset(&e, 0, sizeof e);
        while (ht_heap_walk(h, &e)) {
            if ((e.state & HT_ENTRY_BUSY) && nl < sizeof live / sizeof live[0])
                live[nl++] = (uintptr_t)e.address;
            size_t k;
            for (k = 0; k < nr; k++)
                if (reg[k] == (uintptr_t)e.region)
                    break;
            if (k == nr && nr < 64) {
                reg[nr] = (uintptr_t)e.region;
                regsz[nr++] = e.region_size;
            }
        }
        CHECK_EQ_U(nl, NB - (NB + 2) / 3 + NBY);
        qsort(live, nl, sizeof live[0], cmp_uptr);
        REQUIRE(nr > 0);
        unsigned probes = 0;
        /* near live blocks */
        for (int i = 0; i < NB && probes < 1500; i++) {
            if (ps[i] == NULL)
                continue;
            static const intptr_t offs[] = {1, 15, 16, 32, 48, -16, -32, -1, 4096};
            for (size_t k = 0; k < sizeof offs / sizeof offs[0]; k++) {
                uintptr_t a = (uintptr_t)ps[i] + (uintptr_t)offs[k];
                if (in_sorted(live, nl, a))
                    continue;
                expect_invalid(h, a);
                probes++;
            }
        }
        /* anywhere in the regions, 16-aligned and not */
        for (int i = 0; i < 1500; i++) {
            uint64_t r = rng();
            size_t k = r % nr;
            uintptr_t a = reg[k] + (uintptr_t)((r >> 8) % regsz[k]);
            if (i % 2 == 0)
                a &= ~(uintptr_t)15;
            if (a == 0 || in_sorted(live, nl, a))
                continue;
            expect_invalid(h, a);
            probes++;
        }
        CHECK(probes > 2000);
        for (int i = 0; i < NB; i++)
            if (ps[i] != NULL)
                CHECK(ht_heap_free(h, 0, ps[i]));
        end(h, &b);
    }
}

static void past_and_inside_large_blocks(void)
{
    bystanders b;
    ht_heap *h = begin(0, &b);
    REQUIRE(h != NULL);
    char *p = ht_heap_alloc(h, 0, 2 * MiB);
    REQUIRE(p != NULL);
    pat_fill(p, 2 * MiB);
    size_t u = ht_heap_usable_size(h, p);
    expect_invalid_nb(h, &b, p + 2 * MiB); /* one past */
    expect_invalid_nb(h, &b, p + u);       /* one past what it can hold */
    expect_invalid_nb(h, &b, p + 4 * MiB);
    expect_invalid_nb(h, &b, p - 16); /* its header */
    expect_invalid_nb(h, &b, p - 4096);
    expect_invalid_nb(h, &b, p + MiB);
    CHECK(pat_check(p, 2 * MiB));
    /* a freed large block, cached and then unmapped */
    char *q = ht_heap_alloc(h, 0, 3 * MiB);
    REQUIRE(q != NULL);
    CHECK(ht_heap_free(h, 0, q));
    expect_invalid_nb(h, &b, q);
    expect_invalid_nb(h, &b, q + 1);
    expect_invalid_nb(h, &b, q + 4096);
    expect_invalid_nb(h, &b, q + MiB);
    ht_heap_compact(h, 0);
    expect_invalid_nb(h, &b, q);
    expect_invalid_nb(h, &b, q + 4096);
    expect_invalid_nb(h, &b, q + MiB);
    CHECK(pat_check(p, 2 * MiB));
    CHECK(ht_heap_free(h, 0, p));
    expect_invalid(h, p);
    expect_invalid_nb(h, &b, p + 2 * MiB);
    end(h, &b);
}

/* invalid operations on a heap with NO_SERIALIZE behave the same */
static void invalid_on_unserialized_heap(void)
{
    bystanders b;
    ht_heap *h = begin(HT_HEAP_NO_SERIALIZE, &b);
    REQUIRE(h != NULL);
    void *p = ht_heap_alloc(h, 0, 64);
    REQUIRE(p != NULL);
    CHECK(ht_heap_free(h, 0, p));
    expect_invalid(h, p);
    expect_invalid(h, (char *)b.p[3] + 16);
    end(h, &b);
}

/* docs/heap.md "Stats": by_source[s].n_alloc/bytes_alloc count HEAP_ALLOC and HEAP_REALLOC
 * events with Source s (bytes = Size / NewSize) — the INVALID realloc included; only
 * bytes_free is said to be 0 for INVALID. */
static void invalid_realloc_counts_new_size(void)
{
    ht_heap *h = begin(0, NULL);
    REQUIRE(h != NULL);
    void *p = ht_heap_alloc(h, 0, 64);
    REQUIRE(p != NULL);
    CHECK(ht_heap_free(h, 0, p));
    ht_heap_stats s0, s1;
    ht_heap_get_stats(h, &s0);
    CHECK(ht_heap_realloc(h, 0, p, 1234) == NULL);
    CHECK(ht_heap_realloc(h, 0, (char *)p + 16, 766) == NULL);
    ht_heap_get_stats(h, &s1);
    CHECK_EQ_U(s1.by_source[5].n_alloc, s0.by_source[5].n_alloc + 2);
    CHECK_EQ_U(s1.by_source[5].bytes_alloc, s0.by_source[5].bytes_alloc + 2000);
    CHECK_EQ_U(s1.n_invalid, s0.n_invalid + 2);
    end(h, NULL);
}

/* ---- two threads free the same block at once ------------------------------------------ */

typedef struct race {
    ht_heap *h;
    pthread_barrier_t start, done;
    void *volatile block;
    volatile int stop;
    int ok[2], err[2];
} race;
static race R;

static void *race_thread(void *arg)
{
    int me = (int)(intptr_t)arg;
    for (;;) {
        pthread_barrier_wait(&R.start);
        if (R.stop)
            break;
        errno = 0;
        R.ok[me] = ht_heap_free(R.h, 0, R.block);
        R.err[me] = errno;
        pthread_barrier_wait(&R.done);
    }
    return NULL;
}

static void double_free_race(void)
{
    REQUIRE(rec_begin() == 0);
    R.h = ht_heap_create(0, 0, 0);
    REQUIRE(R.h != NULL);
    pthread_barrier_init(&R.start, NULL, 3);
    pthread_barrier_init(&R.done, NULL, 3);
    R.stop = 0;
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        REQUIRE(pthread_create(&t[i], NULL, race_thread, (void *)(intptr_t)i) == 0);
    enum { ITER = 10000 };
    unsigned bad = 0;
    for (int it = 0; it < ITER; it++) {
        size_t s = it % 100 == 99 ? 2 * MiB : it % 3 == 0 ? 20000 : it % 3 == 1 ? 64 : 1000;
        R.block = ht_heap_alloc(R.h, 0, s);
        if (R.block == NULL) {
            bad++;
            R.block = (void *)16;
        }
        pthread_barrier_wait(&R.start);
        pthread_barrier_wait(&R.done);
        int wins = R.ok[0] + R.ok[1];
        int loser_einval = (R.ok[0] ? R.err[1] : R.err[0]) == EINVAL;
        if (wins != 1 || !loser_einval) {
            if (bad < 10)
                fprintf(stderr, "  iteration %d (size %zu): %d frees succeeded\n", it, s, wins);
            bad++;
        }
    }
    R.stop = 1;
    pthread_barrier_wait(&R.start);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    CHECK_EQ_U(bad, 0);
    pthread_barrier_destroy(&R.start);
    pthread_barrier_destroy(&R.done);
    ht_heap_stats st;
    ht_heap_get_stats(R.h, &st);
    CHECK_EQ_U(st.n_invalid, ITER);
    CHECK_EQ_U(st.live_blocks, 0);
    CHECK_EQ_U(rec_count_of(R.h, HT_EVENT_HEAP_FREE, 0), 2 * ITER);
    CHECK(ht_heap_validate(R.h, 0, NULL));
    /* the heap is sound afterwards: no block handed out twice */
    static void *ps[2000];
    for (int i = 0; i < 2000; i++) {
        ps[i] = ht_heap_alloc(R.h, 0, i % 2 ? 64 : 1000);
        REQUIRE(ps[i] != NULL);
        pat_fill(ps[i], i % 2 ? 64 : 1000);
    }
    for (int i = 0; i < 2000; i++) {
        CHECK(pat_check(ps[i], i % 2 ? 64 : 1000));
        CHECK(ht_heap_free(R.h, 0, ps[i]));
    }
    rec_check_stats(R.h);
    CHECK(ht_heap_destroy(R.h));
    rec_end();
}

TEST_MAIN(TEST(double_free_lookaside_block), TEST(double_free_lfh_block),
          TEST(double_free_main_block), TEST(double_free_large_block), TEST(interior_pointers),
          TEST(other_heaps_block), TEST(libc_malloc_pointer), TEST(stack_addresses),
          TEST(null_adjacent_addresses), TEST(random_addresses), TEST(random_addresses_inside_heap),
          TEST(past_and_inside_large_blocks), TEST(invalid_on_unserialized_heap),
          TEST(invalid_realloc_counts_new_size), TEST(double_free_race))
