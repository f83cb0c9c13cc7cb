/* os.h — the OS seam: every mmap, mprotect, madvise, clock read, thread id and raw write in
 * heaptrail goes through here, so tests can inject failures (fail the Nth reserve, ...).
 * Nothing here allocates with malloc. */
#ifndef HT_COMMON_OS_H
#define HT_COMMON_OS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HT_PAGE_SIZE 4096u

typedef struct ht_os_ops {
    void *(*reserve)(size_t size);             /* PROT_NONE, NULL on failure */
    bool (*commit)(void *addr, size_t size);   /* make read/write */
    bool (*decommit)(void *addr, size_t size); /* give pages back, keep them usable */
    bool (*release)(void *addr, size_t size);  /* unmap */
    void *(*map_rw)(size_t size);              /* read/write anonymous, NULL on failure */
    uint64_t (*now_ns)(void);                  /* CLOCK_MONOTONIC */
    ssize_t (*write)(int fd, const void *buf, size_t size);
} ht_os_ops;

/* The table in force; tests may replace entries (ht__os_set_ops) before heaps exist. */
extern ht_os_ops ht__os;
void ht__os_set_ops(const ht_os_ops *ops); /* NULL restores the defaults */

/* Reserves size bytes aligned to align (a power of two >= page), PROT_NONE. */
void *ht__os_reserve_aligned(size_t size, size_t align);
pid_t ht__os_gettid(void);

/* -- the trace clock strategy (docs/decisions/0002) ---------------------------------------
 * Event stamps are taken by ht__os_stamp on the hot path in the clock in force and turned into
 * CLOCK_MONOTONIC ns by ht__clock_to_ns (src/common/clock.h), off the hot path:
 *   HT_CLOCK_MONOTONIC  a stamp is CLOCK_MONOTONIC ns (ht__os.now_ns)
 *   HT_CLOCK_TSC        a stamp is the TSC read by `lfence; rdtsc`, with HT_STAMP_TSC set
 *                       (x86-64 with constant_tsc and nonstop_tsc, or HEAPTRAIL_CLOCK=tsc)
 * The flag makes every stamp self-describing: one taken just before a session switched clocks
 * still converts right. ht__clock_init selects what the process may use; sessions set it. */
typedef enum ht_clock_kind { HT_CLOCK_MONOTONIC = 0, HT_CLOCK_TSC = 1 } ht_clock_kind;

#define HT_STAMP_TSC ((uint64_t)1 << 63) /* ns and ticks stay below it for decades */
/* A step between two stamps (ticks or ns) that keeps them apart once converted to ns, where a
 * stamp is derived from another to sort after or before it (a tie would leave the order of two
 * threads' events to their sequence numbers): 64 ticks are over 10 ns below a 6 GHz TSC, and
 * over 5 ns where the tick-to-ns map's slope is clamped to half the measured rate
 * (src/common/clock.c). */
#define HT_STAMP_STEP 64u

extern _Atomic ht_clock_kind ht__os_clock; /* the clock stamps are taken in now */

/* The TSC, ordered after every earlier instruction (lfence: the loads that obtained a block,
 * or the pointer being freed, have completed); 0 where the CPU has none (never used there). */
#if defined(__x86_64__)
static inline uint64_t ht__os_tsc_ordered(void)
{
    uint32_t lo, hi;
    __asm__ __volatile__("lfence\n\trdtsc" : "=a"(lo), "=d"(hi)::"memory");
    return (uint64_t)hi << 32 | lo;
}
/* The TSC without the fence: it may be read before earlier loads complete. Only for an event
 * with no cross-thread predecessor to order after (see ht__trace_now_local). */
static inline uint64_t ht__os_tsc_unordered(void)
{
    uint32_t lo, hi;
    __asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi)::"memory");
    return (uint64_t)hi << 32 | lo;
}
#else
static inline uint64_t ht__os_tsc_ordered(void)
{
    return 0;
}
static inline uint64_t ht__os_tsc_unordered(void)
{
    return 0;
}
#endif

/* One event stamp in the clock in force. */
static inline uint64_t ht__os_stamp(void)
{
    return atomic_load_explicit(&ht__os_clock, memory_order_relaxed) == HT_CLOCK_TSC
               ? (ht__os_tsc_ordered() | HT_STAMP_TSC)
               : ht__os.now_ns();
}

/* ht__os_stamp without the ordering fence (the same clock). */
static inline uint64_t ht__os_stamp_unordered(void)
{
    return atomic_load_explicit(&ht__os_clock, memory_order_relaxed) == HT_CLOCK_TSC
               ? (ht__os_tsc_unordered() | HT_STAMP_TSC)
               : ht__os.now_ns();
}

/* The clock word: an ordered TSC stamp (with HT_STAMP_TSC) that the recorder's writer thread
 * publishes on each of its passes (a pass, then a 5 ms wait when it found nothing to write, so
 * about every 5 ms plus a pass while a session records) and a session
 * start publishes before its first event; 0 before the first. Never later than the TSC now on
 * any CPU. A stamp that may be early but must not be late takes the later of it and the
 * thread's own last stamp (ht__trace_now_local, docs/decisions/0002, fifth session). On a line
 * of its own: every thread reads it; the writer writes it (and ht_trace_enable_heap, rarely). */
typedef struct ht_os_clock_line {
    _Atomic uint64_t word;
    uint8_t pad_[56];
} ht_os_clock_line;
extern ht_os_clock_line ht__os_clock_line;

/* Publishes the TSC now as the clock word (raise: v, if above it), when stamps are TSC ticks.
 * The word only rises: two
 * publishers (the writer, ht_trace_enable_heap) may read and store in either order, and a
 * reused stamp must never fall below a stamp it has to sort after (a free of the thread's own
 * block after a heap was switched back on: docs/decisions/0002, sixth session). */
static inline void ht__os_clock_word_raise(uint64_t v)
{
    uint64_t old = atomic_load_explicit(&ht__os_clock_line.word, memory_order_relaxed);
    while (old < v &&
           !atomic_compare_exchange_weak_explicit(&ht__os_clock_line.word, &old, v,
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

static inline void ht__os_clock_word_publish(void)
{
    if (atomic_load_explicit(&ht__os_clock, memory_order_relaxed) == HT_CLOCK_TSC)
        ht__os_clock_word_raise(ht__os_tsc_ordered() | HT_STAMP_TSC);
}

#endif
