/* types.h — the reader's structs and constants. Glossary:
 *   good data    the chunks wholly before the damage point (FORMAT.md 9), [data_off, valid_end)
 *   scan         the one sequential pass at open: headers, checksums, metadata, threads
 *   cursor       one thread's position in the merge: its current chunk, decoded (or a piece)
 *   merge heap   a binary min-heap of cursors keyed by their head event (ts, sequence, tid)
 *   window       the events of every cursor's chunk earlier than a bound T that no cursor's
 *                chunk end precedes: merged in one go by a radix sort of their timestamps
 *   run          one cursor's events in a window (a sorted stretch of its chunk)
 *   shared walk  one pass over the chunk headers for all cursors, queueing each thread's
 *                event chunks it passes (instead of one walk per thread)
 *   piece        a stretch of a chunk's events decoded at a time, when the chunks' events of
 *                all threads would not fit the caches: the decoder resumes where it stopped
 * Memory is per thread (one chunk raw + decoded or a piece of it), per stack, per module:
 * never per event. */
#ifndef HT_READER_TYPES_H
#define HT_READER_TYPES_H

#include <heaptrail/reader.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A parsed chunk header (FORMAT.md 4). */
typedef struct rd_chunk {
    uint64_t off; /* file offset of the header */
    uint32_t kind, tid, n_records;
    uint64_t chunk_seq, first_seq, first_ts, last_ts, lost_so_far;
    uint32_t payload_size, payload_crc;
} rd_chunk;

/* The event decoder's registers (FORMAT.md 5) and position in a chunk: scalars only, so that
 * the compiler keeps them in registers (the heap table, an array, lives beside it). */
typedef struct rd_dec {
    const uint8_t *p;             /* next record */
    uint64_t ts, seq, addr, heap; /* the registers */
    uint32_t n;                   /* event records decoded so far */
    uint32_t n_heaps;             /* entries of the heap table */
    uint16_t flags;               /* pending event flags */
    bool pending;                 /* a control record waits for its event */
    bool back;                    /* some event is earlier than the one before it */
} rd_dec;

#define RD_HEAP_TABLE 32 /* heaps[] capacity (FORMAT.md 5) */

/* A chunk decoded piece by piece (after a check pass over all of it): where the decoder
 * stopped, to resume there. */
typedef struct rd_piece {
    rd_chunk ch;                   /* the chunk */
    const uint8_t *payload;        /* its payload: in r->mem, or the cursor's raw */
    uint64_t n_stacks;             /* stack ids defined before it: 1 .. n_stacks */
    rd_dec d;                      /* its events [0, d.n) are decoded */
    uint64_t heaps[RD_HEAP_TABLE]; /* the heap table, d.n_heaps entries */
} rd_piece;

/* A failure found ahead of its turn (an early load, merge.c cursors_reload): recorded when the
 * cursor's events before it are handed out, where loading the chunk at its turn would have. */
typedef struct rd_failure {
    ht_reader_status_code status;
    uint64_t off;
    char message[256];
} rd_failure;

/* Event chunks a cursor's queue holds: found for it by the shared walk ahead of its need. */
#define RD_QUEUE 32

/* One thread's merge position. Its next chunks are its queue (in file order), then, while
 * shared, its event chunks at or after r->walk_off (the shared walk queues them as it passes
 * them), else those at or after scan_off (its own walk; it turns shared on reaching
 * r->walk_off). So every chunk header is read about once, not once per thread. */
typedef struct rd_cursor {
    uint32_t tid;
    uint64_t first_off;   /* offset of its first event chunk; UINT64_MAX: none */
    uint64_t scan_off;    /* not shared: where its own walk resumes (< r->walk_off) */
    bool shared;          /* its chunks not queued are those at or after r->walk_off */
    uint32_t q_head, q_n; /* its queue (r->queues + RD_QUEUE * its index): q_n <= RD_QUEUE
                             headers of its next event chunks from entry q_head on, cyclic */
    ht_reader_event *ev;  /* decoded events of the current chunk (or piece), after an early
                             load preceded by the last ones of the chunk before */
    uint32_t n_ev;        /* events in ev */
    uint32_t pos;         /* next event to hand out: pos < n_ev while in the merge heap (scan
                             mode: == n_ev until the next batch_fill loads its next chunk) */
    size_t ev_cap;        /* capacity of ev, in events */
    bool sorted;          /* ev's timestamps never decrease (the window merge needs it): the
                             whole chunk's, when it is decoded in pieces */
    bool no_next;         /* an early load (cursors_reload) found no next chunk, or failed */
    rd_failure *pending;  /* that failure, to record when the cursor is used up; or NULL */
    uint32_t n_todo;      /* events of the current chunk not decoded yet (> 0: in pieces,
                             r->pieces[its index] says where the decoder resumes) */
    uint8_t *raw;         /* payload bytes (file mode only) */
    size_t raw_cap;       /* capacity of raw */
} rd_cursor;

/* A merge-heap entry: the key of a cursor's head event, cached so that the heap compares
 * without touching the event arrays. */
typedef struct rd_head {
    uint64_t ts;       /* head event's timestamp */
    uint64_t seq;      /* its sequence number */
    uint32_t tid;      /* its thread (final tie-break) */
    rd_cursor *cursor; /* whose head it is */
} rd_head;

/* Tables built by the scan from metadata chunks. */
typedef struct rd_stacks {
    uint64_t *frames; /* all frames, stack after stack */
    size_t n_frames, cap_frames;
    size_t *start;     /* stack id i (1-based) is frames[start[i-1] .. start[i]) */
    uint64_t *def_off; /* def_off[i-1]: offset of the chunk defining id i */
    uint32_t n;        /* ids 1..n are defined */
    size_t cap;        /* capacity of def_off (n used) */
    size_t cap_start;  /* capacity of start (n + 1 used) */
} rd_stacks;

struct ht_reader {
    int fd;             /* file mode: the open file; memory mode: -1 */
    const uint8_t *mem; /* memory mode: the bytes */
    uint64_t size;      /* bytes in the file or buffer */
    uint64_t data_off;  /* first chunk */
    uint64_t valid_end; /* damage point (or size): good chunks lie in [data_off, valid_end) */

    ht_reader_status_code status; /* the first damage or error */
    uint64_t status_off;          /* its byte offset */
    char message[256];            /* its text */
    bool failed;                  /* stop handing out events (damage found in the merge) */

    ht_reader_trace_info info; /* header fields and totals */
    char *cmdline;             /* NUL-terminated copy */

    ht_reader_thread *threads; /* per thread, parallel to cursors */
    rd_cursor *cursors;
    size_t n_threads, cap_threads, cap_cursors;
    size_t last_thread; /* lookup cache */

    ht_reader_module *modules;
    size_t n_modules, cap_modules;
    ht_reader_marker *markers;
    size_t n_markers, cap_markers;
    rd_stacks stacks;
    uint64_t n_meta_chunks; /* chunks of the tid-0 stream seen */

    rd_piece *pieces;    /* per cursor: its chunk's decoder state when decoded in pieces */
    uint32_t piece_max;  /* events a piece holds; 0: no chunk is decoded in pieces */
    uint32_t piece_over; /* chunks of more events than this are (piece_max != 0); a cursor's
                            ev then holds at most max(piece_over, piece_max) + 256 events
                            (an early load keeps fewer than a window's run, merge.c) */
    uint64_t walk_off;   /* the shared walk over chunk headers: every chunk before it seen */
    rd_chunk *queues;    /* the cursors' queues, RD_QUEUE each (apart from the cursors, which
                            the merge loops over: they stay a few cache lines) */
    rd_head *heap;       /* merge heap: heap[0] is the next event's cursor */
    size_t n_heap;
    const ht_reader_event **batch; /* the next events, merged (merge_fill) */
    size_t b_pos, b_n;             /* batch[b_pos .. b_n) are still to be handed out */
    size_t batch_cap;              /* entries of batch */
    uint64_t *keys;                /* window merge: its keys, two halves of batch_cap */
    uint32_t *radix;               /* window merge: radix counts, RADIX_PASSES << RADIX_BITS */
    size_t *runs;                  /* window merge: tie groups' run bounds, 2 * (n_threads + 1) */
    const ht_reader_event **wnext; /* window merge: each run's next event, n_threads + 1 */
    bool heap_dirty;               /* heap[] is not heap-ordered (after a window merge) */
    unsigned window_skip;          /* fills left before the window merge is tried again */
    bool merge_started;

    uint8_t *scratch; /* scan payload buffer (file mode) */
    size_t scratch_cap;
};

#endif
