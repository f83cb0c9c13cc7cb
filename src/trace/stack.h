/* stack.h — call stacks for the recorder: capture (frame-pointer walk or DWARF unwinding via
 * libunwind, chosen once at init), interning into a lock-free mmap'ed table (each distinct
 * stack gets one dense id and is handed to the writer exactly once), and the module map
 * (dl_iterate_phdr: path, base, size, build-id; load/unload diffs). Capture runs inside
 * malloc: it never calls malloc, stdio or a lock that malloc may hold, and uses only
 * initial-exec TLS. Init, fini, drain and the module functions run outside the hot path. */
#ifndef HT_TRACE_STACK_H
#define HT_TRACE_STACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* -- limits and special ids ---------------------------------------------------------------- */

/* HT_STACK_ID_FULL: the table is full. Never defined by a STACK record: the writer records
 * such events with no stack and reports ht_stack_stats.n_full. */
#define HT_STACK_MAX_DEPTH 256u        /* deeper requests are clamped (FORMAT.md allows 1024) */
#define HT_STACK_ID_NONE   0u          /* capture failed: the event carries no stack */
#define HT_STACK_ID_FULL   0xFFFFFFFFu /* see above */

/* -- unwinders (unwind.c) ------------------------------------------------------------------- */

typedef enum ht_unwind_kind {
    HT_UNWIND_AUTO = 0,      /* DWARF when an unwinder for it is built in, else frame pointers */
    HT_UNWIND_FP = 1,        /* frame-pointer walk: every frame on the way must keep rbp/x29 */
    HT_UNWIND_DWARF = 2,     /* .eh_frame: the own cached CFI walker on x86-64 (libunwind for
                                frames it cannot describe), libunwind elsewhere */
    HT_UNWIND_LIBUNWIND = 3, /* libunwind's unw_backtrace only (the reference) */
} ht_unwind_kind;

/* A strategy: fills frames[0..max) with return addresses, innermost first, starting with
 * the caller of the function that called capture, minus skip more frames. Returns the
 * count (0 on failure). Never mallocs; async-signal-tolerant (FP: fully; DWARF: as much as
 * libunwind's local unwinder, see docs/decisions/0003-stack-unwinding.md). */
typedef struct ht_unwinder {
    const char *name;   /* "fp" or "dwarf" */
    bool (*init)(void); /* once, outside malloc */
    size_t (*capture)(uint64_t *frames, size_t max, unsigned skip);
} ht_unwinder;

/* The unwinder for kind, or NULL when it is not built in (libunwind not found; DWARF on a
 * non-x86-64 machine without libunwind). */
const ht_unwinder *ht__unwind_get(ht_unwind_kind kind);
/* "fp", "dwarf", "libunwind", "auto" (or NULL/empty) → kind; anything else → -1. */
int ht__unwind_kind_from_name(const char *name);
/* True when some DWARF unwinder is built in (the own one on x86-64, or libunwind). */
bool ht__unwind_have_dwarf(void);
/* True when libunwind was found at build time. */
bool ht__unwind_have_libunwind(void);
/* Outside the hot path (the writer at each wake-up, tests): lets the DWARF walker see
 * objects loaded or unloaded since init (one dl_iterate_phdr step when nothing changed;
 * takes the loader's lock). Until then a pc in a new object sends the capture to libunwind. */
void ht__unwind_refresh(void);
/* The memo of this thread's last capture by the fp or own DWARF walker: the way (0..WAYS-1)
 * it recorded into, or that way | HT_UNWIND_MEMO_WHOLE when its frames are exactly those of
 * the capture that recorded that way (same arguments, every slot it read verified), or
 * HT_UNWIND_MEMO_NONE (libunwind, a nested walk). Lets a caller keep a result per way. */
#define HT_UNWIND_MEMO_WAYS  3u
#define HT_UNWIND_MEMO_NONE  0xFFu
#define HT_UNWIND_MEMO_WHOLE 0x100u
#define HT_UNWIND_MEMO_PART  0x200u /* | way: the walk took its rest from a remembered one */
extern __thread unsigned ht__unwind_memo_last __attribute__((tls_model("initial-exec")));
/* Set by the caller before a capture: bit w set when it keeps the result of way w's own
 * capture (callsite.c: the interned id). A capture that is exactly that way's (WHOLE) then
 * stores no frames and returns 0; the caller takes its kept result. 0: frames always. */
extern __thread unsigned ht__unwind_memo_known __attribute__((tls_model("initial-exec")));
/* HT_UNWIND_CALLER_BYTES bytes of this thread's own, kept with its memo ways (mapped per
 * thread, not in static TLS) for the capture's caller: callsite.c's cache of interned stacks.
 * Zero when first mapped; NULL when it cannot be had (no memory, the thread is exiting, or a
 * signal handler interrupted a walk). 16-byte aligned. */
#define HT_UNWIND_CALLER_BYTES 1152u
void *ht__unwind_caller_area(void);
/* Captures the own DWARF walker handed to libunwind (or ended early without it) since the
 * process started. For tests. */
uint64_t ht__unwind_n_fallback(void);
/* Releases the DWARF walker's module copies and rule cache; no capture in flight. */
void ht__unwind_fini(void);
/* This thread's stack [lo, hi) as the frame-pointer walker bounds it (read once per thread
 * from /proc/self/maps with raw syscalls: no malloc). False if unknown. For tests. */
bool ht__unwind_thread_bounds(uintptr_t *lo, uintptr_t *hi);

/* -- interning (stack.c) -------------------------------------------------------------------- */

typedef struct ht_stack_config {
    ht_unwind_kind unwind; /* which unwinder; AUTO picks */
    unsigned depth;        /* default frames per capture (1..HT_STACK_MAX_DEPTH); 0 = 32 */
    uint32_t max_stacks;   /* distinct stacks kept; 0 = 1 Mi (1048576) */
    size_t arena_size;     /* bytes for frames; 0 = 256 MiB of address space (lazily touched) */
} ht_stack_config;

typedef struct ht_stack_stats {
    uint64_t n_new;     /* distinct stacks interned = highest id handed out */
    uint64_t n_failed;  /* captures that found no frame */
    uint64_t n_full;    /* captures answered with HT_STACK_ID_FULL */
    uint64_t n_drained; /* stacks handed to ht__stack_drain's callback */
} ht_stack_stats;

/* Maps the table and arena, initialises the unwinder. Call before any capture, outside
 * malloc-reachable code, with no capture in flight. 0 or -errno (-ENOTSUP: the asked
 * unwinder is not built in). Calling it again without fini is -EBUSY. */
int ht__stack_init(const ht_stack_config *config);
/* Unmaps everything; ids start again at 1 after the next init. The caller guarantees no
 * capture or drain is in flight (the session's in-flight count). */
void ht__stack_fini(void);
/* The unwinder chosen by init, or NULL before init. */
const ht_unwinder *ht__stack_unwinder(void);

/* Captures the caller's stack (depth frames; 0 = the configured depth), skipping skip
 * frames above the caller, and interns it. Returns its id (1.., dense in order of first
 * sighting), HT_STACK_ID_NONE on failure or before init, or HT_STACK_ID_FULL. Lock-free;
 * any thread; no malloc; initial-exec TLS only. The id is published to drain before this
 * returns. */
uint32_t ht__stack_capture(unsigned depth, unsigned skip);
/* Interns given frames (n 1..HT_STACK_MAX_DEPTH) like capture does. For tests, rundown and
 * recorders that unwind themselves. */
uint32_t ht__stack_intern(const uint64_t *frames, size_t n);

/* Writer side: calls fn(id, frames, n, ctx) for each stack not yet drained, in id order,
 * each id exactly once over the table's life. Stops early (and resumes there next time)
 * when fn returns false, or at an id whose insert has not finished publishing (a few
 * instructions; the next drain gets it). Returns the highest id drained so far (all ids
 * <= it are drained): events whose stack id is above it must wait for a later drain. One
 * drainer at a time. */
typedef bool (*ht_stack_fn)(uint32_t id, const uint64_t *frames, size_t n, void *ctx);
uint32_t ht__stack_drain(ht_stack_fn fn, void *ctx);
/* The frames of a published id (for tests and symbolizing in-process); NULL if unknown. */
const uint64_t *ht__stack_frames(uint32_t id, size_t *n);
void ht__stack_get_stats(ht_stack_stats *out);

/* -- module map (modules.c) ----------------------------------------------------------------- */

typedef struct ht_module {
    const char *path;        /* as the loader saw it; the executable's from /proc/self/exe */
    size_t path_size;        /* bytes at path, no NUL counted (<= 4096) */
    uint64_t base;           /* lowest mapped address (page-aligned start of the PT_LOADs) */
    uint64_t size;           /* bytes from base to the end of the highest PT_LOAD, page-rounded */
    const uint8_t *build_id; /* NT_GNU_BUILD_ID bytes, or NULL */
    size_t build_id_size;    /* 0..64 */
} ht_module;

typedef enum ht_module_change { HT_MODULE_LOAD = 1, HT_MODULE_UNLOAD = 2 } ht_module_change;
typedef void (*ht_module_fn)(ht_module_change change, const ht_module *module, void *ctx);

/* Calls fn(HT_MODULE_LOAD, …) for every loaded object and remembers them as the baseline
 * for poll. The callbacks run after the loader's lock is released (they may dlopen). The
 * module pointers are valid only during the call. Returns the number of modules, or
 * -errno. One caller at a time (the writer); not for malloc-reachable code. */
int ht__modules_snapshot(ht_module_fn fn, void *ctx);
/* Cheap when nothing changed (one dl_iterate_phdr step comparing glibc's dlpi_adds and
 * dlpi_subs counters). Otherwise rescans and calls fn for each object loaded or unloaded
 * since the last snapshot or poll. Returns the number of changes, or -errno. Same rules
 * as snapshot; before any snapshot it behaves like one. */
int ht__modules_poll(ht_module_fn fn, void *ctx);
/* glibc's dlpi_adds / dlpi_subs (objects loaded / unloaded so far) from one
 * dl_iterate_phdr step; false when the loader does not report them. Takes the loader's lock. */
bool ht__modules_counters(unsigned long long *adds, unsigned long long *subs);
/* Forgets the baseline and unmaps the table. */
void ht__modules_fini(void);

#endif
