/* tables.c — the analysis's small indexes: heaps by handle, threads by tid, the threads
 * matrix by (allocating, freeing) thread pair, sites by stack id, and the recently-freed
 * ring (the last N frees, so its memory is fixed). Each grows with what it indexes
 * (heaps, threads, thread pairs, distinct stacks), never with the number of events.
 * Never prints; allocation failures set an->oom and return NULL / false. */
#include "analysis/internal.h"

#include <stdlib.h>
#include <string.h>

static inline size_t mix64(uint64_t x, size_t mask)
{
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDull;
    x ^= x >> 33;
    return (size_t)x & mask;
}

static bool grow_array(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return true;
    size_t cap2 = *cap == 0 ? 16 : *cap;
    while (cap2 < need)
        cap2 *= 2;
    void *p = realloc(*arr, cap2 * elem);
    if (p == NULL)
        return false;
    memset((char *)p + *cap * elem, 0, (cap2 - *cap) * elem);
    *arr = p;
    *cap = cap2;
    return true;
}

/* ---- heaps --------------------------------------------------------------------------------- */

static bool heap_index_rebuild(ht_analysis *an, size_t cap)
{
    uint64_t *keys = calloc(cap, sizeof *keys);
    uint32_t *vals = calloc(cap, sizeof *vals);
    if (keys == NULL || vals == NULL) {
        free(keys);
        free(vals);
        return false;
    }
    size_t mask = cap - 1;
    /* Later heaps with the same handle replace earlier ones (handle reuse after destroy). */
    for (size_t k = 0; k < an->n_heaps; k++) {
        uint64_t h = an->heaps[k].handle;
        size_t i = mix64(h, mask);
        while (vals[i] != 0 && keys[i] != h)
            i = (i + 1) & mask;
        keys[i] = h;
        vals[i] = (uint32_t)(k + 1);
    }
    free(an->heap_keys);
    free(an->heap_vals);
    an->heap_keys = keys;
    an->heap_vals = vals;
    an->heap_mask = mask;
    return true;
}

size_t ht__an_heap_lookup(const ht_analysis *an, uint64_t handle)
{
    if (an->heap_mask == 0)
        return SIZE_MAX;
    size_t i = mix64(handle, an->heap_mask);
    while (an->heap_vals[i] != 0) {
        if (an->heap_keys[i] == handle)
            return an->heap_vals[i] - 1u;
        i = (i + 1) & an->heap_mask;
    }
    return SIZE_MAX;
}

size_t ht__an_heap_new(ht_analysis *an, uint64_t handle)
{
    if (an->n_heaps >= UINT32_MAX - 1 ||
        !grow_array((void **)&an->heaps, &an->cap_heaps, an->n_heaps + 1, sizeof *an->heaps)) {
        an->oom = true;
        return SIZE_MAX;
    }
    size_t k = an->n_heaps++;
    memset(&an->heaps[k], 0, sizeof an->heaps[k]);
    an->heaps[k].handle = handle;
    size_t cap = an->heap_mask + 1;
    if (an->heap_mask == 0 || an->n_heaps * 2 > cap) {
        if (!heap_index_rebuild(an, an->heap_mask == 0 ? 64 : cap * 2)) {
            an->n_heaps--;
            an->oom = true;
            return SIZE_MAX;
        }
        an->last_heap = k;
        return k;
    }
    size_t i = mix64(handle, an->heap_mask);
    while (an->heap_vals[i] != 0 && an->heap_keys[i] != handle)
        i = (i + 1) & an->heap_mask;
    an->heap_keys[i] = handle;
    an->heap_vals[i] = (uint32_t)(k + 1);
    an->last_heap = k;
    return k;
}

size_t ht__an_heap_get(ht_analysis *an, uint64_t handle)
{
    /* ht__an_heap_new makes the newest heap of a handle the cached one, so a matching handle
     * at last_heap is always the current heap of that handle. */
    if (an->n_heaps > 0 && an->heaps[an->last_heap].handle == handle)
        return an->last_heap;
    size_t k = ht__an_heap_lookup(an, handle);
    if (k == SIZE_MAX)
        k = ht__an_heap_new(an, handle);
    if (k != SIZE_MAX)
        an->last_heap = k;
    return k;
}

/* ---- threads ------------------------------------------------------------------------------- */

static bool thread_index_rebuild(ht_analysis *an, size_t cap)
{
    uint32_t *keys = calloc(cap, sizeof *keys);
    uint32_t *vals = calloc(cap, sizeof *vals);
    if (keys == NULL || vals == NULL) {
        free(keys);
        free(vals);
        return false;
    }
    size_t mask = cap - 1;
    for (size_t k = 0; k < an->n_threads; k++) {
        size_t i = mix64(an->threads[k].tid, mask);
        while (vals[i] != 0)
            i = (i + 1) & mask;
        keys[i] = an->threads[k].tid;
        vals[i] = (uint32_t)(k + 1);
    }
    free(an->thread_keys);
    free(an->thread_vals);
    an->thread_keys = keys;
    an->thread_vals = vals;
    an->thread_mask = mask;
    return true;
}

size_t ht__an_thread_get(ht_analysis *an, uint32_t tid)
{
    if (an->n_threads > 0 && an->threads[an->last_thread].tid == tid)
        return an->last_thread;
    if (an->thread_mask != 0) {
        size_t i = mix64(tid, an->thread_mask);
        while (an->thread_vals[i] != 0) {
            if (an->thread_keys[i] == tid) {
                an->last_thread = an->thread_vals[i] - 1u;
                return an->last_thread;
            }
            i = (i + 1) & an->thread_mask;
        }
    }
    if (an->n_threads >= UINT32_MAX - 1 || !grow_array((void **)&an->threads, &an->cap_threads,
                                                       an->n_threads + 1, sizeof *an->threads)) {
        an->oom = true;
        return SIZE_MAX;
    }
    size_t k = an->n_threads++;
    memset(&an->threads[k], 0, sizeof an->threads[k]);
    an->threads[k].tid = tid;
    size_t cap = an->thread_mask + 1;
    if (an->thread_mask == 0 || an->n_threads * 2 > cap) {
        if (!thread_index_rebuild(an, an->thread_mask == 0 ? 64 : cap * 2)) {
            an->n_threads--;
            an->oom = true;
            return SIZE_MAX;
        }
    } else {
        size_t i = mix64(tid, an->thread_mask);
        while (an->thread_vals[i] != 0)
            i = (i + 1) & an->thread_mask;
        an->thread_keys[i] = tid;
        an->thread_vals[i] = (uint32_t)(k + 1);
    }
    an->last_thread = k;
    return k;
}

/* ---- threads matrix ------------------------------------------------------------------------ */

void ht__an_pair_add(ht_analysis *an, size_t alloc_thread, size_t free_thread, uint64_t bytes)
{
    if (alloc_thread == free_thread) {
        an->same_thread_frees++;
        an->same_thread_bytes += bytes;
        return;
    }
    if (an->pairs == NULL || (an->n_pairs + 1) * 2 > an->pair_mask + 1) {
        size_t cap = an->pairs == NULL ? 64 : (an->pair_mask + 1) * 2;
        ht_pair *p = calloc(cap, sizeof *p);
        if (p == NULL) {
            an->oom = true;
            return;
        }
        for (size_t i = 0; an->pairs != NULL && i <= an->pair_mask; i++) {
            if (an->pairs[i].key == 0)
                continue;
            size_t j = mix64(an->pairs[i].key, cap - 1);
            while (p[j].key != 0)
                j = (j + 1) & (cap - 1);
            p[j] = an->pairs[i];
        }
        free(an->pairs);
        an->pairs = p;
        an->pair_mask = cap - 1;
    }
    uint64_t key = ((uint64_t)(alloc_thread + 1) << 32) | (uint64_t)(free_thread + 1);
    size_t i = mix64(key, an->pair_mask);
    while (an->pairs[i].key != 0 && an->pairs[i].key != key)
        i = (i + 1) & an->pair_mask;
    if (an->pairs[i].key == 0) {
        an->pairs[i].key = key;
        an->n_pairs++;
    }
    an->pairs[i].n++;
    an->pairs[i].bytes += bytes;
}

/* ---- sites --------------------------------------------------------------------------------- */

ht_site *ht__an_site(ht_analysis *an, uint32_t id)
{
    if ((size_t)id < an->n_sites)
        return &an->sites[id];
    if (!grow_array((void **)&an->sites, &an->cap_sites, (size_t)id + 1, sizeof *an->sites)) {
        an->oom = true;
        return NULL;
    }
    an->n_sites = (size_t)id + 1;
    return &an->sites[id];
}

/* ---- recently freed ------------------------------------------------------------------------ */

bool ht__an_recent_init(ht_analysis *an, size_t slots)
{
    size_t n = 1;
    while (n < slots)
        n *= 2;
    an->recent = calloc(n, sizeof *an->recent);
    if (an->recent == NULL)
        return false;
    an->recent_mask = n - 1;
    return true;
}

void ht__an_recent_put(ht_analysis *an, const ht_freed *f)
{
    an->recent[an->recent_next++ & an->recent_mask] = *f;
}

const ht_freed *ht__an_recent_get(const ht_analysis *an, uint64_t address)
{
    if (address == 0)
        return NULL;
    uint64_t n = an->recent_next < an->recent_mask + 1 ? an->recent_next : an->recent_mask + 1;
    for (uint64_t k = 1; k <= n; k++) {
        const ht_freed *f = &an->recent[(an->recent_next - k) & an->recent_mask];
        if (f->address == address)
            return f; /* the most recent one */
    }
    return NULL;
}
