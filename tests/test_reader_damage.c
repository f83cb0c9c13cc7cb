/* test_reader_damage.c — the reader on damaged traces: a small trace cut at every byte offset
 * (memory and file), seeded random byte flips, and CRC-valid forged payloads, read through
 * ht_reader_next and through ht_reader_next_batch. The reader must
 * return exactly the events of the whole chunks before the damage, name the problem and its
 * offset, and never crash or read out of bounds (run this under ASan: -DHT_SANITIZE=address).
 * Owns only its temporary files. */
#include "harness.h"
#include "simple_decoder.h"
#include "trace_build.h"

#include <heaptrail/reader.h>

#include <unistd.h>

static tb_trace g_trace;  /* the small trace */
static size_t g_data_off; /* its first chunk */
static size_t g_n_events; /* its events */

static void build_small_trace(void)
{
    if (g_trace.data != NULL)
        return;
    tb_trace *t = &g_trace;
    tb_init(t, 31337, "app\0-v", 6, 500, 600);
    g_data_off = t->size;
    ht_enc_meta m;
    tb_meta_begin(t, &m, 1024);
    uint64_t fr[3] = {0x401000, 0x401200, 0x7f0000001000};
    ht__enc_meta_stack(&m, 1, fr, 3);
    ht__enc_meta_stack(&m, 2, fr + 1, 2);
    uint8_t bid[4] = {1, 2, 3, 4};
    ht__enc_meta_module(&m, 500, 0x400000, 0x10000, "/bin/app", 8, bid, 4);
    tb_meta_end(t, &m);
    enum { T = 3, N = 40 };
    ht_enc_stream s[T];
    ht_event ev[N];
    uint32_t stk[N];
    for (int th = 0; th < T; th++)
        s[th] = (ht_enc_stream){.tid = 700 + (uint32_t)th, .next_seq = 1};
    for (int round = 0; round < 2; round++) {
        for (int th = 0; th < T; th++) {
            tb_realistic(ev, N, s[th].tid, (uint64_t)(th * 10 + round),
                         1000 + (uint64_t)round * 100000, 0x7f9900000000ull);
            for (size_t i = 0; i < N; i++) {
                ev[i].sequence += (uint64_t)round * N;
                stk[i] = (uint32_t)(i % 3);
            }
            s[th].lost_so_far += (uint64_t)th;
            tb_events(t, &s[th], ev, stk, N, 256);
            g_n_events += N;
        }
    }
    ht_enc_thread_total tot[T];
    for (int th = 0; th < T; th++)
        tot[th] =
            (ht_enc_thread_total){s[th].tid, s[th].n_events, s[th].lost_so_far, s[th].n_chunks};
    tb_end(t, 1u << 20, tot, T);
}

/* Chunks wholly inside [0, len): their count, and the offset right after the last of them. */
static size_t whole_chunks(size_t len, size_t *end_off, size_t *n_events)
{
    size_t k = 0, ev = 0;
    *end_off = g_data_off;
    while (k < g_trace.n_chunks && g_trace.chunk_end[k] <= len) {
        *end_off = g_trace.chunk_end[k];
        ev += g_trace.chunk_events[k];
        k++;
    }
    *n_events = ev;
    return k;
}

static int same_event(const ht_reader_event *a, const sd_event *b)
{
    return a->stack_id == b->stack && a->event.timestamp_ns == b->ev.timestamp_ns &&
           a->event.tid == b->ev.tid && a->event.sequence == b->ev.sequence &&
           a->event.type == b->ev.type && a->event.heap_handle == b->ev.heap_handle &&
           memcmp(&a->event.realloc, &b->ev.realloc, sizeof a->event.realloc) == 0;
}

static bool g_batch; /* drain through ht_reader_next_batch (in batches of 1..13) */

/* Reads everything; returns the number of events, comparing with sd when given. */
static size_t drain(ht_reader *r, const sd_result *sd, size_t *mismatches)
{
    ht_reader_event ev;
    size_t n = 0;
    const ht_reader_event *ptr[13];
    size_t k = 0, pos = 0;
    for (;;) {
        if (g_batch) {
            if (pos == k) {
                k = ht_reader_next_batch(r, ptr, 1 + n % 13);
                pos = 0;
                if (k == 0)
                    break;
            }
            ev = *ptr[pos++];
        } else if (!ht_reader_next(r, &ev)) {
            break;
        }
        if (sd != NULL && (n >= sd->n_events || !same_event(&ev, &sd->events[n])))
            (*mismatches)++;
        if (ev.stack_id != 0) {
            const uint64_t *f;
            size_t nf;
            if (!ht_reader_stack(r, ev.stack_id, &f, &nf) || nf == 0)
                (*mismatches)++;
        }
        n++;
    }
    return n;
}

/* Every cut, read one at a time and (batch) through ht_reader_next_batch. */
static void truncate_every_offset(bool batch)
{
    build_small_trace();
    const tb_trace *t = &g_trace;
    printf("small trace: %zu bytes, %zu chunks, %zu events\n", t->size, t->n_chunks, g_n_events);
    g_batch = batch;
    size_t fails = 0;
    for (size_t len = 0; len <= t->size; len++) {
        ht_reader *r = NULL;
        ht_reader_status_code rc = ht_reader_open_memory(t->data, len, &r);
        if (len < g_data_off) {
            CHECK(rc != HT_READER_OK && r == NULL);
            CHECK(rc == (len == 0 ? HT_READER_NOT_A_TRACE : HT_READER_TRUNCATED));
            continue;
        }
        REQUIRE(rc == HT_READER_OK && r != NULL);
        size_t end_off, want_events;
        size_t k = whole_chunks(len, &end_off, &want_events);
        sd_result sd;
        sd_decode(t->data, len, &sd);
        size_t mism = 0;
        size_t n = drain(r, &sd, &mism);
        uint64_t off = 0;
        const char *msg = NULL;
        ht_reader_status_code st = ht_reader_status(r, &off, &msg);
        ht_reader_trace_info info;
        ht_reader_info(r, &info);
        bool ok = n == want_events && mism == 0 && sd.n_good_chunks == k &&
                  sd.n_events == want_events && info.valid_size == end_off;
        if (len == t->size)
            ok = ok && st == HT_READER_OK && info.complete;
        else
            ok = ok && st == HT_READER_TRUNCATED && off == end_off && sd.damage_off == end_off &&
                 msg != NULL && strstr(msg, "offset") != NULL;
        if (!ok && fails++ < 5)
            fprintf(stderr,
                    "cut at %zu: %zu events (want %zu), %zu mismatches, status %s at %" PRIu64
                    " (want %zu): %s\n",
                    len, n, want_events, mism, ht_reader_status_name[st], off, end_off, msg);
        free(sd.events);
        ht_reader_close(r);
    }
    g_batch = false;
    CHECK_EQ_U(fails, 0);
}

static void test_truncate_every_offset(void)
{
    truncate_every_offset(false);
}

static void test_truncate_every_offset_batch(void)
{
    truncate_every_offset(true);
}

/* The pread path: a cut-off file, every 11th offset. */
static void test_truncate_file(void)
{
    build_small_trace();
    char path[] = "/tmp/ht_damage_XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    size_t fails = 0;
    for (size_t len = 0; len <= g_trace.size; len += 11) {
        REQUIRE(ftruncate(fd, 0) == 0);
        REQUIRE(pwrite(fd, g_trace.data, len, 0) == (ssize_t)len);
        ht_reader *r = NULL;
        ht_reader_status_code rc = ht_reader_open(path, &r);
        if (len < g_data_off) {
            fails += rc == HT_READER_OK;
            continue;
        }
        REQUIRE(rc == HT_READER_OK);
        size_t end_off, want;
        whole_chunks(len, &end_off, &want);
        size_t mism = 0;
        size_t n = drain(r, NULL, &mism);
        uint64_t off;
        ht_reader_status_code st = ht_reader_status(r, &off, NULL);
        if (n != want || mism != 0 ||
            (len < g_trace.size && (st != HT_READER_TRUNCATED || off != end_off)))
            fails++;
        ht_reader_close(r);
    }
    close(fd);
    unlink(path);
    CHECK_EQ_U(fails, 0);
}

/* Seeded random byte flips anywhere: detected at the start of the first damaged chunk, with
 * exactly the events of the chunks before it. */
static void test_random_flips(void)
{
    build_small_trace();
    const tb_trace *t = &g_trace;
    uint8_t *buf = malloc(t->size);
    uint64_t rng = 2024;
    size_t fails = 0, undetected = 0;
    for (int iter = 0; iter < 4000; iter++) {
        g_batch = iter & 1; /* half of them through ht_reader_next_batch */
        memcpy(buf, t->data, t->size);
        int n_flips = 1 + (int)(tb_rand(&rng) % 3);
        size_t first = t->size;
        for (int f = 0; f < n_flips; f++) {
            size_t at = (size_t)(tb_rand(&rng) % t->size);
            buf[at] ^= (uint8_t)(1 + tb_rand(&rng) % 255);
            if (at < first)
                first = at;
        }
        ht_reader *r = NULL;
        ht_reader_status_code rc = ht_reader_open_memory(buf, t->size, &r);
        if (first < g_data_off) {
            if (rc == HT_READER_OK) {
                undetected++;
                ht_reader_close(r);
            }
            continue;
        }
        REQUIRE(rc == HT_READER_OK);
        size_t end_off, want;
        whole_chunks(first, &end_off, &want); /* chunks wholly before the first flip */
        size_t mism = 0;
        size_t n = drain(r, NULL, &mism);
        uint64_t off;
        const char *msg;
        ht_reader_status_code st = ht_reader_status(r, &off, &msg);
        if (st == HT_READER_OK)
            undetected++;
        else if (n != want || mism != 0 || off != end_off ||
                 (st != HT_READER_BAD_CHUNK && st != HT_READER_BAD_CHECKSUM)) {
            if (fails++ < 5)
                fprintf(stderr,
                        "flip at %zu: %zu events (want %zu), %s at %" PRIu64 " (want %zu): %s\n",
                        first, n, want, ht_reader_status_name[st], off, end_off, msg);
        }
        ht_reader_close(r);
    }
    g_batch = false;
    CHECK_EQ_U(undetected, 0);
    CHECK_EQ_U(fails, 0);
    free(buf);
}

/* Damage the checksums cannot see (a forged file or a writer bug): mutated payloads and
 * headers with the checksums recomputed. Never a crash; damage is reported inside the file. */
static void test_forged_chunks(void)
{
    build_small_trace();
    const tb_trace *t = &g_trace;
    uint8_t *buf = malloc(t->size);
    uint64_t rng = 99;
    size_t reported = 0, bad_off = 0;
    for (int iter = 0; iter < 4000; iter++) {
        g_batch = iter & 1;
        tb_forge(buf, t->data, t->size, g_data_off, &rng, 4);
        ht_reader *r = NULL;
        if (ht_reader_open_memory(buf, t->size, &r) != HT_READER_OK)
            continue;
        size_t mism = 0;
        drain(r, NULL, &mism);
        uint64_t off;
        const char *msg;
        if (ht_reader_status(r, &off, &msg) != HT_READER_OK) {
            reported++;
            bad_off += off > t->size || msg == NULL || msg[0] == '\0';
        }
        ht_reader_close(r);
    }
    g_batch = false;
    printf("forged: %zu of 4000 reported\n", reported);
    CHECK(reported > 3000);
    CHECK_EQ_U(bad_off, 0);
    free(buf);
}

/* Hand-made damage: bad magic, bad version, trailing data, a missing chunk. */
static void test_named_damage(void)
{
    build_small_trace();
    const tb_trace *t = &g_trace;
    uint8_t *buf = malloc(t->size + 10);
    ht_reader *r;
    memcpy(buf, t->data, t->size);
    buf[0] = 'X';
    CHECK(ht_reader_open_memory(buf, t->size, &r) == HT_READER_NOT_A_TRACE && r == NULL);
    memcpy(buf, t->data, t->size);
    buf[8] = 2;
    CHECK(ht_reader_open_memory(buf, t->size, &r) == HT_READER_BAD_VERSION);
    memcpy(buf, t->data, t->size);
    buf[50] ^= 1; /* in the command line */
    CHECK(ht_reader_open_memory(buf, t->size, &r) == HT_READER_BAD_HEADER);
    /* Trailing bytes after the end chunk. */
    memcpy(buf, t->data, t->size);
    memset(buf + t->size, 0, 10);
    REQUIRE(ht_reader_open_memory(buf, t->size + 10, &r) == HT_READER_OK);
    size_t mism = 0;
    CHECK_EQ_U(drain(r, NULL, &mism), g_n_events);
    uint64_t off;
    CHECK(ht_reader_status(r, &off, NULL) == HT_READER_TRAILING_DATA && off == t->size);
    ht_reader_close(r);
    /* Drop the second chunk (a thread's first event chunk): its successor is out of
     * sequence. */
    size_t c1 = t->chunk_end[0], c2 = t->chunk_end[1];
    memcpy(buf, t->data, c1);
    memcpy(buf + c1, t->data + c2, t->size - c2);
    REQUIRE(ht_reader_open_memory(buf, t->size - (c2 - c1), &r) == HT_READER_OK);
    drain(r, NULL, &mism);
    ht_reader_status_code st = ht_reader_status(r, &off, NULL);
    CHECK(st == HT_READER_BAD_SEQUENCE);
    ht_reader_close(r);
    CHECK(ht_reader_open_memory(NULL, 5, &r) == HT_READER_INVALID_ARG);
    CHECK(ht_reader_open_memory(buf, 0, &r) == HT_READER_NOT_A_TRACE);
    free(buf);
}

static void test_cleanup(void)
{
    tb_free(&g_trace);
}

TEST_MAIN(TEST(test_truncate_every_offset), TEST(test_truncate_every_offset_batch),
          TEST(test_truncate_file), TEST(test_random_flips), TEST(test_forged_chunks),
          TEST(test_named_damage), TEST(test_cleanup))
