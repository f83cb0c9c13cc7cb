/* api.c — the allocation API and its fast paths: route a request to lookaside, LFH, main
 * path or large block; check every pointer exactly (segment map + live bit) before touching
 * the heap; keep the statistics; emit the operation's event after the locks are dropped.
 * Timestamps: an alloc is stamped after the block is obtained, a free before it is released. */
#include "heap/internal.h"

#include "common/log.h"
#include "trace/emit.h"
#include "trace/trace.h"

#include <errno.h>

/* HT_DEBUG >= 3: the whole heap is checked after every operation (tests and fuzzers). */
#if defined(HT_DEBUG) && HT_DEBUG >= 3
#define DEBUG_VALIDATE(heap)                                                                       \
    do {                                                                                           \
        if (!ht_heap_validate((heap), 0, NULL))                                                    \
            ht__fatal("heaptrail: heap %p failed validation\n", (void *)(heap));                   \
    } while (0)
#else
#define DEBUG_VALIDATE(heap) ((void)0)
#endif

/* ---- statistics ---- */

static inline void stat_add(_Atomic uint64_t *x, uint64_t v, bool shared)
{
    if (shared)
        atomic_fetch_add_explicit(x, v, memory_order_relaxed);
    else
        atomic_store_explicit(x, atomic_load_explicit(x, memory_order_relaxed) + v,
                              memory_order_relaxed);
}

static inline ht_stat_acc *acc_of(ht_heap *heap, ht_tcache *tc)
{
    return tc != NULL ? &tc->st : &heap->shared;
}

static void stats_alloc(ht_heap *heap, ht_tcache *tc, unsigned src, size_t size)
{
    ht_stat_acc *a = acc_of(heap, tc);
    stat_add(&a->n_alloc[src], 1, tc == NULL);
    stat_add(&a->bytes_alloc[src], size, tc == NULL);
}

static void stats_free(ht_heap *heap, ht_tcache *tc, unsigned src, size_t size)
{
    ht_stat_acc *a = acc_of(heap, tc);
    stat_add(&a->n_free[src], 1, tc == NULL);
    stat_add(&a->bytes_free[src], size, tc == NULL);
}

/* ---- helpers ---- */

static inline ht_tcache *tcache_get(ht_heap *heap)
{
    ht_tls *tls = ht__tls;
    if (HT_LIKELY(tls != NULL)) {
        ht_tcache *tc = tls->slot[heap->index % HT_TLS_SLOTS];
        if (HT_LIKELY(tc != NULL && tc->heap == heap && tc->gen == heap->gen))
            return tc;
    }
    return ht__tcache_get_slow(heap);
}

/* The calling thread's tcache of heap if it has a valid one, else ht__tc_none (for fast
 * paths: they fall through to the slow path, which makes one, on their own checks). */
static inline ht_tcache *tcache_peek(ht_heap *heap)
{
    if (HT_LIKELY(heap->index == 0))
        return ht__tc_process;
    ht_tls *tls = ht__tls;
    if (tls != NULL) {
        ht_tcache *tc = tls->slot[heap->index % HT_TLS_SLOTS];
        if (tc != NULL && tc->heap == heap && tc->gen == heap->gen)
            return tc;
    }
    return &ht__tc_none;
}

/* op->trace: the heap's switch reads ON. For a call that may have changed something already
 * (its choice is made: a rundown waits for it or has walked the heap). */
static inline void op_init(ht_op *op, ht_heap *heap)
{
    op->trace = atomic_load_explicit(&heap->trace_on, memory_order_relaxed) == HT_TSW_ON;
    op->slow = false;
    op->n_pending = 0;
}

/* The same where the call has changed nothing yet, through the rundown's gate: the slow paths
 * read the switch again once they have their tcache (the thread may just have been listed). */
static inline void op_init_entry(ht_op *op, ht_heap *heap)
{
    op->trace = ht__trace_switch(heap) == HT_TSW_ON;
    op->slow = false;
    op->n_pending = 0;
}

static void emit_alloc(ht_heap *heap, ht_op *op, void *p, size_t size, unsigned src)
{
    if (op->n_pending != 0)
        ht__op_emit_pending(heap, op);
    uint64_t ts = ht__trace_now();
    if (ht__trace_emit_block(HT_EVENT_HEAP_ALLOC, (uintptr_t)heap, (uintptr_t)p, size, src, ts))
        return;
    ht_event ev;
    memset(&ev, 0, sizeof ev);
    ev.timestamp_ns = ts;
    ev.type = HT_EVENT_HEAP_ALLOC;
    ev.heap_handle = (uintptr_t)heap;
    ev.alloc.size = size;
    ev.alloc.address = (uintptr_t)p;
    ev.alloc.source = src;
    ht__trace_emit(&ev);
}

static void emit_free(ht_heap *heap, ht_op *op, const void *p, unsigned src, uint64_t ts,
                      uint16_t flags)
{
    if (flags == 0 &&
        ht__trace_emit_block(HT_EVENT_HEAP_FREE, (uintptr_t)heap, (uintptr_t)p, 0, src, ts)) {
        if (op->n_pending != 0)
            ht__op_emit_pending(heap, op);
        return;
    }
    ht_event ev;
    memset(&ev, 0, sizeof ev);
    ev.timestamp_ns = ts;
    ev.type = HT_EVENT_HEAP_FREE;
    ev.flags = flags;
    ev.heap_handle = (uintptr_t)heap;
    ev.free.address = (uintptr_t)p;
    ev.free.source = src;
    ht__trace_emit(&ev);
    ht__op_emit_pending(heap, op);
}

/* emit_event when the inline path declined: the general one, through an ht_event. */
__attribute__((noinline)) static void emit_event_slow(ht_heap *heap, ht_event_type type,
                                                      const void *p, size_t size, unsigned src,
                                                      uint64_t ts)
{
    ht_event ev;
    memset(&ev, 0, sizeof ev);
    ev.timestamp_ns = ts;
    ev.type = (uint16_t)type;
    ev.heap_handle = (uintptr_t)heap;
    if (type == HT_EVENT_HEAP_ALLOC) {
        ev.alloc.size = size;
        ev.alloc.address = (uintptr_t)p;
        ev.alloc.source = src;
    } else {
        ev.free.address = (uintptr_t)p;
        ev.free.source = src;
    }
    ht__trace_emit(&ev);
}

/* The rest of a lookaside hit's or push's event when the inline path declined or would:
 * with stacks, or the general path. Inline into the out-of-line functions below (one frame
 * fewer for the stack walk), each returning what its fast path returns, so that the fast
 * path leaves by a tail call. */
__attribute__((always_inline)) static inline void
emit_event_rest(ht_heap *heap, ht_event_type type, const void *p, size_t size, uint64_t ts)
{
    if (atomic_load_explicit(&ht__rec.stack_depth, memory_order_relaxed) == 0 ||
        !ht__trace_emit_block(type, (uintptr_t)heap, (uintptr_t)p, size, HT_SOURCE_LOOKASIDE, ts))
        emit_event_slow(heap, type, p, size, HT_SOURCE_LOOKASIDE, ts);
}

__attribute__((noinline)) static void *hit_emit_rest(ht_heap *heap, void *p, size_t size,
                                                     uint64_t ts)
{
    emit_event_rest(heap, HT_EVENT_HEAP_ALLOC, p, size, ts);
    return p;
}

__attribute__((noinline)) static bool push_emit_rest(ht_heap *heap, void *block, uint64_t ts)
{
    emit_event_rest(heap, HT_EVENT_HEAP_FREE, block, 0, ts);
    return true;
}

/* An ALLOC (size) or FREE (size 0) without flags or pending events: the fast paths' event. */
__attribute__((always_inline)) static inline void
emit_event(ht_heap *heap, ht_event_type type, const void *p, size_t size, unsigned src, uint64_t ts)
{
    if (HT_UNLIKELY(
            !ht__trace_emit_block_inline(type, (uintptr_t)heap, (uintptr_t)p, size, src, ts)))
        emit_event_slow(heap, type, p, size, src, ts);
}

static void emit_realloc(ht_heap *heap, ht_op *op, const void *np, const void *op_, size_t nsize,
                         size_t osize, unsigned src, uint64_t ts)
{
    ht__op_emit_pending(heap, op);
    if (ts == 0)
        ts = ht__trace_now();
    if (ht__trace_emit_realloc_inline((uintptr_t)heap, (uintptr_t)np, (uintptr_t)op_, nsize, osize,
                                      src, ts))
        return;
    ht_event ev;
    memset(&ev, 0, sizeof ev);
    ev.timestamp_ns = ts;
    ev.type = HT_EVENT_HEAP_REALLOC;
    ev.heap_handle = (uintptr_t)heap;
    ev.realloc.new_address = (uintptr_t)np;
    ev.realloc.old_address = (uintptr_t)op_;
    ev.realloc.new_size = nsize;
    ev.realloc.old_size = osize;
    ev.realloc.source = src;
    ht__trace_emit(&ev);
}

_Noreturn static void corruption(ht_heap *heap, const void *p, const char *what)
{
    ht__fatal("heaptrail: invalid %s of %p in heap %p: not a live block of this heap "
              "(double free, interior, foreign or stale pointer); "
              "HT_HEAP_TERMINATE_ON_CORRUPTION is set, aborting\n",
              what, p, (void *)heap);
}

static void count_invalid(ht_heap *heap, ht_tcache *tc, bool as_alloc, size_t new_size)
{
    ht_stat_acc *a = acc_of(heap, tc);
    stat_add(&a->n_invalid, 1, tc == NULL);
    if (as_alloc) {
        stat_add(&a->n_alloc[HT_SOURCE_INVALID], 1, tc == NULL);
        stat_add(&a->bytes_alloc[HT_SOURCE_INVALID], new_size, tc == NULL);
    } else
        stat_add(&a->n_free[HT_SOURCE_INVALID], 1, tc == NULL);
}

/* Writes a small block's (LFH slot or MB_SMALL main block) size and Source. */
static inline void small_set_size(ht_segment *seg, uintptr_t p, size_t size, unsigned src)
{
    ht_run *run = ht__run_of(seg, p);
    size_t usable;
    if (run != NULL) {
        uint32_t i = ht__run_index(run, p);
        ht__run_meta_set(run, i, size, src);
        usable = run->block_size;
    } else {
        ht_mblock *b = (ht_mblock *)p - 1;
        ht__mb_set_busy(b, size, src);
        usable = ht__mb_payload(b);
    }
    (void)usable;
    HT_UNPOISON((void *)p, usable); /* up to the usable size, as malloc_usable_size allows */
}

/* Marks a small block (LFH slot or MB_SMALL main block) live with its size and Source. */
static inline void small_mark(ht_heap *heap, ht_segment *seg, uintptr_t p, size_t size,
                              unsigned src)
{
    small_set_size(seg, p, size, src);
    ht__live_set(seg, p, heap->serialize);
}

/* What a live pointer is: filled by classify(). */
typedef struct blockinfo {
    ht_region *region;
    ht_run *run;     /* LFH slot */
    ht_mblock *mb;   /* main-path block */
    ht_large *large; /* large block */
    size_t size;     /* requested */
    size_t usable;
    unsigned source;
    int cls; /* small class, or -1 */
} blockinfo;

/* Finds the region of p and checks that p could start a block of heap there: aligned, ours,
 * past the segment header, or the user pointer of a large block. Reads no block header. */
static bool locate(ht_heap *heap, uintptr_t p, blockinfo *bi)
{
    if ((p & (HT_GRANULE - 1)) != 0)
        return false;
    ht_region *r = ht__region_of(p);
    if (r == NULL || r->heap != heap)
        return false;
    bi->region = r;
    bi->run = NULL;
    bi->mb = NULL;
    bi->large = NULL;
    bi->cls = -1;
    if (r->kind == HT_REGION_SEGMENT)
        return p >= (uintptr_t)r + HT_SEG_META;
    ht_large *l = (ht_large *)r;
    bi->large = l;
    return l->user == p;
}

/* Fills the rest of bi for a block known to be live (or just claimed by the caller). */
static void describe(uintptr_t p, blockinfo *bi)
{
    if (bi->large != NULL) {
        bi->size = bi->large->size;
        bi->usable = ht__large_capacity(bi->large);
        bi->source = HT_SOURCE_SLOWPATH;
        return;
    }
    ht_segment *seg = (ht_segment *)bi->region;
    ht_run *run = ht__run_of(seg, p);
    if (run != NULL) {
        uint32_t i = ht__run_index(run, p);
        bi->run = run;
        bi->usable = run->block_size;
        bi->size = ht__run_meta_size(run, i);
        bi->source = ht__run_meta_source(run, i);
        bi->cls = run->cls;
    } else {
        ht_mblock *b = (ht_mblock *)p - 1;
        bi->mb = b;
        bi->usable = ht__mb_payload(b);
        bi->size = bi->usable - ht__mb_slack(b);
        bi->source = HT_LD(b->source);
        if (b->flags & MB_SMALL)
            bi->cls = b->cls;
    }
}

/* True iff p is a live block of heap; fills bi. Changes nothing. */
static bool classify(ht_heap *heap, uintptr_t p, blockinfo *bi)
{
    if (!locate(heap, p, bi))
        return false;
    if (bi->large != NULL) {
        if (atomic_load_explicit(&bi->large->live, memory_order_acquire) == 0)
            return false;
    } else if (!ht__live_test((ht_segment *)bi->region, p)) {
        return false;
    }
    describe(p, bi);
    return true;
}

static bool claim(const ht_heap *heap, const blockinfo *bi, uintptr_t p);

/* ---- the lookaside fast paths ----
 * A block on a lookaside list keeps, in its second word, where its size/Source entry lives:
 * the address of its run's meta entry (LFH block), or 0 (main-path block: the header before
 * it). A hit then writes that entry and the live bit without finding the run again. */

static inline void la_push(ht_lookaside *la, void *p, uintptr_t meta)
{
    HT_UNPOISON(p, 2 * sizeof(void *));
    ((void **)p)[0] = la->head;
    ((uintptr_t *)p)[1] = meta;
    la->head = p;
    la->count++;
}

/* Pops the head of la (not empty) and marks it live with size, Source LOOKASIDE. */
static inline void *la_pop_mark(ht_heap *heap, ht_lookaside *la, unsigned cls, size_t size)
{
    void *p = la->head;
    la->head = ((void **)p)[0];
    la->count--;
    uintptr_t meta = ((uintptr_t *)p)[1];
    size_t usable;
    if (meta != 0) {
        usable = ht__class_size[cls];
        HT_ST(*(uint32_t *)meta, ht__run_meta_word(usable - size, HT_SOURCE_LOOKASIDE));
    } else {
        ht_mblock *b = (ht_mblock *)p - 1;
        ht__mb_set_busy(b, size, HT_SOURCE_LOOKASIDE);
        usable = ht__mb_payload(b);
    }
    (void)usable;
    HT_UNPOISON(p, usable);
    ht__live_set(ht__seg_of(p), (uintptr_t)p, heap->serialize);
    return p;
}

/* The meta entry address of run slot i, as la_push stores it. */
static inline uintptr_t run_meta_addr(ht_run *run, uint32_t i)
{
    return (uintptr_t)&run->meta[i];
}

/* ---- allocation ---- */

/* Obtains a block; returns it with *src set, or NULL. Statistics and events are the
 * caller's. */
static void *alloc_block(ht_heap *heap, ht_tcache *tc, size_t size, size_t align, ht_op *op,
                         unsigned *src)
{
    if (align <= HT_GRANULE && size <= HT_LFH_MAX) {
        unsigned cls = ht__size_class(size);
        if (tc != NULL) {
            ht_lookaside *la = &tc->la[cls];
            if (la->head != NULL) {
                *src = HT_SOURCE_LOOKASIDE;
                return la_pop_mark(heap, la, cls, size);
            }
        }
        if (atomic_load_explicit(&heap->class_active[cls], memory_order_relaxed) != 0) {
            ht_run *run;
            void *p = ht__lfh_alloc(heap, cls, op, &run);
            if (p == NULL)
                return NULL;
            *src = op->slow ? HT_SOURCE_SLOWPATH : HT_SOURCE_LOWFRAG;
            small_mark(heap, ht__seg_of(p), (uintptr_t)p, size, *src);
            return p;
        }
        ht__heap_lock(heap);
        ht_mblock *b = ht__main_alloc_locked(heap, ht__class_size[cls], HT_GRANULE, op);
        if (b != NULL) {
            b->flags |= MB_SMALL;
            b->cls = (uint8_t)cls;
            if (++heap->class_n_main[cls] >= heap->lfh_threshold)
                atomic_store_explicit(&heap->class_active[cls], 1, memory_order_relaxed);
        }
        ht__heap_unlock(heap);
        if (b == NULL)
            return NULL;
        *src = op->slow ? HT_SOURCE_SLOWPATH : HT_SOURCE_MAINPATH;
        small_mark(heap, ht__seg_of(b), (uintptr_t)(b + 1), size, *src);
        return b + 1;
    }
    size_t a = align < HT_GRANULE ? HT_GRANULE : align;
    if (size < heap->large_threshold && size + a + HT_MB_MIN * 3 <= HT_SEG_AREA_MAX) {
        ht__heap_lock(heap);
        ht_mblock *b = ht__main_alloc_locked(heap, size, a, op);
        ht__heap_unlock(heap);
        if (b == NULL)
            return NULL;
        *src = op->slow ? HT_SOURCE_SLOWPATH : HT_SOURCE_MAINPATH;
        ht__mb_set_busy(b, size, *src);
        HT_UNPOISON(b + 1, ht__mb_payload(b));
        ht__live_set(ht__seg_of(b), (uintptr_t)(b + 1), heap->serialize);
        return b + 1;
    }
    ht__heap_lock(heap);
    ht_large *l = ht__large_alloc_locked(heap, size, a, op);
    ht__heap_unlock(heap);
    if (l == NULL)
        return NULL;
    *src = HT_SOURCE_SLOWPATH;
    HT_UNPOISON((void *)l->user, ht__large_capacity(l));
    return (void *)l->user;
}

static void *alloc_fail(ht_heap *heap, unsigned flags, ht_op *op, size_t size)
{
    ht__op_emit_pending(heap, op);
    if (((flags | heap->flags) & HT_HEAP_GENERATE_EXCEPTIONS) != 0)
        ht__fatal("heaptrail: out of memory allocating %zu bytes from heap %p "
                  "(HT_HEAP_GENERATE_EXCEPTIONS is set), aborting\n",
                  size, (void *)heap);
    errno = ENOMEM;
    return NULL;
}

static void *alloc_common_tc(ht_heap *heap, ht_tcache *tc, unsigned flags, size_t size,
                             size_t align)
{
    ht_op op;
    op_init_entry(&op, heap);
    if (size > ((size_t)1 << HT_ADDR_BITS))
        return alloc_fail(heap, flags, &op, size);
    unsigned src;
    void *p = alloc_block(heap, tc, size, align, &op, &src);
    if (p == NULL)
        return alloc_fail(heap, flags, &op, size);
    if ((flags & HT_HEAP_ZERO_MEMORY) != 0)
        memset(p, 0, size);
    stats_alloc(heap, tc, src, size);
    if (op.trace)
        emit_alloc(heap, &op, p, size, src);
    DEBUG_VALIDATE(heap);
    return p;
}

/* The general allocation, inside a call (ht__op_begin). The tcache first: a thread's first
 * call lists it for the rundown before the switch is read; a thread with none (past its
 * thread-exit destructor) is on no list and counts itself meanwhile. */
__attribute__((noinline)) static void *alloc_common(ht_heap *heap, unsigned flags, size_t size,
                                                    size_t align)
{
    ht_tcache *tc = tcache_get(heap);
    ht__op_begin(); /* again: making a tcache may have called back in (see ht__op_begin) */
    if (HT_LIKELY(tc != NULL))
        return alloc_common_tc(heap, tc, flags, size, align);
    ht__op_unlisted_begin();
    void *p = alloc_common_tc(heap, NULL, flags, size, align);
    ht__op_unlisted_end();
    return p;
}

/* A small allocation of an LFH-active class that missed the lookaside list (tc is the
 * thread's real tcache): straight to the LFH, with the run it returns; trace: the heap's
 * switch as alloc_small sampled it. */
__attribute__((always_inline)) static inline void *alloc_lfh_body(ht_heap *heap, ht_tcache *tc,
                                                                  unsigned flags, size_t size,
                                                                  unsigned cls, const bool trace)
{
    ht_op op;
    op.trace = trace; /* sampled once, by alloc_small */
    op.slow = false;
    op.n_pending = 0;
    ht_run *run;
    void *p = ht__lfh_alloc_aff(heap, cls, tc->affinity, &op, &run);
    if (HT_UNLIKELY(p == NULL))
        return alloc_fail(heap, flags, &op, size);
    unsigned src = op.slow ? HT_SOURCE_SLOWPATH : HT_SOURCE_LOWFRAG;
    ht__run_meta_set(run, ht__run_index(run, (uintptr_t)p), size, src);
    HT_UNPOISON(p, run->block_size);
    ht__live_set(ht__seg_of(p), (uintptr_t)p, heap->serialize);
    stat_add(&tc->st.n_alloc[src], 1, false);
    stat_add(&tc->st.bytes_alloc[src], size, false);
    if ((flags & HT_HEAP_ZERO_MEMORY) != 0)
        memset(p, 0, size);
    if (trace)
        emit_alloc(heap, &op, p, size, src);
    DEBUG_VALIDATE(heap);
    return p;
}

/* alloc_lfh_body out of line, one instance each: the untraced one carries no event code. */
__attribute__((noinline)) static void *alloc_lfh(ht_heap *heap, ht_tcache *tc, unsigned flags,
                                                 size_t size, unsigned cls)
{
    return alloc_lfh_body(heap, tc, flags, size, cls, false);
}

__attribute__((noinline)) static void *alloc_lfh_traced(ht_heap *heap, ht_tcache *tc,
                                                        unsigned flags, size_t size, unsigned cls)
{
    return alloc_lfh_body(heap, tc, flags, size, cls, true);
}

/* The end of a lookaside hit that zeroes the block, or whose event the inline path will not
 * take (a session with stacks or a consumer, CLOCK_MONOTONIC, the thread's first event): out
 * of line, so the hit's own path makes no call. */
__attribute__((noinline)) static void *hit_finish(ht_heap *heap, unsigned flags, void *p,
                                                  size_t size, bool traced)
{
    if ((flags & HT_HEAP_ZERO_MEMORY) != 0)
        memset(p, 0, size);
    if (traced) {
        uint64_t ts = ht__trace_now_local();
        if (!ht__trace_fast_live() ||
            !ht__trace_emit_fast(HT_EVENT_HEAP_ALLOC, (uintptr_t)heap, (uintptr_t)p, size,
                                 HT_SOURCE_LOOKASIDE, ts))
            emit_event_rest(heap, HT_EVENT_HEAP_ALLOC, p, size, ts);
    }
    DEBUG_VALIDATE(heap);
    return p;
}

/* ht_heap_alloc in a live heap, one instance per value of traced (a constant): a lookaside
 * hit is served here, an LFH-active class that misses goes straight to the LFH, the rest
 * through alloc_common. Traced, a hit is stamped once the block is obtained. */
__attribute__((always_inline)) static inline void *alloc_small_body(ht_heap *heap, unsigned flags,
                                                                    size_t size, const bool traced)
{
    if (HT_LIKELY(size <= HT_LFH_MAX)) {
        ht_tcache *tc = tcache_peek(heap);
        unsigned cls = ht__size_class(size);
        ht_lookaside *la = &tc->la[cls];
        if (HT_LIKELY(la->head != NULL)) {
            void *p = la_pop_mark(heap, la, cls, size);
            stat_add(&tc->st.n_alloc[HT_SOURCE_LOOKASIDE], 1, false);
            stat_add(&tc->st.bytes_alloc[HT_SOURCE_LOOKASIDE], size, false);
            /* every call below is a tail call: the path saves no registers */
            if (HT_UNLIKELY((flags & HT_HEAP_ZERO_MEMORY) != 0 ||
                            (traced && !ht__trace_fast_live())))
                return hit_finish(heap, flags, p, size, traced);
            if (traced) { /* no other thread's free to order after: see ht__trace_now_local */
                uint64_t ts = ht__trace_now_local_tsc();
                if (HT_UNLIKELY(!ht__trace_emit_fast(HT_EVENT_HEAP_ALLOC, (uintptr_t)heap,
                                                     (uintptr_t)p, size, HT_SOURCE_LOOKASIDE, ts)))
                    return hit_emit_rest(heap, p, size, ts);
            }
            DEBUG_VALIDATE(heap);
            return p;
        }
        if (atomic_load_explicit(&heap->class_active[cls], memory_order_relaxed) != 0 &&
            tc != &ht__tc_none)
            return traced ? alloc_lfh_traced(heap, tc, flags, size, cls)
                          : alloc_lfh(heap, tc, flags, size, cls);
    }
    return alloc_common(heap, flags, size, HT_GRANULE);
}

/* sw: the switch as alloc_small read it, not OFF. */
__attribute__((noinline)) static void *alloc_small_traced(ht_heap *heap, unsigned flags,
                                                          size_t size, unsigned sw)
{
    if (HT_UNLIKELY(sw != HT_TSW_ON) && ht__trace_gate(heap, sw) != HT_TSW_ON)
        return alloc_small_body(heap, flags, size, false);
    return alloc_small_body(heap, flags, size, true);
}

__attribute__((always_inline)) static inline void *alloc_small(ht_heap *heap, unsigned flags,
                                                               size_t size)
{
    ht__op_begin();
    void *p;
    unsigned sw = atomic_load_explicit(&heap->trace_on, memory_order_relaxed);
    if (HT_UNLIKELY(sw != HT_TSW_OFF))
        p = alloc_small_traced(heap, flags, size, sw);
    else
        p = alloc_small_body(heap, flags, size, false);
    ht__op_end();
    return p;
}

void *ht_heap_alloc(ht_heap *h, unsigned flags, size_t size)
{
    ht_heap *heap = ht__heap_check(h);
    if (heap == NULL)
        return NULL;
    return alloc_small(heap, flags, size);
}

void *ht__heap_alloc_known(ht_heap *heap, unsigned flags, size_t size)
{
    return alloc_small(heap, flags, size);
}

void *ht_heap_alloc_aligned(ht_heap *h, unsigned flags, size_t size, size_t alignment)
{
    ht_heap *heap = ht__heap_check(h);
    if (heap == NULL)
        return NULL;
    if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
        errno = EINVAL;
        return NULL;
    }
    if (alignment > ((size_t)1 << (HT_ADDR_BITS - 2))) {
        ht_op op;
        op_init(&op, heap);
        return alloc_fail(heap, flags, &op, size);
    }
    ht__op_begin();
    void *p = alloc_common(heap, flags, size, alignment);
    ht__op_end();
    return p;
}

/* ---- free ---- */

/* Releases the live block described by bi (its live bit already cleared for segments, or
 * its live flag for large blocks). Returns the Source of the free. */
static unsigned release_block(ht_heap *heap, ht_tcache *tc, void *p, const blockinfo *bi, ht_op *op)
{
    /* an LFH block of another affinity slot goes home to its run instead: parked here it
     * would be reused by this thread and keep two cores writing one run's metadata */
    if (bi->cls >= 0 && tc != NULL && (bi->run == NULL || bi->run->affinity == ht__tls->affinity)) {
        ht_lookaside *la = &tc->la[bi->cls];
        if (la->count < heap->la_depth[bi->cls]) {
            HT_POISON((uint8_t *)p + 2 * sizeof(void *), bi->usable - 2 * sizeof(void *));
            uintptr_t meta = 0;
            if (bi->run != NULL)
                meta = run_meta_addr(bi->run, ht__run_index(bi->run, (uintptr_t)p));
            la_push(la, p, meta);
            return HT_SOURCE_LOOKASIDE;
        }
    }
    if (bi->run != NULL) {
        HT_UNPOISON(p, sizeof(void *));
        HT_POISON((uint8_t *)p + sizeof(void *), bi->usable - sizeof(void *));
        ht__lfh_free(heap, bi->run, p, op);
        return op->slow ? HT_SOURCE_SLOWPATH : HT_SOURCE_LOWFRAG;
    }
    ht__heap_lock(heap);
    if (bi->mb != NULL)
        ht__main_free_locked(heap, bi->mb, op);
    else {
        HT_POISON(p, bi->usable);
        ht__large_free_locked(heap, bi->large, op);
    }
    ht__heap_unlock(heap);
    return op->slow ? HT_SOURCE_SLOWPATH : HT_SOURCE_MAINPATH;
}

/* Claims p (exactly one caller wins): clears its live bit / flag. */
static bool claim(const ht_heap *heap, const blockinfo *bi, uintptr_t p)
{
    if (bi->large != NULL) {
        uint32_t one = 1;
        return atomic_compare_exchange_strong(&bi->large->live, &one, 0);
    }
    return ht__live_clear((ht_segment *)bi->region, p, heap->serialize);
}

static bool invalid_free(ht_heap *heap, ht_tcache *tc, ht_op *op, const void *p, uint64_t ts,
                         uint16_t flags)
{
    if ((heap->flags & HT_HEAP_TERMINATE_ON_CORRUPTION) != 0)
        corruption(heap, p, flags != 0 ? "size query" : "free");
    count_invalid(heap, tc, false, 0);
    if (op->trace)
        emit_free(heap, op, p, HT_SOURCE_INVALID, ts, flags);
    errno = EINVAL;
    return false;
}

static bool free_invalid(ht_heap *heap, ht_tcache *tc, ht_op *op, void *block, uint64_t ts,
                         bool set_errno)
{
    if (set_errno)
        return invalid_free(heap, tc, op, block, ts, 0);
    int saved = errno;
    invalid_free(heap, tc, op, block, ts, 0);
    errno = saved;
    return false;
}

/* The generic free of a block whose region is known (bi from locate) and which this caller
 * has claimed. */
static bool free_claimed(ht_heap *heap, ht_tcache *tc, ht_op *op, void *block, blockinfo *bi,
                         uint64_t ts)
{
    describe((uintptr_t)block, bi);
    unsigned src = release_block(heap, tc, block, bi, op);
    stats_free(heap, tc, src, bi->size);
    if (op->trace)
        emit_free(heap, op, block, src, ts, 0);
    DEBUG_VALIDATE(heap);
    return true;
}

/* The generic free (traced, or anything but a small segment block of this heap). */
static bool free_slow_tc(ht_heap *heap, ht_tcache *tc, void *block, bool set_errno)
{
    uintptr_t p = (uintptr_t)block;
    ht_op op;
    op_init_entry(&op, heap);
    uint64_t ts = op.trace ? ht__trace_now() : 0;
    blockinfo bi;
    /* claim before reading the header: a racing double free must not read a block that the
     * winner is already coalescing */
    if (locate(heap, p, &bi) && claim(heap, &bi, p))
        return free_claimed(heap, tc, &op, block, &bi, ts);
    return free_invalid(heap, tc, &op, block, ts, set_errno);
}

/* The tcache before anything else, as in alloc_common. */
__attribute__((noinline)) static bool free_slow(ht_heap *heap, void *block, bool set_errno)
{
    ht_tcache *tc = tcache_get(heap);
    ht__op_begin(); /* again, as in alloc_common */
    if (HT_LIKELY(tc != NULL))
        return free_slow_tc(heap, tc, block, set_errno);
    ht__op_unlisted_begin();
    bool ok = free_slow_tc(heap, NULL, block, set_errno);
    ht__op_unlisted_end();
    return ok;
}

/* In the three below, ts is the free's stamp when free_common found the heap traced (taken
 * before the claim), 0 when untraced: the switch is sampled once per call, by free_common.
 * This one: the rest of a free that free_body claimed but cannot push (another affinity
 * slot's LFH block, a full list, no tcache yet, not a small block). */
__attribute__((noinline)) static bool free_slow_claimed(ht_heap *heap, void *block, ht_region *r,
                                                        uint64_t ts)
{
    ht_op op;
    op_init(&op, heap);
    op.trace = ts != 0;
    blockinfo bi = {.region = r, .cls = -1};
    return free_claimed(heap, tcache_get(heap), &op, block, &bi, ts);
}

/* A free whose live bit was not set. */
__attribute__((noinline)) static bool free_slow_invalid(ht_heap *heap, void *block, bool set_errno,
                                                        uint64_t ts)
{
    ht_op op;
    op_init(&op, heap);
    op.trace = ts != 0;
    return free_invalid(heap, tcache_get(heap), &op, block, ts, set_errno);
}

/* A free of an LFH block that free_common claimed but cannot push: back to its run. tc: the
 * thread's tcache. */
__attribute__((always_inline)) static inline bool
free_lfh_body(ht_heap *heap, ht_tcache *tc, ht_run *run, void *block, size_t size, uint64_t ts)
{
    ht_op op;
    op.trace = ts != 0;
    op.slow = false;
    op.n_pending = 0;
    HT_UNPOISON(block, sizeof(void *));
    HT_POISON((uint8_t *)block + sizeof(void *), run->block_size - sizeof(void *));
    ht__lfh_free(heap, run, block, &op);
    unsigned src = op.slow ? HT_SOURCE_SLOWPATH : HT_SOURCE_LOWFRAG;
    stat_add(&tc->st.n_free[src], 1, false);
    stat_add(&tc->st.bytes_free[src], size, false);
    if (ts != 0)
        emit_free(heap, &op, block, src, ts, 0);
    DEBUG_VALIDATE(heap);
    return true;
}

/* free_lfh_body out of line: untraced (ts 0, no event code) and traced instances. */
__attribute__((noinline)) static bool free_lfh(ht_heap *heap, ht_tcache *tc, ht_run *run,
                                               void *block, size_t size)
{
    return free_lfh_body(heap, tc, run, block, size, 0);
}

/* The traced instance stamps here, as do the two below for free_body's other traced exits:
 * under CLOCK_MONOTONIC the clock is a call, and a call inside free_body, even on a path it
 * rarely takes, would make it save registers on every free. The claim is behind, the block's
 * release ahead. */
__attribute__((noinline)) static bool free_lfh_traced(ht_heap *heap, ht_tcache *tc, ht_run *run,
                                                      void *block, size_t size)
{
    return free_lfh_body(heap, tc, run, block, size, ht__trace_now());
}

__attribute__((noinline)) static bool free_slow_claimed_now(ht_heap *heap, void *block,
                                                            ht_region *r)
{
    return free_slow_claimed(heap, block, r, ht__trace_now());
}

__attribute__((noinline)) static bool free_slow_invalid_now(ht_heap *heap, void *block,
                                                            bool set_errno)
{
    return free_slow_invalid(heap, block, set_errno, ht__trace_now());
}

/* The end of a traced free to the lookaside list that the inline path will not take (a
 * session with stacks or a consumer, CLOCK_MONOTONIC, the thread's first event). own: the
 * block has this thread's tag (free_body). */
__attribute__((noinline)) static bool push_finish(ht_heap *heap, void *block, bool own)
{
    /* the inline path would decline: straight to the stack or general path */
    emit_event_rest(heap, HT_EVENT_HEAP_FREE, block, 0,
                    own ? ht__trace_now_local() : ht__trace_now());
    DEBUG_VALIDATE(heap);
    return true;
}

/* The free of block in a live heap, one instance per value of traced (a constant): a small
 * block that goes to this thread's lookaside list takes the short way (segment map, the
 * claiming atomic, its size entry, the push); everything else leaves through one of the
 * out-of-line slow paths above. Traced, stamped after the claim and before the block can
 * reach another thread: a block this thread allocated (its tag, src/heap/tcache.c) reuses the
 * thread's last stamp, which is no earlier than the block's ALLOC; any other reads the clock.
 * set_errno false: an invalid block leaves errno as it was (the preload library's free). */
__attribute__((always_inline)) static inline bool free_body(ht_heap *heap, void *block,
                                                            bool set_errno, const bool traced)
{
    if (block == NULL)
        return true;
    uintptr_t p = (uintptr_t)block;
    /* one test: misaligned, or at or above 2^47 (never heaptrail's) */
    uintptr_t bad = (HT_GRANULE - 1) | ~(((uintptr_t)1 << HT_ADDR_BITS) - 1);
    if (HT_UNLIKELY((p & bad) != 0))
        return free_slow(heap, block, set_errno);
    ht_region *r = ht__region_of_known(p);
    if (HT_UNLIKELY(r == NULL || r->heap != heap || r->kind != HT_REGION_SEGMENT ||
                    p < (uintptr_t)r + HT_SEG_META))
        return free_slow(heap, block, set_errno);
    ht_segment *seg = (ht_segment *)r;
    /* no tcache yet (a thread's first call lists the thread) or none (past its thread-exit
     * destructor): the slow path, before the claim, sorts that out */
    ht_tcache *tc = tcache_peek(heap);
    if (HT_UNLIKELY(tc == &ht__tc_none))
        return free_slow(heap, block, set_errno);
    /* claim before reading the header: a racing double free must not read a block that the
     * winner is already coalescing */
    if (HT_UNLIKELY(!ht__live_clear(seg, p, heap->serialize)))
        return traced ? free_slow_invalid_now(heap, block, set_errno)
                      : free_slow_invalid(heap, block, set_errno, 0);
    ht_run *run = ht__run_of(seg, p);
    unsigned cls;
    size_t size, usable;
    uintptr_t meta;
    uint32_t word; /* the block's meta word or MB_SMALL aux: its tag */
    if (run != NULL) {
        uint32_t i = ht__run_index(run, p);
        cls = run->cls;
        usable = run->block_size;
        word = HT_LD(run->meta[i]);
        size = usable - (word & RUN_META_SLACK);
        meta = (uintptr_t)&run->meta[i];
        /* an LFH block of another affinity slot goes home to its run (see release_block);
         * so does one that finds the list full */
        if (HT_UNLIKELY(run->affinity != tc->affinity ||
                        tc->la[cls].count >= heap->la_depth[cls])) {
            return traced ? free_lfh_traced(heap, tc, run, block, size)
                          : free_lfh(heap, tc, run, block, size);
        }
    } else {
        ht_mblock *b = (ht_mblock *)p - 1;
        if ((b->flags & MB_SMALL) == 0)
            return traced ? free_slow_claimed_now(heap, block, r)
                          : free_slow_claimed(heap, block, r, 0);
        cls = b->cls;
        usable = ht__mb_payload(b);
        word = HT_LD(b->aux);
        size = usable - (word & MB_SMALL_SLACK);
        meta = 0;
    }
    ht_lookaside *la = &tc->la[cls];
    if (HT_UNLIKELY(la->count >= heap->la_depth[cls]))
        return traced ? free_slow_claimed_now(heap, block, r)
                      : free_slow_claimed(heap, block, r, 0);
    (void)usable;
    HT_POISON((uint8_t *)block + 2 * sizeof(void *), usable - 2 * sizeof(void *));
    la_push(la, block, meta); /* this thread's own list: no other thread reaches it there */
    stat_add(&tc->st.n_free[HT_SOURCE_LOOKASIDE], 1, false);
    stat_add(&tc->st.bytes_free[HT_SOURCE_LOOKASIDE], size, false);
    if (traced) { /* every call below is a tail call: the path saves no registers */
        bool own = (word & HT_TAG_MASK) == ht__t_tagcmp;
        if (HT_UNLIKELY(!ht__trace_fast_live()))
            return push_finish(heap, block, own);
        uint64_t ts = own ? ht__trace_now_local_tsc() : ht__trace_now_tsc();
        if (HT_UNLIKELY(!ht__trace_emit_fast(HT_EVENT_HEAP_FREE, (uintptr_t)heap, (uintptr_t)block,
                                             0, HT_SOURCE_LOOKASIDE, ts)))
            return push_emit_rest(heap, block, ts);
    }
    DEBUG_VALIDATE(heap);
    return true;
}

/* sw: the switch as free_common read it, not OFF. */
__attribute__((noinline)) static bool free_traced(ht_heap *heap, void *block, bool set_errno,
                                                  unsigned sw)
{
    if (HT_UNLIKELY(sw != HT_TSW_ON) && ht__trace_gate(heap, sw) != HT_TSW_ON)
        return free_body(heap, block, set_errno, false);
    return free_body(heap, block, set_errno, true);
}

/* free of block in a live heap: the traced instance out of line, the untraced inline. */
__attribute__((always_inline)) static inline bool free_common(ht_heap *heap, void *block,
                                                              bool set_errno)
{
    ht__op_begin();
    bool ok;
    unsigned sw = atomic_load_explicit(&heap->trace_on, memory_order_relaxed);
    if (HT_UNLIKELY(sw != HT_TSW_OFF))
        ok = free_traced(heap, block, set_errno, sw);
    else
        ok = free_body(heap, block, set_errno, false);
    ht__op_end();
    return ok;
}

bool ht_heap_free(ht_heap *h, unsigned flags, void *block)
{
    (void)flags;
    ht_heap *heap = ht__heap_check(h);
    if (heap == NULL)
        return false;
    return free_common(heap, block, true);
}

bool ht__heap_free_keep_errno(ht_heap *heap, void *block)
{
    return free_common(heap, block, false);
}

size_t ht_heap_size(ht_heap *h, unsigned flags, const void *block)
{
    (void)flags;
    ht_heap *heap = ht__heap_check(h);
    if (heap == NULL)
        return (size_t)-1;
    blockinfo bi;
    if (block != NULL && classify(heap, (uintptr_t)block, &bi))
        return bi.size;
    ht__op_begin(); /* changes nothing, but its INVALID event waits for the rundown too */
    ht_tcache *tc = tcache_get(heap);
    ht__op_begin();
    ht_op op;
    op_init_entry(&op, heap);
    invalid_free(heap, tc, &op, block, op.trace ? ht__trace_now() : 0, HT_EVENT_FROM_SIZE);
    ht__op_end();
    return (size_t)-1;
}

size_t ht_heap_usable_size(ht_heap *h, const void *block)
{
    ht_heap *heap = ht__heap_check(h);
    if (heap == NULL)
        return (size_t)-1;
    blockinfo bi;
    if (block == NULL || !classify(heap, (uintptr_t)block, &bi)) {
        errno = EINVAL;
        return (size_t)-1;
    }
    return bi.usable;
}

bool ht__validate_block(ht_heap *heap, const void *block);
bool ht__validate_block(ht_heap *heap, const void *block)
{
    blockinfo bi;
    return classify(heap, (uintptr_t)block, &bi);
}

/* ---- realloc ---- */

/* Tries to resize in place; returns the Source, or 0 if it cannot. */
static unsigned realloc_in_place(ht_heap *heap, void *p, blockinfo *bi, size_t size,
                                 bool in_place_only, ht_op *op)
{
    if (bi->cls >= 0) {
        if (size > bi->usable || (!in_place_only && size <= bi->usable / 2))
            return 0;
        unsigned src = bi->run != NULL ? HT_SOURCE_LOWFRAG : HT_SOURCE_MAINPATH;
        /* the block is live (classify saw its bit): only its size entry changes. Setting the
         * bit again would be one more locked instruction, and would bring back a block that
         * a racing free has just claimed and parked (a program bug the heap must survive) */
        small_set_size(ht__seg_of(p), (uintptr_t)p, size, src);
        return src;
    }
    if (bi->mb != NULL) {
        if (size >= heap->large_threshold && !in_place_only)
            return 0;
        ht__heap_lock(heap);
        bool ok = ht__main_resize_locked(heap, bi->mb, size, op);
        unsigned src = op->slow ? HT_SOURCE_SLOWPATH : HT_SOURCE_MAINPATH;
        if (ok) {
            ht__mb_set_busy(bi->mb, size, src);
            HT_UNPOISON(p, ht__mb_payload(bi->mb));
        }
        ht__heap_unlock(heap);
        return ok ? src : 0;
    }
    if (!in_place_only && size < heap->large_threshold / 2)
        return 0;
    ht__heap_lock(heap);
    bool ok = ht__large_resize_locked(heap, bi->large, size, op);
    if (ok) {
        HT_UNPOISON(p, ht__large_capacity(bi->large));
    }
    ht__heap_unlock(heap);
    return ok ? HT_SOURCE_SLOWPATH : 0;
}

static void *realloc_invalid(ht_heap *heap, ht_tcache *tc, ht_op *op, void *block, size_t size)
{
    if ((heap->flags & HT_HEAP_TERMINATE_ON_CORRUPTION) != 0)
        corruption(heap, block, "realloc");
    count_invalid(heap, tc, true, size);
    if (op->trace)
        emit_realloc(heap, op, NULL, block, size, 0, HT_SOURCE_INVALID, 0);
    else
        ht__op_emit_pending(heap, op);
    errno = EINVAL;
    return NULL;
}

static void *realloc_tc(ht_heap *heap, ht_tcache *tc, unsigned flags, void *block, size_t size)
{
    ht_op op;
    op_init_entry(&op, heap);
    blockinfo bi;
    if (!classify(heap, (uintptr_t)block, &bi))
        return realloc_invalid(heap, tc, &op, block, size);
    if (size > ((size_t)1 << HT_ADDR_BITS))
        return alloc_fail(heap, flags, &op, size);
    size_t old = bi.size;
    bool in_place_only = (flags & HT_HEAP_REALLOC_IN_PLACE_ONLY) != 0;
    unsigned src = realloc_in_place(heap, block, &bi, size, in_place_only, &op);
    void *np = block;
    if (src != 0) {
        ht_stat_acc *a = acc_of(heap, tc);
        stat_add(&a->n_alloc[src], 1, tc == NULL);
        stat_add(&a->bytes_alloc[src], size, tc == NULL);
        stat_add(&a->inplace_blocks, 1, tc == NULL);
        stat_add(&a->inplace_bytes, old, tc == NULL);
    } else {
        if (in_place_only)
            return alloc_fail(heap, flags & ~HT_HEAP_GENERATE_EXCEPTIONS, &op, size);
        np = alloc_block(heap, tc, size, HT_GRANULE, &op, &src);
        if (np == NULL)
            return alloc_fail(heap, flags, &op, size);
        /* Every usable byte, not only the requested ones: malloc_usable_size lets a program
         * write them, and glibc's realloc keeps them (the preload library relies on this). */
        memcpy(np, block, bi.usable < size ? bi.usable : size);
        if (!claim(heap, &bi, (uintptr_t)block)) {
            /* lost a race with a concurrent free of the same block: give the new block back
             * unlogged (its allocation was never counted or logged), report INVALID */
            blockinfo nbi;
            if (locate(heap, (uintptr_t)np, &nbi) && claim(heap, &nbi, (uintptr_t)np)) {
                describe((uintptr_t)np, &nbi);
                release_block(heap, tc, np, &nbi, &op);
            }
            return realloc_invalid(heap, tc, &op, block, size);
        }
        stats_alloc(heap, tc, src, size);
        uint64_t ts = op.trace ? ht__trace_now() : 0; /* before the old block is released */
        ht_op fop;
        op_init(&fop, heap);
        fop.trace = op.trace;
        unsigned fsrc = release_block(heap, tc, block, &bi, &fop);
        stats_free(heap, tc, fsrc, old);
        if (op.trace)
            emit_realloc(heap, &op, np, block, size, old, src, ts);
        ht__op_emit_pending(heap, &fop);
        if ((flags & HT_HEAP_ZERO_MEMORY) != 0 && size > old)
            memset((uint8_t *)np + old, 0, size - old);
        return np;
    }
    if ((flags & HT_HEAP_ZERO_MEMORY) != 0 && size > old)
        memset((uint8_t *)np + old, 0, size - old);
    if (op.trace)
        emit_realloc(heap, &op, np, block, size, old, src, 0);
    DEBUG_VALIDATE(heap);
    return np;
}

void *ht_heap_realloc(ht_heap *h, unsigned flags, void *block, size_t size)
{
    ht_heap *heap = ht__heap_check(h);
    if (heap == NULL)
        return NULL;
    ht__op_begin();
    void *p;
    if (block == NULL) {
        p = alloc_common(heap, flags, size, HT_GRANULE);
    } else {
        ht_tcache *tc = tcache_get(heap); /* first: see alloc_common */
        ht__op_begin();
        if (HT_LIKELY(tc != NULL)) {
            p = realloc_tc(heap, tc, flags, block, size);
        } else {
            ht__op_unlisted_begin();
            p = realloc_tc(heap, NULL, flags, block, size);
            ht__op_unlisted_end();
        }
    }
    ht__op_end();
    return p;
}
