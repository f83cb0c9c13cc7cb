/* cfi_map.c — the own DWARF unwinder's view of the process: for every loaded object a copy
 * of its .eh_frame_hdr and .eh_frame (taken with dl_iterate_phdr outside the hot path, so a
 * later dlclose can never make the hot path read unmapped memory), published as one sorted
 * map behind an atomic pointer, and the lock-free direct-mapped cache of per-pc rules in
 * front of it. The hot path (ht__cfi_rule_slow) only reads the map and writes cache words:
 * no lock, no malloc, no syscall. Init, refresh and fini are the writer's (or a test's). */
#include "trace/cfi.h"

#include "common/os.h"
#include "trace/stack.h"

#include <link.h>
#include <stdatomic.h>
#include <string.h>

#define MAX_MAP_MODULES 1024u
#define MAX_COPY_TOTAL  ((size_t)256 << 20) /* bytes of copied tables over the session */
#define MAX_RETIRED     4096u               /* maps and images kept until fini */

typedef struct cfi_module {
    uint64_t lo, hi;  /* [lo, hi): the object's PT_LOAD span (pcs it owns) */
    uint64_t phdr;    /* dlpi_phdr: with lo, the identity used to reuse a copy */
    ht_cfi_image img; /* copies (img.hdr == NULL: the object has no usable tables) */
    uint8_t *copy;    /* the mapping holding both copies */
    size_t copy_size; /* bytes mapped at copy */
} cfi_module;

typedef struct cfi_map {
    uint32_t gen;                  /* 1.. */
    uint32_t tag;                  /* gen_tag(gen): bits 31..28 of its cache words */
    unsigned long long adds, subs; /* the loader's counters when scanned */
    size_t n;                      /* modules in mods, sorted by lo */
    cfi_module mods[MAX_MAP_MODULES];
} cfi_map;

_Atomic uint64_t *ht__cfi_cache;
_Atomic uint32_t ht__cfi_gen_tag;

static cfi_map *_Atomic g_map;
static _Atomic bool g_stale; /* a capture met a pc in no module: rescan at the next refresh */
static size_t g_copied;      /* bytes of copies made (MAX_COPY_TOTAL caps them) */

/* Mappings released at fini only (a capture may still be reading a replaced map or copy). */
typedef struct retired {
    void *p;
    size_t size;
} retired;
static retired g_retired[MAX_RETIRED];
static size_t g_n_retired;

static void retire(void *p, size_t size)
{
    if (p == NULL)
        return;
    if (g_n_retired < MAX_RETIRED)
        g_retired[g_n_retired++] = (retired){p, size};
    /* else: leaked on purpose rather than unmapped under a reader */
}

/* 1..15 in bits 31..28: never 0, so that an empty word (0) never matches a lookup. */
static uint32_t gen_tag(uint32_t gen)
{
    return ((gen - 1u) % 15u + 1u) << 28;
}

static size_t round_pages(size_t size)
{
    return (size + HT_PAGE_SIZE - 1) & ~(size_t)(HT_PAGE_SIZE - 1);
}

/* -- the hot path -------------------------------------------------------------------------- */

static const cfi_module *map_find(const cfi_map *m, uint64_t pc)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->mods[mid].hi <= pc)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < m->n && m->mods[lo].lo <= pc)
        return &m->mods[lo];
    return NULL;
}

uint64_t ht__cfi_rule_slow(uintptr_t ra)
{
    const cfi_map *m = atomic_load_explicit(&g_map, memory_order_acquire);
    uint64_t unsup = (uint64_t)HT_CFI_W_UNSUP << 26;
    if (m == NULL || ra < 1)
        return unsup;
    const cfi_module *mod = map_find(m, (uint64_t)ra - 1);
    if (mod == NULL) {
        if (!atomic_load_explicit(&g_stale, memory_order_relaxed))
            atomic_store_explicit(&g_stale, true, memory_order_relaxed);
        return unsup; /* not cached: the next refresh may know the module */
    }
    ht_cfi_rule rule;
    ht_cfi_status st =
        mod->img.hdr != NULL ? ht__cfi_find(&mod->img, (uint64_t)ra - 1, &rule) : HT_CFI_NO_FDE;
    uint64_t w = ht__cfi_encode(ra, st, &rule);
    if (w == 0)
        return unsup;
    w |= m->tag;
    _Atomic uint64_t *c = ht__cfi_cache;
    if (c != NULL)
        atomic_store_explicit(&c[ra & ((1u << HT_CFI_CACHE_BITS) - 1)], w, memory_order_relaxed);
    return w;
}

/* -- scanning (writer / init; inside dl_iterate_phdr: copy only) --------------------------- */

typedef struct scan_ctx {
    cfi_map *next;      /* being filled */
    const cfi_map *old; /* its predecessor (copies reused from it), or NULL */
    bool first;         /* the first object: take the counters */
} scan_ctx;

/* The old module with the same identity whose copies still equal the live bytes, or NULL. */
static const cfi_module *reusable(const cfi_map *old, const cfi_module *want, const uint8_t *hdr,
                                  const uint8_t *eh)
{
    if (old == NULL)
        return NULL;
    for (size_t i = 0; i < old->n; i++) {
        const cfi_module *o = &old->mods[i];
        if (o->lo != want->lo || o->hi != want->hi || o->phdr != want->phdr)
            continue;
        if (o->img.hdr == NULL)
            return hdr == NULL ? o : NULL;
        if (hdr == NULL || o->img.hdr_addr != (uint64_t)(uintptr_t)hdr ||
            o->img.eh_addr != (uint64_t)(uintptr_t)eh)
            return NULL;
        if (memcmp(o->img.hdr, hdr, o->img.hdr_size) == 0 &&
            memcmp(o->img.eh, eh, o->img.eh_size) == 0)
            return o;
        return NULL;
    }
    return NULL;
}

static int scan_one(struct dl_phdr_info *info, size_t size, void *arg)
{
    scan_ctx *s = arg;
    cfi_map *m = s->next;
    if (s->first && size >= offsetof(struct dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs) {
        m->adds = info->dlpi_adds;
        m->subs = info->dlpi_subs;
    }
    s->first = false;
    if (m->n >= MAX_MAP_MODULES)
        return 0;
    uint64_t lo = UINT64_MAX, hi = 0;
    const ElfW(Phdr) *eh_ph = NULL;
    for (ElfW(Half) i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && ph->p_memsz != 0) {
            uint64_t a = info->dlpi_addr + ph->p_vaddr;
            if (a < lo)
                lo = a;
            if (a + ph->p_memsz > hi)
                hi = a + ph->p_memsz;
        } else if (ph->p_type == PT_GNU_EH_FRAME) {
            eh_ph = ph;
        }
    }
    if (hi == 0)
        return 0;
    cfi_module mod;
    memset(&mod, 0, sizeof mod);
    mod.lo = lo;
    mod.hi = hi;
    mod.phdr = (uint64_t)(uintptr_t)info->dlpi_phdr;

    /* .eh_frame_hdr, and .eh_frame from where the header points to the end of its PT_LOAD. */
    const uint8_t *hdr = NULL, *eh = NULL;
    size_t hdr_size = 0, eh_size = 0;
    if (eh_ph != NULL && eh_ph->p_memsz >= 8) {
        hdr = (const uint8_t *)(info->dlpi_addr + eh_ph->p_vaddr);
        hdr_size = eh_ph->p_memsz;
        uint64_t eh_ptr = 0;
        if (hdr[0] == 1 && hdr[1] == 0x1b) { /* pcrel sdata4, what every linker writes */
            int32_t rel;
            memcpy(&rel, hdr + 4, 4);
            eh_ptr = (uint64_t)(uintptr_t)(hdr + 4) + (uint64_t)(int64_t)rel;
        }
        for (ElfW(Half) i = 0; eh_ptr != 0 && i < info->dlpi_phnum; i++) {
            const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
            uint64_t a = info->dlpi_addr + ph->p_vaddr;
            if (ph->p_type == PT_LOAD && eh_ptr >= a && eh_ptr < a + ph->p_filesz) {
                eh = (const uint8_t *)(uintptr_t)eh_ptr;
                eh_size = (size_t)(a + ph->p_filesz - eh_ptr);
            }
        }
        if (eh == NULL)
            hdr = NULL;
    }
    const cfi_module *o = reusable(s->old, &mod, hdr, eh);
    if (o != NULL) {
        mod = *o;
    } else if (hdr != NULL && g_copied + hdr_size + eh_size <= MAX_COPY_TOTAL) {
        size_t bytes = round_pages(hdr_size + eh_size);
        uint8_t *copy = ht__os.map_rw(bytes);
        if (copy != NULL) {
            memcpy(copy, hdr, hdr_size);
            memcpy(copy + hdr_size, eh, eh_size);
            g_copied += hdr_size + eh_size;
            mod.copy = copy;
            mod.copy_size = bytes;
            mod.img = (ht_cfi_image){copy,
                                     hdr_size,
                                     (uint64_t)(uintptr_t)hdr,
                                     copy + hdr_size,
                                     eh_size,
                                     (uint64_t)(uintptr_t)eh};
        }
    }
    /* insertion keeps mods sorted by lo (objects do not overlap) */
    size_t at = m->n;
    while (at > 0 && m->mods[at - 1].lo > mod.lo) {
        m->mods[at] = m->mods[at - 1];
        at--;
    }
    m->mods[at] = mod;
    m->n++;
    return 0;
}

/* Builds and publishes a new map from the loaded objects. */
static bool map_rebuild(void)
{
    cfi_map *old = atomic_load_explicit(&g_map, memory_order_acquire);
    cfi_map *next = ht__os.map_rw(sizeof(cfi_map));
    if (next == NULL)
        return false;
    next->gen = old != NULL ? old->gen + 1 : 1;
    next->tag = gen_tag(next->gen);
    scan_ctx s = {next, old, true};
    dl_iterate_phdr(scan_one, &s);
    if (old != NULL) {
        /* copies that the new map no longer uses go to the retired list */
        for (size_t i = 0; i < old->n; i++) {
            bool kept = false;
            for (size_t j = 0; j < next->n && !kept; j++)
                kept = next->mods[j].copy == old->mods[i].copy;
            if (!kept)
                retire(old->mods[i].copy, old->mods[i].copy_size);
        }
        retire(old, sizeof(cfi_map));
    }
    atomic_store_explicit(&g_map, next, memory_order_release);
    atomic_store_explicit(&ht__cfi_gen_tag, next->tag, memory_order_release);
    /* Words of older generations no longer match; clearing also removes the ones a capture
     * that raced with the swap may still write with the old tag (they would otherwise match
     * again 15 generations later). */
    if (old != NULL && ht__cfi_cache != NULL) {
        for (size_t i = 0; i < (size_t)1 << HT_CFI_CACHE_BITS; i++)
            atomic_store_explicit(&ht__cfi_cache[i], 0, memory_order_relaxed);
    }
    return true;
}

bool ht__cfi_map_init(void)
{
    if (ht__cfi_cache == NULL) {
        ht__cfi_cache = ht__os.map_rw(sizeof(uint64_t) << HT_CFI_CACHE_BITS);
        if (ht__cfi_cache == NULL)
            return false;
    }
    if (atomic_load_explicit(&g_map, memory_order_acquire) != NULL)
        return true;
    return map_rebuild();
}

bool ht__cfi_map_refresh(void)
{
    cfi_map *m = atomic_load_explicit(&g_map, memory_order_acquire);
    if (m == NULL)
        return false;
    unsigned long long adds, subs;
    bool ok = ht__modules_counters(&adds, &subs);
    /* Without the loader's counters (not glibc), a capture's miss is the only hint. */
    bool stale = atomic_exchange_explicit(&g_stale, false, memory_order_relaxed);
    if (ok ? adds == m->adds && subs == m->subs : !stale)
        return false;
    return map_rebuild();
}

void ht__cfi_map_fini(void)
{
    cfi_map *m = atomic_exchange_explicit(&g_map, NULL, memory_order_acq_rel);
    if (m != NULL) {
        for (size_t i = 0; i < m->n; i++)
            if (m->mods[i].copy != NULL)
                ht__os.release(m->mods[i].copy, m->mods[i].copy_size);
        ht__os.release(m, sizeof(cfi_map));
    }
    for (size_t i = 0; i < g_n_retired; i++)
        ht__os.release(g_retired[i].p, g_retired[i].size);
    g_n_retired = 0;
    g_copied = 0;
    atomic_store_explicit(&ht__cfi_gen_tag, 0, memory_order_relaxed);
    if (ht__cfi_cache != NULL) {
        ht__os.release((void *)ht__cfi_cache, sizeof(uint64_t) << HT_CFI_CACHE_BITS);
        ht__cfi_cache = NULL;
    }
}

uint32_t ht__cfi_map_gen(void)
{
    const cfi_map *m = atomic_load_explicit(&g_map, memory_order_acquire);
    return m != NULL ? m->gen : 0;
}
