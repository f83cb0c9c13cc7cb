/* cfi.h — x86-64 DWARF call-frame information for the own unwinder: a parser of
 * .eh_frame_hdr / .eh_frame (CIE, FDE) that evaluates an FDE's CFA program up to a pc, over
 * byte buffers it never trusts (cfi.c, fuzzed by fuzz/fuzz_cfi.c), and the process's module
 * images with the lock-free per-pc rule cache the hot path reads (cfi_map.c). See
 * docs/decisions/0007-own-dwarf-unwinder.md. Nothing here mallocs. */
#ifndef HT_TRACE_CFI_H
#define HT_TRACE_CFI_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* DWARF register numbers on x86-64 (System V psABI, figure 3.36). */
#define HT_CFI_REG_RBP 6u
#define HT_CFI_REG_RSP 7u
#define HT_CFI_REG_RA  16u

/* One module's unwind tables as the parser sees them: byte copies plus the addresses they
 * had in the process (pc-relative and data-relative pointers are resolved against those). */
typedef struct ht_cfi_image {
    const uint8_t *hdr; /* .eh_frame_hdr (PT_GNU_EH_FRAME), hdr_size bytes */
    size_t hdr_size;
    uint64_t hdr_addr; /* its address in the process */
    const uint8_t *eh; /* .eh_frame up to the end of its PT_LOAD, eh_size bytes */
    size_t eh_size;
    uint64_t eh_addr; /* its address in the process */
} ht_cfi_image;

typedef enum ht_cfi_status {
    HT_CFI_OK = 0,          /* rule filled */
    HT_CFI_OUTERMOST = 1,   /* the return address is undefined here: the stack ends */
    HT_CFI_UNSUPPORTED = 2, /* expressions, signal frames, other CFA registers, ... */
    HT_CFI_NO_FDE = 3,      /* no FDE covers pc */
    HT_CFI_BAD = 4,         /* malformed tables (out of bounds, bad encodings, loops) */
} ht_cfi_status;

/* The caller's registers at a call site: CFA = (rbp or rsp) + cfa_off; the caller's rsp is
 * the CFA; its return address is at CFA + ra_off; its rbp is unchanged (rbp_off == 0) or
 * was saved at CFA + rbp_off (rbp_off < 0). */
typedef struct ht_cfi_rule {
    uint8_t cfa_reg; /* HT_CFI_REG_RSP or HT_CFI_REG_RBP */
    int64_t cfa_off; /* bytes */
    int64_t ra_off;  /* bytes, < 0 */
    int64_t rbp_off; /* bytes, < 0; 0 = rbp keeps its value */
} ht_cfi_rule;

/* -- cfi.c: the parser (pure; any bytes) --------------------------------------------------- */

/* Finds the FDE covering pc through hdr's binary-search table and runs its CIE's and its own
 * instructions up to pc. Every read is bounds-checked against the image; never crashes or
 * loops on any input. Returns the status; *rule is meaningful only for HT_CFI_OK. */
ht_cfi_status ht__cfi_find(const ht_cfi_image *img, uint64_t pc, ht_cfi_rule *rule);
/* Reads one DW_EH_PE pointer of encoding enc from [p, p + size), which lies at address addr
 * (pc-relative base) with data_base for data-relative ones. False when it does not fit or
 * the encoding is not supported; else *out and the bytes *used. */
bool ht__cfi_read_pointer(const uint8_t *p, size_t size, uint64_t addr, uint8_t enc,
                          uint64_t data_base, uint64_t *out, size_t *used);
/* Names for statuses (tests, diagnostics). */
const char *ht__cfi_status_name(ht_cfi_status st);

/* -- cfi_map.c: the process's images and the rule cache ------------------------------------ */

/* A cached rule in one 64-bit word (so racing threads may overwrite entries freely):
 *   63..32 pc tag (ra >> HT_CFI_CACHE_BITS)   31..28 map generation (1..15, cycling)
 *   27..26 kind (0 empty, HT_CFI_W_NORMAL, HT_CFI_W_OUTER, HT_CFI_W_UNSUP)
 *   25 CFA is rbp-based   24..19 rbp saved at CFA - 8 * k (0: unchanged)   18..0 CFA offset
 * A NORMAL word always has the return address at CFA - 8. */
#define HT_CFI_CACHE_BITS 15u
#define HT_CFI_W_NORMAL   1u
#define HT_CFI_W_OUTER    2u
#define HT_CFI_W_UNSUP    3u
#define HT_CFI_W_KIND(w)  ((unsigned)((w) >> 26) & 3u)
#define HT_CFI_W_RBPCFA   ((uint64_t)1 << 25)
#define HT_CFI_W_RBPK(w)  ((unsigned)((w) >> 19) & 63u)
#define HT_CFI_W_OFF(w)   ((uintptr_t)((w)&0x7FFFFu))

extern _Atomic uint64_t *ht__cfi_cache;  /* 1 << HT_CFI_CACHE_BITS words, or NULL */
extern _Atomic uint32_t ht__cfi_gen_tag; /* the current map's generation bits (never 0) */

/* The word for return address ra when the cache holds a NORMAL rule of the current map
 * (cache = ht__cfi_cache, want_low = ht__cfi_gen_tag | HT_CFI_W_NORMAL << 26, both loaded
 * once per capture): a load and a compare. Anything else goes to ht__cfi_rule_slow, which
 * looks ra up in the current map (binary search, then ht__cfi_find at ra - 1), caches the
 * answer and returns it (any kind). A pc in no known module answers HT_CFI_W_UNSUP uncached
 * and asks for a refresh (done outside the hot path). Lock-free; no malloc, no syscall. */
uint64_t ht__cfi_rule_slow(uintptr_t ra);
static inline uint64_t ht__cfi_rule(_Atomic uint64_t *cache, uint64_t want_low, uintptr_t ra)
{
    uint64_t w =
        atomic_load_explicit(&cache[ra & ((1u << HT_CFI_CACHE_BITS) - 1)], memory_order_relaxed);
    if (((w ^ ((uint64_t)(ra >> HT_CFI_CACHE_BITS) << 32 | want_low)) >> 26) == 0)
        return w;
    return ht__cfi_rule_slow(ra);
}
/* Encodes a rule as a cache word for ra (without the generation bits), or 0 when it does
 * not fit (the caller then treats the frame as unsupported). */
uint64_t ht__cfi_encode(uintptr_t ra, ht_cfi_status st, const ht_cfi_rule *rule);

/* Maps the cache and reads every loaded module's tables (dl_iterate_phdr; copies the bytes
 * so that a dlclose can never leave the hot path reading unmapped memory). Outside malloc.
 * False on failure (no memory). */
bool ht__cfi_map_init(void);
/* Rescans when the loader's set of objects changed (or a capture found a pc in no known
 * module), publishing a new map and a new generation. Writer thread / tests only: takes the
 * loader's lock. Returns true when it rescanned. */
bool ht__cfi_map_refresh(void);
/* Unmaps everything (no capture in flight). */
void ht__cfi_map_fini(void);
/* The current map generation (starts at 1 after init; 0 before). */
uint32_t ht__cfi_map_gen(void);

#endif
