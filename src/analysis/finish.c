/* finish.c — the end of a replay: what is still live becomes a leak (grouped by site and by
 * heap; heaps destroyed earlier hold nothing by then), the window's open blocks are classed,
 * and sites are ranked for the report's tables. Never prints. */
#include "analysis/internal.h"

#include <stdlib.h>

void ht__an_finish(ht_analysis *an)
{
    if (an->finished)
        return;
    an->finished = true;
    for (size_t k = 0; k < an->n_heaps; k++) {
        ht_heap_info *h = &an->heaps[k];
        for (size_t i = 0; h->live.slots != NULL && i <= h->live.mask; i++) {
            const ht_block *b = &h->live.slots[i];
            if (b->address == 0)
                continue;
            h->leaked_blocks++;
            h->leaked_bytes += b->size;
            an->leaked_blocks++;
            an->leaked_bytes += b->size;
            if (b->flags & HT_BLOCK_RUNDOWN)
                an->rundown_leaked_blocks++;
            if ((size_t)b->site < an->n_sites) {
                an->sites[b->site].leaked_blocks++;
                an->sites[b->site].leaked_bytes += b->size;
            }
            if (an->cfg.window) {
                /* Still live: freed "after" the window. */
                uint64_t a = b->ts_ns;
                if (a <= an->to_abs) {
                    unsigned cls = a < an->from_abs ? HT_WIN_AOFO : HT_WIN_AIFO;
                    an->win[cls].n++;
                    an->win[cls].bytes += b->size;
                }
            }
        }
    }
}

uint64_t ht__an_site_peak_bytes(const ht_analysis *an, const ht_site *s)
{
    return s->snap_epoch == an->peak_epoch ? s->snap_bytes : s->live_bytes;
}

uint64_t ht__an_site_peak_blocks(const ht_analysis *an, const ht_site *s)
{
    return s->snap_epoch == an->peak_epoch ? s->snap_blocks : s->live_blocks;
}

uint64_t ht__an_heap_peak_share(const ht_analysis *an, const ht_heap_info *h)
{
    return h->snap_epoch == an->peak_epoch ? h->snap_bytes : h->live_bytes;
}

/* Primary and secondary key of a site under a ranking. */
static void rank_key(const ht_analysis *an, ht_rank rank, const ht_site *s, uint64_t *k1,
                     uint64_t *k2)
{
    switch (rank) {
    case HT_RANK_COUNT:
        *k1 = s->n_alloc;
        *k2 = s->bytes_alloc;
        break;
    case HT_RANK_BYTES:
        *k1 = s->bytes_alloc;
        *k2 = s->n_alloc;
        break;
    case HT_RANK_LEAKED:
        *k1 = s->leaked_bytes;
        *k2 = s->leaked_blocks;
        break;
    case HT_RANK_PEAK:
        *k1 = ht__an_site_peak_bytes(an, s);
        *k2 = ht__an_site_peak_blocks(an, s);
        break;
    case HT_RANK_SLOW:
        *k1 = s->n_src[HT_SOURCE_SLOWPATH];
        *k2 = s->bytes_src[HT_SOURCE_SLOWPATH];
        break;
    case HT_RANK_TEMP:
        *k1 = s->n_temp;
        *k2 = s->bytes_temp;
        break;
    case HT_RANK_DESTROYED:
        *k1 = s->destroyed_bytes;
        *k2 = s->destroyed_blocks;
        break;
    default:
        *k1 = *k2 = 0;
        break;
    }
}

typedef struct rank_entry {
    uint64_t k1, k2; /* keys, larger first */
    uint32_t id;     /* site id, smaller first on ties */
} rank_entry;

static int rank_cmp(const void *a, const void *b)
{
    const rank_entry *x = a, *y = b;
    if (x->k1 != y->k1)
        return x->k1 > y->k1 ? -1 : 1;
    if (x->k2 != y->k2)
        return x->k2 > y->k2 ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Sorts the sites with a non-zero key: O(S log S) whatever cap is (a --top as large as the
 * number of sites stays cheap). */
size_t ht__an_rank(ht_analysis *an, ht_rank rank, uint32_t *out, size_t cap)
{
    if (cap == 0 || an->n_sites == 0)
        return 0;
    rank_entry *e = malloc(an->n_sites * sizeof *e);
    if (e == NULL) {
        an->oom = true;
        return 0;
    }
    size_t n = 0;
    for (size_t id = 0; id < an->n_sites; id++) {
        uint64_t k1, k2;
        rank_key(an, rank, &an->sites[id], &k1, &k2);
        if (k1 != 0 || k2 != 0)
            e[n++] = (rank_entry){k1, k2, (uint32_t)id};
    }
    qsort(e, n, sizeof *e, rank_cmp);
    if (n > cap)
        n = cap;
    for (size_t i = 0; i < n; i++)
        out[i] = e[i].id;
    free(e);
    return n;
}

static int pair_cmp(const void *a, const void *b)
{
    uint64_t x = ((const ht_pair *)a)->key, y = ((const ht_pair *)b)->key;
    return x < y ? -1 : x > y;
}

ht_pair *ht__an_pairs_sorted(ht_analysis *an)
{
    if (an->n_pairs == 0)
        return NULL;
    ht_pair *p = malloc(an->n_pairs * sizeof *p);
    if (p == NULL) {
        an->oom = true;
        return NULL;
    }
    size_t n = 0;
    for (size_t i = 0; i <= an->pair_mask && n < an->n_pairs; i++)
        if (an->pairs[i].key != 0)
            p[n++] = an->pairs[i];
    qsort(p, n, sizeof *p, pair_cmp);
    return p;
}
