/* test_rundown.c — a session started while other threads work: the trace's starting live set
 * (the rundown) followed by its events must replay to exactly what the heaps hold. Heaps made
 * and destroyed while the rundown lists them (more than 64 of them), and blocks allocated and
 * freed from lookaside lists while it walks their heap: no heap or block twice, none missing,
 * no free of a block the trace never had, and at the end the replayed live set of every heap
 * equals its walk. */
#include "harness.h"
#include "recorder_util.h"

#include <heaptrail.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>
#include <unistd.h>

/* -- replaying a trace ----------------------------------------------------------------------
 * The live heaps and blocks after each event, in the reader's merged order. A heap handle may
 * be made again after a destroy: each HEAP_CREATE starts a new incarnation, and blocks of an
 * older one are dead. */

#define RP_HEAPS  8192u             /* handle table (open addressing) */
#define RP_BLOCKS ((size_t)1 << 21) /* block table (open addressing, no deletion: tombstones) */

typedef struct rp_heap {
    uintptr_t handle; /* 0: empty slot */
    uint32_t inc;     /* incarnation, counting from 1 */
    bool live;
} rp_heap;

typedef struct rp_block {
    uintptr_t heap, address; /* heap 0: empty */
    uint32_t inc;            /* the heap's incarnation when allocated */
    bool live;
    uint64_t size;
} rp_block;

typedef struct replay {
    rp_heap *heaps;
    rp_block *blocks;
    uint64_t double_create; /* HEAP_CREATE of a heap already live */
    uint64_t unknown_heap;  /* an event of a heap not live then */
    uint64_t double_alloc;  /* an ALLOC (or REALLOC's new block) over a live block */
    uint64_t orphan_free;   /* a FREE (or REALLOC's old block) of a block not live */
    uint64_t n_rundown;     /* rundown records */
    uint64_t n_events;      /* the others */
} replay;

static rp_heap *rp_heap_slot(replay *r, uintptr_t handle)
{
    size_t i = (handle >> 12) * 0x9e3779b97f4a7c15u % RP_HEAPS;
    while (r->heaps[i].handle != 0 && r->heaps[i].handle != handle)
        i = (i + 1) % RP_HEAPS;
    return &r->heaps[i];
}

static rp_block *rp_block_slot(replay *r, uintptr_t heap, uintptr_t address)
{
    size_t i = ((address >> 4) ^ (heap >> 12)) * 0x9e3779b97f4a7c15u % RP_BLOCKS;
    while (r->blocks[i].heap != 0 && (r->blocks[i].heap != heap || r->blocks[i].address != address))
        i = (i + 1) % RP_BLOCKS;
    return &r->blocks[i];
}

static const rp_heap *rp_heap_live(replay *r, uintptr_t handle)
{
    rp_heap *h = rp_heap_slot(r, handle);
    return h->handle == handle && h->live ? h : NULL;
}

static bool rp_block_live(replay *r, const rp_heap *h, uintptr_t address)
{
    rp_block *b = rp_block_slot(r, h->handle, address);
    return b->heap != 0 && b->live && b->inc == h->inc;
}

static void rp_alloc(replay *r, const rp_heap *h, uintptr_t address, uint64_t size)
{
    rp_block *b = rp_block_slot(r, h->handle, address);
    if (b->heap != 0 && b->live && b->inc == h->inc)
        r->double_alloc++;
    b->heap = h->handle;
    b->address = address;
    b->inc = h->inc;
    b->live = true;
    b->size = size;
}

static void rp_free(replay *r, const rp_heap *h, uintptr_t address)
{
    rp_block *b = rp_block_slot(r, h->handle, address);
    if (b->heap == 0 || !b->live || b->inc != h->inc) {
        r->orphan_free++;
        return;
    }
    b->live = false;
}

static void replay_run(replay *r, const ru_file *f)
{
    memset(r, 0, sizeof *r);
    r->heaps = calloc(RP_HEAPS, sizeof *r->heaps);
    r->blocks = calloc(RP_BLOCKS, sizeof *r->blocks);
    for (size_t i = 0; i < f->n; i++) {
        const ht_event *e = &f->ev[i];
        if ((e->flags & HT_EVENT_RUNDOWN) != 0)
            r->n_rundown++;
        else
            r->n_events++;
        if (e->type == HT_EVENT_HEAP_CREATE) {
            rp_heap *h = rp_heap_slot(r, e->heap_handle);
            if (h->handle == e->heap_handle && h->live)
                r->double_create++;
            h->handle = e->heap_handle;
            h->inc++;
            h->live = true;
            continue;
        }
        const rp_heap *h = rp_heap_live(r, e->heap_handle);
        if (h == NULL) {
            r->unknown_heap++;
            continue;
        }
        switch (e->type) {
        case HT_EVENT_HEAP_DESTROY:
            rp_heap_slot(r, e->heap_handle)->live = false;
            break;
        case HT_EVENT_HEAP_ALLOC:
            rp_alloc(r, h, e->alloc.address, e->alloc.size);
            break;
        case HT_EVENT_HEAP_FREE:
            if (e->free.source != HT_SOURCE_INVALID)
                rp_free(r, h, e->free.address);
            break;
        case HT_EVENT_HEAP_REALLOC:
            if (e->realloc.source == HT_SOURCE_INVALID || e->realloc.new_address == 0)
                break;
            rp_free(r, h, e->realloc.old_address);
            rp_alloc(r, h, e->realloc.new_address, e->realloc.new_size);
            break;
        default:
            break;
        }
    }
}

/* The blocks the replay holds live in heap, and whether they are exactly its walk now (the
 * caller keeps every thread off the heap). */
static bool replay_matches_walk(replay *r, ht_heap *heap, uint64_t *n_walk, uint64_t *n_replay)
{
    const rp_heap *h = rp_heap_live(r, (uintptr_t)heap);
    *n_walk = *n_replay = 0;
    bool ok = h != NULL;
    ht_heap_entry e;
    e.address = NULL;
    while (ht_heap_walk(heap, &e)) {
        if ((e.state & HT_ENTRY_BUSY) == 0)
            continue;
        ++*n_walk;
        if (h == NULL || !rp_block_live(r, h, (uintptr_t)e.address)) {
            ok = false;
            continue;
        }
        rp_block *b = rp_block_slot(r, (uintptr_t)heap, (uintptr_t)e.address);
        ok &= b->size == e.size;
    }
    if (h != NULL)
        for (size_t i = 0; i < RP_BLOCKS; i++)
            *n_replay +=
                r->blocks[i].heap == h->handle && r->blocks[i].live && r->blocks[i].inc == h->inc;
    return ok && *n_walk == *n_replay;
}

/* Heaps the replay holds live. */
static uint64_t replay_n_heaps(const replay *r)
{
    uint64_t n = 0;
    for (size_t i = 0; i < RP_HEAPS; i++)
        n += r->heaps[i].handle != 0 && r->heaps[i].live;
    return n;
}

static void replay_free(replay *r)
{
    free(r->heaps);
    free(r->blocks);
}

static int start_file(const char *path)
{
    ht_trace_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.path = path;
    cfg.loss_policy = HT_TRACE_LOSS_BLOCK; /* nothing lost: the replay must be exact */
    return ht_trace_start(&cfg);
}

static void report(const char *what, const replay *r)
{
    fprintf(stderr,
            "  %s: %" PRIu64 " rundown records, %" PRIu64 " events; double create %" PRIu64
            ", unknown heap %" PRIu64 ", double alloc %" PRIu64 ", orphan free %" PRIu64 "\n",
            what, r->n_rundown, r->n_events, r->double_create, r->unknown_heap, r->double_alloc,
            r->orphan_free);
}

/* -- heaps made and destroyed while the rundown lists them ---------------------------------- */

#define PRE_HEAPS  100 /* live before the start, untouched during it */
#define CHURN_RING 24  /* each churning thread keeps this many heaps of its own */
#define CHURN_N    2

static atomic_int g_stop;

/* Makes heaps (each with a few blocks) and destroys the oldest, until told to stop; then
 * destroys its own. Large and main-path blocks only: this is about heaps, the next test is
 * about blocks. */
static void *heap_churn(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    ht_heap *ring[CHURN_RING] = {0};
    unsigned k = 0;
    while (!atomic_load(&g_stop)) {
        if (ring[k] != NULL)
            ht_heap_destroy(ring[k]);
        ring[k] = ht_heap_create(0, 0, 0);
        for (int i = 0; ring[k] != NULL && i < 3; i++) {
            seed = seed * 1103515245u + 12345u;
            (void)ht_heap_alloc(ring[k], 0, 20000 + (seed >> 8) % 30000);
        }
        k = (k + 1) % CHURN_RING;
    }
    for (unsigned i = 0; i < CHURN_RING; i++)
        if (ring[i] != NULL)
            ht_heap_destroy(ring[i]);
    return NULL;
}

static void rundown_heaps_come_and_go(void)
{
    ht_heap *pre[PRE_HEAPS];
    for (int i = 0; i < PRE_HEAPS; i++) {
        pre[i] = ht_heap_create(i % 3 == 0 ? HT_HEAP_ENABLE_LFH : 0, 0, 0);
        REQUIRE(pre[i] != NULL);
        for (int j = 0; j < 20; j++)
            (void)ht_heap_alloc(pre[i], 0, (size_t)(16 + (i * 37 + j * 101) % 3000));
    }
    uint64_t bad = 0;
    for (int round = 0; round < 6; round++) {
        char path[256];
        ru_path(path, sizeof path, "rundown-heaps");
        atomic_store(&g_stop, 0);
        pthread_t t[CHURN_N];
        for (uintptr_t i = 0; i < CHURN_N; i++)
            REQUIRE(pthread_create(&t[i], NULL, heap_churn, (void *)(i + 1 + 10 * round)) == 0);
        usleep(20000); /* the ring is full: heaps are made and destroyed all the time */
        REQUIRE(start_file(path) == 0);
        usleep(10000);
        atomic_store(&g_stop, 1);
        for (int i = 0; i < CHURN_N; i++)
            pthread_join(t[i], NULL);
        /* every heap but the first PRE_HEAPS (and the process heap, if made) is gone now */
        ru_file f;
        replay r;
        bool walks_ok = true;
        CHECK_EQ_U(ht_trace_stop(), 0);
        ru_file_read(path, &f);
        CHECK_EQ_U(f.status, HT_READER_OK);
        CHECK_EQ_U(f.info.n_lost, 0);
        replay_run(&r, &f);
        for (int i = 0; i < PRE_HEAPS; i++) {
            uint64_t n_walk, n_replay;
            if (!replay_matches_walk(&r, pre[i], &n_walk, &n_replay)) {
                fprintf(stderr, "  heap %d: walk %" PRIu64 " blocks, replay %" PRIu64 "\n", i,
                        n_walk, n_replay);
                walks_ok = false;
            }
        }
        uint64_t n_heaps = replay_n_heaps(&r);
        bool round_bad = !walks_ok || r.double_create != 0 || r.unknown_heap != 0 ||
                         r.double_alloc != 0 || r.orphan_free != 0 || n_heaps != PRE_HEAPS;
        if (round_bad) {
            report("rundown with heaps coming and going", &r);
            fprintf(stderr, "  live heaps replayed: %" PRIu64 " (expected %d)\n", n_heaps,
                    PRE_HEAPS);
        }
        bad += round_bad;
        replay_free(&r);
        ru_file_free(&f);
        unlink(path);
    }
    CHECK_EQ_U(bad, 0);
    for (int i = 0; i < PRE_HEAPS; i++)
        CHECK(ht_heap_destroy(pre[i]));
}

/* -- blocks allocated and freed while the rundown walks their heap ------------------------- */

#define BLOCK_THREADS 3
#define BLOCK_SLOTS   512

typedef struct block_worker {
    ht_heap *heap;
    unsigned seed;
    void *slot[BLOCK_SLOTS]; /* live blocks, left to the main thread at the end */
} block_worker;

/* Small blocks, freed and allocated again at once, mostly: lookaside hits and pushes, with
 * some LFH and main-path traffic and a realloc now and then. */
static void *block_churn(void *arg)
{
    block_worker *w = arg;
    unsigned seed = w->seed;
    while (!atomic_load(&g_stop)) {
        seed = seed * 1103515245u + 12345u;
        unsigned k = (seed >> 8) % BLOCK_SLOTS;
        size_t size = 16 + (seed >> 20) % 500;
        if (w->slot[k] != NULL && (seed & 0x70) == 0) {
            void *q = ht_heap_realloc(w->heap, 0, w->slot[k], size);
            if (q != NULL)
                w->slot[k] = q;
            continue;
        }
        if (w->slot[k] != NULL)
            ht_heap_free(w->heap, 0, w->slot[k]);
        w->slot[k] = ht_heap_alloc(w->heap, 0, size);
    }
    return NULL;
}

static void rundown_blocks_in_flight(void)
{
    ht_heap *heap = ht_heap_create(0, 0, 0);
    REQUIRE(heap != NULL);
    static block_worker w[BLOCK_THREADS];
    uint64_t bad = 0, n_rundown = 0, n_events = 0;
    const int rounds = 24;
    for (int round = 0; round < rounds; round++) {
        char path[256];
        ru_path(path, sizeof path, "rundown-blocks");
        atomic_store(&g_stop, 0);
        pthread_t t[BLOCK_THREADS];
        for (int i = 0; i < BLOCK_THREADS; i++) {
            w[i].heap = heap;
            w[i].seed = (unsigned)(round * 7 + i + 1);
            REQUIRE(pthread_create(&t[i], NULL, block_churn, &w[i]) == 0);
        }
        usleep(3000);
        REQUIRE(start_file(path) == 0);
        usleep(3000);
        atomic_store(&g_stop, 1);
        for (int i = 0; i < BLOCK_THREADS; i++)
            pthread_join(t[i], NULL);
        /* nothing runs now: the replay must end where the heap is */
        ru_file f;
        replay r;
        CHECK_EQ_U(ht_trace_stop(), 0);
        ru_file_read(path, &f);
        CHECK_EQ_U(f.status, HT_READER_OK);
        CHECK_EQ_U(f.info.n_lost, 0);
        replay_run(&r, &f);
        uint64_t n_walk, n_replay;
        bool same = replay_matches_walk(&r, heap, &n_walk, &n_replay);
        bool round_bad = !same || r.double_create != 0 || r.unknown_heap != 0 ||
                         r.double_alloc != 0 || r.orphan_free != 0;
        if (round_bad) {
            report("rundown with blocks in flight", &r);
            fprintf(stderr, "  round %d: walk %" PRIu64 " blocks, replay %" PRIu64 "\n", round,
                    n_walk, n_replay);
        }
        bad += round_bad;
        n_rundown += r.n_rundown;
        n_events += r.n_events;
        replay_free(&r);
        ru_file_free(&f);
        unlink(path);
    }
    fprintf(stderr, "  %d rounds: %" PRIu64 " rundown records, %" PRIu64 " events\n", rounds,
            n_rundown, n_events);
    CHECK_EQ_U(bad, 0);
    CHECK(n_rundown > (uint64_t)rounds * 100);
    CHECK(ht_heap_destroy(heap));
}

/* -- a thread that holds a heap locked while the session starts ----------------------------
 * It may not wait for the rundown (the walk of the heap it holds waits for it): its calls, on
 * that heap and on another one, go on untraced until their heap is walked, and the walks wait
 * for them. Another thread works the second heap meanwhile. */

typedef struct locked_worker {
    ht_heap *held, *other;
    atomic_int phase; /* 1: holds the lock; 2: released it */
    void *slot[BLOCK_SLOTS];
} locked_worker;

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Works both heaps for 5 ms with the first one locked, then unlocked until told to stop. */
static void *locked_churn(void *arg)
{
    locked_worker *w = arg;
    unsigned seed = 99;
    /* this thread's tcaches first: making one takes the registry lock, which a thread that
     * holds a heap locked must not wait for (a thread exit flushes under it) */
    for (int i = 0; i < 2; i++) {
        ht_heap *h = i == 0 ? w->held : w->other;
        ht_heap_free(h, 0, ht_heap_alloc(h, 0, 16));
    }
    ht_heap_lock(w->held);
    atomic_store(&w->phase, 1);
    uint64_t until = now_ns() + 5000000u;
    while (!atomic_load(&g_stop)) {
        seed = seed * 1103515245u + 12345u;
        unsigned k = (seed >> 8) % BLOCK_SLOTS;
        ht_heap *h = (k & 1) != 0 ? w->held : w->other;
        if (w->slot[k] != NULL)
            ht_heap_free(h, 0, w->slot[k]);
        w->slot[k] = ht_heap_alloc(h, 0, 16 + (seed >> 20) % 300);
        if (atomic_load(&w->phase) == 1 && (seed & 0xff) == 0 && now_ns() > until) {
            ht_heap_unlock(w->held);
            atomic_store(&w->phase, 2);
        }
    }
    if (atomic_load(&w->phase) == 1)
        ht_heap_unlock(w->held);
    return NULL;
}

static void rundown_with_heap_locked(void)
{
    static locked_worker lw;
    static block_worker bw;
    uint64_t bad = 0;
    for (int round = 0; round < 6; round++) {
        memset(&lw, 0, sizeof lw);
        lw.held = ht_heap_create(0, 0, 0);
        lw.other = ht_heap_create(0, 0, 0);
        REQUIRE(lw.held != NULL && lw.other != NULL);
        bw.heap = lw.other;
        bw.seed = (unsigned)round + 5;
        memset(bw.slot, 0, sizeof bw.slot);
        char path[256];
        ru_path(path, sizeof path, "rundown-locked");
        atomic_store(&g_stop, 0);
        pthread_t t[2];
        REQUIRE(pthread_create(&t[0], NULL, locked_churn, &lw) == 0);
        REQUIRE(pthread_create(&t[1], NULL, block_churn, &bw) == 0);
        while (atomic_load(&lw.phase) == 0)
            usleep(100);
        REQUIRE(start_file(path) == 0); /* returns once the held heap was let go and walked */
        CHECK_EQ_U(atomic_load(&lw.phase), 2);
        atomic_store(&g_stop, 1);
        for (int i = 0; i < 2; i++)
            pthread_join(t[i], NULL);
        ru_file f;
        replay r;
        CHECK_EQ_U(ht_trace_stop(), 0);
        ru_file_read(path, &f);
        CHECK_EQ_U(f.status, HT_READER_OK);
        replay_run(&r, &f);
        uint64_t n_walk[2], n_replay[2];
        bool same = replay_matches_walk(&r, lw.held, &n_walk[0], &n_replay[0]) &&
                    replay_matches_walk(&r, lw.other, &n_walk[1], &n_replay[1]);
        bool round_bad = !same || r.double_create != 0 || r.unknown_heap != 0 ||
                         r.double_alloc != 0 || r.orphan_free != 0;
        if (round_bad)
            report("rundown with a heap held locked", &r);
        bad += round_bad;
        replay_free(&r);
        ru_file_free(&f);
        unlink(path);
        CHECK(ht_heap_destroy(lw.held));
        CHECK(ht_heap_destroy(lw.other));
    }
    CHECK_EQ_U(bad, 0);
}

TEST_MAIN(TEST(rundown_heaps_come_and_go), TEST(rundown_blocks_in_flight),
          TEST(rundown_with_heap_locked))
