/* internal.h — cross-file prototypes of the reader, grouped by the file that defines them.
 * Nothing here is public; the public contract is include/heaptrail/reader.h. */
#ifndef HT_READER_INTERNAL_H
#define HT_READER_INTERNAL_H

#include "reader/types.h"

#include <sys/types.h>

/* -- reader.c -- */
/* Records the first damage/error (later calls keep the first one). */
void ht__rd_fail(ht_reader *r, ht_reader_status_code code, uint64_t off, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Pointer to len bytes at off (off + len <= r->size checked by the caller): into the mapped
 * memory, or read into *buf (grown to *cap). NULL on error (status set). */
const uint8_t *ht__rd_fetch(ht_reader *r, uint64_t off, size_t len, uint8_t **buf, size_t *cap);
/* Parses and checks a chunk header at h (72 bytes) found at offset off: magic, checksum,
 * version, kind, limits, tid rule. On failure sets status and returns false. */
bool ht__rd_chunk_parse(ht_reader *r, const uint8_t *h, uint64_t off, rd_chunk *c);
/* Index of thread tid in r->threads (and r->cursors), or -1. */
ssize_t ht__rd_thread_find(ht_reader *r, uint32_t tid);

/* -- decode.c -- */
/* Decodes event chunk c's payload into out (room for c->n_records events): every event
 * record, checked against FORMAT.md 5-6. Returns true and *sorted (the events' timestamps
 * never decrease: no TIME_BACK, no wrap-around), or false with status BAD_RECORD set at the
 * failing record. */
bool ht__rd_decode_events(ht_reader *r, const rd_chunk *c, const uint8_t *payload,
                          ht_reader_event *out, bool *sorted);
/* The same checks without storing any event (a check pass over a chunk that is then decoded
 * in pieces, which cannot fail): true and *sorted, or false with status BAD_RECORD set. */
bool ht__rd_check_events(ht_reader *r, const rd_chunk *c, const uint8_t *payload, bool *sorted);
/* Starts decoding chunk c (whose payload stays at payload) in pieces: pc at its first event. */
void ht__rd_piece_start(ht_reader *r, rd_piece *pc, const rd_chunk *c, const uint8_t *payload);
/* Its next min(max, events left) events into out, *n_out of them, resuming where the last
 * piece stopped. The chunk must have passed ht__rd_check_events; false (status set) only if
 * it decodes differently now. */
bool ht__rd_piece_decode(ht_reader *r, rd_piece *pc, ht_reader_event *out, uint32_t max,
                         uint32_t *n_out);
/* Which varint decoder ht__rd_decode_events uses: 1 pext (BMI2, where it is fast), 0 shift
 * and mask, -1 not chosen yet (chosen at the first chunk). Tests set it to cover both. */
extern _Atomic int ht__rd_pext;

/* -- merge.c -- */
/* Loads the first chunk of every thread and builds the merge heap. */
void ht__rd_merge_start(ht_reader *r);
/* Whether the merge may take the window merge (1, the default) or only the head-by-head
 * merges (0). Tests turn it off to compare the two. */
extern _Atomic int ht__rd_window;
/* Threads (in the merge) from which a cursor whose chunk is near its end gets its next chunk
 * before it is used up (EARLY_THREADS); tests set it low to cover that with few threads. */
extern _Atomic size_t ht__rd_early_threads;
/* Bytes of decoded events the cursors may hold together (threads x chunk events x 80) before
 * chunks are decoded in pieces; tests set it small to force pieces. */
extern _Atomic size_t ht__rd_piece_budget;
/* When not 0: the events of a piece, whatever the budget (tests: pieces of a few events). */
extern _Atomic uint32_t ht__rd_piece_events;

#endif
