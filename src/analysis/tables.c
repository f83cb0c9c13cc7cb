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

/* ---- the index (heaps by handle, threads by tid) ------------------------------------------- */

/* The position stored for key, or SIZE_MAX. */
static size_t index_find(const ht_index *x, uint64_t key)
{
    if (x->mask == 0)
        return SIZE_MAX;
    for (size_t i = mix64(key, x->mask); x->vals[i] != 0; i = (i + 1) & x->mask)
        if (x->keys[i] == key)
            return x->vals[i] - 1u;
    return SIZE_MAX;
}

/* Stores key -> pos, replacing what key had (room is the caller's: see index_needs_grow). */
static void index_put(ht_index *x, uint64_t key, size_t pos)
{
    size_t i = mix64(key, x->mask);
    while (x->vals[i] != 0 && x->keys[i] != key)
        i = (i + 1) & x->mask;
    x->keys[i] = key;
    x->vals[i] = (uint32_t)(pos + 1);
}

/* Makes x a fresh index of n entries, key_of(arr, k) for k = 0 .. n-1, with room for at least
 * one more (at most half full); later entries of the same key win. x stays as it was (and
 * false is returned) when memory runs out. */
static bool index_rebuild(ht_index *x, size_t n, const void *arr,
                          uint64_t (*key_of)(const void *arr, size_t k))
{
    size_t cap = 64;
    while ((n + 1) * 2 > cap)
        cap *= 2;
    ht_index y = {calloc(cap, sizeof *y.keys), calloc(cap, sizeof *y.vals), cap - 1};
    if (y.keys == NULL || y.vals == NULL) {
        free(y.keys);
        free(y.vals);
        return false;
    }
    for (size_t k = 0; k < n; k++)
        index_put(&y, key_of(arr, k), k);
    free(x->keys);
    free(x->vals);
    *x = y;
    return true;
}

/* Appends key at position pos (= the array's new last entry, already there): into x when it
 * stays at most half full, else by a rebuild over all n entries. False: out of memory. */
static bool index_add(ht_index *x, uint64_t key, size_t pos, size_t n, const void *arr,
                      uint64_t (*key_of)(const void *arr, size_t k))
{
    if (x->mask == 0 || n * 2 > x->mask + 1)
        return index_rebuild(x, n, arr, key_of);
    index_put(x, key, pos);
    return true;
}

/* ---- heaps --------------------------------------------------------------------------------- */

static uint64_t heap_key(const void *arr, size_t k)
{
    return ((const ht_heap_info *)arr)[k].handle;
}

size_t ht__an_heap_lookup(const ht_analysis *an, uint64_t handle)
{
    return index_find(&an->heap_index, handle);
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
    /* A handle used again after its heap's destroy now names this heap. */
    if (!index_add(&an->heap_index, handle, k, an->n_heaps, an->heaps, heap_key)) {
        an->n_heaps--;
        an->oom = true;
        return SIZE_MAX;
    }
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

static uint64_t thread_key(const void *arr, size_t k)
{
    return ((const ht_thread_info *)arr)[k].tid;
}

size_t ht__an_thread_get(ht_analysis *an, uint32_t tid)
{
    if (an->n_threads > 0 && an->threads[an->last_thread].tid == tid)
        return an->last_thread;
    size_t k = index_find(&an->thread_index, tid);
    if (k != SIZE_MAX) {
        an->last_thread = k;
        return k;
    }
    if (an->n_threads >= UINT32_MAX - 1 || !grow_array((void **)&an->threads, &an->cap_threads,
                                                       an->n_threads + 1, sizeof *an->threads)) {
        an->oom = true;
        return SIZE_MAX;
    }
    k = an->n_threads++;
    memset(&an->threads[k], 0, sizeof an->threads[k]);
    an->threads[k].tid = tid;
    if (!index_add(&an->thread_index, tid, k, an->n_threads, an->threads, thread_key)) {
        an->n_threads--;
        an->oom = true;
        return SIZE_MAX;
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
