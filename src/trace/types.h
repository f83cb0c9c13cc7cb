/* types.h — the file recorder's structs and constants: per-thread buffers cut into packets,
 * the writer's per-thread streams, and the one recorder state. Holds data only; the code is
 * in buffer.c (hot path), writer.c (writer thread) and recorder.c (session, signals). Nothing
 * here may need malloc: every array lives in memory mapped through src/common/os.h.
 *
 * Glossary (docs/architecture.md):
 *   slot        one ht_raw_event (32 bytes), the unit the hot path writes; an event takes 1
 *               slot (REALLOC, CREATE, EXPAND, CONTRACT: 2), plus 1 HEAP slot where the heap
 *               changes or a packet starts, plus 1 SEQ_SKIP slot after lost events
 *   packet      a fixed-size piece of a thread buffer: a ht_packet header, then slots. The
 *               owner fills one packet at a time and *seals* it (release store of head); the
 *               writer takes only sealed packets, whole, and gives them back (release store
 *               of tail). One packet becomes one chunk in the file (more if it does not fit)
 *   thread buffer  a thread's ring of n_packets packet positions plus its control block
 *               (ht_tbuf): single producer (the owner), single consumer (the writer). A
 *               position is bound to one of the n_packets packets of the buffer's memory when
 *               the owner takes it: the lowest-numbered packet not in flight, so a thread
 *               touches as many packets as it ever had waiting at once, not the whole ring
 *   lost        an event dropped because no packet was free (or a write failed); counted
 *               per thread, carried into the chunks' lost_so_far and the end summary
 *   stream      the writer's encoder state for one thread id (chunk numbers, sequence)
 *   generation  a session number; a thread's cached buffer counts only for its generation
 */
#ifndef HT_TRACE_TYPES_H
#define HT_TRACE_TYPES_H

#include "trace/encode.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HT_REC_PACKET_SIZE_DEFAULT (64u << 10)
#define HT_REC_PACKET_SIZE_MIN     (4u << 10)
#define HT_REC_PACKET_SIZE_MAX     (16u << 20)
#define HT_REC_N_PACKETS_DEFAULT   64u
#define HT_REC_WAKE_PACKETS        16u /* waiting packets that wake the writer (or half the ring) */
#define HT_REC_N_PACKETS_MIN       2u
#define HT_REC_N_PACKETS_MAX       4096u
#define HT_REC_MAX_THREADS         65536u /* thread buffers per session (control blocks) */
#define HT_REC_SLOT_MAX            3u     /* slots one event may need: SEQ_SKIP, event, tail */
#define HT_REC_UNBUF_MAX                                                                           \
    (1u << 20) /* threads of a session that got no buffer, each                                    \
                  counted under its tid (ht_unbuf) */

/* The header at the start of every packet; the slots follow it. (How many slots of the
 * owner's current packet are complete is its ht_tbuf.pos.) */
typedef struct ht_packet {
    uint32_t n_slots; /* slots filled; set by whoever seals the packet */
    uint32_t pad0_;
    uint64_t n_lost;  /* the thread's lost count when the packet was taken = lost before its
                         last event (drops happen only between packets) */
    uint64_t pad_[6]; /* the slots start 64-byte aligned */
} ht_packet;

_Static_assert(sizeof(ht_packet) == 64, "ht_packet is one cache line");

/* One thread's buffer. Owner-written fields and writer-written fields sit on separate cache
 * lines. Invariants: tail <= head <= tail + n_packets; position i (any, modulo n_packets)
 * holds packet phys[i % n_packets] (the table after the packets, ht__tbuf_phys); the
 * positions [tail, head) and the owner's current one (head, while pos != NULL) hold distinct
 * packets, each marked in the owner's used bitmap (ht__tbuf_used) until the owner sees it
 * given back; the owner writes only into its current packet; the writer reads only the
 * packets of [tail, head). */
#define HT_TBUF_NO_HEAP UINT64_MAX /* ht_tbuf.heap of a packet that has named no heap */

typedef struct ht_tbuf {
    /* -- owner (the thread), hot -- */
    ht_raw_event *pos;       /* next free slot of the packet being filled; NULL = none. The
                                slots before it are complete: the owner stores it with
                                release order (ht__tbuf_pos_set, a plain mov on x86) after
                                each record, and the crash path, copying another thread's
                                current packet, loads it with acquire (writer.c) */
    ht_raw_event *end;       /* end of that packet's slots; NULL with pos */
    uint64_t gap;            /* sequence numbers the thread took since its last event written
                                here and did not write (dropped): the next written event is
                                preceded by a SEQ_SKIP of gap. While gap != 0, heap is
                                HT_TBUF_NO_HEAP, so the inline path (emit.h) declines and the
                                general one writes the skip: that path needs no test of its own */
    _Atomic uint64_t head;   /* packets sealed (release) */
    _Atomic uint64_t n_lost; /* events dropped (owner stores; others load) */
    atomic_int busy;         /* 1 while the owner is inside the hot path (stop waits for 0) */
    uint32_t tid;            /* kernel thread id of the owner */
    _Atomic uint64_t gen;    /* session generation the buffer belongs to; stored (release)
                                last at registration, so gen == session's => fields valid */
    uint8_t *packets;        /* ht__tbuf_map_size() bytes, mapped at registration: the
                                packets, then the phys table and the used bitmap */
    uint64_t first_seq;      /* sequence number of the first event offered to the buffer */
    atomic_int exited;       /* the owner ran its thread-exit flush */
    uint32_t pad0_;
    ht_packet *cur;    /* the packet pos points into; valid with pos */
    uint64_t heap;     /* HeapHandle of the packet's last HT_RAW_HEAP slot; HT_TBUF_NO_HEAP when the
                          packet has none yet (every packet names its heap before its first event) */
    uint64_t absorbed; /* positions [0, absorbed) given back are unmarked in the used bitmap */
    uint32_t n_touched; /* packets [0, n_touched) have been taken at least once */
    uint32_t pad1_[5];
    /* -- writer -- */
    _Atomic uint64_t tail; /* packets given back (release) */
    uint32_t stream;       /* index + 1 of the writer's stream for tid; 0 = not yet */
    atomic_uint draining;  /* 1 from the writer's `exited` check to its tail store */
    uint64_t n_events;     /* events the writer took from this buffer */
    uint8_t pad3_[128 - 24];
} ht_tbuf;

_Static_assert(sizeof(ht_tbuf) == 256, "ht_tbuf layout");

/* Asks for the cache line HT_TBUF_PREFETCH bytes past slot p, for writing: the writer thread
 * read the packet's lines on the other core the last time round, so each first store to a
 * line waits for it to come back exclusive; asked for ahead, it is there when the thread gets
 * to it (a hint: it never faults, past the packet's end or the mapping's). 1 KiB = 32 slots
 * ahead; measured in docs/PERFORMANCE.md (seventh session). */
#define HT_TBUF_PREFETCH 1024
static inline __attribute__((always_inline)) void ht__tbuf_prefetch(const ht_raw_event *p)
{
#if defined(__x86_64__)
    __asm__ volatile("prefetchw %0" : : "m"(*((const char *)p + HT_TBUF_PREFETCH)));
#else
    __builtin_prefetch((const char *)p + HT_TBUF_PREFETCH, 1, 3);
#endif
}

/* The owner's store of b->pos (see ht_tbuf.pos). */
static inline void ht__tbuf_pos_set(ht_tbuf *b, ht_raw_event *pos)
{
    __atomic_store_n(&b->pos, pos, __ATOMIC_RELEASE);
}

/* A thread of the session that got no buffer (the session's HT_REC_MAX_THREADS were taken,
 * or its buffer could not be mapped): its events are lost, counted here under its tid by the
 * thread itself, and written with the tid's lost count at the end (writer.c unbuf_fold). */
typedef struct ht_unbuf {
    _Atomic uint32_t tid;
    uint32_t pad_;
    _Atomic uint64_t n_lost;
} ht_unbuf;

/* The writer's encoder state for one thread id (a tid the kernel reuses within a session
 * continues the same stream, so chunk numbers stay continuous in the file). */
typedef struct ht_wstream {
    ht_enc_stream enc;  /* chunk numbers, sequence, events, lost_so_far */
    uint64_t lost_base; /* lost events of earlier buffers with this tid */
    ht_tbuf *cur;       /* the buffer currently feeding the stream; NULL for a tid that only
                           threads without a buffer had (its losses are all in lost_base) */
    uint64_t last_ns;   /* the stream's latest event time written (ns) */
} ht_wstream;

#define HT_REC_NO_GEN UINT64_MAX /* fast_gen when the inline path must decline: never a gen */

#if defined(__SANITIZE_THREAD__)
#define HT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define HT_TSAN 1
#endif
#endif
/* 1: the inline no-stack path tests the fence kind itself, and so also runs where membarrier
 * is missing (strong fence). Only under TSan, which never has it (it does not model
 * membarrier): its runs then cover that path; elsewhere the path needs membarrier
 * (ht__rec.fast_gen) and saves the test. */
#ifdef HT_TSAN
#define HT_FAST_FENCE_TEST 1
#else
#define HT_FAST_FENCE_TEST 0
#endif

/* The recorder: one per process. Fields above `config` are read on the hot path. */
typedef struct ht_recorder {
    _Atomic uint64_t live_gen; /* the session's generation while recording, else 0 */
    /* live_gen while the inline no-stack path may record (no stacks, no consumer, the TSC
     * clock, a membarrier fence unless HT_FAST_FENCE_TEST), else HT_REC_NO_GEN: that path's
     * one test (src/trace/emit.h; the heap's lookaside paths make it before they stamp) */
    _Atomic uint64_t fast_gen;
    int strong_fence;          /* 1: the hot path needs a real fence (no membarrier) */
    uint32_t slots_per_packet; /* (packet_size - 64) / 32 */
    size_t packet_size;        /* bytes per packet, multiple of 4 KiB */
    unsigned n_packets;        /* packets per thread buffer */
    unsigned loss_policy;      /* HT_TRACE_LOSS_* */
    /* Atomic: the hot path reads them before it knows its generation is live, while a
     * session starts (values read then are dropped by the generation check). */
    _Atomic unsigned stack_depth;  /* frames per event stack; 0 = no stacks */
    _Atomic unsigned stack_events; /* HT_TRACE_STACK bits of the events that get one (never 0) */
    atomic_int fast_off;           /* 1: ht__trace_emit_block declines (a consumer records) */

    /* -- session (set at start, read-only while recording) -- */
    _Alignas(64) uint64_t gen; /* generation of the current or last session */
    ht_tbuf *bufs;             /* HT_REC_MAX_THREADS control blocks, mapped once, kept */
    _Atomic uint64_t n_bufs;   /* registrations ever; this session's are [first_buf, n_bufs) */
    uint64_t first_buf;        /* n_bufs when the session started */
    atomic_int n_slow;         /* threads inside the registration slow path */
    int fd;                    /* the trace file; -1 = none */
    pthread_t writer;          /* the writer thread */
    bool writer_running;       /* writer was created and not yet joined */
    bool forked_child;         /* this is a child forked during the session: never write */
    _Atomic uint32_t wake;     /* futex word the writer sleeps on */
    atomic_int writer_idle;    /* 1 while the writer sleeps */
    atomic_int finishing;      /* stop asks the writer for the last drain and the summary */
    atomic_int io_owner;       /* tid using fd and the streams (writer or crash path); 0 free */
    atomic_int crashed;        /* a fatal signal flushed: the writer must not write again */
    atomic_int io_error;       /* first errno of a failed write; 0 = none */
    uint32_t writer_tid;       /* the writer's kernel thread id */
    uint64_t start_ns;         /* the file header's start_mono_ns */

    /* -- writer (owned by whoever holds io_owner) -- */
    uint8_t *out;             /* encoding buffer */
    size_t out_cap;           /* bytes at out */
    size_t out_used;          /* bytes encoded, not yet written */
    ht_wstream *streams;      /* HT_REC_MAX_THREADS entries, mapped per session */
    uint32_t *stream_ix;      /* open-addressing tid -> index + 1, 2 * HT_REC_MAX_THREADS */
    uint32_t n_streams;       /* streams in use */
    uint64_t meta_seq;        /* next chunk number of the tid-0 stream (metadata, end) */
    uint64_t n_lost_io;       /* events lost to failed writes */
    ht_unbuf *unbuf;          /* HT_REC_UNBUF_MAX entries, mapped per session (pages as used) */
    _Atomic uint32_t n_unbuf; /* entries claimed (may pass HT_REC_UNBUF_MAX) */
    _Atomic uint64_t n_lost_unbuf; /* events of threads without a buffer: all of them, those
                                      past the table's end too (which no tid gets in the file) */
    bool unbuf_folded;             /* unbuf_fold ran: the entries are in the streams' lost counts */
    uint64_t unbuf_total; /* their sum then (the table is unmapped with the writer's maps) */
    uint64_t n_bad_slots; /* malformed slots the encoder skipped (a bug if ever nonzero) */
    uint32_t stack_hi;    /* highest stack id defined in the file (ht__stack_drain) */
    bool modules_done;    /* the module snapshot is written; later changes are polled */

    /* -- counters (ht_trace_get_stats) -- */
    _Atomic uint64_t n_events;  /* events encoded */
    _Atomic uint64_t n_taken;   /* packets taken */
    _Atomic uint64_t n_chunks;  /* chunks written */
    _Atomic uint64_t file_size; /* bytes written */
    uint64_t final_lost;        /* n_lost of the last stopped session */
    uint64_t writer_cpu_ns;     /* writer CPU time, set by the writer as it ends */
    bool ran;                   /* a file session has run in this process */
} ht_recorder;

#endif
