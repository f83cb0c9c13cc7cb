/* api.c — the allocation API and its fast paths: route a request to lookaside, LFH, main
 * path or large block; check every pointer exactly (segment map + live bit) before touching
 * the heap; keep the statistics; emit the operation's event after the locks are dropped.
 * Timestamps: an alloc is stamped after the block is obtained, a free before it is released. */
#include "heap/internal.h"

#include "common/log.h"
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

static inline void stat_live(ht_stat_acc *a, int64_t blocks, int64_t bytes, bool shared)
{
    if (shared) {
        atomic_fetch_add_explicit(&a->live_blocks, blocks, memory_order_relaxed);
        atomic_fetch_add_explicit(&a->live_bytes, bytes, memory_order_relaxed);
    } else {
        atomic_store_explicit(&a->live_blocks,
                              atomic_load_explicit(&a->live_blocks, memory_order_relaxed) + blocks,
                              memory_order_relaxed);
        atomic_store_explicit(&a->live_bytes,
                              atomic_load_explicit(&a->live_bytes, memory_order_relaxed) + bytes,
                              memory_order_relaxed);
    }
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
    stat_live(a, 1, (int64_t)size, tc == NULL);
}

static void stats_free(ht_heap *heap, ht_tcache *tc, unsigned src, size_t size)
{
    ht_stat_acc *a = acc_of(heap, tc);
    stat_add(&a->n_free[src], 1, tc == NULL);
    stat_add(&a->bytes_free[src], size, tc == NULL);
    stat_live(a, -1, -(int64_t)size, tc == NULL);
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

static inline void op_init(ht_op *op, ht_heap *heap)
{
    op->trace = atomic_load_explicit(&heap->trace_on, memory_order_relaxed);
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

static void emit_realloc(ht_heap *heap, ht_op *op, const void *np, const void *op_, size_t nsize,
                         size_t osize, unsigned src, uint64_t ts)
{
    ht__op_emit_pending(heap, op);
    ht_event ev;
    memset(&ev, 0, sizeof ev);
    ev.timestamp_ns = ts != 0 ? ts : ht__trace_now();
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

/* Marks a small block (LFH slot or MB_SMALL main block) live with its size and Source. */
static inline void small_mark(ht_heap *heap, ht_segment *seg, uintptr_t p, size_t size,
                              unsigned src)
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
    HT_UNPOISON((void *)p, usable); /* up to the usable size, as malloc_usable_size allows */
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
        bi->size = bi->usable - HT_LD(b->aux);
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
            void *p = la->head;
            if (p != NULL) {
                la->head = *(void **)p;
                la->count--;
                small_mark(heap, ht__seg_of(p), (uintptr_t)p, size, HT_SOURCE_LOOKASIDE);
                *src = HT_SOURCE_LOOKASIDE;
                return p;
            }
        }
        if (atomic_load_explicit(&heap->class_active[cls], memory_order_relaxed) != 0) {
            void *p = ht__lfh_alloc(heap, cls, op);
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

static void *alloc_common(ht_heap *heap, unsigned flags, size_t size, size_t align)
{
    ht_op op;
    op_init(&op, heap);
    if (size > ((size_t)1 << HT_ADDR_BITS))
        return alloc_fail(heap, flags, &op, size);
    ht_tcache *tc = tcache_get(heap);
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

void *ht_heap_alloc(ht_heap *h, unsigned flags, size_t size)
{
    ht_heap *heap = ht__heap_check(h);
    if (heap == NULL)
        return NULL;
    return alloc_common(heap, flags, size, HT_GRANULE);
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
    return alloc_common(heap, flags, size, alignment);
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
            HT_UNPOISON(p, sizeof(void *));
            HT_POISON((uint8_t *)p + sizeof(void *), bi->usable - sizeof(void *));
            *(void **)p = la->head;
            la->head = p;
            la->count++;
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

bool ht_heap_free(ht_heap *h, unsigned flags, void *block)
{
    (void)flags;
    ht_heap *heap = ht__heap_check(h);
    if (heap == NULL)
        return false;
    if (block == NULL)
        return true;
    ht_op op;
    op_init(&op, heap);
    uint64_t ts = op.trace ? ht__trace_now() : 0;
    ht_tcache *tc = tcache_get(heap);
    blockinfo bi;
    /* claim before reading the header: a racing double free must not read a block that the
     * winner is already coalescing */
    if (!locate(heap, (uintptr_t)block, &bi) || !claim(heap, &bi, (uintptr_t)block))
        return invalid_free(heap, tc, &op, block, ts, 0);
    describe((uintptr_t)block, &bi);
    unsigned src = release_block(heap, tc, block, &bi, &op);
    stats_free(heap, tc, src, bi.size);
    if (op.trace)
        emit_free(heap, &op, block, src, ts, 0);
    DEBUG_VALIDATE(heap);
    return true;
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
    ht_op op;
    op_init(&op, heap);
    invalid_free(heap, tcache_get(heap), &op, block, op.trace ? ht__trace_now() : 0,
                 HT_EVENT_FROM_SIZE);
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
        small_mark(heap, ht__seg_of(p), (uintptr_t)p, size, src);
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

void *ht_heap_realloc(ht_heap *h, unsigned flags, void *block, size_t size)
{
    ht_heap *heap = ht__heap_check(h);
    if (heap == NULL)
        return NULL;
    if (block == NULL)
        return alloc_common(heap, flags, size, HT_GRANULE);
    ht_op op;
    op_init(&op, heap);
    ht_tcache *tc = tcache_get(heap);
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
        stat_live(a, 0, (int64_t)size - (int64_t)old, tc == NULL);
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
