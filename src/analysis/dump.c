/* dump.c — one event as one line of text, JSON or CSV, lossless: every field of the ht_event
 * (timestamp, tid, sequence, flags, HeapHandle, the type's ETW payload fields) and its stack
 * id. Field names are DESIGN.md's (ETW names verbatim). Hand-written number formatting into
 * the caller's buffer: no stdio in the per-event path (bench/run_report.sh measures it).
 * Never prints. */
#include "analysis/internal.h"

#include <string.h>

const char ht__dump_csv_header[] =
    "type,ts_ns,tid,sequence,flags,stack_id,HeapHandle,Size,Address,Source,NewAddress,"
    "OldAddress,NewSize,OldSize,Flags,ReservedSpace,CommittedSpace\n";

static const char digits2[] = "00010203040506070809101112131415161718192021222324252627282930313233"
                              "34353637383940414243444546474849505152535455565758596061626364656667"
                              "6869707172737475767778798081828384858687888990919293949596979899";

static inline char *put_u64(char *p, uint64_t v)
{
    char tmp[20];
    char *e = tmp + sizeof tmp, *q = e;
    while (v >= 100) {
        unsigned r = (unsigned)(v % 100);
        v /= 100;
        q -= 2;
        memcpy(q, digits2 + 2 * r, 2);
    }
    if (v >= 10) {
        q -= 2;
        memcpy(q, digits2 + 2 * v, 2);
    } else
        *--q = (char)('0' + v);
    size_t n = (size_t)(e - q);
    memcpy(p, q, n);
    return p + n;
}

static inline char *put_hex(char *p, uint64_t v)
{
    static const char hex[] = "0123456789abcdef";
    *p++ = '0';
    *p++ = 'x';
    int shift = v == 0 ? 0 : (63 - __builtin_clzll(v)) & ~3;
    for (; shift >= 0; shift -= 4)
        *p++ = hex[(v >> shift) & 0xF];
    return p;
}

static inline char *put_str(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

#define PUT(p, lit) put_str(p, lit, sizeof(lit) - 1)

/* The payload fields of an event, as (name, value, is_address) triples. */
typedef struct dump_field {
    const char *name;
    size_t name_len;
    uint64_t value;
    bool address;
} dump_field;

#define F(n, v, a)                                                                                 \
    (dump_field)                                                                                   \
    {                                                                                              \
        n, sizeof(n) - 1, (uint64_t)(v), a                                                         \
    }

static size_t payload_fields(const ht_event *ev, dump_field *f)
{
    switch (ev->type) {
    case HT_EVENT_HEAP_ALLOC:
        f[0] = F("Size", ev->alloc.size, false);
        f[1] = F("Address", ev->alloc.address, true);
        f[2] = F("Source", ev->alloc.source, false);
        return 3;
    case HT_EVENT_HEAP_FREE:
        f[0] = F("Address", ev->free.address, true);
        f[1] = F("Source", ev->free.source, false);
        return 2;
    case HT_EVENT_HEAP_REALLOC:
        f[0] = F("NewAddress", ev->realloc.new_address, true);
        f[1] = F("OldAddress", ev->realloc.old_address, true);
        f[2] = F("NewSize", ev->realloc.new_size, false);
        f[3] = F("OldSize", ev->realloc.old_size, false);
        f[4] = F("Source", ev->realloc.source, false);
        return 5;
    case HT_EVENT_HEAP_CREATE:
        f[0] = F("Flags", ev->create.flags, false);
        f[1] = F("ReservedSpace", ev->create.reserved_space, false);
        f[2] = F("CommittedSpace", ev->create.committed_space, false);
        return 3;
    case HT_EVENT_HEAP_EXPAND:
        f[0] = F("Address", ev->expand.address, true);
        f[1] = F("Size", ev->expand.size, false);
        f[2] = F("CommittedSpace", ev->expand.committed_space, false);
        return 3;
    case HT_EVENT_HEAP_CONTRACT:
        f[0] = F("Address", ev->contract.address, true);
        f[1] = F("Size", ev->contract.size, false);
        f[2] = F("CommittedSpace", ev->contract.committed_space, false);
        return 3;
    default:
        return 0;
    }
}

/* CSV column of each payload field name (after the six header columns and HeapHandle). */
static int csv_column(const char *name)
{
    static const char *const cols[] = {"Size",          "Address",       "Source",  "NewAddress",
                                       "OldAddress",    "NewSize",       "OldSize", "Flags",
                                       "ReservedSpace", "CommittedSpace"};
    for (int i = 0; i < (int)(sizeof cols / sizeof cols[0]); i++)
        if (!strcmp(cols[i], name))
            return i;
    return -1;
}

size_t ht__dump_line(ht_dump_format fmt, const ht_reader_event *rev, char *buf)
{
    const ht_event *ev = &rev->event;
    int ti = ht__an_type_index(ev->type);
    const char *tname = ti >= 0 ? ht__an_type_name[ti] : NULL;
    dump_field f[5];
    size_t nf = payload_fields(ev, f);
    char *p = buf;
    switch (fmt) {
    case HT_DUMP_JSON:
        p = PUT(p, "{\"type\":");
        if (tname != NULL) {
            *p++ = '"';
            p = put_str(p, tname, strlen(tname));
            *p++ = '"';
        } else
            p = put_u64(p, ev->type);
        p = PUT(p, ",\"ts_ns\":");
        p = put_u64(p, ev->timestamp_ns);
        p = PUT(p, ",\"tid\":");
        p = put_u64(p, ev->tid);
        p = PUT(p, ",\"sequence\":");
        p = put_u64(p, ev->sequence);
        p = PUT(p, ",\"flags\":");
        p = put_u64(p, ev->flags);
        p = PUT(p, ",\"stack_id\":");
        p = put_u64(p, rev->stack_id);
        p = PUT(p, ",\"HeapHandle\":\"");
        p = put_hex(p, ev->heap_handle);
        *p++ = '"';
        for (size_t i = 0; i < nf; i++) {
            *p++ = ',';
            *p++ = '"';
            p = put_str(p, f[i].name, f[i].name_len);
            *p++ = '"';
            *p++ = ':';
            if (f[i].address) {
                *p++ = '"';
                p = put_hex(p, f[i].value);
                *p++ = '"';
            } else
                p = put_u64(p, f[i].value);
        }
        p = PUT(p, "}\n");
        break;
    case HT_DUMP_CSV: {
        if (tname != NULL)
            p = put_str(p, tname, strlen(tname));
        else
            p = put_u64(p, ev->type);
        *p++ = ',';
        p = put_u64(p, ev->timestamp_ns);
        *p++ = ',';
        p = put_u64(p, ev->tid);
        *p++ = ',';
        p = put_u64(p, ev->sequence);
        *p++ = ',';
        p = put_u64(p, ev->flags);
        *p++ = ',';
        p = put_u64(p, rev->stack_id);
        *p++ = ',';
        p = put_hex(p, ev->heap_handle);
        int col[5];
        for (size_t i = 0; i < nf; i++)
            col[i] = csv_column(f[i].name);
        for (int c = 0; c < 10; c++) {
            *p++ = ',';
            for (size_t i = 0; i < nf; i++) {
                if (col[i] != c)
                    continue;
                p = f[i].address ? put_hex(p, f[i].value) : put_u64(p, f[i].value);
                break;
            }
        }
        *p++ = '\n';
        break;
    }
    case HT_DUMP_TEXT:
    default:
        p = put_u64(p, ev->timestamp_ns);
        p = PUT(p, " tid=");
        p = put_u64(p, ev->tid);
        p = PUT(p, " seq=");
        p = put_u64(p, ev->sequence);
        *p++ = ' ';
        if (tname != NULL)
            p = put_str(p, tname, strlen(tname));
        else
            p = put_u64(p, ev->type);
        p = PUT(p, " HeapHandle=");
        p = put_hex(p, ev->heap_handle);
        for (size_t i = 0; i < nf; i++) {
            *p++ = ' ';
            p = put_str(p, f[i].name, f[i].name_len);
            *p++ = '=';
            p = f[i].address ? put_hex(p, f[i].value) : put_u64(p, f[i].value);
        }
        p = PUT(p, " stack=");
        p = put_u64(p, rev->stack_id);
        p = PUT(p, " flags=");
        p = put_u64(p, ev->flags);
        if (ev->flags & HT_EVENT_RUNDOWN)
            p = PUT(p, " rundown");
        if (ev->flags & HT_EVENT_FROM_SIZE)
            p = PUT(p, " from-size");
        *p++ = '\n';
        break;
    }
    return (size_t)(p - buf);
}
