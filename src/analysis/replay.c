/* replay.c — the streaming replay: applies the reader's merged events one by one to the live
 * sets, the per-site, per-heap, per-thread and per-Source counters, the peak (with lazy
 * snapshots), the window classes, temporaries, lifetimes and the invalid-operation log.
 * O(1) work per event (a heap's destroy walks that heap's live set once). Memory is bounded by
 * the live set and the number of heaps, threads, thread pairs and distinct stacks.
 * Never prints; out of memory sets an->oom and the replay goes on with what it could keep. */
#include "analysis/internal.h"

#include <stdlib.h>
#include <string.h>

enum { GONE_FREE, GONE_REALLOC, GONE_DESTROY };

ht_analysis *ht__an_create(const ht_an_config *cfg, uint64_t start_ns)
{
    ht_analysis *an = calloc(1, sizeof *an);
    if (an == NULL)
        return NULL;
    if (cfg != NULL)
        an->cfg = *cfg;
    an->start_ns = start_ns;
    an->from_abs = start_ns + an->cfg.from_ns;
    an->to_abs = an->cfg.to_ns > UINT64_MAX - start_ns ? UINT64_MAX : start_ns + an->cfg.to_ns;
    if (!ht__an_recent_init(an, an->cfg.recent_slots ? an->cfg.recent_slots : HT_AN_RECENT_SLOTS) ||
        ht__an_site(an, 0) == NULL) {
        ht__an_destroy(an);
        return NULL;
    }
    return an;
}

void ht__an_destroy(ht_analysis *an)
{
    if (an == NULL)
        return;
    for (size_t i = 0; i < an->n_heaps; i++)
        ht__live_free(&an->heaps[i].live);
    free(an->heaps);
    free(an->heap_index.keys);
    free(an->heap_index.vals);
    free(an->threads);
    free(an->thread_index.keys);
    free(an->thread_index.vals);
    free(an->pairs);
    free(an->sites);
    free(an->invalid);
    free(an->recent);
    free(an);
}

/* ---- lazy snapshots at the peak ------------------------------------------------------------ */

/* Before a site's live figures change: if it has not changed since the latest peak, its
 * current figures are its figures at that peak, so keep them. */
static inline void site_touch(const ht_analysis *an, ht_site *s)
{
    if (s->snap_epoch != an->peak_epoch) {
        s->snap_blocks = s->live_blocks;
        s->snap_bytes = s->live_bytes;
        s->snap_epoch = an->peak_epoch;
    }
}

static inline void heap_touch(const ht_analysis *an, ht_heap_info *h)
{
    if (h->snap_epoch != an->peak_epoch) {
        h->snap_bytes = h->live_bytes;
        h->snap_epoch = an->peak_epoch;
    }
}

/* ---- the window ------------------------------------------------------------------------------ */

/* Classifies a block allocated at a (event clock) that ended at f (UINT64_MAX: never). */
static void window_count(ht_analysis *an, uint64_t a, uint64_t f, uint64_t size)
{
    if (!an->cfg.window || a > an->to_abs)
        return;
    unsigned cls;
    if (a < an->from_abs) {
        if (f < an->from_abs)
            return;
        cls = f <= an->to_abs ? HT_WIN_AOFI : HT_WIN_AOFO;
    } else
        cls = f <= an->to_abs ? HT_WIN_AIFI : HT_WIN_AIFO;
    an->win[cls].n++;
    an->win[cls].bytes += size;
}

/* ---- blocks ------------------------------------------------------------------------------- */

static void peak_check(ht_analysis *an, ht_heap_info *h, uint64_t ts)
{
    if (h->live_bytes > h->peak_bytes) {
        h->peak_bytes = h->live_bytes;
        h->peak_ts = ts;
    }
    if (an->live_bytes > an->peak_bytes) {
        an->peak_bytes = an->live_bytes;
        an->peak_blocks = an->live_blocks;
        an->peak_ts = ts;
        an->peak_epoch++;
    }
}

/* Takes a block's bytes out of the live figures (site, heap, total). */
static void unlive(ht_analysis *an, ht_heap_info *h, const ht_block *b, ht_site *s)
{
    if (s != NULL) {
        site_touch(an, s);
        s->live_blocks--;
        s->live_bytes -= b->size;
    }
    heap_touch(an, h);
    h->live_bytes -= b->size;
    an->live_bytes -= b->size;
    an->live_blocks--;
}

/* A live block ends at ts: freed, moved or resized by a realloc, or its heap destroyed. The
 * caller removes it from the map afterwards (or drops the whole map for a destroy). */
static void block_gone(ht_analysis *an, ht_heap_info *h, const ht_block *b, uint64_t ts,
                       size_t free_thread, int how, uint32_t free_stack, uint32_t free_tid)
{
    ht_site *s = (size_t)b->site < an->n_sites ? &an->sites[b->site] : NULL;
    unlive(an, h, b, s);
    window_count(an, b->ts_ns, ts, b->size);
    ht_freed f = {.address = b->address,
                  .heap = h->handle,
                  .size = b->size,
                  .ts_ns = ts,
                  .free_stack = free_stack,
                  .alloc_stack = b->site,
                  .tid = free_tid,
                  .how = HT_PRIOR_FREED};
    if (how == GONE_DESTROY) {
        f.how = HT_PRIOR_DESTROYED;
        ht__an_recent_put(an, &f);
        h->destroyed_blocks++;
        h->destroyed_bytes += b->size;
        an->destroyed_blocks++;
        an->destroyed_bytes += b->size;
        if (s != NULL) {
            s->destroyed_blocks++;
            s->destroyed_bytes += b->size;
        }
        return;
    }
    if (how == GONE_REALLOC)
        f.how = HT_PRIOR_REALLOCED;
    ht__an_recent_put(an, &f);
    uint64_t life = ts >= b->ts_ns ? ts - b->ts_ns : 0;
    ht_cb *lb = &an->lifetime[ht__an_lifetime_bucket(life)];
    lb->n++;
    lb->bytes += b->size;
    if (s != NULL)
        s->n_free++;
    if (free_thread != SIZE_MAX) {
        ht_thread_info *ft = &an->threads[free_thread];
        ft->n_free++;
        ft->bytes_free += b->size;
        if (b->thread < an->n_threads)
            ht__an_pair_add(an, b->thread, free_thread, b->size);
    }
    if (how == GONE_FREE && b->thread < an->n_threads) {
        const ht_thread_info *at = &an->threads[b->thread];
        if (at->last_alloc == b->address && at->last_alloc_ts == b->ts_ns &&
            !(b->flags & HT_BLOCK_RUNDOWN)) {
            an->n_temp++;
            an->bytes_temp += b->size;
            if (s != NULL) {
                s->n_temp++;
                s->bytes_temp += b->size;
            }
        }
    }
}

/* Counts an allocation (not rundown) of size at site under source. */
static void count_alloc(ht_analysis *an, ht_heap_info *h, ht_site *s, size_t thread,
                        unsigned source, uint64_t size)
{
    an->src[source].n_alloc++;
    an->src[source].bytes_alloc += size;
    h->src[source].n_alloc++;
    h->src[source].bytes_alloc += size;
    if (s != NULL) {
        s->n_alloc++;
        s->bytes_alloc += size;
        s->n_src[source]++;
        s->bytes_src[source] += size;
    }
    if (thread != SIZE_MAX) {
        an->threads[thread].n_alloc++;
        an->threads[thread].bytes_alloc += size;
    }
    ht_cb *p = &an->pow2[ht__an_pow2_bucket(size)];
    p->n++;
    p->bytes += size;
    ht_cb *c = &an->lfh[ht__an_lfh_class(size)];
    c->n++;
    c->bytes += size;
}

/* Makes a live block (an allocation or the new block of a realloc). */
static void block_add(ht_analysis *an, size_t heap, uint64_t address, uint64_t size,
                      unsigned source, uint32_t site_id, uint64_t ts, size_t thread, bool rundown)
{
    ht_heap_info *h = &an->heaps[heap];
    ht_site *s = (size_t)site_id < an->n_sites ? &an->sites[site_id] : ht__an_site(an, site_id);
    if (!rundown)
        count_alloc(an, h, s, thread, source, size);
    if (size > HT_BLOCK_MAX_SIZE)
        size = HT_BLOCK_MAX_SIZE; /* (a forged trace) the live figures use what the block holds */
    bool existed;
    ht_block *b = ht__live_insert(&h->live, address, &existed);
    if (b == NULL) {
        an->oom = true;
        return;
    }
    if (existed) {
        /* A block is live at this address already: its free was lost. Drop it quietly. */
        an->n_stale++;
        an->bytes_stale += b->size;
        ht_site *os = (size_t)b->site < an->n_sites ? &an->sites[b->site] : NULL;
        unlive(an, h, b, os);
        memset(b, 0, sizeof *b);
        b->address = address;
    }
    b->size = size & HT_BLOCK_MAX_SIZE;
    b->ts_ns = ts;
    b->site = s != NULL ? site_id : 0;
    b->thread = thread != SIZE_MAX ? (uint32_t)thread : UINT32_MAX;
    b->source = source & 0xFFu;
    b->flags = rundown ? HT_BLOCK_RUNDOWN : 0u;
    if (s == NULL)
        s = &an->sites[0];
    site_touch(an, s);
    s->live_blocks++;
    s->live_bytes += size;
    if (rundown) {
        s->n_rundown++;
        s->bytes_rundown += size;
    } else if (thread != SIZE_MAX) {
        an->threads[thread].last_alloc = address;
        an->threads[thread].last_alloc_ts = ts;
    }
    heap_touch(an, h);
    h->live_bytes += size;
    an->live_bytes += size;
    an->live_blocks++;
    peak_check(an, h, ts);
}

/* ---- invalid operations ---------------------------------------------------------------------- */

static void invalid_op(ht_analysis *an, ht_heap_info *h, const ht_reader_event *rev,
                       uint64_t address)
{
    const ht_event *ev = &rev->event;
    an->n_invalid++;
    h->n_invalid++;
    if (ev->type == HT_EVENT_HEAP_REALLOC)
        an->n_invalid_realloc++;
    else if (ev->flags & HT_EVENT_FROM_SIZE)
        an->n_invalid_size++;
    else
        an->n_invalid_free++;
    if (an->n_invalid_kept >= HT_AN_MAX_INVALID)
        return;
    if (an->invalid == NULL) {
        an->invalid = calloc(HT_AN_MAX_INVALID, sizeof *an->invalid);
        if (an->invalid == NULL) {
            an->oom = true;
            return;
        }
    }
    ht_invalid_op *op = &an->invalid[an->n_invalid_kept++];
    memset(op, 0, sizeof *op);
    op->ts_ns = ev->timestamp_ns;
    op->tid = ev->tid;
    op->type = ev->type;
    op->ev_flags = ev->flags;
    op->heap = ev->heap_handle;
    op->address = address;
    op->stack = rev->stack_id;
    /* Live in another heap (a wrong-heap free)? Bounded: only the kept operations look. */
    for (size_t k = 0; k < an->n_heaps; k++) {
        ht_heap_info *o = &an->heaps[k];
        if (o == h || o->destroyed)
            continue;
        const ht_block *b = ht__live_find(&o->live, address);
        if (b != NULL) {
            op->prior = HT_PRIOR_LIVE;
            op->before.address = address;
            op->before.heap = o->handle;
            op->before.size = b->size;
            op->before.ts_ns = b->ts_ns;
            op->before.alloc_stack = b->site;
            op->before.tid = b->thread < an->n_threads ? an->threads[b->thread].tid : 0;
            return;
        }
    }
    const ht_freed *f = ht__an_recent_get(an, address);
    if (f != NULL) {
        op->prior = f->how;
        op->before = *f;
    }
}

/* ---- events ---------------------------------------------------------------------------------- */

static unsigned clamp_source(uint32_t source)
{
    return source < HT_AN_N_SOURCES ? (unsigned)source : 0u;
}

static void on_alloc(ht_analysis *an, const ht_reader_event *rev, size_t heap, size_t thread)
{
    const ht_event *ev = &rev->event;
    if (ev->alloc.address == 0) {
        an->n_failed++;
        return;
    }
    block_add(an, heap, ev->alloc.address, ev->alloc.size, clamp_source(ev->alloc.source),
              rev->stack_id, ev->timestamp_ns, thread, (ev->flags & HT_EVENT_RUNDOWN) != 0);
}

static void on_free(ht_analysis *an, const ht_reader_event *rev, size_t heap, size_t thread)
{
    const ht_event *ev = &rev->event;
    unsigned source = clamp_source(ev->free.source);
    ht_heap_info *h = &an->heaps[heap];
    an->src[source].n_free++;
    h->src[source].n_free++;
    if (source == HT_SOURCE_INVALID) {
        invalid_op(an, h, rev, ev->free.address);
        return;
    }
    ht_block *b = ht__live_find(&h->live, ev->free.address);
    if (b == NULL) {
        an->n_orphan_free++;
        return;
    }
    an->src[source].bytes_free += b->size;
    h->src[source].bytes_free += b->size;
    block_gone(an, h, b, ev->timestamp_ns, thread, GONE_FREE, rev->stack_id, ev->tid);
    ht__live_remove(&h->live, b);
}

static void on_realloc(ht_analysis *an, const ht_reader_event *rev, size_t heap, size_t thread)
{
    const ht_event *ev = &rev->event;
    unsigned source = clamp_source(ev->realloc.source);
    ht_heap_info *h = &an->heaps[heap];
    if (source == HT_SOURCE_INVALID) {
        an->src[source].n_alloc++;
        an->src[source].bytes_alloc += ev->realloc.new_size;
        h->src[source].n_alloc++;
        h->src[source].bytes_alloc += ev->realloc.new_size;
        invalid_op(an, h, rev, ev->realloc.old_address);
        return;
    }
    if (ev->realloc.new_address == 0) {
        an->n_failed++;
        return;
    }
    if (ev->realloc.old_address != 0) {
        ht_block *b = ht__live_find(&h->live, ev->realloc.old_address);
        if (b != NULL) {
            block_gone(an, h, b, ev->timestamp_ns, thread, GONE_REALLOC, rev->stack_id, ev->tid);
            ht__live_remove(&h->live, b);
        } else
            an->n_orphan_free++;
        if (ev->realloc.old_address == ev->realloc.new_address)
            an->n_realloc_inplace++;
        else
            an->n_realloc_moved++;
    }
    block_add(an, heap, ev->realloc.new_address, ev->realloc.new_size, source, rev->stack_id,
              ev->timestamp_ns, thread, (ev->flags & HT_EVENT_RUNDOWN) != 0);
}

static void set_committed(ht_analysis *an, ht_heap_info *h, uint64_t committed)
{
    an->committed_sum = an->committed_sum - h->committed + committed;
    h->committed = committed;
    if (committed > h->max_committed)
        h->max_committed = committed;
    if (an->committed_sum > an->max_committed_sum)
        an->max_committed_sum = an->committed_sum;
}

static void on_create(ht_analysis *an, const ht_reader_event *rev, size_t heap)
{
    const ht_event *ev = &rev->event;
    ht_heap_info *h = &an->heaps[heap];
    if (h->created || h->destroyed || h->live.n != 0) {
        /* A new heap under a handle seen before. */
        size_t k = ht__an_heap_new(an, ev->heap_handle);
        if (k == SIZE_MAX)
            return;
        h = &an->heaps[k];
    }
    h->created = true;
    h->create_ts = ev->timestamp_ns;
    h->flags = ev->create.flags;
    h->reserved = ev->create.reserved_space;
    set_committed(an, h, ev->create.committed_space);
}

static void on_destroy(ht_analysis *an, const ht_reader_event *rev, size_t heap, size_t thread)
{
    const ht_event *ev = &rev->event;
    ht_heap_info *h = &an->heaps[heap];
    for (size_t i = 0; h->live.slots != NULL && i <= h->live.mask; i++) {
        const ht_block *b = &h->live.slots[i];
        if (b->address != 0)
            block_gone(an, h, b, ev->timestamp_ns, thread, GONE_DESTROY, rev->stack_id, ev->tid);
    }
    ht__live_free(&h->live);
    h->destroyed = true;
    h->destroy_ts = ev->timestamp_ns;
    set_committed(an, h, 0);
}

void ht__an_event(ht_analysis *an, const ht_reader_event *rev)
{
    const ht_event *ev = &rev->event;
    if (an->n_events == 0)
        an->first_ts = ev->timestamp_ns;
    an->last_ts = ev->timestamp_ns;
    an->n_events++;
    if (ev->flags & HT_EVENT_RUNDOWN)
        an->n_rundown++;
    if (rev->stack_id != 0)
        an->n_with_stack++;
    int ti = ht__an_type_index(ev->type);
    if (ti < 0) {
        an->n_other_type++;
        return;
    }
    an->n_type[ti]++;
    /* the previous event's thread and heap are the likely ones: check them inline */
    size_t thread = an->n_threads > 0 && an->threads[an->last_thread].tid == ev->tid
                        ? an->last_thread
                        : ht__an_thread_get(an, ev->tid);
    if (thread != SIZE_MAX)
        an->threads[thread].n_events++;
    size_t heap = an->n_heaps > 0 && an->heaps[an->last_heap].handle == ev->heap_handle
                      ? an->last_heap
                      : ht__an_heap_get(an, ev->heap_handle);
    if (heap == SIZE_MAX)
        return;
    /* Allocations into a destroyed heap's handle (without a CREATE) start a new heap. */
    if (an->heaps[heap].destroyed &&
        (ev->type == HT_EVENT_HEAP_ALLOC || ev->type == HT_EVENT_HEAP_REALLOC ||
         ev->type == HT_EVENT_HEAP_EXPAND)) {
        heap = ht__an_heap_new(an, ev->heap_handle);
        if (heap == SIZE_MAX)
            return;
    }
    switch (ev->type) {
    case HT_EVENT_HEAP_ALLOC:
        on_alloc(an, rev, heap, thread);
        break;
    case HT_EVENT_HEAP_FREE:
        on_free(an, rev, heap, thread);
        break;
    case HT_EVENT_HEAP_REALLOC:
        on_realloc(an, rev, heap, thread);
        break;
    case HT_EVENT_HEAP_CREATE:
        on_create(an, rev, heap);
        break;
    case HT_EVENT_HEAP_DESTROY:
        on_destroy(an, rev, heap, thread);
        break;
    case HT_EVENT_HEAP_EXPAND:
        an->heaps[heap].n_expand++;
        an->heaps[heap].bytes_expand += ev->expand.size;
        set_committed(an, &an->heaps[heap], ev->expand.committed_space);
        break;
    case HT_EVENT_HEAP_CONTRACT:
        an->heaps[heap].n_contract++;
        an->heaps[heap].bytes_contract += ev->contract.size;
        set_committed(an, &an->heaps[heap], ev->contract.committed_space);
        break;
    default:
        break;
    }
}

bool ht__an_run(ht_analysis *an, ht_reader *rd, ht_an_progress_fn progress, void *ctx)
{
    /* in batches, without copying the events (ht_reader_next_batch) */
    const ht_reader_event *batch[512];
    uint64_t n = 0;
    size_t k;
    while ((k = ht_reader_next_batch(rd, batch, sizeof batch / sizeof batch[0])) > 0) {
        uint64_t before = n;
        for (size_t i = 0; i < k; i++)
            ht__an_event(an, batch[i]);
        n += k;
        if ((n >> 20) != (before >> 20) && progress != NULL && !progress(n, ctx))
            return false;
    }
    ht__an_finish(an);
    return true;
}
