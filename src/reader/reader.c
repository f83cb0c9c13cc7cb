/* reader.c — opening a trace (file or memory), the scan pass (file header, every chunk
 * header and checksum, metadata and end chunks, per-thread bookkeeping, the damage point),
 * the public getters and close. It owns every allocation of the reader; it never trusts a
 * length before checking it against the bytes that remain, and never prints. */
#include "reader/internal.h"

#include "trace/format.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *const ht_reader_status_name[HT_READER_N_STATUS] = {
    [HT_READER_OK] = "ok",
    [HT_READER_IO] = "io-error",
    [HT_READER_NOMEM] = "out-of-memory",
    [HT_READER_INVALID_ARG] = "invalid-argument",
    [HT_READER_NOT_A_TRACE] = "not-a-trace",
    [HT_READER_BAD_VERSION] = "bad-version",
    [HT_READER_BAD_HEADER] = "bad-file-header",
    [HT_READER_TRUNCATED] = "truncated",
    [HT_READER_BAD_CHUNK] = "bad-chunk-header",
    [HT_READER_BAD_CHECKSUM] = "bad-checksum",
    [HT_READER_BAD_RECORD] = "bad-record",
    [HT_READER_BAD_SEQUENCE] = "bad-sequence",
    [HT_READER_TRAILING_DATA] = "trailing-data",
};

void ht__rd_fail(ht_reader *r, ht_reader_status_code code, uint64_t off, const char *fmt, ...)
{
    if (r->status != HT_READER_OK)
        return;
    r->status = code;
    r->status_off = off;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->message, sizeof r->message, fmt, ap);
    va_end(ap);
}

/* Grows *buf to hold at least need elements of elem bytes. */
static bool grow(void **buf, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return true;
    size_t n = *cap < 16 ? 16 : *cap;
    while (n < need)
        n *= 2;
    if (n > SIZE_MAX / elem)
        return false;
    void *p = realloc(*buf, n * elem);
    if (p == NULL)
        return false;
    *buf = p;
    *cap = n;
    return true;
}

const uint8_t *ht__rd_fetch(ht_reader *r, uint64_t off, size_t len, uint8_t **buf, size_t *cap)
{
    if (r->mem != NULL)
        return r->mem + off;
    if (!grow((void **)buf, cap, len < 1 ? 1 : len, 1)) {
        ht__rd_fail(r, HT_READER_NOMEM, off, "out of memory for %zu bytes at offset %llu", len,
                    (unsigned long long)off);
        return NULL;
    }
    size_t got = 0;
    while (got < len) {
        ssize_t k = pread(r->fd, *buf + got, len - got, (off_t)(off + got));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            ht__rd_fail(r, k == 0 ? HT_READER_TRUNCATED : HT_READER_IO, off + got,
                        "read at offset %llu failed: %s", (unsigned long long)(off + got),
                        k == 0 ? "file shrank while open" : strerror(errno));
            return NULL;
        }
        got += (size_t)k;
    }
    return *buf;
}

bool ht__rd_chunk_parse(ht_reader *r, const uint8_t *h, uint64_t off, rd_chunk *c)
{
    const char *why = NULL;
    if (memcmp(h, HT_FMT_CHUNK_MAGIC, 4) != 0)
        why = "bad chunk magic";
    else if (ht_fmt_get32(h + HT_FMT_CH_HEADER_CRC) != ht_fmt_crc32c(h, HT_FMT_CH_HEADER_CRC))
        why = "chunk header checksum mismatch";
    if (why != NULL) {
        ht__rd_fail(r, HT_READER_BAD_CHUNK, off, "%s at offset %llu", why, (unsigned long long)off);
        return false;
    }
    c->off = off;
    c->kind = ht_fmt_get16(h + HT_FMT_CH_KIND);
    c->tid = ht_fmt_get32(h + HT_FMT_CH_TID);
    c->n_records = ht_fmt_get32(h + HT_FMT_CH_N_RECORDS);
    c->chunk_seq = ht_fmt_get64(h + HT_FMT_CH_CHUNK_SEQ);
    c->first_seq = ht_fmt_get64(h + HT_FMT_CH_FIRST_SEQ);
    c->first_ts = ht_fmt_get64(h + HT_FMT_CH_FIRST_TS);
    c->last_ts = ht_fmt_get64(h + HT_FMT_CH_LAST_TS);
    c->lost_so_far = ht_fmt_get64(h + HT_FMT_CH_LOST);
    c->payload_size = ht_fmt_get32(h + HT_FMT_CH_PAYLOAD);
    c->payload_crc = ht_fmt_get32(h + HT_FMT_CH_PAYLOAD_CRC);
    uint16_t version = ht_fmt_get16(h + HT_FMT_CH_VERSION);
    if (version != HT_FMT_VERSION)
        why = "unknown chunk version";
    else if (c->kind < HT_FMT_KIND_EVENTS || c->kind > HT_FMT_KIND_END)
        why = "unknown chunk kind";
    else if (ht_fmt_get32(h + HT_FMT_CH_RESERVED) != 0)
        why = "reserved field not zero";
    else if (c->payload_size > HT_FMT_MAX_PAYLOAD)
        why = "payload_size beyond 16 MiB";
    else if (c->n_records > c->payload_size)
        why = "more records than payload bytes";
    else if ((c->kind == HT_FMT_KIND_EVENTS) != (c->tid != 0))
        why = "tid must be nonzero exactly for event chunks";
    if (why != NULL) {
        ht__rd_fail(r, HT_READER_BAD_CHUNK, off, "%s in the chunk header at offset %llu", why,
                    (unsigned long long)off);
        return false;
    }
    return true;
}

/* -- metadata ----------------------------------------------------------------------------- */

static char *dup_bytes(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s != NULL) {
        if (n > 0)
            memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

/* Decodes a metadata chunk: with apply false only checks it; with apply true (after a
 * successful check) adds its records to the tables. Returns 0, -1 (bad record: *bad_at and
 * *why set) or -2 (out of memory). */
static int meta_decode(ht_reader *r, const rd_chunk *c, const uint8_t *payload, bool apply,
                       const uint8_t **bad_at, const char **why)
{
    const uint8_t *p = payload, *const end = payload + c->payload_size;
    uint32_t next_stack = r->stacks.n + 1;
    for (uint32_t k = 0; k < c->n_records; k++) {
        const uint8_t *rec = p;
        *bad_at = rec;
        if (p >= end) {
            *why = "fewer records than the header's n_records";
            return -1;
        }
        unsigned tag = *p++;
        uint64_t ts, base, size, len, v;
        if (tag == HT_FMT_META_MODULE) {
            if (!ht_fmt_get_varint(&p, end, &ts) || !ht_fmt_get_varint(&p, end, &base) ||
                !ht_fmt_get_varint(&p, end, &size) || !ht_fmt_get_varint(&p, end, &len) ||
                len > HT_FMT_MAX_PATH || len > (uint64_t)(end - p))
                goto cut;
            const uint8_t *path = p;
            size_t path_size = (size_t)len;
            p += len;
            if (!ht_fmt_get_varint(&p, end, &len) || len > HT_FMT_MAX_BUILD_ID ||
                len > (uint64_t)(end - p))
                goto cut;
            if (apply) {
                if (!grow((void **)&r->modules, &r->cap_modules, r->n_modules + 1,
                          sizeof *r->modules))
                    return -2;
                ht_reader_module *m = &r->modules[r->n_modules];
                memset(m, 0, sizeof *m);
                m->load_ts_ns = ts;
                m->base = base;
                m->size = size;
                m->path = dup_bytes(path, path_size);
                if (m->path == NULL)
                    return -2;
                if (len > 0)
                    memcpy(m->build_id, p, (size_t)len);
                m->build_id_size = (uint32_t)len;
                r->n_modules++;
            }
            p += len;
        } else if (tag == HT_FMT_META_STACK) {
            uint64_t id, n_frames, f;
            if (!ht_fmt_get_varint(&p, end, &id) || !ht_fmt_get_varint(&p, end, &n_frames))
                goto cut;
            if (id != next_stack) {
                *why = "stack ids must be dense: not the previous id + 1";
                return -1;
            }
            if (n_frames == 0 || n_frames > HT_FMT_MAX_FRAMES) {
                *why = "stack frame count out of 1..1024";
                return -1;
            }
            rd_stacks *s = &r->stacks;
            if (apply &&
                (!grow((void **)&s->frames, &s->cap_frames, s->n_frames + n_frames,
                       sizeof *s->frames) ||
                 !grow((void **)&s->def_off, &s->cap, (size_t)id, sizeof *s->def_off) ||
                 !grow((void **)&s->start, &s->cap_start, (size_t)id + 1, sizeof *s->start)))
                return -2;
            for (uint64_t i = 0; i < n_frames; i++) {
                if (!ht_fmt_get_varint(&p, end, &v))
                    goto cut;
                f = i == 0 ? v : f + (uint64_t)ht_fmt_unzigzag(v);
                if (apply)
                    s->frames[s->n_frames + i] = f;
            }
            if (apply) {
                s->start[0] = 0;
                s->n_frames += (size_t)n_frames;
                s->start[id] = s->n_frames;
                s->def_off[id - 1] = c->off;
                s->n = (uint32_t)id;
            }
            next_stack++;
        } else if (tag == HT_FMT_META_UNLOAD) {
            if (!ht_fmt_get_varint(&p, end, &ts) || !ht_fmt_get_varint(&p, end, &base))
                goto cut;
            for (size_t i = r->n_modules; apply && i > 0; i--) {
                if (r->modules[i - 1].base == base && r->modules[i - 1].unload_ts_ns == 0) {
                    r->modules[i - 1].unload_ts_ns = ts;
                    break;
                }
            }
        } else if (tag == HT_FMT_META_MARKER) {
            if (!ht_fmt_get_varint(&p, end, &ts) || !ht_fmt_get_varint(&p, end, &v) ||
                !ht_fmt_get_varint(&p, end, &len) || v > 0xFFFFFFFFu || len > HT_FMT_MAX_MARKER ||
                len > (uint64_t)(end - p))
                goto cut;
            if (apply) {
                if (!grow((void **)&r->markers, &r->cap_markers, r->n_markers + 1,
                          sizeof *r->markers))
                    return -2;
                ht_reader_marker *m = &r->markers[r->n_markers];
                m->ts_ns = ts;
                m->tid = (uint32_t)v;
                m->text = dup_bytes(p, (size_t)len);
                if (m->text == NULL)
                    return -2;
                r->n_markers++;
            }
            p += len;
        } else {
            *why = "unknown metadata record tag";
            return -1;
        }
        continue;
    cut:
        *bad_at = rec;
        *why = "metadata record cut off or a field out of range";
        return -1;
    }
    if (p != end) {
        *bad_at = p;
        *why = "bytes after the header's n_records records";
        return -1;
    }
    return 0;
}

ssize_t ht__rd_thread_find(ht_reader *r, uint32_t tid)
{
    if (r->last_thread < r->n_threads && r->threads[r->last_thread].tid == tid)
        return (ssize_t)r->last_thread;
    for (size_t i = 0; i < r->n_threads; i++) {
        if (r->threads[i].tid == tid) {
            r->last_thread = i;
            return (ssize_t)i;
        }
    }
    return -1;
}

static ssize_t thread_add(ht_reader *r, uint32_t tid)
{
    if (!grow((void **)&r->threads, &r->cap_threads, r->n_threads + 1, sizeof *r->threads) ||
        !grow((void **)&r->cursors, &r->cap_cursors, r->n_threads + 1, sizeof *r->cursors))
        return -1;
    size_t i = r->n_threads++;
    memset(&r->threads[i], 0, sizeof r->threads[i]);
    memset(&r->cursors[i], 0, sizeof r->cursors[i]);
    r->threads[i].tid = tid;
    r->cursors[i].tid = tid;
    r->cursors[i].first_off = UINT64_MAX;
    r->cursors[i].scan_off = UINT64_MAX;
    r->last_thread = i;
    return (ssize_t)i;
}

/* The end chunk: the summary record. Returns 0, -1 (bad) or -2 (no memory). */
static int end_decode(ht_reader *r, const rd_chunk *c, const uint8_t *payload,
                      const uint8_t **bad_at, const char **why)
{
    const uint8_t *p = payload, *const end = payload + c->payload_size;
    uint64_t end_ts, n, tid, n_events, n_lost, n_chunks;
    *bad_at = p;
    if (c->n_records != 1 || p >= end || *p++ != HT_FMT_END_SUMMARY) {
        *why = "the end chunk must hold exactly one summary record";
        return -1;
    }
    if (!ht_fmt_get_varint(&p, end, &end_ts) || !ht_fmt_get_varint(&p, end, &n) ||
        n > (uint64_t)(end - p) / 4) {
        *why = "summary record cut off";
        return -1;
    }
    const uint8_t *list = p;
    for (int apply = 0; apply < 2; apply++) { /* check everything before changing anything */
        p = list;
        for (uint64_t i = 0; i < n; i++) {
            if (!ht_fmt_get_varint(&p, end, &tid) || !ht_fmt_get_varint(&p, end, &n_events) ||
                !ht_fmt_get_varint(&p, end, &n_lost) || !ht_fmt_get_varint(&p, end, &n_chunks) ||
                tid == 0 || tid > 0xFFFFFFFFu) {
                *why = "summary thread entry cut off or out of range";
                return -1;
            }
            if (!apply)
                continue;
            ssize_t t = ht__rd_thread_find(r, (uint32_t)tid);
            if (t < 0 && (t = thread_add(r, (uint32_t)tid)) < 0)
                return -2;
            if (r->threads[t].n_lost < n_lost)
                r->threads[t].n_lost = n_lost;
        }
        if (p != end) {
            *bad_at = p;
            *why = "bytes after the summary record";
            return -1;
        }
    }
    r->info.complete = true;
    r->info.end_ts_ns = end_ts;
    return 0;
}

/* Checks one whole chunk (header already parsed, payload at pl) and takes it in. */
static bool chunk_take(ht_reader *r, const rd_chunk *c, const uint8_t *pl)
{
    if (ht_fmt_crc32c(pl, c->payload_size) != c->payload_crc) {
        ht__rd_fail(r, HT_READER_BAD_CHECKSUM, c->off,
                    "payload checksum mismatch in the chunk at offset %llu (%u payload bytes)",
                    (unsigned long long)c->off, c->payload_size);
        return false;
    }
    if (c->kind == HT_FMT_KIND_EVENTS) {
        ssize_t t = ht__rd_thread_find(r, c->tid);
        uint64_t expect = t < 0 ? 0 : r->threads[t].n_chunks;
        if (c->chunk_seq != expect) {
            ht__rd_fail(r, HT_READER_BAD_SEQUENCE, c->off,
                        "chunk at offset %llu of tid %u has chunk_seq %llu, expected %llu",
                        (unsigned long long)c->off, c->tid, (unsigned long long)c->chunk_seq,
                        (unsigned long long)expect);
            return false;
        }
        if (t < 0 && (t = thread_add(r, c->tid)) < 0)
            goto nomem;
        ht_reader_thread *th = &r->threads[t];
        rd_cursor *cu = &r->cursors[t];
        if (cu->first_off == UINT64_MAX) {
            cu->first_off = c->off;
            cu->scan_off = c->off;
        }
        th->n_chunks++;
        th->n_events += c->n_records;
        if (th->n_lost < c->lost_so_far)
            th->n_lost = c->lost_so_far;
        r->info.n_events += c->n_records;
        r->info.n_chunks++;
        return true;
    }
    if (c->chunk_seq != r->n_meta_chunks) {
        ht__rd_fail(r, HT_READER_BAD_SEQUENCE, c->off,
                    "metadata chunk at offset %llu has chunk_seq %llu, expected %llu",
                    (unsigned long long)c->off, (unsigned long long)c->chunk_seq,
                    (unsigned long long)r->n_meta_chunks);
        return false;
    }
    const uint8_t *bad_at = pl;
    const char *why = "";
    int rc = c->kind == HT_FMT_KIND_META ? meta_decode(r, c, pl, false, &bad_at, &why)
                                         : end_decode(r, c, pl, &bad_at, &why);
    if (rc == 0 && c->kind == HT_FMT_KIND_META)
        rc = meta_decode(r, c, pl, true, &bad_at, &why);
    if (rc == -2)
        goto nomem;
    if (rc < 0) {
        uint64_t at = c->off + HT_FMT_CHUNK_HDR_SIZE + (uint64_t)(bad_at - pl);
        ht__rd_fail(r, HT_READER_BAD_RECORD, at,
                    "bad record at offset %llu in the %s chunk at %llu: %s", (unsigned long long)at,
                    c->kind == HT_FMT_KIND_META ? "metadata" : "end", (unsigned long long)c->off,
                    why);
        return false;
    }
    r->n_meta_chunks++;
    r->info.n_chunks++;
    return true;
nomem:
    ht__rd_fail(r, HT_READER_NOMEM, c->off, "out of memory taking the chunk at offset %llu",
                (unsigned long long)c->off);
    return false;
}

/* The scan: every chunk in file order until the end or the first damage. */
static void scan(ht_reader *r)
{
    uint64_t off = r->data_off;
    for (;;) {
        if (off == r->size) {
            if (!r->info.complete)
                ht__rd_fail(r, HT_READER_TRUNCATED, off,
                            "file ends at offset %llu after a whole chunk but without the "
                            "end-of-trace summary (cut off, or the writer did not finish)",
                            (unsigned long long)off);
            break;
        }
        if (r->info.complete) {
            ht__rd_fail(r, HT_READER_TRAILING_DATA, off,
                        "%llu bytes after the end-of-trace summary at offset %llu",
                        (unsigned long long)(r->size - off), (unsigned long long)off);
            break;
        }
        uint64_t left = r->size - off;
        if (left < HT_FMT_CHUNK_HDR_SIZE) {
            ht__rd_fail(r, HT_READER_TRUNCATED, off,
                        "chunk header at offset %llu cut off: %llu of %u bytes",
                        (unsigned long long)off, (unsigned long long)left, HT_FMT_CHUNK_HDR_SIZE);
            break;
        }
        uint8_t hbuf[HT_FMT_CHUNK_HDR_SIZE];
        uint8_t *hb = hbuf;
        size_t hcap = sizeof hbuf;
        const uint8_t *h = ht__rd_fetch(r, off, HT_FMT_CHUNK_HDR_SIZE, &hb, &hcap);
        rd_chunk c;
        if (h == NULL || !ht__rd_chunk_parse(r, h, off, &c))
            break;
        if (c.payload_size > left - HT_FMT_CHUNK_HDR_SIZE) {
            ht__rd_fail(r, HT_READER_TRUNCATED, off,
                        "chunk at offset %llu cut off: payload of %u bytes, %llu remain",
                        (unsigned long long)off, c.payload_size,
                        (unsigned long long)(left - HT_FMT_CHUNK_HDR_SIZE));
            break;
        }
        const uint8_t *pl = ht__rd_fetch(r, off + HT_FMT_CHUNK_HDR_SIZE, c.payload_size,
                                         &r->scratch, &r->scratch_cap);
        if (pl == NULL || !chunk_take(r, &c, pl))
            break;
        off += HT_FMT_CHUNK_HDR_SIZE + (uint64_t)c.payload_size;
    }
    r->valid_end = off;
}

/* The file header (FORMAT.md 3). */
static ht_reader_status_code header_read(ht_reader *r)
{
    uint8_t hbuf[HT_FMT_FILE_HDR_SIZE];
    uint8_t *hb = hbuf;
    size_t hcap = sizeof hbuf;
    if (r->size < HT_FMT_FILE_HDR_SIZE) {
        size_t n = r->size < 8 ? (size_t)r->size : 8;
        const uint8_t *m = n > 0 ? ht__rd_fetch(r, 0, n, &hb, &hcap) : NULL;
        if (n > 0 && m == NULL)
            return r->status;
        if (n == 0 || memcmp(m, HT_FMT_FILE_MAGIC, n) != 0)
            ht__rd_fail(r, HT_READER_NOT_A_TRACE, 0, "not a heaptrail trace (%llu bytes)",
                        (unsigned long long)r->size);
        else
            ht__rd_fail(r, HT_READER_TRUNCATED, r->size, "file header cut off at %llu bytes",
                        (unsigned long long)r->size);
        return r->status;
    }
    const uint8_t *h = ht__rd_fetch(r, 0, HT_FMT_FILE_HDR_SIZE, &hb, &hcap);
    if (h == NULL)
        return r->status;
    if (memcmp(h, HT_FMT_FILE_MAGIC, 8) != 0) {
        ht__rd_fail(r, HT_READER_NOT_A_TRACE, 0, "not a heaptrail trace (bad magic)");
        return r->status;
    }
    uint16_t version = ht_fmt_get16(h + 8);
    if (version != HT_FMT_VERSION) {
        ht__rd_fail(r, HT_READER_BAD_VERSION, 8, "format version %u, this reader knows %u", version,
                    HT_FMT_VERSION);
        return r->status;
    }
    uint32_t cmd_size = ht_fmt_get32(h + 20);
    const char *why = NULL;
    if (ht_fmt_get16(h + 10) != HT_FMT_FILE_HDR_SIZE)
        why = "header_size is not 48";
    else if (cmd_size > HT_FMT_MAX_CMDLINE)
        why = "cmdline_size beyond 1 MiB";
    else if (ht_fmt_get32(h + 16) != HT_FMT_CLOCK_MONO)
        why = "unknown clock_id";
    else if (ht_fmt_get32(h + 40) != 0)
        why = "flags not zero";
    if (why != NULL) {
        ht__rd_fail(r, HT_READER_BAD_HEADER, 0, "damaged file header: %s", why);
        return r->status;
    }
    if (cmd_size > r->size - HT_FMT_FILE_HDR_SIZE) {
        ht__rd_fail(r, HT_READER_TRUNCATED, r->size,
                    "file header cut off: command line of %u bytes, %llu remain", cmd_size,
                    (unsigned long long)(r->size - HT_FMT_FILE_HDR_SIZE));
        return r->status;
    }
    uint8_t fixed[HT_FMT_FILE_HDR_SIZE];
    memcpy(fixed, h, sizeof fixed);
    const uint8_t *cmd =
        ht__rd_fetch(r, HT_FMT_FILE_HDR_SIZE, cmd_size, &r->scratch, &r->scratch_cap);
    if (cmd == NULL)
        return r->status;
    if (ht_fmt_get32(fixed + 44) != ht_fmt_crc32c_2(fixed, 44, cmd, cmd_size)) {
        ht__rd_fail(r, HT_READER_BAD_HEADER, 0, "damaged file header: checksum mismatch");
        return r->status;
    }
    r->cmdline = dup_bytes(cmd, cmd_size);
    if (r->cmdline == NULL) {
        ht__rd_fail(r, HT_READER_NOMEM, 0, "out of memory");
        return r->status;
    }
    r->info.version = version;
    r->info.pid = ht_fmt_get32(fixed + 12);
    r->info.clock_id = ht_fmt_get32(fixed + 16);
    r->info.start_mono_ns = ht_fmt_get64(fixed + 24);
    r->info.start_realtime_ns = ht_fmt_get64(fixed + 32);
    r->info.cmdline = r->cmdline;
    r->info.cmdline_size = cmd_size;
    r->data_off = HT_FMT_FILE_HDR_SIZE + (uint64_t)cmd_size;
    return HT_READER_OK;
}

static ht_reader_status_code open_common(ht_reader *r, ht_reader **out)
{
    ht_reader_status_code rc = header_read(r);
    if (rc != HT_READER_OK) {
        ht_reader_close(r);
        return rc;
    }
    scan(r);
    if (r->status == HT_READER_NOMEM || r->status == HT_READER_IO) {
        rc = r->status;
        ht_reader_close(r);
        return rc;
    }
    *out = r;
    return HT_READER_OK;
}

ht_reader_status_code ht_reader_open(const char *path, ht_reader **out)
{
    if (out == NULL)
        return HT_READER_INVALID_ARG;
    *out = NULL;
    if (path == NULL)
        return HT_READER_INVALID_ARG;
    ht_reader *r = calloc(1, sizeof *r);
    if (r == NULL)
        return HT_READER_NOMEM;
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (r->fd < 0 || fstat(r->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        int err = errno;
        if (r->fd >= 0 && !S_ISREG(st.st_mode))
            err = EINVAL;
        if (r->fd >= 0)
            close(r->fd);
        free(r);
        errno = err;
        return HT_READER_IO;
    }
    r->size = (uint64_t)st.st_size;
    return open_common(r, out);
}

ht_reader_status_code ht_reader_open_memory(const void *data, size_t size, ht_reader **out)
{
    if (out == NULL)
        return HT_READER_INVALID_ARG;
    *out = NULL;
    if (data == NULL && size > 0)
        return HT_READER_INVALID_ARG;
    static const uint8_t empty[1];
    ht_reader *r = calloc(1, sizeof *r);
    if (r == NULL)
        return HT_READER_NOMEM;
    r->fd = -1;
    r->mem = size > 0 ? data : empty;
    r->size = size;
    return open_common(r, out);
}

bool ht_reader_stack(const ht_reader *r, uint32_t id, const uint64_t **frames, size_t *n_frames)
{
    if (r == NULL || id == 0 || id > r->stacks.n)
        return false;
    *frames = r->stacks.frames + r->stacks.start[id - 1];
    *n_frames = r->stacks.start[id] - r->stacks.start[id - 1];
    return true;
}

void ht_reader_modules(const ht_reader *r, const ht_reader_module **modules, size_t *n)
{
    *modules = r->modules;
    *n = r->n_modules;
}

void ht_reader_markers(const ht_reader *r, const ht_reader_marker **markers, size_t *n)
{
    *markers = r->markers;
    *n = r->n_markers;
}

void ht_reader_threads(const ht_reader *r, const ht_reader_thread **threads, size_t *n)
{
    *threads = r->threads;
    *n = r->n_threads;
}

void ht_reader_info(const ht_reader *r, ht_reader_trace_info *info)
{
    *info = r->info;
    info->n_threads = r->n_threads;
    info->n_lost = 0;
    for (size_t i = 0; i < r->n_threads; i++)
        info->n_lost += r->threads[i].n_lost;
    info->valid_size = r->valid_end;
}

ht_reader_status_code ht_reader_status(const ht_reader *r, uint64_t *offset, const char **message)
{
    if (offset != NULL)
        *offset = r->status_off;
    if (message != NULL)
        *message = r->status == HT_READER_OK ? "ok" : r->message;
    return r->status;
}

void ht_reader_close(ht_reader *r)
{
    if (r == NULL)
        return;
    if (r->fd >= 0)
        close(r->fd);
    for (size_t i = 0; i < r->n_threads; i++) {
        free(r->cursors[i].ev);
        free(r->cursors[i].raw);
        free(r->cursors[i].pending);
    }
    for (size_t i = 0; i < r->n_modules; i++)
        free((void *)r->modules[i].path);
    for (size_t i = 0; i < r->n_markers; i++)
        free((void *)r->markers[i].text);
    free(r->threads);
    free(r->cursors);
    free(r->modules);
    free(r->markers);
    free(r->stacks.frames);
    free(r->stacks.start);
    free(r->stacks.def_off);
    free(r->heap);
    free(r->batch);
    free(r->keys);
    free(r->runs);
    free(r->wnext);
    free(r->queues);
    free(r->pieces);
    free(r->radix);
    free(r->scratch);
    free(r->cmdline);
    free(r);
}
