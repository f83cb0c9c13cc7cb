/* test_format_roundtrip.c — the trace format end to end: events of every type and flag go
 * through the encoder (src/trace/encode.c) and come back from the reader (src/reader/) field
 * by field, single- and multi-threaded, with and without stacks; metadata, lost counts, the
 * simple decoder cross-check on random streams, and bytes per event on a realistic stream.
 * Owns no library state; every trace lives in memory (and one in a temporary file). */
#include "harness.h"
#include "simple_decoder.h"
#include "trace_build.h"

#include <heaptrail/reader.h>

#include <unistd.h>

#include "event_equal.h"

/* -- helpers ----------------------------------------------------------------------------- */

static int event_equal(const ht_event *a, const ht_event *b)
{
    return ht_test_event_equal(a, b);
}

static void event_print(const char *what, const ht_event *e, uint32_t stack)
{
    fprintf(stderr,
            "  %s: ts=%" PRIu64 " tid=%u type=0x%x flags=%u heap=%#" PRIxPTR " seq=%" PRIu64
            " stack=%u\n",
            what, e->timestamp_ns, e->tid, e->type, e->flags, e->heap_handle, e->sequence, stack);
}

static int cmp_expected(const void *pa, const void *pb)
{
    return sd_cmp(pa, pb);
}

/* Reads everything from r and compares with want[0..n) (already in merged order). */
static void check_reader_matches(ht_reader *r, const sd_event *want, size_t n)
{
    ht_reader_event ev;
    size_t i = 0, bad = 0;
    while (ht_reader_next(r, &ev)) {
        if (i < n && (!event_equal(&ev.event, &want[i].ev) || ev.stack_id != want[i].stack)) {
            if (bad++ < 3) {
                fprintf(stderr, "event %zu differs\n", i);
                event_print("got ", &ev.event, ev.stack_id);
                event_print("want", &want[i].ev, want[i].stack);
            }
        }
        i++;
    }
    CHECK_EQ_U(bad, 0);
    CHECK_EQ_U(i, n);
}

static uint64_t rnd_value(uint64_t *rng)
{
    switch (tb_rand(rng) % 6) {
    case 0:
        return 0;
    case 1:
        return UINT64_MAX - tb_rand(rng) % 3;
    case 2:
        return tb_rand(rng) % 300;
    case 3:
        return tb_rand(rng);
    default:
        return 0x7f0000000000ull + (tb_rand(rng) % 0x100000) * 16;
    }
}

/* A random event of any type with any field values the format promises to keep. */
static void rnd_event(ht_event *e, uint64_t *rng, uint32_t tid, uint64_t *ts, uint64_t *seq,
                      const uint64_t *heaps, size_t n_heaps)
{
    static const uint16_t types[7] = {0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x2A};
    memset(e, 0, sizeof *e);
    uint64_t r = tb_rand(rng);
    if (r % 50 == 0)
        *ts -= tb_rand(rng) % 1000; /* TIME_BACK */
    else if (r % 50 == 1)
        *ts += tb_rand(rng) >> 20;
    else
        *ts += tb_rand(rng) % 300;
    e->timestamp_ns = *ts;
    e->tid = tid;
    *seq += (r % 40 == 2) ? 1 + tb_rand(rng) % 100 : 1; /* SEQ_SKIP */
    e->sequence = *seq;
    e->type = types[tb_rand(rng) % 7];
    e->flags = (uint16_t)(r % 10 == 3 ? 1 + tb_rand(rng) % 3 : (r % 97 == 5 ? 0xFFFF : 0));
    e->heap_handle = (uintptr_t)heaps[tb_rand(rng) % n_heaps];
    uint32_t src = (uint32_t)(tb_rand(rng) % 9);
    if (src == 8)
        src = 7 + (uint32_t)(tb_rand(rng) % 249);
    switch (e->type) {
    case HT_EVENT_HEAP_ALLOC:
        e->alloc.size = rnd_value(rng);
        e->alloc.address = (uintptr_t)rnd_value(rng) + (r % 13 == 0 ? 3 : 0);
        e->alloc.source = src;
        break;
    case HT_EVENT_HEAP_FREE:
        e->free.address = (uintptr_t)rnd_value(rng);
        e->free.source = src;
        break;
    case HT_EVENT_HEAP_REALLOC:
        e->realloc.new_address = (uintptr_t)rnd_value(rng);
        e->realloc.old_address = (uintptr_t)rnd_value(rng) + 1;
        e->realloc.new_size = rnd_value(rng);
        e->realloc.old_size = rnd_value(rng);
        e->realloc.source = src;
        break;
    case HT_EVENT_HEAP_CREATE:
        e->create.flags = (uint32_t)tb_rand(rng);
        e->create.reserved_space = rnd_value(rng);
        e->create.committed_space = rnd_value(rng);
        break;
    case HT_EVENT_HEAP_DESTROY:
        break;
    default:
        e->expand.address = (uintptr_t)rnd_value(rng);
        e->expand.size = rnd_value(rng);
        e->expand.committed_space = rnd_value(rng);
        break;
    }
}

/* -- tests ------------------------------------------------------------------------------- */

static void test_crc_varint(void)
{
    const uint8_t *s = (const uint8_t *)"123456789";
    CHECK_EQ_U(ht_fmt_crc32c(s, 9), 0xE3069283u);
    CHECK_EQ_U(~ht_fmt_crc32c_sw(0xFFFFFFFFu, s, 9), 0xE3069283u);
    CHECK_EQ_U(sd_crc(s, 9), 0xE3069283u);
    CHECK_EQ_U(ht_fmt_crc32c_2(s, 4, s + 4, 5), 0xE3069283u);
    uint64_t vals[] = {0, 1, 127, 128, 16383, 16384, UINT32_MAX, UINT64_MAX / 2, UINT64_MAX};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        uint8_t buf[16];
        uint8_t *e = ht_fmt_put_varint(buf, vals[i]);
        const uint8_t *p = buf;
        uint64_t v = 0;
        CHECK(ht_fmt_get_varint(&p, e, &v) && v == vals[i] && p == e);
        p = buf;
        CHECK(!ht_fmt_get_varint(&p, e - 1, &v)); /* cut off by one byte */
        int64_t sv = (int64_t)vals[i];
        CHECK(ht_fmt_unzigzag(ht_fmt_zigzag(sv)) == sv);
        CHECK(sd_unzigzag(ht_fmt_zigzag(sv)) == sv);
    }
    uint8_t over[10] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02};
    const uint8_t *p = over;
    uint64_t v;
    CHECK(!ht_fmt_get_varint(&p, over + 10, &v)); /* beyond 64 bits */
}

/* Every type, every flag, every Source encoding, heaps beyond the table, time going back,
 * sequence gaps, extreme values; small chunks so that many chunk boundaries are crossed. */
static void test_every_type_single_thread(void)
{
    enum { N = 5000 };
    ht_event *ev = calloc(N, sizeof *ev);
    uint32_t *stk = calloc(N, sizeof *stk);
    uint64_t heaps[40];
    for (size_t i = 0; i < 40; i++)
        heaps[i] = i == 0 ? 0 : 0x7f1200000000ull + i * 0x400000;
    uint64_t rng = 42, ts = 1000000, seq = 0;
    for (size_t i = 0; i < N; i++) {
        rnd_event(&ev[i], &rng, 1234, &ts, &seq, heaps, (i / 500) % 2 ? 40 : 3);
        stk[i] = (uint32_t)(tb_rand(&rng) % 4 == 0 ? 1 + tb_rand(&rng) % 3 : 0);
    }
    /* Make sure each type x flag combination appears. */
    static const uint16_t types[7] = {0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x2A};
    for (size_t k = 0; k < 7 * 4; k++) {
        ht_event *e = &ev[100 + k];
        uint64_t keep_ts = e->timestamp_ns, keep_seq = e->sequence;
        uintptr_t keep_heap = e->heap_handle;
        memset(e, 0, sizeof *e);
        e->timestamp_ns = keep_ts;
        e->sequence = keep_seq;
        e->heap_handle = keep_heap;
        e->tid = 1234;
        e->type = types[k % 7];
        e->flags = (uint16_t)(k / 7);
        if (e->type == HT_EVENT_HEAP_FREE)
            e->free.source = HT_SOURCE_INVALID;
    }
    tb_trace t;
    tb_init(&t, 77, "prog\0--flag", 11, 1000000, 1700000000000000000ull);
    ht_enc_meta m;
    tb_meta_begin(&t, &m, 4096);
    uint64_t frames[3][4] = {{0x401000, 0x401100, 0x7f00001000, 0x400500},
                             {0x402000, 0, UINT64_MAX, 5},
                             {0x403000, 0x403000, 0x403000, 0x403000}};
    for (uint32_t s = 0; s < 3; s++)
        CHECK(ht__enc_meta_stack(&m, s + 1, frames[s], s == 1 ? 4 : 3 + s / 2));
    tb_meta_end(&t, &m);
    ht_enc_stream s = {.tid = 1234, .next_seq = 1};
    tb_events(&t, &s, ev, stk, N, 512);
    CHECK(s.n_chunks > 20);
    ht_enc_thread_total tot = {1234, s.n_events, 0, s.n_chunks};
    tb_end(&t, ts + 1, &tot, 1);

    sd_event *want = calloc(N, sizeof *want);
    for (size_t i = 0; i < N; i++) {
        want[i].ev = ev[i];
        want[i].stack = stk[i];
    }
    /* Timestamps go back now and then: the reader keeps one thread's order as written. */
    ht_reader *r = NULL;
    REQUIRE(ht_reader_open_memory(t.data, t.size, &r) == HT_READER_OK);
    check_reader_matches(r, want, N);
    uint64_t off = 1;
    const char *msg = NULL;
    CHECK(ht_reader_status(r, &off, &msg) == HT_READER_OK);
    CHECK_EQ_U(off, 0);
    ht_reader_trace_info info;
    ht_reader_info(r, &info);
    CHECK_EQ_U(info.pid, 77);
    CHECK_EQ_U(info.cmdline_size, 11);
    CHECK(memcmp(info.cmdline, "prog\0--flag", 12) == 0);
    CHECK_EQ_U(info.clock_id, 1);
    CHECK_EQ_U(info.start_mono_ns, 1000000);
    CHECK_EQ_U(info.start_realtime_ns, 1700000000000000000ull);
    CHECK(info.complete);
    CHECK_EQ_U(info.end_ts_ns, ts + 1);
    CHECK_EQ_U(info.n_events, N);
    CHECK_EQ_U(info.n_threads, 1);
    CHECK_EQ_U(info.valid_size, t.size);
    for (uint32_t k = 0; k < 3; k++) {
        const uint64_t *f = NULL;
        size_t nf = 0;
        CHECK(ht_reader_stack(r, k + 1, &f, &nf));
        CHECK_EQ_U(nf, k == 1 ? 4 : 3 + k / 2);
        for (size_t j = 0; j < nf; j++)
            CHECK_EQ_U(f[j], frames[k][j]);
    }
    const uint64_t *f;
    size_t nf;
    CHECK(!ht_reader_stack(r, 0, &f, &nf));
    CHECK(!ht_reader_stack(r, 4, &f, &nf));
    ht_reader_close(r);

    /* The simple decoder agrees (after sorting; this stream has timestamps going back, so
     * compare as sets: sort both). */
    sd_result sd;
    sd_decode(t.data, t.size, &sd);
    CHECK(sd.header_ok && sd.complete && !sd.damaged);
    CHECK_EQ_U(sd.n_events, N);
    qsort(want, N, sizeof *want, cmp_expected);
    for (size_t i = 0; i < N && i < sd.n_events; i++)
        CHECK(event_equal(&sd.events[i].ev, &want[i].ev) && sd.events[i].stack == want[i].stack);
    free(sd.events);

    /* Through a real file as well (the pread path). */
    char path[] = "/tmp/ht_fmt_rt_XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    CHECK(write(fd, t.data, t.size) == (ssize_t)t.size);
    close(fd);
    REQUIRE(ht_reader_open(path, &r) == HT_READER_OK);
    ht_reader_event re;
    size_t n = 0, bad = 0;
    while (ht_reader_next(r, &re)) {
        if (!event_equal(&re.event, &ev[n]) || re.stack_id != stk[n])
            bad++;
        n++;
    }
    CHECK_EQ_U(n, N);
    CHECK_EQ_U(bad, 0);
    CHECK(ht_reader_status(r, NULL, NULL) == HT_READER_OK);
    ht_reader_close(r);
    unlink(path);
    CHECK(ht_reader_open("/nonexistent/trace", &r) == HT_READER_IO && r == NULL);

    free(want);
    free(ev);
    free(stk);
    tb_free(&t);
}

/* Threads whose chunks interleave in the file, with equal timestamps across threads: the
 * merged order is (ts, sequence, tid). */
static void test_multi_thread_merge(void)
{
    enum { T = 5, N = 3000 };
    ht_event *ev = calloc((size_t)T * N, sizeof *ev);
    uint32_t *stk = calloc((size_t)T * N, sizeof *stk);
    for (int th = 0; th < T; th++) {
        for (size_t i = 0; i < N; i++) {
            ht_event *e = &ev[(size_t)th * N + i];
            e->timestamp_ns = 5000 + (i / 3) * 10 + (th % 2); /* many cross-thread ties */
            e->tid = 100 + (uint32_t)th * 7;
            e->sequence = i + 1 + (th == 2 ? 1000 : 0); /* thread 2's sequence starts later */
            e->type = i % 2 ? HT_EVENT_HEAP_FREE : HT_EVENT_HEAP_ALLOC;
            e->heap_handle = 0x5000;
            if (e->type == HT_EVENT_HEAP_ALLOC) {
                e->alloc.address = 0x10000 + i * 16;
                e->alloc.size = 32;
                e->alloc.source = 1;
            } else {
                e->free.address = 0x10000 + (i - 1) * 16;
                e->free.source = 2;
            }
            stk[(size_t)th * N + i] = (th % 2) ? (uint32_t)(i % 2 + 1) : 0;
        }
    }
    tb_trace t;
    tb_init(&t, 1, "x", 1, 0, 0);
    ht_enc_meta m;
    tb_meta_begin(&t, &m, 1024);
    uint64_t fr[2] = {0x1000, 0x2000};
    CHECK(ht__enc_meta_stack(&m, 1, fr, 2));
    CHECK(ht__enc_meta_stack(&m, 2, fr, 1));
    tb_meta_end(&t, &m);
    ht_enc_stream s[T];
    size_t pos[T] = {0};
    for (int th = 0; th < T; th++) {
        memset(&s[th], 0, sizeof s[th]);
        s[th].tid = 100 + (uint32_t)th * 7;
        s[th].next_seq = th == 2 ? 1001 : 1;
    }
    /* Interleave: each round, each thread writes a varying number of events. */
    uint64_t rng = 7;
    for (int done = 0; done < T;) {
        done = 0;
        for (int th = 0; th < T; th++) {
            size_t k = 1 + (size_t)(tb_rand(&rng) % 400);
            if (pos[th] + k > N)
                k = N - pos[th];
            if (k > 0) {
                s[th].lost_so_far += (uint64_t)th; /* lost counts grow */
                tb_events(&t, &s[th], ev + (size_t)th * N + pos[th], stk + (size_t)th * N + pos[th],
                          k, 700);
            }
            pos[th] += k;
            done += pos[th] == N;
        }
    }
    ht_enc_thread_total tot[T];
    for (int th = 0; th < T; th++) {
        tot[th] =
            (ht_enc_thread_total){s[th].tid, s[th].n_events, s[th].lost_so_far, s[th].n_chunks};
        if (th == 4)
            tot[th].n_lost += 1000; /* lost after the last chunk */
    }
    tb_end(&t, 1u << 30, tot, T);

    sd_event *want = calloc((size_t)T * N, sizeof *want);
    for (size_t i = 0; i < (size_t)T * N; i++) {
        want[i].ev = ev[i];
        want[i].stack = stk[i];
    }
    qsort(want, (size_t)T * N, sizeof *want, cmp_expected);
    ht_reader *r;
    REQUIRE(ht_reader_open_memory(t.data, t.size, &r) == HT_READER_OK);
    check_reader_matches(r, want, (size_t)T * N);
    CHECK(ht_reader_status(r, NULL, NULL) == HT_READER_OK);
    ht_reader_trace_info info;
    ht_reader_info(r, &info);
    uint64_t lost = 0;
    for (int th = 0; th < T; th++)
        lost += tot[th].n_lost;
    CHECK_EQ_U(info.n_lost, lost);
    CHECK_EQ_U(info.n_threads, T);
    const ht_reader_thread *thr;
    size_t n_thr;
    ht_reader_threads(r, &thr, &n_thr);
    REQUIRE(n_thr == T);
    for (size_t i = 0; i < n_thr; i++) {
        CHECK_EQ_U(thr[i].tid, s[i].tid);
        CHECK_EQ_U(thr[i].n_events, N);
        CHECK_EQ_U(thr[i].n_chunks, s[i].n_chunks);
        CHECK_EQ_U(thr[i].n_lost, tot[i].n_lost);
    }
    ht_reader_close(r);

    sd_result sd;
    sd_decode(t.data, t.size, &sd);
    CHECK(!sd.damaged && sd.n_events == (size_t)T * N && sd.n_lost == lost);
    for (size_t i = 0; i < sd.n_events; i++)
        CHECK(event_equal(&sd.events[i].ev, &want[i].ev));
    free(sd.events);
    free(want);
    free(ev);
    free(stk);
    tb_free(&t);
}

/* Modules, unloads, markers; lost-only chunks; chunks with zero events. */
static void test_metadata_and_lost(void)
{
    tb_trace t;
    tb_init(&t, 4242, "", 0, 10, 20);
    ht_enc_meta m;
    tb_meta_begin(&t, &m, 8192);
    uint8_t bid[20];
    for (int i = 0; i < 20; i++)
        bid[i] = (uint8_t)(i * 13);
    char longpath[4096];
    memset(longpath, 'a', sizeof longpath);
    CHECK(ht__enc_meta_module(&m, 10, 0x400000, 0x5000, "/usr/bin/prog", 13, bid, 20));
    CHECK(ht__enc_meta_module(&m, 10, 0x7f0000000000, 0x20000, "/lib/libc.so.6", 14, NULL, 0));
    CHECK(!ht__enc_meta_module(&m, 10, 0, 0, longpath, 4097 - 1 + 1, NULL, 0)); /* > 4096 */
    CHECK(ht__enc_meta_module(&m, 10, 0x1000, 1, longpath, 4096, bid, 20));
    CHECK(ht__enc_meta_marker(&m, 15, 99, "phase 1", 7));
    tb_meta_end(&t, &m);
    ht_enc_stream s = {.tid = 99, .next_seq = 1, .lost_so_far = 3};
    tb_lost_chunk(&t, &s); /* a chunk with no events, only the lost count */
    ht_event e = {.timestamp_ns = 100,
                  .tid = 99,
                  .type = HT_EVENT_HEAP_DESTROY,
                  .sequence = 1,
                  .heap_handle = 0xABC};
    tb_events(&t, &s, &e, NULL, 1, 256);
    tb_meta_begin(&t, &m, 256);
    CHECK(ht__enc_meta_unload(&m, 200, 0x7f0000000000));
    CHECK(ht__enc_meta_marker(&m, 210, 99, "", 0));
    tb_meta_end(&t, &m);
    s.lost_so_far = 9;
    tb_lost_chunk(&t, &s);
    ht_enc_thread_total tot = {99, 1, 9, s.n_chunks};
    tb_end(&t, 300, &tot, 1);

    ht_reader *r;
    REQUIRE(ht_reader_open_memory(t.data, t.size, &r) == HT_READER_OK);
    const ht_reader_module *mods;
    size_t n_mods;
    ht_reader_modules(r, &mods, &n_mods);
    REQUIRE(n_mods == 3);
    CHECK(strcmp(mods[0].path, "/usr/bin/prog") == 0);
    CHECK_EQ_U(mods[0].base, 0x400000);
    CHECK_EQ_U(mods[0].size, 0x5000);
    CHECK_EQ_U(mods[0].build_id_size, 20);
    CHECK(memcmp(mods[0].build_id, bid, 20) == 0);
    CHECK_EQ_U(mods[0].unload_ts_ns, 0);
    CHECK_EQ_U(mods[1].unload_ts_ns, 200);
    CHECK_EQ_U(mods[1].build_id_size, 0);
    CHECK_EQ_U(strlen(mods[2].path), 4096);
    const ht_reader_marker *mk;
    size_t n_mk;
    ht_reader_markers(r, &mk, &n_mk);
    REQUIRE(n_mk == 2);
    CHECK(mk[0].ts_ns == 15 && mk[0].tid == 99 && strcmp(mk[0].text, "phase 1") == 0);
    CHECK(mk[1].ts_ns == 210 && strcmp(mk[1].text, "") == 0);
    ht_reader_event re;
    REQUIRE(ht_reader_next(r, &re));
    CHECK(event_equal(&re.event, &e));
    CHECK(!ht_reader_next(r, &re));
    CHECK(!ht_reader_next(r, &re));
    ht_reader_trace_info info;
    ht_reader_info(r, &info);
    CHECK_EQ_U(info.n_lost, 9);
    CHECK_EQ_U(info.pid, 4242);
    CHECK_EQ_U(info.cmdline_size, 0);
    CHECK(ht_reader_status(r, NULL, NULL) == HT_READER_OK);
    ht_reader_close(r);
    tb_free(&t);
}

/* Encoder edges: too-small buffers, unrepresentable events, bad slots. */
static void test_encoder_edges(void)
{
    uint8_t buf[512];
    ht_enc_stream s = {.tid = 5, .next_seq = 1};
    ht_raw_event raw[4];
    memset(raw, 0, sizeof raw);
    raw[0].type = HT_EVENT_HEAP_ALLOC;
    size_t size = 1;
    CHECK_EQ_U(
        ht__enc_chunk(&s, raw, 1, buf, HT_FMT_CHUNK_HDR_SIZE + HT_ENC_EVENT_MAX - 1, &size, NULL),
        0);
    CHECK_EQ_U(size, 0);
    CHECK_EQ_U(ht__enc_chunk(&s, raw, 0, buf, sizeof buf, &size, NULL), 0);
    /* A REALLOC without its tail, and an unknown type, are skipped and counted. */
    raw[0].type = HT_EVENT_HEAP_REALLOC;
    raw[1].type = 0x77;
    raw[2].type = HT_EVENT_HEAP_FREE;
    size_t bad = 0;
    CHECK_EQ_U(ht__enc_chunk(&s, raw, 3, buf, sizeof buf, &size, &bad), 3);
    CHECK_EQ_U(bad, 2);
    CHECK(size > HT_FMT_CHUNK_HDR_SIZE);
    CHECK_EQ_U(s.n_events, 1);
    ht_event e = {.type = HT_EVENT_HEAP_ALLOC, .sequence = 5};
    uint64_t next = 6;
    CHECK_EQ_U(ht__enc_raw_from_event(&e, 0, &next, raw), 0); /* sequence going back */
    e.type = 0x30;
    next = 1;
    CHECK_EQ_U(ht__enc_raw_from_event(&e, 0, &next, raw), 0);
    e.type = HT_EVENT_HEAP_ALLOC;
    e.alloc.source = 256;
    CHECK_EQ_U(ht__enc_raw_from_event(&e, 0, &next, raw), 0);
    e.alloc.source = 3;
    CHECK_EQ_U(ht__enc_raw_from_event(&e, 0, &next, raw), 3); /* skip + heap + event */
    CHECK_EQ_U(next, 6);
    CHECK_EQ_U(ht__enc_file_header(buf, 47, 1, NULL, 0, 0, 0), 0);
    CHECK_EQ_U(ht__enc_end(buf, 80, 0, 0, NULL, 0), 0); /* worst case must fit */
    CHECK_EQ_U(ht__enc_end(buf, 100, 0, 0, NULL, 0), HT_FMT_CHUNK_HDR_SIZE + 3);
    ht_enc_meta m;
    ht__enc_meta_begin(&m, buf, 100, 0);
    uint64_t fr[1] = {1};
    CHECK(!ht__enc_meta_stack(&m, 0, fr, 1));
    CHECK(!ht__enc_meta_stack(&m, 1, fr, 0));
    CHECK(!ht__enc_meta_marker(&m, 0, 0, "0123456789012345678901234567890123", 34)); /* no room */
    CHECK_EQ_U(ht__enc_meta_end(&m), HT_FMT_CHUNK_HDR_SIZE);
    CHECK(strcmp(ht_reader_status_name[HT_READER_TRUNCATED], "truncated") == 0);
    for (int k = 0; k < HT_READER_N_STATUS; k++)
        CHECK(ht_reader_status_name[k] != NULL);
}

/* Random streams on random threads and chunk sizes: the fast reader and the simple decoder
 * agree event for event. */
static void test_cross_check_random(void)
{
    for (uint64_t seed = 1; seed <= 12; seed++) {
        uint64_t rng = seed * 1000003;
        int n_threads = 1 + (int)(tb_rand(&rng) % 6);
        size_t per = 200 + (size_t)(tb_rand(&rng) % 3000);
        bool stacks = seed % 2 == 0;
        tb_trace t;
        tb_init(&t, (uint32_t)seed, "r", 1, 0, 0);
        if (stacks) {
            ht_enc_meta m;
            tb_meta_begin(&t, &m, 65536);
            for (uint32_t id = 1; id <= 50; id++) {
                uint64_t fr[8];
                size_t nf = 1 + (size_t)(tb_rand(&rng) % 8);
                for (size_t j = 0; j < nf; j++)
                    fr[j] = 0x400000 + tb_rand(&rng) % 0x100000;
                CHECK(ht__enc_meta_stack(&m, id, fr, nf));
            }
            tb_meta_end(&t, &m);
        }
        ht_event *ev = calloc(per, sizeof *ev);
        uint32_t *stk = calloc(per, sizeof *stk);
        ht_enc_stream s[6];
        uint64_t ts[6], seq[6];
        uint64_t heaps[5] = {0, 0x1000, 0x2000, 0x7f0000000000, UINT64_MAX};
        for (int th = 0; th < n_threads; th++) {
            memset(&s[th], 0, sizeof s[th]);
            s[th].tid = 1 + (uint32_t)th;
            s[th].next_seq = 1;
            ts[th] = 1000;
            seq[th] = 0;
        }
        size_t total = 0;
        for (int round = 0; round < 4; round++) {
            for (int th = 0; th < n_threads; th++) {
                size_t k = per / 4;
                for (size_t i = 0; i < k; i++) {
                    rnd_event(&ev[i], &rng, s[th].tid, &ts[th], &seq[th], heaps, 5);
                    stk[i] = stacks && tb_rand(&rng) % 2 ? 1 + (uint32_t)(tb_rand(&rng) % 50) : 0;
                }
                tb_events(&t, &s[th], ev, stk, k, 200 + (size_t)(tb_rand(&rng) % 5000));
                total += k;
            }
        }
        tb_end(&t, 0, NULL, 0);
        sd_result sd;
        sd_decode(t.data, t.size, &sd);
        CHECK(!sd.damaged);
        CHECK_EQ_U(sd.n_events, total);
        /* Timestamps can go back within a thread here, so the reader's merge order is only
         * (ts, seq, tid)-sorted per run; compare as sorted sets. */
        sd_event *got = calloc(total + 1, sizeof *got);
        ht_reader *r;
        REQUIRE(ht_reader_open_memory(t.data, t.size, &r) == HT_READER_OK);
        ht_reader_event re;
        size_t n = 0;
        while (ht_reader_next(r, &re) && n < total) {
            got[n].ev = re.event;
            got[n].stack = re.stack_id;
            n++;
        }
        CHECK(ht_reader_status(r, NULL, NULL) == HT_READER_OK);
        ht_reader_close(r);
        CHECK_EQ_U(n, total);
        qsort(got, n, sizeof *got, cmp_expected);
        size_t bad = 0;
        for (size_t i = 0; i < n && i < sd.n_events; i++)
            bad += !event_equal(&got[i].ev, &sd.events[i].ev) || got[i].stack != sd.events[i].stack;
        CHECK_EQ_U(bad, 0);
        free(got);
        free(sd.events);
        free(ev);
        free(stk);
        tb_free(&t);
    }
}

/* Monotonic per-thread streams: then the merged order itself must equal the sorted order. */
static void test_merge_order_monotonic(void)
{
    enum { T = 4, N = 20000 };
    tb_trace t;
    tb_init(&t, 3, "m", 1, 0, 0);
    ht_event *ev = calloc(N, sizeof *ev);
    sd_event *want = calloc((size_t)T * N, sizeof *want);
    ht_enc_stream s[T];
    for (int th = 0; th < T; th++) {
        s[th] = (ht_enc_stream){.tid = 10 + (uint32_t)th, .next_seq = 1};
        tb_realistic(ev, N, s[th].tid, 99 + (uint64_t)th, 1000, 0x9000);
        for (size_t i = 0; i < N; i++)
            want[(size_t)th * N + i].ev = ev[i];
        /* Thread by thread in the file: the worst interleaving for a merge. */
        tb_events(&t, &s[th], ev, NULL, N, 4096);
    }
    tb_end(&t, 0, NULL, 0);
    qsort(want, (size_t)T * N, sizeof *want, cmp_expected);
    ht_reader *r;
    REQUIRE(ht_reader_open_memory(t.data, t.size, &r) == HT_READER_OK);
    check_reader_matches(r, want, (size_t)T * N);
    ht_reader_close(r);
    free(ev);
    free(want);
    tb_free(&t);
}

/* Bytes per event on a realistic stream without stacks (deterministic for the seed). */
static void test_bytes_per_event(void)
{
    enum { N = 1000000 };
    ht_event *ev = calloc(N, sizeof *ev);
    tb_realistic(ev, N, 1, 12345, 1000000, 0x7f5500001000ull);
    tb_trace t;
    tb_init(&t, 1, "bench", 5, 0, 0);
    size_t start = t.size;
    ht_enc_stream s = {.tid = 1, .next_seq = 1};
    tb_events(&t, &s, ev, NULL, N, 65536);
    double bpe = (double)(t.size - start) / N;
    printf("bytes/event (realistic, no stacks, 64 KiB chunks incl. headers): %.2f\n", bpe);
    CHECK(bpe < 16.0);
    CHECK(bpe < 8.0); /* what the prototype reached */
    free(ev);
    tb_free(&t);
}

TEST_MAIN(TEST(test_crc_varint), TEST(test_every_type_single_thread), TEST(test_multi_thread_merge),
          TEST(test_metadata_and_lost), TEST(test_encoder_edges), TEST(test_cross_check_random),
          TEST(test_merge_order_monotonic), TEST(test_bytes_per_event))
