/* livemap.h — a heap's live set: an open-addressing hash map from block address to ht_block
 * (linear probing, backward-shift deletion, so no tombstones and lookups stay short after
 * any number of frees). Memory is the live set (at most 4/3 of a power of two above it).
 * Header-only: find, insert and remove run once or twice per event, so they are inlined into
 * the replay (bench/run_report.sh). Never prints; allocation failure is returned. */
#ifndef HT_ANALYSIS_LIVEMAP_H
#define HT_ANALYSIS_LIVEMAP_H

#include "analysis/types.h"

#include <stdlib.h>
#include <string.h>

_Static_assert(sizeof(ht_block) == 32, "a live-map slot is 32 bytes");

#define HT_LIVE_MIN_CAP 64u

static inline size_t ht__live_slot(uint64_t address, size_t mask)
{
    /* Blocks are 16-byte aligned and often close together: mix all bits (Fibonacci). */
    uint64_t h = (address >> 4) * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 20) & mask;
}

static inline void ht__live_free(ht_livemap *m)
{
    free(m->slots);
    m->slots = NULL;
    m->mask = 0;
    m->n = 0;
}

static inline bool ht__live_grow(ht_livemap *m)
{
    size_t cap = m->slots == NULL ? HT_LIVE_MIN_CAP : (m->mask + 1) * 2;
    ht_block *slots = calloc(cap, sizeof *slots);
    if (slots == NULL)
        return false;
    size_t mask = cap - 1;
    if (m->slots != NULL) {
        for (size_t i = 0; i <= m->mask; i++) {
            const ht_block *b = &m->slots[i];
            if (b->address == 0)
                continue;
            size_t j = ht__live_slot(b->address, mask);
            while (slots[j].address != 0)
                j = (j + 1) & mask;
            slots[j] = *b;
        }
        free(m->slots);
    }
    m->slots = slots;
    m->mask = mask;
    return true;
}

/* The block at address, or NULL. */
static inline ht_block *ht__live_find(const ht_livemap *m, uint64_t address)
{
    if (m->slots == NULL || address == 0)
        return NULL;
    size_t i = ht__live_slot(address, m->mask);
    for (;;) {
        ht_block *b = &m->slots[i];
        if (b->address == address)
            return b;
        if (b->address == 0)
            return NULL;
        i = (i + 1) & m->mask;
    }
}

/* The slot for address (new: zeroed but for address; *existed says it was already there), or
 * NULL when out of memory or address is 0. Invalidates earlier ht_block pointers. */
static inline ht_block *ht__live_insert(ht_livemap *m, uint64_t address, bool *existed)
{
    *existed = false;
    if (address == 0)
        return NULL;
    if (m->slots == NULL || (m->n + 1) * 4 > (m->mask + 1) * 3) {
        if (!ht__live_grow(m))
            return NULL;
    }
    size_t i = ht__live_slot(address, m->mask);
    for (;;) {
        ht_block *b = &m->slots[i];
        if (b->address == address) {
            *existed = true;
            return b;
        }
        if (b->address == 0) {
            memset(b, 0, sizeof *b);
            b->address = address;
            m->n++;
            return b;
        }
        i = (i + 1) & m->mask;
    }
}

/* Removes b (a pointer from find/insert of m). Invalidates earlier ht_block pointers. */
static inline void ht__live_remove(ht_livemap *m, ht_block *b)
{
    size_t mask = m->mask;
    size_t i = (size_t)(b - m->slots);
    /* Backward shift: move later members of the probe run into the hole when their home slot
     * does not lie cyclically in (hole, their slot]. */
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        ht_block *c = &m->slots[j];
        if (c->address == 0)
            break;
        size_t home = ht__live_slot(c->address, mask);
        bool stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
        if (stays)
            continue;
        m->slots[i] = *c;
        i = j;
    }
    m->slots[i].address = 0;
    m->n--;
}

#endif
