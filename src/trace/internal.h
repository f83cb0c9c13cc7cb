/* internal.h — cross-file prototypes of the file recorder (buffer.c, writer.c, recorder.c),
 * grouped by the file that defines them. Stack capture has its own header (stack.h); the
 * heap-facing entry points are in trace.h. Never included by src/heap. */
#ifndef HT_TRACE_INTERNAL_H
#define HT_TRACE_INTERNAL_H

#include "common/os.h"
#include "trace/emit.h"
#include "trace/types.h"

#include <heaptrail.h>

extern ht_recorder ht__rec;

/* Thread buffer b's memory (ht_tbuf.packets): n_packets packets, then phys (a packet number
 * per ring position: written by the owner when it takes the position, read by the writer for
 * sealed positions and by the crash path), then the owner's used bitmap (a bit per packet). */
static inline _Atomic uint16_t *ht__tbuf_phys(const ht_tbuf *b)
{
    return (_Atomic uint16_t *)(void *)(b->packets +
                                        (size_t)ht__rec.n_packets * ht__rec.packet_size);
}

static inline uint64_t *ht__tbuf_used(const ht_tbuf *b)
{
    return (uint64_t *)(void *)(ht__tbuf_phys(b) + ((ht__rec.n_packets + 3u) & ~3u));
}

static inline size_t ht__tbuf_map_size(void)
{
    size_t tables = ((ht__rec.n_packets + 3u) & ~3u) * sizeof(uint16_t) +
                    (ht__rec.n_packets + 63u) / 64u * sizeof(uint64_t);
    return (size_t)ht__rec.n_packets * ht__rec.packet_size +
           (tables + HT_PAGE_SIZE - 1) / HT_PAGE_SIZE * HT_PAGE_SIZE;
}

/* Packet number p of thread buffer b. */
static inline ht_packet *ht__packet_num(const ht_tbuf *b, unsigned p)
{
    return (ht_packet *)(void *)(b->packets + (size_t)p * ht__rec.packet_size);
}

/* The packet ring position `index` (any, taken modulo n_packets) of b holds now. */
static inline ht_packet *ht__packet_at(const ht_tbuf *b, uint64_t index)
{
    return ht__packet_num(b, atomic_load_explicit(&ht__tbuf_phys(b)[index % ht__rec.n_packets],
                                                  memory_order_relaxed));
}

/* Buffers one session hands out (HT_REC_MAX_THREADS; tests set fewer, before a session):
 * the threads after them get none, and their events are counted lost (ht_unbuf). */
extern uint32_t ht__rec_buf_limit;

/* The session's buffers are bufs[i % HT_REC_MAX_THREADS] for i in [first_buf, this). */
static inline uint64_t ht__rec_bufs_end(void)
{
    uint64_t end = atomic_load_explicit(&ht__rec.n_bufs, memory_order_acquire);
    if (end - ht__rec.first_buf > HT_REC_MAX_THREADS)
        end = ht__rec.first_buf + HT_REC_MAX_THREADS;
    return end;
}

/* -- buffer.c: the hot path and the thread buffers -- */
/* Writes ev (tid and sequence stamped) into this thread's buffer, or drops and counts it.
 * No locks, no syscalls on the fast path; the first event of a thread registers its
 * buffer (slow path). Returns at once when no file session records. */
void ht__buf_emit(const ht_event *ev);
/* -- session.c -- */
/* ht__trace_seq, this thread's last event sequence number: in emit.h. */
/* Seals b's partial packet (if it holds slots) so the writer takes it. Only the owner. */
void ht__buf_seal(ht_tbuf *b);
/* The same by the stopping thread, once the owner is quiescent (after the busy wait): pos
 * and end stay as they are, since the owner's hot path may still read them. */
void ht__buf_seal_stopped(ht_tbuf *b);
/* This thread's buffer in the running session, or NULL. Async-signal-safe. */
ht_tbuf *ht__buf_self(void);
/* Creates the thread-exit key once. 0 or -errno. */
int ht__buf_init_once(void);
/* Waits until no thread is inside the hot path or registering (after live_gen = 0). */
void ht__buf_quiesce(void);
/* Wakes the writer if it sleeps. */
void ht__buf_wake_writer(void);

/* -- writer.c: the writer thread, streams, chunk output -- */
/* Maps the writer's buffers and starts the thread. 0 or -errno. */
int ht__writer_start(void);
/* Asks the writer for the last drain (every sealed packet), lost chunks and the end summary,
 * joins it and unmaps its buffers. */
void ht__writer_finish(void);
/* A forked child's copy of its parent's session: unmaps the writer's buffers (private
 * copies here; the writer thread does not exist in the child) without joining anything. */
void ht__writer_forget(void);
/* The crash path: takes the file from the writer (bounded wait: io_owner, a CAS flag, about
 * 2 s; without it nothing is written), writes this thread's partial packet, every sealed
 * packet and every other thread's committed records of its current packet, then lost-count
 * chunks and the end summary; never releases the file. No malloc, no locks;
 * async-signal-safe. */
void ht__writer_crash_flush(ht_tbuf *self);
/* Writes size bytes at p to the trace file, retrying partial writes. False (io_error set)
 * on failure. Async-signal-safe. */
bool ht__writer_write(const void *p, size_t size);

/* -- callsite.c: stacks for recorded events -- */
/* Looks up the public entry points' code ranges (once; outside malloc). */
void ht__callsite_init(void);
/* ht__callsite_capture: in emit.h. */

/* -- recorder.c: the file session -- */
/* Starts recording to config->path. 0 or -errno (-EEXIST: the file exists). */
int ht__rec_start(const ht_trace_config *config);
/* Stops recording, flushes every thread, writes the summary, closes the file. 0 or -errno.
 * In a child forked during the session: closes its copy of the file and releases the
 * parent's buffers and writer maps instead (nothing is written), so that the child may then
 * start a session of its own. */
int ht__rec_stop(void);
/* True while a file session is open (between a successful start and its stop). */
bool ht__rec_open(void);

#endif
