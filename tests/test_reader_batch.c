/* test_reader_batch.c — ht_reader_next_batch and the paths behind it (src/reader/merge.c:
 * batch_fill, heap_fill, the window merge; src/reader/decode.c: the ALLOC/FREE fast path):
 *   - batch and one-at-a-time reads give the identical event sequence for 1-16 threads with
 *     many equal timestamps, for streams that go back in time (TIME_BACK: the window merge
 *     must step aside) and for mixed calls with odd batch sizes;
 *   - the order is exactly (timestamp, sequence, tid) for monotone streams;
 *   - the fast decoder agrees with tests/simple_decoder.h chunk by chunk on CRC-valid forged
 *     payloads (decodes or not, and the same events), with chunks big enough for the fast
 *     path and records of every type, stacks and heaps;
 *   - argument checks. */
#include "harness.h"
#include "reader/internal.h"
#include "simple_decoder.h"
#include "trace_build.h"

#include <heaptrail/reader.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static bool same(const ht_reader_event *a, const ht_reader_event *b)
{
    return memcmp(a, b, sizeof *a) == 0;
}

static size_t build(tb_trace *t, int n_threads, uint64_t seed, bool back, ht_event **want)
{
    return tb_merge_streams(t, n_threads, seed, 500, 900, 6000, back, want);
}

/* Reads everything: mode 0 ht_reader_next, else ht_reader_next_batch with max = mode, or
 * (mode < 0) alternating between the two with varying batch sizes. */
static size_t read_all(const tb_trace *t, int mode, ht_reader_event *got, size_t cap)
{
    ht_reader *r;
    if (ht_reader_open_memory(t->data, t->size, &r) != HT_READER_OK)
        return 0;
    size_t n = 0;
    const ht_reader_event *ptr[1000];
    for (unsigned step = 0;; step++) {
        if (mode == 0 || (mode < 0 && step % 3 == 0)) {
            if (n >= cap || !ht_reader_next(r, &got[n]))
                break;
            n++;
            continue;
        }
        size_t max = mode > 0 ? (size_t)mode : 1 + (step * 37) % 999;
        size_t k = ht_reader_next_batch(r, ptr, max);
        if (k == 0)
            break;
        CHECK(k <= max);
        for (size_t i = 0; i < k && n < cap; i++)
            got[n++] = *ptr[i];
    }
    CHECK(ht_reader_status(r, NULL, NULL) == HT_READER_OK);
    CHECK(ht_reader_next_batch(r, ptr, 10) == 0);
    ht_reader_event e;
    CHECK(!ht_reader_next(r, &e));
    ht_reader_close(r);
    return n;
}

static void batch_equals_next(void)
{
    static const int threads[] = {1, 2, 3, 4, 5, 8, 9, 12, 16};
    static const int modes[] = {1, 7, 256, 1000, -1};
    for (int back = 0; back < 2; back++) {
        for (size_t v = 0; v < sizeof threads / sizeof threads[0]; v++) {
            tb_trace t;
            ht_event *want;
            size_t total = build(&t, threads[v], 11 + v, back, &want);
            ht_reader_event *one = calloc(total + 1, sizeof *one);
            ht_reader_event *other = calloc(total + 1, sizeof *other);
            size_t n1 = read_all(&t, 0, one, total + 1);
            CHECK_EQ_U(n1, total);
            size_t order = 0;
            for (size_t i = 0; !back && i < n1 && i < total; i++)
                order += tb_key_cmp(&one[i].event, &want[i]) != 0;
            CHECK_EQ_U(order, 0);
            for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
                size_t n2 = read_all(&t, modes[m], other, total + 1);
                size_t bad = 0;
                for (size_t i = 0; i < n1 && i < n2; i++)
                    bad += !same(&one[i], &other[i]);
                if (n2 != n1 || bad != 0)
                    fprintf(stderr,
                            "  %d threads, back %d, mode %d: %zu of %zu events, %zu differ\n",
                            threads[v], back, modes[m], n2, n1, bad);
                CHECK_EQ_U(n2, n1);
                CHECK_EQ_U(bad, 0);
            }
            free(one);
            free(other);
            free(want);
            tb_free(&t);
        }
    }
}

/* A trace of 3 threads with every event type, stacks, several heaps and flags, chunks of
 * 2-4 KiB (the decoder's fast path runs in all but their last 128 bytes). */
static void build_mixed(tb_trace *t)
{
    tb_init(t, 9, "mixed", 5, 0, 0);
    ht_enc_meta m;
    tb_meta_begin(t, &m, 4096);
    uint64_t fr[4] = {0x401000, 0x401200, 0x7f0000001000, 0x7f0000002000};
    for (uint32_t id = 1; id <= 5; id++)
        ht__enc_meta_stack(&m, id, fr + id % 3, 1 + id % 2);
    tb_meta_end(t, &m);
    enum { N = 3000 };
    static ht_event ev[N];
    static uint32_t stk[N];
    uint64_t rng = 4242;
    for (uint32_t th = 0; th < 3; th++) {
        tb_realistic(ev, N, 900 + th, th + 1, 5000, 0x7f0000001000ull);
        for (size_t i = 0; i < N; i++) {
            uint64_t x = tb_rand(&rng) % 100;
            stk[i] = x < 30 ? (uint32_t)(1 + x % 5) : 0;
            if (x == 50)
                ev[i].heap_handle = 0x7f0000900000ull + (tb_rand(&rng) % 3) * 0x1000;
            if (x == 51)
                ev[i].flags = HT_EVENT_RUNDOWN;
            if (x == 52) {
                ev[i].type = HT_EVENT_HEAP_CREATE;
                memset(&ev[i].create, 0, sizeof ev[i].create);
                ev[i].create.flags = 4;
                ev[i].create.reserved_space = 1 << 20;
                ev[i].create.committed_space = 65536;
            }
            if (x == 53) {
                ev[i].type = HT_EVENT_HEAP_EXPAND;
                memset(&ev[i].expand, 0, sizeof ev[i].expand);
                ev[i].expand.address = 0x7f0000100000ull + tb_rand(&rng) % 100000;
                ev[i].expand.size = 4096;
                ev[i].expand.committed_space = 1 << 20;
            }
            if (x == 54 && ev[i].type == HT_EVENT_HEAP_FREE)
                ev[i].free.source = 9; /* an escaped Source */
            if (x == 55 && ev[i].type == HT_EVENT_HEAP_ALLOC)
                ev[i].alloc.address += 8; /* an odd address field */
        }
        ht_enc_stream s = {.tid = 900 + th, .next_seq = 1};
        tb_events(t, &s, ev, stk, N, 2048 + 1024 * th);
    }
    tb_end(t, 0, NULL, 0);
}

/* Each event chunk of buf decoded by the reader's decoder and by the simple one. Returns the
 * number of chunks where they disagree; counts in *n_bad those that do not decode. */
static size_t decoders_compare(const uint8_t *buf, size_t size, size_t data_off, size_t *n_bad)
{
    ht_reader *r;
    if (ht_reader_open_memory(buf, size, &r) != HT_READER_OK)
        return 1;
    size_t diff = 0;
    ht_reader_event *fast = NULL;
    for (size_t off = data_off; size - off >= HT_FMT_CHUNK_HDR_SIZE;) {
        rd_chunk c;
        if (!ht__rd_chunk_parse(r, buf + off, off, &c) ||
            c.payload_size > size - off - HT_FMT_CHUNK_HDR_SIZE)
            break;
        const uint8_t *pl = buf + off + HT_FMT_CHUNK_HDR_SIZE;
        if (c.kind == HT_FMT_KIND_EVENTS && c.n_records > 0) {
            fast = realloc(fast, c.n_records * sizeof *fast);
            bool sorted;
            bool ok_fast = ht__rd_decode_events(r, &c, pl, fast, &sorted);
            sd_result sd = {0};
            bool ok_sd = sd_event_chunk(
                buf, off + HT_FMT_CHUNK_HDR_SIZE, off + HT_FMT_CHUNK_HDR_SIZE + c.payload_size,
                c.tid, c.n_records, c.first_seq, c.first_ts, c.last_ts, r->stacks.n, &sd);
            *n_bad += !ok_sd;
            if (ok_fast != ok_sd || (ok_sd && sd.n_events != c.n_records)) {
                diff++;
            } else if (ok_sd) {
                bool mono = true;
                for (size_t i = 0; i < sd.n_events; i++) {
                    const ht_reader_event *f = &fast[i];
                    const sd_event *e = &sd.events[i];
                    if (f->stack_id != e->stack || memcmp(&f->event, &e->ev, sizeof f->event) != 0)
                        diff++;
                    if (i > 0 && e->ev.timestamp_ns < sd.events[i - 1].ev.timestamp_ns)
                        mono = false;
                }
                diff += sorted && !mono; /* "sorted" may be conservative, never wrong */
            }
            free(sd.events);
        }
        off += HT_FMT_CHUNK_HDR_SIZE + c.payload_size;
    }
    free(fast);
    ht_reader_close(r);
    return diff;
}

static void decoder_vs_simple(void)
{
    tb_trace t;
    build_mixed(&t);
    size_t data_off = HT_FMT_FILE_HDR_SIZE + 5;
    sd_result whole;
    sd_decode(t.data, t.size, &whole);
    CHECK(!whole.damaged && whole.n_events == 9000); /* the trace itself is sound */
    free(whole.events);
    size_t n_bad = 0;
    CHECK_EQ_U(decoders_compare(t.data, t.size, data_off, &n_bad), 0);
    CHECK_EQ_U(n_bad, 0);
    uint8_t *buf = malloc(t.size);
    uint64_t rng = 77;
    size_t diff = 0;
    n_bad = 0;
    for (int iter = 0; iter < 600; iter++) {
        tb_forge(buf, t.data, t.size, data_off, &rng, 3);
        diff += decoders_compare(buf, t.size, data_off, &n_bad);
    }
    printf("forged: %zu event chunks did not decode, decoders disagreed on %zu\n", n_bad, diff);
    CHECK(n_bad > 300); /* the mutations did reach the record checks */
    CHECK_EQ_U(diff, 0);
    /* both varint decoders */
    atomic_store(&ht__rd_pext, 0);
    n_bad = 0;
    CHECK_EQ_U(decoders_compare(t.data, t.size, data_off, &n_bad), 0);
    atomic_store(&ht__rd_pext, -1);
    free(buf);
    tb_free(&t);
}

static void batch_args(void)
{
    tb_trace t;
    ht_event *want;
    size_t total = build(&t, 2, 3, false, &want);
    ht_reader *r;
    REQUIRE(ht_reader_open_memory(t.data, t.size, &r) == HT_READER_OK);
    const ht_reader_event *p[4];
    CHECK(ht_reader_next_batch(NULL, p, 4) == 0);
    CHECK(ht_reader_next_batch(r, NULL, 4) == 0);
    CHECK(ht_reader_next_batch(r, p, 0) == 0);
    ht_reader_event one;
    CHECK(!ht_reader_next(NULL, &one)); /* no crash, nothing consumed */
    CHECK(!ht_reader_next(r, NULL));
    size_t n = 0, k;
    while ((k = ht_reader_next_batch(r, p, 4)) > 0)
        n += k;
    CHECK_EQ_U(n, total);
    ht_reader_close(r);
    free(want);
    tb_free(&t);
}

TEST_MAIN(TEST(batch_equals_next), TEST(decoder_vs_simple), TEST(batch_args))
