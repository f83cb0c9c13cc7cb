/* livemap.c — a heap's live set: an open-addressing hash map from block address to ht_block
 * (linear probing, backward-shift deletion, so no tombstones and lookups stay short after
 * any number of frees). Memory is the live set (at most 4/3 of a power of two above it).
 * Never prints; an allocation failure is returned to the caller. */
#include "analysis/internal.h"

#include <stdlib.h>
#include <string.h>

#define MIN_CAP 64u

static inline size_t slot_of(uint64_t address, size_t mask)
{
    /* Blocks are 16-byte aligned and often close together: mix all bits (Fibonacci). */
    uint64_t h = (address >> 4) * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 20) & mask;
}

void ht__live_free(ht_livemap *m)
{
    free(m->slots);
    m->slots = NULL;
    m->mask = 0;
    m->n = 0;
}

static bool live_grow(ht_livemap *m)
{
    size_t cap = m->slots == NULL ? MIN_CAP : (m->mask + 1) * 2;
    ht_block *slots = calloc(cap, sizeof *slots);
    if (slots == NULL)
        return false;
    size_t mask = cap - 1;
    if (m->slots != NULL) {
        for (size_t i = 0; i <= m->mask; i++) {
            const ht_block *b = &m->slots[i];
            if (b->address == 0)
                continue;
            size_t j = slot_of(b->address, mask);
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

ht_block *ht__live_find(const ht_livemap *m, uint64_t address)
{
    if (m->slots == NULL || address == 0)
        return NULL;
    size_t i = slot_of(address, m->mask);
    for (;;) {
        ht_block *b = &m->slots[i];
        if (b->address == address)
            return b;
        if (b->address == 0)
            return NULL;
        i = (i + 1) & m->mask;
    }
}

ht_block *ht__live_insert(ht_livemap *m, uint64_t address, bool *existed)
{
    *existed = false;
    if (address == 0)
        return NULL;
    if (m->slots == NULL || (m->n + 1) * 4 > (m->mask + 1) * 3) {
        if (!live_grow(m))
            return NULL;
    }
    size_t i = slot_of(address, m->mask);
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

void ht__live_remove(ht_livemap *m, ht_block *b)
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
        size_t home = slot_of(c->address, mask);
        bool stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
        if (stays)
            continue;
        m->slots[i] = *c;
        i = j;
    }
    m->slots[i].address = 0;
    m->n--;
}
