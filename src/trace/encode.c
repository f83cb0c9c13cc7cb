/* encode.c — turns raw event slots into docs/FORMAT.md v1 chunks, and writes the file
 * header, metadata chunks and the end chunk. Runs on the writer thread (or in tests): every
 * output goes to a caller-provided buffer whose size is checked before each write. Never
 * allocates, never does I/O, and never reads a slot it was not given. */
#include "trace/encode.h"

#include "trace/format.h"

#include <string.h>

/* -- shared pieces ----------------------------------------------------------------------- */

typedef struct chunk_fields {
    uint32_t kind, tid, n_records;
    uint64_t chunk_seq, first_seq, first_ts, last_ts, lost_so_far;
    uint32_t payload_size;
} chunk_fields;

/* Writes the 72-byte chunk header at buf; the payload already sits right after it. */
static void chunk_header_write(uint8_t *buf, const chunk_fields *f)
{
    memcpy(buf, HT_FMT_CHUNK_MAGIC, 4);
    ht_fmt_put16(buf + HT_FMT_CH_VERSION, HT_FMT_VERSION);
    ht_fmt_put16(buf + HT_FMT_CH_KIND, (uint16_t)f->kind);
    ht_fmt_put32(buf + HT_FMT_CH_TID, f->tid);
    ht_fmt_put32(buf + HT_FMT_CH_N_RECORDS, f->n_records);
    ht_fmt_put64(buf + HT_FMT_CH_CHUNK_SEQ, f->chunk_seq);
    ht_fmt_put64(buf + HT_FMT_CH_FIRST_SEQ, f->first_seq);
    ht_fmt_put64(buf + HT_FMT_CH_FIRST_TS, f->first_ts);
    ht_fmt_put64(buf + HT_FMT_CH_LAST_TS, f->last_ts);
    ht_fmt_put64(buf + HT_FMT_CH_LOST, f->lost_so_far);
    ht_fmt_put32(buf + HT_FMT_CH_PAYLOAD, f->payload_size);
    ht_fmt_put32(buf + HT_FMT_CH_PAYLOAD_CRC,
                 ht_fmt_crc32c(buf + HT_FMT_CHUNK_HDR_SIZE, f->payload_size));
    ht_fmt_put32(buf + HT_FMT_CH_RESERVED, 0);
    ht_fmt_put32(buf + HT_FMT_CH_HEADER_CRC, ht_fmt_crc32c(buf, HT_FMT_CH_HEADER_CRC));
}

/* ht_fmt_put_varint unrolled for the lengths the common record's fields take (1-3 bytes:
 * time deltas, sizes, address deltas); the same bytes. */
static inline __attribute__((always_inline)) uint8_t *varint_put(uint8_t *p, uint64_t v)
{
    if (v < (1u << 7)) {
        p[0] = (uint8_t)v;
        return p + 1;
    }
    if (v < (1u << 14)) {
        p[0] = (uint8_t)(v | 0x80);
        p[1] = (uint8_t)(v >> 7);
        return p + 2;
    }
    if (v < (1u << 21)) {
        p[0] = (uint8_t)(v | 0x80);
        p[1] = (uint8_t)(v >> 7 | 0x80);
        p[2] = (uint8_t)(v >> 14);
        return p + 3;
    }
    return ht_fmt_put_varint(p, v);
}

/* An address field (FORMAT.md 6.2): delta against *reg, /16 when aligned. */
static inline __attribute__((always_inline)) uint8_t *addr_put(uint8_t *p, uint64_t *reg,
                                                               uint64_t address)
{
    uint64_t d = address - *reg;
    *reg = address;
    if ((d & 15u) == 0)
        return varint_put(p, ht_fmt_zigzag((int64_t)d >> 4) << 1);
    *p++ = 1;
    return varint_put(p, ht_fmt_zigzag((int64_t)d));
}

/* -- file header ------------------------------------------------------------------------- */

size_t ht__enc_file_header(uint8_t *buf, size_t cap, uint32_t pid, const char *cmdline,
                           size_t cmdline_size, uint64_t start_mono_ns, uint64_t start_realtime_ns)
{
    if (cmdline_size > HT_FMT_MAX_CMDLINE || cap < HT_FMT_FILE_HDR_SIZE + cmdline_size)
        return 0;
    memcpy(buf, HT_FMT_FILE_MAGIC, 8);
    ht_fmt_put16(buf + 8, HT_FMT_VERSION);
    ht_fmt_put16(buf + 10, HT_FMT_FILE_HDR_SIZE);
    ht_fmt_put32(buf + 12, pid);
    ht_fmt_put32(buf + 16, HT_FMT_CLOCK_MONO);
    ht_fmt_put32(buf + 20, (uint32_t)cmdline_size);
    ht_fmt_put64(buf + 24, start_mono_ns);
    ht_fmt_put64(buf + 32, start_realtime_ns);
    ht_fmt_put32(buf + 40, 0);
    if (cmdline_size > 0)
        memcpy(buf + HT_FMT_FILE_HDR_SIZE, cmdline, cmdline_size);
    ht_fmt_put32(buf + 44, ht_fmt_crc32c_2(buf, 44, buf + HT_FMT_FILE_HDR_SIZE, cmdline_size));
    return HT_FMT_FILE_HDR_SIZE + cmdline_size;
}

/* -- event chunks ------------------------------------------------------------------------ */

/* The per-chunk registers of FORMAT.md 5, encoder side. */
typedef struct enc_regs {
    uint64_t ts, addr, heap;
    uint64_t heaps[HT_FMT_HEAP_TABLE];
    uint32_t n_heaps;
} enc_regs;

/* Writes the heap selector for handle h (the H bit is already decided). */
static uint8_t *heap_put(uint8_t *p, enc_regs *r, uint64_t h)
{
    r->heap = h;
    for (uint32_t k = 0; k < r->n_heaps; k++) {
        if (r->heaps[k] == h)
            return ht_fmt_put_varint(p, (uint64_t)k + 1);
    }
    if (r->n_heaps < HT_FMT_HEAP_TABLE)
        r->heaps[r->n_heaps++] = h;
    *p++ = 0;
    return ht_fmt_put_varint(p, h);
}

static bool is_sourced(int t)
{
    return t == HT_FMT_T_ALLOC || t == HT_FMT_T_FREE || t == HT_FMT_T_REALLOC;
}

/* Encodes one event (slot e, and tail for REALLOC) at p: controls, tag, fields. */
static uint8_t *event_put(uint8_t *p, enc_regs *r, const ht_raw_event *e, const ht_raw_event *tail,
                          uint64_t heap, int t, uint64_t skip)
{
    if (e->flags != 0) {
        *p++ = HT_FMT_CTL_FLAGS;
        p = ht_fmt_put_varint(p, e->flags);
    }
    if (skip != 0) {
        *p++ = HT_FMT_CTL_SEQ_SKIP;
        p = ht_fmt_put_varint(p, skip);
    }
    if (e->ts_ns < r->ts) {
        *p++ = HT_FMT_CTL_TIME_BACK;
        p = ht_fmt_put_varint(p, r->ts - e->ts_ns);
        r->ts = e->ts_ns;
    }
    unsigned src = 0;
    if (is_sourced(t))
        src = e->source < HT_FMT_SRC_ESCAPE ? e->source : HT_FMT_SRC_ESCAPE;
    unsigned tag = (unsigned)t << HT_FMT_TAG_TYPE_SHIFT | src;
    if (e->stack_id != 0)
        tag |= HT_FMT_TAG_S;
    if (heap != r->heap)
        tag |= HT_FMT_TAG_H;
    *p++ = (uint8_t)tag;
    p = ht_fmt_put_varint(p, e->ts_ns - r->ts);
    r->ts = e->ts_ns;
    if (tag & HT_FMT_TAG_H)
        p = heap_put(p, r, heap);
    if (tag & HT_FMT_TAG_S)
        p = ht_fmt_put_varint(p, e->stack_id);
    if (src == HT_FMT_SRC_ESCAPE)
        p = ht_fmt_put_varint(p, e->source);
    switch (t) {
    case HT_FMT_T_ALLOC:
        p = ht_fmt_put_varint(p, e->b);
        p = addr_put(p, &r->addr, e->a);
        break;
    case HT_FMT_T_FREE:
        p = addr_put(p, &r->addr, e->a);
        break;
    case HT_FMT_T_REALLOC:
        p = addr_put(p, &r->addr, e->a);
        p = addr_put(p, &r->addr, e->b);
        p = ht_fmt_put_varint(p, tail->a);
        p = ht_fmt_put_varint(p, tail->b);
        break;
    case HT_FMT_T_CREATE:
        p = ht_fmt_put_varint(p, tail->a & 0xFFFFFFFFu);
        p = ht_fmt_put_varint(p, e->a);
        p = ht_fmt_put_varint(p, e->b);
        break;
    case HT_FMT_T_DESTROY:
        break;
    default: /* EXPAND, CONTRACT */
        p = addr_put(p, &r->addr, e->a);
        p = ht_fmt_put_varint(p, e->b);
        p = ht_fmt_put_varint(p, tail->a);
        break;
    }
    return p;
}

size_t ht__enc_chunk(ht_enc_stream *s, const ht_raw_event *slots, size_t n, uint8_t *buf,
                     size_t cap, size_t *chunk_size, size_t *n_bad)
{
    *chunk_size = 0;
    if (n == 0 || cap < HT_FMT_CHUNK_HDR_SIZE + HT_ENC_EVENT_MAX)
        return 0;
    if (cap > HT_FMT_CHUNK_HDR_SIZE + (size_t)HT_FMT_MAX_PAYLOAD)
        cap = HT_FMT_CHUNK_HDR_SIZE + (size_t)HT_FMT_MAX_PAYLOAD;

    uint8_t *const payload = buf + HT_FMT_CHUNK_HDR_SIZE;
    uint8_t *const limit = buf + cap - HT_ENC_EVENT_MAX; /* an event starting here fits */
    uint8_t *p = payload;
    enc_regs r;
    r.ts = 0;
    r.addr = 0;
    r.heap = 0;
    r.n_heaps = 0;
    uint64_t seq = s->next_seq, first_seq = 0, first_ts = 0, skip = 0;
    uint32_t n_rec = 0;
    size_t bad = 0, i = 0;

    while (i < n && p <= limit) {
        const ht_raw_event *e = &slots[i];
        /* The common record, the same bytes as event_put writes for it: an ALLOC or FREE
         * after the first record, no flags, no pending skip, time not going back, the same
         * heap as the record before, a Source that needs no escape. */
        unsigned op = e->type;
        if (__builtin_expect((op == HT_EVENT_HEAP_ALLOC || op == HT_EVENT_HEAP_FREE) &&
                                 n_rec != 0 && skip == 0 && e->flags == 0 && e->ts_ns >= r.ts &&
                                 s->raw_heap == r.heap && e->source < HT_FMT_SRC_ESCAPE,
                             1)) {
            unsigned t = op == HT_EVENT_HEAP_ALLOC ? HT_FMT_T_ALLOC : HT_FMT_T_FREE;
            unsigned tag = t << HT_FMT_TAG_TYPE_SHIFT | e->source;
            if (e->stack_id != 0)
                tag |= HT_FMT_TAG_S;
            *p++ = (uint8_t)tag;
            p = varint_put(p, e->ts_ns - r.ts);
            r.ts = e->ts_ns;
            if (e->stack_id != 0)
                p = varint_put(p, e->stack_id);
            if (op == HT_EVENT_HEAP_ALLOC)
                p = varint_put(p, e->b);
            p = addr_put(p, &r.addr, e->a);
            seq++;
            n_rec++;
            i++;
            continue;
        }
        if (e->type == HT_RAW_SEQ_SKIP) {
            skip += e->a;
            i++;
            continue;
        }
        if (e->type == HT_RAW_HEAP) {
            s->raw_heap = e->a;
            i++;
            continue;
        }
        int t = ht_fmt_type_from_opcode(e->type);
        const ht_raw_event *tail = NULL;
        size_t used = 1;
        if (t == HT_FMT_T_REALLOC || t == HT_FMT_T_CREATE || t == HT_FMT_T_EXPAND ||
            t == HT_FMT_T_CONTRACT) {
            if (i + 1 < n && slots[i + 1].type == HT_RAW_TAIL) {
                tail = &slots[i + 1];
                used = 2;
            } else {
                t = -1;
            }
        }
        if (t < 0) {
            bad++;
            i++;
            continue;
        }
        if (n_rec == 0) {
            seq += skip; /* folded into first_seq: no control record needed */
            skip = 0;
            first_seq = seq;
            first_ts = e->ts_ns;
            r.ts = first_ts;
        }
        p = event_put(p, &r, e, tail, s->raw_heap, t, skip);
        seq += skip + 1;
        skip = 0;
        n_rec++;
        i += used;
    }
    seq += skip; /* a trailing skip moves the next chunk's first_seq */
    s->next_seq = seq;
    if (n_bad != NULL)
        *n_bad = bad;
    if (n_rec == 0)
        return i;

    chunk_fields f = {.kind = HT_FMT_KIND_EVENTS,
                      .tid = s->tid,
                      .n_records = n_rec,
                      .chunk_seq = s->n_chunks,
                      .first_seq = first_seq,
                      .first_ts = first_ts,
                      .last_ts = r.ts,
                      .lost_so_far = s->lost_so_far,
                      .payload_size = (uint32_t)(p - payload)};
    chunk_header_write(buf, &f);
    s->n_chunks++;
    s->n_events += n_rec;
    *chunk_size = HT_FMT_CHUNK_HDR_SIZE + f.payload_size;
    return i;
}

size_t ht__enc_lost_chunk(ht_enc_stream *s, uint8_t *buf, size_t cap)
{
    if (cap < HT_FMT_CHUNK_HDR_SIZE)
        return 0;
    chunk_fields f = {.kind = HT_FMT_KIND_EVENTS,
                      .tid = s->tid,
                      .chunk_seq = s->n_chunks,
                      .first_seq = s->next_seq,
                      .lost_so_far = s->lost_so_far};
    chunk_header_write(buf, &f);
    s->n_chunks++;
    return HT_FMT_CHUNK_HDR_SIZE;
}

size_t ht__enc_raw_from_event(const ht_event *ev, uint32_t stack_id, uint64_t *next_seq,
                              ht_raw_event out[HT_RAW_MAX])
{
    int t = ht_fmt_type_from_opcode(ev->type);
    if (t < 0 || ev->sequence < *next_seq)
        return 0;
    size_t k = 0;
    memset(out, 0, HT_RAW_MAX * sizeof out[0]);
    if (ev->sequence > *next_seq) {
        out[k].type = HT_RAW_SEQ_SKIP;
        out[k].a = ev->sequence - *next_seq;
        k++;
    }
    out[k].type = HT_RAW_HEAP;
    out[k].a = ev->heap_handle;
    k++;
    ht_raw_event *e = &out[k++];
    ht_raw_event *tail = &out[k];
    e->ts_ns = ev->timestamp_ns;
    e->stack_id = stack_id;
    e->flags = ev->flags;
    e->type = (uint8_t)ev->type;
    tail->type = HT_RAW_TAIL;
    uint32_t source = 0;
    switch (t) {
    case HT_FMT_T_ALLOC:
        e->a = ev->alloc.address;
        e->b = ev->alloc.size;
        source = ev->alloc.source;
        break;
    case HT_FMT_T_FREE:
        e->a = ev->free.address;
        source = ev->free.source;
        break;
    case HT_FMT_T_REALLOC:
        e->a = ev->realloc.new_address;
        e->b = ev->realloc.old_address;
        tail->a = ev->realloc.new_size;
        tail->b = ev->realloc.old_size;
        source = ev->realloc.source;
        k++;
        break;
    case HT_FMT_T_CREATE:
        e->a = ev->create.reserved_space;
        e->b = ev->create.committed_space;
        tail->a = ev->create.flags;
        k++;
        break;
    case HT_FMT_T_DESTROY:
        break;
    default: /* EXPAND and CONTRACT share a layout */
        e->a = ev->expand.address;
        e->b = ev->expand.size;
        tail->a = ev->expand.committed_space;
        k++;
        break;
    }
    if (source > 0xFF)
        return 0;
    e->source = (uint8_t)source;
    *next_seq = ev->sequence + 1;
    return k;
}

/* -- metadata and end chunks ------------------------------------------------------------- */

void ht__enc_meta_begin(ht_enc_meta *m, uint8_t *buf, size_t cap, uint64_t chunk_seq)
{
    m->buf = buf;
    m->cap = cap;
    if (m->cap > HT_FMT_CHUNK_HDR_SIZE + (size_t)HT_FMT_MAX_PAYLOAD)
        m->cap = HT_FMT_CHUNK_HDR_SIZE + (size_t)HT_FMT_MAX_PAYLOAD;
    m->size = HT_FMT_CHUNK_HDR_SIZE;
    m->n_records = 0;
    m->chunk_seq = chunk_seq;
}

/* True when need more bytes fit in m. */
static bool meta_room(const ht_enc_meta *m, size_t need)
{
    return m->cap >= m->size && m->cap - m->size >= need;
}

bool ht__enc_meta_module(ht_enc_meta *m, uint64_t ts_ns, uint64_t base, uint64_t size,
                         const char *path, size_t path_size, const uint8_t *build_id,
                         size_t build_id_size)
{
    if (path_size > HT_FMT_MAX_PATH || build_id_size > HT_FMT_MAX_BUILD_ID ||
        !meta_room(m, 1 + 5 * HT_FMT_VARINT_MAX + path_size + build_id_size))
        return false;
    uint8_t *p = m->buf + m->size;
    *p++ = HT_FMT_META_MODULE;
    p = ht_fmt_put_varint(p, ts_ns);
    p = ht_fmt_put_varint(p, base);
    p = ht_fmt_put_varint(p, size);
    p = ht_fmt_put_varint(p, path_size);
    if (path_size > 0)
        memcpy(p, path, path_size);
    p += path_size;
    p = ht_fmt_put_varint(p, build_id_size);
    if (build_id_size > 0)
        memcpy(p, build_id, build_id_size);
    p += build_id_size;
    m->size = (size_t)(p - m->buf);
    m->n_records++;
    return true;
}

bool ht__enc_meta_unload(ht_enc_meta *m, uint64_t ts_ns, uint64_t base)
{
    if (!meta_room(m, 1 + 2 * HT_FMT_VARINT_MAX))
        return false;
    uint8_t *p = m->buf + m->size;
    *p++ = HT_FMT_META_UNLOAD;
    p = ht_fmt_put_varint(p, ts_ns);
    p = ht_fmt_put_varint(p, base);
    m->size = (size_t)(p - m->buf);
    m->n_records++;
    return true;
}

bool ht__enc_meta_stack(ht_enc_meta *m, uint32_t id, const uint64_t *frames, size_t n_frames)
{
    if (id == 0 || n_frames == 0 || n_frames > HT_FMT_MAX_FRAMES ||
        !meta_room(m, 1 + (2 + n_frames) * HT_FMT_VARINT_MAX))
        return false;
    uint8_t *p = m->buf + m->size;
    *p++ = HT_FMT_META_STACK;
    p = ht_fmt_put_varint(p, id);
    p = ht_fmt_put_varint(p, n_frames);
    p = ht_fmt_put_varint(p, frames[0]);
    for (size_t i = 1; i < n_frames; i++)
        p = ht_fmt_put_varint(p, ht_fmt_zigzag((int64_t)(frames[i] - frames[i - 1])));
    m->size = (size_t)(p - m->buf);
    m->n_records++;
    return true;
}

bool ht__enc_meta_marker(ht_enc_meta *m, uint64_t ts_ns, uint32_t tid, const char *text,
                         size_t text_size)
{
    if (text_size > HT_FMT_MAX_MARKER || !meta_room(m, 1 + 3 * HT_FMT_VARINT_MAX + text_size))
        return false;
    uint8_t *p = m->buf + m->size;
    *p++ = HT_FMT_META_MARKER;
    p = ht_fmt_put_varint(p, ts_ns);
    p = ht_fmt_put_varint(p, tid);
    p = ht_fmt_put_varint(p, text_size);
    if (text_size > 0)
        memcpy(p, text, text_size);
    p += text_size;
    m->size = (size_t)(p - m->buf);
    m->n_records++;
    return true;
}

size_t ht__enc_meta_end(ht_enc_meta *m)
{
    if (m->cap < HT_FMT_CHUNK_HDR_SIZE)
        return 0;
    chunk_fields f = {.kind = HT_FMT_KIND_META,
                      .n_records = m->n_records,
                      .chunk_seq = m->chunk_seq,
                      .payload_size = (uint32_t)(m->size - HT_FMT_CHUNK_HDR_SIZE)};
    chunk_header_write(m->buf, &f);
    return m->size;
}

size_t ht__enc_end(uint8_t *buf, size_t cap, uint64_t chunk_seq, uint64_t end_ts_ns,
                   const ht_enc_thread_total *threads, size_t n_threads)
{
    size_t need = HT_FMT_CHUNK_HDR_SIZE + 1 + 2 * HT_FMT_VARINT_MAX;
    if (n_threads > (HT_FMT_MAX_PAYLOAD - need) / (4 * HT_FMT_VARINT_MAX))
        return 0;
    need += n_threads * 4 * HT_FMT_VARINT_MAX;
    if (cap < need)
        return 0;
    uint8_t *const payload = buf + HT_FMT_CHUNK_HDR_SIZE;
    uint8_t *p = payload;
    *p++ = HT_FMT_END_SUMMARY;
    p = ht_fmt_put_varint(p, end_ts_ns);
    p = ht_fmt_put_varint(p, n_threads);
    for (size_t i = 0; i < n_threads; i++) {
        p = ht_fmt_put_varint(p, threads[i].tid);
        p = ht_fmt_put_varint(p, threads[i].n_events);
        p = ht_fmt_put_varint(p, threads[i].n_lost);
        p = ht_fmt_put_varint(p, threads[i].n_chunks);
    }
    chunk_fields f = {.kind = HT_FMT_KIND_END,
                      .n_records = 1,
                      .chunk_seq = chunk_seq,
                      .payload_size = (uint32_t)(p - payload)};
    chunk_header_write(buf, &f);
    return HT_FMT_CHUNK_HDR_SIZE + f.payload_size;
}
