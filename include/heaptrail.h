/* heaptrail.h — the public C API of libheaptrail: private heaps with a Win32-style API,
 * per-operation ETW-shaped events, and tracing control.
 *
 * Thread safety: every function may be called from any thread, except on heaps created with
 * HT_HEAP_NO_SERIALIZE, where the caller serializes all access to that heap.
 * Async-signal safety: none of these functions is async-signal-safe.
 * Errors: functions that return a pointer return NULL and set errno; functions that return
 * bool return false and set errno. A NULL or unknown heap handle fails with EINVAL.
 */
#ifndef HEAPTRAIL_H
#define HEAPTRAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define HT_API __attribute__((visibility("default")))
#else
#define HT_API
#endif

typedef struct ht_heap ht_heap; /* opaque; (uintptr_t)heap is the HeapHandle */

/* Heap and call flags (values as in Win32 where Win32 has them).
 *   NO_SERIALIZE             heap: no locks; the caller serializes all access
 *   GENERATE_EXCEPTIONS      heap or call: abort with a diagnostic instead of returning NULL
 *   ZERO_MEMORY              call: the block's bytes are zero
 *   REALLOC_IN_PLACE_ONLY    call: realloc fails rather than move the block
 *   ENABLE_LFH               heap: the LFH is active for all size classes at once
 *   TERMINATE_ON_CORRUPTION  heap: abort with a diagnostic on INVALID instead of logging it */
#define HT_HEAP_NO_SERIALIZE            0x00000001u
#define HT_HEAP_GENERATE_EXCEPTIONS     0x00000004u
#define HT_HEAP_ZERO_MEMORY             0x00000008u
#define HT_HEAP_REALLOC_IN_PLACE_ONLY   0x00000010u
#define HT_HEAP_ENABLE_LFH              0x00010000u
#define HT_HEAP_TERMINATE_ON_CORRUPTION 0x00020000u

/* Allocator paths (the ETW "Source" field). */
typedef enum ht_source {
    HT_SOURCE_LOOKASIDE = 1,
    HT_SOURCE_LOWFRAG = 2,
    HT_SOURCE_MAINPATH = 3,
    HT_SOURCE_SLOWPATH = 4,
    HT_SOURCE_INVALID = 5,
    HT_SOURCE_SEGMENT_HEAP = 6 /* reserved; never emitted */
} ht_source;

/* Event types: the Windows heap provider's classic opcodes. */
typedef enum ht_event_type {
    HT_EVENT_HEAP_CREATE = 0x20,
    HT_EVENT_HEAP_ALLOC = 0x21,
    HT_EVENT_HEAP_REALLOC = 0x22,
    HT_EVENT_HEAP_DESTROY = 0x23,
    HT_EVENT_HEAP_FREE = 0x24,
    HT_EVENT_HEAP_EXPAND = 0x25,
    HT_EVENT_HEAP_CONTRACT = 0x2A
} ht_event_type;

/* ht_event.flags */
#define HT_EVENT_RUNDOWN   0x0001u /* emitted by the rundown at trace start, not by an operation */
#define HT_EVENT_FROM_SIZE 0x0002u /* INVALID HEAP_FREE logged by ht_heap_size, not by a free */

typedef struct ht_event {
    uint64_t timestamp_ns; /* CLOCK_MONOTONIC domain */
    uint32_t tid;          /* kernel thread id */
    uint16_t type;         /* ht_event_type */
    uint16_t flags;        /* HT_EVENT_RUNDOWN, … */
    uintptr_t heap_handle; /* (uintptr_t)heap */
    union {
        struct {
            uint64_t size;     /* requested bytes */
            uintptr_t address; /* the block */
            uint32_t source;   /* ht_source */
        } alloc;
        struct {
            uintptr_t address;
            uint32_t source;
        } free;
        struct {
            uintptr_t new_address, old_address; /* equal when done in place; new 0 on failure */
            uint64_t new_size, old_size;
            uint32_t source; /* path of the new block; INVALID for a bad old block */
        } realloc;
        struct {
            uint32_t flags; /* the heap's creation flags */
            uint64_t reserved_space, committed_space;
        } create;
        struct {
            uintptr_t address;        /* start of the range committed / decommitted */
            uint64_t size;            /* bytes newly committed / decommitted */
            uint64_t committed_space; /* the heap's committed bytes after the change */
        } expand, contract;
    };
    uint64_t sequence; /* per-thread event sequence number, from 1 */
} ht_event;

/* ---- heaps ---------------------------------------------------------------------------- */

/* Creates a private heap. initial_size bytes are committed at once (rounded up to 64 KiB).
 * maximum_size 0: growable. Otherwise the bytes committed for blocks (segment areas and
 * large blocks, not heap metadata) never exceed maximum_size rounded up to 64 KiB; an
 * allocation that would need more fails with ENOMEM. Logs HEAP_CREATE.
 * Returns NULL + EINVAL for unknown flags, ENOMEM when no memory or more than 4095 heaps. */
HT_API ht_heap *ht_heap_create(unsigned flags, size_t initial_size, size_t maximum_size);
/* Releases every byte of the heap to the OS; blocks still live are gone (no per-block frees
 * are logged). Logs HEAP_DESTROY. The process heap cannot be destroyed (false, EINVAL). */
HT_API bool ht_heap_destroy(ht_heap *heap);
/* The process heap: created on first use, growable, flags 0. Never NULL. */
HT_API ht_heap *ht_process_heap(void);

/* Allocates size bytes (0 allowed), 16-byte aligned. flags: HT_HEAP_ZERO_MEMORY,
 * HT_HEAP_GENERATE_EXCEPTIONS. NULL + ENOMEM on failure (EINVAL for a bad heap). */
HT_API void *ht_heap_alloc(ht_heap *heap, unsigned flags, size_t size);
/* As ht_heap_alloc, aligned to alignment (a power of two; 0 or another value: EINVAL). */
HT_API void *ht_heap_alloc_aligned(ht_heap *heap, unsigned flags, size_t size, size_t alignment);
/* Resizes block to size bytes, in place when possible, else moves (keeping 16-byte
 * alignment, not a larger one). block NULL: same as ht_heap_alloc (logs HEAP_ALLOC).
 * HT_HEAP_REALLOC_IN_PLACE_ONLY: NULL + ENOMEM rather than moving. On failure the block is
 * unchanged. A block that is not live in this heap: NULL + EINVAL, logged INVALID.
 * With HT_HEAP_ZERO_MEMORY, bytes beyond the old size are zero. */
HT_API void *ht_heap_realloc(ht_heap *heap, unsigned flags, void *block, size_t size);
/* Frees block. NULL: true, nothing logged. A block that is not live in this heap (double
 * free, interior, foreign, other heap's): false + EINVAL, logged with Source INVALID, heap
 * untouched (or abort with HT_HEAP_TERMINATE_ON_CORRUPTION). */
HT_API bool ht_heap_free(ht_heap *heap, unsigned flags, void *block);
/* The requested size of a live block; (size_t)-1 + EINVAL (logged INVALID) if not live. */
HT_API size_t ht_heap_size(ht_heap *heap, unsigned flags, const void *block);
/* The bytes the block can actually hold (>= its requested size); (size_t)-1 if not live.
 * Logs nothing (for malloc_usable_size). */
HT_API size_t ht_heap_usable_size(ht_heap *heap, const void *block);
/* block non-NULL: true iff it is a live block of this heap (logs nothing).
 * block NULL: checks every internal structure of the heap; true iff all are consistent. */
HT_API bool ht_heap_validate(ht_heap *heap, unsigned flags, const void *block);

/* ht_heap_entry.state */
#define HT_ENTRY_BUSY  0x0001u /* a live block */
#define HT_ENTRY_FREE  0x0002u /* free space (including blocks parked on lookaside lists) */
#define HT_ENTRY_LARGE 0x0004u /* a large block mapped on its own */
#define HT_ENTRY_LFH   0x0008u /* a slot of an LFH run */

typedef struct ht_heap_entry {
    void *address;        /* block (busy: the pointer the caller got) or start of free space */
    size_t size;          /* busy: requested size; free: usable bytes */
    unsigned state;       /* HT_ENTRY_* */
    unsigned source;      /* busy: the ht_source that served it; free: 0 */
    void *region;         /* start of the segment or large mapping it lies in */
    size_t region_size;   /* bytes reserved for that region */
    uintptr_t cursor_[4]; /* private walk state */
} ht_heap_entry;

/* Enumerates the heap's blocks: set entry->address = NULL to start; each call fills the next
 * entry and returns true; false + ENOENT at the end. Takes the heap lock per call; for a
 * consistent view hold ht_heap_lock across the walk. */
HT_API bool ht_heap_walk(ht_heap *heap, ht_heap_entry *entry);
/* Returns cached memory to the OS (this thread's lookaside lists, empty LFH runs, free
 * segments, cached large blocks, interiors of free blocks; HEAP_CONTRACT events) and returns
 * the size of the largest free block left (0 + errno for a bad heap). */
HT_API size_t ht_heap_compact(ht_heap *heap, unsigned flags);
/* Holds the heap's locks (recursive for the owning thread). Other threads block in every
 * operation that needs a lock; their lookaside-list hits proceed (except in a HT_DEBUG=3
 * build, where every operation ends with a whole-heap check that takes every lock). */
HT_API bool ht_heap_lock(ht_heap *heap);
HT_API bool ht_heap_unlock(ht_heap *heap);

typedef struct ht_source_stats {
    uint64_t n_alloc, n_free, bytes_alloc, bytes_free;
} ht_source_stats;
typedef struct ht_heap_stats {
    ht_source_stats by_source[7]; /* index = Source value 1..5; [0] and [6] stay zero */
    uint64_t live_blocks, live_bytes, committed, reserved, n_invalid;
} ht_heap_stats;
/* Counters since creation. Exact when no other thread works the heap; otherwise each
 * counter is a recent value. n_invalid counts INVALID free, realloc and size calls. */
HT_API void ht_heap_get_stats(ht_heap *heap, ht_heap_stats *out);

/* Per-heap options (ht_heap_set_option / ht_heap_get_option). */
typedef enum ht_heap_option {
    HT_OPT_LFH_THRESHOLD = 1,      /* main-path allocations of a class before its LFH is active
                                      (default 17; 0 = active at once) */
    HT_OPT_LARGE_THRESHOLD = 2,    /* requests >= this are mapped on their own (default 1 MiB,
                                      range 64 KiB .. 2 MiB) */
    HT_OPT_DECOMMIT_THRESHOLD = 3, /* free committed bytes the main path keeps before it
                                      decommits (default 32 MiB) */
    HT_OPT_LOOKASIDE_DEPTH = 4     /* blocks per thread, heap and class: SIZE_MAX (default) =
                                      by class size (64 KiB / size, within 4..128); 0 = no
                                      lookaside; N (<= 1024) = N for every class */
} ht_heap_option;
HT_API bool ht_heap_set_option(ht_heap *heap, ht_heap_option option, size_t value);
HT_API bool ht_heap_get_option(ht_heap *heap, ht_heap_option option, size_t *value);

/* The LFH size classes: number, and the block size of class i (0-based, ascending). */
HT_API unsigned ht_lfh_class_count(void);
HT_API size_t ht_lfh_class_size(unsigned index);

/* ---- tracing -------------------------------------------------------------------------- */

typedef void (*ht_consumer_fn)(const ht_event *event, void *ctx);
typedef struct ht_trace_config {
    const char *path;        /* trace file, or NULL for none */
    ht_consumer_fn consumer; /* called synchronously on the thread that did the operation, */
    void *consumer_ctx;      /* before the call returns, outside heap locks; operations
                                made inside the consumer are not traced */
    unsigned stack_depth;    /* 0 = no stacks */
    unsigned flags;          /* HT_TRACE_* */
    /* The file recorder (path != NULL); zero means default. */
    size_t buffer_size;    /* bytes per packet: each thread's buffer is cut into packets that go
                              to the writer thread whole; 0 = 64 KiB; else 4 KiB..16 MiB, rounded
                              up to 4 KiB */
    unsigned n_buffers;    /* packets per thread buffer; 0 = 64; else 2..4096 (mapped at once;
                              a packet's pages are touched only when the thread has that
                              many waiting for the writer) */
    unsigned loss_policy;  /* HT_TRACE_LOSS_DROP (0, default) or HT_TRACE_LOSS_BLOCK */
    unsigned stack_events; /* with stack_depth > 0: the events that get a stack, as
                              HT_TRACE_STACK(type) bits; 0 = every event (see below) */
} ht_trace_config;

#define HT_TRACE_NO_RUNDOWN 0x0001u /* do not emit the live heaps and blocks at start */
#define HT_TRACE_HEAPS_OFF  0x0002u /* start with every heap disabled (ht_trace_enable_heap) */

/* ht_trace_config.stack_events, like xperf's -stackwalk HeapAlloc+HeapRealloc: stacks on
 * allocations alone answer leaks, peak memory and hot sites at about half the cost of stacks
 * on every event; a FREE's stack says who freed a block (`heaptrail report` shows it for the
 * earlier free of a block freed twice). An INVALID event (Source 5) always gets its stack,
 * and rundown events never do. Bits of other values are -EINVAL. */
#define HT_TRACE_STACK(type) (1u << ((unsigned)(type)-0x20u))
#define HT_TRACE_STACK_ALL                                                                         \
    (HT_TRACE_STACK(HT_EVENT_HEAP_CREATE) | HT_TRACE_STACK(HT_EVENT_HEAP_ALLOC) |                  \
     HT_TRACE_STACK(HT_EVENT_HEAP_REALLOC) | HT_TRACE_STACK(HT_EVENT_HEAP_DESTROY) |               \
     HT_TRACE_STACK(HT_EVENT_HEAP_FREE) | HT_TRACE_STACK(HT_EVENT_HEAP_EXPAND) |                   \
     HT_TRACE_STACK(HT_EVENT_HEAP_CONTRACT))

/* ht_trace_config.loss_policy: what a thread does when all its packets wait for the writer.
 *   DROP   the event is dropped and counted (the file says how many, per thread, and where:
 *          sequence numbers keep counting, so a reader sees the gap). Rundown events always
 *          wait instead.
 *   BLOCK  the thread waits for the writer (nothing is lost; the application slows down). */
#define HT_TRACE_LOSS_DROP  0u
#define HT_TRACE_LOSS_BLOCK 1u

/* Starts the one tracing session: -EBUSY if one runs, -EINVAL for a bad config (neither
 * path nor consumer, an option out of range). With a path, the trace file is created
 * (mode 0600, O_EXCL|O_NOFOLLOW: -EEXIST if it exists, never overwritten; other open or
 * write failures as -errno), its header written and a writer thread started; the session is
 * then stopped and flushed at process exit, and on SIGSEGV, SIGABRT, SIGBUS, SIGILL and
 * SIGFPE what can be is flushed before the signal takes its course (previous handlers are
 * called). Unless HT_TRACE_NO_RUNDOWN, first emits HEAP_CREATE for every live heap and
 * HEAP_ALLOC for every live block, flagged HT_EVENT_RUNDOWN, on the calling thread: exactly
 * the heaps and blocks live at the start, each once, while other threads go on (a block
 * they allocate from then on has only its own HEAP_ALLOC). To that end it waits for the heap
 * calls in flight when it switches the heaps on (their consumer calls included), and calls
 * on a heap wait at their entry until the rundown has walked it (docs/heap.md, "Rundown"). */
HT_API int ht_trace_start(const ht_trace_config *config);
/* Stops the session; when it returns no consumer call is in progress or will be made, and
 * the trace file is complete (every thread's events, the end summary) and closed. Returns 0,
 * -EINVAL if no session runs, or -errno of the first failed write to the file. */
HT_API int ht_trace_stop(void);
/* Switches tracing of one heap (default on); returns the previous setting. */
HT_API bool ht_trace_enable_heap(ht_heap *heap, bool on);

/* The file recorder's counters, for the running session or, after stop, the last one. */
typedef struct ht_trace_stats {
    uint64_t n_events;      /* events encoded into the file */
    uint64_t n_lost;        /* events dropped: no free packet (DROP policy), or a failed write */
    uint64_t n_packets;     /* packets the writer took */
    uint64_t n_chunks;      /* chunks written (events, lost-count, end) */
    uint64_t file_size;     /* bytes written, file header included */
    uint64_t n_threads;     /* thread buffers registered */
    uint64_t writer_cpu_ns; /* CPU time of the writer thread (filled in at stop) */
} ht_trace_stats;
/* Fills *out (all zero when no file session ever ran). Returns 0, or -EINVAL for NULL.
 * During a session the figures are recent values; after stop they are exact. */
HT_API int ht_trace_get_stats(ht_trace_stats *out);

#ifdef __cplusplus
}
#endif
#endif
