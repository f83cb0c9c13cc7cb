/* format.h — the bytes of docs/FORMAT.md version 1 as constants and inline helpers
 * (little-endian loads/stores, LEB128 varints, zigzag, CRC32C), shared by the encoder
 * (src/trace/encode.c) and the reader (src/reader/). Header-only and self-contained on
 * purpose: the reader includes it without linking anything of src/trace. It must never
 * allocate, never depend on another heaptrail header, and change only with FORMAT.md. */
#ifndef HT_TRACE_FORMAT_H
#define HT_TRACE_FORMAT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* -- constants (FORMAT.md sections in brackets) -------------------------------------------- */

#define HT_FMT_VERSION        1u
#define HT_FMT_FILE_MAGIC     "HTRACE\r\n" /* [3] 8 bytes */
#define HT_FMT_FILE_HDR_SIZE  48u
#define HT_FMT_CLOCK_MONO     1u
#define HT_FMT_MAX_CMDLINE    (1u << 20)
#define HT_FMT_CHUNK_MAGIC    "HTCK" /* [4] 4 bytes */
#define HT_FMT_CHUNK_HDR_SIZE 72u
#define HT_FMT_MAX_PAYLOAD    (1u << 24)

#define HT_FMT_KIND_EVENTS 1u /* [4] chunk kinds */
#define HT_FMT_KIND_META   2u
#define HT_FMT_KIND_END    3u

/* [6.1] tag byte */
#define HT_FMT_TAG_SRC_MASK   0x07u
#define HT_FMT_TAG_TYPE_SHIFT 3
#define HT_FMT_TAG_S          0x40u
#define HT_FMT_TAG_H          0x80u
#define HT_FMT_SRC_ESCAPE     7u

enum {
    HT_FMT_T_ALLOC = 0,
    HT_FMT_T_FREE = 1,
    HT_FMT_T_REALLOC = 2,
    HT_FMT_T_CREATE = 3,
    HT_FMT_T_DESTROY = 4,
    HT_FMT_T_EXPAND = 5,
    HT_FMT_T_CONTRACT = 6,
    HT_FMT_T_CONTROL = 7
};

#define HT_FMT_CTL_FLAGS     0x38u /* [6.3] */
#define HT_FMT_CTL_SEQ_SKIP  0x39u
#define HT_FMT_CTL_TIME_BACK 0x3Au

#define HT_FMT_HEAP_TABLE 32u /* [5] heaps[] capacity */

#define HT_FMT_META_MODULE  0x01u /* [7] metadata tags */
#define HT_FMT_META_STACK   0x02u
#define HT_FMT_META_UNLOAD  0x03u
#define HT_FMT_META_MARKER  0x04u
#define HT_FMT_END_SUMMARY  0x10u /* [8] */
#define HT_FMT_MAX_PATH     4096u
#define HT_FMT_MAX_BUILD_ID 64u
#define HT_FMT_MAX_FRAMES   1024u
#define HT_FMT_MAX_MARKER   4096u

/* Chunk header field offsets [4]. */
#define HT_FMT_CH_VERSION     4
#define HT_FMT_CH_KIND        6
#define HT_FMT_CH_TID         8
#define HT_FMT_CH_N_RECORDS   12
#define HT_FMT_CH_CHUNK_SEQ   16
#define HT_FMT_CH_FIRST_SEQ   24
#define HT_FMT_CH_FIRST_TS    32
#define HT_FMT_CH_LAST_TS     40
#define HT_FMT_CH_LOST        48
#define HT_FMT_CH_PAYLOAD     56
#define HT_FMT_CH_PAYLOAD_CRC 60
#define HT_FMT_CH_RESERVED    64
#define HT_FMT_CH_HEADER_CRC  68

/* Maps ht_event_type opcodes (0x20..0x2A) to the 3-bit tag type, and back. */
static inline int ht_fmt_type_from_opcode(unsigned opcode)
{
    switch (opcode) {
    case 0x21:
        return HT_FMT_T_ALLOC;
    case 0x24:
        return HT_FMT_T_FREE;
    case 0x22:
        return HT_FMT_T_REALLOC;
    case 0x20:
        return HT_FMT_T_CREATE;
    case 0x23:
        return HT_FMT_T_DESTROY;
    case 0x25:
        return HT_FMT_T_EXPAND;
    case 0x2A:
        return HT_FMT_T_CONTRACT;
    default:
        return -1;
    }
}

static const uint16_t ht_fmt_opcode_of_type[7] = {0x21, 0x24, 0x22, 0x20, 0x23, 0x25, 0x2A};

/* -- little-endian fixed-width fields ---------------------------------------------------- */

static inline void ht_fmt_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void ht_fmt_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void ht_fmt_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint16_t ht_fmt_get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t ht_fmt_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t ht_fmt_get64(const uint8_t *p)
{
    return (uint64_t)ht_fmt_get32(p) | (uint64_t)ht_fmt_get32(p + 4) << 32;
}

/* -- varints and zigzag ------------------------------------------------------------------ */

#define HT_FMT_VARINT_MAX 10u

/* Writes v at p (room for HT_FMT_VARINT_MAX bytes assumed); returns the byte after it. */
static inline uint8_t *ht_fmt_put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* Reads a varint from [*p, end): advances *p and returns 1, or returns 0 (cut off or more
 * than 64 bits) leaving *p anywhere inside [start, end]. Never reads at or past end. */
static inline int ht_fmt_get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    const uint8_t *q = *p;
    if (q < end && *q < 0x80) { /* the common one-byte case */
        *v = *q;
        *p = q + 1;
        return 1;
    }
    uint64_t r = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (q >= end)
            return 0;
        uint8_t b = *q++;
        if (shift == 63 && b > 1)
            return 0;
        r |= (uint64_t)(b & 0x7F) << shift;
        if (b < 0x80) {
            *v = r;
            *p = q;
            return 1;
        }
    }
    return 0;
}

static inline uint64_t ht_fmt_zigzag(int64_t x)
{
    return ((uint64_t)x << 1) ^ (uint64_t)(x >> 63);
}

static inline int64_t ht_fmt_unzigzag(uint64_t v)
{
    return (int64_t)((v >> 1) ^ (0 - (v & 1)));
}

/* -- CRC32C (Castagnoli), hardware when the CPU has it ----------------------------------- */

static inline uint32_t ht_fmt_crc32c_sw(uint32_t crc, const uint8_t *p, size_t n)
{
    /* Byte-at-a-time with a nibble table: slow but tiny; used only without SSE4.2. */
    static const uint32_t tab[16] = {0x00000000u, 0x105EC76Fu, 0x20BD8EDEu, 0x30E349B1u,
                                     0x417B1DBCu, 0x5125DAD3u, 0x61C69362u, 0x7198540Du,
                                     0x82F63B78u, 0x92A8FC17u, 0xA24BB5A6u, 0xB21572C9u,
                                     0xC38D26C4u, 0xD3D3E1ABu, 0xE330A81Au, 0xF36E6F75u};
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        crc = (crc >> 4) ^ tab[crc & 15];
        crc = (crc >> 4) ^ tab[crc & 15];
    }
    return crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("sse4.2"))) static inline uint32_t
ht_fmt_crc32c_hw(uint32_t crc, const uint8_t *p, size_t n)
{
    uint64_t c = crc;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __builtin_ia32_crc32di(c, w);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n > 0) {
        c32 = __builtin_ia32_crc32qi(c32, *p++);
        n--;
    }
    return c32;
}
#endif

/* CRC32C of n bytes at p (FORMAT.md section 1). */
static inline uint32_t ht_fmt_crc32c(const uint8_t *p, size_t n)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (__builtin_cpu_supports("sse4.2"))
        return ~ht_fmt_crc32c_hw(0xFFFFFFFFu, p, n);
#endif
    return ~ht_fmt_crc32c_sw(0xFFFFFFFFu, p, n);
}

/* CRC32C of a then b, as if they were contiguous. */
static inline uint32_t ht_fmt_crc32c_2(const uint8_t *a, size_t na, const uint8_t *b, size_t nb)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (__builtin_cpu_supports("sse4.2"))
        return ~ht_fmt_crc32c_hw(ht_fmt_crc32c_hw(0xFFFFFFFFu, a, na), b, nb);
#endif
    return ~ht_fmt_crc32c_sw(ht_fmt_crc32c_sw(0xFFFFFFFFu, a, na), b, nb);
}

#endif
