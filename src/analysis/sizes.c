/* sizes.c — the analysis's fixed tables: event type and Source names, size buckets (powers of
 * two and the LFH size classes), lifetime buckets, window class names.
 * The LFH class table is a copy of src/heap/lfh.c's: the analysis reads traces and never links
 * the heap (DESIGN.md), and the trace does not record the table. tests/test_report_tables.c
 * compares this copy with ht_lfh_class_size() so the two cannot drift apart silently. */
#include "analysis/internal.h"

const uint32_t ht__an_lfh_class_size[HT_AN_N_LFH] = {
    16,   32,   48,   64,   80,   96,   112,  128,  160,   192,   224,   256,
    320,  384,  448,  512,  640,  768,  896,  1024, 1280,  1536,  1792,  2048,
    2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192, 10240, 12288, 14336, 16384};

/* The order of FORMAT.md's tag types, and of DESIGN.md's "type" names. */
const char *const ht__an_type_name[HT_AN_N_TYPES] = {"alloc",   "free",   "realloc", "create",
                                                     "destroy", "expand", "contract"};
const uint16_t ht__an_type_code[HT_AN_N_TYPES] = {
    HT_EVENT_HEAP_ALLOC,   HT_EVENT_HEAP_FREE,   HT_EVENT_HEAP_REALLOC, HT_EVENT_HEAP_CREATE,
    HT_EVENT_HEAP_DESTROY, HT_EVENT_HEAP_EXPAND, HT_EVENT_HEAP_CONTRACT};

const char *const ht__an_source_name[HT_AN_N_SOURCES] = {
    "other", "lookaside", "lowfrag", "mainpath", "slowpath", "invalid", "segment-heap"};

const char *const ht__an_window_name[HT_WIN_N] = {"AIFI", "AIFO", "AOFI", "AOFO"};

const char *const ht__an_lifetime_name[HT_AN_N_LIFETIME] = {
    "< 100 ns", "< 1 us",   "< 10 us", "< 100 us", "< 1 ms",
    "< 10 ms",  "< 100 ms", "< 1 s",   "< 10 s",   ">= 10 s"};

int ht__an_type_index(unsigned code)
{
    switch (code) {
    case HT_EVENT_HEAP_ALLOC:
        return 0;
    case HT_EVENT_HEAP_FREE:
        return 1;
    case HT_EVENT_HEAP_REALLOC:
        return 2;
    case HT_EVENT_HEAP_CREATE:
        return 3;
    case HT_EVENT_HEAP_DESTROY:
        return 4;
    case HT_EVENT_HEAP_EXPAND:
        return 5;
    case HT_EVENT_HEAP_CONTRACT:
        return 6;
    default:
        return -1;
    }
}

unsigned ht__an_pow2_bucket(uint64_t size)
{
    return size == 0 ? 0u : 64u - (unsigned)__builtin_clzll(size);
}

unsigned ht__an_lfh_class(uint64_t size)
{
    /* The table's shape: 16-byte steps up to 128, then four classes per power of two (the
     * heap computes it the same way; test_report_analysis checks every size against the
     * table). Size 0 is served by the first class. */
    if (size <= 128)
        return size == 0 ? 0u : (unsigned)((size + 15) / 16 - 1);
    if (size > ht__an_lfh_class_size[HT_AN_N_LFH - 1])
        return HT_AN_N_LFH;
    uint64_t m = size - 1;
    unsigned lg = 63u - (unsigned)__builtin_clzll(m);
    return 8u + (lg - 7u) * 4u + (unsigned)(m >> (lg - 2u)) - 4u;
}

unsigned ht__an_lifetime_bucket(uint64_t ns)
{
    unsigned k = 0;
    uint64_t limit = 100;
    while (k < HT_AN_N_LIFETIME - 1 && ns >= limit) {
        k++;
        limit *= 10;
    }
    return k;
}
