/* walk.c — looking at a whole heap: the walk (busy and free entries, LFH slots one by one),
 * the full consistency check behind ht_heap_validate(heap, 0, NULL), and compaction. All of
 * it runs under every lock of the heap (bins, then the heap lock). */
#include "heap/internal.h"

#include "common/log.h"

#include <errno.h>

bool ht__validate_block(ht_heap *heap, const void *block);

/* cursor_[0]: phase (0 segments, 1 live large, 2 cached large, 3 end)
 * cursor_[1]: current segment / large block
 * cursor_[2]: next main block header in the segment (0: the first)
 * cursor_[3]: next slot index + 1 within the run at cursor_[2]'s previous block (0: none) */

static void fill(ht_heap_entry *e, void *addr, size_t size, unsigned state, unsigned source,
                 void *region, size_t region_size)
{
    e->address = addr;
    e->size = size;
    e->state = state;
    e->source = source;
    e->region = region;
    e->region_size = region_size;
}

bool ht__walk_locked(ht_heap *heap, ht_heap_entry *e)
{
    if (e->address == NULL) {
        e->cursor_[0] = 0;
        e->cursor_[1] = (uintptr_t)heap->segs;
        e->cursor_[2] = 0;
        e->cursor_[3] = 0;
    }
    for (;;) {
        switch (e->cursor_[0]) {
        case 0: {
            ht_segment *seg = (ht_segment *)e->cursor_[1];
            if (seg == NULL) {
                e->cursor_[0] = 1;
                e->cursor_[1] = (uintptr_t)heap->larges;
                continue;
            }
            ht_mblock *b = e->cursor_[2] != 0 ? (ht_mblock *)e->cursor_[2]
                                              : (ht_mblock *)((uint8_t *)seg + HT_SEG_META);
            if (b->flags & MB_SENTINEL) {
                e->cursor_[1] = (uintptr_t)seg->next;
                e->cursor_[2] = 0;
                e->cursor_[3] = 0;
                continue;
            }
            uintptr_t user = (uintptr_t)(b + 1);
            if (b->flags & MB_RUN) {
                ht_run *run = (ht_run *)user;
                uint32_t i = e->cursor_[3] != 0 ? (uint32_t)(e->cursor_[3] - 1) : 0;
                if (i >= run->n_blocks) {
                    e->cursor_[2] = (uintptr_t)ht__mb_next(b);
                    e->cursor_[3] = 0;
                    continue;
                }
                e->cursor_[2] = (uintptr_t)b;
                e->cursor_[3] = i + 2;
                uintptr_t slot = (uintptr_t)run->first + (size_t)i * run->block_size;
                if (i < run->n_carved && ht__live_test(seg, slot)) {
                    fill(e, (void *)slot, ht__run_meta_size(run, i), HT_ENTRY_BUSY | HT_ENTRY_LFH,
                         ht__run_meta_source(run, i), seg, HT_SEG_SIZE);
                } else {
                    fill(e, (void *)slot, run->block_size, HT_ENTRY_FREE | HT_ENTRY_LFH, 0, seg,
                         HT_SEG_SIZE);
                }
                return true;
            }
            e->cursor_[2] = (uintptr_t)ht__mb_next(b);
            e->cursor_[3] = 0;
            if ((b->flags & MB_BUSY) && ht__live_test(seg, user))
                fill(e, (void *)user, ht__mb_payload(b) - ht__mb_slack(b), HT_ENTRY_BUSY,
                     HT_LD(b->source), seg, HT_SEG_SIZE);
            else
                fill(e, (void *)user, ht__mb_payload(b), HT_ENTRY_FREE, 0, seg, HT_SEG_SIZE);
            return true;
        }
        case 1:
        case 2: {
            ht_large *l = (ht_large *)e->cursor_[1];
            if (l == NULL) {
                e->cursor_[0]++;
                e->cursor_[1] = e->cursor_[0] == 2 ? (uintptr_t)heap->large_cache : 0;
                continue;
            }
            e->cursor_[1] = (uintptr_t)l->next;
            if (e->cursor_[0] == 1)
                fill(e, (void *)l->user, l->size, HT_ENTRY_BUSY | HT_ENTRY_LARGE,
                     HT_SOURCE_SLOWPATH, l, l->r.reserve_size);
            else
                fill(e, (void *)l->user, ht__large_capacity(l), HT_ENTRY_FREE | HT_ENTRY_LARGE, 0,
                     l, l->r.reserve_size);
            return true;
        }
        default:
            errno = ENOENT;
            return false;
        }
    }
}

/* The public walk keeps a check value in the high half of cursor_[3], so a cursor the caller
 * did not get from the previous call (garbage, or from another heap) is refused, not followed. */
static uint32_t cursor_mac(const ht_heap *heap, const ht_heap_entry *e)
{
    uint64_t h = heap->gen * 0x9e3779b97f4a7c15u;
    for (int i = 0; i < 3; i++)
        h = (h ^ e->cursor_[i]) * 0xff51afd7ed558ccdu;
    h = (h ^ (e->cursor_[3] & 0xffffffffu)) * 0xc4ceb9fe1a85ec53u;
    return (uint32_t)(h >> 32);
}

static bool in_list(const void *x, const void *head, size_t next_off)
{
    for (const uint8_t *p = head; p != NULL; p = *(const uint8_t *const *)(p + next_off))
        if (p == x)
            return true;
    return false;
}

/* A cursor that passed the check value may still be stale if the heap changed between calls
 * without ht_heap_lock: make sure it still points at something the walk can follow. */
static bool cursor_ok(ht_heap *heap, const ht_heap_entry *e)
{
    if ((uint32_t)(e->cursor_[3] >> 32) != cursor_mac(heap, e))
        return false;
    switch (e->cursor_[0]) {
    case 0: {
        const ht_segment *seg = (const ht_segment *)e->cursor_[1];
        if (seg == NULL)
            return true;
        if (!in_list(seg, heap->segs, offsetof(ht_segment, next)))
            return false;
        if (e->cursor_[2] == 0)
            return true;
        uintptr_t lo = (uintptr_t)seg + HT_SEG_META;
        uintptr_t end = lo + seg->area_size;
        const ht_mblock *b = (const ht_mblock *)e->cursor_[2];
        if (e->cursor_[2] < lo || e->cursor_[2] + sizeof(ht_mblock) > end ||
            (e->cursor_[2] & (HT_GRANULE - 1)) != 0 || b->tag != HT_MB_TAG || b->size16 == 0 ||
            e->cursor_[2] + ht__mb_size(b) > end)
            return false;
        if ((e->cursor_[3] & 0xffffffffu) != 0)
            return (b->flags & MB_RUN) != 0 && ((const ht_run *)(b + 1))->magic == HT_RUN_MAGIC;
        return true;
    }
    case 1:
        return e->cursor_[1] == 0 ||
               in_list((const void *)e->cursor_[1], heap->larges, offsetof(ht_large, next));
    case 2:
        return e->cursor_[1] == 0 ||
               in_list((const void *)e->cursor_[1], heap->large_cache, offsetof(ht_large, next));
    case 3:
        return true;
    default:
        return false;
    }
}

bool ht_heap_walk(ht_heap *h, ht_heap_entry *entry)
{
    ht_heap *heap = ht__heap_check(h);
    if (heap == NULL)
        return false;
    if (entry == NULL) {
        errno = EINVAL;
        return false;
    }
    ht__heap_lock_all(heap);
    bool ok = false;
    if (entry->address != NULL && !cursor_ok(heap, entry)) {
        errno = EINVAL;
    } else {
        entry->cursor_[3] &= 0xffffffffu;
        ok = ht__walk_locked(heap, entry);
        entry->cursor_[3] =
            (entry->cursor_[3] & 0xffffffffu) | ((uint64_t)cursor_mac(heap, entry) << 32);
    }
    ht__heap_unlock_all(heap);
    return ok;
}

/* ---- validation ---- */

#if HT_DEBUG >= 1
#define BAD(what) (ht__log("heaptrail: heap %p invalid: %s\n", (void *)heap, what), false)
#else
#define BAD(what) ((void)heap, false)
#endif

/* True iff every live bit of seg in [lo, hi) is at first + k * stride for some k < n.
 * Lookaside pushes and pops on other threads set and clear bits without a lock, but only at
 * such places, so this holds even while other threads work. */
static bool bits_only_at(ht_segment *seg, uintptr_t lo, uintptr_t hi, uintptr_t first,
                         size_t stride, size_t n)
{
    for (size_t g = ht__granule(seg, lo), ge = ht__granule(seg, hi); g < ge;) {
        uint64_t w = atomic_load_explicit(&seg->live[g >> 6], memory_order_relaxed) >> (g & 63);
        if (w == 0) {
            g = (g | 63u) + 1u;
            continue;
        }
        g += (size_t)__builtin_ctzll(w);
        if (g >= ge)
            break;
        uintptr_t a = (uintptr_t)seg + (g << 4);
        if (a < first || (a - first) % stride != 0 || (a - first) / stride >= n)
            return false;
        g++;
    }
    return true;
}

static bool check_run(ht_heap *heap, ht_segment *seg, ht_run *run, uint32_t *n_empty)
{
    if (run->magic != HT_RUN_MAGIC || run->cls >= HT_N_CLASSES ||
        run->block_size != ht__class_size[run->cls])
        return BAD("run header");
    if (run->n_carved > run->n_blocks || run->n_used > run->n_carved ||
        run->n_used + run->n_free_list != run->n_carved)
        return BAD("run counts");
    if (run->first + (size_t)run->n_blocks * run->block_size >
        (uint8_t *)run + (size_t)run->n_pages * HT_PAGE_SIZE)
        return BAD("run bounds");
    if ((uint8_t *)&run->meta[run->n_blocks] > run->first)
        return BAD("run meta overlap");
    size_t first_page = ((uintptr_t)run - (uintptr_t)seg) / HT_PAGE_SIZE;
    for (size_t i = 0; i < run->n_pages; i++)
        if (seg->pagemap[first_page + i] != first_page + 1)
            return BAD("run page map");
    uint32_t n = 0;
    for (void *p = run->free_list; p != NULL; p = *(void **)p) {
        uintptr_t a = (uintptr_t)p;
        if (a < (uintptr_t)run->first ||
            a >= (uintptr_t)run->first + (size_t)run->n_carved * run->block_size ||
            (a - (uintptr_t)run->first) % run->block_size != 0)
            return BAD("run free list entry");
        if (ht__live_test(seg, a))
            return BAD("live block on a run free list");
        if (++n > run->n_carved)
            return BAD("run free list cycle");
    }
    if (n != run->n_free_list)
        return BAD("run free list length");
    if (!bits_only_at(seg, (uintptr_t)run, (uintptr_t)run + (size_t)run->n_pages * HT_PAGE_SIZE,
                      (uintptr_t)run->first, run->block_size, run->n_carved))
        return BAD("live bit off a run slot");
    if (run->n_used == 0)
        (*n_empty)++;
    return true;
}

static bool check_heap(ht_heap *heap)
{
    size_t committed = 0, free_committed = 0, reserved = 0, n_free_blocks = 0;
    /* On the stack, not static: checks of two heaps run at once under their own locks. */
    uint32_t runs[HT_LFH_AFFINITY][HT_N_CLASSES] = {{0}};
    uint32_t empties[HT_LFH_AFFINITY][HT_N_CLASSES] = {{0}};
    for (ht_segment *seg = heap->segs; seg != NULL; seg = seg->next) {
        if (seg->r.magic != HT_REGION_MAGIC || seg->r.kind != HT_REGION_SEGMENT ||
            seg->r.heap != heap || ((uintptr_t)seg & (HT_SEG_SIZE - 1)) != 0)
            return BAD("segment header");
        if (ht__region_of((uintptr_t)seg) != &seg->r)
            return BAD("segment map");
        if (seg->r.commit_size != HT_SEG_META + seg->area_size || seg->area_size > HT_SEG_AREA_MAX)
            return BAD("segment sizes");
        committed += seg->r.commit_size;
        reserved += seg->r.reserve_size;
        uint8_t *end = (uint8_t *)seg + HT_SEG_META + seg->area_size;
        ht_mblock *b = (ht_mblock *)((uint8_t *)seg + HT_SEG_META);
        ht_mblock *prev = NULL;
        size_t run_pages = 0;
        if (!bits_only_at(seg, (uintptr_t)seg, (uintptr_t)seg + HT_SEG_META, 0, 1, 0) ||
            !bits_only_at(seg, (uintptr_t)end, (uintptr_t)seg + HT_SEG_SIZE, 0, 1, 0))
            return BAD("live bit outside the area");
        for (;;) {
            if ((uint8_t *)b + sizeof(ht_mblock) > end || b->tag != HT_MB_TAG || b->size16 == 0)
                return BAD("block header");
            if (b->prev_size16 != (prev != NULL ? prev->size16 : 0u))
                return BAD("boundary tag");
            if (b->flags & MB_SENTINEL) {
                if ((uint8_t *)b + sizeof(ht_mblock) != end)
                    return BAD("sentinel position");
                break;
            }
            if ((uint8_t *)ht__mb_next(b) > end - sizeof(ht_mblock))
                return BAD("block overruns area");
            if ((b->flags & MB_BUSY) == 0) {
                if (prev != NULL && (prev->flags & MB_BUSY) == 0)
                    return BAD("adjacent free blocks");
                if ((ht__mb_next(b)->flags & MB_BUSY) == 0)
                    return BAD("adjacent free blocks");
                if (!bits_only_at(seg, (uintptr_t)b, (uintptr_t)ht__mb_next(b), 0, 1, 0))
                    return BAD("live bit on a free block");
                size_t interior = 0;
                uintptr_t lo = ht__align_up((uintptr_t)b + sizeof(ht_fblock), HT_PAGE_SIZE);
                uintptr_t hi = ((uintptr_t)b + ht__mb_size(b)) & ~(uintptr_t)(HT_PAGE_SIZE - 1);
                if (hi > lo)
                    interior = (hi - lo) / HT_PAGE_SIZE;
                if (b->aux > interior)
                    return BAD("decommitted pages");
                committed -= (size_t)b->aux * HT_PAGE_SIZE;
                free_committed += ht__mb_size(b) - (size_t)b->aux * HT_PAGE_SIZE;
                n_free_blocks++;
            } else if (b->flags & MB_RUN) {
                ht_run *run = (ht_run *)(b + 1);
                if (run->cls >= HT_N_CLASSES || run->affinity >= HT_LFH_AFFINITY)
                    return BAD("run class");
                if (!check_run(heap, seg, run, &empties[run->affinity][run->cls]))
                    return false;
                runs[run->affinity][run->cls]++;
                run_pages += run->n_pages;
                if (!bits_only_at(seg, (uintptr_t)b, (uintptr_t)run, 0, 1, 0))
                    return BAD("live bit on a run header");
            } else {
                if (ht__mb_slack(b) > ht__mb_payload(b))
                    return BAD("block slack");
                if ((b->flags & MB_SMALL) &&
                    (b->cls >= HT_N_CLASSES || ht__mb_payload(b) < ht__class_size[b->cls]))
                    return BAD("small block class");
                if (!bits_only_at(seg, (uintptr_t)b, (uintptr_t)ht__mb_next(b), (uintptr_t)(b + 1),
                                  1, 1))
                    return BAD("live bit inside a block");
            }
            prev = b;
            b = ht__mb_next(b);
        }
        size_t mapped = 0;
        for (size_t i = 0; i < HT_SEG_PAGES; i++)
            if (seg->pagemap[i] != 0)
                mapped++;
        if (mapped != run_pages)
            return BAD("page map entries outside runs");
    }
    size_t in_lists = 0;
    for (unsigned i = 0; i < HT_N_FREELISTS; i++) {
        bool bit = (heap->fl_map[i >> 6] >> (i & 63) & 1u) != 0;
        if (bit != (heap->fl[i] != NULL))
            return BAD("free list bitmap");
        const ht_fblock *prev = NULL;
        for (const ht_fblock *f = heap->fl[i]; f != NULL; f = f->next) {
            if ((f->h.flags & MB_BUSY) != 0 || f->prev != prev ||
                ht__main_fl_index(ht__mb_size(&f->h)) != i)
                return BAD("free list entry");
            if (++in_lists > n_free_blocks)
                return BAD("free list has foreign entries");
            prev = f;
        }
    }
    if (in_lists != n_free_blocks)
        return BAD("free block missing from the free lists");
    if (free_committed != heap->free_committed)
        return BAD("free committed count");
    for (unsigned a = 0; a < HT_LFH_AFFINITY; a++)
        for (unsigned c = 0; c < HT_N_CLASSES; c++)
            if (runs[a][c] != heap->bins[a][c].n_runs || empties[a][c] != heap->bins[a][c].n_empty)
                return BAD("bin run counts");
    size_t cache_bytes = 0;
    unsigned n_cache = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (ht_large *l = pass == 0 ? heap->larges : heap->large_cache; l != NULL; l = l->next) {
            if (l->r.magic != HT_REGION_MAGIC || l->r.kind != HT_REGION_LARGE ||
                l->r.heap != heap || l->user < (uintptr_t)l + sizeof(ht_large) ||
                l->user > (uintptr_t)l + l->r.commit_size || l->r.commit_size > l->r.reserve_size)
                return BAD("large block header");
            if (ht__region_of((uintptr_t)l) != &l->r ||
                ht__region_of((uintptr_t)l + l->r.reserve_size - 1) != &l->r)
                return BAD("large block map");
            /* a block on the live list may be mid-free (claimed, not yet unlinked) */
            if (pass == 1 && atomic_load(&l->live) != 0)
                return BAD("large block state");
            if (pass == 0 && l->size > ht__large_capacity(l))
                return BAD("large block size");
            committed += l->r.commit_size;
            reserved += l->r.reserve_size;
            if (pass == 1) {
                cache_bytes += l->r.commit_size;
                n_cache++;
            }
        }
    }
    if (cache_bytes != heap->large_cache_bytes || n_cache != heap->n_large_cache)
        return BAD("large cache counts");
    if (committed != heap->committed)
        return BAD("committed bytes");
    if (reserved != heap->reserved)
        return BAD("reserved bytes");
    return true;
}

bool ht_heap_validate(ht_heap *h, unsigned flags, const void *block)
{
    (void)flags;
    ht_heap *heap = ht__heap_check(h);
    if (heap == NULL)
        return false;
    if (block != NULL)
        return ht__validate_block(heap, block);
    ht__heap_lock_all(heap);
    bool ok = check_heap(heap);
    ht__heap_unlock_all(heap);
    return ok;
}

/* ---- compaction ---- */

/* One unit of compaction work; false when nothing is left. */
static bool compact_step(ht_heap *heap, ht_op *op)
{
    if (heap->large_cache != NULL) {
        ht_large *l = heap->large_cache;
        heap->large_cache = l->next;
        if (l->next != NULL)
            l->next->prev = NULL;
        heap->n_large_cache--;
        heap->large_cache_bytes -= l->r.commit_size;
        ht__large_release(heap, l, op);
        return true;
    }
    /* a segment other than the last one standing, wholly free */
    for (ht_segment *seg = heap->segs; seg != NULL; seg = seg->next) {
        if (heap->segs == seg && seg->next == NULL)
            break;
        ht_mblock *b = (ht_mblock *)((uint8_t *)seg + HT_SEG_META);
        if ((b->flags & MB_BUSY) == 0 && (ht__mb_next(b)->flags & MB_SENTINEL) != 0) {
            ht__segment_release(heap, seg, op);
            return true;
        }
    }
    size_t before = op->n_pending;
    ht__main_decommit_locked(heap, 0, 1, op);
    return op->n_pending != before;
}

size_t ht_heap_compact(ht_heap *h, unsigned flags)
{
    (void)flags;
    ht_heap *heap = ht__heap_check(h);
    if (heap == NULL)
        return 0;
    ht_tls *tls = ht__tls;
    if (tls != NULL) {
        ht_tcache *tc = tls->slot[heap->index % HT_TLS_SLOTS];
        if (tc != NULL && tc->heap == heap && tc->gen == heap->gen)
            ht__tcache_flush(tc, heap);
    }
    ht_op op;
    op.trace = atomic_load(&heap->trace_on) == HT_TSW_ON;
    op.slow = false;
    op.n_pending = 0;
    ht__heap_lock_all(heap);
    ht__lfh_release_empty_locked(heap, &op, true);
    ht__heap_unlock_all(heap);
    ht__op_emit_pending(heap, &op);
    for (int guard = 0; guard < 1000000; guard++) {
        ht__heap_lock_all(heap);
        bool more = compact_step(heap, &op);
        while (more && op.n_pending < HT_OP_PENDING / 2)
            more = compact_step(heap, &op);
        ht__heap_unlock_all(heap);
        ht__op_emit_pending(heap, &op);
        if (!more)
            break;
    }
    ht__heap_lock_all(heap);
    size_t largest = ht__main_largest_free_locked(heap);
    ht__heap_unlock_all(heap);
    return largest;
}
