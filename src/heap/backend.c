/* backend.c — the main path: boundary-tagged blocks inside segment areas, segregated free
 * lists with a bitmap for O(1) search, splitting, coalescing, in-place resizing, and lazy
 * bulk decommit of free interiors. Every function runs with the heap lock held. Never maps
 * memory itself: growth goes through segment.c. */
#include "heap/internal.h"

unsigned ht__main_fl_index(size_t size)
{
    if (size < 1024)
        return (unsigned)(size >> 4);
    unsigned lg = 63u - (unsigned)__builtin_clzll(size);
    unsigned idx = 64u + (lg - 10u) * 8u + (unsigned)((size >> (lg - 3u)) & 7u);
    return idx < HT_N_FREELISTS ? idx : HT_N_FREELISTS - 1;
}

void ht__main_insert_free_locked(ht_heap *heap, ht_fblock *f)
{
    unsigned idx = ht__main_fl_index(ht__mb_size(&f->h));
    f->prev = NULL;
    f->next = heap->fl[idx];
    if (f->next != NULL)
        f->next->prev = f;
    heap->fl[idx] = f;
    heap->fl_map[idx >> 6] |= (uint64_t)1 << (idx & 63);
}

void ht__main_remove_free_locked(ht_heap *heap, ht_fblock *f)
{
    unsigned idx = ht__main_fl_index(ht__mb_size(&f->h));
    if (f->prev != NULL)
        f->prev->next = f->next;
    else
        heap->fl[idx] = f->next;
    if (f->next != NULL)
        f->next->prev = f->prev;
    if (heap->fl[idx] == NULL)
        heap->fl_map[idx >> 6] &= ~((uint64_t)1 << (idx & 63));
}

/* The first free block of at least need bytes: a bounded scan of need's own list, then the
 * first non-empty larger list (all of whose blocks fit). */
static ht_fblock *fl_find(ht_heap *heap, size_t need)
{
    unsigned idx = ht__main_fl_index(need);
    unsigned scanned = 0;
    for (ht_fblock *f = heap->fl[idx]; f != NULL && scanned < 32; f = f->next, scanned++)
        if (ht__mb_size(&f->h) >= need)
            return f;
    for (unsigned i = idx + 1; i < HT_N_FREELISTS;) {
        uint64_t word = heap->fl_map[i >> 6] >> (i & 63);
        if (word == 0) {
            i = (i | 63u) + 1u;
            continue;
        }
        i += (unsigned)__builtin_ctzll(word);
        return heap->fl[i];
    }
    return NULL;
}

static void set_next_prev(ht_mblock *b)
{
    ht_mblock *n = ht__mb_next(b);
    n->prev_size16 = b->size16;
}

static void init_block(ht_mblock *b, uint32_t prev16, size_t size, uint8_t flags)
{
    HT_UNPOISON(b, sizeof(ht_fblock));
    b->prev_size16 = prev16;
    b->size16 = (uint32_t)(size >> 4);
    b->aux = 0;
    b->flags = flags;
    b->source = 0;
    b->cls = 0xff;
    b->tag = HT_MB_TAG;
}

/* Recommit accounting for a free block about to be used. */
static void recommit(ht_heap *heap, ht_fblock *f, ht_op *op)
{
    if (f->h.aux == 0)
        return;
    size_t bytes = (size_t)f->h.aux * HT_PAGE_SIZE;
    heap->committed += bytes;
    f->h.aux = 0;
    ht__op_expand(heap, op, (uintptr_t)f, bytes);
}

/* Carves a busy block with a payload of `payload` bytes aligned to align out of free f. */
static ht_mblock *carve(ht_heap *heap, ht_fblock *f, size_t payload, size_t align, ht_op *op)
{
    size_t fsize = ht__mb_size(&f->h);
    uintptr_t start = (uintptr_t)f;
    uintptr_t end = start + fsize;
    uintptr_t user = ht__align_up(start + sizeof(ht_mblock), align);
    while (user - sizeof(ht_mblock) != start && user - sizeof(ht_mblock) - start < HT_MB_MIN)
        user += align;
    size_t need = payload + sizeof(ht_mblock);
    if (need < HT_MB_MIN)
        need = HT_MB_MIN;
    uintptr_t blk = user - sizeof(ht_mblock);
    if (blk + need > end)
        return NULL;
    ht__main_remove_free_locked(heap, f);
    heap->free_committed -= fsize - (size_t)f->h.aux * HT_PAGE_SIZE;
    recommit(heap, f, op);
    size_t lead = blk - start;
    size_t tail = end - (blk + need);
    if (tail < HT_MB_MIN) {
        need += tail;
        tail = 0;
    }
    uint32_t prev16 = f->h.prev_size16;
    if (lead != 0) {
        init_block(&f->h, prev16, lead, 0);
        ht__main_insert_free_locked(heap, f);
        heap->free_committed += lead;
        prev16 = (uint32_t)(lead >> 4);
    }
    ht_mblock *b = (ht_mblock *)blk;
    init_block(b, prev16, need, MB_BUSY);
    if (tail != 0) {
        ht_fblock *t = (ht_fblock *)(blk + need);
        init_block(&t->h, b->size16, tail, 0);
        set_next_prev(&t->h);
        ht__main_insert_free_locked(heap, t);
        heap->free_committed += tail;
    } else {
        set_next_prev(b);
    }
    return b;
}

static bool grow(ht_heap *heap, size_t need, ht_op *op)
{
    for (ht_segment *s = heap->segs; s != NULL; s = s->next)
        if (HT_SEG_AREA_MAX - s->area_size >= need + HT_MB_MIN &&
            ht__segment_extend(heap, s, need + HT_MB_MIN, op))
            return true;
    return ht__segment_new(heap, need + HT_MB_MIN, op) != NULL;
}

ht_mblock *ht__main_alloc_locked(ht_heap *heap, size_t payload, size_t align, ht_op *op)
{
    payload = ht__align_up(payload, HT_GRANULE);
    if (align < HT_GRANULE)
        align = HT_GRANULE;
    size_t need = payload + sizeof(ht_mblock);
    if (need < HT_MB_MIN)
        need = HT_MB_MIN;
    size_t search = align > HT_GRANULE ? need + align + HT_MB_MIN : need;
    if (search > HT_SEG_AREA_MAX - 2 * sizeof(ht_mblock))
        return NULL;
    for (int attempt = 0; attempt < 3; attempt++) {
        ht_fblock *f = fl_find(heap, search);
        if (f != NULL)
            return carve(heap, f, payload, align, op);
        if (!grow(heap, search, op))
            return NULL;
    }
    return NULL;
}

void ht__main_free_locked(ht_heap *heap, ht_mblock *b, ht_op *op)
{
    HT_UNPOISON(b, sizeof(ht_fblock)); /* header and free-list links */
    size_t size = ht__mb_size(b);
    heap->free_committed += size;
    b->flags = 0;
    b->aux = 0;
    b->source = 0;
    b->cls = 0xff;
    ht_mblock *n = ht__mb_next(b);
    if ((n->flags & MB_BUSY) == 0) {
        ht__main_remove_free_locked(heap, (ht_fblock *)n);
        b->size16 += n->size16;
        b->aux += n->aux;
    }
    if (b->prev_size16 != 0) {
        ht_mblock *p = ht__mb_prev(b);
        if ((p->flags & MB_BUSY) == 0) {
            ht__main_remove_free_locked(heap, (ht_fblock *)p);
            p->size16 += b->size16;
            p->aux += b->aux;
            b = p;
        }
    }
    set_next_prev(b);
    ht__main_insert_free_locked(heap, (ht_fblock *)b);
    HT_POISON((uint8_t *)b + sizeof(ht_fblock), ht__mb_size(b) - sizeof(ht_fblock));
    if (heap->free_committed > heap->decommit_threshold)
        ht__main_decommit_locked(heap, heap->decommit_threshold / 2, 16, op);
}

bool ht__main_resize_locked(ht_heap *heap, ht_mblock *b, size_t payload, ht_op *op)
{
    payload = ht__align_up(payload, HT_GRANULE);
    size_t need = payload + sizeof(ht_mblock);
    if (need < HT_MB_MIN)
        need = HT_MB_MIN;
    size_t have = ht__mb_size(b);
    if (need > have) {
        ht_mblock *n = ht__mb_next(b);
        if ((n->flags & MB_BUSY) != 0 || have + ht__mb_size(n) < need)
            return false;
        ht_fblock *f = (ht_fblock *)n;
        ht__main_remove_free_locked(heap, f);
        heap->free_committed -= ht__mb_size(n) - (size_t)n->aux * HT_PAGE_SIZE;
        recommit(heap, f, op);
        b->size16 += n->size16;
        set_next_prev(b);
        have = ht__mb_size(b);
    }
    size_t tail = have - need;
    if (tail >= HT_MB_MIN) {
        b->size16 = (uint32_t)(need >> 4);
        ht_mblock *t = ht__mb_next(b);
        init_block(t, b->size16, tail, MB_BUSY);
        set_next_prev(t);
        ht__main_free_locked(heap, t, op);
    }
    return true;
}

size_t ht__main_decommit_locked(ht_heap *heap, size_t target, size_t min_pages, ht_op *op)
{
    size_t done = 0;
    for (unsigned i = HT_N_FREELISTS; i-- > 0 && heap->free_committed > target;) {
        if (heap->fl[i] == NULL)
            continue;
        for (ht_fblock *f = heap->fl[i]; f != NULL && heap->free_committed > target; f = f->next) {
            if (op->trace && op->n_pending >= HT_OP_PENDING)
                return done;
            uintptr_t lo = ht__align_up((uintptr_t)f + sizeof(ht_fblock), HT_PAGE_SIZE);
            uintptr_t hi = ((uintptr_t)f + ht__mb_size(&f->h)) & ~(uintptr_t)(HT_PAGE_SIZE - 1);
            if (hi <= lo)
                continue;
            size_t pages = (hi - lo) / HT_PAGE_SIZE;
            if (pages < f->h.aux + min_pages)
                continue;
            if (!ht__os.decommit((void *)lo, hi - lo))
                continue;
            size_t delta = pages - f->h.aux;
            f->h.aux = (uint32_t)pages;
            heap->committed -= delta * HT_PAGE_SIZE;
            heap->free_committed -= delta * HT_PAGE_SIZE;
            done += delta;
            ht__op_contract(heap, op, lo, delta * HT_PAGE_SIZE);
        }
    }
    return done;
}

size_t ht__main_largest_free_locked(const ht_heap *heap)
{
    for (unsigned i = HT_N_FREELISTS; i-- > 0;) {
        if (heap->fl[i] == NULL)
            continue;
        size_t best = 0;
        for (const ht_fblock *f = heap->fl[i]; f != NULL; f = f->next)
            if (ht__mb_payload(&f->h) > best)
                best = ht__mb_payload(&f->h);
        return best;
    }
    return 0;
}
