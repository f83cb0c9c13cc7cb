/* test_reader_pieces.c — chunks decoded in pieces (src/reader/merge.c piece_refill,
 * src/reader/decode.c ht__rd_check_events / ht__rd_piece_decode): the store-free check pass
 * accepts exactly the chunks the decoder accepts (sound and forged, both varint decoders);
 * a chunk decoded in pieces of any size, resumed across every kind of record (stacks,
 * heap selectors and a full heap table, CREATE/DESTROY, REALLOC, EXPAND/CONTRACT, flags,
 * SEQ_SKIP, TIME_BACK, escaped Sources, odd addresses, the checked tail), gives the events of
 * the whole-chunk decode; a trace read with pieces (forced small, or from the footprint
 * budget) gives the same events, in the same order, through both APIs, from memory and from a
 * file, with metadata chunks (stacks, modules, markers) between the event chunks; damage in the
 * middle or at the end of a chunk that is decoded in pieces yields no event of that chunk and
 * the same status and offset as the whole-chunk read; the budget's thresholds and the memory
 * bound (a cursor holds at most a piece). */
#include "harness.h"
#include "reader/internal.h"
#include "trace_build.h"

#include <heaptrail/reader.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N_HANDLES 40 /* heap handles in use: more than the chunk's heap table of 32 */

/* Stacks 1 .. 5 (r + 1) are defined before round r's event chunks. */
#define STACKS_PER_ROUND 5

/* Makes ev[0 .. n) (a realistic stream) use every record kind; stacks up to n_stacks. */
static void mix_events(ht_event *ev, uint32_t *stk, size_t n, uint64_t *rng, uint32_t n_stacks)
{
    uint64_t skip = 0;
    for (size_t i = 0; i < n; i++) {
        ht_event *e = &ev[i];
        uint64_t x = tb_rand(rng) % 200;
        stk[i] = x < 60 && n_stacks > 0 ? 1 + (uint32_t)(tb_rand(rng) % n_stacks) : 0;
        if (x < 8)
            e->heap_handle = 0x7f0000900000ull + (tb_rand(rng) % N_HANDLES) * 0x1000;
        if (x == 10)
            e->flags = HT_EVENT_RUNDOWN;
        if (x == 11 && e->type == HT_EVENT_HEAP_FREE) {
            e->flags = HT_EVENT_FROM_SIZE;
            e->free.source = HT_SOURCE_INVALID;
        }
        if (x == 12 || x == 13) {
            e->type = x == 12 ? HT_EVENT_HEAP_CREATE : HT_EVENT_HEAP_DESTROY;
            memset(&e->create, 0, sizeof e->create);
            if (x == 12) {
                e->create.flags = (uint32_t)tb_rand(rng);
                e->create.reserved_space = tb_rand(rng) >> (tb_rand(rng) % 64);
                e->create.committed_space = 65536;
            }
        }
        if (x == 14 || x == 15) {
            e->type = x == 14 ? HT_EVENT_HEAP_EXPAND : HT_EVENT_HEAP_CONTRACT;
            memset(&e->expand, 0, sizeof e->expand);
            e->expand.address = 0x7f0000100000ull + tb_rand(rng) % 100000;
            e->expand.size = 4096 << (tb_rand(rng) % 10);
            e->expand.committed_space = 1 << 20;
        }
        if (x == 16 && e->type == HT_EVENT_HEAP_FREE)
            e->free.source = 9 + (uint32_t)(tb_rand(rng) % 200); /* an escaped Source */
        if (x == 17 && e->type == HT_EVENT_HEAP_ALLOC)
            e->alloc.address += 8; /* an odd address field */
        if (x == 18 && e->type == HT_EVENT_HEAP_ALLOC)
            e->alloc.size = tb_rand(rng); /* a varint over 8 bytes */
        if (x == 19)
            skip += 1 + tb_rand(rng) % 50; /* SEQ_SKIP */
        if (x == 20 && i > 0)
            e->timestamp_ns = ev[i - 1].timestamp_ns - 1 - tb_rand(rng) % 100; /* TIME_BACK */
        e->sequence += skip;
    }
}

/* A trace of n_threads threads in rounds: a metadata chunk (stacks, a module, a marker, an
 * unload), then every thread's next events as chunks of up to chunk_cap bytes. Returns the
 * event count. */
static size_t build(tb_trace *t, int n_threads, int rounds, size_t per_round, size_t chunk_cap,
                    uint64_t seed)
{
    tb_init(t, 5, "pieces", 6, 0, 0);
    uint64_t rng = seed;
    ht_enc_stream s[64];
    for (int th = 0; th < n_threads; th++)
        s[th] = (ht_enc_stream){.tid = 300 + (uint32_t)th, .next_seq = 1};
    ht_event *ev = malloc(per_round * sizeof *ev);
    uint32_t *stk = malloc(per_round * sizeof *stk);
    size_t total = 0;
    for (int r = 0; r < rounds; r++) {
        ht_enc_meta m;
        tb_meta_begin(t, &m, 4096);
        for (uint32_t k = 0; k < STACKS_PER_ROUND; k++) {
            uint64_t fr[3] = {0x401000 + k, 0x402000 + (uint64_t)r, 0x7f0000001000};
            ht__enc_meta_stack(&m, (uint32_t)r * STACKS_PER_ROUND + k + 1, fr, 1 + k % 3);
        }
        ht__enc_meta_module(&m, 1000 + (uint64_t)r, 0x500000 + (uint64_t)r * 0x10000, 0x1000,
                            "/lib/x.so", 9, NULL, 0);
        ht__enc_meta_marker(&m, 1001 + (uint64_t)r, 300, "round", 5);
        if (r > 0)
            ht__enc_meta_unload(&m, 1002 + (uint64_t)r, 0x500000 + (uint64_t)(r - 1) * 0x10000);
        tb_meta_end(t, &m);
        for (int th = 0; th < n_threads; th++) {
            tb_realistic(ev, per_round, s[th].tid, seed + (uint64_t)(r * 64 + th),
                         10000 + (uint64_t)r * 100000000ull, 0x7f0000001000ull);
            for (size_t i = 0; i < per_round; i++)
                ev[i].sequence = s[th].next_seq + i;
            mix_events(ev, stk, per_round, &rng, (uint32_t)(r + 1) * STACKS_PER_ROUND);
            tb_events(t, &s[th], ev, stk, per_round, chunk_cap);
            total += per_round;
        }
    }
    tb_end(t, 0, NULL, 0);
    free(ev);
    free(stk);
    return total;
}

static void knobs(uint32_t piece_events, size_t budget)
{
    atomic_store(&ht__rd_piece_events, piece_events);
    atomic_store(&ht__rd_piece_budget, budget);
}

static size_t g_default_budget;

static void knobs_reset(void)
{
    knobs(0, g_default_budget);
}

/* -- the check pass and the piece decoder against the whole-chunk decoder ------------------ */

/* Every event chunk of buf: the check pass accepts it exactly when the decoder does (with the
 * same sorted flag), and when it does, pieces of random sizes (1 .. 300 events) resumed one
 * after another give the whole decode's events. Returns the disagreements; *n_bad counts the
 * chunks that do not decode, *n_pieces the pieces decoded. */
static size_t chunks_compare(const uint8_t *buf, size_t size, size_t data_off, uint64_t *rng,
                             size_t *n_bad, size_t *n_pieces)
{
    ht_reader *r;
    if (ht_reader_open_memory(buf, size, &r) != HT_READER_OK)
        return 1;
    size_t diff = 0;
    ht_reader_event *whole = NULL, *piece = NULL;
    for (size_t off = data_off; size - off >= HT_FMT_CHUNK_HDR_SIZE;) {
        rd_chunk c;
        if (!ht__rd_chunk_parse(r, buf + off, off, &c) ||
            c.payload_size > size - off - HT_FMT_CHUNK_HDR_SIZE)
            break;
        const uint8_t *pl = buf + off + HT_FMT_CHUNK_HDR_SIZE;
        off += HT_FMT_CHUNK_HDR_SIZE + c.payload_size;
        if (c.kind != HT_FMT_KIND_EVENTS || c.n_records == 0 || c.n_records > c.payload_size / 2)
            continue;
        whole = realloc(whole, c.n_records * sizeof *whole);
        piece = realloc(piece, c.n_records * sizeof *piece);
        bool sorted_w = false, sorted_c = false;
        bool ok_w = ht__rd_decode_events(r, &c, pl, whole, &sorted_w);
        bool ok_c = ht__rd_check_events(r, &c, pl, &sorted_c);
        *n_bad += !ok_w;
        if (ok_w != ok_c || (ok_w && sorted_w != sorted_c)) {
            diff++;
            continue;
        }
        if (!ok_w)
            continue;
        rd_piece pc;
        ht__rd_piece_start(r, &pc, &c, pl);
        uint32_t done = 0;
        while (done < c.n_records) {
            uint32_t max = 1 + (uint32_t)(tb_rand(rng) % (tb_rand(rng) % 2 ? 4 : 300)), got = 0;
            if (!ht__rd_piece_decode(r, &pc, piece + done, max, &got) || got == 0 || got > max) {
                diff++;
                break;
            }
            done += got;
            (*n_pieces)++;
        }
        if (done == c.n_records && memcmp(whole, piece, c.n_records * sizeof *whole) != 0)
            diff++;
    }
    free(whole);
    free(piece);
    ht_reader_close(r);
    return diff;
}

static void check_pass_agrees(void)
{
    tb_trace t;
    build(&t, 2, 3, 4000, 16384, 11);
    const size_t data_off = HT_FMT_FILE_HDR_SIZE + 6;
    uint64_t rng = 5;
    __builtin_cpu_init();
    bool bmi2 = __builtin_cpu_supports("bmi2");
    for (int use_pext = 0; use_pext <= 1; use_pext++) {
        if (use_pext && !bmi2) {
            fprintf(stderr, "  (no BMI2 here: the pext decoder and check pass are not run)\n");
            break;
        }
        atomic_store(&ht__rd_pext, use_pext);
        size_t n_bad = 0, n_pieces = 0;
        CHECK_EQ_U(chunks_compare(t.data, t.size, data_off, &rng, &n_bad, &n_pieces), 0);
        CHECK_EQ_U(n_bad, 0);
        CHECK(n_pieces > 100);
        uint8_t *buf = malloc(t.size);
        size_t diff = 0;
        n_bad = 0;
        for (int iter = 0; iter < 300; iter++) {
            tb_forge(buf, t.data, t.size, data_off, &rng, 3);
            diff += chunks_compare(buf, t.size, data_off, &rng, &n_bad, &n_pieces);
        }
        printf("pext %d: forged: %zu event chunks did not decode, check pass disagreed on %zu, "
               "%zu pieces\n",
               use_pext, n_bad, diff, n_pieces);
        CHECK(n_bad > 150); /* the mutations did reach the record checks */
        CHECK_EQ_U(diff, 0);
        free(buf);
    }
    atomic_store(&ht__rd_pext, -1);
    tb_free(&t);
}

/* -- whole reads: pieces against whole chunks ---------------------------------------------- */

typedef struct read_out {
    ht_reader_event *ev; /* the events read, in order */
    size_t n, cap;
    ht_reader_status_code st;
    uint64_t st_off;
    uint32_t piece_max, piece_over; /* the reader's, at the end */
    size_t max_ev_cap;              /* the largest cursor's ev capacity (events) */
} read_out;

/* Reads all of buf (memory, or through a file when path): mode 0 ht_reader_next, 1 batches
 * of 1 .. 700, 2 alternating. */
static void read_trace(const uint8_t *buf, size_t size, const char *path, int mode, uint64_t seed,
                       read_out *o)
{
    o->n = 0;
    ht_reader *r = NULL;
    ht_reader_status_code rc =
        path ? ht_reader_open(path, &r) : ht_reader_open_memory(buf, size, &r);
    o->st = rc;
    if (rc != HT_READER_OK)
        return;
    uint64_t rng = seed;
    const ht_reader_event *ptr[700];
    for (;;) {
        bool batch = mode == 1 || (mode == 2 && tb_rand(&rng) % 2);
        size_t k;
        if (o->n + 700 > o->cap) {
            o->cap = o->cap ? 2 * o->cap : 4096;
            o->ev = realloc(o->ev, o->cap * sizeof *o->ev);
        }
        if (batch) {
            k = ht_reader_next_batch(r, ptr, 1 + (size_t)(tb_rand(&rng) % 700));
            for (size_t i = 0; i < k; i++)
                o->ev[o->n + i] = *ptr[i];
        } else {
            k = ht_reader_next(r, &o->ev[o->n]) ? 1 : 0;
        }
        if (k == 0)
            break;
        o->n += k;
    }
    o->st = ht_reader_status(r, &o->st_off, NULL);
    o->piece_max = r->piece_max;
    o->piece_over = r->piece_over;
    o->max_ev_cap = 0;
    for (size_t i = 0; i < r->n_threads; i++)
        o->max_ev_cap = r->cursors[i].ev_cap > o->max_ev_cap ? r->cursors[i].ev_cap : o->max_ev_cap;
    ht_reader_close(r);
}

static bool same_read(const read_out *a, const read_out *b)
{
    return a->n == b->n && a->st == b->st && a->st_off == b->st_off &&
           memcmp(a->ev, b->ev, a->n * sizeof *a->ev) == 0;
}

static void pieces_read_equal(void)
{
    static const int threads[] = {1, 2, 3, 5, 9, 17, 64};
    static const uint32_t pieces[] = {1, 2, 3, 7, 100, 513};
    size_t fails = 0, runs = 0;
    read_out whole = {0}, got = {0};
    for (size_t v = 0; v < sizeof threads / sizeof threads[0]; v++) {
        tb_trace t;
        int n = threads[v];
        size_t per_round = n >= 17 ? 700 : 3000;
        size_t total = build(&t, n, 3, per_round, v % 2 ? 65536 : 9800, 100 + v);
        knobs(0, 0);
        read_trace(t.data, t.size, NULL, 1, 1, &whole);
        CHECK_EQ_U(whole.n, total);
        CHECK(whole.st == HT_READER_OK);
        CHECK_EQ_U(whole.piece_max, 0);
        for (size_t p = 0; p < sizeof pieces / sizeof pieces[0]; p++) {
            for (int window = 0; window <= 1; window++) {
                atomic_store(&ht__rd_window, window);
                knobs(pieces[p], 0);
                int mode = (int)((p + (size_t)window) % 3);
                read_trace(t.data, t.size, NULL, mode, p, &got);
                runs++;
                if (!same_read(&whole, &got) || got.piece_max != pieces[p]) {
                    if (fails++ < 5)
                        fprintf(stderr,
                                "  %d threads, pieces of %u, window %d, mode %d: %zu events "
                                "(want %zu), status %s\n",
                                n, pieces[p], window, mode, got.n, whole.n,
                                ht_reader_status_name[got.st]);
                }
            }
        }
        atomic_store(&ht__rd_window, 1);
        /* from the budget: 4 KiB of decoded events in all */
        knobs(0, 4096);
        read_trace(t.data, t.size, NULL, 2, 9, &got);
        runs++;
        fails += !same_read(&whole, &got) || got.piece_max == 0;
        /* from a file (the payload in the cursor's raw buffer) */
        char path[] = "/tmp/ht_pieces_XXXXXX";
        int fd = mkstemp(path);
        REQUIRE(fd >= 0);
        REQUIRE(write(fd, t.data, t.size) == (ssize_t)t.size);
        close(fd);
        knobs(5, 0);
        read_trace(NULL, 0, path, 2, 3, &got);
        runs++;
        fails += !same_read(&whole, &got);
        unlink(path);
        tb_free(&t);
    }
    knobs_reset();
    printf("%zu piecewise reads, %zu differ from the whole-chunk read\n", runs, fails);
    CHECK_EQ_U(fails, 0);
    free(whole.ev);
    free(got.ev);
}

/* -- damage in a chunk decoded in pieces ---------------------------------------------------- */

/* Offsets of the event chunks of t with at least min_events events. */
static size_t big_chunks(const tb_trace *t, size_t min_events, size_t *off, size_t cap)
{
    size_t n = 0;
    for (size_t k = 0; k < t->n_chunks && n < cap; k++) {
        if (t->chunk_events[k] >= min_events)
            off[n++] = k == 0 ? 0 : t->chunk_end[k - 1];
    }
    return n;
}

/* Whether o holds an event of the chunk at off (its tid, a sequence in its range). */
static bool has_chunk_event(const read_out *o, const uint8_t *buf, size_t off, const tb_trace *t)
{
    uint32_t tid = ht_fmt_get32(buf + off + 8);
    uint64_t first_seq = ht_fmt_get64(buf + off + 24);
    size_t k = 0;
    while (k < t->n_chunks && (k == 0 ? 0 : t->chunk_end[k - 1]) != off)
        k++;
    /* its sequence numbers are before the next chunk of the thread's (or the end) */
    uint64_t next_seq = UINT64_MAX;
    for (size_t j = k + 1; j < t->n_chunks; j++) {
        size_t o2 = t->chunk_end[j - 1];
        if (t->chunk_events[j] > 0 && ht_fmt_get32(t->data + o2 + 8) == tid) {
            next_seq = ht_fmt_get64(t->data + o2 + 24);
            break;
        }
    }
    for (size_t i = 0; i < o->n; i++) {
        const ht_event *e = &o->ev[i].event;
        if (e->tid == tid && e->sequence >= first_seq && e->sequence < next_seq)
            return true;
    }
    return false;
}

/* Damage, with the checksums made right, in a big chunk's middle record, its last bytes, its
 * last_ts and its n_records: the piecewise read, and the whole-chunk read with the window
 * merge (its early loads), hand out none of its events and end with the events, status and
 * offset of the whole-chunk read through the head-by-head merges. */
static void pieces_damage(void)
{
    tb_trace t;
    build(&t, 5, 3, 3000, 16384, 77);
    const size_t data_off = HT_FMT_FILE_HDR_SIZE + 6;
    size_t offs[64];
    size_t n_big = big_chunks(&t, 600, offs, 64);
    REQUIRE(n_big >= 8);
    uint8_t *buf = malloc(t.size);
    read_out whole = {0}, got = {0};
    uint64_t rng = 31;
    size_t fails = 0, bad_record = 0, runs = 0;
    for (size_t k = 0; k < n_big; k++) {
        size_t off = offs[k];
        uint32_t ps = ht_fmt_get32(t.data + off + HT_FMT_CH_PAYLOAD);
        for (int how = 0; how < 6; how++) {
            memcpy(buf, t.data, t.size);
            uint8_t *pl = buf + off + HT_FMT_CHUNK_HDR_SIZE;
            switch (how) {
            case 0: /* a reserved control tag in the middle */
                pl[ps / 2 + tb_rand(&rng) % 16] = 0x3F;
                break;
            case 1: /* random bytes in the middle */
                for (int i = 0; i < 4; i++)
                    pl[ps / 3 + tb_rand(&rng) % (ps / 3)] = (uint8_t)tb_rand(&rng);
                break;
            case 2: /* the last byte: cut record or varint */
                pl[ps - 1] |= 0x80;
                break;
            case 3: /* the last event's timestamp */
                ht_fmt_put64(buf + off + 40, ht_fmt_get64(buf + off + 40) + 1);
                break;
            case 4: /* one record more claimed than there are */
                ht_fmt_put32(buf + off + 12, ht_fmt_get32(buf + off + 12) + 1);
                break;
            default: /* random bytes in the last 128 (the checked tail) */
                pl[ps - 1 - tb_rand(&rng) % 128] = (uint8_t)tb_rand(&rng);
                break;
            }
            tb_fix_checksums(buf, t.size, data_off);
            /* the reference: whole chunks, head-by-head merges only (no chunk loaded before
             * its cursor is used up) */
            knobs(0, 0);
            atomic_store(&ht__rd_window, 0);
            read_trace(buf, t.size, NULL, 1, k, &whole);
            atomic_store(&ht__rd_window, 1);
            atomic_store(&ht__rd_early_threads, 3);
            for (int mode = 0; mode < 4; mode++) {
                /* pieces of 1, 3, 250 events; whole chunks with the window merge (which loads
                 * a chunk early, before its cursor is used up) */
                knobs(mode == 0 ? 1 : mode == 1 ? 3 : mode == 2 ? 250 : 0, 0);
                read_trace(buf, t.size, NULL, mode % 3, k + (size_t)how, &got);
                runs++;
                bool bad = !same_read(&whole, &got);
                if (got.st != HT_READER_OK) {
                    bad_record += got.st == HT_READER_BAD_RECORD;
                    bad |= has_chunk_event(&got, buf, off, &t);
                }
                if (bad && fails++ < 5)
                    fprintf(stderr,
                            "  chunk at %zu, damage %d, mode %d: %zu events (whole: %zu), %s at "
                            "%llu (whole: %s at %llu)\n",
                            off, how, mode, got.n, whole.n, ht_reader_status_name[got.st],
                            (unsigned long long)got.st_off, ht_reader_status_name[whole.st],
                            (unsigned long long)whole.st_off);
            }
        }
    }
    knobs_reset();
    atomic_store(&ht__rd_early_threads, 32);
    printf("%zu damaged piecewise reads, %zu BAD_RECORD, %zu wrong\n", runs, bad_record, fails);
    CHECK(bad_record > runs / 2);
    CHECK_EQ_U(fails, 0);
    free(whole.ev);
    free(got.ev);
    free(buf);
    tb_free(&t);
}

/* -- thresholds and the memory bound -------------------------------------------------------- */

static void pieces_thresholds(void)
{
    tb_trace t;
    size_t total = build(&t, 16, 1, 6000, 65536, 3); /* chunks of ~6000 events */
    const size_t ev = sizeof(ht_reader_event);
    read_out o = {0};
    /* no budget: whole chunks */
    knobs(0, 0);
    read_trace(t.data, t.size, NULL, 1, 1, &o);
    CHECK_EQ_U(o.n, total);
    CHECK_EQ_U(o.piece_max, 0);
    CHECK(o.max_ev_cap >= 6000);
    /* a budget that the chunks exceed: pieces, and no cursor holds more than the budget's
     * share (2048 events) */
    knobs(0, 16 * 2048 * ev);
    read_trace(t.data, t.size, NULL, 1, 1, &o);
    CHECK_EQ_U(o.n, total);
    CHECK_EQ_U(o.piece_over, 2048);
    CHECK(o.piece_max >= 512 && o.piece_max <= 2048);
    CHECK(o.max_ev_cap <= 2048);
    /* a budget the chunks fit: decoded whole */
    knobs(0, 16 * 8192 * ev);
    read_trace(t.data, t.size, NULL, 1, 1, &o);
    CHECK_EQ_U(o.piece_over, 8192);
    CHECK(o.max_ev_cap >= 6000 && o.max_ev_cap <= 8192);
    /* a tiny budget: the smallest piece */
    knobs(0, 1);
    read_trace(t.data, t.size, NULL, 1, 1, &o);
    CHECK_EQ_U(o.n, total);
    CHECK(o.piece_max == 512 && o.piece_over == 512 && o.max_ev_cap <= 512);
    /* the default budget: 16 and 64 threads of ~6000-event chunks are within it (decoded
     * whole); pieces from budget / (threads x 80) events on */
    knobs_reset();
    read_trace(t.data, t.size, NULL, 1, 1, &o);
    CHECK_EQ_U(o.n, total);
    CHECK_EQ_U(o.piece_over, g_default_budget / (16 * ev));
    CHECK(o.max_ev_cap >= 6000 && o.max_ev_cap <= o.piece_over);
    tb_free(&t);
    total = build(&t, 64, 1, 6000, 65536, 3);
    read_trace(t.data, t.size, NULL, 1, 1, &o);
    CHECK_EQ_U(o.n, total);
    CHECK_EQ_U(o.piece_over, g_default_budget / (64 * ev));
    CHECK(o.piece_max >= 512 && o.piece_max <= o.piece_over);
    /* a chunk and, after an early load (from 32 threads), fewer than a window's run (256) of
     * the chunk before */
    CHECK(o.max_ev_cap <= o.piece_over + 256);
    /* the same 64 threads with a quarter of the budget: in pieces */
    knobs(0, g_default_budget / 4);
    read_trace(t.data, t.size, NULL, 1, 1, &o);
    CHECK_EQ_U(o.n, total);
    CHECK(o.piece_over < 6000 && o.max_ev_cap <= o.piece_over);
    knobs_reset();
    free(o.ev);
    tb_free(&t);
}

static void setup(void)
{
    g_default_budget = atomic_load(&ht__rd_piece_budget);
}

TEST_MAIN(TEST(setup), TEST(check_pass_agrees), TEST(pieces_read_equal), TEST(pieces_damage),
          TEST(pieces_thresholds))
