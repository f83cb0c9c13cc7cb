/* test_reader_window.c — the window merge (src/reader/merge.c: window_fill, its radix sort of
 * the timestamps and tie_group_fix) against the head-by-head merges it stands in for: over
 * many forged multi-thread traces, reading with the window merge on and off (ht__rd_window)
 * gives the identical event sequence, through ht_reader_next_batch and ht_reader_next. The
 * traces cover what the window must get right or step aside for: equal timestamps within
 * and across threads (tie groups of 2 to all threads, beyond TIE_THREADS too), streams that
 * go back in time (TIME_BACK: unsorted chunks) next to monotone ones, sequence numbers that
 * wrap around 2^64 inside a tie, gaps and whole streams sparser than a window's 2^33 ns
 * allow (steps up to 2^31 ns: the decoder keeps chunks with larger ones out of the window),
 * threads that end early, 2 to 64 threads (the scan and the heap below it), chunks written
 * thread after thread or interleaved with bursts (the shared walk over chunk headers, its
 * per-cursor queues and their overflow: merge.c cursor_next_chunk). Monotone traces are also
 * checked against the (timestamp, sequence, tid) order of qsort. */
#include "harness.h"
#include "reader/internal.h"
#include "trace_build.h"

#include <heaptrail/reader.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

enum { STEP_TIES, STEP_EQUAL, STEP_GAPS, STEP_SPARSE, STEP_SPREAD, N_STEPS };

/* How a forged trace looks. */
typedef struct win_shape {
    int n_threads;
    int step;      /* STEP_*: how timestamps advance */
    bool back;     /* some threads go back in time now and then */
    bool seq_wrap; /* some threads' sequence numbers wrap around 2^64 */
    bool mix;      /* chunks of the threads interleave in the file (a random thread's next
                      piece at a time, bursts of many from one included), else thread after
                      thread: the shared walk's queues, and their overflow, both ways */
} win_shape;

#define MAX_THREADS 64

/* The next timestamp step of a stream. */
static uint64_t step_next(int step, uint64_t *rng)
{
    switch (step) {
    case STEP_TIES:
        return tb_rand(rng) % 4;
    case STEP_EQUAL:
        return tb_rand(rng) % 64 == 0; /* long runs of one timestamp in every thread */
    case STEP_GAPS:
        return tb_rand(rng) % 50 == 0 ? (uint64_t)1 << (30 + tb_rand(rng) % 8) : tb_rand(rng) % 3;
    case STEP_SPARSE: /* windows wider than the keys' 2^33 ns */
        return tb_rand(rng) % 8 == 0 ? 0 : (uint64_t)1 << (24 + tb_rand(rng) % 8);
    default:
        return 50 + tb_rand(rng) % 151;
    }
}

/* Builds into *t a trace of the given shape; returns its event count, and *want (caller
 * frees) the events sorted by tb_key_cmp. */
static size_t forge(tb_trace *t, const win_shape *sh, uint64_t seed, ht_event **want)
{
    uint64_t rng = seed;
    size_t len[MAX_THREADS], total = 0;
    for (int th = 0; th < sh->n_threads; th++) {
        len[th] = 200 + (size_t)(tb_rand(&rng) % 2500);
        total += len[th];
    }
    ht_event *all = calloc(total, sizeof *all);
    tb_init(t, 1, "w", 1, 0, 0);
    size_t at = 0, start[MAX_THREADS], done[MAX_THREADS];
    ht_enc_stream s[MAX_THREADS];
    for (int th = 0; th < sh->n_threads; th++) {
        ht_event *ev = &all[at];
        uint64_t ts = 1000000 + tb_rand(&rng) % 8;
        bool back = sh->back && th % 3 == 1;
        uint64_t seq = sh->seq_wrap && th % 2 == 0 ? UINT64_MAX - tb_rand(&rng) % 300 : 1;
        for (size_t i = 0; i < len[th]; i++) {
            ht_event *e = &ev[i];
            ts += step_next(sh->step, &rng);
            e->timestamp_ns = back && tb_rand(&rng) % 61 == 0 ? ts - 1 - tb_rand(&rng) % 40 : ts;
            e->tid = 300 + (uint32_t)th;
            e->sequence = seq++;
            e->heap_handle = 0x5000;
            tb_alloc_or_free(e, tb_rand(&rng) % 2 == 0, &rng, 0x200000, 5000);
        }
        s[th] = (ht_enc_stream){.tid = 300 + (uint32_t)th, .next_seq = ev[0].sequence};
        start[th] = at;
        done[th] = 0;
        at += len[th];
    }
    /* the pieces: thread after thread, or (mix) the next of a random thread with events left,
     * a burst of up to 40 pieces of it one time in 8 */
    for (int th = 0, left = sh->n_threads, burst = 0; left > 0;) {
        if (sh->mix && burst == 0) {
            th = (int)(tb_rand(&rng) % (uint64_t)sh->n_threads);
            while (done[th] == len[th])
                th = (th + 1) % sh->n_threads;
            burst = tb_rand(&rng) % 8 == 0 ? 1 + (int)(tb_rand(&rng) % 40) : 1;
        }
        size_t k = 50 + (size_t)(tb_rand(&rng) % 700);
        k = k < len[th] - done[th] ? k : len[th] - done[th];
        tb_events(t, &s[th], &all[start[th] + done[th]], NULL, k,
                  300 + (size_t)(tb_rand(&rng) % 5000));
        done[th] += k;
        burst = burst > 0 ? burst - 1 : 0;
        if (done[th] == len[th]) {
            left--;
            burst = 0;
            if (!sh->mix)
                th++;
        }
    }
    tb_end(t, 0, NULL, 0);
    qsort(all, total, sizeof *all, tb_key_cmp);
    *want = all;
    return total;
}

/* Reads the whole trace: through ht_reader_next_batch with batch sizes from sizes[] in turn,
 * or (batch false) ht_reader_next. */
static size_t read_all(const tb_trace *t, bool batch, ht_reader_event *got, size_t cap)
{
    static const size_t sizes[] = {512, 1, 300, 7, 4096};
    ht_reader *r;
    if (ht_reader_open_memory(t->data, t->size, &r) != HT_READER_OK)
        return 0;
    size_t n = 0;
    const ht_reader_event *ptr[4096];
    for (unsigned step = 0; n < cap; step++) {
        if (!batch) {
            if (!ht_reader_next(r, &got[n]))
                break;
            n++;
            continue;
        }
        size_t k = ht_reader_next_batch(r, ptr, sizes[step % 5]);
        if (k == 0)
            break;
        for (size_t i = 0; i < k && n < cap; i++)
            got[n++] = *ptr[i];
    }
    CHECK(ht_reader_status(r, NULL, NULL) == HT_READER_OK);
    ht_reader_close(r);
    return n;
}

static void window_equals_head_merge(void)
{
    static const int threads[] = {2, 3, 4, 5, 7, 8, 9, 13, 16, 17, 20, 32, 64};
    size_t n_traces = 0, n_events = 0;
    for (size_t v = 0; v < sizeof threads / sizeof threads[0]; v++) {
        for (int step = 0; step < N_STEPS; step++) {
            for (int variant = 0; variant < 8; variant++) {
                win_shape sh = {threads[v], step, variant & 1, (variant & 2) != 0,
                                (variant & 4) != 0};
                uint64_t seed = 1000 * v + 10 * (uint64_t)step + (uint64_t)variant;
                tb_trace t;
                ht_event *want;
                size_t total = forge(&t, &sh, seed, &want);
                ht_reader_event *on = calloc(total + 1, sizeof *on);
                ht_reader_event *off = calloc(total + 1, sizeof *off);
                for (int batch = 0; batch < 2; batch++) {
                    atomic_store(&ht__rd_window, 1);
                    /* early chunk loads from 3 threads on (ht_reader_next), or from the
                     * default (the batch API) */
                    atomic_store(&ht__rd_early_threads, batch == 0 ? 3 : 32);
                    size_t n_on = read_all(&t, batch, on, total + 1);
                    atomic_store(&ht__rd_early_threads, 32);
                    atomic_store(&ht__rd_window, 0);
                    size_t n_off = read_all(&t, batch, off, total + 1);
                    atomic_store(&ht__rd_window, 1);
                    size_t bad = 0, order = 0;
                    for (size_t i = 0; i < n_on && i < n_off; i++)
                        bad += memcmp(&on[i], &off[i], sizeof on[i]) != 0;
                    /* without TIME_BACK and wrap-around the merge is the sort */
                    for (size_t i = 0; !sh.back && !sh.seq_wrap && i < n_on && i < total; i++)
                        order += tb_key_cmp(&on[i].event, &want[i]) != 0;
                    if (n_on != total || n_off != total || bad != 0 || order != 0)
                        fprintf(stderr,
                                "  %d threads, step %d, back %d, wrap %d, mix %d, batch %d: %zu / "
                                "%zu of %zu events, %zu differ, %zu out of order\n",
                                sh.n_threads, step, sh.back, sh.seq_wrap, sh.mix, batch, n_on,
                                n_off, total, bad, order);
                    CHECK_EQ_U(n_on, total);
                    CHECK_EQ_U(n_off, total);
                    CHECK_EQ_U(bad, 0);
                    CHECK_EQ_U(order, 0);
                }
                n_traces++;
                n_events += total;
                free(on);
                free(off);
                free(want);
                tb_free(&t);
            }
        }
    }
    fprintf(stderr, "  %zu traces, %zu events, each read 4 ways\n", n_traces, n_events);
}

TEST_MAIN(TEST(window_equals_head_merge))
