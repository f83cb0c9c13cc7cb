/* test_model.c — model-based randomized test of the heap API against a reference model.
 *
 * Five heaps at once (four private heaps with different flags and options, and the process
 * heap) get a seeded random mix of alloc, alloc_aligned, realloc (also in-place-only and
 * NULL), zeroing, free, size/usable/validate queries, invalid calls (double frees, interior
 * pointers, other heaps' blocks, foreign pointers, bad alignments, impossible sizes), compact
 * and destroy+recreate. A model keeps every live block (heap, address, size, alignment, fill
 * pattern) in a treap ordered by address across all heaps, and after every operation the
 * return values, errno, alignment, non-overlap, contents and ht_heap_size are checked; every
 * FULL_EVERY operations (and at the end) each heap's stats, ht_heap_validate(heap, 0, NULL)
 * and a full ht_heap_walk are compared with the model.
 *
 * During the middle part of the run a trace consumer is attached: every operation must log
 * exactly the events the contract (docs/heap.md) prescribes, with Sources consistent with the
 * path rules (LFH activation, lookaside LIFO and depth, large blocks, decommit), and all events
 * are replayed into a second, event-derived model of the live blocks, which must equal the
 * model after the rundown and at the end of tracing.
 *
 * Reproduce a run: test_model <seed>   (or HT_SEED=<seed>); HT_MODEL_OPS=<n> sets the length
 * (the run, including where tracing starts and stops, depends on both seed and length).
 * Every failure prints the seed and the index of the operation; HT_MODEL_VERBOSE=<op> prints
 * every operation and traced event from that index on. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* also set by the build */
#endif
#include "harness.h"

#include <heaptrail.h>

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* ---- configuration ------------------------------------------------------------------------ */

#define NH           5                     /* heaps in the model: 4 private + the process heap */
#define MAXBLK       (1u << 17)            /* model capacity (live blocks over all heaps) */
#define BYTES_CAP    ((uint64_t)160 << 20) /* above this many live bytes: no new big blocks */
#define DEFAULT_OPS  2000000ull
#define FULL_EVERY   50000ull
#define DEFAULT_SEED 20240607ull

#define KiB      ((size_t)1 << 10)
#define MiB      ((size_t)1 << 20)
#define BIT(s)   (1u << (s))
#define SRC_ANY  (BIT(1) | BIT(2) | BIT(3) | BIT(4))
#define OPT_KEEP ((size_t)-2) /* heap configuration: leave the option at its default */

/* ---- failure reporting -------------------------------------------------------------------- */

static uint64_t g_seed, g_op, g_verbose_from = UINT64_MAX; /* HT_MODEL_VERBOSE=<op> */
static unsigned long g_fail_printed;

__attribute__((format(printf, 3, 4))) static void model_fail(int line, const char *cond,
                                                             const char *fmt, ...)
{
    static unsigned per_line[8192];
    harness_failures_++;
    if (line >= 0 && line < 8192 && per_line[line]++ >= 3) {
        if (per_line[line] == 4)
            fprintf(stderr, "test_model.c:%d: (further failures of this check not printed)\n",
                    line);
        return;
    }
    if (g_fail_printed++ >= 100) {
        if (g_fail_printed == 101)
            fprintf(stderr, "test_model: further failures are not printed\n");
        return;
    }
    fprintf(stderr, "test_model.c:%d: seed=%" PRIu64 " op=%" PRIu64 ": CHECK failed: %s -- ", line,
            g_seed, g_op, cond);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}
#define MCHECK(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond))                                                                               \
            model_fail(__LINE__, #cond, __VA_ARGS__);                                              \
    } while (0)
#define MFAIL(...) model_fail(__LINE__, "false", __VA_ARGS__)

/* what the run exercised (printed at the end, so a run that checks nothing shows) */
static struct {
    uint64_t alloc, aligned, realloc, realloc_moved, realloc_ip, ipo_fail, must_ip, free_, invalid,
        lifo, probes, untraced, destroys, compacts, full, src_alloc[8], src_free[8];
} cov;

/* ---- PRNG: xoshiro256** seeded by splitmix64 ---------------------------------------------- */

static uint64_t g_rs[4];

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl64(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rnd(void)
{
    uint64_t result = rotl64(g_rs[1] * 5, 7) * 9, t = g_rs[1] << 17;
    g_rs[2] ^= g_rs[0];
    g_rs[3] ^= g_rs[1];
    g_rs[1] ^= g_rs[2];
    g_rs[0] ^= g_rs[3];
    g_rs[2] ^= t;
    g_rs[3] = rotl64(g_rs[3], 45);
    return result;
}

static uint64_t rnd_below(uint64_t n)
{
    return n ? rnd() % n : 0;
}

static void rnd_seed(uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        g_rs[i] = splitmix64(&x);
}

/* ---- block contents: a position-dependent pattern, one phase per block ---------------------- */

#define PAT_N 4096u
static unsigned char g_pat[2 * PAT_N];
static const unsigned char g_zero[4096];

static void pat_init(void)
{
    uint64_t x = 0xC0FFEEull;
    for (unsigned i = 0; i < PAT_N; i++)
        g_pat[i] = g_pat[i + PAT_N] = (unsigned char)splitmix64(&x);
}

static void pat_fill(unsigned char *p, unsigned phase, size_t from, size_t to)
{
    while (from < to) {
        size_t ph = (phase + from) % PAT_N, k = to - from;
        if (k > PAT_N)
            k = PAT_N;
        memcpy(p + from, g_pat + ph, k);
        from += k;
    }
}

/* first offset in [from, to) that does not hold the pattern, or SIZE_MAX */
static size_t pat_bad(const unsigned char *p, unsigned phase, size_t from, size_t to)
{
    while (from < to) {
        size_t ph = (phase + from) % PAT_N, k = to - from;
        if (k > PAT_N)
            k = PAT_N;
        if (memcmp(p + from, g_pat + ph, k) != 0) {
            for (size_t i = 0; i < k; i++)
                if (p[from + i] != g_pat[ph + i])
                    return from + i;
        }
        from += k;
    }
    return SIZE_MAX;
}

static size_t zero_bad(const unsigned char *p, size_t from, size_t to)
{
    while (from < to) {
        size_t k = to - from < sizeof g_zero ? to - from : sizeof g_zero;
        if (memcmp(p + from, g_zero, k) != 0) {
            for (size_t i = 0; i < k; i++)
                if (p[from + i] != 0)
                    return from + i;
        }
        from += k;
    }
    return SIZE_MAX;
}

/* ---- size classes ------------------------------------------------------------------------- */

static size_t g_cls[64];
static unsigned g_ncls;

static unsigned class_of(size_t n)
{
    if (n == 0)
        n = 1;
    unsigned lo = 0, hi = g_ncls; /* smallest index with g_cls[i] >= n */
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        if (g_cls[mid] >= n)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* ---- model blocks and the address-ordered treap over all heaps ------------------------------ */

enum { K_SMALL = 0, K_MAIN = 1, K_LARGE = 2 };

typedef struct blk {
    uintptr_t addr;
    size_t size, usable, align;
    uint64_t id, prio;
    struct blk *l, *r;
    uint32_t hidx;     /* index in its heap's live[] */
    int heap;          /* model heap index */
    int kind;          /* K_* the path rules say the block was served by */
    unsigned src;      /* Source that served it (known while tracing), 0 = unknown */
    unsigned pat;      /* pattern phase */
    size_t req_size;   /* size of the request that made it (for its lookaside class) */
    bool kind_certain; /* false after an in-place resize the contract leaves open */
    bool resized;      /* changed size in place since allocated */
    bool pinned;       /* not ours (process heap baseline) */
} blk;

static blk g_pool[MAXBLK];
static blk *g_free_blk;
static uint32_t g_pool_top, g_nblk;
static uint64_t g_next_id, g_total_bytes;
static blk *g_root;

static blk *blk_new(void)
{
    blk *b = g_free_blk;
    if (b)
        g_free_blk = b->l;
    else if (g_pool_top < MAXBLK)
        b = &g_pool[g_pool_top++];
    else
        return NULL;
    memset(b, 0, sizeof *b);
    b->id = ++g_next_id;
    b->prio = rnd();
    uint64_t x = b->id;
    b->pat = (unsigned)(splitmix64(&x) % PAT_N);
    g_nblk++;
    return b;
}

static void blk_del(blk *b)
{
    b->l = g_free_blk;
    b->addr = 0;
    g_free_blk = b;
    g_nblk--;
}

static blk *t_merge(blk *a, blk *b)
{
    if (!a)
        return b;
    if (!b)
        return a;
    if (a->prio > b->prio) {
        a->r = t_merge(a->r, b);
        return a;
    }
    b->l = t_merge(a, b->l);
    return b;
}

/* *l: keys < key, *r: keys >= key */
static void t_split(blk *t, uintptr_t key, blk **l, blk **r)
{
    if (!t) {
        *l = *r = NULL;
        return;
    }
    if (t->addr < key) {
        t_split(t->r, key, &t->r, r);
        *l = t;
    } else {
        t_split(t->l, key, l, &t->l);
        *r = t;
    }
}

static blk *t_find(uintptr_t a)
{
    blk *t = g_root;
    while (t && t->addr != a)
        t = a < t->addr ? t->l : t->r;
    return t;
}

static blk *t_pred(uintptr_t a) /* greatest key < a */
{
    blk *t = g_root, *best = NULL;
    while (t) {
        if (t->addr < a) {
            best = t;
            t = t->r;
        } else
            t = t->l;
    }
    return best;
}

static blk *t_succ(uintptr_t a) /* least key > a */
{
    blk *t = g_root, *best = NULL;
    while (t) {
        if (t->addr > a) {
            best = t;
            t = t->l;
        } else
            t = t->r;
    }
    return best;
}

static void t_insert(blk *b)
{
    blk *l, *r;
    b->l = b->r = NULL;
    t_split(g_root, b->addr, &l, &r);
    g_root = t_merge(t_merge(l, b), r);
}

static void t_remove(uintptr_t a)
{
    blk *l, *m, *r;
    t_split(g_root, a, &l, &r);
    t_split(r, a + 1, &m, &r);
    g_root = t_merge(l, r);
    (void)m;
}

static size_t extent(const blk *b) /* bytes the block surely owns */
{
    size_t e = b->usable > b->size ? b->usable : b->size;
    return e ? e : 1;
}

/* ---- heaps -------------------------------------------------------------------------------- */

typedef struct mheap {
    const char *name;
    unsigned flags;
    size_t initial;
    bool process;
    size_t o_lookaside, o_lfh, o_large, o_decommit; /* options set at creation (OPT_KEEP) */
    ht_heap *h;
    blk **live;
    uint32_t nlive, target;
    uint64_t live_bytes;
    blk *base[64]; /* process heap: blocks live before the test (not ours) */
    uint32_t nbase;
    uint64_t base_bytes;
    ht_heap_stats st0; /* stats at the start (process heap) or zero */
    /* expected counters since st0 */
    uint64_t a_n, a_b, f_n, f_b, inv_free, inv_realloc, inv_realloc_b;
    size_t lt, depth_opt, lfh_thr;
    /* path knowledge while tracing */
    bool hist_known; /* every allocation since creation was observed */
    bool lfh_active[64];
    uint32_t mp_lo[64], mp_hi[64];
    bool committed_known;
    uint64_t committed_ev;
} mheap;

static mheap H[NH] = {
    {.name = "heap0(flags 0, decommit 256K)",
     .flags = 0,
     .initial = 0,
     .o_lookaside = OPT_KEEP,
     .o_lfh = OPT_KEEP,
     .o_large = OPT_KEEP,
     .o_decommit = 256 * KiB},
    {.name = "heap1(ENABLE_LFH, large 256K)",
     .flags = HT_HEAP_ENABLE_LFH,
     .initial = 0,
     .o_lookaside = OPT_KEEP,
     .o_lfh = OPT_KEEP,
     .o_large = 256 * KiB,
     .o_decommit = OPT_KEEP},
    {.name = "heap2(NO_SERIALIZE)",
     .flags = HT_HEAP_NO_SERIALIZE,
     .initial = 1 * MiB,
     .o_lookaside = OPT_KEEP,
     .o_lfh = OPT_KEEP,
     .o_large = OPT_KEEP,
     .o_decommit = OPT_KEEP},
    {.name = "heap3(lookaside 2, lfh 3)",
     .flags = 0,
     .initial = 0,
     .o_lookaside = 2,
     .o_lfh = 3,
     .o_large = OPT_KEEP,
     .o_decommit = OPT_KEEP},
    {.name = "process",
     .process = true,
     .o_lookaside = OPT_KEEP,
     .o_lfh = OPT_KEEP,
     .o_large = OPT_KEEP,
     .o_decommit = OPT_KEEP},
};
static blk *g_live_arr[NH][MAXBLK];

static mheap *heap_by_handle(uintptr_t h)
{
    for (int i = 0; i < NH; i++)
        if (H[i].h && (uintptr_t)H[i].h == h)
            return &H[i];
    return NULL;
}

static int kind_of(const mheap *m, size_t size, size_t align)
{
    if (size >= m->lt)
        return K_LARGE;
    if (align <= 16 && size <= 16384)
        return K_SMALL;
    return K_MAIN;
}

static size_t lookaside_depth(const mheap *m, unsigned c)
{
    if (m->depth_opt != SIZE_MAX)
        return m->depth_opt;
    size_t d = 65536 / g_cls[c];
    return d < 4 ? 4 : d > 128 ? 128 : d;
}

/* ---- recently freed addresses (candidates for double frees) -------------------------------- */

#define DEAD_N 512
static uintptr_t g_dead[DEAD_N];
static unsigned g_dead_n, g_dead_pos;

static void dead_push(uintptr_t a)
{
    g_dead[g_dead_pos] = a;
    g_dead_pos = (g_dead_pos + 1) % DEAD_N;
    if (g_dead_n < DEAD_N)
        g_dead_n++;
}

/* ---- tracing: consumer, event-derived model ----------------------------------------------- */

#define EVCAP (1u << 18)
static ht_event g_ev[EVCAP];
static size_t g_nev, g_ev_overflow, g_ev_badctx;
static int g_ctx_token;
static bool g_tracing;
static uint64_t g_ev_seq, g_ev_ts, g_ev_total;
static uint32_t g_tid;

static void consumer(const ht_event *e, void *ctx)
{
    if (ctx != &g_ctx_token)
        g_ev_badctx++;
    if (g_nev < EVCAP)
        g_ev[g_nev++] = *e;
    else
        g_ev_overflow++;
}

#define EM_BITS 18
#define EM_CAP  (1u << EM_BITS)
typedef struct em_ent {
    uintptr_t addr, heap;
    uint64_t size;
} em_ent;
static em_ent g_em[EM_CAP], g_em_tmp[EM_CAP];
static size_t g_em_n;

static size_t em_hash(uintptr_t a)
{
    return (size_t)(((uint64_t)a * 0x9E3779B97F4A7C15ull) >> (64 - EM_BITS));
}

static em_ent *em_find(uintptr_t a)
{
    for (size_t i = em_hash(a);; i = (i + 1) & (EM_CAP - 1)) {
        if (g_em[i].addr == a)
            return &g_em[i];
        if (g_em[i].addr == 0)
            return NULL;
    }
}

static void em_put(uintptr_t a, uintptr_t heap, uint64_t size)
{
    if (a == 0 || g_em_n >= EM_CAP / 4 * 3) {
        MFAIL("event model: cannot insert address %#lx (n=%zu)", (unsigned long)a, g_em_n);
        return;
    }
    size_t i = em_hash(a);
    while (g_em[i].addr != 0)
        i = (i + 1) & (EM_CAP - 1);
    g_em[i] = (em_ent){a, heap, size};
    g_em_n++;
}

static void em_erase(em_ent *e)
{
    size_t i = (size_t)(e - g_em), j = i;
    for (;;) {
        j = (j + 1) & (EM_CAP - 1);
        if (g_em[j].addr == 0)
            break;
        size_t k = em_hash(g_em[j].addr);
        bool stays = (i <= j) ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            g_em[i] = g_em[j];
            i = j;
        }
    }
    g_em[i].addr = 0;
    g_em_n--;
}

static void em_clear(void)
{
    memset(g_em, 0, sizeof g_em);
    g_em_n = 0;
}

static void em_drop_heap(uintptr_t heap)
{
    size_t n = 0;
    for (size_t i = 0; i < EM_CAP; i++)
        if (g_em[i].addr && g_em[i].heap != heap)
            g_em_tmp[n++] = g_em[i];
    em_clear();
    for (size_t i = 0; i < n; i++)
        em_put(g_em_tmp[i].addr, g_em_tmp[i].heap, g_em_tmp[i].size);
}

static const char *ev_name(unsigned t)
{
    switch (t) {
    case HT_EVENT_HEAP_CREATE:
        return "CREATE";
    case HT_EVENT_HEAP_ALLOC:
        return "ALLOC";
    case HT_EVENT_HEAP_REALLOC:
        return "REALLOC";
    case HT_EVENT_HEAP_DESTROY:
        return "DESTROY";
    case HT_EVENT_HEAP_FREE:
        return "FREE";
    case HT_EVENT_HEAP_EXPAND:
        return "EXPAND";
    case HT_EVENT_HEAP_CONTRACT:
        return "CONTRACT";
    default:
        return "?";
    }
}

/* Replays one event into the event-derived model, checking the per-thread invariants. */
static void ev_apply(const ht_event *e)
{
    g_ev_total++;
    MCHECK(e->tid == g_tid, "event tid %u, this thread is %u", e->tid, g_tid);
    MCHECK(e->sequence == g_ev_seq + 1, "event sequence %" PRIu64 " after %" PRIu64, e->sequence,
           g_ev_seq);
    g_ev_seq = e->sequence;
    MCHECK(e->timestamp_ns >= g_ev_ts, "event timestamps go back");
    g_ev_ts = e->timestamp_ns;
    mheap *m = heap_by_handle(e->heap_handle);
    switch (e->type) {
    case HT_EVENT_HEAP_CREATE:
        if (m) {
            m->committed_ev = e->create.committed_space;
            m->committed_known = true;
        }
        break;
    case HT_EVENT_HEAP_DESTROY:
        em_drop_heap(e->heap_handle);
        if (m)
            m->committed_known = false;
        break;
    case HT_EVENT_HEAP_EXPAND:
    case HT_EVENT_HEAP_CONTRACT: {
        bool ex = e->type == HT_EVENT_HEAP_EXPAND;
        MCHECK(e->expand.size > 0, "%s of 0 bytes", ev_name(e->type));
        if (m && m->committed_known) {
            uint64_t want =
                ex ? m->committed_ev + e->expand.size : m->committed_ev - e->expand.size;
            MCHECK(e->expand.committed_space == want,
                   "%s: %s size %" PRIu64 " committed %" PRIu64 " -> %" PRIu64 " (expected %" PRIu64
                   ")",
                   m->name, ev_name(e->type), (uint64_t)e->expand.size, m->committed_ev,
                   (uint64_t)e->expand.committed_space, want);
        }
        if (m) {
            m->committed_ev = e->expand.committed_space;
            m->committed_known = true;
        }
        break;
    }
    case HT_EVENT_HEAP_ALLOC: {
        if (e->alloc.source == HT_SOURCE_INVALID)
            break;
        MCHECK(e->alloc.source >= 1 && e->alloc.source <= 4, "ALLOC source %u", e->alloc.source);
        if (em_find(e->alloc.address))
            MFAIL("event model: ALLOC of %#lx, which is allocated already (no FREE between)",
                  (unsigned long)e->alloc.address);
        else
            em_put(e->alloc.address, e->heap_handle, e->alloc.size);
        break;
    }
    case HT_EVENT_HEAP_FREE: {
        if (e->free.source == HT_SOURCE_INVALID)
            break;
        MCHECK(e->free.source >= 1 && e->free.source <= 4, "FREE source %u", e->free.source);
        em_ent *x = em_find(e->free.address);
        MCHECK(x && x->heap == e->heap_handle,
               "event model: FREE of %#lx, which is not allocated in that heap",
               (unsigned long)e->free.address);
        if (x)
            em_erase(x);
        break;
    }
    case HT_EVENT_HEAP_REALLOC: {
        if (e->realloc.source == HT_SOURCE_INVALID)
            break;
        MCHECK(e->realloc.source >= 1 && e->realloc.source <= 4, "REALLOC source %u",
               e->realloc.source);
        em_ent *x = em_find(e->realloc.old_address);
        MCHECK(x && x->heap == e->heap_handle,
               "event model: REALLOC of %#lx, which is not allocated in that heap",
               (unsigned long)e->realloc.old_address);
        if (x) {
            MCHECK(x->size == e->realloc.old_size,
                   "REALLOC OldSize %" PRIu64 ", allocated with %" PRIu64,
                   (uint64_t)e->realloc.old_size, x->size);
            em_erase(x);
        }
        if (em_find(e->realloc.new_address))
            MFAIL("event model: REALLOC to %#lx, which is allocated already",
                  (unsigned long)e->realloc.new_address);
        else
            em_put(e->realloc.new_address, e->heap_handle, e->realloc.new_size);
        break;
    }
    default:
        MFAIL("unknown event type %#x", e->type);
    }
}

typedef struct opev {
    int nmain, nexp, ncon, nforeign, nrundown;
    ht_event ev; /* the last main (non EXPAND/CONTRACT) event */
} opev;

/* Takes (and replays) the events the last operation logged. */
static void ev_take(opev *o, const ht_heap *h)
{
    memset(o, 0, sizeof *o);
    MCHECK(g_ev_overflow == 0, "event buffer overflow");
    MCHECK(g_ev_badctx == 0, "consumer got a wrong ctx");
    g_ev_overflow = g_ev_badctx = 0;
    if (!g_tracing) {
        MCHECK(g_nev == 0, "%zu events delivered while no session runs", g_nev);
        g_nev = 0;
        return;
    }
    for (size_t i = 0; i < g_nev; i++) {
        const ht_event *e = &g_ev[i];
        if (g_op >= g_verbose_from)
            printf("  op %" PRIu64 " event %s heap %#lx flags %#x: %#lx %#lx %" PRIu64 " %" PRIu64
                   " src %u\n",
                   g_op, ev_name(e->type), (unsigned long)e->heap_handle, e->flags,
                   (unsigned long)e->realloc.new_address, (unsigned long)e->realloc.old_address,
                   (uint64_t)e->realloc.new_size, (uint64_t)e->realloc.old_size,
                   e->type == HT_EVENT_HEAP_ALLOC  ? e->alloc.source
                   : e->type == HT_EVENT_HEAP_FREE ? e->free.source
                                                   : e->realloc.source);
        ev_apply(e);
        if (e->flags & HT_EVENT_RUNDOWN)
            o->nrundown++;
        if (e->type == HT_EVENT_HEAP_EXPAND || e->type == HT_EVENT_HEAP_CONTRACT) {
            if (e->type == HT_EVENT_HEAP_EXPAND)
                o->nexp++;
            else
                o->ncon++;
            if (e->heap_handle != (uintptr_t)h)
                o->nforeign++;
        } else {
            o->nmain++;
            o->ev = *e;
        }
    }
    g_nev = 0;
    MCHECK(o->nrundown == 0, "%d RUNDOWN-flagged events from an operation", o->nrundown);
}

static void ev_none(const ht_heap *h, const char *what)
{
    opev o;
    ev_take(&o, h);
    MCHECK(o.nmain + o.nexp + o.ncon == 0, "%s logged %d event(s) (last main type %s)", what,
           o.nmain + o.nexp + o.ncon, o.nmain ? ev_name(o.ev.type) : "-");
}

/* Expects exactly one main event of type (plus EXPAND/CONTRACT of the same heap). */
static bool ev_one(opev *o, const ht_heap *h, unsigned type, const char *what)
{
    ev_take(o, h);
    if (!g_tracing)
        return false;
    bool ok = o->nmain == 1 && o->ev.type == type;
    MCHECK(ok, "%s: expected one %s event, got %d main event(s) (last %s)", what, ev_name(type),
           o->nmain, o->nmain ? ev_name(o->ev.type) : "-");
    MCHECK(o->nforeign == 0, "%s: EXPAND/CONTRACT events of another heap", what);
    if (ok) {
        MCHECK(o->ev.heap_handle == (uintptr_t)h, "%s: event heap %#lx, op heap %p", what,
               (unsigned long)o->ev.heap_handle, (const void *)h);
        MCHECK(o->ev.flags == 0 || type == HT_EVENT_HEAP_FREE, "%s: event flags %#x", what,
               o->ev.flags);
    }
    return ok;
}

/* ---- path rules (docs/heap.md) ------------------------------------------------------------ */

static unsigned alloc_mask(const mheap *m, int kind, size_t size)
{
    if (kind == K_LARGE)
        return BIT(4);
    if (kind == K_MAIN)
        return BIT(3) | BIT(4);
    unsigned c = class_of(size), mask = SRC_ANY;
    if (m->lfh_active[c])
        mask &= ~BIT(3); /* an active class never takes the main path */
    else if (m->hist_known && m->mp_hi[c] < m->lfh_thr)
        mask &= ~BIT(2); /* not active yet: no LFH */
    return mask;
}

/* LFH activation bookkeeping after an allocation (or moved realloc) with Source src. */
static void note_alloc_source(mheap *m, int kind, size_t size, unsigned src, bool realloc_moved)
{
    if (size > 16384 || size >= m->lt || kind == K_LARGE)
        return;
    unsigned c = class_of(size);
    if (kind == K_SMALL && src == HT_SOURCE_LOWFRAG) {
        m->lfh_active[c] = true;
        return;
    }
    if (m->lfh_active[c] || !m->hist_known || (src != 3 && src != 4))
        return;
    /* mp_lo: main-path allocations that surely count; mp_hi: those that may count */
    bool plain = kind == K_SMALL && !realloc_moved;
    bool inactive_certain = m->mp_hi[c] < m->lfh_thr;
    if (plain && (src == HT_SOURCE_MAINPATH || inactive_certain))
        m->mp_lo[c]++;
    m->mp_hi[c]++;
    if (m->mp_lo[c] >= m->lfh_thr)
        m->lfh_active[c] = true;
}

static unsigned free_mask(const blk *b)
{
    if (!b->kind_certain)
        return SRC_ANY;
    return b->kind == K_LARGE ? BIT(4) : b->kind == K_MAIN ? (BIT(3) | BIT(4)) : SRC_ANY;
}

/* ---- model bookkeeping -------------------------------------------------------------------- */

static void check_neighbours(const blk *b)
{
    blk *p = t_pred(b->addr), *s = t_succ(b->addr);
    if (p)
        MCHECK(p->addr + extent(p) <= b->addr,
               "block %#lx+%zu (heap %d) overlaps block %#lx+%zu (usable %zu, heap %d)",
               (unsigned long)b->addr, extent(b), b->heap, (unsigned long)p->addr, p->size,
               p->usable, p->heap);
    if (s)
        MCHECK(b->addr + extent(b) <= s->addr,
               "block %#lx+%zu (heap %d) overlaps block %#lx+%zu (usable %zu, heap %d)",
               (unsigned long)b->addr, extent(b), b->heap, (unsigned long)s->addr, s->size,
               s->usable, s->heap);
}

static void model_insert(int hi, blk *b)
{
    mheap *m = &H[hi];
    b->heap = hi;
    check_neighbours(b);
    t_insert(b);
    b->hidx = m->nlive;
    m->live[m->nlive++] = b;
    m->live_bytes += b->size;
    g_total_bytes += b->size;
}

static void model_remove(blk *b)
{
    mheap *m = &H[b->heap];
    t_remove(b->addr);
    uint32_t i = b->hidx;
    m->live[i] = m->live[--m->nlive];
    m->live[i]->hidx = i;
    m->live_bytes -= b->size;
    g_total_bytes -= b->size;
}

static blk *pick_block(int hi)
{
    mheap *m = &H[hi];
    return m->nlive ? m->live[rnd_below(m->nlive)] : NULL;
}

static blk *pick_any_block(void)
{
    for (int tries = 0; tries < 8; tries++) {
        blk *b = pick_block((int)rnd_below(NH));
        if (b)
            return b;
    }
    return NULL;
}

static void verify_contents(const blk *b, const char *when)
{
    size_t bad = pat_bad((const unsigned char *)b->addr, b->pat, 0, b->size);
    MCHECK(bad == SIZE_MAX,
           "%s: block %#lx (heap %s, size %zu, id %" PRIu64 ") corrupted at offset %zu", when,
           (unsigned long)b->addr, H[b->heap].name, b->size, b->id, bad);
}

/* ---- operations --------------------------------------------------------------------------- */

enum { VIA_ALLOC, VIA_ALIGNED, VIA_REALLOC_NULL };

/* Allocates and checks a block; want_addr/force_mask: expectations of the lookaside probes. */
static blk *do_alloc(int hi, size_t size, size_t align, unsigned flags, int via,
                     uintptr_t want_addr, unsigned force_mask)
{
    mheap *m = &H[hi];
    void *p;
    errno = 0;
    if (via == VIA_ALIGNED)
        p = ht_heap_alloc_aligned(m->h, flags, size, align);
    else if (via == VIA_REALLOC_NULL)
        p = ht_heap_realloc(m->h, flags, NULL, size);
    else
        p = ht_heap_alloc(m->h, flags, size);
    int err = errno;
    if (p == NULL) {
        MFAIL("%s: %s(size %zu, align %zu, flags %#x) failed, errno %d", m->name,
              via == VIA_ALIGNED ? "alloc_aligned"
              : via              ? "realloc(NULL)"
                                 : "alloc",
              size, align, flags, err);
        opev o;
        ev_take(&o, m->h);
        return NULL;
    }
    uintptr_t a = (uintptr_t)p;
    size_t eff = align > 16 ? align : 16;
    if (via != VIA_ALIGNED)
        align = 16;
    MCHECK(a % eff == 0, "%s: block %p of %zu bytes not aligned to %zu", m->name, p, size, eff);
    if (want_addr)
        MCHECK(a == want_addr, "%s: lookaside should return %#lx (most recently freed), got %p",
               m->name, (unsigned long)want_addr, p);
    blk *dup = t_find(a);
    if (dup) {
        MFAIL("%s: alloc returned %p, which is live (heap %s, size %zu)", m->name, p,
              H[dup->heap].name, dup->size);
        opev o;
        ev_take(&o, m->h);
        return NULL; /* not tracked: the model would be inconsistent */
    }
    size_t us = ht_heap_usable_size(m->h, p);
    MCHECK(us != (size_t)-1 && us >= size, "%s: usable %zu < size %zu", m->name, us, size);
    size_t sz = ht_heap_size(m->h, 0, p);
    MCHECK(sz == size, "%s: ht_heap_size %zu != %zu", m->name, sz, size);
    MCHECK(ht_heap_validate(m->h, 0, p), "%s: new block %p not valid", m->name, p);
    if (flags & HT_HEAP_ZERO_MEMORY) {
        size_t bad = zero_bad(p, 0, size);
        MCHECK(bad == SIZE_MAX, "%s: ZERO_MEMORY block %p (size %zu) has a nonzero byte at %zu",
               m->name, p, size, bad);
    }
    blk *b = blk_new();
    if (!b) {
        MFAIL("model pool exhausted");
        ht_heap_free(m->h, 0, p);
        opev o;
        ev_take(&o, m->h);
        return NULL;
    }
    b->addr = a;
    b->size = b->req_size = size;
    b->usable = us == (size_t)-1 ? size : us;
    b->align = align;
    b->kind = kind_of(m, size, align);
    b->kind_certain = true;
    model_insert(hi, b);
    pat_fill(p, b->pat, 0, size);
    m->a_n++;
    m->a_b += size;

    opev o;
    if (ev_one(&o, m->h, HT_EVENT_HEAP_ALLOC, m->name)) {
        const ht_event *e = &o.ev;
        MCHECK(e->alloc.address == a && e->alloc.size == size,
               "%s: ALLOC event %#lx/%" PRIu64 ", call returned %p/%zu", m->name,
               (unsigned long)e->alloc.address, (uint64_t)e->alloc.size, p, size);
        unsigned src = e->alloc.source, mask = alloc_mask(m, b->kind, size);
        if (force_mask)
            mask &= force_mask;
        MCHECK(src < 32 && (BIT(src) & mask),
               "%s: alloc(size %zu, align %zu) kind %d Source %u, allowed mask %#x (class "
               "active %d, mp %u..%u)",
               m->name, size, align, b->kind, src, mask,
               b->kind == K_SMALL ? m->lfh_active[class_of(size)] : -1,
               b->kind == K_SMALL ? m->mp_lo[class_of(size)] : 0,
               b->kind == K_SMALL ? m->mp_hi[class_of(size)] : 0);
        if (b->kind != K_LARGE)
            MCHECK((o.nexp > 0) == (src == HT_SOURCE_SLOWPATH),
                   "%s: alloc(size %zu) Source %u with %d EXPAND event(s)", m->name, size, src,
                   o.nexp);
        b->src = src;
        cov.src_alloc[src & 7]++;
        note_alloc_source(m, b->kind, size, src, false);
    }
    if (via == VIA_ALIGNED)
        cov.aligned++;
    else
        cov.alloc++;
    if (want_addr)
        cov.lifo++;
    return b;
}

/* Frees a model block; returns the Source of its FREE event (0 when not tracing). */
static unsigned do_free(blk *b, unsigned force_mask)
{
    mheap *m = &H[b->heap];
    verify_contents(b, "before free");
    void *p = (void *)b->addr;
    errno = 0;
    bool ok = ht_heap_free(m->h, 0, p);
    int err = errno;
    MCHECK(ok, "%s: free(%p) of a live block (size %zu) failed, errno %d", m->name, p, b->size,
           err);
    MCHECK(!ht_heap_validate(m->h, 0, p), "%s: freed block %p still valid", m->name, p);
    unsigned src = 0;
    opev o;
    if (ev_one(&o, m->h, HT_EVENT_HEAP_FREE, m->name)) {
        const ht_event *e = &o.ev;
        src = e->free.source;
        cov.src_free[src & 7]++;
        unsigned mask = free_mask(b);
        if (force_mask)
            mask &= force_mask;
        MCHECK(e->free.address == b->addr, "%s: FREE event address %#lx, freed %p", m->name,
               (unsigned long)e->free.address, p);
        MCHECK(e->flags == 0, "%s: FREE event flags %#x", m->name, e->flags);
        MCHECK(src < 32 && (BIT(src) & mask),
               "%s: free of block (size %zu, kind %d, served by %u) Source %u, allowed %#x",
               m->name, b->size, b->kind, b->src, src, mask);
        MCHECK(o.nexp == 0, "%s: free logged EXPAND", m->name);
        if (o.ncon > 0)
            MCHECK(src == HT_SOURCE_SLOWPATH, "%s: free decommitted (CONTRACT) but Source %u",
                   m->name, src);
        if (b->kind_certain && b->kind != K_LARGE && src == HT_SOURCE_SLOWPATH)
            MCHECK(o.ncon > 0, "%s: free of a non-large block SLOWPATH without CONTRACT", m->name);
    }
    if (ok) {
        cov.free_++;
        m->f_n++;
        m->f_b += b->size;
        model_remove(b);
        dead_push(b->addr);
        blk_del(b);
    }
    return src;
}

static void do_realloc(blk *b, size_t n, unsigned flags)
{
    mheap *m = &H[b->heap];
    verify_contents(b, "before realloc");
    uintptr_t olda = b->addr;
    size_t old = b->size, u = ht_heap_usable_size(m->h, (void *)olda);
    MCHECK(u != (size_t)-1 && u >= old, "%s: usable %zu of live block of %zu", m->name, u, old);
    bool ipo = (flags & HT_HEAP_REALLOC_IN_PLACE_ONLY) != 0;
    bool large = b->kind == K_LARGE;
    /* what the contract says must be done in place */
    bool must_ip;
    if (!b->kind_certain)
        must_ip = false;
    else if (ipo)
        must_ip = large ? (n <= u && n >= m->lt / 2) : n <= u;
    else if (b->kind == K_SMALL)
        must_ip = u / 2 < n && n <= u;
    else if (b->kind == K_MAIN)
        must_ip = n <= old && n > 16384 && old > 16384;
    else
        must_ip = n <= u && n >= m->lt / 2;

    errno = 0;
    void *p = ht_heap_realloc(m->h, flags, (void *)olda, n);
    int err = errno;
    cov.realloc++;
    cov.must_ip += must_ip;
    if (p == NULL) {
        cov.ipo_fail++;
        if (ipo) {
            MCHECK(err == ENOMEM, "%s: in-place-only realloc failed with errno %d", m->name, err);
            MCHECK(!must_ip,
                   "%s: in-place-only realloc %zu -> %zu (usable %zu, kind %d) failed, the "
                   "contract says it is done in place",
                   m->name, old, n, u, b->kind);
        } else {
            MFAIL("%s: realloc %zu -> %zu failed, errno %d", m->name, old, n, err);
        }
        MCHECK(ht_heap_validate(m->h, 0, (void *)olda), "%s: block gone after failed realloc",
               m->name);
        MCHECK(ht_heap_size(m->h, 0, (void *)olda) == old, "%s: size changed by a failed realloc",
               m->name);
        verify_contents(b, "after failed realloc");
        ev_none(m->h, "failed realloc");
        return;
    }
    uintptr_t a = (uintptr_t)p;
    bool moved = a != olda;
    if (moved)
        cov.realloc_moved++;
    else
        cov.realloc_ip++;
    if (ipo)
        MCHECK(!moved, "%s: in-place-only realloc moved the block", m->name);
    if (must_ip)
        MCHECK(!moved,
               "%s: realloc %zu -> %zu (usable %zu, kind %d, align %zu) moved; the contract "
               "says in place",
               m->name, old, n, u, b->kind, b->align);
    size_t keep = old < n ? old : n;
    size_t bad = pat_bad(p, b->pat, 0, keep);
    MCHECK(bad == SIZE_MAX, "%s: realloc %zu -> %zu (%s) lost the contents at offset %zu", m->name,
           old, n, moved ? "moved" : "in place", bad);
    if ((flags & HT_HEAP_ZERO_MEMORY) && n > old) {
        bad = zero_bad(p, old, n);
        MCHECK(bad == SIZE_MAX, "%s: ZERO_MEMORY realloc %zu -> %zu: nonzero byte at %zu", m->name,
               old, n, bad);
    }
    if (moved) {
        MCHECK(a % 16 == 0, "%s: moved block %p not 16-byte aligned", m->name, p);
        MCHECK(!ht_heap_validate(m->h, 0, (void *)olda), "%s: old block %#lx still valid", m->name,
               (unsigned long)olda);
    }
    blk *dup = moved ? t_find(a) : NULL;
    if (dup) {
        MFAIL("%s: realloc returned %p, which is live (heap %s)", m->name, p, H[dup->heap].name);
        return;
    }
    /* update the model */
    int okind = b->kind;
    model_remove(b);
    if (moved)
        dead_push(olda);
    b->addr = a;
    b->size = n;
    if (moved) {
        b->align = 16;
        b->kind = kind_of(m, n, 16);
        b->kind_certain = true;
        b->resized = false;
        b->req_size = n;
    } else {
        b->resized = true;
        if ((b->kind == K_SMALL && n > 16384) || (b->kind != K_LARGE && n >= m->lt) ||
            (b->kind == K_MAIN && n <= 16384 && b->align <= 16))
            b->kind_certain = false;
    }
    size_t us = ht_heap_usable_size(m->h, p);
    MCHECK(us != (size_t)-1 && us >= n, "%s: usable %zu < size %zu after realloc", m->name, us, n);
    b->usable = us == (size_t)-1 ? n : us;
    model_insert(b->heap, b);
    size_t sz = ht_heap_size(m->h, 0, p);
    MCHECK(sz == n, "%s: ht_heap_size %zu after realloc to %zu", m->name, sz, n);
    MCHECK(ht_heap_validate(m->h, 0, p), "%s: reallocated block not valid", m->name);
    if (n > old)
        pat_fill(p, b->pat, old, n);
    m->a_n++;
    m->a_b += n;
    if (moved) {
        m->f_n++;
        m->f_b += old;
    }
    opev o;
    if (ev_one(&o, m->h, HT_EVENT_HEAP_REALLOC, m->name)) {
        const ht_event *e = &o.ev;
        MCHECK(e->realloc.new_address == a && e->realloc.old_address == olda &&
                   e->realloc.new_size == n && e->realloc.old_size == old,
               "%s: REALLOC event new %#lx old %#lx sizes %" PRIu64 "/%" PRIu64
               ", call %p <- %#lx, %zu <- %zu",
               m->name, (unsigned long)e->realloc.new_address,
               (unsigned long)e->realloc.old_address, (uint64_t)e->realloc.new_size,
               (uint64_t)e->realloc.old_size, p, (unsigned long)olda, n, old);
        unsigned src = e->realloc.source, mask;
        if (moved)
            mask = alloc_mask(m, b->kind, n);
        else if (!b->kind_certain)
            mask = SRC_ANY;
        else
            mask = okind == K_LARGE  ? BIT(4)
                   : okind == K_MAIN ? (BIT(3) | BIT(4))
                                     : (BIT(2) | BIT(3) | BIT(4));
        MCHECK(src < 32 && (BIT(src) & mask),
               "%s: realloc %zu -> %zu (%s, kind %d -> %d) Source %u, allowed %#x", m->name, old, n,
               moved ? "moved" : "in place", okind, b->kind, src, mask);
        if (moved) {
            b->src = src;
            note_alloc_source(m, b->kind, n, src, true);
        } else {
            b->src = 0;
        }
    } else {
        b->src = 0;
    }
}

/* ---- size distributions ------------------------------------------------------------------- */

static size_t edge_size(const mheap *m)
{
    switch (rnd_below(10)) {
    case 0:
        return 0;
    case 1:
        return 16384;
    case 2:
        return 16385;
    case 3:
        return m->lt - 1;
    case 4:
        return m->lt;
    case 5:
        return m->lt / 2 + rnd_below(2);
    default: {
        size_t s = g_cls[rnd_below(g_ncls)] + (size_t)rnd_below(3);
        return s - 1;
    }
    }
}

static size_t rand_size(const mheap *m, bool big_ok)
{
    uint64_t r = rnd_below(10000);
    size_t s;
    if (r < 7300)
        s = rnd_below(257);
    else if (r < 9350)
        s = rnd_below(16385);
    else if (r < 9550)
        s = edge_size(m);
    else if (r < 9990)
        s = rnd_below(256 * KiB + 1);
    else
        s = rnd_below(4 * MiB + 1);
    if (!big_ok && s > 16384)
        s = rnd_below(16385);
    return s;
}

static size_t rand_align(void)
{
    uint64_t r = rnd_below(100);
    if (r < 55)
        return (size_t)1 << rnd_below(9); /* 1 .. 256 */
    if (r < 95)
        return (size_t)1 << rnd_below(17); /* .. 64 KiB */
    return (size_t)1 << rnd_below(21);     /* .. 1 MiB */
}

static bool big_ok(void)
{
    return g_total_bytes < BYTES_CAP;
}

static unsigned rand_zero_flag(void)
{
    return rnd_below(100) < 15 ? HT_HEAP_ZERO_MEMORY : 0;
}

/* ---- heap life cycle ---------------------------------------------------------------------- */

static void heap_open(int hi)
{
    mheap *m = &H[hi];
    if (m->process) {
        m->h = ht_process_heap();
        MCHECK(m->h != NULL, "process heap is NULL");
    } else {
        errno = 0;
        m->h = ht_heap_create(m->flags, m->initial, 0);
        MCHECK(m->h != NULL, "%s: create failed, errno %d", m->name, errno);
        if (!m->h)
            return;
        size_t v = 0;
        const struct {
            ht_heap_option opt;
            size_t val;
        } set[] = {{HT_OPT_LOOKASIDE_DEPTH, m->o_lookaside},
                   {HT_OPT_LFH_THRESHOLD, m->o_lfh},
                   {HT_OPT_LARGE_THRESHOLD, m->o_large},
                   {HT_OPT_DECOMMIT_THRESHOLD, m->o_decommit}};
        for (size_t i = 0; i < sizeof set / sizeof set[0]; i++) {
            if (set[i].val == OPT_KEEP)
                continue;
            MCHECK(ht_heap_set_option(m->h, set[i].opt, set[i].val), "%s: set option %d", m->name,
                   (int)set[i].opt);
            MCHECK(ht_heap_get_option(m->h, set[i].opt, &v) && v == set[i].val,
                   "%s: option %d reads %zu after setting %zu", m->name, (int)set[i].opt, v,
                   set[i].val);
        }
    }
    size_t v = 0;
    MCHECK(ht_heap_get_option(m->h, HT_OPT_LARGE_THRESHOLD, &v), "get large");
    m->lt = v ? v : MiB;
    MCHECK(ht_heap_get_option(m->h, HT_OPT_LOOKASIDE_DEPTH, &v), "get lookaside");
    m->depth_opt = v;
    MCHECK(ht_heap_get_option(m->h, HT_OPT_LFH_THRESHOLD, &v), "get lfh");
    m->lfh_thr = v;
    m->live = g_live_arr[hi];
    m->nlive = 0;
    m->live_bytes = 0;
    m->a_n = m->a_b = m->f_n = m->f_b = m->inv_free = m->inv_realloc = m->inv_realloc_b = 0;
    m->target = 2000;
    bool all_active = (m->flags & HT_HEAP_ENABLE_LFH) || m->lfh_thr == 0;
    for (unsigned c = 0; c < 64; c++) {
        m->lfh_active[c] = all_active;
        m->mp_lo[c] = m->mp_hi[c] = 0;
    }
    m->hist_known = !m->process && g_tracing;
    memset(&m->st0, 0, sizeof m->st0);
    ht_heap_stats st;
    memset(&st, 0xA5, sizeof st);
    ht_heap_get_stats(m->h, &st);
    if (m->process) {
        m->st0 = st;
    } else {
        bool zero = st.live_blocks == 0 && st.live_bytes == 0 && st.n_invalid == 0;
        for (int s = 0; s < 7; s++)
            zero = zero && st.by_source[s].n_alloc == 0 && st.by_source[s].n_free == 0 &&
                   st.by_source[s].bytes_alloc == 0 && st.by_source[s].bytes_free == 0;
        MCHECK(zero, "%s: stats of a new heap are not zero", m->name);
    }
    if (!m->process) {
        opev o;
        if (ev_one(&o, m->h, HT_EVENT_HEAP_CREATE, "create")) {
            MCHECK(o.ev.create.flags == m->flags, "CREATE flags %#x, heap made with %#x",
                   o.ev.create.flags, m->flags);
            MCHECK(o.nexp == 0 && o.ncon == 0, "create logged EXPAND/CONTRACT");
        }
    }
}

static void drop_heap_blocks(int hi)
{
    mheap *m = &H[hi];
    while (m->nlive) {
        blk *b = m->live[m->nlive - 1];
        if (rnd_below(4) == 0)
            dead_push(b->addr);
        model_remove(b);
        blk_del(b);
    }
}

static void heap_destroy_recreate(int hi)
{
    mheap *m = &H[hi];
    ht_heap *old = m->h;
    cov.destroys++;
    errno = 0;
    bool ok = ht_heap_destroy(old);
    MCHECK(ok, "%s: destroy failed, errno %d", m->name, errno);
    opev o;
    if (ev_one(&o, old, HT_EVENT_HEAP_DESTROY, "destroy"))
        MCHECK(o.nexp == 0, "destroy logged EXPAND");
    drop_heap_blocks(hi);
    m->h = NULL;
    /* the stale handle is unknown now */
    errno = 0;
    MCHECK(!ht_heap_validate(old, 0, NULL) && errno == EINVAL, "validate(destroyed heap)");
    errno = 0;
    MCHECK(ht_heap_alloc(old, 0, 16) == NULL && errno == EINVAL, "alloc(destroyed heap)");
    errno = 0;
    MCHECK(!ht_heap_destroy(old) && errno == EINVAL, "destroy(destroyed heap)");
    errno = 0;
    MCHECK(ht_heap_compact(old, 0) == 0 && errno == EINVAL, "compact(destroyed heap)");
    {
        /* unknown heaps log nothing that could change the event model */
        opev x;
        ev_take(&x, NULL);
        MCHECK(x.nmain == 0 || x.ev.type == HT_EVENT_HEAP_FREE ||
                   x.ev.type == HT_EVENT_HEAP_REALLOC,
               "calls on a destroyed heap logged %s", ev_name(x.ev.type));
    }
    heap_open(hi);
}

/* ---- full comparison of a heap with the model ---------------------------------------------- */

typedef struct went {
    uintptr_t a;
    size_t sz;
    unsigned st, src;
    blk *b;
} went;
#define WCAP (1u << 20)
static went g_w[WCAP];
static went g_ms[MAXBLK + 64];

static int went_cmp(const void *x, const void *y)
{
    uintptr_t a = ((const went *)x)->a, b = ((const went *)y)->a;
    return a < b ? -1 : a > b;
}

static void check_stats(int hi)
{
    mheap *m = &H[hi];
    ht_heap_stats st;
    memset(&st, 0xA5, sizeof st);
    ht_heap_get_stats(m->h, &st);
    const ht_heap_stats *z = &m->st0;
    MCHECK(st.live_blocks == z->live_blocks + m->nlive,
           "%s: stats live_blocks %" PRIu64 ", model %" PRIu64, m->name, st.live_blocks,
           z->live_blocks + m->nlive);
    MCHECK(st.live_bytes == z->live_bytes + m->live_bytes,
           "%s: stats live_bytes %" PRIu64 ", model %" PRIu64, m->name, st.live_bytes,
           z->live_bytes + m->live_bytes);
    MCHECK(st.n_invalid == z->n_invalid + m->inv_free + m->inv_realloc,
           "%s: stats n_invalid %" PRIu64 ", model %" PRIu64, m->name, st.n_invalid,
           z->n_invalid + m->inv_free + m->inv_realloc);
    uint64_t an = 0, ab = 0, fn = 0, fb = 0, an0 = 0, ab0 = 0, fn0 = 0, fb0 = 0;
    for (int s = 1; s <= 4; s++) {
        an += st.by_source[s].n_alloc;
        ab += st.by_source[s].bytes_alloc;
        fn += st.by_source[s].n_free;
        fb += st.by_source[s].bytes_free;
        an0 += z->by_source[s].n_alloc;
        ab0 += z->by_source[s].bytes_alloc;
        fn0 += z->by_source[s].n_free;
        fb0 += z->by_source[s].bytes_free;
    }
    MCHECK(an == an0 + m->a_n && ab == ab0 + m->a_b,
           "%s: by_source[1..4] n_alloc %" PRIu64 " bytes %" PRIu64 ", model %" PRIu64
           " bytes %" PRIu64,
           m->name, an, ab, an0 + m->a_n, ab0 + m->a_b);
    MCHECK(fn == fn0 + m->f_n && fb == fb0 + m->f_b,
           "%s: by_source[1..4] n_free %" PRIu64 " bytes %" PRIu64 ", model %" PRIu64
           " bytes %" PRIu64,
           m->name, fn, fb, fn0 + m->f_n, fb0 + m->f_b);
    const ht_source_stats *i5 = &st.by_source[HT_SOURCE_INVALID], *j5 = &z->by_source[5];
    MCHECK(i5->n_free == j5->n_free + m->inv_free && i5->bytes_free == j5->bytes_free,
           "%s: by_source[INVALID] n_free %" PRIu64 " bytes_free %" PRIu64 ", model %" PRIu64
           " / 0",
           m->name, i5->n_free, i5->bytes_free, j5->n_free + m->inv_free);
    MCHECK(i5->n_alloc == j5->n_alloc + m->inv_realloc,
           "%s: by_source[INVALID] n_alloc %" PRIu64 ", model (invalid reallocs) %" PRIu64, m->name,
           i5->n_alloc, j5->n_alloc + m->inv_realloc);
    MCHECK(i5->bytes_alloc == j5->bytes_alloc + m->inv_realloc_b,
           "%s: by_source[INVALID] bytes_alloc %" PRIu64 ", model (NewSize of invalid "
           "reallocs) %" PRIu64,
           m->name, i5->bytes_alloc, j5->bytes_alloc + m->inv_realloc_b);
    for (int s = 0; s < 7; s += 6)
        MCHECK(st.by_source[s].n_alloc == 0 && st.by_source[s].n_free == 0 &&
                   st.by_source[s].bytes_alloc == 0 && st.by_source[s].bytes_free == 0,
               "%s: by_source[%d] not zero", m->name, s);
    if (g_tracing && m->committed_known)
        MCHECK(st.committed == m->committed_ev,
               "%s: stats committed %" PRIu64 ", CommittedSpace of the latest event %" PRIu64,
               m->name, st.committed, m->committed_ev);
}

static void full_check(int hi, bool contents)
{
    mheap *m = &H[hi];
    cov.full++;
    check_stats(hi);
    MCHECK(ht_heap_validate(m->h, 0, NULL), "%s: ht_heap_validate(heap) is false", m->name);

    /* the model's blocks, sorted */
    size_t nm = 0;
    for (uint32_t i = 0; i < m->nlive; i++)
        g_ms[nm++] = (went){m->live[i]->addr, m->live[i]->size, HT_ENTRY_BUSY, 0, m->live[i]};
    for (uint32_t i = 0; i < m->nbase; i++)
        g_ms[nm++] = (went){m->base[i]->addr, m->base[i]->size, HT_ENTRY_BUSY, 0, m->base[i]};
    qsort(g_ms, nm, sizeof g_ms[0], went_cmp);

    /* the walk */
    bool serialized = !(m->flags & HT_HEAP_NO_SERIALIZE);
    if (serialized)
        MCHECK(ht_heap_lock(m->h), "%s: lock", m->name);
    ht_heap_entry e;
    memset(&e, 0, sizeof e);
    e.address = NULL;
    size_t nw = 0;
    bool capped = false;
    errno = 0;
    while (ht_heap_walk(m->h, &e)) {
        if (nw >= WCAP) {
            capped = true;
            break;
        }
        g_w[nw++] = (went){(uintptr_t)e.address, e.size, e.state, e.source, NULL};
        bool busy = (e.state & HT_ENTRY_BUSY) != 0, fr = (e.state & HT_ENTRY_FREE) != 0;
        MCHECK(busy != fr, "%s: walk entry %p state %#x", m->name, e.address, e.state);
        MCHECK(!(e.state & HT_ENTRY_LARGE) || !(e.state & HT_ENTRY_LFH),
               "%s: walk entry both LARGE and LFH", m->name);
        if (busy)
            MCHECK(e.source >= 1 && e.source <= 4, "%s: busy entry %p source %u", m->name,
                   e.address, e.source);
        else
            MCHECK(e.source == 0, "%s: free entry %p source %u", m->name, e.address, e.source);
        uintptr_t a = (uintptr_t)e.address, r = (uintptr_t)e.region;
        MCHECK(r && r <= a && a + e.size <= r + e.region_size,
               "%s: entry %p+%zu outside its region %p+%zu", m->name, e.address, e.size, e.region,
               e.region_size);
    }
    int err = errno;
    if (serialized)
        MCHECK(ht_heap_unlock(m->h), "%s: unlock", m->name);
    MCHECK(!capped, "%s: walk did not end after %u entries", m->name, WCAP);
    if (!capped)
        MCHECK(err == ENOENT, "%s: walk ended with errno %d", m->name, err);
    qsort(g_w, nw, sizeof g_w[0], went_cmp);

    /* busy + free entries do not overlap; busy entries == the model */
    size_t j = 0, nbusy = 0;
    int shown = 0;
    for (size_t i = 0; i < nw; i++) {
        const went *w = &g_w[i];
        if (i + 1 < nw) {
            size_t ext = (w->st & HT_ENTRY_BUSY) && w->sz == 0 ? 1 : w->sz;
            MCHECK(w->a + ext <= g_w[i + 1].a,
                   "%s: walk entries overlap: %#lx+%zu (state %#x) and %#lx+%zu (state %#x)",
                   m->name, (unsigned long)w->a, w->sz, w->st, (unsigned long)g_w[i + 1].a,
                   g_w[i + 1].sz, g_w[i + 1].st);
        }
        if (!(w->st & HT_ENTRY_BUSY))
            continue;
        nbusy++;
        while (j < nm && g_ms[j].a < w->a) {
            if (shown++ < 5)
                MFAIL("%s: live block %#lx (size %zu) missing from the walk", m->name,
                      (unsigned long)g_ms[j].a, g_ms[j].sz);
            j++;
        }
        if (j < nm && g_ms[j].a == w->a) {
            const blk *b = g_ms[j].b;
            MCHECK(g_ms[j].sz == w->sz, "%s: walk busy %#lx size %zu, model size %zu", m->name,
                   (unsigned long)w->a, w->sz, g_ms[j].sz);
            if (!b->pinned && b->kind_certain)
                MCHECK(((w->st & HT_ENTRY_LARGE) != 0) == (b->kind == K_LARGE),
                       "%s: block %#lx size %zu kind %d, walk state %#x", m->name,
                       (unsigned long)w->a, w->sz, b->kind, w->st);
            if (!b->pinned && b->src)
                MCHECK(w->src == b->src, "%s: walk source %u of block %#lx, served by %u", m->name,
                       w->src, (unsigned long)w->a, b->src);
            j++;
        } else if (shown++ < 5) {
            MFAIL("%s: walk shows busy %#lx (size %zu) the model does not have", m->name,
                  (unsigned long)w->a, w->sz);
        }
    }
    while (j < nm) {
        if (shown++ < 5)
            MFAIL("%s: live block %#lx (size %zu) missing from the walk", m->name,
                  (unsigned long)g_ms[j].a, g_ms[j].sz);
        j++;
    }
    MCHECK(nbusy == nm, "%s: walk has %zu busy entries, model %zu live blocks", m->name, nbusy, nm);
    if (contents)
        for (uint32_t i = 0; i < m->nlive; i++)
            verify_contents(m->live[i], "full check");
    ev_none(m->h, "stats/validate/walk");
}

static void full_check_all(bool contents)
{
    for (int i = 0; i < NH; i++)
        full_check(i, contents);
}

/* event-derived live set == model live set */
static void compare_event_model(const char *when)
{
    size_t n = 0;
    int shown = 0;
    for (int hi = 0; hi < NH; hi++) {
        mheap *m = &H[hi];
        for (uint32_t k = 0; k < m->nlive + m->nbase; k++) {
            const blk *b = k < m->nlive ? m->live[k] : m->base[k - m->nlive];
            em_ent *x = em_find(b->addr);
            n++;
            if (!(x && x->heap == (uintptr_t)m->h && x->size == b->size) && shown++ < 5)
                MFAIL("%s: block %#lx (%s, size %zu): event model has %s heap %#lx size %" PRIu64,
                      when, (unsigned long)b->addr, m->name, b->size, x ? "it in" : "nothing;",
                      x ? (unsigned long)x->heap : 0ul, x ? x->size : 0);
        }
    }
    MCHECK(g_em_n == n, "%s: event model has %zu live blocks, model %zu", when, g_em_n, n);
}

/* ---- the random operations ------------------------------------------------------------- */

static void op_alloc(int hi)
{
    mheap *m = &H[hi];
    do_alloc(hi, rand_size(m, big_ok()), 0, rand_zero_flag(), VIA_ALLOC, 0, 0);
}

static void op_alloc_aligned(int hi)
{
    mheap *m = &H[hi];
    size_t al = rand_align(), s = rand_size(m, big_ok());
    if (al >= 64 * KiB && s > 256 * KiB && !big_ok())
        s %= 256 * KiB;
    do_alloc(hi, s, al, rand_zero_flag(), VIA_ALIGNED, 0, 0);
}

static void op_free(int hi)
{
    blk *b = pick_block(hi);
    if (!b)
        return;
    bool follow =
        g_tracing && b->kind == K_SMALL && b->kind_certain && !b->resized && b->req_size <= 16384;
    size_t rs = b->req_size;
    uintptr_t a = b->addr;
    unsigned src = do_free(b, 0);
    if (follow && src == HT_SOURCE_LOOKASIDE && rnd_below(2)) {
        /* LIFO: the next allocation of that class on this thread gets this block back */
        unsigned c = class_of(rs);
        size_t lo = c ? g_cls[c - 1] + 1 : 0, s = lo + rnd_below(g_cls[c] - lo + 1);
        do_alloc(hi, s, 0, rand_zero_flag(), rnd_below(4) ? VIA_ALLOC : VIA_REALLOC_NULL, a,
                 BIT(HT_SOURCE_LOOKASIDE));
    }
}

static void op_realloc(int hi)
{
    mheap *m = &H[hi];
    blk *b = pick_block(hi);
    if (!b)
        return;
    size_t old = b->size, u = b->usable > old ? b->usable : old, n;
    switch (rnd_below(10)) {
    case 0:
    case 1:
    case 2:
    case 3:
        n = rand_size(m, big_ok());
        break;
    case 4:
    case 5: {
        size_t d = (size_t)rnd_below(65);
        n = rnd_below(2) ? old + d : (old > d ? old - d : 0);
        break;
    }
    case 6:
    case 7:
    case 8:
        n = u / 2 + 1 + (size_t)rnd_below(u - u / 2);
        break;
    default:
        n = (size_t)rnd_below(old + 1);
        break;
    }
    if (n > 16384 && !big_ok() && n > old)
        n = (size_t)rnd_below(16385);
    unsigned flags = rand_zero_flag();
    if (rnd_below(100) < 20)
        flags |= HT_HEAP_REALLOC_IN_PLACE_ONLY;
    do_realloc(b, n, flags);
}

static void op_query(int hi)
{
    mheap *m = &H[hi];
    blk *b = pick_block(hi);
    if (!b)
        return;
    void *p = (void *)b->addr;
    size_t s = ht_heap_size(m->h, 0, p);
    MCHECK(s == b->size, "%s: ht_heap_size %zu, model %zu", m->name, s, b->size);
    size_t u = ht_heap_usable_size(m->h, p);
    MCHECK(u != (size_t)-1 && u >= b->size, "%s: usable %zu < %zu", m->name, u, b->size);
    MCHECK(ht_heap_validate(m->h, 0, p), "%s: live block %p not valid", m->name, p);
    int other = (hi + 1 + (int)rnd_below(NH - 1)) % NH;
    MCHECK(!ht_heap_validate(H[other].h, 0, p), "%s's block %p valid in %s", m->name, p,
           H[other].name);
    MCHECK(ht_heap_usable_size(H[other].h, p) == (size_t)-1,
           "%s's block %p has a usable size in %s", m->name, p, H[other].name);
    ev_none(m->h, "size/usable/validate of live blocks");
}

static void op_verify(void)
{
    blk *b = pick_any_block();
    if (b)
        verify_contents(b, "spot check");
}

static _Alignas(64) unsigned char g_foreign[4096];

static void op_invalid(void)
{
    uintptr_t ptr = 0;
    blk *victim = NULL;
    int hi = -1;
    const char *what = "?";
    unsigned char stack_buf[64];
    switch (rnd_below(4)) {
    case 0:
        if (g_dead_n) {
            uintptr_t a = g_dead[rnd_below(g_dead_n)];
            if (!t_find(a)) { /* not live in any heap */
                ptr = a;
                hi = (int)rnd_below(NH);
                what = "freed (double free)";
            }
        }
        break;
    case 1: {
        blk *b = pick_any_block();
        if (b && b->size >= 2) {
            size_t off = b->size > 16 && rnd_below(2) ? 16 * (1 + rnd_below((b->size - 1) / 16))
                                                      : 1 + rnd_below(b->size - 1);
            ptr = b->addr + off;
            hi = b->heap;
            victim = b;
            what = "interior";
        }
        break;
    }
    case 2: {
        blk *b = pick_any_block();
        if (b) {
            ptr = b->addr;
            hi = (b->heap + 1 + (int)rnd_below(NH - 1)) % NH;
            victim = b;
            what = "other heap's";
        }
        break;
    }
    default: {
        ptr = rnd_below(2) ? (uintptr_t)&g_foreign[16 * rnd_below(256)]
                           : (uintptr_t)stack_buf & ~(uintptr_t)15;
        hi = (int)rnd_below(NH);
        what = "foreign";
        break;
    }
    }
    if (!ptr)
        return;
    cov.invalid++;
    mheap *m = &H[hi];
    void *p = (void *)ptr;
    blk *at = t_find(ptr);
    MCHECK(!at || at->heap != hi, "model: invalid candidate is live in the heap");
    opev o;
    switch (rnd_below(6)) {
    case 0:
    case 1: {
        errno = 0;
        bool ok = ht_heap_free(m->h, 0, p);
        MCHECK(!ok && errno == EINVAL, "%s: free of a %s pointer %p returned %d errno %d", m->name,
               what, p, ok, errno);
        m->inv_free++;
        if (ev_one(&o, m->h, HT_EVENT_HEAP_FREE, "invalid free"))
            MCHECK(o.ev.free.source == HT_SOURCE_INVALID && o.ev.free.address == ptr &&
                       o.ev.flags == 0 && o.nexp + o.ncon == 0,
                   "%s: invalid free logged source %u address %#lx flags %#x", m->name,
                   o.ev.free.source, (unsigned long)o.ev.free.address, o.ev.flags);
        break;
    }
    case 2: {
        size_t n = rnd_below(300);
        unsigned fl = (rnd_below(2) ? HT_HEAP_ZERO_MEMORY : 0) |
                      (rnd_below(2) ? HT_HEAP_REALLOC_IN_PLACE_ONLY : 0);
        errno = 0;
        void *r = ht_heap_realloc(m->h, fl, p, n);
        MCHECK(r == NULL && errno == EINVAL, "%s: realloc of a %s pointer %p returned %p errno %d",
               m->name, what, p, r, errno);
        m->inv_realloc++;
        m->inv_realloc_b += n;
        if (ev_one(&o, m->h, HT_EVENT_HEAP_REALLOC, "invalid realloc"))
            MCHECK(o.ev.realloc.source == HT_SOURCE_INVALID && o.ev.realloc.new_address == 0 &&
                       o.ev.realloc.old_address == ptr && o.ev.realloc.new_size == n &&
                       o.ev.realloc.old_size == 0 && o.nexp + o.ncon == 0,
                   "%s: invalid realloc logged source %u new %#lx old %#lx sizes %" PRIu64
                   "/%" PRIu64,
                   m->name, o.ev.realloc.source, (unsigned long)o.ev.realloc.new_address,
                   (unsigned long)o.ev.realloc.old_address, (uint64_t)o.ev.realloc.new_size,
                   (uint64_t)o.ev.realloc.old_size);
        break;
    }
    case 3: {
        errno = 0;
        size_t s = ht_heap_size(m->h, 0, p);
        MCHECK(s == (size_t)-1 && errno == EINVAL, "%s: size of a %s pointer %p = %zu errno %d",
               m->name, what, p, s, errno);
        m->inv_free++;
        if (ev_one(&o, m->h, HT_EVENT_HEAP_FREE, "invalid size"))
            MCHECK(o.ev.free.source == HT_SOURCE_INVALID && o.ev.free.address == ptr &&
                       o.ev.flags == HT_EVENT_FROM_SIZE && o.nexp + o.ncon == 0,
                   "%s: invalid size logged source %u address %#lx flags %#x", m->name,
                   o.ev.free.source, (unsigned long)o.ev.free.address, o.ev.flags);
        break;
    }
    case 4:
        MCHECK(!ht_heap_validate(m->h, 0, p), "%s: validate of a %s pointer %p is true", m->name,
               what, p);
        ev_none(m->h, "validate");
        break;
    default:
        MCHECK(ht_heap_usable_size(m->h, p) == (size_t)-1, "%s: usable size of a %s pointer %p",
               m->name, what, p);
        ev_none(m->h, "usable_size");
        break;
    }
    if (victim) {
        mheap *vm = &H[victim->heap];
        MCHECK(ht_heap_validate(vm->h, 0, (void *)victim->addr),
               "%s pointer call on %s: victim block %#lx of %s no longer valid", what, m->name,
               (unsigned long)victim->addr, vm->name);
        MCHECK(ht_heap_size(vm->h, 0, (void *)victim->addr) == victim->size,
               "victim block size changed");
        verify_contents(victim, "victim of an invalid call");
        ev_none(vm->h, "victim checks");
    }
}

static void op_huge(int hi)
{
    mheap *m = &H[hi];
    void *p;
    errno = 0;
    static const char *const what[] = {"alloc(~SIZE_MAX)", "alloc(~SIZE_MAX/2)",
                                       "alloc_aligned(~SIZE_MAX, 4096)",
                                       "alloc_aligned(64, 1 << 62)"};
    unsigned k = (unsigned)rnd_below(5);
    switch (k) {
    case 0:
        p = ht_heap_alloc(m->h, rand_zero_flag(), SIZE_MAX - rnd_below(64));
        break;
    case 1:
        p = ht_heap_alloc(m->h, 0, (SIZE_MAX >> 1) + rnd_below(4096));
        break;
    case 2:
        p = ht_heap_alloc_aligned(m->h, 0, SIZE_MAX - rnd_below(4096), 4096);
        break;
    case 3:
        p = ht_heap_alloc_aligned(m->h, 0, 64, (size_t)1 << 62);
        break;
    default: {
        blk *b = pick_block(hi);
        if (!b)
            return;
        unsigned fl = rnd_below(2) ? HT_HEAP_REALLOC_IN_PLACE_ONLY : 0;
        p = ht_heap_realloc(m->h, fl, (void *)b->addr, SIZE_MAX - rnd_below(64));
        int err = errno;
        MCHECK(p == NULL && err == ENOMEM, "%s: realloc to ~SIZE_MAX returned %p errno %d", m->name,
               p, err);
        MCHECK(ht_heap_size(m->h, 0, (void *)b->addr) == b->size, "block changed");
        verify_contents(b, "after impossible realloc");
        ev_none(m->h, "failed realloc");
        return;
    }
    }
    int err = errno;
    MCHECK(p == NULL && err == ENOMEM, "%s: impossible %s returned %p errno %d", m->name, what[k],
           p, err);
    ev_none(m->h, "failed allocation");
}

static void op_bad_align(int hi)
{
    mheap *m = &H[hi];
    static const size_t bad[] = {0, 3, 24, 48, 96, MiB + 16, SIZE_MAX};
    size_t al = bad[rnd_below(sizeof bad / sizeof bad[0])];
    errno = 0;
    void *p = ht_heap_alloc_aligned(m->h, 0, 1 + rnd_below(256), al);
    MCHECK(p == NULL && errno == EINVAL, "%s: alignment %zu: %p errno %d", m->name, al, p, errno);
    ev_none(m->h, "alloc with a bad alignment");
}

static void op_compact(int hi)
{
    mheap *m = &H[hi];
    cov.compacts++;
    (void)ht_heap_compact(m->h, 0);
    opev o;
    ev_take(&o, m->h);
    MCHECK(o.nmain == 0 && o.nexp == 0 && o.nforeign == 0,
           "%s: compact logged %d main / %d EXPAND / %d foreign events", m->name, o.nmain, o.nexp,
           o.nforeign);
    MCHECK(ht_heap_validate(m->h, 0, NULL), "%s: validate(heap) false after compact", m->name);
}

/* Lookaside depth and LIFO, from an empty list: compact (empties this thread's lists), then
 * depth+2 allocations (none from the lookaside), depth+2 frees (the first depth go to the
 * lookaside, the rest do not), depth+1 allocations (the first depth pop in LIFO order). */
static void op_lookaside_probe(int hi)
{
    mheap *m = &H[hi];
    unsigned c;
    do
        c = (unsigned)rnd_below(g_ncls);
    while (m->depth_opt == SIZE_MAX && g_cls[c] < 2048);
    size_t d = lookaside_depth(m, c);
    if (d > 40 || m->nlive + d + 4 > MAXBLK / NH)
        return;
    size_t lo = c ? g_cls[c - 1] + 1 : 0;
    cov.probes++;
    op_compact(hi);
    blk *bs[48];
    uintptr_t addr[48];
    size_t n = d + 2;
    for (size_t i = 0; i < n; i++) {
        size_t s = lo + rnd_below(g_cls[c] - lo + 1);
        bs[i] = do_alloc(hi, s, 0, rand_zero_flag(), VIA_ALLOC, 0, SRC_ANY & ~BIT(1));
        if (!bs[i])
            return;
        addr[i] = bs[i]->addr;
    }
    for (size_t i = 0; i < n; i++)
        do_free(bs[i], i < d ? BIT(1) : (SRC_ANY & ~BIT(1)));
    for (size_t i = 0; i <= d; i++) {
        size_t s = lo + rnd_below(g_cls[c] - lo + 1);
        do_alloc(hi, s, 0, rand_zero_flag(), VIA_ALLOC, i < d ? addr[d - 1 - i] : 0,
                 i < d ? BIT(1) : (SRC_ANY & ~BIT(1)));
    }
}

/* With the heap's tracing off, an alloc + free logs nothing; the stats still count them. */
static void op_untraced(int hi)
{
    mheap *m = &H[hi];
    cov.untraced++;
    bool prev = ht_trace_enable_heap(m->h, false);
    MCHECK(prev, "%s: trace_enable_heap returned %d (was on)", m->name, prev);
    ht_heap_stats s0, s1, s2;
    ht_heap_get_stats(m->h, &s0);
    size_t size = rnd_below(257);
    void *p = ht_heap_alloc(m->h, 0, size);
    MCHECK(p != NULL, "%s: alloc failed", m->name);
    if (p) {
        blk probe = {.addr = (uintptr_t)p, .size = size, .usable = size, .heap = hi};
        MCHECK(!t_find((uintptr_t)p), "%s: untraced alloc returned a live address", m->name);
        check_neighbours(&probe);
        ht_heap_get_stats(m->h, &s1);
        MCHECK(ht_heap_free(m->h, 0, p), "%s: free failed", m->name);
        ht_heap_get_stats(m->h, &s2);
        unsigned asrc = 0, fsrc = 0;
        for (unsigned s = 1; s <= 5; s++) {
            if (s1.by_source[s].n_alloc == s0.by_source[s].n_alloc + 1)
                asrc = asrc ? 99 : s;
            if (s2.by_source[s].n_free == s1.by_source[s].n_free + 1)
                fsrc = fsrc ? 99 : s;
        }
        MCHECK(asrc >= 1 && asrc <= 4 && (BIT(asrc) & alloc_mask(m, K_SMALL, size)),
               "%s: untraced alloc counted under source %u", m->name, asrc);
        MCHECK(fsrc >= 1 && fsrc <= 4, "%s: untraced free counted under source %u", m->name, fsrc);
        if (asrc >= 1 && asrc <= 4)
            note_alloc_source(m, K_SMALL, size, asrc, false);
        m->a_n++;
        m->a_b += size;
        m->f_n++;
        m->f_b += size;
    }
    ev_none(m->h, "operations on a heap with tracing off");
    {
        /* its EXPAND/CONTRACT events were not logged either: take committed from the stats */
        ht_heap_stats st;
        ht_heap_get_stats(m->h, &st);
        m->committed_ev = st.committed;
    }
    prev = ht_trace_enable_heap(m->h, true);
    MCHECK(!prev, "%s: trace_enable_heap returned %d (was off)", m->name, prev);
}

/* ---- tracing phase ------------------------------------------------------------------------ */

static void trace_begin(void)
{
    g_nev = 0;
    g_ev_seq = g_ev_ts = 0;
    em_clear();
    g_tracing = true;
    ht_trace_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.consumer = consumer;
    cfg.consumer_ctx = &g_ctx_token;
    int rc = ht_trace_start(&cfg);
    MCHECK(rc == 0, "ht_trace_start returned %d", rc);
    if (rc != 0) {
        g_tracing = false;
        g_nev = 0;
        return;
    }
    /* the rundown: HEAP_CREATE for each heap, HEAP_ALLOC for each live block */
    int creates = 0, allocs = 0, other = 0, unflagged = 0;
    for (size_t i = 0; i < g_nev; i++) {
        const ht_event *e = &g_ev[i];
        ev_apply(e);
        if (!(e->flags & HT_EVENT_RUNDOWN))
            unflagged++;
        mheap *m = heap_by_handle(e->heap_handle);
        if (e->type == HT_EVENT_HEAP_CREATE) {
            creates++;
            MCHECK(m != NULL, "rundown CREATE of an unknown heap %#lx",
                   (unsigned long)e->heap_handle);
            if (m)
                MCHECK(e->create.flags == m->flags, "rundown CREATE flags %#x of %s",
                       e->create.flags, m->name);
        } else if (e->type == HT_EVENT_HEAP_ALLOC) {
            allocs++;
            MCHECK(m != NULL, "rundown ALLOC in an unknown heap");
        } else {
            other++;
        }
    }
    g_nev = 0;
    size_t nblocks = 0;
    for (int i = 0; i < NH; i++)
        nblocks += H[i].nlive + H[i].nbase;
    MCHECK(creates == NH, "rundown: %d CREATE events for %d heaps", creates, NH);
    MCHECK((size_t)allocs == nblocks, "rundown: %d ALLOC events for %zu live blocks", allocs,
           nblocks);
    MCHECK(other == 0 && unflagged == 0, "rundown: %d other events, %d without RUNDOWN", other,
           unflagged);
    compare_event_model("after the rundown");
    for (int i = 0; i < NH; i++)
        check_stats(i); /* committed == the rundown CREATE's CommittedSpace */
    rc = ht_trace_start(&cfg);
    MCHECK(rc == -EBUSY, "second ht_trace_start returned %d", rc);
    ev_none(NULL, "a refused ht_trace_start");
    /* fresh heaps whose whole history is seen: LFH activation is checked exactly */
    heap_destroy_recreate(3);
    heap_destroy_recreate(0);
}

static void trace_end(void)
{
    if (!g_tracing)
        return;
    int rc = ht_trace_stop();
    MCHECK(rc == 0, "ht_trace_stop returned %d", rc);
    opev o;
    ev_take(&o, NULL);
    MCHECK(o.nmain + o.nexp + o.ncon == 0, "ht_trace_stop logged events");
    compare_event_model("at the end of tracing");
    g_tracing = false;
    for (int i = 0; i < NH; i++)
        H[i].hist_known = false;
    /* no consumer calls after stop */
    void *p = ht_heap_alloc(H[0].h, 0, 24);
    MCHECK(p != NULL, "alloc");
    if (p) {
        MCHECK(ht_heap_free(H[0].h, 0, p), "free");
        H[0].a_n++;
        H[0].a_b += 24;
        H[0].f_n++;
        H[0].f_b += 24;
    }
    MCHECK(g_nev == 0, "consumer called after ht_trace_stop");
    g_nev = 0;
}

/* ---- the run ------------------------------------------------------------------------------ */

static uint64_t env_u64(const char *name, uint64_t dflt)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return dflt;
    return strtoull(s, NULL, 0);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void step(void)
{
    int hi = (int)rnd_below(NH);
    mheap *m = &H[hi];
    bool full = m->nlive >= m->target || g_nblk + 64 >= MAXBLK;
    uint64_t r = rnd_below(100000);
    if (g_op >= g_verbose_from)
        printf("op %" PRIu64 ": heap %d r %" PRIu64 " live %u\n", g_op, hi, r, m->nlive);
    if (r < 30000) {
        if (full)
            op_free(hi);
        else
            op_alloc(hi);
    } else if (r < 35000) {
        if (full)
            op_free(hi);
        else
            op_alloc_aligned(hi);
    } else if (r < 48000) {
        op_realloc(hi);
    } else if (r < 76000) {
        op_free(hi);
    } else if (r < 81000) {
        op_query(hi);
    } else if (r < 85000) {
        op_invalid();
    } else if (r < 86000) {
        if (full)
            op_free(hi);
        else
            do_alloc(hi, rand_size(m, big_ok()), 0, rand_zero_flag(), VIA_REALLOC_NULL, 0, 0);
    } else if (r < 86500) {
        errno = 0;
        MCHECK(ht_heap_free(m->h, 0, NULL), "free(NULL) returned false");
        ev_none(m->h, "free(NULL)");
    } else if (r < 86700) {
        op_huge(hi);
    } else if (r < 86900) {
        op_bad_align(hi);
    } else if (r < 86950) {
        op_compact(hi);
    } else if (r < 86960) {
        if (!m->process)
            heap_destroy_recreate(hi);
    } else if (r < 87060) {
        if (g_tracing)
            op_lookaside_probe(hi);
    } else if (r < 87110) {
        if (g_tracing)
            op_untraced(hi);
    } else if (r < 87200) {
        m->target = 20 + (uint32_t)rnd_below(3000);
    } else {
        op_verify();
    }
    if (g_tracing && m->h && m->committed_known) {
        /* stats.committed == CommittedSpace of the heap's latest EXPAND/CONTRACT/CREATE */
        ht_heap_stats st;
        ht_heap_get_stats(m->h, &st);
        MCHECK(st.committed == m->committed_ev,
               "%s: stats committed %" PRIu64 " after the op, latest event says %" PRIu64, m->name,
               st.committed, m->committed_ev);
        if (st.committed != m->committed_ev)
            m->committed_ev = st.committed; /* report each divergence once */
    }
}

static void model_random(void)
{
    g_tid = (uint32_t)syscall(SYS_gettid);
    uint64_t nops = env_u64("HT_MODEL_OPS", DEFAULT_OPS);
    g_verbose_from = env_u64("HT_MODEL_VERBOSE", UINT64_MAX);
    printf("test_model: seed=%" PRIu64 " ops=%" PRIu64 " (reproduce: test_model %" PRIu64
           " or HT_SEED=%" PRIu64 ")\n",
           g_seed, nops, g_seed, g_seed);
    fflush(stdout);
    rnd_seed(g_seed);
    pat_init();

    g_ncls = ht_lfh_class_count();
    REQUIRE(g_ncls == 36);
    for (unsigned i = 0; i < g_ncls; i++)
        g_cls[i] = ht_lfh_class_size(i);
    {
        /* the class table of docs/heap.md */
        size_t want[36], k = 0;
        for (size_t s = 16; s <= 128; s += 16)
            want[k++] = s;
        for (size_t p = 128; p < 16384; p *= 2)
            for (size_t q = 1; q <= 4; q++)
                want[k++] = p + p / 4 * q;
        for (unsigned i = 0; i < 36; i++)
            MCHECK(g_cls[i] == want[i], "class %u is %zu, docs say %zu", i, g_cls[i], want[i]);
    }

    /* process heap baseline: blocks live before the test are kept as pinned model blocks */
    for (int i = 0; i < NH; i++)
        heap_open(i);
    {
        mheap *pm = &H[NH - 1];
        ht_heap_entry e;
        memset(&e, 0, sizeof e);
        while (ht_heap_walk(pm->h, &e)) {
            if (!(e.state & HT_ENTRY_BUSY))
                continue;
            REQUIRE(pm->nbase < 64);
            blk *b = blk_new();
            b->addr = (uintptr_t)e.address;
            b->size = e.size;
            b->usable = ht_heap_usable_size(pm->h, e.address);
            b->pinned = true;
            b->heap = NH - 1;
            t_insert(b);
            pm->base[pm->nbase++] = b;
        }
        if (pm->nbase)
            printf("test_model: the process heap has %u blocks before the test\n", pm->nbase);
    }
    full_check_all(true);

    uint64_t t_on = nops * 35 / 100, t_off = nops * 65 / 100;
    double t0 = now_s();
    for (g_op = 0; g_op < nops; g_op++) {
        if (g_op == t_on)
            trace_begin();
        if (g_op == t_off)
            trace_end();
        step();
        if ((g_op + 1) % FULL_EVERY == 0)
            full_check_all(g_op % (FULL_EVERY * 4) == FULL_EVERY - 1);
        if (g_fail_printed >= 100) {
            fprintf(stderr, "test_model: too many failures, stopping at op %" PRIu64 "\n", g_op);
            break;
        }
    }
    trace_end();
    full_check_all(true);
    double t1 = now_s();

    /* tear down: free the process heap's blocks, destroy the private heaps */
    mheap *pm = &H[NH - 1];
    while (pm->nlive)
        do_free(pm->live[pm->nlive - 1], 0);
    full_check(NH - 1, false);
    for (int i = 0; i < NH - 1; i++) {
        MCHECK(ht_heap_destroy(H[i].h), "destroy %s", H[i].name);
        drop_heap_blocks(i);
    }
    printf("test_model: %" PRIu64 " ops in %.2f s (%.0f ops/s), %" PRIu64 " events replayed\n",
           g_op, t1 - t0, (double)g_op / (t1 - t0), g_ev_total);
    printf("test_model: exercised %" PRIu64 " allocs, %" PRIu64 " aligned, %" PRIu64
           " frees, %" PRIu64 " reallocs (%" PRIu64 " moved, %" PRIu64 " in place, %" PRIu64
           " failed, %" PRIu64 " required in place), %" PRIu64 " invalid calls, %" PRIu64
           " lookaside LIFO hits, %" PRIu64 " depth probes, %" PRIu64 " untraced, %" PRIu64
           " destroys, %" PRIu64 " compacts, %" PRIu64 " full checks\n",
           cov.alloc, cov.aligned, cov.free_, cov.realloc, cov.realloc_moved, cov.realloc_ip,
           cov.ipo_fail, cov.must_ip, cov.invalid, cov.lifo, cov.probes, cov.untraced, cov.destroys,
           cov.compacts, cov.full);
    printf("test_model: traced sources: alloc 1..4 = %" PRIu64 "/%" PRIu64 "/%" PRIu64 "/%" PRIu64
           ", free 1..4 = %" PRIu64 "/%" PRIu64 "/%" PRIu64 "/%" PRIu64 "\n",
           cov.src_alloc[1], cov.src_alloc[2], cov.src_alloc[3], cov.src_alloc[4], cov.src_free[1],
           cov.src_free[2], cov.src_free[3], cov.src_free[4]);
    if (harness_failures_)
        printf("test_model: FAILED with seed=%" PRIu64 "\n", g_seed);
}

/* Error paths of the calls the model uses, on unknown heaps and bad arguments. */
static void model_api_errors(void)
{
    errno = 0;
    CHECK(ht_heap_create(0x80000000u, 0, 0) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(!ht_heap_destroy(NULL) && errno == EINVAL);
    errno = 0;
    CHECK(!ht_heap_destroy(ht_process_heap()) && errno == EINVAL);
    CHECK(ht_process_heap() != NULL && ht_process_heap() == ht_process_heap());
    errno = 0;
    CHECK(ht_heap_alloc(NULL, 0, 16) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(!ht_heap_validate(NULL, 0, NULL) && errno == EINVAL);
    errno = 0;
    CHECK(ht_heap_compact(NULL, 0) == 0 && errno == EINVAL);
    ht_heap *h = ht_heap_create(0, 0, 0);
    REQUIRE(h != NULL);
    size_t v = 0;
    /* defaults (docs/heap.md) */
    CHECK(ht_heap_get_option(h, HT_OPT_LFH_THRESHOLD, &v) && v == 17);
    CHECK(ht_heap_get_option(h, HT_OPT_LARGE_THRESHOLD, &v) && v == MiB);
    CHECK(ht_heap_get_option(h, HT_OPT_DECOMMIT_THRESHOLD, &v) && v == 32 * MiB);
    CHECK(ht_heap_get_option(h, HT_OPT_LOOKASIDE_DEPTH, &v) && v == SIZE_MAX);
    errno = 0;
    CHECK(!ht_heap_set_option(h, HT_OPT_LARGE_THRESHOLD, 4096) && errno == EINVAL);
    CHECK(ht_heap_get_option(h, HT_OPT_LARGE_THRESHOLD, &v) && v == MiB);
    errno = 0;
    CHECK(!ht_heap_set_option(h, HT_OPT_LOOKASIDE_DEPTH, 1025) && errno == EINVAL);
    CHECK(ht_heap_get_option(h, HT_OPT_LOOKASIDE_DEPTH, &v) && v == SIZE_MAX);
    errno = 0;
    CHECK(!ht_heap_set_option(h, (ht_heap_option)99, 1) && errno == EINVAL);
    CHECK(ht_heap_free(h, 0, NULL));
    CHECK(ht_heap_destroy(h));
}

int main(int argc, char **argv)
{
    static const harness_test tests[] = {TEST(model_api_errors), TEST(model_random)};
    g_seed = env_u64("HT_SEED", DEFAULT_SEED);
    if (argc > 1 && argv[1][0] >= '0' && argv[1][0] <= '9') {
        g_seed = strtoull(argv[1], NULL, 0);
        argc = 1; /* a seed, not a test-name filter */
    }
    return harness_run(tests, sizeof tests / sizeof tests[0], argc, argv);
}
