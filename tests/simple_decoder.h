/* simple_decoder.h — a deliberately simple, slow decoder of heaptrail traces written straight
 * from docs/FORMAT.md (it shares no code with the encoder or the reader: its own byte reads,
 * varints and bit-by-bit CRC32C). It decodes every good chunk into one array, sorts it by
 * (timestamp, sequence, tid) and notes where the good data ends. Tests compare the fast reader
 * with it. Test-only: mallocs freely, aborts on out-of-memory. */
#ifndef HT_TEST_SIMPLE_DECODER_H
#define HT_TEST_SIMPLE_DECODER_H

#include <heaptrail.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct sd_event {
    ht_event ev;
    uint32_t stack;
} sd_event;

typedef struct sd_result {
    bool header_ok;      /* the file header was read */
    bool complete;       /* the end chunk was read */
    bool damaged;        /* something was wrong (including a missing end chunk) */
    uint64_t damage_off; /* where */
    size_t n_good_chunks;
    sd_event *events;
    size_t n_events;
    uint32_t n_stacks;
    uint64_t n_lost; /* sum over threads of max(last lost_so_far, summary) */
} sd_result;

static uint64_t sd_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint32_t sd_crc(const uint8_t *p, size_t n)
{
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int b = 0; b < 8; b++)
            crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
    }
    return crc ^ 0xFFFFFFFFu;
}

/* Reads a varint at *pos in [0, end); false if cut off or beyond 64 bits. */
static bool sd_varint(const uint8_t *d, size_t end, size_t *pos, uint64_t *out)
{
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        if (*pos >= end)
            return false;
        uint8_t b = d[(*pos)++];
        if (i == 9 && b > 1)
            return false;
        v |= (uint64_t)(b & 0x7F) << (7 * i);
        if (!(b & 0x80)) {
            *out = v;
            return true;
        }
    }
    return false;
}

static int64_t sd_unzigzag(uint64_t v)
{
    return (v & 1) ? -(int64_t)(v >> 1) - 1 : (int64_t)(v >> 1);
}

static bool sd_addr(const uint8_t *d, size_t end, size_t *pos, uint64_t *reg, uint64_t *out)
{
    uint64_t v;
    if (!sd_varint(d, end, pos, &v))
        return false;
    if (v % 2 == 0) {
        *reg += (uint64_t)sd_unzigzag(v / 2) * 16;
    } else {
        if (v != 1 || !sd_varint(d, end, pos, &v))
            return false;
        *reg += (uint64_t)sd_unzigzag(v);
    }
    *out = *reg;
    return true;
}

static int sd_cmp(const void *pa, const void *pb)
{
    const ht_event *a = &((const sd_event *)pa)->ev, *b = &((const sd_event *)pb)->ev;
    if (a->timestamp_ns != b->timestamp_ns)
        return a->timestamp_ns < b->timestamp_ns ? -1 : 1;
    if (a->sequence != b->sequence)
        return a->sequence < b->sequence ? -1 : 1;
    return a->tid < b->tid ? -1 : a->tid > b->tid;
}

/* Decodes one event chunk's payload, appending to res->events; false if it does not decode. */
static bool sd_event_chunk(const uint8_t *d, size_t start, size_t end, uint32_t tid,
                           uint32_t n_records, uint64_t seq, uint64_t first_ts, uint64_t last_ts,
                           uint32_t n_stacks, sd_result *res)
{
    static const uint16_t opcode[7] = {0x21, 0x24, 0x22, 0x20, 0x23, 0x25, 0x2A};
    uint64_t ts = first_ts, addr = 0, heap = 0, heaps[32];
    int n_heaps = 0;
    uint16_t flags = 0;
    bool pending = false;
    uint32_t n = 0;
    size_t pos = start, n_before = res->n_events;
    res->events = realloc(res->events, (res->n_events + n_records + 1) * sizeof(sd_event));
    if (res->events == NULL)
        abort();
    while (pos < end) {
        uint8_t tag = d[pos++];
        int type = (tag >> 3) & 7, src = tag & 7;
        uint64_t v;
        if (type == 7) {
            if ((tag & 0xC0) || !sd_varint(d, end, &pos, &v) || v == 0)
                goto bad;
            if (src == 0 && v <= 0xFFFF)
                flags = (uint16_t)v;
            else if (src == 1)
                seq += v;
            else if (src == 2)
                ts -= v;
            else
                goto bad;
            pending = true;
            continue;
        }
        if (n == n_records)
            goto bad;
        sd_event *e = &res->events[res->n_events];
        memset(e, 0, sizeof *e);
        if (!sd_varint(d, end, &pos, &v))
            goto bad;
        ts += v;
        if (tag & 0x80) {
            if (!sd_varint(d, end, &pos, &v))
                goto bad;
            if (v == 0) {
                if (!sd_varint(d, end, &pos, &heap))
                    goto bad;
                if (n_heaps < 32)
                    heaps[n_heaps++] = heap;
            } else if (v <= (uint64_t)n_heaps) {
                heap = heaps[v - 1];
            } else {
                goto bad;
            }
        }
        if (tag & 0x40) {
            if (!sd_varint(d, end, &pos, &v) || v == 0 || v > n_stacks)
                goto bad;
            e->stack = (uint32_t)v;
        }
        uint64_t source = (uint64_t)src;
        if (src == 7 && (!sd_varint(d, end, &pos, &source) || source > 0xFFFFFFFFu))
            goto bad;
        if (type >= 3 && src != 0)
            goto bad;
        e->ev.timestamp_ns = ts;
        e->ev.tid = tid;
        e->ev.type = opcode[type];
        e->ev.flags = flags;
        e->ev.heap_handle = (uintptr_t)heap;
        e->ev.sequence = seq;
        uint64_t a, b, c, x;
        if (type == 0) {
            if (!sd_varint(d, end, &pos, &a) || !sd_addr(d, end, &pos, &addr, &b))
                goto bad;
            e->ev.alloc.size = a;
            e->ev.alloc.address = (uintptr_t)b;
            e->ev.alloc.source = (uint32_t)source;
        } else if (type == 1) {
            if (!sd_addr(d, end, &pos, &addr, &a))
                goto bad;
            e->ev.free.address = (uintptr_t)a;
            e->ev.free.source = (uint32_t)source;
        } else if (type == 2) {
            if (!sd_addr(d, end, &pos, &addr, &a) || !sd_addr(d, end, &pos, &addr, &b) ||
                !sd_varint(d, end, &pos, &c) || !sd_varint(d, end, &pos, &x))
                goto bad;
            e->ev.realloc.new_address = (uintptr_t)a;
            e->ev.realloc.old_address = (uintptr_t)b;
            e->ev.realloc.new_size = c;
            e->ev.realloc.old_size = x;
            e->ev.realloc.source = (uint32_t)source;
        } else if (type == 3) {
            if (!sd_varint(d, end, &pos, &a) || a > 0xFFFFFFFFu || !sd_varint(d, end, &pos, &b) ||
                !sd_varint(d, end, &pos, &c))
                goto bad;
            e->ev.create.flags = (uint32_t)a;
            e->ev.create.reserved_space = b;
            e->ev.create.committed_space = c;
        } else if (type == 5 || type == 6) {
            if (!sd_addr(d, end, &pos, &addr, &a) || !sd_varint(d, end, &pos, &b) ||
                !sd_varint(d, end, &pos, &c))
                goto bad;
            e->ev.expand.address = (uintptr_t)a;
            e->ev.expand.size = b;
            e->ev.expand.committed_space = c;
        }
        if (n == 0 && ts != first_ts)
            goto bad;
        n++;
        seq++;
        flags = 0;
        pending = false;
        res->n_events++;
    }
    if (pending || n != n_records || (n > 0 && ts != last_ts))
        goto bad;
    return true;
bad:
    res->n_events = n_before;
    return false;
}

/* Decodes the trace in d[0, size). Caller frees res->events. */
static void sd_decode(const uint8_t *d, size_t size, sd_result *res)
{
    memset(res, 0, sizeof *res);
    struct {
        uint32_t tid;
        uint64_t n_chunks, lost;
    } th[256];
    int n_th = 0;
    uint64_t meta_seq = 0;
    if (size < 48 || memcmp(d, "HTRACE\r\n", 8) != 0 || sd_le(d + 8, 2) != 1 ||
        sd_le(d + 10, 2) != 48 || sd_le(d + 16, 4) != 1 || sd_le(d + 40, 4) != 0) {
        res->damaged = true;
        return;
    }
    uint64_t cmd = sd_le(d + 20, 4);
    if (cmd > (1u << 20) || cmd > size - 48) {
        res->damaged = true;
        return;
    }
    uint8_t *tmp = malloc(44 + cmd + 1);
    memcpy(tmp, d, 44);
    memcpy(tmp + 44, d + 48, cmd);
    bool crc_ok = sd_crc(tmp, 44 + cmd) == sd_le(d + 44, 4);
    free(tmp);
    if (!crc_ok) {
        res->damaged = true;
        return;
    }
    res->header_ok = true;
    size_t off = 48 + cmd;
    for (;;) {
        if (off == size) {
            if (!res->complete) {
                res->damaged = true;
                res->damage_off = off;
            }
            break;
        }
        if (res->complete || size - off < 72)
            goto damaged;
        const uint8_t *h = d + off;
        uint64_t kind = sd_le(h + 6, 2), tid = sd_le(h + 8, 4), n_rec = sd_le(h + 12, 4);
        uint64_t cseq = sd_le(h + 16, 8), psize = sd_le(h + 56, 4);
        if (memcmp(h, "HTCK", 4) != 0 || sd_crc(h, 68) != sd_le(h + 68, 4) ||
            sd_le(h + 4, 2) != 1 || kind < 1 || kind > 3 || sd_le(h + 64, 4) != 0 ||
            psize > (1u << 24) || n_rec > psize || (kind == 1) != (tid != 0) ||
            psize > size - off - 72 || sd_crc(h + 72, psize) != sd_le(h + 60, 4))
            goto damaged;
        size_t ps = off + 72, pe = off + 72 + psize;
        if (kind == 1) {
            int k = 0;
            while (k < n_th && th[k].tid != tid)
                k++;
            if (k == n_th) {
                if (n_th == 256)
                    abort();
                th[n_th].tid = (uint32_t)tid;
                th[n_th].n_chunks = 0;
                th[n_th].lost = 0;
                n_th++;
            }
            if (cseq != th[k].n_chunks)
                goto damaged;
            /* A malformed event chunk is damage too (the fast reader finds it later). */
            if (!sd_event_chunk(d, ps, pe, (uint32_t)tid, (uint32_t)n_rec, sd_le(h + 24, 8),
                                sd_le(h + 32, 8), sd_le(h + 40, 8), res->n_stacks, res))
                goto damaged;
            th[k].n_chunks++;
            if (sd_le(h + 48, 8) > th[k].lost)
                th[k].lost = sd_le(h + 48, 8);
        } else {
            if (cseq != meta_seq)
                goto damaged;
            size_t pos = ps;
            uint32_t stacks = res->n_stacks;
            for (uint64_t r = 0; r < n_rec; r++) {
                uint64_t v, len, n_frames, id;
                if (pos >= pe)
                    goto damaged;
                uint8_t tag = d[pos++];
                if (kind == 3 && (tag != 0x10 || n_rec != 1))
                    goto damaged;
                if (kind == 2 && tag == 0x01) {
                    for (int i = 0; i < 4; i++)
                        if (!sd_varint(d, pe, &pos, &len))
                            goto damaged;
                    if (len > 4096 || len > pe - pos)
                        goto damaged;
                    pos += len;
                    if (!sd_varint(d, pe, &pos, &len) || len > 64 || len > pe - pos)
                        goto damaged;
                    pos += len;
                } else if (kind == 2 && tag == 0x02) {
                    if (!sd_varint(d, pe, &pos, &id) || id != (uint64_t)stacks + 1 ||
                        !sd_varint(d, pe, &pos, &n_frames) || n_frames == 0 || n_frames > 1024)
                        goto damaged;
                    for (uint64_t i = 0; i < n_frames; i++)
                        if (!sd_varint(d, pe, &pos, &v))
                            goto damaged;
                    stacks++;
                } else if (kind == 2 && tag == 0x03) {
                    if (!sd_varint(d, pe, &pos, &v) || !sd_varint(d, pe, &pos, &v))
                        goto damaged;
                } else if (kind == 2 && tag == 0x04) {
                    if (!sd_varint(d, pe, &pos, &v) || !sd_varint(d, pe, &pos, &v) ||
                        v > 0xFFFFFFFFu || !sd_varint(d, pe, &pos, &len) || len > 4096 ||
                        len > pe - pos)
                        goto damaged;
                    pos += len;
                } else if (kind == 3) {
                    uint64_t n, vals[4];
                    if (!sd_varint(d, pe, &pos, &v) || !sd_varint(d, pe, &pos, &n))
                        goto damaged;
                    for (uint64_t i = 0; i < n; i++) {
                        for (int j = 0; j < 4; j++)
                            if (!sd_varint(d, pe, &pos, &vals[j]))
                                goto damaged;
                        if (vals[0] == 0 || vals[0] > 0xFFFFFFFFu)
                            goto damaged;
                        int k = 0;
                        while (k < n_th && th[k].tid != vals[0])
                            k++;
                        if (k == n_th) {
                            if (n_th == 256)
                                abort();
                            th[n_th].tid = (uint32_t)vals[0];
                            th[n_th].n_chunks = 0;
                            th[n_th].lost = 0;
                            n_th++;
                        }
                        if (vals[2] > th[k].lost)
                            th[k].lost = vals[2];
                    }
                    res->complete = true;
                } else {
                    goto damaged;
                }
            }
            if (pos != pe)
                goto damaged;
            res->n_stacks = stacks;
            meta_seq++;
        }
        res->n_good_chunks++;
        off = pe;
        continue;
    damaged:
        res->damaged = true;
        res->damage_off = off;
        break;
    }
    for (int k = 0; k < n_th; k++)
        res->n_lost += th[k].lost;
    if (res->n_events > 1)
        qsort(res->events, res->n_events, sizeof(sd_event), sd_cmp);
}

#endif
