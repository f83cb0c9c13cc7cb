/* merge.c — the k-way merge: one cursor per thread holding its current chunk decoded. Each
 * fill of r->batch (pointers into the decoded chunks, handed out by ht_reader_next and
 * ht_reader_next_batch) takes, from 3 threads on, the window merge (window_fill: every event
 * before a bound that no chunk end precedes, sorted by a radix sort of their timestamps)
 * where it applies, else the head-by-head merges: up to HEAD_LINEAR threads a branch-free scan
 * of the head timestamps (batch_fill), beyond, a binary min-heap of cursors keyed by
 * (timestamp, sequence, tid) of their head event (heap_fill). All give the same order. And
 * the walk over chunk headers that finds the threads' next chunks (one shared walk, which
 * queues the chunks it passes for their threads). Where the decoded chunks of all threads
 * would not fit PIECE_BUDGET, a chunk is checked whole and then decoded in pieces (so that
 * the events the merge reads back are still in the caches). Memory: one chunk (raw) and one
 * chunk or piece (decoded; with the events of the chunk before it not handed out yet, fewer
 * than WINDOW_MAX, after an early load) and RD_QUEUE chunk headers per thread plus a window (at
 * most max(8192, 16 per thread) events of keys and pointers). Never looks at bytes at or past the
 * damage point found by the scan, and never hands out an event of a chunk that does not
 * decode. */
#include "reader/internal.h"

#include "trace/format.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

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

#define BATCH 256 /* events merged per batch_fill or heap_fill */

/* The window merge: per thread at most WINDOW_MAX events of a window, and about WINDOW_EVENTS
 * in all (at least WINDOW_MIN per thread), so that its runs stay in the caches. */
#define WINDOW_MAX     256
#define WINDOW_MIN     16
#define WINDOW_EVENTS  8192
#define RADIX_BITS     11 /* the window's radix sort: bits a digit */
#define RADIX_PASSES   3  /* and digits at most */
#define WINDOW_BACKOFF 16 /* fills without the window merge after a tie group stopped it */
#define TIE_THREADS    16 /* threads sharing a timestamp beyond which the window merge steps aside */
#define TIE_PASSES     6 /* tie_pass passes a window tries before its groups are fixed one by one */
/* Threads from which a cursor near its chunk's end loads its next chunk early (cursors_reload;
 * measured, docs/PERFORMANCE.md, sixth session: it pays at 64 threads, not at 16) */
#define EARLY_THREADS 32

/* Events per thread of a window at n threads. */
static inline size_t window_run(size_t n)
{
    size_t w = WINDOW_EVENTS / n;
    return w > WINDOW_MAX ? WINDOW_MAX : w < WINDOW_MIN ? WINDOW_MIN : w;
}

/* Pieces (piece_config): chunks are decoded in pieces when all threads' decoded chunks would
 * take more than PIECE_BUDGET bytes, in pieces of about PIECE_BYTES for all threads
 * (measured: docs/PERFORMANCE.md, fifth session). */
#define PIECE_BUDGET ((size_t)32 << 20)
#define PIECE_BYTES  ((size_t)2 << 20)
#define PIECE_MIN    (2 * WINDOW_MAX)

/* One step of the minimum scan over timestamps: m2 = the smallest timestamp except the best
 * so far, then best/i take (t, k) when t is smaller. Conditional moves, never a branch: which
 * thread comes next is a coin toss, and compilers turn the same ?: code into branches. */
#if defined(__x86_64__)
static inline void scan_step(uint64_t t, uint64_t k, uint64_t *best, uint64_t *i, uint64_t *m2)
{
    uint64_t m = *m2;
    __asm__("cmp %[m], %[t]\n\t"
            "cmovb %[t], %[m]\n\t"
            "cmp %[b], %[t]\n\t"
            "cmovb %[b], %[m]\n\t"
            "cmovb %[t], %[b]\n\t"
            "cmovb %[k], %[i]"
            : [m] "+&r"(m), [b] "+&r"(*best), [i] "+&r"(*i)
            : [t] "r"(t), [k] "r"(k)
            : "cc");
    *m2 = m;
}
#else
static inline void scan_step(uint64_t t, uint64_t k, uint64_t *best, uint64_t *i, uint64_t *m2)
{
    uint64_t m = t < *m2 ? t : *m2;
    bool lt = t < *best;
    *m2 = lt ? *best : m;
    *i = lt ? k : *i;
    *best = lt ? t : *best;
}
#endif

/* True when event a sorts before event b (the merge key: timestamp, sequence, thread). */
static inline bool event_less(const ht_event *a, const ht_event *b)
{
    if (a->timestamp_ns != b->timestamp_ns)
        return a->timestamp_ns < b->timestamp_ns;
    if (a->sequence != b->sequence)
        return a->sequence < b->sequence;
    return a->tid < b->tid;
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

/* One step of a walk over chunk headers: the header at *off into ch, and *off past its
 * chunk. 1; 0 at the end of the good data; -1 on damage (status set). */
static int walk_step(ht_reader *r, uint64_t *off, rd_chunk *ch)
{
    if (*off >= r->valid_end || r->valid_end - *off < HT_FMT_CHUNK_HDR_SIZE)
        return 0;
    uint8_t hbuf[HT_FMT_CHUNK_HDR_SIZE];
    uint8_t *hb = hbuf;
    size_t hcap = sizeof hbuf;
    const uint8_t *h = ht__rd_fetch(r, *off, HT_FMT_CHUNK_HDR_SIZE, &hb, &hcap);
    if (h == NULL || !ht__rd_chunk_parse(r, h, *off, ch))
        return -1;
    uint64_t next = *off + HT_FMT_CHUNK_HDR_SIZE + ch->payload_size;
    if (next > r->valid_end) {
        ht__rd_fail(r, HT_READER_TRUNCATED, *off,
                    "chunk at offset %llu runs past the good data (file changed?)",
                    (unsigned long long)*off);
        return -1;
    }
    *off = next;
    return 1;
}

/* The header of cursor c's next event chunk with at least one event, into ch: from its
 * queue, else from its own walk, else from the shared walk, which queues the other shared
 * cursors' event chunks it passes (a full queue: that cursor walks on its own from there).
 * One walk instead of one per thread: with T threads each cursor's own walk read T chunk
 * headers per chunk of its own (cold lines, a checksum each; in file mode a pread each).
 * 1; 0 at the end of its good chunks; -1 on damage (status set). It reads no header beyond
 * c's next chunk, so damage in a header is met by the same call as with one walk per thread. */
static int cursor_next_chunk(ht_reader *r, rd_cursor *c, rd_chunk *ch)
{
    if (c->q_n > 0) {
        *ch = r->queues[(size_t)(c - r->cursors) * RD_QUEUE + c->q_head];
        c->q_head = (c->q_head + 1) % RD_QUEUE;
        c->q_n--;
        return 1;
    }
    int st;
    while (!c->shared) {
        if (c->scan_off == r->walk_off) {
            c->shared = true; /* every chunk of its before walk_off is behind it */
            break;
        }
        if ((st = walk_step(r, &c->scan_off, ch)) <= 0)
            return st;
        if (ch->kind == HT_FMT_KIND_EVENTS && ch->tid == c->tid && ch->n_records != 0)
            return 1;
    }
    for (;;) {
        if ((st = walk_step(r, &r->walk_off, ch)) <= 0)
            return st;
        if (ch->kind != HT_FMT_KIND_EVENTS || ch->n_records == 0)
            continue;
        if (ch->tid == c->tid)
            return 1;
        ssize_t t = ht__rd_thread_find(r, ch->tid);
        if (t < 0)
            continue; /* not a thread the scan saw (cannot happen: it saw every chunk) */
        rd_cursor *o = &r->cursors[t];
        if (!o->shared)
            continue; /* its own walk finds it */
        if (o->q_n == RD_QUEUE) {
            o->shared = false; /* its queue, then its own walk from this chunk on */
            o->scan_off = ch->off;
            continue;
        }
        r->queues[(size_t)t * RD_QUEUE + (o->q_head + o->q_n++) % RD_QUEUE] = *ch;
    }
}

/* Room for n events in cursor c's ev. False (status set) when out of memory. */
static bool cursor_room(ht_reader *r, rd_cursor *c, size_t n, uint64_t off)
{
    if (n <= c->ev_cap)
        return true;
    size_t cap = c->ev_cap < 256 ? 256 : c->ev_cap;
    while (cap < n)
        cap *= 2;
    /* with pieces, a cursor never holds more than the larger of a piece and a whole chunk
     * that is not decoded in pieces, plus the events of the chunk before it that an early
     * load keeps (fewer than a window's run): the memory bound */
    size_t limit = (r->piece_over > r->piece_max ? r->piece_over : r->piece_max) + WINDOW_MAX;
    if (r->piece_max != 0 && n <= limit && cap > limit)
        cap = limit;
    ht_reader_event *ev = realloc(c->ev, cap * sizeof *ev);
    if (ev == NULL) {
        ht__rd_fail(r, HT_READER_NOMEM, off, "out of memory for %zu events", n);
        return false;
    }
    c->ev = ev;
    c->ev_cap = cap;
    return true;
}

/* Cursor c's chunk decoded in pieces: keeps its events not handed out yet, ev[pos .. n_ev),
 * moved to the front, and decodes its next events after them, up to r->piece_max in all.
 * False on failure (status set, r->failed). */
static bool piece_refill(ht_reader *r, rd_cursor *c)
{
    rd_piece *pc = &r->pieces[c - r->cursors];
    uint32_t keep = c->n_ev - c->pos, got;
    if (keep > 0 && c->pos > 0)
        memmove(c->ev, c->ev + c->pos, keep * sizeof *c->ev);
    c->n_ev = keep;
    c->pos = 0;
    if (!ht__rd_piece_decode(r, pc, c->ev + keep, r->piece_max - keep, &got)) {
        r->failed = true;
        return false;
    }
    c->n_ev = keep + got;
    c->pos = 0;
    c->n_todo -= got;
    return true;
}

/* Finds, loads and decodes cursor c's next event chunk with at least one event: all of it,
 * or when it has more than r->piece_over events, checked all through and then its first
 * piece. With append, after the events of its current chunk not handed out yet (moved to the
 * front: an early load, cursor_load_early), else in their place. False at the end of its
 * good chunks, or on damage (status set, r->failed; c's events not handed out yet stay, at
 * ev[pos .. n_ev)). A chunk with damage anywhere gives no event: its check pass fails before
 * any is decoded. */
static bool cursor_load(ht_reader *r, rd_cursor *c, bool append)
{
    rd_chunk ch;
    int st = cursor_next_chunk(r, c, &ch);
    if (st == 0)
        return false;
    if (st < 0)
        goto fail;
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
    const uint32_t keep = append ? c->n_ev - c->pos : 0;
    const bool old_sorted = c->sorted;
    const uint64_t old_last = keep > 0 ? c->ev[c->n_ev - 1].event.timestamp_ns : 0;
    if (r->piece_max != 0 && ch.n_records > r->piece_over) {
        bool sorted;
        if (!ht__rd_check_events(r, &ch, pl, &sorted))
            goto fail;
        if (!cursor_room(r, c, r->piece_max, ch.off))
            goto fail;
        ht__rd_piece_start(r, &r->pieces[c - r->cursors], &ch, pl);
        if (keep == 0) {
            c->n_ev = 0;
            c->pos = 0;
        }
        c->n_todo = ch.n_records;
        if (!piece_refill(r, c)) /* keeps ev[pos .. n_ev) in front of the piece */
            return false;
        c->sorted =
            sorted && (keep == 0 || (old_sorted && old_last <= c->ev[keep].event.timestamp_ns));
        return true;
    }
    if (!cursor_room(r, c, (size_t)keep + ch.n_records, ch.off))
        goto fail;
    if (keep > 0 && c->pos > 0)
        memmove(c->ev, c->ev + c->pos, keep * sizeof *c->ev);
    c->n_ev = keep;
    c->pos = 0;
    bool sorted;
    if (!ht__rd_decode_events(r, &ch, pl, c->ev + keep, &sorted))
        goto fail;
    c->sorted = sorted && (keep == 0 || (old_sorted && old_last <= c->ev[keep].event.timestamp_ns));
    c->n_ev = keep + ch.n_records;
    c->pos = 0;
    c->n_todo = 0;
    return true;
fail:
    r->failed = true;
    return false;
}

/* Cursor c used up (pos == n_ev): its chunk's next piece, or its next chunk. False as
 * cursor_load. */
static bool cursor_advance(ht_reader *r, rd_cursor *c)
{
    if (c->pending != NULL) { /* its early load failed: now is when the failure is met */
        rd_failure *f = c->pending;
        c->pending = NULL;
        if (r->status == HT_READER_OK) { /* the first failure is kept, as ht__rd_fail does */
            r->status = f->status;
            r->status_off = f->off;
            memcpy(r->message, f->message, sizeof r->message);
        }
        free(f);
        r->failed = true;
        return false;
    }
    return c->n_todo > 0 ? piece_refill(r, c) : cursor_load(r, c, false);
}

/* Cursor c (not used up, its chunk decoded whole) gets its next chunk after the events it
 * has left, so that the window merge's bound is not held back by the end of its chunk (with
 * many threads one of them is always near its chunk's end: at 64 threads and 2046-event
 * chunks, windows of ~1400 events instead of up to 8192). The order handed out is the same:
 * c's events stay in stream order. A failure is kept back (c->pending) and met when c is
 * used up, as without the early load: the same events, status and offset. False only when
 * out of memory to keep it (status set, r->failed). */
static bool cursor_load_early(ht_reader *r, rd_cursor *c)
{
    const ht_reader_status_code st = r->status;
    const uint64_t st_off = r->status_off;
    char msg[sizeof r->message];
    memcpy(msg, r->message, sizeof msg);
    if (cursor_load(r, c, true))
        return true;
    c->no_next = true; /* at the end of its good chunks, or the failure kept back */
    if (!r->failed)
        return true;
    rd_failure *f = malloc(sizeof *f);
    if (f == NULL)
        return false; /* the failure now, not later: its events not handed out yet are lost */
    f->status = r->status;
    f->off = r->status_off;
    memcpy(f->message, r->message, sizeof f->message);
    r->status = st;
    r->status_off = st_off;
    memcpy(r->message, msg, sizeof msg);
    r->failed = false;
    c->n_todo = 0;
    c->pending = f;
    return true;
}

/* Whether and how r's chunks are decoded in pieces: those of more than piece_over events
 * (budget / (threads x an event): the decoded chunks of all threads would exceed the
 * budget), in pieces of PIECE_BYTES / (threads x an event), at least PIECE_MIN (a window's
 * runs fit in a piece twice) and at most piece_over. */
static void piece_config(ht_reader *r)
{
    r->piece_max = 0;
    r->piece_over = UINT32_MAX;
    uint32_t forced = atomic_load_explicit(&ht__rd_piece_events, memory_order_relaxed);
    if (forced != 0) {
        r->piece_max = r->piece_over = forced;
        return;
    }
    size_t budget = atomic_load_explicit(&ht__rd_piece_budget, memory_order_relaxed);
    if (budget == 0 || r->n_threads == 0)
        return;
    const size_t per = r->n_threads * sizeof(ht_reader_event);
    size_t over = budget / per, piece = PIECE_BYTES / per;
    over = over < PIECE_MIN ? PIECE_MIN : over > UINT32_MAX - 1 ? UINT32_MAX - 1 : over;
    piece = piece < PIECE_MIN ? PIECE_MIN : piece > over ? over : piece;
    r->piece_over = (uint32_t)over;
    r->piece_max = (uint32_t)piece;
}

_Atomic size_t ht__rd_piece_budget = PIECE_BUDGET;
_Atomic uint32_t ht__rd_piece_events = 0;

void ht__rd_merge_start(ht_reader *r)
{
    r->merge_started = true;
    r->heap = calloc(r->n_threads + 1, sizeof *r->heap);
    r->batch_cap =
        r->n_threads * WINDOW_MIN > WINDOW_EVENTS ? r->n_threads * WINDOW_MIN : WINDOW_EVENTS;
    r->batch = malloc(r->batch_cap * sizeof *r->batch);
    r->keys = malloc(2 * r->batch_cap * sizeof *r->keys);
    r->radix = malloc(((size_t)RADIX_PASSES << RADIX_BITS) * sizeof *r->radix);
    r->runs = malloc(2 * (r->n_threads + 1) * sizeof *r->runs);
    r->wnext = malloc((r->n_threads + 1) * sizeof *r->wnext);
    r->b_pos = 0;
    r->b_n = 0;
    r->walk_off = r->data_off;
    r->queues = malloc((r->n_threads + 1) * RD_QUEUE * sizeof *r->queues);
    piece_config(r);
    r->pieces = r->piece_max != 0 ? malloc((r->n_threads + 1) * sizeof *r->pieces) : NULL;
    for (size_t i = 0; i < r->n_threads; i++) {
        r->cursors[i].shared = true;
        r->cursors[i].q_head = 0;
        r->cursors[i].q_n = 0;
    }
    if (r->heap == NULL || r->batch == NULL || r->keys == NULL || r->runs == NULL ||
        r->wnext == NULL || r->radix == NULL || r->queues == NULL ||
        (r->piece_max != 0 && r->pieces == NULL)) {
        ht__rd_fail(r, HT_READER_NOMEM, 0, "out of memory for the merge heap");
        r->failed = true;
        return;
    }
    for (size_t i = 0; i < r->n_threads && !r->failed; i++) {
        rd_cursor *c = &r->cursors[i];
        if (c->first_off == UINT64_MAX || !cursor_load(r, c, false))
            continue;
        head_set(&r->heap[r->n_heap++], c);
    }
    for (size_t i = r->n_heap / 2; i-- > 0;)
        sift_down(r, i);
}

/* Scan mode (at most HEAD_LINEAR threads): merges the cursors' next events into out[0 .. max)
 * (max >= 1), as pointers into their decoded chunks, until max events or until a cursor's
 * chunk is used up (its next chunk would overwrite events out points to: it is loaded by the
 * next call, once out is handed out). The merge runs in registers: per event, one scan of
 * the head timestamps with conditional moves (the full key only on equal timestamps), no
 * call, no heap. Returns the number of events; 0 at the end of the trace or on damage. */
static size_t batch_fill(ht_reader *r, const ht_reader_event **out, size_t max)
{
    rd_head *h = r->heap;
    for (size_t k = 0; k < r->n_heap;) {
        rd_cursor *c = h[k].cursor;
        if (c->pos < c->n_ev) {
            k++;
        } else if (cursor_advance(r, c)) {
            head_set(&h[k], c);
            k++;
        } else if (r->failed) {
            r->n_heap = 0; /* the events before were from good chunks; stop here */
            return 0;
        } else {
            h[k] = h[--r->n_heap];
        }
    }
    size_t n = r->n_heap;
    if (n == 0)
        return 0;
    const ht_reader_event *p[HEAD_LINEAR], *end[HEAD_LINEAR];
    uint64_t ts[HEAD_LINEAR];
    for (size_t k = 0; k < n; k++) {
        rd_cursor *c = h[k].cursor;
        p[k] = &c->ev[c->pos];
        end[k] = &c->ev[c->n_ev];
        ts[k] = p[k]->event.timestamp_ns;
    }
    size_t m = 0;
    if (n == 1) {
        size_t take = (size_t)(end[0] - p[0]) < max ? (size_t)(end[0] - p[0]) : max;
        for (; m < take; m++)
            out[m] = p[0]++;
    } else if (n == 2) {
        /* The classic branch-free two-way merge, everything in registers: per event one
         * compare, two pointer bumps by it, two loads (a chain of about 8 cycles). */
        const ht_reader_event *a = p[0], *b = p[1];
        for (;;) {
            uint64_t ta = a->event.timestamp_ns, tb = b->event.timestamp_ns;
            uintptr_t take_b = tb < ta;
            if (__builtin_expect(ta == tb, 0))
                take_b = event_less(&b->event, &a->event);
            uintptr_t mb = 0 - take_b;
            out[m++] = (const ht_reader_event *)(((uintptr_t)a & ~mb) | ((uintptr_t)b & mb));
            b = (const ht_reader_event *)((uintptr_t)b + (sizeof *b & mb));
            a = (const ht_reader_event *)((uintptr_t)a + (sizeof *a & ~mb));
            if ((a == end[0]) | (b == end[1]) | (m == max))
                break;
        }
        p[0] = a;
        p[1] = b;
    } else if (n <= 4) {
        /* Three or four: the same in registers, a two-level tournament (a|b, c|d, then the
         * winners); a missing fourth is a sentinel that never wins. Any equal timestamp among
         * the compared heads (rare) lets the full key decide among the real heads. */
        static const ht_reader_event never = {.event = {.timestamp_ns = UINT64_MAX}};
        const ht_reader_event *a = p[0], *b = p[1], *c = p[2], *d = n == 4 ? p[3] : &never;
        const ht_reader_event *ea = end[0], *eb = end[1], *ec = end[2];
        const ht_reader_event *ed = n == 4 ? end[3] : &never + 1;
        for (;;) {
            uint64_t ta = a->event.timestamp_ns, tb = b->event.timestamp_ns;
            uint64_t tc = c->event.timestamp_ns, td = d->event.timestamp_ns;
            /* bit arithmetic, not ?: (compilers make the coin tosses branches) */
            uint64_t ab = tb < ta, cd = td < tc;
            uint64_t tab = ta ^ ((ta ^ tb) & (0 - ab)), tcd = tc ^ ((tc ^ td) & (0 - cd));
            uint64_t w = tcd < tab;
            uint64_t k = (w << 1) | (ab ^ ((ab ^ cd) & (0 - w)));
            if (__builtin_expect((ta == tb) | (tc == td) | (tab == tcd), 0)) {
                const ht_reader_event *h4[4] = {a, b, c, d};
                k = 0;
                for (unsigned j = 1; j < n; j++)
                    k = event_less(&h4[j]->event, &h4[k]->event) ? j : k;
            }
            uintptr_t m0 = 0 - (uintptr_t)(k == 0), m1 = 0 - (uintptr_t)(k == 1);
            uintptr_t m2 = 0 - (uintptr_t)(k == 2), m3 = 0 - (uintptr_t)(k == 3);
            out[m++] = (const ht_reader_event *)(((uintptr_t)a & m0) | ((uintptr_t)b & m1) |
                                                 ((uintptr_t)c & m2) | ((uintptr_t)d & m3));
            a = (const ht_reader_event *)((uintptr_t)a + (sizeof *a & m0));
            b = (const ht_reader_event *)((uintptr_t)b + (sizeof *b & m1));
            c = (const ht_reader_event *)((uintptr_t)c + (sizeof *c & m2));
            d = (const ht_reader_event *)((uintptr_t)d + (sizeof *d & m3));
            if ((a == ea) | (b == eb) | (c == ec) | (d == ed) | (m == max))
                break;
        }
        p[0] = a;
        p[1] = b;
        p[2] = c;
        if (n == 4)
            p[3] = d;
    } else {
        for (;;) {
            uint64_t i = 0, best = ts[0], second = UINT64_MAX;
            for (size_t k = 1; k < n; k++)
                scan_step(ts[k], k, &best, &i, &second);
            if (__builtin_expect(second == best, 0)) { /* another head has this timestamp */
                i = 0;
                for (size_t k = 1; k < n; k++)
                    i = event_less(&p[k]->event, &p[i]->event) ? k : i;
            }
            const ht_reader_event *e = p[i]++;
            out[m++] = e;
            if (e + 1 == end[i] || m == max)
                break;
            ts[i] = e[1].event.timestamp_ns;
        }
    }
    for (size_t k = 0; k < n; k++) {
        rd_cursor *c = h[k].cursor;
        c->pos = (uint32_t)(p[k] - c->ev);
        if (c->pos < c->n_ev)
            head_set(&h[k], c);
    }
    return m;
}

/* Heap mode (more than HEAD_LINEAR threads; heap[] heap-ordered, no cursor used up): the
 * next events in merged order into out[0 .. max) (max >= 1), one sift per event, until max
 * or until the cursor that gave the last event is used up (its next chunk is loaded by the
 * next fill, cursors_reload, for the same reason as in batch_fill; until then heap[0] holds
 * it with a stale key). Returns the number of events (at least 1). */
static size_t heap_fill(ht_reader *r, const ht_reader_event **out, size_t max)
{
    rd_head *h = r->heap;
    size_t m = 0;
    rd_cursor *c;
    for (;;) {
        c = h[0].cursor;
        out[m++] = &c->ev[c->pos++];
        if (c->pos == c->n_ev || m == max)
            break;
        head_set(&h[0], c);
        sift_down(r, 0);
    }
    if (c->pos < c->n_ev) {
        head_set(&h[0], c);
        sift_down(r, 0);
    }
    return m;
}

/* The window merge's keys: k << KEY_K_SHIFT | (timestamp - base), k the run's (its head's)
 * index in heap[], base the smallest head timestamp. The window is sorted by the timestamp
 * bits with a stable LSD radix sort (RADIX_BITS a digit, at most RADIX_PASSES digits: a window
 * spans less than 2^33 ns), so events of one timestamp keep the keys' order: by k (the runs
 * are laid out in k order), and each run's in its stream order; tie_group_fix then puts them
 * in the merge's order. */
#define KEY_K_SHIFT 40
_Static_assert(RADIX_BITS *RADIX_PASSES <= KEY_K_SHIFT, "a key's timestamp bits below k");
/* Puts the events of one timestamp, g[0 .. n) (n >= 2), in the order of the head-by-head
 * merge: they come grouped by thread (the keys' k), each thread's in its stream order, and
 * the merge takes the threads' heads by (sequence, tid). tmp has room for n pointers, start
 * for max_threads + 1 indexes and pos for max_threads. False (nothing changed) when more than
 * max_threads threads share the timestamp: the head-by-head merges take over then. */
static bool tie_group_fix(const ht_reader_event **g, size_t n, const ht_reader_event **tmp,
                          size_t *start, size_t *pos, size_t max_threads)
{
    size_t n_sub = 0;
    start[n_sub++] = 0;
    for (size_t i = 1; i < n; i++) {
        if (g[i]->event.tid == g[i - 1]->event.tid)
            continue;
        if (n_sub == max_threads)
            return false;
        start[n_sub++] = i;
    }
    if (n_sub == 1)
        return true; /* one thread's events: already in stream order */
    if (n == 2) {
        if (event_less(&g[1]->event, &g[0]->event)) {
            const ht_reader_event *t = g[0];
            g[0] = g[1];
            g[1] = t;
        }
        return true;
    }
    start[n_sub] = n;
    for (size_t j = 0; j < n_sub; j++)
        pos[j] = start[j];
    for (size_t m = 0; m < n; m++) {
        size_t best = SIZE_MAX;
        for (size_t j = 0; j < n_sub; j++) {
            if (pos[j] < start[j + 1] &&
                (best == SIZE_MAX || event_less(&g[pos[j]]->event, &g[pos[best]]->event)))
                best = j;
        }
        tmp[m] = g[pos[best]++];
    }
    memcpy(g, tmp, n * sizeof *g);
    return true;
}

/* One pass of compare-exchanges over the tie positions tie[0 .. n_tie) (increasing; position i
 * means out[i] has the timestamp of out[i - 1]): out[i - 1] and out[i] swapped where they are
 * out of (sequence, tid) order, branch-free (which comes first is a coin toss). Only for ties
 * between threads: no two events of one thread may share a timestamp in the window. Returns
 * the number of swaps. */
static size_t tie_pass(const ht_reader_event **out, const uint32_t *tie, size_t n_tie)
{
    size_t swaps = 0;
    for (size_t j = 0; j < n_tie; j++) {
        const uint32_t i = tie[j];
        const ht_reader_event *a = out[i - 1], *b = out[i];
        uint64_t sa = a->event.sequence, sb = b->event.sequence;
        uint32_t ta = a->event.tid, tb = b->event.tid;
        uintptr_t sw = (uintptr_t)((sb < sa) | ((sb == sa) & (tb < ta)));
        uintptr_t x = ((uintptr_t)a ^ (uintptr_t)b) & (0 - sw);
        out[i - 1] = (const ht_reader_event *)((uintptr_t)a ^ x);
        out[i] = (const ht_reader_event *)((uintptr_t)b ^ x);
        swaps += sw;
    }
    return swaps;
}

/* A run's keys: o[i] = kk | (timestamp of e[i] - base) for the events before the first at or
 * after t_end (e[hi] is one, and e's timestamps never decrease), and their digits (d bits
 * each, passes of them, a constant in each instance) counted in cnt[pass << d | digit].
 * Returns how many. A linear scan, four events at a time while the fourth is before t_end:
 * the run's events are read in order anyway, where a binary search for the bound costs a
 * dependent chain of loads from cold lines and a coin-toss branch per step. */
static inline __attribute__((always_inline)) size_t
window_keys(const ht_reader_event *e, size_t hi, uint64_t t_end, uint64_t kk, uint64_t base,
            uint64_t *o, uint32_t *cnt, unsigned d, uint64_t dmask, const unsigned passes)
{
    uint32_t *c1 = cnt + ((size_t)1 << d), *c2 = cnt + ((size_t)2 << d);
    size_t i = 0;
    for (;;) {
        size_t b;
        if (i + 4 <= hi && e[i + 3].event.timestamp_ns < t_end)
            b = 4;
        else if (e[i].event.timestamp_ns < t_end)
            b = 1;
        else
            return i;
#pragma GCC unroll 4
        for (size_t j = 0; j < b; j++, i++) {
            uint64_t t = e[i].event.timestamp_ns - base;
            o[i] = kk | t;
            if (passes >= 1)
                cnt[t & dmask]++;
            if (passes >= 2)
                c1[(t >> d) & dmask]++;
            if (passes >= 3)
                c2[(t >> 2 * d) & dmask]++;
        }
    }
}

/* The window merge (3 or more threads, every current chunk sorted): T = the smallest, over
 * the cursors, timestamp of the event w ahead (or of its chunk's last event), or nearer, so
 * that the window spans less than 2^33 ns. Every event earlier than T is in the current
 * chunks (a cursor's later events are at or after its event at T, so its chunk's last event,
 * at or after T, stays unmerged and its next chunk is not needed), and they are exactly the
 * next events the head-by-head merge would hand out, in the same order: by timestamp, and
 * among equal timestamps as that merge takes the threads' heads (tie_group_fix). So they are
 * sorted, as 8-byte keys, by a radix sort of their timestamps (a few instructions per event
 * and digit, whatever the number of threads), and handed out as pointers in r->batch.
 * Returns their number; 0 (nothing changed) when a chunk is not sorted, no event is earlier
 * than T, or too many threads share a timestamp; the head-by-head merges take over then. */
static size_t window_fill(ht_reader *r)
{
    rd_head *h = r->heap;
    size_t n = r->n_heap;
    size_t w = window_run(n);
    uint64_t t_end = UINT64_MAX, t_base = UINT64_MAX;
    for (size_t k = 0; k < n; k++) {
        const rd_cursor *c = h[k].cursor;
        if (!c->sorted)
            return 0;
        size_t last = (c->n_ev - c->pos > w ? c->pos + w : c->n_ev) - 1;
        uint64_t t = c->ev[last].event.timestamp_ns;
        t_end = t < t_end ? t : t_end;
        t_base = h[k].ts < t_base ? h[k].ts : t_base;
    }
    const uint64_t span_max = (uint64_t)1 << (RADIX_BITS * RADIX_PASSES);
    if (t_end - t_base > span_max)
        t_end = t_base + span_max; /* a nearer bound: a smaller window, as good */
    if (n >= (size_t)1 << (64 - KEY_K_SHIFT))
        return 0; /* k would not fit in a key */
    /* the timestamp bits of the keys: (timestamp - t_base) <= t_end - t_base - 1 */
    const uint64_t span = t_end - t_base;
    const unsigned bits = span > 1 ? 64 - (unsigned)__builtin_clzll(span - 1) : 0;
    const unsigned passes = (bits + RADIX_BITS - 1) / RADIX_BITS;
    const unsigned d = passes > 0 ? (bits + passes - 1) / passes : 0;
    const uint64_t dmask = ((uint64_t)1 << d) - 1;
    uint32_t *cnt = r->radix;
    memset(cnt, 0, ((size_t)passes << d) * sizeof *cnt);
    uint64_t *src = r->keys, *dst = r->keys + r->batch_cap;
    size_t total = 0;
    for (size_t k = 0; k < n; k++) {
        const rd_cursor *c = h[k].cursor;
        const ht_reader_event *e = &c->ev[c->pos];
        const size_t hi = (c->n_ev - c->pos > w ? w : c->n_ev - c->pos) - 1; /* e[hi] >= T */
        r->wnext[k] = e;
        const uint64_t kk = (uint64_t)k << KEY_K_SHIFT;
        uint64_t *o = src + total;
        if (passes <= 1)
            total += window_keys(e, hi, t_end, kk, t_base, o, cnt, d, dmask, passes);
        else if (passes == 2)
            total += window_keys(e, hi, t_end, kk, t_base, o, cnt, d, dmask, 2);
        else
            total += window_keys(e, hi, t_end, kk, t_base, o, cnt, d, dmask, 3);
    }
    if (total == 0)
        return 0;
    for (unsigned j = 0; j < passes; j++) {
        uint32_t *c = cnt + ((size_t)j << d), sum = 0;
        for (size_t b = 0; b <= dmask; b++) {
            uint32_t x = c[b];
            c[b] = sum;
            sum += x;
        }
        const unsigned s = j * d;
        if (s == 0) {
#pragma GCC unroll 4
            for (size_t i = 0; i < total; i++) {
                uint64_t x = src[i];
                dst[c[x & dmask]++] = x;
            }
        } else {
#pragma GCC unroll 4
            for (size_t i = 0; i < total; i++) {
                uint64_t x = src[i];
                dst[c[(x >> s) & dmask]++] = x;
            }
        }
        uint64_t *t = src;
        src = dst;
        dst = t;
    }
    /* the pointers, and where a timestamp equals the one before (tie[]: positions) */
    const uint64_t tmask = ((uint64_t)1 << KEY_K_SHIFT) - 1;
    const ht_reader_event **out = r->batch, **next = r->wnext;
    uint32_t *tie = (uint32_t *)dst;
    uint64_t prev = UINT64_MAX; /* the first key's timestamp bits are 0 */
    size_t n_tie = 0;
#pragma GCC unroll 4
    for (size_t i = 0; i < total; i++) {
        uint64_t x = src[i];
        out[i] = next[x >> KEY_K_SHIFT]++;
        tie[n_tie] = (uint32_t)i; /* kept only when it is a tie */
        n_tie += ((x ^ prev) & tmask) == 0;
        prev = x;
    }
    /* Ties between threads only (no key equals the one before: a thread's events of one
     * timestamp would be neighbours, the sort being stable and the runs laid out thread by
     * thread): each group's order is then the (sequence, tid) order, which branch-free passes
     * of neighbour compare-exchanges reach without the group loop's coin-toss branches: one
     * over every position (a group of two is then in order), then, over the positions of the
     * groups of three or more (next to another position; big[]), until one swaps nothing.
     * Otherwise, or after TIE_PASSES of those, the groups one by one below (from any order of
     * such groups). */
    uint64_t dup = 0;
    for (size_t j = 0; j < n_tie; j++)
        dup |= src[tie[j]] == src[tie[j] - 1];
    if (dup == 0 && n_tie > 0) {
        tie_pass(out, tie, n_tie);
        uint32_t *big = tie + r->batch_cap; /* dst holds 2 x batch_cap positions */
        size_t n_big = 0;
        uint32_t last = UINT32_MAX - 1; /* the position before; last + 1 is none */
        tie[n_tie] = 0;                 /* nor is this + 1 */
        for (size_t j = 0; j < n_tie; j++) {
            const uint32_t i = tie[j];
            big[n_big] = i;
            n_big += (i == last + 1) | (tie[j + 1] == i + 1);
            last = i;
        }
        size_t swaps = 0;
        for (unsigned pass = 0; n_big > 0 && pass < TIE_PASSES; pass++)
            if ((swaps = tie_pass(out, big, n_big)) == 0)
                break;
        if (swaps == 0)
            n_tie = 0; /* in order */
    }
    const ht_reader_event **tmp = (const ht_reader_event **)src;
    for (size_t j = 0; j < n_tie;) {
        size_t s = tie[j] - 1, e = tie[j] + 1;
        for (j++; j < n_tie && tie[j] == e; j++)
            e++;
        if (e - s == 2) {
            /* two events (most groups; 40 % of the events are in one at 64 threads): as
             * tie_group_fix, in registers and without a branch on the coin toss */
            const ht_reader_event *a = out[s], *b = out[s + 1];
            uint64_t sa = a->event.sequence, sb = b->event.sequence;
            uint32_t ta = a->event.tid, tb = b->event.tid;
            uintptr_t sw = (uintptr_t)((ta != tb) & ((sb < sa) | ((sb == sa) & (tb < ta))));
            uintptr_t x = ((uintptr_t)a ^ (uintptr_t)b) & (0 - sw);
            out[s] = (const ht_reader_event *)((uintptr_t)a ^ x);
            out[s + 1] = (const ht_reader_event *)((uintptr_t)b ^ x);
            continue;
        }
        if (!tie_group_fix(out + s, e - s, tmp, r->runs, r->runs + n + 1, TIE_THREADS)) {
            r->window_skip = WINDOW_BACKOFF; /* such ties tend to last: spare the work */
            return 0;
        }
    }
    for (size_t k = 0; k < n; k++) {
        rd_cursor *c = h[k].cursor;
        c->pos += (uint32_t)(r->wnext[k] - &c->ev[c->pos]);
        head_set(&h[k], c);
    }
    r->heap_dirty = true;
    return total;
}

_Atomic int ht__rd_window = 1;
_Atomic size_t ht__rd_early_threads = EARLY_THREADS;

/* Loads the next chunk (or piece) of every cursor that is used up; drops the threads that
 * have ended. A cursor whose chunk is decoded in pieces gets its next piece already when
 * fewer than a window's run of events are left (below low), and one whose chunk is decoded
 * whole its next chunk when fewer than early are left, so that the window merge's bound is
 * not held back by the end of a piece or chunk. False on damage (r->failed). */
static bool cursors_reload(ht_reader *r, uint32_t low, uint32_t early)
{
    rd_head *h = r->heap;
    for (size_t k = 0; k < r->n_heap;) {
        rd_cursor *c = h[k].cursor;
        if (c->pos < c->n_ev) {
            if (c->n_todo > 0 && c->n_ev - c->pos < low && !piece_refill(r, c)) {
                r->n_heap = 0;
                return false;
            } else if (c->n_todo == 0 && c->n_ev - c->pos < early && !c->no_next &&
                       !cursor_load_early(r, c)) {
                r->n_heap = 0;
                return false;
            }
            k++;
            continue;
        }
        r->heap_dirty = true;
        if (cursor_advance(r, c)) {
            head_set(&h[k], c);
            k++;
        } else if (r->failed) {
            r->n_heap = 0; /* the events before were from good chunks; stop here */
            return false;
        } else {
            h[k] = h[--r->n_heap];
        }
    }
    return true;
}

/* The next events into r->batch: the window merge where it applies, else whichever
 * head-by-head merge fits the number of threads left. Returns their number; 0 at the end of
 * the trace or on damage. */
static size_t merge_fill(ht_reader *r)
{
    if (!r->merge_started)
        ht__rd_merge_start(r);
    if (r->failed)
        return 0;
    uint32_t low = 0, early = 0; /* loads ahead for the window merge only */
    if (r->window_skip == 0 && r->n_heap >= 3 &&
        atomic_load_explicit(&ht__rd_window, memory_order_relaxed)) {
        size_t w = window_run(r->n_heap);
        if (r->piece_max != 0)
            low = (uint32_t)(w < r->piece_max / 2 ? w : r->piece_max / 2);
        if (r->n_heap >= atomic_load_explicit(&ht__rd_early_threads, memory_order_relaxed))
            early = (uint32_t)w;
    }
    if (!cursors_reload(r, low, early) || r->n_heap == 0)
        return 0;
    size_t m = 0; /* 2 threads: batch_fill's register merge is faster */
    if (r->window_skip > 0)
        r->window_skip--;
    else if (r->n_heap >= 3 && atomic_load_explicit(&ht__rd_window, memory_order_relaxed))
        m = window_fill(r);
    if (m > 0)
        return m;
    if (r->n_heap <= HEAD_LINEAR)
        return batch_fill(r, r->batch, BATCH);
    if (r->heap_dirty) {
        for (size_t i = r->n_heap / 2; i-- > 0;)
            sift_down(r, i);
        r->heap_dirty = false;
    }
    return heap_fill(r, r->batch, BATCH);
}

bool ht_reader_next(ht_reader *r, ht_reader_event *out)
{
    if (__builtin_expect(r == NULL || out == NULL, 0))
        return false;
    if (r->b_pos == r->b_n) {
        r->b_pos = 0;
        r->b_n = merge_fill(r);
        if (r->b_n == 0)
            return false;
    }
    *out = *r->batch[r->b_pos++];
    return true;
}

size_t ht_reader_next_batch(ht_reader *r, const ht_reader_event **events, size_t max)
{
    if (r == NULL || events == NULL || max == 0)
        return 0;
    if (r->b_pos < r->b_n) { /* what ht_reader_next merged and has not handed out yet */
        size_t n = r->b_n - r->b_pos < max ? r->b_n - r->b_pos : max;
        memcpy(events, r->batch + r->b_pos, n * sizeof *events);
        r->b_pos += n;
        return n;
    }
    r->b_pos = 0;
    r->b_n = merge_fill(r);
    if (r->b_n == 0)
        return 0;
    return ht_reader_next_batch(r, events, max);
}
