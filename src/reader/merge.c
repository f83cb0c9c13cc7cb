/* merge.c — the k-way merge: one cursor per thread holding its current chunk decoded, a
 * binary min-heap of cursors keyed by (timestamp, sequence, tid) of their head event, and
 * the walk that finds a thread's next chunk by stepping over chunk headers. Memory: one chunk
 * per thread. Never looks at bytes at or past the damage point found by the scan. */
#include "reader/internal.h"

#include "trace/format.h"

#include <stdlib.h>

/* True when head a sorts before head b. */
static inline bool head_less(const rd_head *a, const rd_head *b)
{
    if (a->ts != b->ts)
        return a->ts < b->ts;
    if (a->seq != b->seq)
        return a->seq < b->seq;
    return a->tid < b->tid;
}

#define HEAD_LINEAR 8 /* threads up to which the merge scans instead of using the heap */

/* head_less without branches (bitwise, so the compiler emits setcc/cmov). */
static inline bool head_less_nobranch(const rd_head *a, const rd_head *b)
{
    return (a->ts < b->ts) |
           ((a->ts == b->ts) & ((a->seq < b->seq) | ((a->seq == b->seq) & (a->tid < b->tid))));
}

/* Copies cursor c's current event's key into h. */
static inline void head_set(rd_head *h, rd_cursor *c)
{
    const ht_event *e = &c->ev[c->pos].event;
    h->ts = e->timestamp_ns;
    h->seq = e->sequence;
    h->tid = c->tid;
    h->cursor = c;
}

static void sift_down(ht_reader *r, size_t i)
{
    rd_head *h = r->heap;
    size_t n = r->n_heap;
    rd_head x = h[i];
    for (;;) {
        size_t k = 2 * i + 1;
        if (k >= n)
            break;
        if (k + 1 < n && head_less(&h[k + 1], &h[k]))
            k++;
        if (!head_less(&h[k], &x))
            break;
        h[i] = h[k];
        i = k;
    }
    h[i] = x;
}

/* Finds, loads and decodes cursor c's next event chunk with at least one event. False at the
 * end of its good chunks, or on damage (status set, r->failed). */
static bool cursor_load(ht_reader *r, rd_cursor *c)
{
    while (c->scan_off < r->valid_end && r->valid_end - c->scan_off >= HT_FMT_CHUNK_HDR_SIZE) {
        uint8_t hbuf[HT_FMT_CHUNK_HDR_SIZE];
        uint8_t *hb = hbuf;
        size_t hcap = sizeof hbuf;
        const uint8_t *h = ht__rd_fetch(r, c->scan_off, HT_FMT_CHUNK_HDR_SIZE, &hb, &hcap);
        rd_chunk ch;
        if (h == NULL || !ht__rd_chunk_parse(r, h, c->scan_off, &ch))
            goto fail;
        uint64_t next = c->scan_off + HT_FMT_CHUNK_HDR_SIZE + ch.payload_size;
        if (next > r->valid_end) {
            ht__rd_fail(r, HT_READER_TRUNCATED, c->scan_off,
                        "chunk at offset %llu runs past the good data (file changed?)",
                        (unsigned long long)c->scan_off);
            goto fail;
        }
        c->scan_off = next;
        if (ch.kind != HT_FMT_KIND_EVENTS || ch.tid != c->tid || ch.n_records == 0)
            continue;
        const uint8_t *pl =
            ht__rd_fetch(r, ch.off + HT_FMT_CHUNK_HDR_SIZE, ch.payload_size, &c->raw, &c->raw_cap);
        if (pl == NULL)
            goto fail;
        if (r->mem == NULL && ht_fmt_crc32c(pl, ch.payload_size) != ch.payload_crc) {
            ht__rd_fail(r, HT_READER_BAD_CHECKSUM, ch.off,
                        "payload checksum mismatch in the chunk at offset %llu (file changed?)",
                        (unsigned long long)ch.off);
            goto fail;
        }
        if (ch.n_records > ch.payload_size / 2) { /* an event record takes >= 2 bytes */
            ht__rd_fail(r, HT_READER_BAD_RECORD, ch.off,
                        "event chunk at offset %llu claims %u records in %u bytes",
                        (unsigned long long)ch.off, ch.n_records, ch.payload_size);
            goto fail;
        }
        if (ch.n_records > c->ev_cap) {
            size_t cap = c->ev_cap < 256 ? 256 : c->ev_cap;
            while (cap < ch.n_records)
                cap *= 2;
            ht_reader_event *ev = realloc(c->ev, cap * sizeof *ev);
            if (ev == NULL) {
                ht__rd_fail(r, HT_READER_NOMEM, ch.off, "out of memory for %u events",
                            ch.n_records);
                goto fail;
            }
            c->ev = ev;
            c->ev_cap = cap;
        }
        if (!ht__rd_decode_events(r, &ch, pl, c->ev))
            goto fail;
        c->n_ev = ch.n_records;
        c->pos = 0;
        return true;
    }
    return false;
fail:
    r->failed = true;
    return false;
}

void ht__rd_merge_start(ht_reader *r)
{
    r->merge_started = true;
    r->heap = calloc(r->n_threads + 1, sizeof *r->heap);
    if (r->heap == NULL) {
        ht__rd_fail(r, HT_READER_NOMEM, 0, "out of memory for the merge heap");
        r->failed = true;
        return;
    }
    for (size_t i = 0; i < r->n_threads && !r->failed; i++) {
        rd_cursor *c = &r->cursors[i];
        if (c->first_off == UINT64_MAX || !cursor_load(r, c))
            continue;
        head_set(&r->heap[r->n_heap++], c);
    }
    for (size_t i = r->n_heap / 2; i-- > 0;)
        sift_down(r, i);
}

bool ht_reader_next(ht_reader *r, ht_reader_event *out)
{
    if (!r->merge_started)
        ht__rd_merge_start(r);
    if (r->failed || r->n_heap == 0)
        return false;
    /* Up to HEAD_LINEAR threads: a branch-free scan for the minimum (which thread comes next
     * is a coin toss, so a heap's compares would mispredict); beyond: the binary heap. The
     * scan needs no order in heap[], so switching from heap to scan as threads end is safe. */
    rd_head *h = r->heap;
    size_t i = 0;
    if (r->n_heap <= HEAD_LINEAR) {
        for (size_t k = 1; k < r->n_heap; k++)
            i = head_less_nobranch(&h[k], &h[i]) ? k : i;
    }
    rd_cursor *c = h[i].cursor;
    *out = c->ev[c->pos++];
    if (c->pos == c->n_ev && !cursor_load(r, c)) {
        if (r->failed) {
            r->n_heap = 0;
            return true; /* this event came from a good chunk; the next call says stop */
        }
        h[i] = h[--r->n_heap];
    } else {
        head_set(&h[i], c);
    }
    if (r->n_heap > HEAD_LINEAR)
        sift_down(r, 0);
    return true;
}
