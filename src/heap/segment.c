/* segment.c — address space for heaps: the segment map (address -> region header), segment
 * reserve/commit/extend/release, and large blocks with their cache of freed mappings.
 * Heap lock held by callers of *_locked. Emits no events itself: it queues EXPAND/CONTRACT
 * into the operation (ht_op) for emission after the locks are dropped. */
#include "heap/internal.h"

#include "trace/trace.h"

_Atomic(uintptr_t) *ht__segmap;

bool ht__segmap_init(void)
{
    size_t bytes = HT_SEGMAP_ENTRIES * sizeof(uintptr_t);
    void *m = ht__os.reserve(bytes);
    if (m == NULL)
        return false;
    if (!ht__os.commit(m, bytes)) {
        ht__os.release(m, bytes);
        return false;
    }
    ht__segmap = m;
    return true;
}

void ht__segmap_set(uintptr_t base, size_t size, const ht_region *region)
{
    for (uintptr_t a = base; a < base + size; a += HT_SEG_SIZE)
        atomic_store_explicit(&ht__segmap[a >> HT_SEG_SHIFT], (uintptr_t)region,
                              memory_order_release);
}

bool ht__commit_allowed(const ht_heap *heap, size_t more_area)
{
    return heap->max_commit == 0 || heap->committed_area + more_area <= heap->max_commit;
}

static void op_push(ht_heap *heap, ht_op *op, uint16_t type, uintptr_t address, size_t size)
{
    if (!op->trace || op->n_pending >= HT_OP_PENDING)
        return;
    ht_event *ev = &op->pending[op->n_pending++];
    memset(ev, 0, sizeof *ev);
    ev->timestamp_ns = ht__trace_now();
    ev->type = type;
    ev->heap_handle = (uintptr_t)heap;
    ev->expand.address = address;
    ev->expand.size = size;
    ev->expand.committed_space = heap->committed;
}

void ht__op_expand(ht_heap *heap, ht_op *op, uintptr_t address, size_t size)
{
    op->slow = true;
    op_push(heap, op, HT_EVENT_HEAP_EXPAND, address, size);
}

void ht__op_contract(ht_heap *heap, ht_op *op, uintptr_t address, size_t size)
{
    op->slow = true;
    op_push(heap, op, HT_EVENT_HEAP_CONTRACT, address, size);
}

static void seg_link(ht_heap *heap, ht_segment *seg)
{
    seg->prev = NULL;
    seg->next = heap->segs;
    if (heap->segs != NULL)
        heap->segs->prev = seg;
    heap->segs = seg;
}

static void seg_unlink(ht_heap *heap, ht_segment *seg)
{
    if (seg->prev != NULL)
        seg->prev->next = seg->next;
    else
        heap->segs = seg->next;
    if (seg->next != NULL)
        seg->next->prev = seg->prev;
}

static void write_sentinel(ht_segment *seg, ht_mblock *prev_last)
{
    ht_mblock *s = (ht_mblock *)((uint8_t *)seg + HT_SEG_META + seg->area_size - sizeof(ht_mblock));
    s->prev_size16 = prev_last != NULL ? (uint32_t)(((uint8_t *)s - (uint8_t *)prev_last) >> 4) : 0;
    s->size16 = 1;
    s->aux = 0;
    s->flags = MB_BUSY | MB_SENTINEL;
    s->source = 0;
    s->cls = 0xff;
    s->tag = HT_MB_TAG;
}

ht_segment *ht__segment_new(ht_heap *heap, size_t min_area, ht_op *op)
{
    size_t area = ht__align_up(min_area + 2 * sizeof(ht_mblock), HT_COMMIT_ALIGN);
    if (area < HT_COMMIT_STEP)
        area = HT_COMMIT_STEP;
    if (area > HT_SEG_AREA_MAX)
        area = HT_SEG_AREA_MAX;
    if (min_area + 2 * sizeof(ht_mblock) > area)
        return NULL;
    if (!ht__commit_allowed(heap, area)) {
        /* a capped heap takes what is left, if that is enough */
        size_t left = heap->max_commit > heap->committed_area
                          ? (heap->max_commit - heap->committed_area) & ~(size_t)(HT_PAGE_SIZE - 1)
                          : 0;
        if (left < min_area + 2 * sizeof(ht_mblock))
            return NULL;
        area = left;
    }
    ht_segment *seg = ht__os_reserve_aligned(HT_SEG_SIZE, HT_SEG_SIZE);
    if (seg == NULL)
        return NULL;
    if (!ht__os.commit(seg, HT_SEG_META + area)) {
        ht__os.release(seg, HT_SEG_SIZE);
        return NULL;
    }
    seg->r.magic = HT_REGION_MAGIC;
    seg->r.kind = HT_REGION_SEGMENT;
    seg->r.heap = heap;
    seg->r.reserve_size = HT_SEG_SIZE;
    seg->r.commit_size = HT_SEG_META + area;
    seg->area_size = area;
    ht_fblock *f = (ht_fblock *)((uint8_t *)seg + HT_SEG_META);
    f->h.prev_size16 = 0;
    f->h.size16 = (uint32_t)((area - sizeof(ht_mblock)) >> 4);
    f->h.aux = 0;
    f->h.flags = 0;
    f->h.source = 0;
    f->h.cls = 0xff;
    f->h.tag = HT_MB_TAG;
    write_sentinel(seg, &f->h);
    ht__main_insert_free_locked(heap, f);
    heap->free_committed += ht__mb_size(&f->h);
    seg_link(heap, seg);
    heap->committed += HT_SEG_META + area;
    heap->committed_area += area;
    heap->reserved += HT_SEG_SIZE;
    ht__segmap_set((uintptr_t)seg, HT_SEG_SIZE, &seg->r);
    ht__op_expand(heap, op, (uintptr_t)seg, HT_SEG_META + area);
    return seg;
}

bool ht__segment_extend(ht_heap *heap, ht_segment *seg, size_t min_bytes, ht_op *op)
{
    size_t room = HT_SEG_AREA_MAX - seg->area_size;
    size_t grow = ht__align_up(min_bytes, HT_COMMIT_ALIGN);
    if (grow < HT_COMMIT_STEP)
        grow = HT_COMMIT_STEP;
    if (grow > room)
        grow = room;
    if (grow < min_bytes)
        return false;
    if (!ht__commit_allowed(heap, grow)) {
        grow = ht__align_up(min_bytes, HT_PAGE_SIZE);
        if (grow > room || !ht__commit_allowed(heap, grow))
            return false;
    }
    uint8_t *old_end = (uint8_t *)seg + HT_SEG_META + seg->area_size;
    if (!ht__os.commit(old_end, grow))
        return false;
    ht_mblock *sent = (ht_mblock *)(old_end - sizeof(ht_mblock));
    ht_mblock *last = sent->prev_size16 != 0 ? ht__mb_prev(sent) : NULL;
    seg->area_size += grow;
    seg->r.commit_size += grow;
    heap->committed += grow;
    heap->committed_area += grow;
    /* the old sentinel and the new pages become one free block, merged with a free last */
    ht_fblock *f = (ht_fblock *)sent;
    f->h.size16 = (uint32_t)(grow >> 4);
    f->h.flags = 0;
    f->h.aux = 0;
    f->h.cls = 0xff;
    f->h.tag = HT_MB_TAG;
    heap->free_committed += grow;
    if (last != NULL && (last->flags & MB_BUSY) == 0) {
        ht__main_remove_free_locked(heap, (ht_fblock *)last);
        last->size16 += f->h.size16;
        f = (ht_fblock *)last;
    }
    write_sentinel(seg, &f->h);
    ht__main_insert_free_locked(heap, f);
    ht__op_expand(heap, op, (uintptr_t)old_end, grow);
    return true;
}

void ht__segment_release(ht_heap *heap, ht_segment *seg, ht_op *op)
{
    size_t committed = seg->r.commit_size;
    /* pages decommitted inside free blocks are not counted as committed */
    ht_mblock *b = (ht_mblock *)((uint8_t *)seg + HT_SEG_META);
    while ((b->flags & MB_SENTINEL) == 0) {
        if ((b->flags & MB_BUSY) == 0) {
            committed -= (size_t)b->aux * HT_PAGE_SIZE;
            heap->free_committed -= ht__mb_size(b) - (size_t)b->aux * HT_PAGE_SIZE;
            ht__main_remove_free_locked(heap, (ht_fblock *)b);
        }
        b = ht__mb_next(b);
    }
    seg_unlink(heap, seg);
    ht__segmap_set((uintptr_t)seg, HT_SEG_SIZE, NULL);
    heap->committed -= committed;
    heap->committed_area -= seg->area_size;
    heap->reserved -= HT_SEG_SIZE;
    HT_UNPOISON(seg, HT_SEG_SIZE); /* the address range may be mapped again by anyone */
    ht__os.release(seg, HT_SEG_SIZE);
    if (op != NULL)
        ht__op_contract(heap, op, (uintptr_t)seg, committed);
}

/* ---- large blocks ---- */

#define LARGE_HDR ht__align_up(sizeof(ht_large), 64)

static void large_link(ht_large **list, ht_large *l)
{
    l->prev = NULL;
    l->next = *list;
    if (*list != NULL)
        (*list)->prev = l;
    *list = l;
}

static void large_unlink(ht_large **list, ht_large *l)
{
    if (l->prev != NULL)
        l->prev->next = l->next;
    else
        *list = l->next;
    if (l->next != NULL)
        l->next->prev = l->prev;
}

size_t ht__large_capacity(const ht_large *large)
{
    return large->r.commit_size - (large->user - (uintptr_t)large);
}

void ht__large_release(ht_heap *heap, ht_large *large, ht_op *op)
{
    size_t commit = large->r.commit_size;
    ht__segmap_set((uintptr_t)large, large->r.reserve_size, NULL);
    heap->committed -= commit;
    heap->committed_area -= commit;
    heap->reserved -= large->r.reserve_size;
    uintptr_t base = (uintptr_t)large;
    size_t reserve = large->r.reserve_size;
    HT_UNPOISON(large, reserve);
    ht__os.release(large, reserve);
    if (op != NULL)
        ht__op_contract(heap, op, base, commit);
}

ht_large *ht__large_alloc_locked(ht_heap *heap, size_t size, size_t align, ht_op *op)
{
    if (align < HT_GRANULE)
        align = HT_GRANULE;
    size_t off = ht__align_up(LARGE_HDR, align);
    if (size > ((size_t)1 << HT_ADDR_BITS) || off > ((size_t)1 << HT_ADDR_BITS))
        return NULL;
    size_t need_commit = ht__align_up(off + (size != 0 ? size : 1), HT_PAGE_SIZE);
    size_t base_align = align > HT_SEG_SIZE ? align : HT_SEG_SIZE;
    size_t need_reserve = ht__align_up(need_commit, HT_SEG_SIZE);

    /* reuse: the smallest cached mapping that fits without wasting more than half */
    ht_large *best = NULL;
    for (ht_large *c = heap->large_cache; c != NULL; c = c->next) {
        if (((uintptr_t)c & (base_align - 1)) != 0 || c->r.reserve_size < need_reserve)
            continue;
        if (c->r.commit_size > 2 * need_commit + HT_SEG_SIZE)
            continue;
        if (best == NULL || c->r.reserve_size < best->r.reserve_size)
            best = c;
    }
    ht_large *l = best;
    if (l != NULL) {
        if (l->r.commit_size < need_commit) {
            size_t more = need_commit - l->r.commit_size;
            if (!ht__commit_allowed(heap, more) ||
                !ht__os.commit((uint8_t *)l + l->r.commit_size, more))
                return NULL;
            large_unlink(&heap->large_cache, l);
            heap->n_large_cache--;
            heap->large_cache_bytes -= l->r.commit_size;
            l->r.commit_size = need_commit;
            heap->committed += more;
            heap->committed_area += more;
            ht__op_expand(heap, op, (uintptr_t)l + need_commit - more, more);
        } else {
            large_unlink(&heap->large_cache, l);
            heap->n_large_cache--;
            heap->large_cache_bytes -= l->r.commit_size;
            op->slow = true;
        }
    } else {
        if (!ht__commit_allowed(heap, need_commit))
            return NULL;
        l = ht__os_reserve_aligned(need_reserve, base_align);
        if (l == NULL)
            return NULL;
        if (!ht__os.commit(l, need_commit)) {
            ht__os.release(l, need_reserve);
            return NULL;
        }
        l->r.magic = HT_REGION_MAGIC;
        l->r.kind = HT_REGION_LARGE;
        l->r.heap = heap;
        l->r.reserve_size = need_reserve;
        l->r.commit_size = need_commit;
        heap->committed += need_commit;
        heap->committed_area += need_commit;
        heap->reserved += need_reserve;
        ht__segmap_set((uintptr_t)l, need_reserve, &l->r);
        ht__op_expand(heap, op, (uintptr_t)l, need_commit);
    }
    l->user = (uintptr_t)l + off;
    l->size = size;
    l->source = HT_SOURCE_SLOWPATH;
    atomic_store_explicit(&l->live, 1, memory_order_release);
    large_link(&heap->larges, l);
    return l;
}

void ht__large_free_locked(ht_heap *heap, ht_large *large, ht_op *op)
{
    large_unlink(&heap->larges, large);
    op->slow = true;
    size_t bytes = large->r.commit_size;
    if (bytes > HT_LARGE_CACHE_BYTES / 2) {
        ht__large_release(heap, large, op);
        return;
    }
    /* make room: drop the oldest cached mappings */
    while (heap->large_cache != NULL && (heap->n_large_cache >= HT_LARGE_CACHE_MAX ||
                                         heap->large_cache_bytes + bytes > HT_LARGE_CACHE_BYTES)) {
        ht_large *old = heap->large_cache;
        while (old->next != NULL)
            old = old->next;
        large_unlink(&heap->large_cache, old);
        heap->n_large_cache--;
        heap->large_cache_bytes -= old->r.commit_size;
        ht__large_release(heap, old, op);
    }
    large_link(&heap->large_cache, large);
    heap->n_large_cache++;
    heap->large_cache_bytes += bytes;
}

bool ht__large_resize_locked(ht_heap *heap, ht_large *large, size_t size, ht_op *op)
{
    size_t off = large->user - (uintptr_t)large;
    if (size > large->r.reserve_size - off)
        return false;
    size_t need_commit = ht__align_up(off + size, HT_PAGE_SIZE);
    if (need_commit > large->r.commit_size) {
        size_t more = need_commit - large->r.commit_size;
        if (!ht__commit_allowed(heap, more) ||
            !ht__os.commit((uint8_t *)large + large->r.commit_size, more))
            return false;
        large->r.commit_size = need_commit;
        heap->committed += more;
        heap->committed_area += more;
        ht__op_expand(heap, op, (uintptr_t)large + need_commit - more, more);
    }
    large->size = size;
    return true;
}
