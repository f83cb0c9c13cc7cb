/* test_report_analysis.c — unit tests of src/analysis without a trace file: the copy of the LFH
 * class table equals the heap's (ht_lfh_class_size), the live map against a naive array under
 * random inserts and removes, the lazy peak snapshots against a brute-force recomputation on
 * random synthetic events, the window classes, temporaries, and the dump formatter's numbers
 * at their extremes. */
#include "harness.h"

#include "analysis/internal.h"
#include "trace_build.h"

#include <heaptrail.h>

static void test_lfh_table_matches_heap(void)
{
    CHECK_EQ_U(ht_lfh_class_count(), HT_AN_N_LFH);
    for (unsigned i = 0; i < HT_AN_N_LFH; i++)
        CHECK_EQ_U(ht_lfh_class_size(i), ht__an_lfh_class_size[i]);
    CHECK_EQ_U(ht__an_lfh_class(0), 0);
    CHECK_EQ_U(ht__an_lfh_class(16), 0);
    CHECK_EQ_U(ht__an_lfh_class(17), 1);
    CHECK_EQ_U(ht__an_lfh_class(16384), HT_AN_N_LFH - 1);
    CHECK_EQ_U(ht__an_lfh_class(16385), HT_AN_N_LFH);
    for (uint64_t s = 1; s <= 16384; s++) {
        unsigned c = ht__an_lfh_class(s);
        CHECK(ht__an_lfh_class_size[c] >= s && (c == 0 || ht__an_lfh_class_size[c - 1] < s));
    }
    CHECK_EQ_U(ht__an_pow2_bucket(0), 0);
    CHECK_EQ_U(ht__an_pow2_bucket(1), 1);
    CHECK_EQ_U(ht__an_pow2_bucket(4095), 12);
    CHECK_EQ_U(ht__an_pow2_bucket(4096), 13);
    CHECK_EQ_U(ht__an_pow2_bucket(UINT64_MAX), 64);
    CHECK_EQ_U(ht__an_lifetime_bucket(99), 0);
    CHECK_EQ_U(ht__an_lifetime_bucket(100), 1);
    CHECK_EQ_U(ht__an_lifetime_bucket(UINT64_MAX), HT_AN_N_LIFETIME - 1);
}

static uint64_t rng = 88172645463325252ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void test_livemap_against_array(void)
{
    enum { N = 3000 };
    static uint64_t addrs[N];
    static bool live[N];
    ht_livemap m = {0};
    for (int i = 0; i < N; i++)
        addrs[i] = 0x10000 + (uint64_t)i * 112 + (uint64_t)(i % 3) * 16; /* unique */
    size_t n_live = 0;
    for (int step = 0; step < 200000; step++) {
        int i = (int)(next_rand() % N);
        ht_block *b = ht__live_find(&m, addrs[i]);
        REQUIRE((b != NULL) == live[i]);
        if (live[i]) {
            CHECK_EQ_U(b->size, (uint64_t)i);
            ht__live_remove(&m, b);
            live[i] = false;
            n_live--;
        } else {
            bool existed;
            b = ht__live_insert(&m, addrs[i], &existed);
            REQUIRE(b != NULL);
            CHECK(!existed);
            b->size = (uint64_t)i;
            live[i] = true;
            n_live++;
        }
        CHECK_EQ_U(m.n, n_live);
    }
    for (int i = 0; i < N; i++)
        CHECK((ht__live_find(&m, addrs[i]) != NULL) == live[i]);
    ht__live_free(&m);
}

static ht_reader_event mk(uint16_t type, uint64_t ts, uint32_t tid, uint64_t heap)
{
    ht_reader_event e;
    memset(&e, 0, sizeof e);
    e.event.type = type;
    e.event.timestamp_ns = ts;
    e.event.tid = tid;
    e.event.heap_handle = heap;
    return e;
}

/* Random allocs and frees over 3 heaps and 20 sites; the per-site bytes live at the (first)
 * peak are recomputed by brute force: replay once to find the peak's event index, then sum
 * the blocks live right after that event. */
static void test_peak_snapshot_brute_force(void)
{
    enum { N_EV = 20000, N_SLOT = 300, N_SITE = 20 };
    static ht_reader_event evs[N_EV];
    static uint64_t slot_size[N_SLOT];
    static uint32_t slot_site[N_SLOT];
    static bool slot_live[N_SLOT];
    memset(slot_live, 0, sizeof slot_live);
    for (int i = 0; i < N_EV; i++) {
        int s = (int)(next_rand() % N_SLOT);
        uint64_t heap = 0x1000 * (1 + (uint64_t)(s % 3));
        ht_reader_event e;
        if (slot_live[s]) {
            e = mk(HT_EVENT_HEAP_FREE, 1000 + (uint64_t)i, 7, heap);
            e.event.free.address = 0x100000 + (uint64_t)s * 64;
            e.event.free.source = 3;
            slot_live[s] = false;
        } else {
            e = mk(HT_EVENT_HEAP_ALLOC, 1000 + (uint64_t)i, 7, heap);
            e.event.alloc.address = 0x100000 + (uint64_t)s * 64;
            e.event.alloc.size = 1 + next_rand() % 5000;
            e.event.alloc.source = 3;
            e.stack_id = (uint32_t)(next_rand() % N_SITE);
            slot_live[s] = true;
        }
        evs[i] = e;
    }
    ht_analysis *an = ht__an_create(NULL, 0);
    REQUIRE(an != NULL);
    uint64_t live = 0, peak = 0;
    int peak_at = -1;
    memset(slot_live, 0, sizeof slot_live);
    for (int i = 0; i < N_EV; i++) {
        ht__an_event(an, &evs[i]);
        int s = (int)((evs[i].event.type == HT_EVENT_HEAP_FREE ? evs[i].event.free.address
                                                               : evs[i].event.alloc.address) -
                      0x100000) /
                64;
        if (evs[i].event.type == HT_EVENT_HEAP_ALLOC) {
            slot_live[s] = true;
            slot_size[s] = evs[i].event.alloc.size;
            slot_site[s] = evs[i].stack_id;
            live += slot_size[s];
        } else {
            slot_live[s] = false;
            live -= slot_size[s];
        }
        if (live > peak) {
            peak = live;
            peak_at = i;
        }
    }
    ht__an_finish(an);
    CHECK_EQ_U(an->peak_bytes, peak);
    /* brute force: the live set right after event peak_at */
    uint64_t site_bytes[N_SITE] = {0}, heap_bytes[3] = {0};
    memset(slot_live, 0, sizeof slot_live);
    for (int i = 0; i <= peak_at; i++) {
        int s = (int)((evs[i].event.type == HT_EVENT_HEAP_FREE ? evs[i].event.free.address
                                                               : evs[i].event.alloc.address) -
                      0x100000) /
                64;
        if (evs[i].event.type == HT_EVENT_HEAP_ALLOC) {
            slot_live[s] = true;
            slot_size[s] = evs[i].event.alloc.size;
            slot_site[s] = evs[i].stack_id;
        } else
            slot_live[s] = false;
    }
    for (int s = 0; s < N_SLOT; s++)
        if (slot_live[s]) {
            site_bytes[slot_site[s]] += slot_size[s];
            heap_bytes[s % 3] += slot_size[s];
        }
    for (uint32_t id = 0; id < N_SITE && id < an->n_sites; id++)
        CHECK_EQ_U(ht__an_site_peak_bytes(an, &an->sites[id]), site_bytes[id]);
    for (size_t k = 0; k < an->n_heaps; k++) {
        size_t idx = (size_t)(an->heaps[k].handle / 0x1000) - 1;
        CHECK_EQ_U(ht__an_heap_peak_share(an, &an->heaps[k]), heap_bytes[idx]);
    }
    ht__an_destroy(an);
}

static void test_window_and_temporaries(void)
{
    ht_an_config cfg = {.window = true, .from_ns = 100, .to_ns = 200};
    ht_analysis *an = ht__an_create(&cfg, 1000);
    REQUIRE(an != NULL);
    /* (alloc time, free time or 0 = never), relative to start 1000 */
    static const uint64_t t[][2] = {{50, 80},    /* before: not counted */
                                    {50, 150},   /* AOFI */
                                    {50, 250},   /* AOFO */
                                    {50, 0},     /* AOFO (never freed) */
                                    {120, 180},  /* AIFI */
                                    {120, 250},  /* AIFO */
                                    {120, 0},    /* AIFO */
                                    {250, 260}}; /* after: not counted */
    enum { N = sizeof t / sizeof t[0] };
    /* events sorted by time */
    ht_reader_event evs[2 * N];
    size_t n = 0;
    for (size_t i = 0; i < N; i++) {
        ht_reader_event a = mk(HT_EVENT_HEAP_ALLOC, 1000 + t[i][0], 1, 0x5000);
        a.event.alloc.address = 0x9000 + i * 16;
        a.event.alloc.size = 10 * (i + 1);
        a.event.alloc.source = 1;
        evs[n++] = a;
        if (t[i][1]) {
            ht_reader_event f = mk(HT_EVENT_HEAP_FREE, 1000 + t[i][1], 1, 0x5000);
            f.event.free.address = a.event.alloc.address;
            f.event.free.source = 1;
            evs[n++] = f;
        }
    }
    for (size_t i = 1; i < n; i++) /* insertion sort by ts (stable) */
        for (size_t j = i; j > 0 && evs[j - 1].event.timestamp_ns > evs[j].event.timestamp_ns;
             j--) {
            ht_reader_event x = evs[j];
            evs[j] = evs[j - 1];
            evs[j - 1] = x;
        }
    for (size_t i = 0; i < n; i++)
        ht__an_event(an, &evs[i]);
    ht__an_finish(an);
    CHECK_EQ_U(an->win[HT_WIN_AOFI].n, 1);
    CHECK_EQ_U(an->win[HT_WIN_AOFI].bytes, 20);
    CHECK_EQ_U(an->win[HT_WIN_AOFO].n, 2);
    CHECK_EQ_U(an->win[HT_WIN_AOFO].bytes, 30 + 40);
    CHECK_EQ_U(an->win[HT_WIN_AIFI].n, 1);
    CHECK_EQ_U(an->win[HT_WIN_AIFI].bytes, 50);
    CHECK_EQ_U(an->win[HT_WIN_AIFO].n, 2);
    CHECK_EQ_U(an->win[HT_WIN_AIFO].bytes, 60 + 70);
    CHECK_EQ_U(an->leaked_blocks, 2);
    /* temporaries: only (250, 260) is freed before the thread allocated again */
    CHECK_EQ_U(an->n_temp, 1);
    CHECK_EQ_U(an->bytes_temp, 80);
    ht__an_destroy(an);
}

static void test_stale_and_orphans(void)
{
    ht_analysis *an = ht__an_create(NULL, 0);
    REQUIRE(an != NULL);
    ht_reader_event a = mk(HT_EVENT_HEAP_ALLOC, 10, 1, 0x5000);
    a.event.alloc.address = 0x9000;
    a.event.alloc.size = 100;
    a.event.alloc.source = 3;
    ht__an_event(an, &a);
    a.event.timestamp_ns = 20;
    a.event.alloc.size = 30; /* same address again: the free was lost */
    ht__an_event(an, &a);
    ht_reader_event f = mk(HT_EVENT_HEAP_FREE, 30, 1, 0x5000);
    f.event.free.address = 0x7777; /* never allocated */
    f.event.free.source = 3;
    ht__an_event(an, &f);
    ht__an_finish(an);
    CHECK_EQ_U(an->n_stale, 1);
    CHECK_EQ_U(an->bytes_stale, 100);
    CHECK_EQ_U(an->n_orphan_free, 1);
    CHECK_EQ_U(an->live_bytes, 30);
    CHECK_EQ_U(an->leaked_bytes, 30);
    CHECK_EQ_U(an->peak_bytes, 100);
    ht__an_destroy(an);
}

/* The heap and thread indexes through many growths, against plain arrays: every handle and
 * tid finds its entry, a handle used again after its heap (ht__an_heap_new) names the newest
 * heap, and lookups after all that still agree. */
static void test_indexes_grow(void)
{
    ht_analysis *an = ht__an_create(NULL, 0);
    REQUIRE(an != NULL);
    enum { N = 3000 };
    static size_t heap_pos[N], thread_pos[N];
    for (size_t i = 0; i < N; i++) {
        heap_pos[i] = ht__an_heap_get(an, 0x7f0000000000ull + (uint64_t)i * 0x400000u);
        thread_pos[i] = ht__an_thread_get(an, (uint32_t)(1000 + i * 7));
        REQUIRE(heap_pos[i] == i && thread_pos[i] == i);
    }
    size_t bad = 0;
    for (size_t i = 0; i < N; i++) {
        bad += ht__an_heap_get(an, 0x7f0000000000ull + (uint64_t)i * 0x400000u) != heap_pos[i];
        bad += ht__an_thread_get(an, (uint32_t)(1000 + i * 7)) != thread_pos[i];
    }
    CHECK_EQ_U(bad, 0);
    /* Handle reuse: every 10th handle gets a new heap; lookups name the new one. */
    size_t n = N;
    for (size_t i = 0; i < N; i += 10)
        heap_pos[i] = ht__an_heap_new(an, 0x7f0000000000ull + (uint64_t)i * 0x400000u);
    for (size_t i = 0; i < N; i++) {
        if (i % 10 == 0)
            bad += heap_pos[i] != n++;
        bad += ht__an_heap_lookup(an, 0x7f0000000000ull + (uint64_t)i * 0x400000u) != heap_pos[i];
    }
    CHECK_EQ_U(bad, 0);
    CHECK(ht__an_heap_lookup(an, 0x1234) == SIZE_MAX);
    CHECK_EQ_U(an->n_heaps, N + N / 10);
    CHECK_EQ_U(an->n_threads, N);
    ht__an_destroy(an);
}

static void test_dump_extremes(void)
{
    char buf[HT_DUMP_LINE_MAX];
    ht_reader_event e = mk(HT_EVENT_HEAP_REALLOC, UINT64_MAX, UINT32_MAX, UINTPTR_MAX);
    e.event.flags = 0xFFFF;
    e.event.sequence = UINT64_MAX;
    e.stack_id = UINT32_MAX;
    e.event.realloc.new_address = UINTPTR_MAX;
    e.event.realloc.old_address = 0;
    e.event.realloc.new_size = UINT64_MAX;
    e.event.realloc.old_size = 0;
    e.event.realloc.source = UINT32_MAX;
    for (int f = 0; f < 3; f++) {
        size_t n = ht__dump_line((ht_dump_format)f, &e, buf);
        CHECK(n < HT_DUMP_LINE_MAX && buf[n - 1] == '\n');
    }
    size_t n = ht__dump_line(HT_DUMP_JSON, &e, buf);
    buf[n] = '\0';
    CHECK(strstr(buf, "\"ts_ns\":18446744073709551615,") != NULL);
    CHECK(strstr(buf, "\"NewAddress\":\"0xffffffffffffffff\"") != NULL);
    CHECK(strstr(buf, "\"OldAddress\":\"0x0\"") != NULL);
    CHECK(strstr(buf, "\"Source\":4294967295}") != NULL);
    char ref[64];
    for (uint64_t v = 1; v != 0 && v < UINT64_MAX / 3; v = v * 3 + 1) {
        e = mk(HT_EVENT_HEAP_FREE, v, 1, 0);
        n = ht__dump_line(HT_DUMP_TEXT, &e, buf);
        buf[n] = '\0';
        snprintf(ref, sizeof ref, "%" PRIu64 " tid=1 ", v);
        CHECK(strncmp(buf, ref, strlen(ref)) == 0);
    }
}

/* A trace with lost events (built with the real encoder): the report says how many, that
 * figures are not exact, the committed-bytes bound on the peak, and the lost free and lost
 * alloc it could detect. */
static void test_lost_events_report(void)
{
    tb_trace t;
    tb_init(&t, 42, "prog\0arg", 8, 1000, 5000);
    ht_enc_stream s = {.tid = 7, .next_seq = 1};
    ht_event ev[4];
    memset(ev, 0, sizeof ev);
    ev[0].timestamp_ns = 1100;
    ev[0].tid = 7;
    ev[0].type = HT_EVENT_HEAP_CREATE;
    ev[0].heap_handle = 0x5000;
    ev[0].create.committed_space = 65536;
    ev[0].create.reserved_space = 1 << 20;
    ev[0].sequence = 1;
    ev[1].timestamp_ns = 1200;
    ev[1].tid = 7;
    ev[1].type = HT_EVENT_HEAP_ALLOC;
    ev[1].heap_handle = 0x5000;
    ev[1].alloc.address = 0x9000;
    ev[1].alloc.size = 100;
    ev[1].alloc.source = 3;
    ev[1].sequence = 2;
    tb_events(&t, &s, ev, NULL, 2, 4096);
    s.lost_so_far = 3; /* three events dropped here: their sequence numbers are skipped */
    memset(ev, 0, sizeof ev);
    ev[0].timestamp_ns = 1300;
    ev[0].tid = 7;
    ev[0].type = HT_EVENT_HEAP_FREE;
    ev[0].heap_handle = 0x5000;
    ev[0].free.address = 0x7000; /* its allocation was lost */
    ev[0].free.source = 3;
    ev[0].sequence = 6;
    ev[1] = ev[0];
    ev[1].timestamp_ns = 1400;
    ev[1].type = HT_EVENT_HEAP_ALLOC;
    ev[1].alloc.address = 0x9000; /* 0x9000's free was lost */
    ev[1].alloc.size = 40;
    ev[1].alloc.source = 3;
    ev[1].sequence = 7;
    tb_events(&t, &s, ev, NULL, 2, 4096);
    ht_enc_thread_total tot = {.tid = 7, .n_events = 4, .n_lost = 3, .n_chunks = s.n_chunks};
    tb_end(&t, 2000, &tot, 1);
    ht_reader *rd;
    REQUIRE(ht_reader_open_memory(t.data, t.size, &rd) == HT_READER_OK);
    ht_reader_trace_info info;
    ht_reader_info(rd, &info);
    CHECK_EQ_U(info.n_lost, 3);
    ht_analysis *an = ht__an_create(NULL, info.start_mono_ns);
    REQUIRE(an != NULL);
    ht__an_run(an, rd, NULL, NULL);
    CHECK_EQ_U(an->n_orphan_free, 1);
    CHECK_EQ_U(an->n_stale, 1);
    CHECK_EQ_U(an->peak_bytes, 100);
    CHECK_EQ_U(an->leaked_bytes, 40);
    ht_report_opts opts = {.top = 5};
    ht_sbuf out = {0};
    REQUIRE(ht__report_json(an, rd, NULL, &opts, &out));
    CHECK(strstr(out.p, "\"lost_events\":3,") != NULL);
    CHECK(strstr(out.p, "\"exact\":false,\"unknown_blocks_bound\":3,"
                        "\"peak_upper_bound_bytes\":65536,\"orphan_frees\":1,"
                        "\"stale_blocks\":1,\"stale_bytes\":100}") != NULL);
    CHECK(strstr(out.p, "\"program\":\"prog arg\",\"argv\":[\"prog\",\"arg\"]") != NULL);
    ht__sb_free(&out);
    memset(&out, 0, sizeof out);
    REQUIRE(ht__report_text(an, rd, NULL, &opts, &out));
    CHECK(strstr(out.p, "  lost events    3: tid 7 lost 3;") != NULL);
    CHECK(strstr(out.p, "exact to within 3 blocks") != NULL);
    CHECK(strstr(out.p, "peak exact to within 65436 bytes") != NULL);
    ht__sb_free(&out);
    ht__an_destroy(an);
    ht_reader_close(rd);
    tb_free(&t);
}

TEST_MAIN(TEST(test_lfh_table_matches_heap), TEST(test_livemap_against_array),
          TEST(test_peak_snapshot_brute_force), TEST(test_window_and_temporaries),
          TEST(test_stale_and_orphans), TEST(test_indexes_grow), TEST(test_dump_extremes),
          TEST(test_lost_events_report))
