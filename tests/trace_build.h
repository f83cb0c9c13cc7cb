/* trace_build.h — builds heaptrail trace files in memory with the real encoder
 * (src/trace/encode.c), for the format tests, the reader benchmark and the fuzz corpus
 * generator; plus the synthetic event streams they share. Test-only: mallocs freely, aborts
 * on out-of-memory, never writes files itself. */
#ifndef HT_TEST_TRACE_BUILD_H
#define HT_TEST_TRACE_BUILD_H

#include "trace/encode.h"
#include "trace/format.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct tb_trace {
    uint8_t *data;        /* the file bytes */
    size_t size, cap;     /* used, allocated */
    uint64_t meta_seq;    /* next chunk_seq of the tid-0 stream */
    size_t *chunk_end;    /* end offset of every chunk, in file order */
    size_t *chunk_events; /* events in every chunk (0 for metadata / end) */
    size_t n_chunks, cap_chunks;
} tb_trace;

static inline void *tb_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (q == NULL) {
        fprintf(stderr, "trace_build: out of memory\n");
        abort();
    }
    return q;
}

static inline uint8_t *tb_reserve(tb_trace *t, size_t n)
{
    if (t->size + n > t->cap) {
        size_t cap = t->cap ? t->cap : 4096;
        while (cap < t->size + n)
            cap *= 2;
        t->data = tb_xrealloc(t->data, cap);
        t->cap = cap;
    }
    return t->data + t->size;
}

static inline void tb_note_chunk(tb_trace *t, size_t n_events)
{
    if (t->n_chunks == t->cap_chunks) {
        t->cap_chunks = t->cap_chunks ? 2 * t->cap_chunks : 64;
        t->chunk_end = tb_xrealloc(t->chunk_end, t->cap_chunks * sizeof(size_t));
        t->chunk_events = tb_xrealloc(t->chunk_events, t->cap_chunks * sizeof(size_t));
    }
    t->chunk_end[t->n_chunks] = t->size;
    t->chunk_events[t->n_chunks] = n_events;
    t->n_chunks++;
}

static inline void tb_init(tb_trace *t, uint32_t pid, const char *cmdline, size_t cmdline_size,
                           uint64_t start_mono, uint64_t start_real)
{
    memset(t, 0, sizeof *t);
    uint8_t *p = tb_reserve(t, HT_FMT_FILE_HDR_SIZE + cmdline_size);
    t->size += ht__enc_file_header(p, HT_FMT_FILE_HDR_SIZE + cmdline_size, pid, cmdline,
                                   cmdline_size, start_mono, start_real);
}

static inline void tb_free(tb_trace *t)
{
    free(t->data);
    free(t->chunk_end);
    free(t->chunk_events);
    memset(t, 0, sizeof *t);
}

/* Appends events [0, n) of one thread as event chunks of at most chunk_cap bytes each.
 * stacks may be NULL (no stacks). The stream s keeps its state across calls. */
static inline void tb_events(tb_trace *t, ht_enc_stream *s, const ht_event *ev,
                             const uint32_t *stacks, size_t n, size_t chunk_cap)
{
    ht_raw_event *raw = tb_xrealloc(NULL, (HT_RAW_MAX * n + 1) * sizeof *raw);
    size_t n_raw = 0;
    uint64_t next_seq = s->next_seq;
    for (size_t i = 0; i < n; i++) {
        size_t k = ht__enc_raw_from_event(&ev[i], stacks ? stacks[i] : 0, &next_seq, raw + n_raw);
        if (k == 0) {
            fprintf(stderr, "trace_build: event %zu not representable\n", i);
            abort();
        }
        n_raw += k;
    }
    size_t done = 0;
    while (done < n_raw) {
        uint8_t *p = tb_reserve(t, chunk_cap);
        size_t size = 0, bad = 0;
        uint64_t before = s->n_events;
        size_t used = ht__enc_chunk(s, raw + done, n_raw - done, p, chunk_cap, &size, &bad);
        if ((used == 0 && size == 0) || bad != 0) {
            fprintf(stderr, "trace_build: encoder made no progress or saw bad slots\n");
            abort();
        }
        done += used;
        if (size > 0) {
            t->size += size;
            tb_note_chunk(t, (size_t)(s->n_events - before));
        }
    }
    free(raw);
}

static inline void tb_lost_chunk(tb_trace *t, ht_enc_stream *s)
{
    uint8_t *p = tb_reserve(t, HT_FMT_CHUNK_HDR_SIZE);
    t->size += ht__enc_lost_chunk(s, p, HT_FMT_CHUNK_HDR_SIZE);
    tb_note_chunk(t, 0);
}

/* Metadata chunk: begin into the trace's tail (cap bytes), add records, end. */
static inline void tb_meta_begin(tb_trace *t, ht_enc_meta *m, size_t cap)
{
    ht__enc_meta_begin(m, tb_reserve(t, cap), cap, t->meta_seq);
}

static inline void tb_meta_end(tb_trace *t, ht_enc_meta *m)
{
    t->size += ht__enc_meta_end(m);
    t->meta_seq++;
    tb_note_chunk(t, 0);
}

static inline void tb_end(tb_trace *t, uint64_t end_ts, const ht_enc_thread_total *th, size_t n)
{
    size_t cap = HT_FMT_CHUNK_HDR_SIZE + 32 + n * 40;
    uint8_t *p = tb_reserve(t, cap);
    size_t k = ht__enc_end(p, cap, t->meta_seq++, end_ts, th, n);
    if (k == 0)
        abort();
    t->size += k;
    tb_note_chunk(t, 0);
}

/* -- synthetic streams ------------------------------------------------------------------- */

static inline uint64_t tb_rand(uint64_t *state) /* splitmix64 */
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* A realistic stream for one thread: mostly alloc/free pairs of small sizes at nearby
 * addresses (a small LIFO live set), timestamps 50..200 ns apart, one heap, a few reallocs.
 * ev[0..n) filled; sequence from 1. */
static inline void tb_realistic(ht_event *ev, size_t n, uint32_t tid, uint64_t seed, uint64_t t0,
                                uint64_t heap)
{
    uint64_t rng = seed;
    uint64_t live[64], live_size[64];
    size_t n_live = 0;
    uint64_t ts = t0, next_addr = 0x7f0000100000ull + (seed % 64) * 0x100000;
    for (size_t i = 0; i < n; i++) {
        ht_event *e = &ev[i];
        memset(e, 0, sizeof *e);
        ts += 50 + tb_rand(&rng) % 151;
        e->timestamp_ns = ts;
        e->tid = tid;
        e->sequence = i + 1;
        e->heap_handle = (uintptr_t)heap;
        uint64_t r = tb_rand(&rng) % 100;
        if (n_live > 0 && (r < 48 || n_live == 64)) {
            size_t k = n_live - 1 - (size_t)(tb_rand(&rng) % (n_live < 4 ? n_live : 4));
            e->type = HT_EVENT_HEAP_FREE;
            e->free.address = (uintptr_t)live[k];
            e->free.source = r < 30 ? HT_SOURCE_LOOKASIDE : HT_SOURCE_LOWFRAG;
            live[k] = live[--n_live];
            live_size[k] = live_size[n_live];
        } else if (n_live > 0 && r < 50) {
            size_t k = (size_t)(tb_rand(&rng) % n_live);
            e->type = HT_EVENT_HEAP_REALLOC;
            e->realloc.old_address = (uintptr_t)live[k];
            e->realloc.old_size = live_size[k];
            e->realloc.new_size = live_size[k] * 2;
            e->realloc.new_address = (uintptr_t)next_addr;
            e->realloc.source = HT_SOURCE_MAINPATH;
            live[k] = next_addr;
            live_size[k] *= 2;
            next_addr += (live_size[k] + 15) & ~15ull;
        } else {
            uint64_t size = 16 + tb_rand(&rng) % 241;
            uint64_t a = next_addr - ((tb_rand(&rng) % 8) * 16 * (r & 1));
            next_addr += (size + 31) & ~15ull;
            e->type = HT_EVENT_HEAP_ALLOC;
            e->alloc.address = (uintptr_t)a;
            e->alloc.size = size;
            e->alloc.source = r < 80 ? HT_SOURCE_LOOKASIDE : HT_SOURCE_LOWFRAG;
            live[n_live] = a;
            live_size[n_live++] = size;
        }
    }
}

/* -- merge tests: monotone (or not) per-thread streams, their expected order --------------- */

/* qsort order of the reader's merge: timestamp, then sequence, then tid. */
static inline int tb_key_cmp(const void *pa, const void *pb)
{
    const ht_event *a = pa, *b = pb;
    if (a->timestamp_ns != b->timestamp_ns)
        return a->timestamp_ns < b->timestamp_ns ? -1 : 1;
    if (a->sequence != b->sequence)
        return a->sequence < b->sequence ? -1 : 1;
    if (a->tid != b->tid)
        return a->tid < b->tid ? -1 : 1;
    return 0;
}

/* Makes e an ALLOC (alloc) or a FREE of one of 4096 addresses from base, 16 apart; an
 * ALLOC of 1 .. max_size bytes and Source 1..4, a FREE with Source 2. */
static inline void tb_alloc_or_free(ht_event *e, bool alloc, uint64_t *rng, uint64_t base,
                                    uint64_t max_size)
{
    if (alloc) {
        e->type = HT_EVENT_HEAP_ALLOC;
        e->alloc.address = (uintptr_t)(base + (tb_rand(rng) % 4096) * 16);
        e->alloc.size = 1 + tb_rand(rng) % max_size;
        e->alloc.source = 1 + (uint32_t)(tb_rand(rng) % 4);
    } else {
        e->type = HT_EVENT_HEAP_FREE;
        e->free.address = (uintptr_t)(base + (tb_rand(rng) % 4096) * 16);
        e->free.source = 2;
    }
}

/* Builds into *t a trace of n_threads streams (thread k has n0 + dn k events, tid 50 + k,
 * timestamps stepping 0..3: equal timestamps within and across threads; with back, every
 * 97th event goes back in time, which the encoder writes as TIME_BACK), written in pieces of
 * 100..999 events as chunks of 300 .. 300 + chunk_span bytes so that threads interleave.
 * Returns the event count; *want (caller frees) holds them sorted by tb_key_cmp. */
static inline size_t tb_merge_streams(tb_trace *t, int n_threads, uint64_t seed, size_t n0,
                                      size_t dn, size_t chunk_span, int back, ht_event **want)
{
    size_t total = 0;
    for (int th = 0; th < n_threads; th++)
        total += n0 + dn * (size_t)th;
    ht_event *all = tb_xrealloc(NULL, total * sizeof *all);
    memset(all, 0, total * sizeof *all);
    tb_init(t, 1, "m", 1, 0, 0);
    uint64_t rng = seed;
    size_t at = 0;
    for (int th = 0; th < n_threads; th++) {
        size_t n = n0 + dn * (size_t)th;
        ht_event *ev = &all[at];
        uint64_t ts = 100000;
        for (size_t i = 0; i < n; i++) {
            ht_event *e = &ev[i];
            ts += tb_rand(&rng) % 4;
            e->timestamp_ns = back && i % 97 == 96 ? ts - 1 - tb_rand(&rng) % 50 : ts;
            e->tid = 50 + (uint32_t)th;
            e->sequence = i + 1;
            e->heap_handle = 0x4000;
            tb_alloc_or_free(e, i % 2 == 0 || tb_rand(&rng) % 5 == 0, &rng, 0x100000, 70000);
        }
        ht_enc_stream s = {.tid = 50 + (uint32_t)th, .next_seq = 1};
        for (size_t done = 0; done < n;) {
            size_t k = 100 + (size_t)(tb_rand(&rng) % 900);
            k = k < n - done ? k : n - done;
            tb_events(t, &s, ev + done, NULL, k, 300 + (size_t)(tb_rand(&rng) % chunk_span));
            done += k;
        }
        at += n;
    }
    tb_end(t, 0, NULL, 0);
    qsort(all, total, sizeof *all, tb_key_cmp);
    *want = all;
    return total;
}

/* Recomputes both checksums of every chunk of buf from data_off on, walking by the declared
 * payload sizes while they fit (forged-payload tests: mutations then reach the decoders). */
static inline void tb_fix_checksums(uint8_t *buf, size_t size, size_t data_off)
{
    for (size_t off = data_off; size - off >= HT_FMT_CHUNK_HDR_SIZE;) {
        uint32_t ps = ht_fmt_get32(buf + off + HT_FMT_CH_PAYLOAD);
        if (ps > size - off - HT_FMT_CHUNK_HDR_SIZE)
            break;
        ht_fmt_put32(buf + off + HT_FMT_CH_PAYLOAD_CRC,
                     ht_fmt_crc32c(buf + off + HT_FMT_CHUNK_HDR_SIZE, ps));
        ht_fmt_put32(buf + off + HT_FMT_CH_HEADER_CRC,
                     ht_fmt_crc32c(buf + off, HT_FMT_CH_HEADER_CRC));
        off += HT_FMT_CHUNK_HDR_SIZE + ps;
    }
}

/* A forged copy of src in buf: 1 .. max_flips random bytes set at random offsets from
 * data_off on, then every chunk's checksums fixed, so that the damage reaches the decoders. */
static inline void tb_forge(uint8_t *buf, const uint8_t *src, size_t size, size_t data_off,
                            uint64_t *rng, unsigned max_flips)
{
    memcpy(buf, src, size);
    unsigned n = 1 + (unsigned)(tb_rand(rng) % max_flips);
    for (unsigned f = 0; f < n; f++) {
        size_t at = data_off + (size_t)(tb_rand(rng) % (size - data_off));
        buf[at] = (uint8_t)tb_rand(rng);
    }
    tb_fix_checksums(buf, size, data_off);
}

/* tb_fix_checksums for a whole file whose header may be damaged too: the header's checksum
 * (over its command line, when the declared length fits) and then every chunk's. */
static inline void tb_fix_file_checksums(uint8_t *buf, size_t size)
{
    if (size < HT_FMT_FILE_HDR_SIZE)
        return;
    uint32_t cmd = ht_fmt_get32(buf + 20);
    if (cmd > size - HT_FMT_FILE_HDR_SIZE)
        return;
    ht_fmt_put32(buf + 44, ht_fmt_crc32c_2(buf, 44, buf + HT_FMT_FILE_HDR_SIZE, cmd));
    tb_fix_checksums(buf, size, HT_FMT_FILE_HDR_SIZE + cmd);
}

#endif
