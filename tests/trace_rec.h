/* trace_rec.h — helpers shared by the heap tests: an event recorder (a consumer that copies
 * every ht_event into a static array), Source checks that follow docs/heap.md, a replay of
 * the recorded events that is compared with ht_heap_get_stats, and fill/verify patterns.
 * Header-only, all static inline, so a test uses what it needs. Never calls malloc. */
#ifndef HT_TEST_TRACE_REC_H
#define HT_TEST_TRACE_REC_H

#include "harness.h"

#include <heaptrail.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define REC_CAP (1u << 17)

static ht_event rec_ev_[REC_CAP]; /* recorded events, in arrival order */
static atomic_uint rec_n_;        /* events offered (may exceed REC_CAP) */
static atomic_uint rec_seg6_;     /* events that carried Source SEGMENT_HEAP */

static inline uint32_t rec_gettid(void)
{
    return (uint32_t)syscall(SYS_gettid);
}

static inline uint64_t rec_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint32_t rec_source_of(const ht_event *e)
{
    switch (e->type) {
    case HT_EVENT_HEAP_ALLOC:
        return e->alloc.source;
    case HT_EVENT_HEAP_FREE:
        return e->free.source;
    case HT_EVENT_HEAP_REALLOC:
        return e->realloc.source;
    default:
        return 0;
    }
}

static void rec_consumer_(const ht_event *e, void *ctx)
{
    (void)ctx;
    if (rec_source_of(e) == HT_SOURCE_SEGMENT_HEAP)
        atomic_fetch_add(&rec_seg6_, 1);
    unsigned i = atomic_fetch_add(&rec_n_, 1);
    if (i < REC_CAP)
        rec_ev_[i] = *e;
}

static inline unsigned rec_count(void)
{
    unsigned n = atomic_load(&rec_n_);
    return n < REC_CAP ? n : REC_CAP;
}

/* Starts a fresh session with the recorder (no rundown unless asked). */
static inline int rec_begin_flags(unsigned flags)
{
    ht_trace_stop(); /* a previous test may have bailed out with the session running */
    atomic_store(&rec_n_, 0);
    atomic_store(&rec_seg6_, 0);
    ht_trace_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.consumer = rec_consumer_;
    cfg.flags = flags;
    return ht_trace_start(&cfg);
}
static inline int rec_begin(void)
{
    return rec_begin_flags(HT_TRACE_NO_RUNDOWN);
}

static inline void rec_end(void)
{
    ht_trace_stop();
    CHECK(atomic_load(&rec_n_) <= REC_CAP); /* else the test recorded more than it can see */
    CHECK_EQ_U(atomic_load(&rec_seg6_), 0); /* SEGMENT_HEAP is never emitted */
}

/* Index of the n-th (0-based) event of heap h with type t at or after index from; -1 if none. */
static inline int rec_find(ht_heap *h, unsigned t, unsigned from)
{
    unsigned n = rec_count();
    for (unsigned i = from; i < n; i++)
        if (rec_ev_[i].heap_handle == (uintptr_t)h && rec_ev_[i].type == t)
            return (int)i;
    return -1;
}

/* Number of events of heap h (type t, or any type when t == 0) in [from, rec_count()). */
static inline unsigned rec_count_of(ht_heap *h, unsigned t, unsigned from)
{
    unsigned n = rec_count(), c = 0;
    for (unsigned i = from; i < n; i++)
        if (rec_ev_[i].heap_handle == (uintptr_t)h && (t == 0 || rec_ev_[i].type == t))
            c++;
    return c;
}

/* The event of heap h recorded just before index i (any type), or NULL. */
static inline const ht_event *rec_prev_of_heap(ht_heap *h, int i)
{
    for (int j = i - 1; j >= 0; j--)
        if (rec_ev_[j].heap_handle == (uintptr_t)h)
            return &rec_ev_[j];
    return NULL;
}

/* The one event of type t that an operation on h logged since index from: checks there is
 * exactly one, returns its index (or -1). */
static inline int rec_one_(ht_heap *h, unsigned t, unsigned from, const char *file, int line)
{
    unsigned c = rec_count_of(h, t, from);
    if (c != 1) {
        fprintf(stderr, "%s:%d: expected exactly one event of type 0x%x, saw %u\n", file, line, t,
                c);
        harness_failures_++;
        return -1;
    }
    return rec_find(h, t, from);
}
#define rec_one(h, t, from) rec_one_((h), (t), (from), __FILE__, __LINE__)

/* The event of heap h recorded just after index i (any type), or NULL. */
static inline const ht_event *rec_next_of_heap(ht_heap *h, int i)
{
    unsigned n = rec_count();
    for (unsigned j = (unsigned)i + 1; j < n; j++)
        if (rec_ev_[j].heap_handle == (uintptr_t)h)
            return &rec_ev_[j];
    return NULL;
}

/* Checks the Source of the alloc/free/realloc event at index i against the expected path,
 * following docs/heap.md: SLOWPATH is accepted instead of MAINPATH/LOWFRAG only when the event
 * of the same heap immediately before it is a HEAP_EXPAND (alloc, realloc: the memory is
 * committed before the block is handed out), or, for a free, when the event of the same
 * heap immediately after it is a HEAP_CONTRACT ("the HEAP_CONTRACT events follow its
 * HEAP_FREE"). Returns the Source seen. */
static inline uint32_t rec_check_src_(ht_heap *h, int i, uint32_t want, const char *file, int line)
{
    if (i < 0)
        return 0;
    const ht_event *e = &rec_ev_[i];
    uint32_t got = rec_source_of(e);
    if (got == want)
        return got;
    if (got == HT_SOURCE_SLOWPATH && (want == HT_SOURCE_MAINPATH || want == HT_SOURCE_LOWFRAG)) {
        bool is_free = e->type == HT_EVENT_HEAP_FREE;
        const ht_event *p = is_free ? rec_next_of_heap(h, i) : rec_prev_of_heap(h, i);
        unsigned cause = is_free ? HT_EVENT_HEAP_CONTRACT : HT_EVENT_HEAP_EXPAND;
        if (p != NULL && p->type == cause)
            return got;
        fprintf(stderr, "%s:%d: Source SLOWPATH without %s (wanted %u)\n", file, line,
                is_free ? "a HEAP_CONTRACT right after it" : "a HEAP_EXPAND right before it", want);
        harness_failures_++;
        return got;
    }
    fprintf(stderr, "%s:%d: event type 0x%x: Source %u, wanted %u\n", file, line, e->type, got,
            want);
    harness_failures_++;
    return got;
}
#define rec_check_src(h, i, want) rec_check_src_((h), (i), (want), __FILE__, __LINE__)

/* ---- replay: recompute a heap's statistics from its recorded events ------------------- */

#define REPLAY_CAP (1u << 16) /* open addressing; power of two */

typedef struct replay_slot {
    uintptr_t addr; /* 0 empty, 1 tombstone */
    uint64_t size;
} replay_slot;

typedef struct replay_state {
    ht_heap_stats st; /* expected statistics */
    unsigned n_moved; /* moved reallocs: their old block's free Source is not in the trace */
    uint64_t moved_bytes;
    bool overflow;
} replay_state;

static replay_slot replay_tab_[REPLAY_CAP];

static inline size_t replay_hash_(uintptr_t a)
{
    return (size_t)((a >> 4) * 0x9E3779B97F4A7C15ull >> 48) & (REPLAY_CAP - 1);
}

static inline bool replay_put_(uintptr_t a, uint64_t size)
{
    size_t i = replay_hash_(a);
    for (size_t k = 0; k < REPLAY_CAP; k++, i = (i + 1) & (REPLAY_CAP - 1)) {
        if (replay_tab_[i].addr <= 1 || replay_tab_[i].addr == a) {
            replay_tab_[i].addr = a;
            replay_tab_[i].size = size;
            return true;
        }
    }
    return false;
}

/* Removes a; returns its size, or -1 when a was not live. */
static inline int64_t replay_take_(uintptr_t a)
{
    size_t i = replay_hash_(a);
    for (size_t k = 0; k < REPLAY_CAP; k++, i = (i + 1) & (REPLAY_CAP - 1)) {
        if (replay_tab_[i].addr == 0)
            return -1;
        if (replay_tab_[i].addr == a) {
            replay_tab_[i].addr = 1;
            return (int64_t)replay_tab_[i].size;
        }
    }
    return -1;
}

/* Replays every recorded event of heap h (the session must have started before h was
 * created, so the history is complete) into expected statistics. */
static inline void replay_heap(ht_heap *h, replay_state *rs)
{
    memset(rs, 0, sizeof *rs);
    memset(replay_tab_, 0, sizeof replay_tab_);
    unsigned n = rec_count(), start = 0;
    /* a handle can be reused by a later heap: replay from h's latest HEAP_CREATE */
    for (unsigned i = 0; i < n; i++)
        if (rec_ev_[i].heap_handle == (uintptr_t)h && rec_ev_[i].type == HT_EVENT_HEAP_CREATE)
            start = i;
    for (unsigned i = start; i < n; i++) {
        const ht_event *e = &rec_ev_[i];
        if (e->heap_handle != (uintptr_t)h)
            continue;
        switch (e->type) {
        case HT_EVENT_HEAP_CREATE:
            rs->st.committed = e->create.committed_space;
            break;
        case HT_EVENT_HEAP_EXPAND:
            rs->st.committed = e->expand.committed_space;
            break;
        case HT_EVENT_HEAP_CONTRACT:
            rs->st.committed = e->contract.committed_space;
            break;
        case HT_EVENT_HEAP_ALLOC: {
            uint32_t s = e->alloc.source;
            if (s > 6)
                s = 0;
            rs->st.by_source[s].n_alloc++;
            rs->st.by_source[s].bytes_alloc += e->alloc.size;
            if (s != HT_SOURCE_INVALID) {
                rs->st.live_blocks++;
                rs->st.live_bytes += e->alloc.size;
                if (!replay_put_(e->alloc.address, e->alloc.size))
                    rs->overflow = true;
            }
            break;
        }
        case HT_EVENT_HEAP_FREE: {
            uint32_t s = e->free.source;
            if (s > 6)
                s = 0;
            rs->st.by_source[s].n_free++;
            if (s == HT_SOURCE_INVALID) {
                rs->st.n_invalid++;
                break;
            }
            int64_t sz = replay_take_(e->free.address);
            if (sz < 0) {
                fprintf(stderr, "replay: HEAP_FREE of %#lx that the trace never allocated\n",
                        (unsigned long)e->free.address);
                harness_failures_++;
                break;
            }
            rs->st.by_source[s].bytes_free += (uint64_t)sz;
            rs->st.live_blocks--;
            rs->st.live_bytes -= (uint64_t)sz;
            break;
        }
        case HT_EVENT_HEAP_REALLOC: {
            uint32_t s = e->realloc.source;
            if (s > 6)
                s = 0;
            rs->st.by_source[s].n_alloc++;
            rs->st.by_source[s].bytes_alloc += e->realloc.new_size;
            if (s == HT_SOURCE_INVALID) {
                rs->st.n_invalid++;
                break;
            }
            int64_t sz = replay_take_(e->realloc.old_address);
            if (sz < 0) {
                fprintf(stderr, "replay: HEAP_REALLOC of %#lx that the trace never allocated\n",
                        (unsigned long)e->realloc.old_address);
                harness_failures_++;
                sz = 0;
            } else if ((uint64_t)sz != e->realloc.old_size) {
                fprintf(stderr, "replay: HEAP_REALLOC OldSize %" PRIu64 " != %" PRId64 "\n",
                        (uint64_t)e->realloc.old_size, sz);
                harness_failures_++;
            }
            rs->st.live_bytes -= (uint64_t)sz;
            rs->st.live_bytes += e->realloc.new_size;
            if (e->realloc.new_address != e->realloc.old_address) {
                rs->n_moved++;
                rs->moved_bytes += (uint64_t)sz;
            }
            if (!replay_put_(e->realloc.new_address, e->realloc.new_size))
                rs->overflow = true;
            break;
        }
        default:
            break;
        }
    }
}

/* Compares ht_heap_get_stats(h) with the replay of h's events (docs/heap.md "Stats"). With
 * moved reallocs the Source of each old block's free is not in the trace: then the per-Source
 * free counts are checked as lower bounds and their totals exactly. */
static inline void rec_check_stats_(ht_heap *h, const char *file, int line)
{
    replay_state rs;
    replay_heap(h, &rs);
    ht_heap_stats st;
    memset(&st, 0xff, sizeof st);
    ht_heap_get_stats(h, &st);
    int before = harness_failures_;
    CHECK(!rs.overflow);
    uint64_t tot_nf = 0, tot_bf = 0, exp_nf = 0, exp_bf = 0;
    for (int s = 0; s < 7; s++) {
        CHECK_EQ_U(st.by_source[s].n_alloc, rs.st.by_source[s].n_alloc);
        /* bytes_alloc of INVALID (the NewSize of bad reallocs) is asserted by one dedicated
         * test (test_invalid.c invalid_realloc_counts_new_size), not in every replay */
        if (s != HT_SOURCE_INVALID)
            CHECK_EQ_U(st.by_source[s].bytes_alloc, rs.st.by_source[s].bytes_alloc);
        if (rs.n_moved == 0) {
            CHECK_EQ_U(st.by_source[s].n_free, rs.st.by_source[s].n_free);
            CHECK_EQ_U(st.by_source[s].bytes_free, rs.st.by_source[s].bytes_free);
        } else {
            CHECK(st.by_source[s].n_free >= rs.st.by_source[s].n_free);
            CHECK(st.by_source[s].bytes_free >= rs.st.by_source[s].bytes_free);
        }
        tot_nf += st.by_source[s].n_free;
        tot_bf += st.by_source[s].bytes_free;
        exp_nf += rs.st.by_source[s].n_free;
        exp_bf += rs.st.by_source[s].bytes_free;
    }
    CHECK_EQ_U(st.by_source[0].n_alloc + st.by_source[0].n_free, 0);
    CHECK_EQ_U(st.by_source[6].n_alloc + st.by_source[6].n_free, 0);
    CHECK_EQ_U(tot_nf, exp_nf + rs.n_moved);
    CHECK_EQ_U(tot_bf, exp_bf + rs.moved_bytes);
    CHECK_EQ_U(st.live_blocks, rs.st.live_blocks);
    CHECK_EQ_U(st.live_bytes, rs.st.live_bytes);
    CHECK_EQ_U(st.n_invalid, rs.st.n_invalid);
    CHECK_EQ_U(st.committed, rs.st.committed);
    if (harness_failures_ != before)
        fprintf(stderr, "%s:%d: ^ stats of heap %p disagree with its events\n", file, line,
                (void *)h);
}
#define rec_check_stats(h) rec_check_stats_((h), __FILE__, __LINE__)

/* ---- fill patterns -------------------------------------------------------------------- */

static inline uint8_t pat_byte(const void *base, size_t i)
{
    uintptr_t a = (uintptr_t)base;
    return (uint8_t)((a >> 4) * 31u + (a >> 12) + i * 7u + 1u);
}
static inline void pat_fill(void *p, size_t n)
{
    uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        b[i] = pat_byte(p, i);
}
/* Pattern keyed on a separate seed, for contents that move (realloc). */
static inline void pat_fill_seed(void *p, size_t n, unsigned seed)
{
    uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(seed * 131u + i * 7u + (i >> 8) + 3u);
}
static inline bool pat_check_seed(const void *p, size_t n, unsigned seed)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != (uint8_t)(seed * 131u + i * 7u + (i >> 8) + 3u))
            return false;
    return true;
}
static inline bool pat_check(const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != pat_byte(p, i))
            return false;
    return true;
}

#endif
