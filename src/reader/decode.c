/* decode.c — the fast decoder of event chunk payloads (FORMAT.md 5-6): one tight loop that
 * turns a whole chunk, or the next piece of it (resuming from saved registers), into
 * ht_reader_events, checking every varint, register, limit and the chunk-level totals; and
 * the same loop with its stores compiled out, the check pass that proves a whole chunk
 * decodes before it is decoded in pieces. Never reads outside [payload, payload +
 * payload_size) and never writes more than n_records events; on the first problem it reports
 * and stops.
 * Bounds are checked per chunk where that is equivalent: while at least RD_MAX_RECORD bytes
 * remain, no record can reach the payload's end, so its fields are read without per-field
 * length checks; the last RD_MAX_RECORD bytes are decoded with every length checked. */
#include "reader/internal.h"

#include "trace/format.h"

#include <stddef.h>
#include <stdatomic.h>
#include <string.h>

/* pext (BMI2) where the CPU does it in one cycle; never called elsewhere. Inline assembly, so
 * that the generic build needs no -mbmi2. */
#if defined(__x86_64__)
static inline uint64_t pext64(uint64_t x, uint64_t mask)
{
    uint64_t r;
    __asm__("pext %2, %1, %0" : "=r"(r) : "r"(x), "r"(mask));
    return r;
}
static inline uint64_t pdep64(uint64_t x, uint64_t mask)
{
    uint64_t r;
    __asm__("pdep %2, %1, %0" : "=r"(r) : "r"(x), "r"(mask));
    return r;
}
#else
static inline uint64_t pext64(uint64_t x, uint64_t mask)
{
    (void)x;
    (void)mask;
    return 0;
}

static inline uint64_t pdep64(uint64_t x, uint64_t mask)
{
    (void)x;
    (void)mask;
    return 0;
}
#endif

/* Bytes a record can span, plus the 8-byte window the varint reader loads: a tag and at most
 * 11 varints of at most 10 bytes (REALLOC with H, a new handle, S, an escaped Source and two
 * odd address fields), 111 bytes, + 8 bytes of window after its last varint's first byte.
 * A record that starts at least this far before the payload's end reads nothing past it. */
#define RD_MAX_RECORD 128

_Static_assert(sizeof(ht_reader_event) == 80 && offsetof(ht_event, tid) == 8 &&
                   offsetof(ht_event, type) == 12 && offsetof(ht_event, flags) == 14 &&
                   offsetof(ht_event, heap_handle) == 16 && offsetof(ht_event, alloc) == 24 &&
                   offsetof(ht_event, sequence) == 64,
               "the ALLOC/FREE fast path stores the event as 8-byte words at these offsets");

static inline uint64_t load64(const uint8_t *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

/* The value of the varint whose first 8 bytes are w, given stop = ~w & 0x80..80 != 0 (the
 * high bit of each final-byte candidate): the 7-bit groups up to the first stop byte, packed
 * with one pext (use_pext) or three shift-and-mask steps. */
static inline __attribute__((always_inline)) uint64_t vx_value(uint64_t w, uint64_t stop,
                                                               const bool use_pext)
{
    uint64_t m = (stop ^ (stop - 1)) & 0x7F7F7F7F7F7F7F7Full;
    if (use_pext)
        return pext64(w, m);
    uint64_t x = w & m;
    x = ((x & 0x7F007F007F007F00ull) >> 1) | (x & 0x007F007F007F007Full);
    x = ((x & 0x3FFF00003FFF0000ull) >> 2) | (x & 0x00003FFF00003FFFull);
    x = ((x & 0x0FFFFFFF00000000ull) >> 4) | (x & 0x000000000FFFFFFFull);
    return x;
}

/* vx_value with the stop constant hi given (fast_run keeps it in a register). */
static inline __attribute__((always_inline)) uint64_t vx_value_hi(uint64_t w, uint64_t stop,
                                                                  uint64_t hi, const bool use_pext)
{
    if (!use_pext)
        return vx_value(w, stop, false);
    uint64_t m = stop ^ (stop - 1);
#if defined(__x86_64__)
    __asm__("andn %2, %1, %0" : "=r"(m) : "r"(hi), "r"(m)); /* ~hi & m (BMI1, as pext) */
#else
    m &= ~hi;
#endif
    return pext64(w, m);
}

/* The value of the varint whose bytes in w are those of bytes (a mask of whole bytes), with
 * the stop constant hi given: one pext (fast_run's one-window path). */
static inline __attribute__((always_inline)) uint64_t vx_field_hi(uint64_t w, uint64_t bytes,
                                                                  uint64_t hi)
{
#if defined(__x86_64__)
    __asm__("andn %2, %1, %0" : "=r"(bytes) : "r"(hi), "r"(bytes)); /* ~hi & bytes */
#else
    bytes &= ~hi;
#endif
    return pext64(w, bytes);
}

/* Length in bytes of that varint (1..8). */
static inline unsigned vx_len(uint64_t stop)
{
    return ((unsigned)__builtin_ctzll(stop) >> 3) + 1; /* its stop bit is bit 8 len - 1 */
}

/* The varint at q if it takes at most 8 bytes (8 may be loaded there): its value into *v and
 * its length; 0 when it is longer. With the stop constant hi given (fast_run's registers). */
static inline __attribute__((always_inline)) unsigned vx_window(const uint8_t *q, uint64_t hi,
                                                                uint64_t *v, const bool use_pext)
{
    uint64_t w = load64(q), stop = ~w & hi;
    if (stop == 0)
        return 0;
    *v = vx_value_hi(w, stop, hi, use_pext);
    return vx_len(stop);
}

/* A varint, branch-free for up to 8 bytes when 8 bytes may be loaded (checked: when 8 bytes
 * remain before end; unchecked: the caller proved it for the whole record). Varint lengths are
 * unpredictable (a 1- or 2-byte dts), so this saves a mispredicted branch per field. use_pext
 * and checked are constants in each instance of the decoder. */
static inline __attribute__((always_inline)) int
get_vx(const uint8_t **p, const uint8_t *end, uint64_t *v, const bool use_pext, const bool checked)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (!checked || end - *p >= 8) {
        uint64_t w = load64(*p);
        uint64_t stop = ~w & 0x8080808080808080ull;
        if (stop != 0) {
            *v = vx_value(w, stop, use_pext);
            *p += vx_len(stop);
            return 1;
        }
    }
#endif
    return ht_fmt_get_varint(p, end, v);
}

#define get_v(p, end, v) get_vx((p), (end), (v), use_pext, checked)

/* An address field: delta against *reg (x16 when even), then *reg = the address. */
static inline __attribute__((always_inline)) int addr_get(const uint8_t **p, const uint8_t *end,
                                                          uint64_t *reg, uint64_t *out,
                                                          const bool use_pext, const bool checked)
{
    uint64_t v;
    if (!get_v(p, end, &v))
        return 0;
    if ((v & 1) == 0) {
        *reg += (uint64_t)ht_fmt_unzigzag(v >> 1) << 4;
    } else {
        if (v != 1 || !get_v(p, end, &v))
            return 0;
        *reg += (uint64_t)ht_fmt_unzigzag(v);
    }
    *out = *reg;
    return 1;
}

/* How many stacks are defined in chunks before offset off: ids 1..that, since ids are dense
 * and defined in file order (def_off is non-decreasing). */
static uint64_t stacks_before(const rd_stacks *s, uint64_t off)
{
    uint32_t lo = 0, hi = s->n; /* def_off[0 .. lo) < off <= def_off[hi ..) */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (s->def_off[mid] < off)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static const char why_cut[] = "event record cut off or a varint beyond 64 bits";

/* Decodes the record at d->p, any kind, every field and register checked (lengths too when
 * checked; otherwise the caller proved the record cannot reach end). Returns NULL, or why it
 * does not decode. */
static inline __attribute__((always_inline)) const char *
record_decode(rd_dec *d, uint64_t *heaps, ht_reader *r, const rd_chunk *c, const uint8_t *end,
              ht_reader_event *out, uint32_t first, const bool use_pext, const bool checked,
              const bool store)
{
    const uint8_t *p = d->p;
    unsigned tag = *p++;
    unsigned t = (tag >> HT_FMT_TAG_TYPE_SHIFT) & 7u;
    uint64_t v;
    if (t == HT_FMT_T_CONTROL) {
        if (!get_v(&p, end, &v))
            return "control record cut off";
        if (tag == HT_FMT_CTL_FLAGS && v >= 1 && v <= 0xFFFF)
            d->flags = (uint16_t)v;
        else if (tag == HT_FMT_CTL_SEQ_SKIP && v >= 1)
            d->seq += v;
        else if (tag == HT_FMT_CTL_TIME_BACK && v >= 1)
            d->ts -= v, d->back = true;
        else
            return "reserved control tag or control value out of range";
        d->pending = true;
        d->p = p;
        return NULL;
    }
    if (d->n == c->n_records)
        return "more event records than the header's n_records";
    ht_reader_event scratch, *e = store ? out + (d->n - first) : &scratch;
    if (store)
        memset(e, 0, sizeof *e);
    if (!get_v(&p, end, &v))
        return why_cut;
    d->back |= d->ts + v < d->ts; /* wrapped around 2^64 */
    d->ts += v;
    if (tag & HT_FMT_TAG_H) {
        if (!get_v(&p, end, &v))
            return why_cut;
        if (v == 0) {
            if (!get_v(&p, end, &d->heap))
                return why_cut;
            if (d->n_heaps < HT_FMT_HEAP_TABLE)
                heaps[d->n_heaps++] = d->heap;
        } else if (v <= d->n_heaps) {
            d->heap = heaps[v - 1];
        } else {
            return "heap selector beyond the chunk's heap table";
        }
    }
    if (tag & HT_FMT_TAG_S) {
        if (!get_v(&p, end, &v))
            return why_cut;
        if (v == 0 || v > r->stacks.n || r->stacks.def_off[v - 1] >= c->off)
            return "stack id not defined before this chunk";
        if (store)
            e->stack_id = (uint32_t)v;
    }
    uint64_t source = tag & HT_FMT_TAG_SRC_MASK;
    if (source == HT_FMT_SRC_ESCAPE) {
        if (!get_v(&p, end, &source))
            return why_cut;
        if (source > 0xFFFFFFFFu)
            return "Source beyond 32 bits";
    }
    ht_event *ev = &e->event;
    if (store) {
        ev->timestamp_ns = d->ts;
        ev->tid = c->tid;
        ev->type = ht_fmt_opcode_of_type[t];
        ev->flags = d->flags;
        ev->heap_handle = (uintptr_t)d->heap;
        ev->sequence = d->seq;
    }
    if (t >= HT_FMT_T_CREATE && (tag & HT_FMT_TAG_SRC_MASK) != 0)
        return "Source bits set on an event without a Source";
    uint64_t a, b, cc, dd;
    switch (t) {
    case HT_FMT_T_ALLOC:
        if (!get_v(&p, end, &a) || !addr_get(&p, end, &d->addr, &b, use_pext, checked))
            return why_cut;
        ev->alloc.size = a;
        ev->alloc.address = (uintptr_t)b;
        ev->alloc.source = (uint32_t)source;
        break;
    case HT_FMT_T_FREE:
        if (!addr_get(&p, end, &d->addr, &a, use_pext, checked))
            return why_cut;
        ev->free.address = (uintptr_t)a;
        ev->free.source = (uint32_t)source;
        break;
    case HT_FMT_T_REALLOC:
        if (!addr_get(&p, end, &d->addr, &a, use_pext, checked) ||
            !addr_get(&p, end, &d->addr, &b, use_pext, checked) || !get_v(&p, end, &cc) ||
            !get_v(&p, end, &dd))
            return why_cut;
        ev->realloc.new_address = (uintptr_t)a;
        ev->realloc.old_address = (uintptr_t)b;
        ev->realloc.new_size = cc;
        ev->realloc.old_size = dd;
        ev->realloc.source = (uint32_t)source;
        break;
    case HT_FMT_T_CREATE:
        if (!get_v(&p, end, &a) || !get_v(&p, end, &b) || !get_v(&p, end, &cc))
            return why_cut;
        if (a > 0xFFFFFFFFu)
            return "CREATE Flags beyond 32 bits";
        ev->create.flags = (uint32_t)a;
        ev->create.reserved_space = b;
        ev->create.committed_space = cc;
        break;
    case HT_FMT_T_DESTROY:
        break;
    default: /* EXPAND, CONTRACT */
        if (!addr_get(&p, end, &d->addr, &a, use_pext, checked) || !get_v(&p, end, &b) ||
            !get_v(&p, end, &cc))
            return why_cut;
        ev->expand.address = (uintptr_t)a;
        ev->expand.size = b;
        ev->expand.committed_space = cc;
        break;
    }
    if (d->n == 0 && d->ts != c->first_ts)
        return "first event's timestamp differs from the header's first_ts";
    d->n++;
    d->seq++;
    d->flags = 0;
    d->pending = false;
    d->p = p;
    return NULL;
}

static inline void put64(ht_reader_event *e, size_t off, uint64_t v)
{
    memcpy((char *)e + off, &v, 8);
}

/* Bytes a record of fast_run spans: a tag and at most 3 varints (4 with S) of at most 8
 * bytes; the 8-byte window of its last varint stays within RD_MAX_RECORD. */
#define FAST_RECORD(with_s) (1u + 8u * ((with_s) ? 4u : 3u))

/* The common records, ALLOC and FREE without H or an escaped Source, with S (with_s) or
 * without (two instances: a trace has stacks on for all its events or off), in a loop of
 * their own whose registers stay in registers: from d->p while it is before fast_end (so no
 * record reaches the payload's end) and fewer than n_records events are decoded, with no
 * control record pending and after the first event (whose timestamp record_decode checks).
 * The loop runs in blocks of records that surely start before fast_end (each spans at most
 * FAST_RECORD bytes) and fit out, so that one count bounds it. Branch-free in the record type
 * (ALLOC and FREE alternate at random in real traces, so a branch on it mispredicts every
 * other event): FREE's address field is where ALLOC's size is, so the size varint is decoded
 * for both and kept (and stepped over) only for ALLOC; the same for the stack id with S.
 * Stops, leaving that record to record_decode, at anything less common (another type or
 * flag, S other than with_s, a varint over 8 bytes, an odd address field, a stack id not
 * defined before the chunk: n_stacks_before is how many are, ids being dense in file
 * order). */
static inline __attribute__((always_inline)) void
fast_run(rd_dec *d, const rd_chunk *c, const uint8_t *fast_end, ht_reader_event *out,
         uint32_t first, uint32_t n_end, uint64_t n_stacks_before, const bool use_pext,
         const bool with_s, const bool store)
{
    if (__BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__)
        return; /* the 8-byte varint windows and the stores below are little-endian */
    const uint8_t *p = d->p;
    /* the position: store, the next event's address (out[n - first]); else n itself */
    const uintptr_t step = store ? sizeof(ht_reader_event) : 1;
    uintptr_t at = store ? (uintptr_t)(out + (d->n - first)) : d->n;
    const uintptr_t at_end = store ? (uintptr_t)(out + (n_end - first)) : n_end;
    uint64_t ts = d->ts, seq = d->seq, addr = d->addr;
    const uint64_t ts_start = ts;
    uint64_t dts_or = 0; /* all dts OR-ed: wrap-around detection after the loop */
    /* tid, type (patched per event), flags 0 and the heap: one 16-byte store from a vector
     * register, which leaves the general registers to the loop */
    typedef uint64_t v2u64 __attribute__((vector_size(16)));
    const v2u64 tid_heap = {(uint64_t)c->tid, d->heap};
    uint64_t hi = 0x8080808080808080ull;
    __asm__("" : "+r"(hi)); /* opaque: ~hi is then an andn, not a second constant register */
    /* the tag: H 0, type ALLOC or FREE (bit 3 either), S as with_s, Source not the escape */
    const unsigned tag_want = with_s ? HT_FMT_TAG_S : 0;
    while (p < fast_end && at < at_end) {
        size_t k = (size_t)(fast_end - p - 1) / FAST_RECORD(with_s) + 1;
        const uintptr_t at_stop = (at_end - at) / step < k ? at_end : at + k * step;
        while (at < at_stop) {
            unsigned tag = *p;
            if (((tag & ~(1u << HT_FMT_TAG_TYPE_SHIFT)) ^ tag_want) >= HT_FMT_SRC_ESCAPE)
                goto done;
            const uint8_t *q = p + 1;
            uint64_t is_alloc = (uint64_t)((tag >> HT_FMT_TAG_TYPE_SHIFT) & 1) - 1; /* ~0: ALLOC */
            uint64_t w = load64(q), stop = ~w & hi;
            /* the stop bits of the record's second to fourth varint in these 8 bytes, and of
             * its last (FREE: 2 varints, ALLOC 3, one more with S); 0 where there are fewer */
            uint64_t stop2 = stop & (stop - 1), stop3 = stop2 & (stop2 - 1);
            uint64_t stop4 = stop3 & (stop3 - 1);
            uint64_t last = with_s ? (stop3 & ~is_alloc) | (stop4 & is_alloc)
                                   : (stop2 & ~is_alloc) | (stop3 & is_alloc);
            uint64_t dts, stack = 0, size, av;
            if (use_pext && last != 0) {
                /* All its varints end in these 8 bytes: every field straight from w, and the
                 * record's length from the last stop bit, not from a chain of varint lengths
                 * (each a load, a count, an add: the decoder's critical path). */
                uint64_t b1 = stop ^ (stop - 1), b2 = stop2 ^ (stop2 - 1);
                uint64_t b3 = stop3 ^ (stop3 - 1), b4 = stop4 ^ (stop4 - 1);
                dts = vx_value_hi(w, stop, hi, true);
                uint64_t f2 = vx_field_hi(w, b2 & ~b1, hi);
                uint64_t f3 = vx_field_hi(w, b3 & ~b2, hi);
                /* (with pext the check pass is check_run: here store is always true) */
                if (with_s) {
                    uint64_t f4 = vx_field_hi(w, b4 & ~b3, hi);
                    stack = f2;
                    size = f3;
                    av = f3 ^ ((f3 ^ f4) & is_alloc);
                } else {
                    size = f2;
                    av = f2 ^ ((f2 ^ f3) & is_alloc);
                }
                q += vx_len(last);
            } else {
                /* field by field */
                if (stop == 0)
                    goto done;
                dts = vx_value_hi(w, stop, hi, use_pext);
                q += vx_len(stop);
                unsigned len;
                if (with_s) {
                    if ((len = vx_window(q, hi, &stack, use_pext)) == 0)
                        goto done;
                    q += len;
                }
                if ((len = vx_window(q, hi, &size, use_pext)) == 0) /* FREE: its address */
                    goto done;
                q += len & (unsigned)is_alloc;
                if ((len = vx_window(q, hi, &av, use_pext)) == 0)
                    goto done;
                q += len;
            }
            if (with_s && stack - 1 >= n_stacks_before) /* 0 or not defined before the chunk */
                goto done;
            if (av & 1)
                goto done;
            dts_or |= dts;
            ts += dts;
            p = q;
            if (!store) {
                at++;
                continue; /* the check pass: registers and checks only */
            }
            ht_reader_event *const e = (ht_reader_event *)at;
            addr += (uint64_t)ht_fmt_unzigzag(av >> 1) << 4;
            uint64_t source = tag & HT_FMT_TAG_SRC_MASK;
            uint16_t type = (uint16_t)(HT_EVENT_HEAP_FREE ^
                                       ((HT_EVENT_HEAP_FREE ^ HT_EVENT_HEAP_ALLOC) & is_alloc));
            e->event.timestamp_ns = ts;
            memcpy((char *)e + offsetof(ht_event, tid), &tid_heap, sizeof tid_heap); /* + heap */
            e->event.type = type;
            /* alloc = {size, address, source}, free = {address, source}: words at 24, 32,
             * 40, in this order so that FREE's address and source overwrite size and 0 */
            const size_t word = offsetof(ht_event, alloc) + (8 & (size_t)is_alloc);
            put64(e, offsetof(ht_event, alloc) + 16, 0);
            put64(e, offsetof(ht_event, alloc) + 24, 0);
            put64(e, offsetof(ht_event, alloc) + 32, 0);
            put64(e, offsetof(ht_event, alloc), size);
            put64(e, word, addr);
            put64(e, word + 8, source);
            e->event.sequence = seq++;
            put64(e, offsetof(ht_reader_event, stack_id), stack); /* stack_id, reserved_ = 0 */
            at += step;
        }
    }
done:
    d->p = p;
    d->n = store ? first + (uint32_t)((ht_reader_event *)at - out) : (uint32_t)at;
    d->ts = ts;
    d->seq = seq;
    d->addr = addr;
    /* Fewer than 2^32 steps of less than 2^32 each advance by less than 2^64: ts wrapped
     * around exactly when it ended below its start. Larger steps: assume it did (that only
     * keeps the chunk from the window merge). */
    d->back |= (dts_or >> 32) != 0 || ts < ts_start;
}

_Static_assert(FAST_RECORD(1) + 8 <= RD_MAX_RECORD, "a fast record stays before the end");

/* The check pass's fast_run with pext and pdep (the CPUs that have a fast pext have a fast
 * pdep): the same records, the same checks, the same registers (ts, n, back), but nothing
 * else: a record's f varints end where the f-th stop bit of its 8-byte window is (one pdep
 * instead of a chain of stop-bit steps), the address field's parity is bit 0 of the byte
 * after the (f-1)-th, and only dts (and with S the stack id) are extracted. Records whose
 * varints do not all end in the window are taken field by field, as fast_run does. */
static inline __attribute__((always_inline)) void check_run(rd_dec *d, const uint8_t *fast_end,
                                                            uint32_t n_end,
                                                            uint64_t n_stacks_before,
                                                            const bool with_s)
{
    if (__BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__)
        return;
    const uint8_t *p = d->p;
    uint32_t n = d->n;
    uint64_t ts = d->ts;
    const uint64_t ts_start = ts;
    uint64_t dts_or = 0;
    uint64_t hi = 0x8080808080808080ull;
    __asm__("" : "+r"(hi));
    const unsigned tag_want = with_s ? HT_FMT_TAG_S : 0;
    while (p < fast_end && n < n_end) {
        size_t k = (size_t)(fast_end - p - 1) / FAST_RECORD(with_s) + 1;
        const uint32_t n_stop = n_end - n < k ? n_end : n + (uint32_t)k;
        while (n < n_stop) {
            unsigned tag = *p;
            if (((tag & ~(1u << HT_FMT_TAG_TYPE_SHIFT)) ^ tag_want) >= HT_FMT_SRC_ESCAPE)
                goto done;
            /* its f varints: dts [stack] [size] address; sel = 1 << (f - 1) */
            const unsigned is_free = (tag >> HT_FMT_TAG_TYPE_SHIFT) & 1u;
            const uint64_t sel = (with_s ? 8u : 4u) >> is_free;
            uint64_t w = load64(p + 1), stop = ~w & hi;
            uint64_t last = pdep64(sel, stop);
            uint64_t b1 = stop ^ (stop - 1); /* dts's bytes and the stop bits above */
            uint64_t dts;
            const uint8_t *q;
            if (last != 0) {
                uint64_t before = pdep64(sel >> 1, stop);
                if (w & (before << 1))
                    goto done; /* odd address field */
                dts = vx_field_hi(w, b1, hi);
                if (with_s) {
                    uint64_t s2 = stop & (stop - 1);
                    uint64_t stack = vx_field_hi(w, (s2 ^ (s2 - 1)) & ~b1, hi);
                    if (stack - 1 >= n_stacks_before)
                        goto done;
                }
                q = p + 1 + vx_len(last);
            } else {
                if (stop == 0)
                    goto done;
                dts = vx_field_hi(w, b1, hi);
                q = p + 1 + vx_len(stop);
                uint64_t v;
                unsigned len;
                if (with_s) {
                    if ((len = vx_window(q, hi, &v, true)) == 0 || v - 1 >= n_stacks_before)
                        goto done;
                    q += len;
                }
                if (!is_free) {
                    if ((len = vx_window(q, hi, &v, true)) == 0)
                        goto done;
                    q += len;
                }
                if ((len = vx_window(q, hi, &v, true)) == 0 || (v & 1) != 0)
                    goto done;
                q += len;
            }
            dts_or |= dts;
            ts += dts;
            n++;
            p = q;
        }
    }
done:
    d->p = p;
    d->n = n;
    d->ts = ts;
    d->back |= (dts_or >> 32) != 0 || ts < ts_start;
}

/* fast_run out of line, one per varint decoder, S and store (the decoder, or the check pass
 * with no stores): its loop then has the registers to itself (inlined into decode_run, half
 * its registers were spilled around the loop). */
#define FAST_RUN_ARGS                                                                              \
    rd_dec *d, const rd_chunk *c, const uint8_t *fast_end, ht_reader_event *out, uint32_t first,   \
        uint32_t n_end, uint64_t n_stacks
#define FAST_RUN(name, use_pext, with_s, store)                                                    \
    static void name(FAST_RUN_ARGS)                                                                \
    {                                                                                              \
        fast_run(d, c, fast_end, out, first, n_end, n_stacks, use_pext, with_s, store);            \
    }
#define BMI __attribute__((target("bmi,bmi2")))
// clang-format off
__attribute__((noinline)) FAST_RUN(fast_run_generic, false, false, true)
__attribute__((noinline)) FAST_RUN(fast_run_generic_s, false, true, true)
__attribute__((noinline)) BMI FAST_RUN(fast_run_pext, true, false, true)
__attribute__((noinline)) BMI FAST_RUN(fast_run_pext_s, true, true, true)
__attribute__((noinline)) FAST_RUN(check_run_generic, false, false, false)
__attribute__((noinline)) FAST_RUN(check_run_generic_s, false, true, false)
__attribute__((noinline)) BMI static void check_run_pext(FAST_RUN_ARGS)
{
    (void)c, (void)out, (void)first;
    check_run(d, fast_end, n_end, n_stacks, false);
}
__attribute__((noinline)) BMI static void check_run_pext_s(FAST_RUN_ARGS)
{
    (void)c, (void)out, (void)first;
    check_run(d, fast_end, n_end, n_stacks, true);
}
// clang-format on

/* The decoder from state *dp (events [0, dp->n) of chunk c decoded before; its heap table in
 * heaps[]): the next events into out[0 ..), the event dp->n to out[0]. n_stop == UINT32_MAX:
 * the whole rest of the chunk, then the chunk-level checks (FORMAT.md 6.4); else only until
 * dp->n == n_stop (<= n_records; a piece: the check pass has seen the whole chunk), stopping
 * right after that event. store false (the check pass): every check, no event stored, out
 * unused, and the seq and addr registers left stale (nothing checks them). True, or false
 * with status BAD_RECORD set at the failing record. */
static inline __attribute__((always_inline)) bool
decode_run(ht_reader *r, const rd_chunk *c, const uint8_t *payload, rd_dec *dp, uint64_t *heaps,
           uint64_t n_stacks_before, ht_reader_event *out, uint32_t n_stop, const bool use_pext,
           const bool store)
{
    const uint8_t *const end = payload + c->payload_size;
    const uint8_t *const fast_end = c->payload_size > RD_MAX_RECORD ? end - RD_MAX_RECORD : payload;
    /* the fast path runs while 1 <= n < n_end */
    const uint32_t n_end = c->n_records < n_stop ? c->n_records : n_stop;
    const uint32_t first = dp->n;
    rd_dec d = *dp;
    const uint8_t *rec = d.p;
    const char *why = NULL;
    const uint64_t payload_off = c->off + HT_FMT_CHUNK_HDR_SIZE;

    while (d.p < end && d.n < n_stop) {
        /* Unchecked lengths while the record cannot reach end (and the first event, whose
         * timestamp is checked against first_ts, and the n_records limit are behind). */
        while (d.p < fast_end && d.n - 1u < n_end - 1u) {
            if (!d.pending) {
                bool with_s = (*d.p & HT_FMT_TAG_S) != 0; /* the loop for this record's S */
                if (store && use_pext)
                    (with_s ? fast_run_pext_s : fast_run_pext)(&d, c, fast_end, out, first, n_end,
                                                               n_stacks_before);
                else if (store)
                    (with_s ? fast_run_generic_s : fast_run_generic)(&d, c, fast_end, out, first,
                                                                     n_end, n_stacks_before);
                else if (use_pext)
                    (with_s ? check_run_pext_s : check_run_pext)(&d, c, fast_end, out, first, n_end,
                                                                 n_stacks_before);
                else
                    (with_s ? check_run_generic_s : check_run_generic)(&d, c, fast_end, out, first,
                                                                       n_end, n_stacks_before);
                if (d.p >= fast_end || d.n - 1u >= n_end - 1u)
                    break;
            }
            rec = d.p;
            if ((why = record_decode(&d, heaps, r, c, end, out, first, use_pext, false, store)) !=
                NULL)
                goto bad;
        }
        if (d.p >= end || d.n >= n_stop)
            break;
        rec = d.p;
        if ((why = record_decode(&d, heaps, r, c, end, out, first, use_pext, true, store)) != NULL)
            goto bad;
    }
    *dp = d;
    if (n_stop != UINT32_MAX)
        return true;
    if (d.pending) {
        why = "control record not followed by an event";
        goto bad;
    }
    if (d.n != c->n_records) {
        rec = end;
        why = "fewer event records than the header's n_records";
        goto bad;
    }
    if (d.n > 0 && d.ts != c->last_ts) {
        rec = end;
        why = "last event's timestamp differs from the header's last_ts";
        goto bad;
    }
    return true;
bad:
    ht__rd_fail(r, HT_READER_BAD_RECORD, payload_off + (uint64_t)(rec - payload),
                "bad record in the event chunk of tid %u at offset %llu: %s", c->tid,
                (unsigned long long)c->off, why);
    return false;
}

#define DECODE_ARGS                                                                                \
    ht_reader *r, const rd_chunk *c, const uint8_t *payload, rd_dec *dp, uint64_t *heaps,          \
        uint64_t n_stacks, ht_reader_event *out, uint32_t n_stop
static bool decode_generic(DECODE_ARGS)
{
    return decode_run(r, c, payload, dp, heaps, n_stacks, out, n_stop, false, true);
}

static bool check_generic(DECODE_ARGS)
{
    return decode_run(r, c, payload, dp, heaps, n_stacks, out, n_stop, false, false);
}

/* With BMI1 and BMI2 (the CPU has them when it has a fast pext): andn, blsmsk, tzcnt. */
BMI static bool decode_pext(DECODE_ARGS)
{
    return decode_run(r, c, payload, dp, heaps, n_stacks, out, n_stop, true, true);
}

BMI static bool check_pext(DECODE_ARGS)
{
    return decode_run(r, c, payload, dp, heaps, n_stacks, out, n_stop, true, false);
}

/* pext is one cycle on Intel (Haswell on) and AMD family 19h (Zen 3, 4); microcoded and slow
 * on Zen 1-2, so everything else takes the shift-and-mask decoder. */
static int cpu_fast_pext(void)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2") &&
           (__builtin_cpu_is("intel") || __builtin_cpu_is("amdfam19h"));
#else
    return 0;
#endif
}

_Atomic int ht__rd_pext = -1;

static bool pext_use(void)
{
    int use = atomic_load_explicit(&ht__rd_pext, memory_order_relaxed);
    if (use < 0) {
        use = cpu_fast_pext();
        atomic_store_explicit(&ht__rd_pext, use, memory_order_relaxed);
    }
    return use != 0;
}

/* The registers at the start of chunk c (FORMAT.md 5). */
static void dec_init(rd_dec *d, const rd_chunk *c, const uint8_t *payload)
{
    d->p = payload;
    d->ts = c->first_ts;
    d->seq = c->first_seq;
    d->addr = 0;
    d->heap = 0;
    d->n = 0;
    d->n_heaps = 0;
    d->flags = 0;
    d->pending = false;
    d->back = false;
}

/* The whole chunk through the decoder into out, or through the store-free check pass when out
 * is NULL; *sorted: no TIME_BACK. */
static bool whole_chunk(ht_reader *r, const rd_chunk *c, const uint8_t *payload,
                        ht_reader_event *out, bool *sorted)
{
    uint64_t heaps[HT_FMT_HEAP_TABLE]; /* the chunk's heap table */
    rd_dec d;
    dec_init(&d, c, payload);
    const uint64_t n_stacks = stacks_before(&r->stacks, c->off);
    bool pext = pext_use(), ok;
    if (out != NULL)
        ok = pext ? decode_pext(r, c, payload, &d, heaps, n_stacks, out, UINT32_MAX)
                  : decode_generic(r, c, payload, &d, heaps, n_stacks, out, UINT32_MAX);
    else
        ok = pext ? check_pext(r, c, payload, &d, heaps, n_stacks, NULL, UINT32_MAX)
                  : check_generic(r, c, payload, &d, heaps, n_stacks, NULL, UINT32_MAX);
    *sorted = !d.back;
    return ok;
}

bool ht__rd_decode_events(ht_reader *r, const rd_chunk *c, const uint8_t *payload,
                          ht_reader_event *out, bool *sorted)
{
    return whole_chunk(r, c, payload, out, sorted);
}

bool ht__rd_check_events(ht_reader *r, const rd_chunk *c, const uint8_t *payload, bool *sorted)
{
    return whole_chunk(r, c, payload, NULL, sorted);
}

_Static_assert(RD_HEAP_TABLE == HT_FMT_HEAP_TABLE, "rd_piece's heap table holds FORMAT.md 5's");

void ht__rd_piece_start(ht_reader *r, rd_piece *pc, const rd_chunk *c, const uint8_t *payload)
{
    pc->ch = *c;
    pc->payload = payload;
    pc->n_stacks = stacks_before(&r->stacks, c->off);
    dec_init(&pc->d, c, payload);
}

bool ht__rd_piece_decode(ht_reader *r, rd_piece *pc, ht_reader_event *out, uint32_t max,
                         uint32_t *n_out)
{
    const uint32_t n0 = pc->d.n, left = pc->ch.n_records - n0;
    const uint32_t n_stop = n0 + (max < left ? max : left);
    bool ok =
        pext_use()
            ? decode_pext(r, &pc->ch, pc->payload, &pc->d, pc->heaps, pc->n_stacks, out, n_stop)
            : decode_generic(r, &pc->ch, pc->payload, &pc->d, pc->heaps, pc->n_stacks, out, n_stop);
    *n_out = pc->d.n - n0;
    if (ok && *n_out != n_stop - n0) { /* the check pass saw these events: cannot happen */
        ht__rd_fail(r, HT_READER_BAD_RECORD, pc->ch.off,
                    "event chunk at offset %llu decoded differently the second time",
                    (unsigned long long)pc->ch.off);
        return false;
    }
    return ok;
}
