/* encode.h — the trace file encoder (docs/FORMAT.md v1) as the writer thread uses it: raw
 * fixed-size event slots that a hot path fills without encoding, turned into self-contained
 * chunks in caller-provided buffers; plus the file header, metadata and end chunks.
 * Never allocates, never does I/O, never blocks: the caller owns every byte and every file. */
#ifndef HT_TRACE_ENCODE_H
#define HT_TRACE_ENCODE_H

#include <heaptrail.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One raw slot, filled by the hot path (32 bytes: two to a cache line; no pointers into other
 * memory). Field use by type (ETW names):
 *   ALLOC     a = Address, b = Size
 *   FREE      a = Address
 *   REALLOC   a = NewAddress, b = OldAddress; the NEXT slot is an HT_RAW_TAIL with
 *             a = NewSize, b = OldSize
 *   CREATE    a = ReservedSpace, b = CommittedSpace; then a TAIL with a = Flags (the heap's
 *             creation flags)
 *   DESTROY   -
 *   EXPAND, CONTRACT  a = Address, b = Size; then a TAIL with a = CommittedSpace
 *   HT_RAW_HEAP       a = the HeapHandle of the events after it, up to the next HEAP slot;
 *                     written before the first event of every packet and where it changes
 *   HT_RAW_SEQ_SKIP   a = sequence numbers to skip before the next event (lost events that
 *                     took numbers); ts_ns and the rest unused
 * The thread id is the buffer's; sequence numbers are implicit (+1 per event). */
typedef struct ht_raw_event {
    uint64_t ts_ns; /* the stamp (ht__trace_now), CLOCK_MONOTONIC ns once the writer converted it */
    uint64_t a, b;  /* payload, see above */
    uint32_t stack_id; /* 0 = no stack; else defined in an earlier metadata chunk */
    uint16_t flags;    /* HT_EVENT_RUNDOWN, HT_EVENT_FROM_SIZE */
    uint8_t type;      /* ht_event_type opcode, or HT_RAW_* */
    uint8_t source;    /* ht_source (ALLOC, FREE, REALLOC) */
} ht_raw_event;

_Static_assert(sizeof(ht_raw_event) == 32, "ht_raw_event must stay 32 bytes");

#define HT_RAW_SEQ_SKIP 0x01u /* a = skip */
#define HT_RAW_TAIL     0x02u /* the third and fourth values of the event slot before */
#define HT_RAW_HEAP     0x03u /* a = HeapHandle of the events that follow */
#define HT_RAW_MAX      4u    /* slots one event can take: SEQ_SKIP, HEAP, the event, TAIL */

/* True for the slots that are not events. */
static inline bool ht__raw_is_control(unsigned type)
{
    return type == HT_RAW_SEQ_SKIP || type == HT_RAW_TAIL || type == HT_RAW_HEAP;
}

/* Worst-case encoded bytes of one event (with its control records). */
#define HT_ENC_EVENT_MAX 112u

/* One thread's encoder state across its chunks (the writer keeps one per thread). */
typedef struct ht_enc_stream {
    uint32_t tid;         /* kernel thread id, != 0 */
    uint64_t n_chunks;    /* chunks written = the next chunk_seq */
    uint64_t next_seq;    /* sequence number of the next event (start at 1) */
    uint64_t n_events;    /* events encoded so far */
    uint64_t lost_so_far; /* events dropped so far; the caller raises it before each chunk */
    uint64_t raw_heap;    /* the HeapHandle of the last HT_RAW_HEAP slot (0: none yet) */
} ht_enc_stream;

/* The metadata stream (tid 0: metadata and end chunks) under construction. */
typedef struct ht_enc_meta {
    uint8_t *buf;       /* chunk being built: header then payload */
    size_t cap;         /* bytes at buf */
    size_t size;        /* bytes used, >= HT_FMT_CHUNK_HDR_SIZE */
    uint32_t n_records; /* records in the payload */
    uint64_t chunk_seq; /* this chunk's number in the tid-0 stream */
} ht_enc_meta;

/* Per-thread totals for the end summary. */
typedef struct ht_enc_thread_total {
    uint32_t tid;
    uint64_t n_events, n_lost, n_chunks;
} ht_enc_thread_total;

/* -- encode.c -- */

/* Writes the file header (FORMAT.md 3) into buf. Returns its size, or 0 when cap is too
 * small or cmdline_size > 1 MiB. */
size_t ht__enc_file_header(uint8_t *buf, size_t cap, uint32_t pid, const char *cmdline,
                           size_t cmdline_size, uint64_t start_mono_ns, uint64_t start_realtime_ns);

/* Encodes raw slots [0, n) of stream s into one event chunk at buf (cap bytes). Encodes as
 * many whole events as fit (an event and its tail, or a SEQ_SKIP and its event, are never
 * split) and returns the number of slots consumed; *chunk_size gets the chunk's total size
 * (header + payload). Advances s (n_chunks, next_seq, n_events). Returns 0 with
 * *chunk_size 0 when n == 0 or cap < HT_FMT_CHUNK_HDR_SIZE + HT_ENC_EVENT_MAX. To write a
 * chunk with no events (only a new lost_so_far), use ht__enc_lost_chunk. Malformed slots
 * (unknown type, an event without its tail) are skipped and counted in *n_bad if non-NULL. */
size_t ht__enc_chunk(ht_enc_stream *s, const ht_raw_event *slots, size_t n, uint8_t *buf,
                     size_t cap, size_t *chunk_size, size_t *n_bad);

/* An event chunk with no records that carries s->lost_so_far. Returns its size (72) or 0. */
size_t ht__enc_lost_chunk(ht_enc_stream *s, uint8_t *buf, size_t cap);

/* Fills up to HT_RAW_MAX slots for one ht_event (SEQ_SKIP if ev->sequence is past
 * *next_seq, a HEAP slot, the event, its tail) and advances *next_seq past it. Returns the
 * slots written, or 0 if the event cannot be represented (unknown type, Source > 255,
 * sequence going back). */
size_t ht__enc_raw_from_event(const ht_event *ev, uint32_t stack_id, uint64_t *next_seq,
                              ht_raw_event out[HT_RAW_MAX]);

/* Metadata chunk building: begin, add records (each returns false, adding nothing, when the
 * record does not fit or breaks a limit of FORMAT.md 7), end (writes the header, returns the
 * chunk size; 0 records is allowed). chunk_seq counts metadata and end chunks together. */
void ht__enc_meta_begin(ht_enc_meta *m, uint8_t *buf, size_t cap, uint64_t chunk_seq);
bool ht__enc_meta_module(ht_enc_meta *m, uint64_t ts_ns, uint64_t base, uint64_t size,
                         const char *path, size_t path_size, const uint8_t *build_id,
                         size_t build_id_size);
bool ht__enc_meta_unload(ht_enc_meta *m, uint64_t ts_ns, uint64_t base);
bool ht__enc_meta_stack(ht_enc_meta *m, uint32_t id, const uint64_t *frames, size_t n_frames);
bool ht__enc_meta_marker(ht_enc_meta *m, uint64_t ts_ns, uint32_t tid, const char *text,
                         size_t text_size);
size_t ht__enc_meta_end(ht_enc_meta *m);

/* The end chunk (FORMAT.md 8). Returns its size, or 0 when it does not fit. */
size_t ht__enc_end(uint8_t *buf, size_t cap, uint64_t chunk_seq, uint64_t end_ts_ns,
                   const ht_enc_thread_total *threads, size_t n_threads);

#endif
