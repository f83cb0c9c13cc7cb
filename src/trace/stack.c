/* stack.c — stack interning: a lock-free, insert-only open-addressing table of stacks in
 * mmap'ed memory (slots, an id index, and a bump arena of frames), dense ids in order of
 * first sighting, and the drain that hands each new stack to the writer exactly once.
 * ht__stack_capture and ht__stack_intern run inside malloc on any thread: no malloc, no
 * locks, no TLS of their own, no syscalls after init except sched_yield while another
 * thread finishes inserting the same stack. Init/fini/drain are the writer's. */
#include "trace/stack.h"

#include "common/lock.h"
#include "common/os.h"

#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

/* A stored stack: 16-byte header then the frames, 8-byte aligned in the arena. */
typedef struct stack_rec {
    uint64_t hash;       /* stack_hash(frames, n_frames) */
    uint32_t n_frames;   /* 1..HT_STACK_MAX_DEPTH */
    _Atomic uint32_t id; /* 0 until the inserter has its id; then the id or ID_FULL */
    uint64_t frames[];   /* innermost first */
} stack_rec;

#define DEFAULT_DEPTH      32u
#define DEFAULT_MAX_STACKS (1u << 20)
#define DEFAULT_ARENA_SIZE ((size_t)256 << 20)
#define MAX_ARENA_SIZE     ((size_t)32 << 30) /* record offsets are 32-bit counts of words */
#define ID_SPINS           64u                /* pauses while waiting for another thread's id ... */
#define ID_YIELDS          4096u              /* ... then sched_yield()s, then give up */

/* A slot is 0 (empty) or (hash >> 32) << 32 | word offset of its record in the arena.
 * Offsets start at 1 (word 0 of the arena is never used), so a used slot is never 0.
 * Slots only go from 0 to used, never back: readers need no reclamation. */
typedef struct stack_table {
    _Atomic uint64_t *slots;    /* n_slots = 2 * max_stacks rounded up to a power of two */
    size_t slot_mask;           /* n_slots - 1 */
    size_t slots_size;          /* bytes mapped at slots */
    uint8_t *arena;             /* frames of every record */
    size_t arena_size;          /* bytes mapped at arena (<= MAX_ARENA_SIZE) */
    _Atomic size_t arena_used;  /* bump pointer; may pass arena_size (then: full) */
    _Atomic uint32_t *by_id;    /* [1..max_stacks]: record word offset, 0 until published */
    size_t by_id_size;          /* bytes mapped at by_id */
    uint32_t max_stacks;        /* ids 1..max_stacks exist */
    _Atomic uint32_t last_id;   /* ids handed out (may pass max_stacks by racing threads) */
    uint32_t drained;           /* writer: ids 1..drained were given to the drain callback */
    unsigned depth;             /* default capture depth */
    _Atomic uint64_t n_failed;  /* captures with no frame */
    _Atomic uint64_t n_full;    /* HT_STACK_ID_FULL answers */
    _Atomic uint64_t n_drained; /* mirror of drained for stats readers */
} stack_table;

static stack_table g_tab;
static const ht_unwinder *_Atomic g_unwinder; /* non-NULL while the table is usable */

static inline stack_rec *rec_at(uint32_t word)
{
    return (stack_rec *)(void *)(g_tab.arena + (size_t)word * 8u);
}

/* 64-bit hash of the frames; the high half tags slots, the low bits pick the first slot.
 * Four independent multiply lanes (so the multiplies overlap) and one final avalanche. */
static inline uint64_t stack_hash(const uint64_t *frames, size_t n)
{
    const uint64_t m = 0x9E3779B97F4A7C15u;
    uint64_t h0 = n, h1 = 0x243F6A8885A308D3u, h2 = 0x13198A2E03707344u, h3 = 0xA4093822299F31D0u;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        h0 = (h0 ^ frames[i]) * m;
        h1 = (h1 ^ frames[i + 1]) * m;
        h2 = (h2 ^ frames[i + 2]) * m;
        h3 = (h3 ^ frames[i + 3]) * m;
    }
    for (; i < n; i++)
        h0 = (h0 ^ frames[i]) * m;
    uint64_t h = h0 ^ (h1 << 16 | h1 >> 48) ^ (h2 << 32 | h2 >> 32) ^ (h3 << 48 | h3 >> 16);
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9u;
    h ^= h >> 29;
    h *= 0x94D049BB133111EBu;
    h ^= h >> 32;
    return h;
}

static uint32_t count_full(void)
{
    atomic_fetch_add_explicit(&g_tab.n_full, 1, memory_order_relaxed);
    return HT_STACK_ID_FULL;
}

/* Bumps a record out of the arena and fills it (id 0). Returns its word offset or 0. */
static uint32_t rec_new(const uint64_t *frames, size_t n, uint64_t h)
{
    size_t size = sizeof(stack_rec) + n * sizeof(uint64_t);
    size_t off = atomic_fetch_add_explicit(&g_tab.arena_used, size, memory_order_relaxed);
    if (off > g_tab.arena_size || g_tab.arena_size - off < size)
        return 0;
    stack_rec *r = (stack_rec *)(void *)(g_tab.arena + off);
    r->hash = h;
    r->n_frames = (uint32_t)n;
    atomic_store_explicit(&r->id, 0, memory_order_relaxed);
    memcpy(r->frames, frames, n * sizeof(uint64_t));
    return (uint32_t)(off / 8u);
}

/* The id of a record another thread has inserted: it sets the id a few instructions after
 * its CAS, so spin briefly; 0 if it does not come (the inserter was interrupted by a signal
 * handler on this very thread, or descheduled for long). */
static uint32_t rec_wait_id(stack_rec *r)
{
    for (unsigned i = 0; i < ID_SPINS + ID_YIELDS; i++) {
        uint32_t id = atomic_load_explicit(&r->id, memory_order_acquire);
        if (id != 0)
            return id;
        if (i < ID_SPINS)
            ht__cpu_relax();
        else
            sched_yield(); /* the inserter may be descheduled: let it run */
    }
    return 0;
}

uint32_t ht__stack_intern(const uint64_t *frames, size_t n)
{
    if (atomic_load_explicit(&g_unwinder, memory_order_acquire) == NULL || n == 0 ||
        n > HT_STACK_MAX_DEPTH)
        return HT_STACK_ID_NONE;
    uint64_t h = stack_hash(frames, n);
    uint64_t tag = h & 0xFFFFFFFF00000000u;
    size_t i = (size_t)h & g_tab.slot_mask;
    uint32_t mine = 0; /* our record, once allocated (lost if another thread wins the race) */
    for (size_t probes = 0; probes <= g_tab.slot_mask; probes++, i = (i + 1) & g_tab.slot_mask) {
        uint64_t v = atomic_load_explicit(&g_tab.slots[i], memory_order_acquire);
        if (v == 0) {
            if (atomic_load_explicit(&g_tab.last_id, memory_order_relaxed) >= g_tab.max_stacks)
                return count_full();
            if (mine == 0 && (mine = rec_new(frames, n, h)) == 0)
                return count_full();
            if (atomic_compare_exchange_strong_explicit(
                    &g_tab.slots[i], &v, tag | mine, memory_order_acq_rel, memory_order_acquire)) {
                stack_rec *r = rec_at(mine);
                uint32_t id =
                    atomic_fetch_add_explicit(&g_tab.last_id, 1, memory_order_relaxed) + 1;
                if (id > g_tab.max_stacks) { /* lost the race for the last ids */
                    atomic_store_explicit(&r->id, HT_STACK_ID_FULL, memory_order_release);
                    return count_full();
                }
                atomic_store_explicit(&r->id, id, memory_order_release);
                atomic_store_explicit(&g_tab.by_id[id], mine, memory_order_release);
                return id;
            }
            /* v now holds the winner's slot: compare with it below. */
        }
        if ((v & 0xFFFFFFFF00000000u) != tag)
            continue;
        stack_rec *r = rec_at((uint32_t)v);
        if (r->hash == h && r->n_frames == n &&
            memcmp(r->frames, frames, n * sizeof(uint64_t)) == 0) {
            uint32_t id = rec_wait_id(r);
            if (id == HT_STACK_ID_FULL)
                return count_full();
            if (id == 0)
                atomic_fetch_add_explicit(&g_tab.n_failed, 1, memory_order_relaxed);
            return id;
        }
    }
    return count_full();
}

__attribute__((noinline)) uint32_t ht__stack_capture(unsigned depth, unsigned skip)
{
    const ht_unwinder *u = atomic_load_explicit(&g_unwinder, memory_order_acquire);
    if (u == NULL)
        return HT_STACK_ID_NONE;
    if (depth == 0)
        depth = g_tab.depth;
    if (depth > HT_STACK_MAX_DEPTH)
        depth = HT_STACK_MAX_DEPTH;
    uint64_t frames[HT_STACK_MAX_DEPTH];
    size_t n = u->capture(frames, depth, skip);
    if (n == 0) {
        atomic_fetch_add_explicit(&g_tab.n_failed, 1, memory_order_relaxed);
        return HT_STACK_ID_NONE;
    }
    return ht__stack_intern(frames, n);
}

/* -- lifecycle ------------------------------------------------------------------------------ */

static void *map_region(size_t size)
{
    void *p = ht__os.reserve(size);
    if (p != NULL && !ht__os.commit(p, size)) {
        ht__os.release(p, size);
        p = NULL;
    }
    return p;
}

static void unmap_all(void)
{
    if (g_tab.slots != NULL)
        ht__os.release((void *)g_tab.slots, g_tab.slots_size);
    if (g_tab.by_id != NULL)
        ht__os.release((void *)g_tab.by_id, g_tab.by_id_size);
    if (g_tab.arena != NULL)
        ht__os.release(g_tab.arena, g_tab.arena_size);
    memset(&g_tab, 0, sizeof g_tab);
}

static size_t round_pages(size_t size)
{
    return (size + HT_PAGE_SIZE - 1) & ~(size_t)(HT_PAGE_SIZE - 1);
}

int ht__stack_init(const ht_stack_config *config)
{
    static const ht_stack_config defaults = {HT_UNWIND_AUTO, 0, 0, 0};
    if (config == NULL)
        config = &defaults;
    if (atomic_load_explicit(&g_unwinder, memory_order_acquire) != NULL)
        return -EBUSY;
    const ht_unwinder *u = ht__unwind_get(config->unwind);
    if (u == NULL)
        return -ENOTSUP;
    if (config->depth > HT_STACK_MAX_DEPTH || config->arena_size > MAX_ARENA_SIZE ||
        config->max_stacks >= (1u << 30))
        return -EINVAL;

    memset(&g_tab, 0, sizeof g_tab);
    g_tab.depth = config->depth != 0 ? config->depth : DEFAULT_DEPTH;
    g_tab.max_stacks = config->max_stacks != 0 ? config->max_stacks : DEFAULT_MAX_STACKS;
    size_t n_slots = 1;
    while (n_slots < 2 * (size_t)g_tab.max_stacks)
        n_slots <<= 1;
    g_tab.slot_mask = n_slots - 1;
    g_tab.slots_size = round_pages(n_slots * sizeof(uint64_t));
    g_tab.by_id_size = round_pages(((size_t)g_tab.max_stacks + 1) * sizeof(uint32_t));
    g_tab.arena_size =
        round_pages(config->arena_size != 0 ? config->arena_size : DEFAULT_ARENA_SIZE);
    g_tab.slots = map_region(g_tab.slots_size);
    g_tab.by_id = map_region(g_tab.by_id_size);
    g_tab.arena = map_region(g_tab.arena_size);
    if (g_tab.slots == NULL || g_tab.by_id == NULL || g_tab.arena == NULL) {
        unmap_all();
        return -ENOMEM;
    }
    atomic_store_explicit(&g_tab.arena_used, 8, memory_order_relaxed); /* word 0 unused */
    if (!u->init()) {
        unmap_all();
        ht__unwind_fini();
        return -ENOTSUP;
    }
    atomic_store_explicit(&g_unwinder, u, memory_order_release);
    return 0;
}

void ht__stack_fini(void)
{
    if (atomic_exchange_explicit(&g_unwinder, NULL, memory_order_acq_rel) == NULL)
        return;
    unmap_all();
    ht__unwind_fini();
}

const ht_unwinder *ht__stack_unwinder(void)
{
    return atomic_load_explicit(&g_unwinder, memory_order_acquire);
}

/* -- the writer's side ------------------------------------------------------------------------ */

uint32_t ht__stack_drain(ht_stack_fn fn, void *ctx)
{
    if (atomic_load_explicit(&g_unwinder, memory_order_acquire) == NULL)
        return 0;
    uint32_t last = atomic_load_explicit(&g_tab.last_id, memory_order_acquire);
    if (last > g_tab.max_stacks)
        last = g_tab.max_stacks;
    while (g_tab.drained < last) {
        uint32_t id = g_tab.drained + 1;
        uint32_t word = atomic_load_explicit(&g_tab.by_id[id], memory_order_acquire);
        if (word == 0)
            break; /* its inserter has the id but has not published it yet */
        const stack_rec *r = rec_at(word);
        if (!fn(id, r->frames, r->n_frames, ctx))
            break;
        g_tab.drained = id;
        atomic_fetch_add_explicit(&g_tab.n_drained, 1, memory_order_relaxed);
    }
    return g_tab.drained;
}

const uint64_t *ht__stack_frames(uint32_t id, size_t *n)
{
    if (atomic_load_explicit(&g_unwinder, memory_order_acquire) == NULL || id == 0 ||
        id > g_tab.max_stacks)
        return NULL;
    uint32_t word = atomic_load_explicit(&g_tab.by_id[id], memory_order_acquire);
    if (word == 0)
        return NULL;
    const stack_rec *r = rec_at(word);
    *n = r->n_frames;
    return r->frames;
}

void ht__stack_get_stats(ht_stack_stats *out)
{
    uint32_t last = atomic_load_explicit(&g_tab.last_id, memory_order_relaxed);
    out->n_new = last > g_tab.max_stacks ? g_tab.max_stacks : last;
    out->n_failed = atomic_load_explicit(&g_tab.n_failed, memory_order_relaxed);
    out->n_full = atomic_load_explicit(&g_tab.n_full, memory_order_relaxed);
    out->n_drained = atomic_load_explicit(&g_tab.n_drained, memory_order_relaxed);
}
