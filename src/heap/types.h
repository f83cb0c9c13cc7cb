/* types.h — the heap manager's structures and constants.
 *
 * Glossary
 *   heap       an ht_heap: segments, large blocks, LFH bins, main-path free lists, stats.
 *   segment    a 4 MiB-aligned reservation (HT_SEG_SIZE) whose header holds a page map and a
 *              live bitmap; its *area* holds main-path blocks, some of which are LFH runs.
 *              It is committed from the start upwards (commit_size) and never moves.
 *   large      a block mapped on its own (size >= the large threshold): a 4 MiB-aligned
 *              reservation with a header at its start.
 *   region     either of the two: both start with ht_region, and the segment map sends every
 *              4 MiB slot of the address space they cover to their header.
 *   main block a boundary-tagged block of the main path (ht_mblock header before the user
 *              pointer); free ones sit in segregated free lists and coalesce.
 *   run        an LFH subsegment: a main block (MB_RUN) holding same-size blocks of one
 *              size class, page-aligned so the page map can find it.
 *   size class one of HT_N_CLASSES block sizes, 16 B .. 16 KiB.
 *   lookaside  a per-thread, per-heap, per-class LIFO of blocks that thread freed.
 *   tcache     the per-thread, per-heap structure holding the lookaside lists and the
 *              thread's share of the heap's statistics.
 *   live bit   one bit per 16 bytes of a segment, set exactly at the user pointer of each
 *              live block (lookaside blocks are not live).
 */
#ifndef HT_HEAP_TYPES_H
#define HT_HEAP_TYPES_H

#include <heaptrail.h>

#include "common/lock.h"
#include "common/os.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HT_SEG_SHIFT      22u
#define HT_SEG_SIZE       ((size_t)1 << HT_SEG_SHIFT) /* 4 MiB */
#define HT_ADDR_BITS      47u                         /* user address space */
#define HT_SEGMAP_ENTRIES ((size_t)1 << (HT_ADDR_BITS - HT_SEG_SHIFT))
#define HT_GRANULE        16u                              /* alignment and bitmap unit */
#define HT_SEG_PAGES      (HT_SEG_SIZE / HT_PAGE_SIZE)     /* 1024 */
#define HT_SEG_LIVE_WORDS (HT_SEG_SIZE / HT_GRANULE / 64u) /* 4096 */
#define HT_COMMIT_STEP    ((size_t)256 << 10)              /* minimum commit growth */
#define HT_COMMIT_ALIGN   ((size_t)64 << 10)

#define HT_N_CLASSES      36u
#define HT_LFH_MAX        16384u /* largest class */
#define HT_MAX_HEAPS      4096u
#define HT_HEAP_SLOT_SIZE ((size_t)16384) /* bytes per heap-table slot, a power of two */
#define HT_TLS_SLOTS      64u             /* tcaches per thread, direct-mapped */
#define HT_LFH_AFFINITY   4u              /* LFH bins per class */

#define HT_LARGE_CACHE_MAX   64u
#define HT_LARGE_CACHE_BYTES ((size_t)64 << 20)

#define HT_REGION_MAGIC 0x48545247u /* "HTRG" */
#define HT_RUN_MAGIC    0x4854524eu /* "HTRN" */
#define HT_HEAP_MAGIC   0x48544850u /* "HTHP" */

/* A heap's trace switch (ht_heap.trace_on). A call traces iff it reads HT_TSW_ON; PENDING and
 * WALKING: a session runs and its rundown has not walked the heap yet (WALKING: is about to,
 * or is walking it), calls wait for the walk at their entry (docs/heap.md, "Rundown"). */
enum { HT_TSW_OFF = 0, HT_TSW_ON = 1, HT_TSW_PENDING = 2, HT_TSW_WALKING = 3 };

enum { HT_REGION_SEGMENT = 1, HT_REGION_LARGE = 2 };

typedef struct ht_heap ht_heap;

/* Common prefix of segment and large headers. */
typedef struct ht_region {
    uint32_t magic;      /* HT_REGION_MAGIC */
    uint32_t kind;       /* HT_REGION_SEGMENT or HT_REGION_LARGE */
    ht_heap *heap;       /* owner */
    size_t reserve_size; /* bytes of address space, multiple of HT_SEG_SIZE */
    size_t commit_size;  /* committed prefix, bytes from the region start */
} ht_region;

/* Main-path block header, 16 bytes, right before the user pointer. */
typedef struct ht_mblock {
    uint32_t prev_size16; /* previous block's size / 16; 0 for the first block */
    uint32_t size16;      /* this block's size / 16, header included */
    uint32_t aux;         /* busy: payload bytes - requested bytes, and for an MB_SMALL block
                             the allocating thread's tag above HT_TAG_SHIFT (ht__mb_slack);
                             free: decommitted pages */
    uint8_t flags;        /* MB_* */
    uint8_t source;       /* busy: the ht_source that served it */
    uint8_t cls;          /* MB_SMALL: size class; else 0xff */
    uint8_t tag;          /* HT_MB_TAG, a cheap corruption check */
} ht_mblock;

#define MB_BUSY     0x01u /* allocated (or a run, or the sentinel) */
#define MB_RUN      0x02u /* payload is an LFH run */
#define MB_SMALL    0x04u /* payload = class size, may go to a lookaside list */
#define MB_SENTINEL 0x08u /* marks the end of the committed area */
#define HT_MB_TAG   0xb7u
#define HT_MB_MIN   32u /* header + two free-list links */

/* Free main block: the links live in the payload. */
typedef struct ht_fblock {
    ht_mblock h;
    struct ht_fblock *next, *prev; /* segregated free list */
} ht_fblock;

#define HT_N_FREELISTS 192u

typedef struct ht_segment {
    ht_region r;                    /* r.kind == HT_REGION_SEGMENT */
    struct ht_segment *next, *prev; /* the heap's segments */
    size_t area_size;               /* committed bytes after the header (sentinel incl.) */
    uint16_t pagemap[HT_SEG_PAGES]; /* 0: main-path page; k: page of an LFH run whose
                                       first page index is k - 1 */
    _Atomic uint64_t live[HT_SEG_LIVE_WORDS]; /* live bits, one per granule */
} ht_segment;

#define HT_SEG_META     (((sizeof(ht_segment) + HT_PAGE_SIZE - 1) / HT_PAGE_SIZE) * HT_PAGE_SIZE)
#define HT_SEG_AREA_MAX (HT_SEG_SIZE - HT_SEG_META)

typedef struct ht_large {
    ht_region r;                  /* r.kind == HT_REGION_LARGE */
    struct ht_large *next, *prev; /* the heap's live or cached large blocks */
    uintptr_t user;               /* the user pointer */
    size_t size;                  /* requested bytes */
    _Atomic uint32_t live;        /* 1 while live; cleared by the one winning free */
    uint32_t source;              /* always SLOWPATH */
} ht_large;

/* An LFH run, at the start of its main block's payload (page-aligned). */
typedef struct ht_run {
    uint32_t magic;             /* HT_RUN_MAGIC */
    uint16_t cls;               /* size class */
    uint8_t n_pages_lo_unused;  /* (padding) */
    uint8_t affinity;           /* the bin (affinity slot) that owns the run */
    uint32_t n_pages;           /* run size / page */
    uint32_t block_size;        /* class size */
    uint32_t n_blocks;          /* capacity */
    uint32_t n_used;            /* blocks out: live or on a lookaside list */
    uint32_t n_carved;          /* blocks handed out at least once; first unused */
    uint32_t n_free_list;       /* length of free_list */
    uint64_t inv;               /* ceil(2^40 / block_size), index = (off*inv) >> 40 */
    uint8_t *first;             /* first block; blocks [first, first + n*size) */
    void *free_list;            /* returned blocks, linked through their first word */
    uint32_t on_avail;          /* linked in the bin's avail list */
    struct ht_run *next, *prev; /* the bin's runs with room (second cache line: everything a
                                   free or an allocation reads is in the first) */
    uint32_t meta[];            /* per block: slack | (source - 1) << RUN_META_SRC_SHIFT |
                                   the allocating thread's tag << HT_TAG_SHIFT */
} ht_run;

#define RUN_META_SLACK     0x7fffu /* slack <= block size <= 16384 */
#define RUN_META_SRC_SHIFT 15u
/* A small block's tag: the HT_TAG_BITS-bit tag (1 .. 2^15 - 1, src/heap/tcache.c) of the
 * thread that last allocated or resized it, 0 for none; every write of a small block's
 * busy metadata writes it (ht__t_tagbits). Lets a traced free tell a block of its own
 * thread's making from one handed over (src/heap/api.c, free_body). */
#define HT_TAG_SHIFT   17u
#define HT_TAG_BITS    15u
#define HT_TAG_MASK    ((((uint32_t)1 << HT_TAG_BITS) - 1u) << HT_TAG_SHIFT)
#define MB_SMALL_SLACK (((uint32_t)1 << HT_TAG_SHIFT) - 1u) /* an MB_SMALL aux's slack bits */

/* One LFH size class of one heap for one affinity slot (threads are spread over
 * HT_LFH_AFFINITY slots so that two threads rarely share a run, its header or its live-bit
 * words). Lock order: bins in array order, then the heap lock. */
typedef struct ht_bin {
    ht_spinlock lock; /* guards everything below */
    uint32_t n_runs;  /* runs owned */
    uint32_t n_empty; /* runs with n_used == 0 */
    ht_run *avail;    /* runs with a free or uncarved block */
} __attribute__((aligned(64))) ht_bin;

/* Statistics shares: the heap's own (atomic adds) and each tcache's (owner writes).
 * The live figures are not counted per operation: summed over every share of a heap,
 *   live_blocks = sum(n_alloc[1..4]) - sum(n_free[1..4]) - inplace_blocks
 *   live_bytes  = sum(bytes_alloc[1..4]) - sum(bytes_free[1..4]) - inplace_bytes
 * since an in-place realloc counts as an alloc of the new size without a free of the old. */
typedef struct ht_stat_acc {
    _Atomic uint64_t n_alloc[7], n_free[7], bytes_alloc[7], bytes_free[7];
    _Atomic uint64_t inplace_blocks; /* in-place reallocs */
    _Atomic uint64_t inplace_bytes;  /* their old requested sizes */
    _Atomic uint64_t n_invalid;
} ht_stat_acc;

typedef struct ht_lookaside {
    void *head; /* LIFO, linked through the blocks' first word */
    uint32_t count;
} ht_lookaside;

typedef struct ht_tcache {
    ht_heap *heap;     /* NULL once the heap is gone */
    uint64_t gen;      /* heap->gen when made; mismatch = stale */
    unsigned affinity; /* the owner thread's LFH bin index (ht_tls.affinity) */
    ht_lookaside la[HT_N_CLASSES];
    ht_stat_acc st;                  /* this thread's share of the heap's counters */
    struct ht_tcache *hnext, *hprev; /* the heap's tcaches (registry lock) */
    struct ht_tls *owner;
} ht_tcache;

typedef struct ht_tls {
    ht_tcache *slot[HT_TLS_SLOTS]; /* by heap index % HT_TLS_SLOTS */
    unsigned affinity;             /* this thread's LFH bin index < HT_LFH_AFFINITY */
    /* the list of live threads a rundown waits on (registry lock) */
    struct ht_tls *next, *prev;
    _Atomic uint32_t *in_call;   /* the owner's ht__t_in_call (TLS: read only while linked) */
    uint64_t serial;             /* unique per linking, 0 when unlinked */
    _Atomic uint64_t exempt_gen; /* calls that went on untraced past a pending rundown (owner) */
    uint64_t exempt_seen;        /* exempt_gen as the last rundown saw it (the rundown's) */
    bool waiting;                /* the rundown waits to see the owner out of a call (its) */
} ht_tls;

struct ht_heap {
    atomic_uint magic;        /* HT_HEAP_MAGIC while alive, 0 after destroy */
    uint32_t index;           /* slot in the heap table */
    uint64_t gen;             /* unique per incarnation of the slot */
    unsigned flags;           /* creation flags */
    _Atomic uint8_t trace_on; /* HT_TSW_*: OFF unless session active && trace_enabled */
    bool trace_enabled;       /* per-heap switch (registry lock) */
    uint32_t n_rundown;       /* rundowns that listed the heap and have not walked it yet (registry
                                 lock); destroy waits for 0 before it gives anything back */
    bool serialize;           /* !(flags & NO_SERIALIZE) */
    /* options */
    uint32_t lfh_threshold;
    size_t large_threshold;
    size_t decommit_threshold;
    size_t la_depth_opt;
    uint16_t la_depth[HT_N_CLASSES];
    /* heap lock: backend, segments, large blocks, commit counters */
    ht_rlock lock;         /* recursive */
    atomic_int api_owner;  /* tid holding ht_heap_lock, 0 if none */
    int api_depth;         /* ht_heap_lock nesting of api_owner */
    size_t max_commit;     /* 0: growable; else cap on committed_area */
    ht_segment *segs;      /* all segments */
    ht_large *larges;      /* live large blocks */
    ht_large *large_cache; /* freed mappings kept for reuse, newest first */
    uint32_t n_large_cache;
    size_t large_cache_bytes;      /* committed bytes in the cache */
    ht_fblock *fl[HT_N_FREELISTS]; /* segregated free lists */
    uint64_t fl_map[HT_N_FREELISTS / 64];
    size_t free_committed; /* committed bytes in free main blocks */
    size_t committed;      /* all committed bytes, metadata included */
    size_t committed_area; /* committed bytes for blocks (max_commit check) */
    size_t reserved;
    ht_stat_acc shared;                     /* counters of operations without a tcache */
    ht_tcache *tcaches;                     /* registry lock */
    atomic_uint class_active[HT_N_CLASSES]; /* 1 once the class is served by the LFH */
    uint32_t class_n_main[HT_N_CLASSES];    /* main-path allocations counted (heap lock) */
    ht_bin bins[HT_LFH_AFFINITY][HT_N_CLASSES];
};

/* Pending events of one operation, emitted after the locks are dropped. */
#define HT_OP_PENDING 8u
typedef struct ht_op {
    bool trace; /* heap->trace_on at the start */
    bool slow;  /* the OS was needed: Source becomes SLOWPATH */
    unsigned n_pending;
    ht_event pending[HT_OP_PENDING]; /* EXPAND / CONTRACT */
} ht_op;

#endif
