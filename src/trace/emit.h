/* emit.h — the recorder's hot path for an ALLOC, FREE or REALLOC of the heap's paths, inline
 * (src/heap/api.c includes it: a call, a frame and the argument shuffle are a sizeable part of
 * a ~40-instruction path). Writes one raw slot into the thread's own packet, or declines and
 * writes nothing. Shares the busy/generation protocol of ht__buf_emit (buffer.c). Never
 * mallocs, locks or makes a system call. */
#ifndef HT_TRACE_EMIT_H
#define HT_TRACE_EMIT_H

#include "common/thread_hot.h"
#include "trace/stack.h"
#include "trace/trace.h"
#include "trace/types.h"

#include <heaptrail.h>

extern ht_recorder ht__rec;
/* buffer.c: this thread's buffer, its session generation (0 = none), 1 while it captures a
 * stack; session.c: its last event sequence number. */
/* A stack for this event: stacks on, and its type asked for (stack_events) or it is INVALID. */
static inline __attribute__((always_inline)) bool ht__stack_for(ht_event_type type, unsigned source)
{
    return atomic_load_explicit(&ht__rec.stack_depth, memory_order_relaxed) != 0 &&
           ((atomic_load_explicit(&ht__rec.stack_events, memory_order_relaxed) >>
                 ((unsigned)type - 0x20u) &
             1u) != 0 ||
            source == HT_SOURCE_INVALID);
}

/* callsite.c: captures and interns the stack of the caller of ht_heap_* (heaptrail's own
 * frames dropped), depth frames at most. HT_STACK_ID_NONE on failure, HT_STACK_ID_FULL when
 * the table is full. Hot path: no malloc, no lock. */
uint32_t ht__callsite_capture(unsigned depth);

/* ht__trace_emit and ht__buf_emit in one pass for the common case, without an ht_event: an
 * ALLOC or FREE (no flags) of a thread whose buffer is registered, while only the file records
 * (fast_off: no consumer), no gap in the sequence (ht_tbuf.gap), room in the packet.
 * Anything else returns false before writing anything (a stack it captured is only interned),
 * and the caller takes the general path. The same busy/generation protocol as ht__buf_emit;
 * the stack is captured first, so that an event the unwinder causes (dropped, counted) takes
 * its sequence number before this one is chosen. */
/* fast: the inline no-stack path (stacks false): ht__rec.fast_gen is its generation test,
 * which also says no consumer records, no stacks are taken and membarrier is there (under
 * TSan, which has none, the path tests the fence kind: HT_FAST_FENCE_TEST). */
/* pretested (with fast): the caller found fast_gen == ht__t_gen just before. fast needs no
 * in-stack test: a thread is in a stack capture only under busy = 1 in a session with stacks,
 * whose fast_gen is HT_REC_NO_GEN, and no other session can start before that busy ends
 * (stop waits for it). */
static inline __attribute__((always_inline)) bool
ht__emit_body(ht_event_type type, uintptr_t heap, uintptr_t address, uint64_t size, unsigned source,
              uint64_t ts, const bool stacks, const bool tail, uint64_t tail_a, uint64_t tail_b,
              const bool fast, const bool pretested)
{
    const ptrdiff_t n_slots = tail ? 2 : 1;
    _Atomic uint64_t *live = fast ? &ht__rec.fast_gen : &ht__rec.live_gen;
    uint64_t gen = ht__t_gen;
    ht_tbuf *b = ht__t_buf;
    if (__builtin_expect(
            (!fast && gen == 0) ||
                (!pretested && atomic_load_explicit(live, memory_order_relaxed) != gen) ||
                (!fast && atomic_load_explicit(&ht__rec.fast_off, memory_order_relaxed) != 0) ||
                (!fast && ht__t_in_stack != 0) ||
                (uintptr_t)b->end - (uintptr_t)b->pos < (uintptr_t)n_slots * sizeof(ht_raw_event) ||
                b->heap != heap, /* also after a drop: ht_tbuf.gap */
            0))
        return false; /* pos == end == NULL: no packet yet */
    if ((!fast || HT_FAST_FENCE_TEST) &&
        __builtin_expect(ht__rec.strong_fence, 0)) { /* as in ht__buf_emit */
        atomic_exchange(&b->busy, 1);
    } else {
        atomic_store_explicit(&b->busy, 1, memory_order_relaxed);
        atomic_signal_fence(memory_order_seq_cst);
    }
    if (__builtin_expect(atomic_load_explicit(live, memory_order_relaxed) != gen, 0))
        goto decline;
    uint32_t stack_id = 0;
    if (stacks) {
        ht__t_in_stack = 1;
        stack_id =
            ht__callsite_capture(atomic_load_explicit(&ht__rec.stack_depth, memory_order_relaxed));
        ht__t_in_stack = 0;
        stack_id = stack_id == HT_STACK_ID_FULL ? HT_STACK_ID_NONE : stack_id;
    }
    ht_raw_event *p = b->pos;
    /* With stacks the capture may have dropped inner events (each a gap: heap is reset). */
    if (stacks && __builtin_expect(b->heap != heap || (uintptr_t)b->end - (uintptr_t)p <
                                                          (uintptr_t)n_slots * sizeof *p,
                                   0))
        goto decline;
    p->ts_ns = ts;
    p->a = address;
    p->b = size;
    p->stack_id = stack_id;
    p->flags = 0;
    p->type = (uint8_t)type;
    p->source = (uint8_t)source;
    if (tail) {
        p[1].ts_ns = 0;
        p[1].a = tail_a;
        p[1].b = tail_b;
        p[1].stack_id = 0;
        p[1].flags = 0;
        p[1].type = HT_RAW_TAIL;
        p[1].source = 0;
    }
    ht__trace_seq++;
    ht__tbuf_prefetch(p);
    ht__tbuf_pos_set(b, p + n_slots); /* commit (ht_tbuf.pos) */
    atomic_store_explicit(&b->busy, 0, memory_order_release);
    return true;
decline:
    atomic_store_explicit(&b->busy, 0, memory_order_release);
    return false;
}

/* One ALLOC or FREE slot (see ht__emit_body). */
static inline __attribute__((always_inline)) bool
ht__emit_block_body(ht_event_type type, uintptr_t heap, uintptr_t address, uint64_t size,
                    unsigned source, uint64_t ts, const bool stacks)
{
    return ht__emit_body(type, heap, address, size, source, ts, stacks, false, 0, 0, false, false);
}

/* A REALLOC without flags, no stacks, as two slots (the event and its tail); false when the
 * caller must take the general path (a session with stacks or a consumer, or anything
 * ht__emit_body declines). */
static inline __attribute__((always_inline)) bool
ht__trace_emit_realloc_inline(uintptr_t heap, uintptr_t new_address, uintptr_t old_address,
                              uint64_t new_size, uint64_t old_size, unsigned source, uint64_t ts)
{
    return ht__emit_body(HT_EVENT_HEAP_REALLOC, heap, new_address, old_address, source, ts, false,
                         true, new_size, old_size, true, false);
}

/* The inline no-stack path alone, for a caller that found ht__rec.fast_gen == ht__t_gen
 * (ht__trace_fast_live) before it stamped: false when it declines (the caller then takes
 * ht__trace_emit_block, which also serves sessions with stacks, or the general path). It
 * makes no call, so a caller whose declines leave by a tail call saves no registers. */
static inline __attribute__((always_inline)) bool
ht__trace_emit_fast(ht_event_type type, uintptr_t heap, uintptr_t address, uint64_t size,
                    unsigned source, uint64_t ts)
{
    return ht__emit_body(type, heap, address, size, source, ts, false, false, 0, 0, true, true);
}

/* The inline path may record this thread's next event, and the clock is the TSC: the test
 * before ht__trace_emit_fast. */
static inline __attribute__((always_inline)) bool ht__trace_fast_live(void)
{
    return atomic_load_explicit(&ht__rec.fast_gen, memory_order_relaxed) == ht__t_gen;
}

/* ht__trace_emit_block (trace.h) with its no-stack case inline. */
static inline __attribute__((always_inline)) bool
ht__trace_emit_block_inline(ht_event_type type, uintptr_t heap, uintptr_t address, uint64_t size,
                            unsigned source, uint64_t ts)
{
    if (__builtin_expect(
            ht__emit_body(type, heap, address, size, source, ts, false, false, 0, 0, true, false),
            1))
        return true;
    if (atomic_load_explicit(&ht__rec.stack_depth, memory_order_relaxed) != 0)
        return ht__trace_emit_block(type, heap, address, size, source, ts);
    return false;
}

#endif
