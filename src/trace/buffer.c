/* buffer.c — the recorder's hot path: each thread writes fixed-size raw slots into its own
 * mmap'ed buffer (reserve -> fill -> commit), seals full packets for the writer with a
 * release store, and drops-and-counts (or waits) when every packet is taken. Also the
 * thread-exit flush and the stop-side quiescence wait. Never mallocs, never takes a lock,
 * never encodes; the fast path makes no system call. Rare cases live in *_slow functions. */
#include "trace/internal.h"

#include "trace/emit.h"

#include "common/os.h"
#include "trace/stack.h"
#include "trace/trace.h"

#include <errno.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <sched.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define TLS_IE      __attribute__((tls_model("initial-exec")))
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

/* ht__t_buf: this thread's buffer, valid when ht__t_gen is live; ht__t_gen: the generation
 * ht__t_buf belongs to, 0 = none; ht__t_in_stack: 1 while this thread captures a stack
 * (src/common/thread_hot.h). */

static __thread int t_registering TLS_IE;           /* 1 while this thread registers its buffer */
static __thread uint64_t t_lost_registering TLS_IE; /* events dropped meanwhile */

static pthread_key_t g_exit_key;
static pthread_once_t g_key_once = PTHREAD_ONCE_INIT;
static int g_key_rc;

/* -- slot filling ------------------------------------------------------------------------ */

/* The slots an event of type takes (1, or 2 with a tail), without HEAP and SEQ_SKIP. */
static inline size_t slots_of(ht_event_type type)
{
    return type == HT_EVENT_HEAP_ALLOC || type == HT_EVENT_HEAP_FREE ||
                   type == HT_EVENT_HEAP_DESTROY
               ? 1u
               : 2u;
}

/* Fills the event's slot(s) at e (slots_of(ev->type)); returns the slot after them. */
static inline ht_raw_event *slot_fill(ht_raw_event *e, const ht_event *ev, uint32_t stack_id)
{
    memset(e, 0, slots_of(ev->type) * sizeof *e);
    e->ts_ns = ev->timestamp_ns;
    e->stack_id = stack_id;
    e->flags = ev->flags;
    e->type = (uint8_t)ev->type;
    ht_raw_event *tail = &e[1];
    switch (ev->type) {
    case HT_EVENT_HEAP_ALLOC:
        e->a = ev->alloc.address;
        e->b = ev->alloc.size;
        e->source = (uint8_t)ev->alloc.source;
        return e + 1;
    case HT_EVENT_HEAP_FREE:
        e->a = ev->free.address;
        e->source = (uint8_t)ev->free.source;
        return e + 1;
    case HT_EVENT_HEAP_DESTROY:
        return e + 1;
    case HT_EVENT_HEAP_REALLOC:
        e->a = ev->realloc.new_address;
        e->b = ev->realloc.old_address;
        e->source = (uint8_t)ev->realloc.source;
        tail->a = ev->realloc.new_size;
        tail->b = ev->realloc.old_size;
        break;
    case HT_EVENT_HEAP_CREATE:
        e->a = ev->create.reserved_space;
        e->b = ev->create.committed_space;
        tail->a = ev->create.flags;
        break;
    default: /* EXPAND, CONTRACT */
        e->a = ev->expand.address;
        e->b = ev->expand.size;
        tail->a = ev->expand.committed_space;
        break;
    }
    tail->type = HT_RAW_TAIL;
    return e + 2;
}

/* The Source an event carries (0 for the heap-level events). */
static unsigned event_source(const ht_event *ev)
{
    switch (ev->type) {
    case HT_EVENT_HEAP_ALLOC:
        return ev->alloc.source;
    case HT_EVENT_HEAP_FREE:
        return ev->free.source;
    case HT_EVENT_HEAP_REALLOC:
        return ev->realloc.source;
    default:
        return 0;
    }
}

/* The event's stack id (0: none). Rundown events describe blocks allocated before the
 * session, so the stack of ht_trace_start's caller would mislead: they get none. The guard
 * keeps a capture that re-enters the heap (an unwinder that mallocs through an interposed
 * malloc) from recursing: ht__buf_emit drops such inner events. A full table records none. */
__attribute__((noinline)) static uint32_t event_stack(const ht_event *ev)
{
    if ((ev->flags & HT_EVENT_RUNDOWN) != 0 || ht__t_in_stack != 0)
        return HT_STACK_ID_NONE;
    ht__t_in_stack = 1;
    uint32_t id = ht__callsite_capture(ht__rec.stack_depth);
    ht__t_in_stack = 0;
    return id == HT_STACK_ID_FULL ? HT_STACK_ID_NONE : id;
}

/* -- writer wake-up ---------------------------------------------------------------------- */

void ht__buf_wake_writer(void)
{
    atomic_thread_fence(memory_order_seq_cst); /* the sealed head before the idle flag */
    if (atomic_load_explicit(&ht__rec.writer_idle, memory_order_relaxed) != 0) {
        atomic_fetch_add(&ht__rec.wake, 1);
        syscall(SYS_futex, &ht__rec.wake, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    }
}

/* -- packets ----------------------------------------------------------------------------- */

/* The owner's used bitmap: bit p set while packet p is taken (current or in flight). */
static inline void used_set(ht_tbuf *b, unsigned p, bool on)
{
    uint64_t *w = &ht__tbuf_used(b)[p / 64u], bit = (uint64_t)1 << (p % 64u);
    *w = on ? *w | bit : *w & ~bit;
}

/* Unmarks the packets of the positions the writer gave back since the last call. Each is
 * still bound to its packet: position i + n_packets is taken only after this ran for i. */
static void used_absorb(ht_tbuf *b, uint64_t tail)
{
    const _Atomic uint16_t *phys = ht__tbuf_phys(b);
    for (uint64_t i = b->absorbed; i < tail; i++)
        used_set(b, atomic_load_explicit(&phys[i % ht__rec.n_packets], memory_order_relaxed),
                 false);
    b->absorbed = tail;
}

/* Binds position head to the lowest-numbered free packet (there is one: head - tail <
 * n_packets, and those positions hold distinct packets) and returns it. */
static ht_packet *packet_take(ht_tbuf *b, uint64_t head, uint64_t tail)
{
    used_absorb(b, tail);
    const uint64_t *used = ht__tbuf_used(b);
    unsigned w = 0;
    while (~used[w] == 0)
        w++;
    unsigned p = w * 64u + (unsigned)__builtin_ctzll(~used[w]);
    used_set(b, p, true);
    atomic_store_explicit(&ht__tbuf_phys(b)[head % ht__rec.n_packets], (uint16_t)p,
                          memory_order_relaxed);
    if (p >= b->n_touched)
        b->n_touched = p + 1;
    return ht__packet_num(b, p);
}

/* owner: the calling thread owns b, which then has no current packet; else b's owner is
 * quiescent for good (stop, once per buffer): pos and end, which its hot path may still read
 * before it sees the session gone, are left as they are (the packet is sealed all the same). */
static void buf_seal(ht_tbuf *b, bool owner)
{
    if (b->pos == NULL)
        return;
    uint64_t head = atomic_load_explicit(&b->head, memory_order_relaxed);
    ht_packet *pk = b->cur;
    uint32_t n = (uint32_t)(b->pos - (ht_raw_event *)(pk + 1));
    if (owner) {
        ht__tbuf_pos_set(b, NULL);
        b->end = NULL;
    }
    if (n == 0) { /* nothing written: the packet is free again (position head stays next) */
        used_set(
            b,
            atomic_load_explicit(&ht__tbuf_phys(b)[head % ht__rec.n_packets], memory_order_relaxed),
            false);
        return;
    }
    pk->n_slots = n;
    atomic_store_explicit(&b->head, head + 1, memory_order_release);
}

void ht__buf_seal(ht_tbuf *b)
{
    buf_seal(b, true);
}

void ht__buf_seal_stopped(ht_tbuf *b)
{
    buf_seal(b, false);
}

/* Seals the full packet and takes the next one: returns its first slot, or NULL when the
 * event is to be dropped (DROP policy and no free packet, or the session is stopping).
 * must: wait even under DROP (rundown events). */
static ht_raw_event *buf_reserve_slow(ht_tbuf *b, uint64_t gen, bool must)
{
    if (b->pos != NULL) {
        ht__buf_seal(b);
        /* A wake-up costs the writer a context switch (a few µs on these VMs): let packets
         * gather until half the ring waits, or HT_REC_WAKE_PACKETS (the writer also polls
         * every few ms): a busy thread touches about that many packets, and the rest of a
         * large ring is slack for bursts. */
        uint64_t waiting = atomic_load_explicit(&b->head, memory_order_relaxed) -
                           atomic_load_explicit(&b->tail, memory_order_relaxed);
        if (2 * waiting >= ht__rec.n_packets || waiting >= HT_REC_WAKE_PACKETS)
            ht__buf_wake_writer();
    }
    for (unsigned spins = 0;; spins++) {
        uint64_t head = atomic_load_explicit(&b->head, memory_order_relaxed);
        uint64_t tail = atomic_load_explicit(&b->tail, memory_order_acquire);
        if (head - tail < ht__rec.n_packets) {
            ht_packet *pk = packet_take(b, head, tail);
            pk->n_slots = 0;
            pk->n_lost = atomic_load_explicit(&b->n_lost, memory_order_relaxed);
            b->cur = pk;
            b->heap = HT_TBUF_NO_HEAP; /* the packet's first event names its heap */
            b->end = (ht_raw_event *)(pk + 1) + ht__rec.slots_per_packet;
            /* after phys names pk (packet_take): the crash path reads pos, then phys */
            ht__tbuf_pos_set(b, (ht_raw_event *)(pk + 1));
            return b->pos;
        }
        if (!must && ht__rec.loss_policy == HT_TRACE_LOSS_DROP)
            return NULL;
        if (atomic_load(&ht__rec.live_gen) != gen)
            return NULL; /* stop is waiting for this thread: give the event up (counted) */
        ht__buf_wake_writer();
        if (spins < 16) {
            sched_yield();
        } else {
            struct timespec ts = {0, 50 * 1000};
            nanosleep(&ts, NULL);
        }
    }
}

/* -- registration and thread exit -------------------------------------------------------- */

/* Gives the pages of every packet this thread has touched and holds no more back to the OS
 * (the writer does the same for those still in flight once it has written them, seeing
 * `exited`). Only the owner takes packets, so none of these can be taken meanwhile; one
 * taken again by a later destructor's event faults in afresh. */
static void buf_release_free(ht_tbuf *b)
{
    used_absorb(b, atomic_load(&b->tail));
    const uint64_t *used = ht__tbuf_used(b);
    unsigned p = 0, n = b->n_touched;
    while (p < n) {
        if ((used[p / 64u] >> (p % 64u) & 1u) != 0) {
            p++;
            continue;
        }
        unsigned q = p + 1;
        while (q < n && (used[q / 64u] >> (q % 64u) & 1u) == 0)
            q++;
        (void)ht__os.decommit(ht__packet_num(b, p), (size_t)(q - p) * ht__rec.packet_size);
        p = q;
    }
}

static void buf_thread_exit(void *arg)
{
    ht_tbuf *b = arg;
    uint64_t gen = atomic_load(&ht__rec.live_gen);
    if (b == NULL || b != ht__t_buf || gen == 0 || ht__t_gen != gen)
        return;
    atomic_store(&b->busy, 1);
    if (atomic_load(&ht__rec.live_gen) == gen) {
        ht__buf_seal(b);
        /* Every packet is given back to the OS by one side: the writer releases those it
         * writes from its `exited` check on; if it checked before this store, it is between
         * its check and its tail store (draining) or past them, and the second look at tail
         * sees what it gave back (drain_buf; seq_cst atomics). The writer is there for a
         * few stores and madvise calls; if it stays longer than 20 ms (descheduled), that
         * batch's packets stay mapped until the session stops. */
        atomic_store(&b->exited, 1);
        buf_release_free(b);
        uint64_t deadline = ht__os.now_ns() + 20u * 1000u * 1000u;
        for (int i = 0; atomic_load(&b->draining) != 0 && ht__os.now_ns() < deadline; i++) {
            if (i < 100) {
                sched_yield();
            } else {
                struct timespec ts = {0, 20 * 1000};
                nanosleep(&ts, NULL);
            }
        }
        buf_release_free(b);
        ht__buf_wake_writer();
    }
    atomic_store_explicit(&b->busy, 0, memory_order_release);
}

static void key_create(void)
{
    g_key_rc = -pthread_key_create(&g_exit_key, buf_thread_exit);
}

int ht__buf_init_once(void)
{
    pthread_once(&g_key_once, key_create);
    return g_key_rc;
}

uint32_t ht__rec_buf_limit = HT_REC_MAX_THREADS; /* internal.h */

/* Registers a buffer for this thread in session gen; NULL when none can be had (the
 * session's thread limit, or no memory): the caller counts the event lost (unbuf_drop). */
static ht_tbuf *buf_register(uint64_t gen, const ht_event *ev)
{
    uint64_t idx = atomic_fetch_add(&ht__rec.n_bufs, 1);
    if (idx - ht__rec.first_buf >= ht__rec_buf_limit)
        return NULL;
    ht_tbuf *b = &ht__rec.bufs[idx % HT_REC_MAX_THREADS];
    uint8_t *mem = ht__os.map_rw(ht__tbuf_map_size()); /* zero: no packet used, all phys 0 */
    ht__tbuf_pos_set(b, NULL);
    b->end = NULL;
    b->cur = NULL;
    b->heap = HT_TBUF_NO_HEAP;
    b->gap = 0;
    b->absorbed = 0;
    b->n_touched = 0;
    atomic_store_explicit(&b->head, 0, memory_order_relaxed);
    atomic_store_explicit(&b->n_lost, 0, memory_order_relaxed);
    atomic_store_explicit(&b->busy, 0, memory_order_relaxed);
    b->tid = ev->tid;
    b->packets = mem;
    b->first_seq = ev->sequence;
    atomic_store_explicit(&b->exited, 0, memory_order_relaxed);
    atomic_store_explicit(&b->tail, 0, memory_order_relaxed);
    b->stream = 0;
    b->n_events = 0;
    /* Published even without memory, so the writer and stop skip it by packets == NULL. */
    atomic_store_explicit(&b->gen, gen, memory_order_release);
    if (mem == NULL)
        return NULL;
    pthread_setspecific(g_exit_key, b);
    return b;
}

/* Drops the owner's current event (counted): its sequence number becomes a gap, which the
 * next written event's SEQ_SKIP covers; the inline path declines until then (ht_tbuf.gap). */
static void buf_drop(ht_tbuf *b)
{
    atomic_store_explicit(&b->n_lost, atomic_load_explicit(&b->n_lost, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    b->gap++;
    b->heap = HT_TBUF_NO_HEAP;
}

/* This thread got no buffer in session t_unbuf_gen: its events there are counted in its
 * ht_unbuf entry t_unbuf_ix (HT_REC_UNBUF_MAX: none, past the table) without another try. */
static __thread uint64_t t_unbuf_gen __attribute__((tls_model("initial-exec")));
static __thread uint32_t t_unbuf_ix __attribute__((tls_model("initial-exec")));

/* Counts the event of a thread without a buffer in session gen (claiming its entry first). */
static void unbuf_drop(uint64_t gen, uint32_t tid)
{
    if (t_unbuf_gen != gen) {
        uint32_t ix = atomic_fetch_add(&ht__rec.n_unbuf, 1);
        if (ix < HT_REC_UNBUF_MAX && ht__rec.unbuf != NULL) {
            atomic_store_explicit(&ht__rec.unbuf[ix].tid, tid, memory_order_relaxed);
        } else {
            ix = HT_REC_UNBUF_MAX;
        }
        t_unbuf_ix = ix;
        t_unbuf_gen = gen;
    }
    if (t_unbuf_ix < HT_REC_UNBUF_MAX) {
        _Atomic uint64_t *n = &ht__rec.unbuf[t_unbuf_ix].n_lost; /* only this thread adds */
        atomic_store_explicit(n, atomic_load_explicit(n, memory_order_relaxed) + 1,
                              memory_order_release);
    } else {
        atomic_fetch_add_explicit(&ht__rec.n_lost_unbuf, 1, memory_order_relaxed);
    }
}

/* The first event of a thread in this session (or any event when no session records). */
static void buf_emit_slow(const ht_event *ev)
{
    if (t_registering != 0) {
        /* An event made inside buf_register: pthread_setspecific callocs the second level
         * of its key table for keys >= 32, and under a preloaded malloc that is a heap call.
         * Dropped and counted (as lost, once the buffer exists) rather than recursing. */
        t_lost_registering++;
        return;
    }
    atomic_fetch_add(&ht__rec.n_slow, 1);
    uint64_t gen = atomic_load(&ht__rec.live_gen);
    ht_tbuf *b = NULL;
    if (gen != 0 && !ht__rec.forked_child && ht__t_gen != gen && t_unbuf_gen == gen) {
        unbuf_drop(gen, ev->tid); /* no buffer for this thread in this session: counted */
    } else if (gen != 0 && !ht__rec.forked_child && ht__t_gen != gen) {
        t_registering = 1;
        t_lost_registering = 0;
        b = buf_register(gen, ev);
        t_registering = 0;
        if (b != NULL && t_lost_registering != 0)
            atomic_store_explicit(&b->n_lost, t_lost_registering, memory_order_relaxed);
        ht__t_buf = b;
        ht__t_gen = b != NULL ? gen : 0;
        if (b == NULL && atomic_load(&ht__rec.live_gen) == gen) /* not a stop meanwhile */
            unbuf_drop(gen, ev->tid);
    }
    atomic_fetch_sub(&ht__rec.n_slow, 1);
    if (b != NULL) {
        ht__buf_emit(ev); /* re-checks the generation: at most one more trip here */
        /* the events dropped while registering came after ev: their gap follows it */
        if (t_lost_registering != 0 && ht__t_buf == b) {
            b->gap += t_lost_registering;
            b->heap = HT_TBUF_NO_HEAP;
        }
    }
}

/* -- the hot path ------------------------------------------------------------------------ */

void ht__buf_emit(const ht_event *ev)
{
    uint64_t gen = ht__t_gen;
    ht_tbuf *b = ht__t_buf;
    if (UNLIKELY(gen == 0 ||
                 atomic_load_explicit(&ht__rec.live_gen, memory_order_relaxed) != gen)) {
        buf_emit_slow(ev);
        return;
    }
    if (UNLIKELY(ht__t_in_stack != 0)) {
        /* The unwinder re-entered the heap under this thread's own event: drop it (counted;
         * its sequence number becomes a gap) rather than write inside the outer one. */
        buf_drop(b);
        return;
    }
    /* Asymmetric Dekker with stop: busy = 1 before the generation check here, membarrier
     * (or, without it, a real fence here) between live_gen = 0 and the busy scan there. */
    if (UNLIKELY(ht__rec.strong_fence)) {
        atomic_exchange(&b->busy, 1);
    } else {
        atomic_store_explicit(&b->busy, 1, memory_order_relaxed);
        atomic_signal_fence(memory_order_seq_cst);
    }
    if (UNLIKELY(atomic_load_explicit(&ht__rec.live_gen, memory_order_relaxed) != gen))
        goto out;

    /* Captured while busy = 1: stop waits for it before the stack table goes away. */
    uint32_t stack_id =
        ht__stack_for((ht_event_type)ev->type, event_source(ev)) ? event_stack(ev) : 0;
    uint64_t skip = b->gap;
    /* room for the HEAP slot too: a new packet always needs one */
    size_t need = 1u + (skip != 0 ? 1u : 0u) + slots_of(ev->type);
    ht_raw_event *p = b->pos;
    if (UNLIKELY((uintptr_t)b->end - (uintptr_t)p < need * sizeof(ht_raw_event))) {
        p = buf_reserve_slow(b, gen, (ev->flags & HT_EVENT_RUNDOWN) != 0);
        if (p == NULL) {
            buf_drop(b);
            goto out;
        }
    }
    if (skip != 0) {
        memset(p, 0, sizeof *p);
        p->type = HT_RAW_SEQ_SKIP;
        p->a = skip;
        p++;
    }
    if (ev->heap_handle != b->heap) {
        memset(p, 0, sizeof *p);
        p->type = HT_RAW_HEAP;
        p->a = ev->heap_handle;
        b->heap = ev->heap_handle;
        p++;
    }
    ht__tbuf_prefetch(p);
    p = slot_fill(p, ev, stack_id);
    b->gap = 0;
    /* Commit: the record's slots are in before pos moves past them (release; a plain mov on
     * x86). The crash path copies another thread's current packet up to its pos. */
    ht__tbuf_pos_set(b, p);
out:
    atomic_store_explicit(&b->busy, 0, memory_order_release);
}

/* Without stacks the path makes no call, so it saves no registers: a separate instance. */
__attribute__((noinline)) static bool emit_block_stack(ht_event_type type, uintptr_t heap,
                                                       uintptr_t address, uint64_t size,
                                                       unsigned source, uint64_t ts)
{
    return ht__emit_block_body(type, heap, address, size, source, ts, true);
}

bool ht__trace_emit_block(ht_event_type type, uintptr_t heap, uintptr_t address, uint64_t size,
                          unsigned source, uint64_t ts)
{
    if (ht__stack_for(type, source))
        return emit_block_stack(type, heap, address, size, source, ts);
    return ht__emit_block_body(type, heap, address, size, source, ts, false);
}

ht_tbuf *ht__buf_self(void)
{
    uint64_t gen = atomic_load(&ht__rec.live_gen);
    return gen != 0 && ht__t_gen == gen ? ht__t_buf : NULL;
}

/* -- stop side --------------------------------------------------------------------------- */

void ht__buf_quiesce(void)
{
    while (atomic_load(&ht__rec.n_slow) != 0)
        sched_yield();
    if (!ht__rec.strong_fence)
        syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
    uint64_t end = ht__rec_bufs_end();
    for (uint64_t i = ht__rec.first_buf; i < end; i++) {
        ht_tbuf *b = &ht__rec.bufs[i % HT_REC_MAX_THREADS];
        if (atomic_load_explicit(&b->gen, memory_order_acquire) != ht__rec.gen)
            continue;
        while (atomic_load_explicit(&b->busy, memory_order_acquire) != 0)
            sched_yield();
    }
}
