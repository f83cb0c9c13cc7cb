/* callsite.c — the recorder's stack capture: runs the session's unwinder from the hot path,
 * drops heaptrail's own frames (everything up to and including the innermost-but-outermost
 * frame inside a public entry point such as ht_heap_alloc), and interns the rest, so the
 * first frame of a recorded stack is the return address into the caller of ht_heap_*.
 * Entry-point address ranges come from the .eh_frame_hdr search table of the object that
 * holds them (function start .. next function start), looked up once at init. Capture never
 * mallocs and takes no lock; init runs at session start, outside malloc. */
#include "trace/internal.h"

#include "heap/shim.h"
#include "trace/cfi.h"
#include "trace/stack.h"
#include "trace/trace.h"

#include <heaptrail.h>
#include <link.h>
#include <string.h>

/* Frames captured beyond the asked depth to make room for heaptrail's own (buffer, session,
 * heap internals, the entry point: about 4..8 in practice). */
#define CALLSITE_EXTRA 12u
#define N_ENTRY_MAX    48u

typedef struct range {
    uintptr_t lo, hi;
} range;

static range g_entry[N_ENTRY_MAX]; /* public entry points' code, [lo, hi) */
static unsigned g_n_entry;
static range g_span; /* the hull of g_entry: a quick filter */

/* -- .eh_frame_hdr lookup (init only) ------------------------------------------------------- */

/* Reads one DWARF EH pointer of encoding enc at *p (the header of a loaded object, read in
 * place: at most the 16 bytes a pointer can take) and advances *p past it. */
static bool read_encoded(const uint8_t **p, uint8_t enc, uintptr_t data_base, uintptr_t *out)
{
    uint64_t v;
    size_t used;
    if (!ht__cfi_read_pointer(*p, 16, (uint64_t)(uintptr_t)*p, enc, data_base, &v, &used))
        return false;
    *p += used;
    *out = (uintptr_t)v;
    return true;
}

typedef struct find_ctx {
    uintptr_t addr;
    range found;
    bool ok;
} find_ctx;

/* The function containing ctx->addr in this object, from its sorted FDE table. */
static int find_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    find_ctx *c = arg;
    const ElfW(Phdr) *load = NULL, *eh = NULL;
    for (ElfW(Half) i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t start = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && c->addr >= start && c->addr - start < ph->p_memsz)
            load = ph;
        else if (ph->p_type == PT_GNU_EH_FRAME)
            eh = ph;
    }
    if (load == NULL)
        return 0;
    if (eh == NULL)
        return 1;
    const uint8_t *hdr = (const uint8_t *)(info->dlpi_addr + eh->p_vaddr);
    if (hdr[0] != 1 || hdr[3] != 0x3b) /* version 1, table: datarel sdata4 */
        return 1;
    const uint8_t *p = hdr + 4;
    uintptr_t eh_frame, count;
    if (!read_encoded(&p, hdr[1], (uintptr_t)hdr, &eh_frame) ||
        !read_encoded(&p, hdr[2], (uintptr_t)hdr, &count) || count == 0)
        return 1;
    const int32_t *table = (const int32_t *)(const void *)p; /* pairs: start, fde */
    size_t lo = 0, hi = count;                               /* last start <= addr */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if ((uintptr_t)hdr + (uintptr_t)(intptr_t)table[2 * mid] <= c->addr)
            lo = mid;
        else
            hi = mid;
    }
    uintptr_t start = (uintptr_t)hdr + (uintptr_t)(intptr_t)table[2 * lo];
    if (start > c->addr)
        return 1;
    uintptr_t end = lo + 1 < count ? (uintptr_t)hdr + (uintptr_t)(intptr_t)table[2 * lo + 2]
                                   : info->dlpi_addr + load->p_vaddr + load->p_memsz;
    c->found.lo = start;
    c->found.hi = end;
    c->ok = true;
    return 1;
}

static void entry_add(uintptr_t fn)
{
    find_ctx c = {.addr = fn};
    dl_iterate_phdr(find_cb, &c);
    if (!c.ok || g_n_entry == N_ENTRY_MAX)
        return;
    g_entry[g_n_entry++] = c.found;
    if (g_n_entry == 1 || c.found.lo < g_span.lo)
        g_span.lo = c.found.lo;
    if (g_n_entry == 1 || c.found.hi > g_span.hi)
        g_span.hi = c.found.hi;
}

#define ENTRY(fn) entry_add((uintptr_t)(fn))

/* Entry points of code linked around the heap (the preload library's malloc family), named by
 * ht__trace_add_entry; their ranges are looked up by the next ht__callsite_init. */
#define N_EXTRA_MAX 24u
static uintptr_t g_extra[N_EXTRA_MAX];
static unsigned g_n_extra, g_n_extra_done;
static bool g_builtin_done;

void ht__trace_add_entry(uintptr_t fn)
{
    if (fn != 0 && g_n_extra < N_EXTRA_MAX)
        g_extra[g_n_extra++] = fn;
}

#define N_BUILTIN 19u /* the ENTRY lines below */
_Static_assert(N_BUILTIN + N_EXTRA_MAX <= N_ENTRY_MAX, "room for every entry point");

void ht__callsite_init(void)
{
    if (!g_builtin_done) { /* the code does not move: once */
        g_builtin_done = true;
        ENTRY(ht_heap_create);
        ENTRY(ht_heap_destroy);
        ENTRY(ht_process_heap);
        ENTRY(ht_heap_alloc);
        ENTRY(ht_heap_alloc_aligned);
        ENTRY(ht_heap_realloc);
        ENTRY(ht_heap_free);
        ENTRY(ht__heap_alloc_known); /* the preload library's malloc family */
        ENTRY(ht__heap_free_keep_errno);
        ENTRY(ht_heap_size);
        ENTRY(ht_heap_validate);
        ENTRY(ht_heap_walk);
        ENTRY(ht_heap_compact);
        ENTRY(ht_heap_lock);
        ENTRY(ht_heap_unlock);
        ENTRY(ht_heap_set_option);
        ENTRY(ht_trace_start);
        ENTRY(ht_trace_stop);
        ENTRY(ht_trace_enable_heap);
    }
    for (; g_n_extra_done < g_n_extra; g_n_extra_done++)
        entry_add(g_extra[g_n_extra_done]);
}

/* -- the hot path --------------------------------------------------------------------------- */

/* pc -> inside an entry point, for pcs inside the hull: (pc << 1 | answer), 0 = empty. The
 * answer is a function of pc alone (the ranges never change once found), so racing threads
 * may overwrite each other's slots freely. heaptrail's own return addresses are few. */
#define PC_CACHE 256u
static _Atomic uint64_t g_pc_cache[PC_CACHE];

static inline bool in_entry(uintptr_t pc)
{
    if (pc < g_span.lo || pc >= g_span.hi)
        return false;
    _Atomic uint64_t *slot = &g_pc_cache[(pc ^ (pc >> 8)) % PC_CACHE];
    uint64_t v = atomic_load_explicit(slot, memory_order_relaxed);
    if (v >> 1 == (uint64_t)pc)
        return (v & 1) != 0;
    bool in = false;
    for (unsigned i = 0; i < g_n_entry && !in; i++)
        in = pc >= g_entry[i].lo && pc < g_entry[i].hi;
    atomic_store_explicit(slot, (uint64_t)pc << 1 | (in ? 1u : 0u), memory_order_relaxed);
    return in;
}

/* This thread's last few interned stacks, by their first frame (alloc and free call sites
 * differ there): a hit answers with the id without hashing or probing the shared table. Valid
 * for the session generation (live_gen) it was filled in: ids start again in each session.
 * Stacks deeper than SC_DEPTH are not kept. Kept in the unwinder's per-thread area
 * (ht__unwind_caller_area), not in static TLS. */
#define SC_WAYS  4u
#define SC_DEPTH 32u

typedef struct sc_entry {
    uint64_t gen; /* ht__rec.gen when filled; 0 = empty */
    uint32_t id, n;
    uint64_t frames[SC_DEPTH];
} sc_entry;

_Static_assert(SC_WAYS * sizeof(sc_entry) <= HT_UNWIND_CALLER_BYTES, "the cache fits its area");

static uint32_t intern_cached(const uint64_t *frames, size_t n)
{
    uint64_t gen = atomic_load_explicit(&ht__rec.live_gen, memory_order_relaxed);
    sc_entry *sc = n <= SC_DEPTH && gen != 0 ? ht__unwind_caller_area() : NULL;
    if (sc == NULL)
        return ht__stack_intern(frames, n);
    sc_entry *e = &sc[(frames[0] ^ (frames[0] >> 5)) % SC_WAYS];
    if (e->gen == gen && e->n == n && memcmp(e->frames, frames, n * sizeof *frames) == 0)
        return e->id;
    uint32_t id = ht__stack_intern(frames, n);
    if (id != HT_STACK_ID_NONE && id != HT_STACK_ID_FULL) {
        e->gen = gen;
        e->id = id;
        e->n = (uint32_t)n;
        memcpy(e->frames, frames, n * sizeof *frames);
    }
    return id;
}

/* heaptrail's frames in this thread's last two captures: the next walk asks for the larger
 * beyond depth instead of CALLSITE_EXTRA (a walk costs per frame). Two, because alloc and
 * free alternate in most programs and their paths differ by a frame or two: with only the
 * last one, every capture of the deeper path walked twice. */
static __thread unsigned t_own[2]
    __attribute__((tls_model("initial-exec"))) = {CALLSITE_EXTRA, CALLSITE_EXTRA};

static inline bool in_span(uintptr_t pc)
{
    return pc >= g_span.lo && pc < g_span.hi;
}

/* The id each of this thread's walker memo ways led to (unwind.c, HT_UNWIND_MEMO_*): when
 * the walker says a capture is exactly the one that recorded way w (same arguments, every
 * slot verified), the cut and the interning give what they gave then. Valid for the session
 * generation it was filled in and the depth it was cut to. */
typedef struct memo_id {
    uint64_t gen;   /* ht__rec.live_gen when filled; 0 = none */
    uint32_t id;    /* the interned id */
    uint32_t depth; /* the depth asked */
} memo_id;

static __thread memo_id t_memo_id[HT_UNWIND_MEMO_WAYS] __attribute__((tls_model("initial-exec")));

/* The ways of t_memo_id valid for one (generation, depth), as a mask for the walker
 * (ht__unwind_memo_known): a way's bit is set when its id is filled, cleared when the way is
 * recorded again. */
typedef struct memo_known {
    uint64_t gen;
    uint32_t depth, ways;
} memo_known;

static __thread memo_known t_known __attribute__((tls_model("initial-exec")));

__attribute__((noinline)) uint32_t ht__callsite_capture(unsigned depth)
{
    const ht_unwinder *u = ht__stack_unwinder();
    if (u == NULL || depth == 0)
        return HT_STACK_ID_NONE;
    if (depth > HT_STACK_MAX_DEPTH)
        depth = HT_STACK_MAX_DEPTH;
    uint64_t frames[HT_STACK_MAX_DEPTH + CALLSITE_EXTRA];
    unsigned own = t_own[0] > t_own[1] ? t_own[0] : t_own[1];
    size_t n = 0, first = 0;
    uint64_t gen = atomic_load_explicit(&ht__rec.live_gen, memory_order_relaxed);
    unsigned way,
        known = t_known.gen == gen && gen != 0 && t_known.depth == depth ? t_known.ways : 0;
    for (;;) {
        ht__unwind_memo_known = known;
        ht__unwind_memo_last = HT_UNWIND_MEMO_NONE; /* a capture that does not walk (libunwind,
                                                       no stack bounds) leaves it as is */
        n = u->capture(frames, depth + own, 0);
        ht__unwind_memo_known = 0;
        unsigned memo = ht__unwind_memo_last;
        way = memo & 0xFFu;
        if ((memo & HT_UNWIND_MEMO_WHOLE) != 0 && way < HT_UNWIND_MEMO_WAYS) {
            if ((known >> way & 1u) != 0)
                return t_memo_id[way].id; /* the walker stored no frames */
        } else if (way < HT_UNWIND_MEMO_WAYS) {
            t_memo_id[way].gen = 0; /* re-recorded: its id is no longer known */
            known &= ~(1u << way);
            t_known.ways &= ~(1u << way);
        }
        first = 0;
        size_t scan = n < own ? n : own;
        for (size_t i = 0; i < scan; i++)
            if (in_entry((uintptr_t)frames[i] - 1))
                first = i + 1;
        /* Trusted when the cut is within the walk and the frame after it is not heaptrail's
         * (else an outer entry may lie further out): otherwise walk again, the full extra. */
        if (own == CALLSITE_EXTRA ||
            (first != 0 && (first == n || !in_span((uintptr_t)frames[first] - 1))))
            break;
        own = CALLSITE_EXTRA;
    }
    t_own[1] = t_own[0];
    t_own[0] = first != 0 && first < CALLSITE_EXTRA ? (unsigned)first : CALLSITE_EXTRA;
    if (first >= n)
        return HT_STACK_ID_NONE;
    size_t k = n - first < depth ? n - first : depth;
    uint32_t id = intern_cached(frames + first, k);
    if (way < HT_UNWIND_MEMO_WAYS && id != HT_STACK_ID_NONE && id != HT_STACK_ID_FULL) {
        t_memo_id[way] = (memo_id){gen, id, depth};
        if (t_known.gen != gen || t_known.depth != depth)
            t_known = (memo_known){gen, depth, 0};
        t_known.ways |= 1u << way;
    }
    return id;
}
