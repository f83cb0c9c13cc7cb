/* types.h — the structs and constants of src/analysis (replay and analyses over the reader).
 * Glossary:
 *   replay       one pass over the reader's merged events that keeps the model below current
 *   block        a live allocation: address -> size, heap, site, thread, time, Source
 *   live set     the blocks live at the replay's current time; one map per heap
 *   site         an allocation stack id (0 = no stack recorded): the unit of grouping
 *   peak         the first instant at which the live bytes of all heaps were highest
 *   epoch        a counter bumped at every new peak; lazy snapshots compare against it
 *   leak         a block still live at the end in a heap that was never destroyed
 *   destroyed    a block live when its heap was destroyed: gone, but not a leak
 *   temporary    a block freed (HEAP_FREE) before its allocating thread allocated again
 *   window       --from/--to, in ns since trace start: classes AIFI, AIFO, AOFI, AOFO
 *   orphan free  a valid free (Source != INVALID) of an address that is not live: its
 *                allocation happened before the trace or was lost
 *   stale block  a live block found under a new allocation at the same address: its free was
 *                lost (the block is dropped then)
 * Memory: per live block, per heap, per thread, per thread pair, per site; never per event. */
#ifndef HT_ANALYSIS_TYPES_H
#define HT_ANALYSIS_TYPES_H

#include <heaptrail/reader.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HT_AN_N_SOURCES    7u    /* Source values 0..6; anything larger is counted under 0 */
#define HT_AN_N_TYPES      7u    /* event types, in the order of ht__an_type_name */
#define HT_AN_N_POW2       65u   /* size buckets: 0, then [2^(k-1), 2^k) for k = 1..64 */
#define HT_AN_N_LFH        36u   /* LFH size classes (a copy of the heap's table, sizes.c) */
#define HT_AN_N_LIFETIME   10u   /* lifetime buckets, decades from < 100 ns to >= 10 s */
#define HT_AN_MAX_INVALID  256u  /* invalid operations kept in detail (all are counted) */
#define HT_AN_RECENT_SLOTS 4096u /* default entries of the recently-freed ring */

/* Block flags. */
#define HT_BLOCK_RUNDOWN 0x01u /* came from the rundown (live before tracing started) */

/* One live block; a slot of a heap's live map (address 0 = empty slot). 32 bytes: the map is
 * the replay's working set. */
#define HT_BLOCK_MAX_SIZE                                                                          \
    ((1ull << 48) - 1) /* sizes above are kept as this (none are real:                             \
                          user address space is 47 bits) */
typedef struct ht_block {
    uint64_t address;    /* the block; 0 marks an empty slot (no block lives at 0) */
    uint64_t size : 48;  /* requested bytes, <= HT_BLOCK_MAX_SIZE */
    uint64_t source : 8; /* Source that served it (0..6) */
    uint64_t flags : 8;  /* HT_BLOCK_* */
    uint64_t ts_ns;      /* allocation time (event clock) */
    uint32_t site;       /* allocation stack id, 0 = none */
    uint32_t thread;     /* index into the thread table of the allocating thread */
} ht_block;

/* Open addressing, linear probing, backward-shift deletion (no tombstones).
 * Invariant: n <= (mask + 1) * 3 / 4; slots == NULL iff mask == 0 and n == 0. */
typedef struct ht_livemap {
    ht_block *slots; /* mask + 1 slots */
    size_t mask;     /* capacity - 1 (capacity a power of two) */
    size_t n;        /* occupied slots */
} ht_livemap;

/* Per-Source counters. */
typedef struct ht_src_count {
    uint64_t n_alloc;     /* HEAP_ALLOC + HEAP_REALLOC under this Source (rundown excluded) */
    uint64_t bytes_alloc; /* their requested bytes (realloc: the new size) */
    uint64_t n_free;      /* HEAP_FREE under this Source */
    uint64_t bytes_free;  /* bytes of the blocks those frees released (when known) */
} ht_src_count;

/* An allocation site (indexed by stack id; [0] = no stack). */
typedef struct ht_site {
    uint64_t n_alloc, bytes_alloc;        /* allocations made here (rundown excluded) */
    uint64_t n_src[HT_AN_N_SOURCES];      /* of which, per Source */
    uint64_t bytes_src[HT_AN_N_SOURCES];  /* bytes per Source */
    uint64_t n_free;                      /* blocks of this site freed (free or realloc) */
    uint64_t live_blocks, live_bytes;     /* now */
    uint64_t snap_blocks, snap_bytes;     /* live at the peak, valid when snap_epoch == peak */
    uint64_t snap_epoch;                  /* epoch at which snap_* were saved */
    uint64_t n_temp, bytes_temp;          /* temporaries */
    uint64_t leaked_blocks, leaked_bytes; /* at the end (ht__an_finish) */
    uint64_t destroyed_blocks, destroyed_bytes; /* live when their heap was destroyed */
    uint64_t n_rundown, bytes_rundown;          /* rundown blocks attributed here */
} ht_site;

/* A heap seen in the trace (a handle reused after destroy is a new ht_heap_info). */
typedef struct ht_heap_info {
    uint64_t handle;                     /* HeapHandle */
    uint32_t flags;                      /* creation Flags (when the CREATE was seen) */
    bool created;                        /* a HEAP_CREATE was seen */
    bool destroyed;                      /* a HEAP_DESTROY was seen (live map emptied) */
    uint64_t create_ts, destroy_ts;      /* event clock; 0 = not seen */
    uint64_t reserved, committed;        /* last ReservedSpace / CommittedSpace seen */
    uint64_t max_committed;              /* highest CommittedSpace seen */
    ht_livemap live;                     /* its live blocks */
    uint64_t live_bytes;                 /* sum of live sizes; == sum over live */
    uint64_t peak_bytes, peak_ts;        /* this heap's own peak */
    uint64_t snap_bytes, snap_epoch;     /* live bytes at the global peak (lazy, as ht_site) */
    ht_src_count src[HT_AN_N_SOURCES];   /* per Source */
    uint64_t n_invalid;                  /* INVALID operations naming this heap */
    uint64_t n_expand, bytes_expand;     /* HEAP_EXPAND */
    uint64_t n_contract, bytes_contract; /* HEAP_CONTRACT */
    uint64_t destroyed_blocks, destroyed_bytes; /* live at its destroy */
    uint64_t leaked_blocks, leaked_bytes;       /* live at the end (never destroyed) */
} ht_heap_info;

/* A thread seen in the trace. */
typedef struct ht_thread_info {
    uint32_t tid;                  /* kernel thread id */
    uint64_t n_events;             /* events it made */
    uint64_t n_alloc, bytes_alloc; /* allocations (alloc + realloc, rundown excluded) */
    uint64_t n_free, bytes_free;   /* blocks it freed (free + moved realloc) */
    uint64_t last_alloc;           /* address of its most recent allocation (temporaries) */
    uint64_t last_alloc_ts;        /* and its time */
} ht_thread_info;

/* One cell of the threads matrix: bytes allocated on thread a, freed on thread b != a. */
typedef struct ht_pair {
    uint64_t key;      /* ((a + 1) << 32) | (b + 1); 0 = empty slot */
    uint64_t n, bytes; /* blocks, bytes */
} ht_pair;

/* Where an address was seen last (an entry of the recently-freed ring). */
typedef struct ht_freed {
    uint64_t address;     /* 0 = empty */
    uint64_t heap;        /* HeapHandle it was in */
    uint64_t size;        /* its size */
    uint64_t ts_ns;       /* when it was freed */
    uint32_t free_stack;  /* stack of the free (0 none) */
    uint32_t alloc_stack; /* stack of its allocation */
    uint32_t tid;         /* thread that freed it */
    uint8_t how;          /* HT_PRIOR_FREED / _REALLOCED / _DESTROYED */
} ht_freed;

/* What is known about an invalid operation's address from before. */
#define HT_PRIOR_NONE      0u /* nothing known */
#define HT_PRIOR_FREED     1u /* freed before (double free) */
#define HT_PRIOR_REALLOCED 2u /* moved away by a realloc before */
#define HT_PRIOR_DESTROYED 3u /* its heap was destroyed before */
#define HT_PRIOR_LIVE      4u /* live, but in another heap (wrong heap) */

/* One invalid operation (Source INVALID), kept in detail. */
typedef struct ht_invalid_op {
    uint64_t ts_ns;    /* event clock */
    uint32_t tid;      /* thread */
    uint16_t type;     /* HEAP_FREE or HEAP_REALLOC */
    uint16_t ev_flags; /* event flags (HT_EVENT_FROM_SIZE: a size query) */
    uint64_t heap;     /* HeapHandle named */
    uint64_t address;  /* the address */
    uint32_t stack;    /* its stack */
    uint32_t prior;    /* HT_PRIOR_* */
    ht_freed before;   /* valid when prior != NONE (for LIVE: heap, size, alloc_stack) */
} ht_invalid_op;

/* The --from/--to window: WPA's classes. Index: ht__an_window_class_name. */
#define HT_WIN_AIFI 0u /* allocated inside, freed inside */
#define HT_WIN_AIFO 1u /* allocated inside, freed after (or never) */
#define HT_WIN_AOFI 2u /* allocated before, freed inside */
#define HT_WIN_AOFO 3u /* allocated before, freed after (or never) */
#define HT_WIN_N    4u

/* Options of one analysis. */
typedef struct ht_an_config {
    bool window;      /* from_ns/to_ns apply */
    uint64_t from_ns; /* window start, ns since trace start (inclusive) */
    uint64_t to_ns;   /* window end, ns since trace start (inclusive) */
    size_t
        recent_slots; /* recently-freed ring entries (rounded up to a power of two; 0 = default) */
} ht_an_config;

/* Count + bytes. */
typedef struct ht_cb {
    uint64_t n, bytes;
} ht_cb;

/* The whole analysis state (one replay). */
/* A small open-addressing index from a 64-bit key to a position in an array (tables.c).
 * vals[i] = position + 1, 0 = empty slot; at most half the slots are used. */
typedef struct ht_index {
    uint64_t *keys; /* the key of each used slot */
    uint32_t *vals; /* position + 1; 0 = empty */
    size_t mask;    /* capacity - 1 (a power of two); 0 = not allocated yet */
} ht_index;

typedef struct ht_analysis {
    ht_an_config cfg;  /* options */
    uint64_t start_ns; /* trace start (event clock): window and displayed times are relative */
    uint64_t from_abs, to_abs; /* window in the event clock */

    /* summary */
    uint64_t n_events;              /* events replayed */
    uint64_t n_type[HT_AN_N_TYPES]; /* per event type */
    uint64_t n_other_type;          /* events of an unknown type (not produced by version 1) */
    uint64_t n_rundown;             /* events flagged RUNDOWN */
    uint64_t first_ts, last_ts;     /* first/last event time; first_ts valid when n_events */
    uint64_t n_failed;              /* allocations that failed (Address / NewAddress 0) */
    uint64_t n_orphan_free, bytes_orphan_unknown; /* orphan frees (sizes unknown) */
    uint64_t n_stale;                             /* stale blocks dropped (their free was lost) */
    uint64_t bytes_stale;                         /* their bytes */
    uint64_t n_with_stack;                        /* events with a stack id */
    uint64_t n_realloc_moved;                     /* reallocs that moved the block */
    uint64_t n_realloc_inplace;                   /* reallocs in place */

    /* sources */
    ht_src_count src[HT_AN_N_SOURCES];

    /* live set and peak */
    uint64_t live_bytes, live_blocks; /* all heaps, now */
    uint64_t peak_bytes, peak_blocks, peak_ts;
    uint64_t peak_epoch;        /* bumped at each new peak */
    uint64_t max_committed_sum; /* highest sum of the heaps' CommittedSpace seen */
    uint64_t committed_sum;     /* current sum */

    /* heaps */
    ht_heap_info *heaps; /* in order of appearance */
    size_t n_heaps, cap_heaps;
    size_t last_heap;    /* index of the heap of the previous event (cache) */
    ht_index heap_index; /* handle -> position in heaps (the newest heap of a handle) */

    /* threads */
    ht_thread_info *threads;
    size_t n_threads, cap_threads;
    size_t last_thread;    /* cache */
    ht_index thread_index; /* tid -> position in threads */

    /* threads matrix */
    ht_pair *pairs;
    size_t n_pairs, pair_mask;
    uint64_t same_thread_frees, same_thread_bytes; /* freed on the allocating thread */

    /* sites */
    ht_site *sites; /* sites[stack id]; [0] = no stack */
    size_t n_sites; /* ids 0 .. n_sites-1 are addressable */
    size_t cap_sites;

    /* temporaries and lifetimes */
    uint64_t n_temp, bytes_temp;
    ht_cb lifetime[HT_AN_N_LIFETIME]; /* blocks freed, by lifetime */

    /* sizes */
    ht_cb pow2[HT_AN_N_POW2];
    ht_cb lfh[HT_AN_N_LFH + 1]; /* [HT_AN_N_LFH]: above the largest class */

    /* window */
    ht_cb win[HT_WIN_N];

    /* invalid operations */
    uint64_t n_invalid;         /* all of them */
    uint64_t n_invalid_free;    /* HEAP_FREE INVALID, not from a size query */
    uint64_t n_invalid_size;    /* HEAP_FREE INVALID from a size query */
    uint64_t n_invalid_realloc; /* HEAP_REALLOC INVALID */
    ht_invalid_op *invalid;     /* the first HT_AN_MAX_INVALID */
    size_t n_invalid_kept;

    /* recently freed: a ring of the last recent_mask + 1 frees (sequential writes; searched
     * backwards only for the invalid operations kept in detail) */
    ht_freed *recent;
    size_t recent_mask;
    uint64_t recent_next; /* entries written so far; the newest is at (recent_next - 1) & mask */

    /* end */
    bool finished;                              /* ht__an_finish ran */
    uint64_t leaked_blocks, leaked_bytes;       /* live at the end, heaps never destroyed */
    uint64_t destroyed_blocks, destroyed_bytes; /* live at a destroy */
    uint64_t rundown_leaked_blocks;             /* of the leaks, from the rundown */
    bool oom;                                   /* an allocation failed: figures are incomplete */
} ht_analysis;

#endif
