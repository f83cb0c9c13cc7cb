/* dump.c — one event as one line of text, JSON or CSV, lossless: every field of the ht_event
 * (timestamp, tid, sequence, flags, HeapHandle, the type's ETW payload fields) and its stack
 * id. Field names are DESIGN.md's (ETW names verbatim). Hand-written number formatting into
 * the caller's buffer, keys copied as fixed 32-byte blocks: no stdio and no variable-length
 * copies in the per-event path (bench/run_report.sh measures it).
 * Never prints. */
#include "analysis/internal.h"

#include <string.h>

const char ht__dump_csv_header[] =
    "type,ts_ns,tid,sequence,flags,stack_id,HeapHandle,Size,Address,Source,NewAddress,"
    "OldAddress,NewSize,OldSize,Flags,ReservedSpace,CommittedSpace\n";

static const char digits2[] = "00010203040506070809101112131415161718192021222324252627282930313233"
                              "34353637383940414243444546474849505152535455565758596061626364656667"
                              "6869707172737475767778798081828384858687888990919293949596979899";

static inline unsigned n_digits(uint64_t v)
{
    unsigned n = 1;
    for (;;) {
        if (v < 10)
            return n;
        if (v < 100)
            return n + 1;
        if (v < 1000)
            return n + 2;
        if (v < 10000)
            return n + 3;
        v /= 10000;
        n += 4;
    }
}

/* Decimal, written in place from the end (no temporary, no memcpy). */
static inline char *put_u64(char *p, uint64_t v)
{
    unsigned n = n_digits(v);
    char *q = p + n;
    while (v >= 100) {
        unsigned r = (unsigned)(v % 100);
        v /= 100;
        q -= 2;
        q[0] = digits2[2 * r];
        q[1] = digits2[2 * r + 1];
    }
    if (v >= 10) {
        q[-2] = digits2[2 * v];
        q[-1] = digits2[2 * v + 1];
    } else
        q[-1] = (char)('0' + v);
    return p + n;
}

static inline char *put_hex(char *p, uint64_t v)
{
    static const char hex[] = "0123456789abcdef";
    *p++ = '0';
    *p++ = 'x';
    unsigned n = v == 0 ? 1u : (unsigned)(67 - __builtin_clzll(v)) / 4u;
    for (unsigned i = n; i > 0; i--) {
        p[i - 1] = hex[v & 0xF];
        v >>= 4;
    }
    return p + n;
}

#define PUT(p, lit) (memcpy(p, lit, sizeof(lit) - 1), (p) + sizeof(lit) - 1)

/* A key or separator with its length, padded so that it can be copied as a fixed 32 bytes
 * (the line buffer has the room: HT_DUMP_LINE_MAX counts it). */
typedef struct dump_key {
    char s[32];
    size_t n;
} dump_key;
#define KEY(lit)                                                                                   \
    {                                                                                              \
        lit, sizeof(lit) - 1                                                                       \
    }

static inline char *put_key(char *p, const dump_key *k)
{
    memcpy(p, k->s, sizeof k->s);
    return p + k->n;
}

/* Payload fields of each type, in ETW order: JSON key, text key, CSV column, is an address. */
typedef struct dump_field {
    dump_key json; /* ,"Name": */
    dump_key text; /*  Name= */
    int column;    /* CSV column after HeapHandle (0 = Size ... 9 = CommittedSpace) */
    bool address;  /* 0x... (JSON: a string) */
} dump_field;
#define FIELD(name, col, addr)                                                                     \
    {                                                                                              \
        KEY(",\"" name "\":"), KEY(" " name "="), col, addr                                        \
    }

static const dump_field f_size = FIELD("Size", 0, false);
static const dump_field f_address = FIELD("Address", 1, true);
static const dump_field f_source = FIELD("Source", 2, false);
static const dump_field f_new_address = FIELD("NewAddress", 3, true);
static const dump_field f_old_address = FIELD("OldAddress", 4, true);
static const dump_field f_new_size = FIELD("NewSize", 5, false);
static const dump_field f_old_size = FIELD("OldSize", 6, false);
static const dump_field f_flags = FIELD("Flags", 7, false);
static const dump_field f_reserved = FIELD("ReservedSpace", 8, false);
static const dump_field f_committed = FIELD("CommittedSpace", 9, false);
#define N_CSV_COLUMNS 10

/* Type names, as JSON values and as text words. */
static const dump_key type_json[HT_AN_N_TYPES] = {
    KEY("{\"type\":\"alloc\""),   KEY("{\"type\":\"free\""),    KEY("{\"type\":\"realloc\""),
    KEY("{\"type\":\"create\""),  KEY("{\"type\":\"destroy\""), KEY("{\"type\":\"expand\""),
    KEY("{\"type\":\"contract\"")};
static const dump_key type_text[HT_AN_N_TYPES] = {KEY(" alloc"),   KEY(" free"),    KEY(" realloc"),
                                                  KEY(" create"),  KEY(" destroy"), KEY(" expand"),
                                                  KEY(" contract")};

static const dump_key type_csv[HT_AN_N_TYPES] = {KEY("alloc"),   KEY("free"),    KEY("realloc"),
                                                 KEY("create"),  KEY("destroy"), KEY("expand"),
                                                 KEY("contract")};

typedef struct field_val {
    const dump_field *f;
    uint64_t v;
} field_val;

static size_t payload_fields(const ht_event *ev, field_val *f)
{
    switch (ev->type) {
    case HT_EVENT_HEAP_ALLOC:
        f[0] = (field_val){&f_size, ev->alloc.size};
        f[1] = (field_val){&f_address, ev->alloc.address};
        f[2] = (field_val){&f_source, ev->alloc.source};
        return 3;
    case HT_EVENT_HEAP_FREE:
        f[0] = (field_val){&f_address, ev->free.address};
        f[1] = (field_val){&f_source, ev->free.source};
        return 2;
    case HT_EVENT_HEAP_REALLOC:
        f[0] = (field_val){&f_new_address, ev->realloc.new_address};
        f[1] = (field_val){&f_old_address, ev->realloc.old_address};
        f[2] = (field_val){&f_new_size, ev->realloc.new_size};
        f[3] = (field_val){&f_old_size, ev->realloc.old_size};
        f[4] = (field_val){&f_source, ev->realloc.source};
        return 5;
    case HT_EVENT_HEAP_CREATE:
        f[0] = (field_val){&f_flags, ev->create.flags};
        f[1] = (field_val){&f_reserved, ev->create.reserved_space};
        f[2] = (field_val){&f_committed, ev->create.committed_space};
        return 3;
    case HT_EVENT_HEAP_EXPAND:
        f[0] = (field_val){&f_address, ev->expand.address};
        f[1] = (field_val){&f_size, ev->expand.size};
        f[2] = (field_val){&f_committed, ev->expand.committed_space};
        return 3;
    case HT_EVENT_HEAP_CONTRACT:
        f[0] = (field_val){&f_address, ev->contract.address};
        f[1] = (field_val){&f_size, ev->contract.size};
        f[2] = (field_val){&f_committed, ev->contract.committed_space};
        return 3;
    default:
        return 0;
    }
}

static inline char *put_value(char *p, const field_val *fv)
{
    return fv->f->address ? put_hex(p, fv->v) : put_u64(p, fv->v);
}

size_t ht__dump_line(ht_dump_format fmt, const ht_reader_event *rev, char *buf)
{
    const ht_event *ev = &rev->event;
    int ti = ht__an_type_index(ev->type);
    field_val f[5];
    size_t nf = payload_fields(ev, f);
    char *p = buf;
    switch (fmt) {
    case HT_DUMP_JSON:
        if (ti >= 0)
            p = put_key(p, &type_json[ti]);
        else {
            p = PUT(p, "{\"type\":");
            p = put_u64(p, ev->type);
        }
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
            p = put_key(p, &f[i].f->json);
            if (f[i].f->address) {
                *p++ = '"';
                p = put_hex(p, f[i].v);
                *p++ = '"';
            } else
                p = put_u64(p, f[i].v);
        }
        p = PUT(p, "}\n");
        break;
    case HT_DUMP_CSV: {
        if (ti >= 0)
            p = put_key(p, &type_csv[ti]);
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
        /* the payload fields by column (at most 5 of the 10) */
        const field_val *by_col[N_CSV_COLUMNS] = {NULL};
        for (size_t i = 0; i < nf; i++)
            by_col[f[i].f->column] = &f[i];
        for (int c = 0; c < N_CSV_COLUMNS; c++) {
            *p++ = ',';
            if (by_col[c] != NULL)
                p = put_value(p, by_col[c]);
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
        if (ti >= 0)
            p = put_key(p, &type_text[ti]);
        else {
            *p++ = ' ';
            p = put_u64(p, ev->type);
        }
        p = PUT(p, " HeapHandle=");
        p = put_hex(p, ev->heap_handle);
        for (size_t i = 0; i < nf; i++) {
            p = put_key(p, &f[i].f->text);
            p = put_value(p, &f[i]);
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
