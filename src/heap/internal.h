/* internal.h — cross-file prototypes of the heap manager, grouped by the file that defines
 * them, and the small inline helpers of the fast paths (region lookup, live bits). */
#ifndef HT_HEAP_INTERNAL_H
#define HT_HEAP_INTERNAL_H

#include "heap/shim.h"
#include "heap/types.h"

#include "common/os.h"
#include "common/thread_hot.h"
#include "trace/trace.h"

#include <string.h>

/* ASan builds: the heap tells ASan which bytes of its own memory are blocks' requested bytes,
 * so a test that overruns a block into its slack or touches a freed block is caught. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define HT_POISON(p, n)   ASAN_POISON_MEMORY_REGION((p), (n))
#define HT_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define HT_POISON(p, n)   ((void)(p), (void)(n))
#define HT_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define HT_LIKELY(x)   __builtin_expect(!!(x), 1)
#define HT_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* -- segment.c: the segment map, segments, large blocks -- */
extern _Atomic(uintptr_t) *ht__segmap;
bool ht__segmap_init(void);
void ht__segmap_set(uintptr_t base, size_t size, const ht_region *region);
ht_segment *ht__segment_new(ht_heap *heap, size_t min_area, ht_op *op);
bool ht__segment_extend(ht_heap *heap, ht_segment *seg, size_t min_bytes, ht_op *op);
void ht__segment_release(ht_heap *heap, ht_segment *seg, ht_op *op);
ht_large *ht__large_alloc_locked(ht_heap *heap, size_t size, size_t align, ht_op *op);
void ht__large_free_locked(ht_heap *heap, ht_large *large, ht_op *op);
bool ht__large_resize_locked(ht_heap *heap, ht_large *large, size_t size, ht_op *op);
size_t ht__large_capacity(const ht_large *large);
void ht__large_release(ht_heap *heap, ht_large *large, ht_op *op);
void ht__op_expand(ht_heap *heap, ht_op *op, uintptr_t address, size_t size);
void ht__op_contract(ht_heap *heap, ht_op *op, uintptr_t address, size_t size);
bool ht__commit_allowed(const ht_heap *heap, size_t more_area);

/* -- backend.c: the main path (heap lock held for all) -- */
ht_mblock *ht__main_alloc_locked(ht_heap *heap, size_t payload, size_t align, ht_op *op);
void ht__main_free_locked(ht_heap *heap, ht_mblock *block, ht_op *op);
bool ht__main_resize_locked(ht_heap *heap, ht_mblock *block, size_t payload, ht_op *op);
void ht__main_insert_free_locked(ht_heap *heap, ht_fblock *f);
void ht__main_remove_free_locked(ht_heap *heap, ht_fblock *f);
/* Decommits free interiors until free_committed <= target or the op's events are full;
 * min_pages: smallest interior worth it. Returns pages decommitted. */
size_t ht__main_decommit_locked(ht_heap *heap, size_t target, size_t min_pages, ht_op *op);
size_t ht__main_largest_free_locked(const ht_heap *heap);
unsigned ht__main_fl_index(size_t size);

/* -- lfh.c: size classes and the low-fragmentation front end -- */
extern const uint32_t ht__class_size[HT_N_CLASSES];
/* A block of class cls from one of its runs (the run in *run_out), or NULL. */
void *ht__lfh_alloc(ht_heap *heap, unsigned cls, ht_op *op, ht_run **run_out);
/* The same for a known affinity slot aff (< HT_LFH_AFFINITY). */
void *ht__lfh_alloc_aff(ht_heap *heap, unsigned cls, unsigned aff, ht_op *op, ht_run **run_out);
void ht__lfh_free(ht_heap *heap, ht_run *run, void *block, ht_op *op);
/* Gives runs with no block out back to the main path (bins and heap lock held). */
void ht__lfh_release_empty_locked(ht_heap *heap, ht_op *op, bool all);

/* -- tcache.c: per-thread lookaside lists and statistics shares -- */
ht_tcache *ht__tcache_get_slow(ht_heap *heap);
void ht__tcache_flush(ht_tcache *tc, ht_heap *heap);
void ht__tcache_detach_all_locked(ht_heap *heap);             /* registry lock held */
void ht__stats_sum_locked(ht_heap *heap, ht_heap_stats *out); /* registry lock held */
/* fork: the object pools' locks (leaves: taken after the registry and heap locks) are held
 * across fork and made free in the child, like every other heap lock. */
void ht__tcache_fork_prepare(void);
void ht__tcache_fork_parent(void);
void ht__tcache_fork_child(void);
extern __thread ht_tls *ht__tls __attribute__((tls_model("initial-exec")));
/* The calling thread's tcache of the process heap (heap index 0), or ht__tc_none: every list
 * empty and full (count >= any depth), affinity matching no thread, so a fast path that reads
 * it falls through to the slow one without a separate check. */
extern __thread ht_tcache *ht__tc_process __attribute__((tls_model("initial-exec")));
extern ht_tcache ht__tc_none;

/* -- heap.c: heap table, registry, locks -- */
extern ht_rlock ht__registry_lock;  /* recursive; see common/lock.h */
extern uint8_t *ht__heap_table;     /* HT_MAX_HEAPS slots of HT_HEAP_SLOT_SIZE bytes */
ht_heap *ht__heap_check_fail(void); /* sets EINVAL, returns NULL */
/* ht__heap_check (inline, below): heap, or NULL + EINVAL if it is not a live heap. */
void ht__heap_lock(ht_heap *heap);
void ht__heap_unlock(ht_heap *heap);
/* ht__bin_lock / ht__bin_unlock: inline, below */
void ht__heap_lock_all(ht_heap *heap); /* bins then heap lock (skips what the api holds) */
void ht__heap_unlock_all(ht_heap *heap);
void ht__op_emit_pending(ht_heap *heap, ht_op *op);
void ht__heap_init_once(void);
/* A call that read heap's switch as PENDING or WALKING at its entry (sw): waits until the
 * rundown has walked the heap, unless the calling thread may not wait (it holds some heap's
 * ht_heap_lock, or runs inside a consumer): then the call goes on untraced and the walk
 * waits for it instead. Returns the switch the call goes on with (not ON: untraced). Called
 * between ht__op_begin and ht__op_end. */
unsigned ht__trace_gate(ht_heap *heap, unsigned sw);
/* A call on a thread with no tcache (past its thread-exit destructor): not on the rundown's
 * list of threads, so it counts itself while it runs, from before it reads the switch. */
void ht__op_unlisted_begin(void);
void ht__op_unlisted_end(void);
/* -- tcache.c: the threads a rundown waits on -- */
/* Calls fn(tls, ctx) for every linked thread (the list's own lock held: fn must not block). */
void ht__tls_each(void (*fn)(ht_tls *tls, void *ctx), void *ctx);

/* -- walk.c -- */
bool ht__walk_locked(ht_heap *heap, ht_heap_entry *entry);

/* ---- inline helpers ---- */

/* The calls in flight, as a rundown sees them: every public call that may change which blocks
 * are live sets the calling thread's ht__t_in_call before it reads the heap's trace switch,
 * and clears it once it has changed all it changes. A rundown switches the heaps to PENDING,
 * makes those stores visible (membarrier: an asymmetric Dekker, so a call pays two plain
 * stores and no fence), and waits until it has seen each thread out of a call: a call that
 * read OFF is over before any walk, and one that read PENDING waits for the walk at its entry
 * (ht__trace_gate). A call made inside another (from a consumer, after the outer one changed
 * what it changes) clears the flag early, which is all right: the outer one is past its
 * changes; the slow paths set it again after anything that may call back in (tcache_get). */
static inline void ht__op_begin(void)
{
    atomic_store_explicit(&ht__t_in_call, 1, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst);
}

static inline void ht__op_end(void)
{
    atomic_store_explicit(&ht__t_in_call, 0, memory_order_release);
}

/* The switch at a call's entry (after ht__op_begin), through the gate when a rundown has not
 * walked the heap yet. */
static inline unsigned ht__trace_switch(ht_heap *heap)
{
    unsigned sw = atomic_load_explicit(&heap->trace_on, memory_order_relaxed);
    if (HT_UNLIKELY(sw > HT_TSW_ON))
        sw = ht__trace_gate(heap, sw);
    return sw;
}

/* The handle check of every API call: a slot of the heap table (one mask test: below the
 * table, misaligned and past its end all leave bits outside the slot-index bits) holding a
 * live heap. */
static inline ht_heap *ht__heap_check(const ht_heap *heap)
{
    uint8_t *table = ht__heap_table;
    uintptr_t off = (uintptr_t)heap - (uintptr_t)table;
    uintptr_t bad = ~(uintptr_t)((HT_MAX_HEAPS * HT_HEAP_SLOT_SIZE - 1) & ~(HT_HEAP_SLOT_SIZE - 1));
    if (HT_LIKELY(table != NULL && (off & bad) == 0 &&
                  atomic_load_explicit(&((ht_heap *)heap)->magic, memory_order_acquire) ==
                      HT_HEAP_MAGIC))
        return (ht_heap *)heap;
    (void)ht__heap_check_fail();
    return NULL;
}

/* The region of p for a fast path that already holds a live heap (so the segment map
 * exists); p must be below 2^47. */
static inline ht_region *ht__region_of_known(uintptr_t p)
{
    return (ht_region *)atomic_load_explicit(&ht__segmap[p >> HT_SEG_SHIFT], memory_order_acquire);
}

/* A bin's lock, unless the heap is unserialized or this thread holds ht_heap_lock (which
 * holds every bin). Inline: every LFH operation takes one. */
static inline bool ht__bin_lock_needed(ht_heap *heap)
{
    if (!heap->serialize)
        return false;
    int owner = atomic_load_explicit(&heap->api_owner, memory_order_relaxed);
    return HT_LIKELY(owner == 0) || (uint32_t)owner != ht__trace_tid();
}

static inline void ht__bin_lock(ht_heap *heap, ht_bin *bin)
{
    if (ht__bin_lock_needed(heap))
        ht__spin_lock(&bin->lock);
}

static inline void ht__bin_unlock(ht_heap *heap, ht_bin *bin)
{
    if (ht__bin_lock_needed(heap))
        ht__spin_unlock(&bin->lock);
}

static inline size_t ht__align_up(size_t v, size_t a)
{
    return (v + a - 1) & ~(a - 1);
}

static inline ht_region *ht__region_of(uintptr_t p)
{
    if (HT_UNLIKELY((p >> HT_ADDR_BITS) != 0))
        return NULL;
    _Atomic(uintptr_t) *map = ht__segmap;
    if (HT_UNLIKELY(map == NULL))
        return NULL;
    return (ht_region *)atomic_load_explicit(&map[p >> HT_SEG_SHIFT], memory_order_acquire);
}

static inline size_t ht__granule(const ht_segment *seg, uintptr_t p)
{
    return (p - (uintptr_t)seg) >> 4;
}

static inline bool ht__live_test(ht_segment *seg, uintptr_t p)
{
    size_t g = ht__granule(seg, p);
    return (atomic_load_explicit(&seg->live[g >> 6], memory_order_relaxed) >> (g & 63) & 1u) != 0;
}

/* Sets the bit. shared: other threads may change other bits of the word at the same time
 * (serialized heaps); otherwise the caller serializes every access to the heap. */
static inline void ht__live_set(ht_segment *seg, uintptr_t p, bool shared)
{
    size_t g = ht__granule(seg, p);
    uint64_t bit = (uint64_t)1 << (g & 63);
    if (HT_LIKELY(shared))
        atomic_fetch_or_explicit(&seg->live[g >> 6], bit, memory_order_relaxed);
    else
        atomic_store_explicit(&seg->live[g >> 6],
                              atomic_load_explicit(&seg->live[g >> 6], memory_order_relaxed) | bit,
                              memory_order_relaxed);
}

/* Clears the bit; true iff it was set (with shared, exactly one of racing callers wins). */
static inline bool ht__live_clear(ht_segment *seg, uintptr_t p, bool shared)
{
    size_t g = ht__granule(seg, p);
    uint64_t bit = (uint64_t)1 << (g & 63);
    if (HT_LIKELY(shared))
        return (atomic_fetch_and_explicit(&seg->live[g >> 6], ~bit, memory_order_relaxed) & bit) !=
               0;
    uint64_t w = atomic_load_explicit(&seg->live[g >> 6], memory_order_relaxed);
    atomic_store_explicit(&seg->live[g >> 6], w & ~bit, memory_order_relaxed);
    return (w & bit) != 0;
}

static inline ht_run *ht__run_of(ht_segment *seg, uintptr_t p)
{
    uint16_t pm = seg->pagemap[(p - (uintptr_t)seg) >> 12];
    if (pm == 0)
        return NULL;
    return (ht_run *)((uint8_t *)seg + (size_t)(pm - 1u) * HT_PAGE_SIZE);
}

static inline uint32_t ht__run_index(const ht_run *run, uintptr_t p)
{
    return (uint32_t)(((uint64_t)(p - (uintptr_t)run->first) * run->inv) >> 40);
}

/* Block metadata written outside the heap locks (a lookaside pop, an in-place realloc)
 * while a walk or validation may read it under them: relaxed atomic loads and stores, which
 * cost nothing more than plain ones on x86-64 and keep ThreadSanitizer informed. */
#define HT_LD(x)    __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define HT_ST(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)

/* ht__t_tagbits (src/common/thread_hot.h): this thread's block tag, shifted: tag <<
 * HT_TAG_SHIFT, 0 while it has none (src/heap/tcache.c). Every write of a small block's busy
 * metadata stores it. ht__t_tagcmp: what a block's tag bits (meta & HT_TAG_MASK) equal iff
 * this thread made it: ht__t_tagbits, or HT_TAG_CMP_NONE, which no masked value equals, while
 * the thread has no tag. */

/* Per-block metadata of run slot i: the requested size, the Source that served it and the
 * calling thread's tag. */
static inline uint32_t ht__run_meta_word(size_t slack, unsigned src)
{
    return (uint32_t)slack | (src - 1u) << RUN_META_SRC_SHIFT | ht__t_tagbits;
}

static inline void ht__run_meta_set(ht_run *run, uint32_t i, size_t size, unsigned src)
{
    HT_ST(run->meta[i], ht__run_meta_word(run->block_size - size, src));
}

static inline size_t ht__run_meta_size(const ht_run *run, uint32_t i)
{
    return run->block_size - (HT_LD(run->meta[i]) & RUN_META_SLACK);
}

static inline unsigned ht__run_meta_source(const ht_run *run, uint32_t i)
{
    return (unsigned)(HT_LD(run->meta[i]) >> RUN_META_SRC_SHIFT & 3u) + 1u;
}

/* A busy main block's requested size and Source; an MB_SMALL one also takes the calling
 * thread's tag (its flag must be set first). */
static inline void ht__mb_set_busy(ht_mblock *b, size_t size, unsigned src)
{
    uint32_t slack = (uint32_t)((((size_t)b->size16 << 4) - sizeof(ht_mblock)) - size);
    HT_ST(b->aux, (b->flags & MB_SMALL) != 0 ? slack | ht__t_tagbits : slack);
    HT_ST(b->source, (uint8_t)src);
}

/* A busy main block's payload bytes beyond the requested size. */
static inline size_t ht__mb_slack(const ht_mblock *b)
{
    uint32_t aux = HT_LD(b->aux);
    return (b->flags & MB_SMALL) != 0 ? aux & MB_SMALL_SLACK : aux;
}

static inline unsigned ht__size_class(size_t n)
{
    if (n <= 128)
        return n == 0 ? 0u : (unsigned)((n + 15) / 16 - 1);
    size_t m = n - 1;
    unsigned lg = 63u - (unsigned)__builtin_clzll(m);
    return 8u + (lg - 7u) * 4u + (unsigned)(m >> (lg - 2u)) - 4u;
}

static inline size_t ht__mb_size(const ht_mblock *b)
{
    return (size_t)b->size16 << 4;
}

static inline size_t ht__mb_payload(const ht_mblock *b)
{
    return ((size_t)b->size16 << 4) - sizeof(ht_mblock);
}

static inline ht_mblock *ht__mb_next(const ht_mblock *b)
{
    return (ht_mblock *)((uint8_t *)b + ((size_t)b->size16 << 4));
}

static inline ht_mblock *ht__mb_prev(const ht_mblock *b)
{
    return (ht_mblock *)((uint8_t *)b - ((size_t)b->prev_size16 << 4));
}

static inline ht_segment *ht__seg_of(const void *p)
{
    return (ht_segment *)((uintptr_t)p & ~(uintptr_t)(HT_SEG_SIZE - 1));
}

#endif
