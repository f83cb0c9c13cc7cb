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

static int key_cmp(const void *pa, const void *pb)
{
    const ht_event *a = pa, *b = pb;
    if (a->timestamp_ns != b->timestamp_ns)
        return a->timestamp_ns < b->timestamp_ns ? -1 : 1;
    if (a->sequence != b->sequence)
        return a->sequence < b->sequence ? -1 : 1;
    if (a->tid != b->tid)
        return a->tid < b->tid ? -1 : 1;
    return 0;
}

static bool same_event(const ht_event *a, const ht_event *b)
{
    return a->timestamp_ns == b->timestamp_ns && a->tid == b->tid && a->sequence == b->sequence &&
           a->type == b->type && a->heap_handle == b->heap_handle &&
           memcmp(&a->alloc, &b->alloc, sizeof a->alloc) == 0;
}

/* Builds a trace of n_threads monotone streams (thread t has 300 + 700 t events) into *t and
 * the expected merged order into *want (caller frees). */
static size_t build(tb_trace *t, int n_threads, uint64_t seed, ht_event **want)
{
    size_t total = 0;
    for (int th = 0; th < n_threads; th++)
        total += 300 + 700 * (size_t)th;
    ht_event *all = calloc(total, sizeof *all);
    tb_init(t, 1, "m", 1, 0, 0);
    uint64_t rng = seed;
    size_t at = 0;
    for (int th = 0; th < n_threads; th++) {
        size_t n = 300 + 700 * (size_t)th;
        ht_event *ev = &all[at];
        uint64_t ts = 1000;
        for (size_t i = 0; i < n; i++) {
            ht_event *e = &ev[i];
            ts += tb_rand(&rng) % 4; /* 0: equal timestamps, within and across threads */
            e->timestamp_ns = ts;
            e->tid = 50 + (uint32_t)th;
            e->sequence = i + 1;
            e->heap_handle = 0x4000;
            if (i % 2 == 0) {
                e->type = HT_EVENT_HEAP_ALLOC;
                e->alloc.address = 0x100000 + (tb_rand(&rng) % 4096) * 16;
                e->alloc.size = 1 + tb_rand(&rng) % 70000;
                e->alloc.source = 1 + (uint32_t)(tb_rand(&rng) % 4);
            } else {
                e->type = HT_EVENT_HEAP_FREE;
                e->free.address = ev[i - 1].alloc.address;
                e->free.source = 2;
            }
        }
        ht_enc_stream s = {.tid = 50 + (uint32_t)th, .next_seq = 1};
        /* in a few pieces, so that chunks of different threads interleave in the file */
        for (size_t done = 0; done < n;) {
            size_t k = 100 + (size_t)(tb_rand(&rng) % 900);
            k = k < n - done ? k : n - done;
            tb_events(t, &s, ev + done, NULL, k, 300 + (size_t)(tb_rand(&rng) % 3000));
            done += k;
        }
        at += n;
    }
    tb_end(t, 0, NULL, 0);
    qsort(all, total, sizeof *all, key_cmp);
    *want = all;
    return total;
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
