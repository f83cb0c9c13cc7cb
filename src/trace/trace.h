/* trace.h — the tracer as the heap sees it: a session that takes finished ht_event structs
 * and hands them to the consumer (and, later, the file recorder). The tracer knows the event
 * structs and nothing of allocator internals. */
#ifndef HT_TRACE_TRACE_H
#define HT_TRACE_TRACE_H

#include "common/os.h"
#include "common/thread_hot.h"

#include <heaptrail.h>

#include <stdbool.h>
#include <stdint.h>

/* -- session.c -- */
/* Starts the session's sinks (consumer and/or file recorder). 0 or -errno. */
int ht__trace_session_start(const ht_trace_config *config);
/* Stops taking events and waits until no consumer call is in progress. 0 or -errno. */
int ht__trace_session_stop(void);
/* Stamps tid and sequence, then delivers the event; drops it when no session runs or this
 * thread is inside the consumer. ev->timestamp_ns must already be set. */
void ht__trace_emit(ht_event *ev);
/* (buffer.c) ht__trace_emit for an ALLOC (size) or FREE (size 0) without flags, from its
 * fields, when only the file records and the buffer takes it at once; false when the caller
 * must build the ht_event and call ht__trace_emit (nothing was done). ts: ht__trace_now. */
bool ht__trace_emit_block(ht_event_type type, uintptr_t heap, uintptr_t address, uint64_t size,
                          unsigned source, uint64_t ts);
/* True while this thread runs the consumer: its heap operations are not traced. */
bool ht__trace_in_consumer(void);
/* The thread's last clock read (ht__trace_now, or ht__trace_now_local when it had to read):
 * a stamp never later than the clock now. */

/* An event stamp in the process's trace clock (src/common/os.h: CLOCK_MONOTONIC ns, or TSC
 * ticks under HT_CLOCK_TSC, converted to ns by the writer and for the consumer). What
 * ht_event.timestamp_ns holds until ht__trace_emit delivers it; ordered after every earlier
 * load under the TSC (`lfence; rdtsc`). Kept as the thread's last clock read. */
static inline uint64_t ht__trace_now(void)
{
    uint64_t s = ht__os_stamp();
    ht__t_stamp = s;
    return s;
}
/* ht__trace_now_local's read when it cannot reuse a stamp (out of line). */
uint64_t ht__trace_now_local_read(void);

/* A stamp for an event whose causal predecessors are all earlier events of this thread, which
 * the per-thread sequence orders anyway: an alloc served from the thread's own lookaside list
 * (only this thread's frees and reallocs fill it; a thread's lists are emptied when it exits,
 * so a recycled tcache starts empty), and a free to that list of a block whose latest alloc or
 * resize was this thread's (its tag, src/heap/tcache.c). Under the TSC it reads no clock: the
 * later of this thread's last stamp and the writer's clock word (src/common/os.h), so never
 * later than now and about one writer pass (5 ms plus the pass) early at most; it becomes the
 * thread's last stamp. The edges out of the event keep their order: another thread's event
 * that follows it reads the clock ordered, later (a free of a block another thread made always
 * does, as does an alloc from shared state). Never for a free of another thread's block, or an
 * alloc that took a block from shared state. docs/decisions/0002, fifth and sixth sessions. */
/* ht__trace_now_local's TSC case, for a caller that tested ht__os_clock itself (and so
 * makes no call on its hot path): the later of the thread's last stamp and the clock word. */
static inline uint64_t ht__trace_now_local_tsc(void)
{
    uint64_t last = ht__t_stamp;
    uint64_t word = atomic_load_explicit(&ht__os_clock_line.word, memory_order_relaxed);
    uint64_t s = last > word ? last : word;
    ht__t_stamp = s;
    return s;
}

/* ht__trace_now's TSC case (the same proviso). */
static inline uint64_t ht__trace_now_tsc(void)
{
    uint64_t s = ht__os_tsc_ordered() | HT_STAMP_TSC;
    ht__t_stamp = s;
    return s;
}

static inline uint64_t ht__trace_now_local(void)
{
    uint64_t last = ht__t_stamp;
    uint64_t word = atomic_load_explicit(&ht__os_clock_line.word, memory_order_relaxed);
    uint64_t s = last > word ? last : word;
    /* Under the TSC the word is a TSC stamp (the session's start publishes one before any heap
     * is traced), so s is one too; under CLOCK_MONOTONIC (a consumer records) every stamp is
     * read. */
    if (__builtin_expect(atomic_load_explicit(&ht__os_clock, memory_order_relaxed) == HT_CLOCK_TSC,
                         1)) {
        ht__t_stamp = s; /* the thread's frees of its own blocks sort after (ht__t_tagbits) */
        return s;
    }
    return ht__trace_now_local_read();
}
/* CLOCK_MONOTONIC ns now (file header, metadata and end records). */
uint64_t ht__trace_now_ns(void);
/* (callsite.c) Names fn as an entry point into the heap for stack capture: a recorded stack
 * starts at the caller of the outermost such frame. For code linked around the heap (the
 * preload library's malloc family); only stores the pointer (callable from inside malloc):
 * the next session start looks its code range up. At most 24. */
void ht__trace_add_entry(uintptr_t fn);
/* This thread's kernel id, cached. */
uint32_t ht__trace_tid(void);

#endif
