/* test_reader_merge_paths.c — the reader's merge and decoder variants (src/reader/merge.c,
 * decode.c): per-thread monotone streams of 1, 2, 4, 8 and 12 threads (12: the binary heap,
 * handing over to the batched scan as threads end at different lengths), with many equal
 * timestamps across threads and chunks of odd sizes, come out in exactly the (timestamp,
 * sequence, tid) order; with the shift-and-mask varint decoder and, where the CPU has BMI2,
 * the pext one, the events are identical. */
#include "harness.h"
#include "reader/internal.h"
#include "trace_build.h"

#include <heaptrail/reader.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static bool same_event(const ht_event *a, const ht_event *b)
{
    return a->timestamp_ns == b->timestamp_ns && a->tid == b->tid && a->sequence == b->sequence &&
           a->type == b->type && a->heap_handle == b->heap_handle &&
           memcmp(&a->alloc, &b->alloc, sizeof a->alloc) == 0;
}

/* A trace of n_threads monotone streams (thread t has 300 + 700 t events) into *t and the
 * expected merged order into *want (caller frees). */
static size_t build(tb_trace *t, int n_threads, uint64_t seed, ht_event **want)
{
    return tb_merge_streams(t, n_threads, seed, 300, 700, 3000, 0, want);
}

static size_t read_all(const tb_trace *t, ht_event *got, size_t cap)
{
    ht_reader *r;
    if (ht_reader_open_memory(t->data, t->size, &r) != HT_READER_OK)
        return 0;
    ht_reader_event re;
    size_t n = 0;
    while (n < cap && ht_reader_next(r, &re))
        got[n++] = re.event;
    CHECK(ht_reader_status(r, NULL, NULL) == HT_READER_OK);
    CHECK(!ht_reader_next(r, &re));
    ht_reader_close(r);
    return n;
}

static void merge_order_exact(void)
{
    static const int threads[] = {1, 2, 4, 8, 12};
    for (size_t v = 0; v < sizeof threads / sizeof threads[0]; v++) {
        tb_trace t;
        ht_event *want;
        size_t total = build(&t, threads[v], 77 + v, &want);
        ht_event *got = calloc(total + 1, sizeof *got);
        size_t n = read_all(&t, got, total + 1);
        CHECK_EQ_U(n, total);
        size_t bad = 0;
        for (size_t i = 0; i < n && i < total; i++)
            bad += !same_event(&got[i], &want[i]);
        if (bad != 0)
            fprintf(stderr, "  %d threads: %zu events out of order or wrong\n", threads[v], bad);
        CHECK_EQ_U(bad, 0);
        free(got);
        free(want);
        tb_free(&t);
    }
}

static void decoders_agree(void)
{
    tb_trace t;
    ht_event *want;
    size_t total = build(&t, 4, 5, &want);
    ht_event *a = calloc(total + 1, sizeof *a), *b = calloc(total + 1, sizeof *b);
    atomic_store(&ht__rd_pext, 0);
    size_t na = read_all(&t, a, total + 1);
    CHECK_EQ_U(na, total);
    __builtin_cpu_init();
    if (__builtin_cpu_supports("bmi2")) {
        atomic_store(&ht__rd_pext, 1);
        size_t nb = read_all(&t, b, total + 1);
        CHECK_EQ_U(nb, total);
        size_t bad = 0;
        for (size_t i = 0; i < na && i < nb; i++)
            bad += !same_event(&a[i], &b[i]);
        CHECK_EQ_U(bad, 0);
    } else {
        fprintf(stderr, "  (no BMI2 here: the pext decoder is not run)\n");
    }
    atomic_store(&ht__rd_pext, -1);
    free(a);
    free(b);
    free(want);
    tb_free(&t);
}

TEST_MAIN(TEST(merge_order_exact), TEST(decoders_agree))
