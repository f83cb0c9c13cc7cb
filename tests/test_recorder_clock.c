/* test_recorder_clock.c — the trace clock (src/common/clock.c, docs/decisions/0002): TSC
 * stamps converted to CLOCK_MONOTONIC ns are nondecreasing, stay within a small bound of
 * CLOCK_MONOTONIC across map refreshes, and convert the same way every time; ns stamps pass
 * through; end to end, a file-only session's events (stamped with the TSC where usable, forced
 * by HEAPTRAIL_CLOCK=tsc) are nondecreasing per thread and within the bound of
 * CLOCK_MONOTONIC read around each call — except that an alloc served from the thread's
 * lookaside list, and a free to it of a block the thread allocated, take, under the TSC, the
 * later of the thread's last clock read and the writer's clock word: never later than the call,
 * never earlier than the thread's previous event, and no earlier than about the writer's last
 * pass (also after an idle spell). Skips the TSC parts where the CPU has none. */
#include "common/clock.h"
#include "common/thread_hot.h" /* ht__t_tagbits, ht__t_stamp */
#include "harness.h"
#include "recorder_util.h"

#include <inttypes.h>
#include <sys/syscall.h>
#include <time.h>

#define BOUND_NS 20000u /* the map may be off CLOCK_MONOTONIC by this much (expected: < 1 µs) */
/* A reused stamp (lookaside alloc, lookaside free of the thread's own block) may be early by
 * about one writer pass (5 ms between idle passes); the bound leaves room for a loaded machine. */
#define REUSE_BOUND_NS (150u * 1000000u)

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_us(long us)
{
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
}

static void ns_stamps_pass_through(void)
{
    ht__clock_init();
    uint64_t m = mono_ns();
    CHECK(ht__clock_to_ns(m) == m);
    CHECK(ht__clock_to_ns(0) == 0);
}

#define N_SAMPLES 400

/* 400 samples over ~450 ms: crosses the 10, 20, 40, 80 and 100 ms refreshes. */
static void tsc_map_monotone_and_close(void)
{
    if (ht__clock_init() != HT_CLOCK_TSC) {
        fprintf(stderr, "  (no usable TSC here: skipped)\n");
        return;
    }
    static uint64_t stamp[N_SAMPLES], conv[N_SAMPLES];
    uint64_t prev = 0, worst = 0;
    for (int i = 0; i < N_SAMPLES; i++) {
        uint64_t before = mono_ns();
        uint64_t s = ht__os_tsc_ordered() | HT_STAMP_TSC;
        uint64_t after = mono_ns();
        uint64_t ns = ht__clock_to_ns(s);
        stamp[i] = s;
        conv[i] = ns;
        CHECK(ns >= prev);
        CHECK(ns + BOUND_NS >= before && ns <= after + BOUND_NS);
        uint64_t off = ns < before ? before - ns : ns > after ? ns - after : 0;
        worst = off > worst ? off : worst;
        prev = ns;
        sleep_us(i % 7 == 0 ? 3000 : 700);
    }
    /* Converted again later (as the writer does with a packet that waited): same values. */
    for (int i = 0; i < N_SAMPLES; i++)
        CHECK(ht__clock_to_ns(stamp[i]) == conv[i]);
    /* Ticks close together keep their order. */
    uint64_t a = ht__os_tsc_ordered() | HT_STAMP_TSC;
    uint64_t b = ht__os_tsc_ordered() | HT_STAMP_TSC;
    CHECK(ht__clock_to_ns(a) <= ht__clock_to_ns(b));
    fprintf(stderr, "  worst distance from CLOCK_MONOTONIC %" PRIu64 " ns, %u map pieces\n", worst,
            ht__clock_pieces());
}

/* -- end to end -------------------------------------------------------------------------- */

#define N_THREADS 4
#define N_OPS     20000

typedef struct worker {
    ht_heap *heap;
    uint32_t tid;
    uint64_t before[2 * N_OPS], after[2 * N_OPS]; /* around event k of this thread */
} worker;

static uint32_t gettid_(void)
{
    return (uint32_t)syscall(SYS_gettid);
}

static void *work(void *p)
{
    worker *w = p;
    w->tid = gettid_();
    for (int i = 0; i < N_OPS; i++) {
        w->before[2 * i] = mono_ns();
        void *q = ht_heap_alloc(w->heap, 0, 16 + (size_t)(i % 200));
        w->after[2 * i] = mono_ns();
        if (i % 1000 == 999)
            sleep_us(2000); /* the run spans refreshes of the map */
        w->before[2 * i + 1] = mono_ns();
        ht_heap_free(w->heap, 0, q);
        w->after[2 * i + 1] = mono_ns();
    }
    return NULL;
}

/* Starts a file-only session to path: no rundown, BLOCK (nothing lost). */
static bool start_file_session(const char *path)
{
    ht_trace_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.path = path;
    cfg.flags = HT_TRACE_NO_RUNDOWN;
    cfg.loss_policy = HT_TRACE_LOSS_BLOCK;
    return ht_trace_start(&cfg) == 0;
}

static void file_events_monotone_and_close(void)
{
    char path[256];
    ru_path(path, sizeof path, "clock");
    ht_heap *h = ht_heap_create(0, 0, 0);
    REQUIRE(h != NULL);
    REQUIRE(start_file_session(path));
    static worker w[N_THREADS];
    pthread_t th[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        w[i].heap = h;
        pthread_create(&th[i], NULL, work, &w[i]);
    }
    for (int i = 0; i < N_THREADS; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ_U(ht_trace_stop(), 0);

    ru_file f;
    ru_file_read(path, &f);
    CHECK_EQ_U(f.status, HT_READER_OK);
    uint64_t last[N_THREADS] = {0}, k[N_THREADS] = {0}, worst = 0, worst_early = 0;
    size_t n_mine = 0, n_reused = 0;
    const bool tsc = ht__clock_init() == HT_CLOCK_TSC;
    for (size_t i = 0; i < f.n; i++) {
        const ht_event *e = &f.ev[i];
        if (e->heap_handle != (uintptr_t)h ||
            (e->type != HT_EVENT_HEAP_ALLOC && e->type != HT_EVENT_HEAP_FREE))
            continue;
        int t = 0;
        while (t < N_THREADS && w[t].tid != e->tid)
            t++;
        REQUIRE(t < N_THREADS);
        n_mine++;
        CHECK(e->timestamp_ns >= last[t]); /* nondecreasing per thread */
        last[t] = e->timestamp_ns;
        uint64_t j = k[t]++;
        REQUIRE(j < 2 * N_OPS);
        CHECK_EQ_U(e->type, j % 2 == 0 ? HT_EVENT_HEAP_ALLOC : HT_EVENT_HEAP_FREE);
        uint64_t lo = w[t].before[j], hi = w[t].after[j];
        /* a lookaside alloc, and a lookaside free of a block this thread allocated (all of
         * them here), may reuse the thread's last stamp */
        bool reused = tsc && (e->type == HT_EVENT_HEAP_ALLOC ? e->alloc.source : e->free.source) ==
                                 HT_SOURCE_LOOKASIDE;
        if (reused) { /* a tcache starts empty, a block is allocated first: never the first */
            CHECK(j > 0);
            /* the later of the thread's last clock read and the writer's word: early by at
             * most about one writer pass (nondecreasing is checked above) */
            lo = w[t].before[j] > REUSE_BOUND_NS ? w[t].before[j] - REUSE_BOUND_NS : 0;
            n_reused++;
        }
        CHECK(e->timestamp_ns + BOUND_NS >= lo && e->timestamp_ns <= hi + BOUND_NS);
        uint64_t off = e->timestamp_ns < lo   ? lo - e->timestamp_ns
                       : e->timestamp_ns > hi ? e->timestamp_ns - hi
                                              : 0;
        worst = off > worst ? off : worst;
        if (reused && e->timestamp_ns < w[t].before[j]) {
            uint64_t early = w[t].before[j] - e->timestamp_ns;
            worst_early = early > worst_early ? early : worst_early;
        }
    }
    CHECK_EQ_U(n_mine, (uint64_t)N_THREADS * 2 * N_OPS);
    if (tsc)
        CHECK(n_reused > 0); /* the lookaside case was met */
    fprintf(stderr,
            "  clock %s: worst distance outside the call's CLOCK_MONOTONIC bracket %" PRIu64
            " ns; %zu lookaside allocs, at most %" PRIu64 " ns before their call\n",
            tsc ? "tsc" : "monotonic", worst, n_reused, worst_early);
    ru_file_free(&f);
    ht_heap_destroy(h);
    unlink(path);
}

/* A thread frees a block, idles IDLE_MS, then allocates the same size again (a lookaside hit,
 * which reads no clock under the TSC): its stamp is not the free's, IDLE_MS early, but no
 * earlier than the writer's clock word allows (the writer publishes it each pass, and waits
 * 5 ms between idle passes; the bound leaves room for a loaded machine). */
#define IDLE_MS       300u
#define IDLE_BOUND_MS 150u

static void idle_lookaside_alloc(void)
{
    char path[256];
    ru_path(path, sizeof path, "clock-idle");
    ht_heap *h = ht_heap_create(0, 0, 0);
    REQUIRE(h != NULL);
    void *warm = ht_heap_alloc(h, 0, 48); /* a block of the class, before the session */
    REQUIRE(warm != NULL);
    REQUIRE(start_file_session(path));
    ht_heap_free(h, 0, warm); /* onto this thread's lookaside list */
    sleep_us((long)IDLE_MS * 1000);
    uint64_t before = mono_ns();
    void *q = ht_heap_alloc(h, 0, 48);
    uint64_t after = mono_ns();
    CHECK(q == warm); /* the same block, from the list */
    ht_heap_free(h, 0, q);
    CHECK_EQ_U(ht_trace_stop(), 0);

    ru_file f;
    ru_file_read(path, &f);
    CHECK_EQ_U(f.status, HT_READER_OK);
    const ht_event *alloc = NULL;
    for (size_t i = 0; i < f.n; i++)
        if (f.ev[i].heap_handle == (uintptr_t)h && f.ev[i].type == HT_EVENT_HEAP_ALLOC)
            alloc = &f.ev[i];
    REQUIRE(alloc != NULL);
    CHECK_EQ_U(alloc->alloc.source, HT_SOURCE_LOOKASIDE);
    CHECK(alloc->timestamp_ns <= after + BOUND_NS);
    CHECK(alloc->timestamp_ns + (uint64_t)IDLE_BOUND_MS * 1000000u >= before);
    fprintf(stderr, "  lookaside alloc after %u ms idle: %" PRId64 " ns before its call\n", IDLE_MS,
            (int64_t)(before - alloc->timestamp_ns));
    ru_file_free(&f);
    ht_heap_destroy(h);
    unlink(path);
}

/* With an in-process consumer the session stamps in CLOCK_MONOTONIC ns, and a lookaside alloc
 * reads the clock like every other event: after an idle spell its stamp is inside its call's
 * bracket. */
typedef struct idle_seen {
    ht_heap *heap;
    uint64_t alloc_ts;
    uint32_t alloc_source;
    int n_alloc;
} idle_seen;

static void idle_consumer(const ht_event *e, void *ctx)
{
    idle_seen *seen = ctx;
    if (e->heap_handle == (uintptr_t)seen->heap && e->type == HT_EVENT_HEAP_ALLOC) {
        seen->alloc_ts = e->timestamp_ns;
        seen->alloc_source = e->alloc.source;
        seen->n_alloc++;
    }
}

static void idle_lookaside_alloc_consumer(void)
{
    ht_heap *h = ht_heap_create(0, 0, 0);
    REQUIRE(h != NULL);
    void *warm = ht_heap_alloc(h, 0, 48);
    REQUIRE(warm != NULL);
    idle_seen seen = {h, 0, 0, 0};
    ht_trace_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.consumer = idle_consumer;
    cfg.consumer_ctx = &seen;
    cfg.flags = HT_TRACE_NO_RUNDOWN;
    REQUIRE(ht_trace_start(&cfg) == 0);
    ht_heap_free(h, 0, warm);
    sleep_us(50 * 1000);
    uint64_t before = mono_ns();
    void *q = ht_heap_alloc(h, 0, 48);
    uint64_t after = mono_ns();
    CHECK(q == warm);
    CHECK_EQ_U(ht_trace_stop(), 0);
    CHECK_EQ_U(seen.n_alloc, 1);
    CHECK_EQ_U(seen.alloc_source, HT_SOURCE_LOOKASIDE);
    CHECK(seen.alloc_ts >= before && seen.alloc_ts <= after);
    ht_heap_free(h, 0, q);
    ht_heap_destroy(h);
}

/* Another thread allocates a block (traced); the heap's tracing goes off, this thread frees
 * the block onto its lookaside list, tracing comes back on, and this thread's next alloc is a
 * lookaside hit on that block, which reads no clock. Switching tracing on republishes the
 * clock word, so the hit still sorts after the other thread's ALLOC (before that, it sorted
 * first in most rounds: the hit took this thread's last clock read, older than the ALLOC;
 * without the publication 26-86 of 100 rounds were in order). A heap per round, so that its
 * small blocks come from the main path and go to the list. */
#define TOGGLE_ROUNDS 100

static void *toggle_alloc(void *heap)
{
    return ht_heap_alloc(heap, 0, 48);
}

static void toggle_then_lookaside_alloc(void)
{
    char path[256];
    ru_path(path, sizeof path, "clock-toggle");
    REQUIRE(start_file_session(path));
    ht_heap *h[TOGGLE_ROUNDS];
    void *x[TOGGLE_ROUNDS];
    for (int r = 0; r < TOGGLE_ROUNDS; r++) {
        h[r] = ht_heap_create(0, 0, 0);
        REQUIRE(h[r] != NULL);
        void *mark = ht_heap_alloc(h[r], 0, 8); /* this thread's last clock read: before */
        pthread_t t;
        void *got = NULL;
        REQUIRE(pthread_create(&t, NULL, toggle_alloc, h[r]) == 0);
        REQUIRE(pthread_join(t, &got) == 0);
        REQUIRE(got != NULL);
        ht_trace_enable_heap(h[r], false);
        ht_heap_free(h[r], 0, got); /* untraced: onto this thread's list */
        ht_trace_enable_heap(h[r], true);
        x[r] = ht_heap_alloc(h[r], 0, 48);
        CHECK(x[r] == got); /* the hit */
        ht_heap_free(h[r], 0, mark);
    }
    CHECK_EQ_U(ht_trace_stop(), 0);

    ru_file f;
    ru_file_read(path, &f);
    CHECK_EQ_U(f.status, HT_READER_OK);
    uint32_t me = gettid_();
    int n_ok = 0;
    for (int r = 0; r < TOGGLE_ROUNDS; r++) {
        long other = -1, mine = -1; /* indexes of the two ALLOCs of x[r] */
        for (size_t i = 0; i < f.n; i++) {
            const ht_event *e = &f.ev[i];
            if (e->heap_handle != (uintptr_t)h[r] || e->type != HT_EVENT_HEAP_ALLOC ||
                e->alloc.address != (uintptr_t)x[r])
                continue;
            if (e->tid == me)
                mine = (long)i;
            else
                other = (long)i;
        }
        CHECK(other >= 0 && mine >= 0);
        n_ok += other >= 0 && mine > other;
    }
    CHECK_EQ_U(n_ok, TOGGLE_ROUNDS);
    for (int r = 0; r < TOGGLE_ROUNDS; r++)
        ht_heap_destroy(h[r]);
    ru_file_free(&f);
    unlink(path);
}

/* A block allocated by one thread and freed by another: the free reads the clock (the ALLOC
 * may be later than anything the freeing thread has read), so its stamp lies within its
 * call's bracket, spells of idling notwithstanding. */
#define N_HANDED 64

typedef struct handed {
    ht_heap *heap;
    void *blocks[N_HANDED];
    uint64_t before[N_HANDED], after[N_HANDED];
    uint32_t tid, tagbits;
} handed;

static void *free_handed(void *arg)
{
    handed *hd = arg;
    hd->tid = (uint32_t)syscall(SYS_gettid);
    for (int i = 0; i < N_HANDED; i++) {
        sleep_us(300); /* the writer's word and this thread's last read go stale */
        hd->before[i] = mono_ns();
        ht_heap_free(hd->heap, 0, hd->blocks[i]);
        hd->after[i] = mono_ns();
    }
    hd->tagbits = ht__t_tagbits;
    return NULL;
}

static void handed_over_free_reads_clock(void)
{
    char path[256];
    ru_path(path, sizeof path, "clock-handed");
    static handed hd;
    hd.heap = ht_heap_create(0, 0, 0);
    REQUIRE(hd.heap != NULL);
    REQUIRE(start_file_session(path));
    for (int i = 0; i < N_HANDED; i++) { /* lookaside hits among them: 48 B, freed, again */
        hd.blocks[i] = ht_heap_alloc(hd.heap, 0, 48);
        REQUIRE(hd.blocks[i] != NULL);
        if (i % 2 == 1) {
            ht_heap_free(hd.heap, 0, hd.blocks[i]);
            hd.blocks[i] = ht_heap_alloc(hd.heap, 0, 48);
        }
    }
    pthread_t th;
    pthread_create(&th, NULL, free_handed, &hd);
    pthread_join(th, NULL);
    CHECK_EQ_U(ht_trace_stop(), 0);
    CHECK(hd.tagbits != ht__t_tagbits); /* two live threads, two tags */

    ru_file f;
    ru_file_read(path, &f);
    CHECK_EQ_U(f.status, HT_READER_OK);
    int n = 0;
    uint64_t worst = 0;
    for (size_t i = 0; i < f.n; i++) {
        const ht_event *e = &f.ev[i];
        if (e->heap_handle != (uintptr_t)hd.heap || e->type != HT_EVENT_HEAP_FREE ||
            e->tid != hd.tid)
            continue;
        REQUIRE(n < N_HANDED);
        CHECK(e->free.address == (uintptr_t)hd.blocks[n]);
        CHECK(e->timestamp_ns + BOUND_NS >= hd.before[n] &&
              e->timestamp_ns <= hd.after[n] + BOUND_NS);
        uint64_t early = hd.before[n] > e->timestamp_ns ? hd.before[n] - e->timestamp_ns : 0;
        worst = early > worst ? early : worst;
        n++;
    }
    CHECK_EQ_U(n, N_HANDED);
    fprintf(stderr, "  handed-over frees: at most %" PRIu64 " ns before their call\n", worst);
    ru_file_free(&f);
    ht_heap_destroy(hd.heap);
    unlink(path);
}

/* Replays heap's ALLOCs and FREEs in f's merged order (at most N_HANDED blocks live at once):
 * returns the frees of a block not live then; adds the frees and the rundown ALLOCs seen. */
static int replay_unmatched_frees(const ru_file *f, uintptr_t heap, int *n_free, int *n_rundown)
{
    uintptr_t live[N_HANDED];
    int n_live = 0, n_bad = 0;
    for (size_t i = 0; i < f->n; i++) {
        const ht_event *e = &f->ev[i];
        if (e->heap_handle != heap)
            continue;
        if (e->type == HT_EVENT_HEAP_ALLOC) {
            CHECK(n_live < N_HANDED);
            if (n_live == N_HANDED)
                return n_bad + 1;
            live[n_live++] = e->alloc.address;
            *n_rundown += (e->flags & HT_EVENT_RUNDOWN) != 0;
        } else if (e->type == HT_EVENT_HEAP_FREE) {
            int k = 0;
            while (k < n_live && live[k] != e->free.address)
                k++;
            n_bad += k == n_live;
            if (k < n_live)
                live[k] = live[--n_live];
            ++*n_free;
        }
    }
    return n_bad;
}

/* A thread allocates blocks and exits; the next thread takes its recycled tag and frees them.
 * The tag says "this thread's own", so the frees reuse a stamp: the tag's new owner starts
 * after the old owner's last stamp, so every FREE still sorts after its ALLOC. */
typedef struct recycled {
    ht_heap *heap, *untraced;
    void *blocks[N_HANDED];
    uint32_t tagbits;
    uint64_t first_stamp, last_stamp; /* ht__t_stamp: the freeing thread's at its tag's taking,
                                         the allocating one's at its end */
    bool freeing;
} recycled;

static void *recycled_work(void *arg)
{
    recycled *rc = arg;
    if (rc->freeing) { /* takes the tag through an untraced heap: no stamp of its own yet */
        ht_heap_free(rc->untraced, 0, ht_heap_alloc(rc->untraced, 0, 16));
        rc->first_stamp = ht__t_stamp;
    }
    for (int i = 0; i < N_HANDED; i++) {
        if (rc->freeing) {
            ht_heap_free(rc->heap, 0, rc->blocks[i]);
        } else {
            rc->blocks[i] = ht_heap_alloc(rc->heap, 0, 48);
            if (i % 2 == 1) { /* a lookaside hit: a reused stamp */
                ht_heap_free(rc->heap, 0, rc->blocks[i]);
                rc->blocks[i] = ht_heap_alloc(rc->heap, 0, 48);
            }
        }
    }
    rc->tagbits = ht__t_tagbits;
    rc->last_stamp = ht__t_stamp;
    return NULL;
}

static void recycled_tag_frees_sort_after(void)
{
    char path[256];
    ru_path(path, sizeof path, "clock-recycled");
    static recycled rc;
    rc.heap = ht_heap_create(0, 0, 0);
    rc.untraced = ht_heap_create(0, 0, 0);
    REQUIRE(rc.heap != NULL && rc.untraced != NULL);
    REQUIRE(start_file_session(path));
    ht_trace_enable_heap(rc.untraced, false);
    int n_same = 0;
    for (int round = 0; round < 20; round++) {
        pthread_t th;
        rc.freeing = false;
        pthread_create(&th, NULL, recycled_work, &rc);
        pthread_join(th, NULL);
        uint32_t alloc_tag = rc.tagbits;
        uint64_t alloc_last = rc.last_stamp;
        rc.freeing = true;
        pthread_create(&th, NULL, recycled_work, &rc);
        pthread_join(th, NULL);
        if (alloc_tag != 0 && rc.tagbits == alloc_tag) {
            n_same++;
            /* the writer's word usually covers this too: check the hand-over itself */
            CHECK(rc.first_stamp > alloc_last);
        }
    }
    CHECK_EQ_U(ht_trace_stop(), 0);
    CHECK(n_same > 0); /* the case was met: the freeing thread had the allocating one's tag */

    ru_file f;
    ru_file_read(path, &f);
    CHECK_EQ_U(f.status, HT_READER_OK);
    /* in merged order, a block is freed only while live */
    int n_free = 0, n_rundown = 0;
    int n_bad = replay_unmatched_frees(&f, (uintptr_t)rc.heap, &n_free, &n_rundown);
    CHECK_EQ_U(n_bad, 0);
    CHECK_EQ_U(n_free, 20 * (N_HANDED + N_HANDED / 2));
    fprintf(stderr, "  recycled tags: %d of 20 freeing threads took the allocating one's tag\n",
            n_same);
    ru_file_free(&f);
    ht_heap_destroy(rc.heap);
    ht_heap_destroy(rc.untraced);
    unlink(path);
}

/* Blocks another thread allocated before the session are freed by it right after the session
 * starts on this thread: those frees reuse a stamp (their own tag), as early as the clock word
 * the start published, yet each sorts after its block's rundown record. */
typedef struct rundown_case {
    ht_heap *heap;
    void *blocks[N_HANDED];
    int phase; /* 0 allocate, 1 wait for the session, 2 free */
    pthread_mutex_t mu;
    pthread_cond_t cv;
} rundown_case;

static void *rundown_worker(void *arg)
{
    rundown_case *rc = arg;
    for (int i = 0; i < N_HANDED; i++)
        rc->blocks[i] = ht_heap_alloc(rc->heap, 0, 48);
    pthread_mutex_lock(&rc->mu);
    rc->phase = 1;
    pthread_cond_broadcast(&rc->cv);
    while (rc->phase != 2)
        pthread_cond_wait(&rc->cv, &rc->mu);
    pthread_mutex_unlock(&rc->mu);
    for (int i = 0; i < N_HANDED; i++)
        ht_heap_free(rc->heap, 0, rc->blocks[i]);
    return NULL;
}

static void rundown_then_free_sorts_after(void)
{
    char path[256];
    ru_path(path, sizeof path, "clock-rundown");
    int n_bad = 0, n_rundown = 0;
    for (int round = 0; round < 10; round++) {
        static rundown_case rc;
        rc.heap = ht_heap_create(0, 0, 0);
        REQUIRE(rc.heap != NULL);
        rc.phase = 0;
        pthread_mutex_init(&rc.mu, NULL);
        pthread_cond_init(&rc.cv, NULL);
        pthread_t th;
        pthread_create(&th, NULL, rundown_worker, &rc);
        pthread_mutex_lock(&rc.mu);
        while (rc.phase != 1)
            pthread_cond_wait(&rc.cv, &rc.mu);
        pthread_mutex_unlock(&rc.mu);
        ht_trace_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.path = path;
        cfg.loss_policy = HT_TRACE_LOSS_BLOCK; /* with the rundown */
        unlink(path);
        REQUIRE(ht_trace_start(&cfg) == 0);
        pthread_mutex_lock(&rc.mu);
        rc.phase = 2;
        pthread_cond_broadcast(&rc.cv);
        pthread_mutex_unlock(&rc.mu);
        pthread_join(th, NULL);
        CHECK_EQ_U(ht_trace_stop(), 0);

        ru_file f;
        ru_file_read(path, &f);
        CHECK_EQ_U(f.status, HT_READER_OK);
        int n_free = 0;
        n_bad += replay_unmatched_frees(&f, (uintptr_t)rc.heap, &n_free, &n_rundown);
        ru_file_free(&f);
        ht_heap_destroy(rc.heap);
        pthread_mutex_destroy(&rc.mu);
        pthread_cond_destroy(&rc.cv);
    }
    CHECK_EQ_U(n_rundown, 10 * N_HANDED);
    CHECK_EQ_U(n_bad, 0);
    unlink(path);
}

/* The clock word has two publishers (the writer, a heap switched on) that may read and store
 * in either order: a late store of an older read must not lower it. */
static void clock_word_only_rises(void)
{
    uint64_t w = atomic_load(&ht__os_clock_line.word);
    ht__os_clock_word_raise(w > 1000 ? w - 1000 : 0);
    CHECK(atomic_load(&ht__os_clock_line.word) == w);
    ht__os_clock_word_raise(w + 5);
    CHECK(atomic_load(&ht__os_clock_line.word) == w + 5);
    atomic_store(&ht__os_clock_line.word, w); /* as it was (no session runs) */
}

int main(int argc, char **argv)
{
    setenv("HEAPTRAIL_CLOCK", "tsc", 1); /* before the first session: the choice is once */
    static const harness_test tests[] = {
        TEST(ns_stamps_pass_through),         TEST(tsc_map_monotone_and_close),
        TEST(file_events_monotone_and_close), TEST(idle_lookaside_alloc),
        TEST(idle_lookaside_alloc_consumer),  TEST(toggle_then_lookaside_alloc),
        TEST(handed_over_free_reads_clock),   TEST(recycled_tag_frees_sort_after),
        TEST(rundown_then_free_sorts_after),  TEST(clock_word_only_rises)};
    return harness_run(tests, sizeof tests / sizeof tests[0], argc, argv);
}
