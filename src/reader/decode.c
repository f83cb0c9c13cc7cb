/* decode.c — the fast decoder of event chunk payloads (FORMAT.md 5-6): one tight loop that
 * turns a whole chunk into ht_reader_events, checking every varint, register, limit and the
 * chunk-level totals. Never reads outside [payload, payload + payload_size) and never writes
 * more than n_records events; on the first problem it reports and stops. */
#include "reader/internal.h"

#include "trace/format.h"

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
#else
static inline uint64_t pext64(uint64_t x, uint64_t mask)
{
    (void)x;
    (void)mask;
    return 0;
}
#endif

/* A varint, branch-free for up to 8 bytes when 8 bytes remain: the stop byte is found with
 * a bit scan and the 7-bit groups are packed with one pext (use_pext) or three shift-and-mask
 * steps. Varint lengths are unpredictable (a 1- or 2-byte dts), so this saves a mispredicted
 * branch per field. use_pext is a constant in each instance of the decoder. */
static inline __attribute__((always_inline)) int get_vx(const uint8_t **p, const uint8_t *end,
                                                        uint64_t *v, const bool use_pext)
{
    if (end - *p >= 8) {
        uint64_t w;
        memcpy(&w, *p, 8);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        uint64_t stop = ~w & 0x8080808080808080ull; /* high bit of each final-byte candidate */
        if (stop != 0) {
            unsigned bits = (unsigned)__builtin_ctzll(stop) + 1; /* 8 * length */
            uint64_t m = (stop ^ (stop - 1)) & 0x7F7F7F7F7F7F7F7Full;
            if (use_pext) {
                *v = pext64(w, m);
            } else {
                uint64_t x = w & m;
                x = ((x & 0x7F007F007F007F00ull) >> 1) | (x & 0x007F007F007F007Full);
                x = ((x & 0x3FFF00003FFF0000ull) >> 2) | (x & 0x00003FFF00003FFFull);
                x = ((x & 0x0FFFFFFF00000000ull) >> 4) | (x & 0x000000000FFFFFFFull);
                *v = x;
            }
            *p += bits >> 3;
            return 1;
        }
#endif
    }
    return ht_fmt_get_varint(p, end, v);
}

#define get_v(p, end, v) get_vx((p), (end), (v), use_pext)

/* An address field: delta against *reg (x16 when even), then *reg = the address. */
static inline __attribute__((always_inline)) int
addr_get(const uint8_t **p, const uint8_t *end, uint64_t *reg, uint64_t *out, const bool use_pext)
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

static inline __attribute__((always_inline)) bool decode_events(ht_reader *r, const rd_chunk *c,
                                                                const uint8_t *payload,
                                                                ht_reader_event *out,
                                                                const bool use_pext)
{
    const uint8_t *p = payload, *const end = payload + c->payload_size;
    const uint8_t *rec = p;
    uint64_t ts = c->first_ts, seq = c->first_seq, addr = 0, heap = 0;
    uint64_t heaps[HT_FMT_HEAP_TABLE];
    uint32_t n_heaps = 0, n = 0;
    uint16_t flags = 0;
    bool pending = false;
    const char *why = NULL;
    const uint64_t payload_off = c->off + HT_FMT_CHUNK_HDR_SIZE;

    while (p < end) {
        rec = p;
        unsigned tag = *p++;
        unsigned t = (tag >> HT_FMT_TAG_TYPE_SHIFT) & 7u;
        uint64_t v;
        if (t == HT_FMT_T_CONTROL) {
            if (!get_v(&p, end, &v)) {
                why = "control record cut off";
                goto bad;
            }
            if (tag == HT_FMT_CTL_FLAGS && v >= 1 && v <= 0xFFFF) {
                flags = (uint16_t)v;
            } else if (tag == HT_FMT_CTL_SEQ_SKIP && v >= 1) {
                seq += v;
            } else if (tag == HT_FMT_CTL_TIME_BACK && v >= 1) {
                ts -= v;
            } else {
                why = "reserved control tag or control value out of range";
                goto bad;
            }
            pending = true;
            continue;
        }
        if (n == c->n_records) {
            why = "more event records than the header's n_records";
            goto bad;
        }
        ht_reader_event *e = &out[n];
        memset(e, 0, sizeof *e);
        if (!get_v(&p, end, &v))
            goto cut;
        ts += v;
        if (tag & HT_FMT_TAG_H) {
            if (!get_v(&p, end, &v))
                goto cut;
            if (v == 0) {
                if (!get_v(&p, end, &heap))
                    goto cut;
                if (n_heaps < HT_FMT_HEAP_TABLE)
                    heaps[n_heaps++] = heap;
            } else if (v <= n_heaps) {
                heap = heaps[v - 1];
            } else {
                why = "heap selector beyond the chunk's heap table";
                goto bad;
            }
        }
        if (tag & HT_FMT_TAG_S) {
            if (!get_v(&p, end, &v))
                goto cut;
            if (v == 0 || v > r->stacks.n || r->stacks.def_off[v - 1] >= c->off) {
                why = "stack id not defined before this chunk";
                goto bad;
            }
            e->stack_id = (uint32_t)v;
        }
        uint64_t source = tag & HT_FMT_TAG_SRC_MASK;
        if (source == HT_FMT_SRC_ESCAPE) {
            if (!get_v(&p, end, &source))
                goto cut;
            if (source > 0xFFFFFFFFu) {
                why = "Source beyond 32 bits";
                goto bad;
            }
        }
        ht_event *ev = &e->event;
        ev->timestamp_ns = ts;
        ev->tid = c->tid;
        ev->type = ht_fmt_opcode_of_type[t];
        ev->flags = flags;
        ev->heap_handle = (uintptr_t)heap;
        ev->sequence = seq;
        if (t >= HT_FMT_T_CREATE && (tag & HT_FMT_TAG_SRC_MASK) != 0) {
            why = "Source bits set on an event without a Source";
            goto bad;
        }
        uint64_t a, b, cc, d;
        switch (t) {
        case HT_FMT_T_ALLOC:
            if (!get_v(&p, end, &a) || !addr_get(&p, end, &addr, &b, use_pext))
                goto cut;
            ev->alloc.size = a;
            ev->alloc.address = (uintptr_t)b;
            ev->alloc.source = (uint32_t)source;
            break;
        case HT_FMT_T_FREE:
            if (!addr_get(&p, end, &addr, &a, use_pext))
                goto cut;
            ev->free.address = (uintptr_t)a;
            ev->free.source = (uint32_t)source;
            break;
        case HT_FMT_T_REALLOC:
            if (!addr_get(&p, end, &addr, &a, use_pext) ||
                !addr_get(&p, end, &addr, &b, use_pext) || !get_v(&p, end, &cc) ||
                !get_v(&p, end, &d))
                goto cut;
            ev->realloc.new_address = (uintptr_t)a;
            ev->realloc.old_address = (uintptr_t)b;
            ev->realloc.new_size = cc;
            ev->realloc.old_size = d;
            ev->realloc.source = (uint32_t)source;
            break;
        case HT_FMT_T_CREATE:
            if (!get_v(&p, end, &a) || !get_v(&p, end, &b) || !get_v(&p, end, &cc))
                goto cut;
            if (a > 0xFFFFFFFFu) {
                why = "CREATE Flags beyond 32 bits";
                goto bad;
            }
            ev->create.flags = (uint32_t)a;
            ev->create.reserved_space = b;
            ev->create.committed_space = cc;
            break;
        case HT_FMT_T_DESTROY:
            break;
        default: /* EXPAND, CONTRACT */
            if (!addr_get(&p, end, &addr, &a, use_pext) || !get_v(&p, end, &b) ||
                !get_v(&p, end, &cc))
                goto cut;
            ev->expand.address = (uintptr_t)a;
            ev->expand.size = b;
            ev->expand.committed_space = cc;
            break;
        }
        if (n == 0 && ts != c->first_ts) {
            why = "first event's timestamp differs from the header's first_ts";
            goto bad;
        }
        n++;
        seq++;
        flags = 0;
        pending = false;
    }
    if (pending) {
        why = "control record not followed by an event";
        goto bad;
    }
    if (n != c->n_records) {
        rec = end;
        why = "fewer event records than the header's n_records";
        goto bad;
    }
    if (n > 0 && ts != c->last_ts) {
        rec = end;
        why = "last event's timestamp differs from the header's last_ts";
        goto bad;
    }
    return true;
cut:
    why = "event record cut off or a varint beyond 64 bits";
bad:
    ht__rd_fail(r, HT_READER_BAD_RECORD, payload_off + (uint64_t)(rec - payload),
                "bad record in the event chunk of tid %u at offset %llu: %s", c->tid,
                (unsigned long long)c->off, why);
    return false;
}

static bool decode_generic(ht_reader *r, const rd_chunk *c, const uint8_t *payload,
                           ht_reader_event *out)
{
    return decode_events(r, c, payload, out, false);
}

static bool decode_pext(ht_reader *r, const rd_chunk *c, const uint8_t *payload,
                        ht_reader_event *out)
{
    return decode_events(r, c, payload, out, true);
}

/* pext is one cycle on Intel (Haswell on) and AMD family 19h (Zen 3, 4); microcoded and slow
 * on Zen 1-2, so everything else takes the shift-and-mask decoder. */
static int cpu_fast_pext(void)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("bmi2") &&
           (__builtin_cpu_is("intel") || __builtin_cpu_is("amdfam19h"));
#else
    return 0;
#endif
}

_Atomic int ht__rd_pext = -1;

bool ht__rd_decode_events(ht_reader *r, const rd_chunk *c, const uint8_t *payload,
                          ht_reader_event *out)
{
    int use = atomic_load_explicit(&ht__rd_pext, memory_order_relaxed);
    if (use < 0) {
        use = cpu_fast_pext();
        atomic_store_explicit(&ht__rd_pext, use, memory_order_relaxed);
    }
    return use ? decode_pext(r, c, payload, out) : decode_generic(r, c, payload, out);
}
