/* test_recorder_inline.c — a file-only session (no consumer: the heap's inline slot writes of
 * src/trace/emit.h run, which the consumer-checked round trips never reach): two threads
 * churning three heaps (the process heap, an LFH heap, a plain one) with allocs, frees and
 * reallocs through packets of 4 KiB, so that packets often start, fill and change heap. Every
 * ALLOC/FREE/REALLOC read back must equal the program's own log of its calls, in order per
 * thread, field by field; the per-heap, per-Source counts must equal ht_heap_get_stats; with
 * and without stacks. inline_after_drop: an event dropped in the thread's buffer (here one
 * made while the thread counts as capturing a stack) leaves a gap that the next event, which
 * the inline stack path would take, must not hide: it comes with its own sequence number. */
#include "common/thread_hot.h" /* ht__t_in_stack, ht__trace_seq */
#include "harness.h"
#include "recorder_util.h"

#include <pthread.h>
#include <sys/syscall.h>

#define N_THREADS 2
#define N_OPS     30000
#define N_SLOTS   256

typedef struct op_rec {
    unsigned type;  /* ht_event_type */
    uintptr_t heap; /* the handle the call went to */
    uintptr_t a, b; /* ALLOC/FREE: the block; REALLOC: new, old */
    uint64_t size;  /* ALLOC, REALLOC: the size asked */
} op_rec;

static op_rec g_log[N_THREADS][2 * N_OPS + N_SLOTS];
static size_t g_n_log[N_THREADS];
static uint32_t g_tid[N_THREADS];
static ht_heap *g_heaps[3];

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void log_op(int t, unsigned type, ht_heap *h, void *a, void *b, uint64_t size)
{
    g_log[t][g_n_log[t]++] = (op_rec){type, (uintptr_t)h, (uintptr_t)a, (uintptr_t)b, size};
}

static void *churn_thread(void *arg)
{
    int t = (int)(intptr_t)arg;
    g_tid[t] = (uint32_t)syscall(SYS_gettid);
    uint64_t s = 0x9e3779b97f4a7c15ull * (uint64_t)(t + 1);
    void *p[N_SLOTS] = {0};
    int ph[N_SLOTS] = {0};
    for (int i = 0; i < N_OPS; i++) {
        unsigned k = (unsigned)(xorshift(&s) % N_SLOTS);
        if (p[k] == NULL) {
            /* mostly one heap per thread, one call in eight to any of the three */
            int h = xorshift(&s) % 8 == 0 ? (int)(xorshift(&s) % 3) : t % 3;
            size_t size = 1 + xorshift(&s) % (xorshift(&s) % 16 == 0 ? 3000 : 200);
            void *q = ht_heap_alloc(g_heaps[h], 0, size);
            if (q == NULL)
                abort();
            log_op(t, HT_EVENT_HEAP_ALLOC, g_heaps[h], q, NULL, size);
            p[k] = q;
            ph[k] = h;
        } else if (xorshift(&s) % 6 == 0) {
            size_t size = 1 + xorshift(&s) % 400;
            void *q = ht_heap_realloc(g_heaps[ph[k]], 0, p[k], size);
            if (q == NULL)
                abort();
            log_op(t, HT_EVENT_HEAP_REALLOC, g_heaps[ph[k]], q, p[k], size);
            p[k] = q;
        } else {
            ht_heap_free(g_heaps[ph[k]], 0, p[k]);
            log_op(t, HT_EVENT_HEAP_FREE, g_heaps[ph[k]], p[k], NULL, 0);
            p[k] = NULL;
        }
    }
    for (int k = 0; k < N_SLOTS; k++) {
        if (p[k] != NULL) {
            ht_heap_free(g_heaps[ph[k]], 0, p[k]);
            log_op(t, HT_EVENT_HEAP_FREE, g_heaps[ph[k]], p[k], NULL, 0);
        }
    }
    return NULL;
}

static bool matches(const op_rec *l, const ht_event *e)
{
    if (l->type != e->type || l->heap != e->heap_handle)
        return false;
    switch (e->type) {
    case HT_EVENT_HEAP_ALLOC:
        return l->a == e->alloc.address && l->size == e->alloc.size &&
               e->alloc.source >= HT_SOURCE_LOOKASIDE && e->alloc.source <= HT_SOURCE_SLOWPATH;
    case HT_EVENT_HEAP_FREE:
        return l->a == e->free.address && e->free.source >= HT_SOURCE_LOOKASIDE &&
               e->free.source <= HT_SOURCE_SLOWPATH;
    default:
        return l->a == e->realloc.new_address && l->b == e->realloc.old_address &&
               l->size == e->realloc.new_size;
    }
}

static void run(unsigned depth)
{
    char path[128];
    ru_path(path, sizeof path, depth != 0 ? "inline-stacks" : "inline");
    memset(g_n_log, 0, sizeof g_n_log);
    g_heaps[0] = ht_process_heap();
    ht_trace_config c;
    memset(&c, 0, sizeof c);
    c.path = path;
    c.buffer_size = 4096;
    c.n_buffers = 2;
    c.loss_policy = HT_TRACE_LOSS_BLOCK;
    c.flags = HT_TRACE_NO_RUNDOWN;
    c.stack_depth = depth;
    REQUIRE(ht_trace_start(&c) == 0);
    g_heaps[1] = ht_heap_create(HT_HEAP_ENABLE_LFH, 0, 0);
    g_heaps[2] = ht_heap_create(0, 0, 0);
    REQUIRE(g_heaps[1] != NULL && g_heaps[2] != NULL);
    pthread_t th[N_THREADS];
    for (int t = 0; t < N_THREADS; t++)
        REQUIRE(pthread_create(&th[t], NULL, churn_thread, (void *)(intptr_t)t) == 0);
    for (int t = 0; t < N_THREADS; t++)
        pthread_join(th[t], NULL);
    ht_heap_stats st[3];
    for (int h = 1; h < 3; h++)
        ht_heap_get_stats(g_heaps[h], &st[h]);
    CHECK(ht_trace_stop() == 0);

    ru_file f;
    ru_file_read(path, &f);
    CHECK_EQ_U(f.status, HT_READER_OK);
    CHECK_EQ_U(f.info.n_lost, 0);
    size_t at[N_THREADS] = {0};
    uint64_t n_alloc[3][HT_SOURCE_SLOWPATH + 1] = {{0}}, n_free[3] = {0};
    size_t bad = 0, with_stack = 0;
    for (size_t i = 0; i < f.n; i++) {
        const ht_event *e = &f.ev[i];
        if (e->type != HT_EVENT_HEAP_ALLOC && e->type != HT_EVENT_HEAP_FREE &&
            e->type != HT_EVENT_HEAP_REALLOC)
            continue;
        int t = -1;
        for (int k = 0; k < N_THREADS; k++)
            if (g_tid[k] == e->tid)
                t = k;
        if (t < 0)
            continue;
        if (at[t] >= g_n_log[t] || !matches(&g_log[t][at[t]], e)) {
            if (bad++ < 5)
                fprintf(stderr,
                        "thread %d event %zu (seq %llu, type %#x) does not match its call\n", t,
                        at[t], (unsigned long long)e->sequence, e->type);
        }
        at[t]++;
        for (int h = 1; h < 3; h++) {
            if (e->heap_handle != (uintptr_t)g_heaps[h])
                continue;
            if (e->type == HT_EVENT_HEAP_ALLOC)
                n_alloc[h][e->alloc.source]++;
            else if (e->type == HT_EVENT_HEAP_FREE)
                n_free[h]++;
            else {
                n_alloc[h][e->realloc.source]++; /* the heap counts a realloc as an allocation */
                if (e->realloc.new_address != e->realloc.old_address)
                    n_free[h]++; /* and a move frees the old block too */
            }
        }
    }
    CHECK_EQ_U(bad, 0);
    for (int t = 0; t < N_THREADS; t++)
        CHECK_EQ_U(at[t], g_n_log[t]);
    if (depth != 0) { /* the stacks came with the events (ru_file keeps no stack ids) */
        ht_reader *r = NULL;
        ht_reader_event re;
        if (ht_reader_open(path, &r) == HT_READER_OK) {
            while (ht_reader_next(r, &re))
                with_stack += re.stack_id != 0 && re.event.type == HT_EVENT_HEAP_ALLOC;
            ht_reader_close(r);
        }
        CHECK(with_stack > 0);
    }
    for (int h = 1; h < 3; h++) {
        uint64_t frees = 0;
        for (unsigned src = HT_SOURCE_LOOKASIDE; src <= HT_SOURCE_SLOWPATH; src++) {
            frees += st[h].by_source[src].n_free;
            CHECK_EQ_U(st[h].by_source[src].n_alloc, n_alloc[h][src]);
        }
        CHECK_EQ_U(frees, n_free[h]);
    }
    ru_file_free(&f);
    ht_heap_destroy(g_heaps[1]);
    ht_heap_destroy(g_heaps[2]);
    unlink(path);
}

static void inline_no_stacks(void)
{
    run(0);
}

static void inline_stacks(void)
{
    run(8);
}

/* Pairs of alloc and free on h (lookaside hits: the inline path), one alloc dropped in the
 * middle; the file must show every other event at its own sequence number and one lost. */
static void after_drop(unsigned depth)
{
    char path[128];
    ru_path(path, sizeof path, "drop-stacks");
    ht_heap *h = ht_heap_create(HT_HEAP_ENABLE_LFH, 0, 0);
    REQUIRE(h != NULL);
    for (int i = 0; i < 8; i++) /* warm the lookaside list */
        ht_heap_free(h, 0, ht_heap_alloc(h, 0, 48));
    ht_trace_config c;
    memset(&c, 0, sizeof c);
    c.path = path;
    c.flags = HT_TRACE_NO_RUNDOWN;
    c.stack_depth = depth;
    REQUIRE(ht_trace_start(&c) == 0);
    enum { N_PAIRS = 40, DROP_AT = 17 };
    uint64_t dropped_seq = 0, free_seq = 0;
    for (int i = 0; i < N_PAIRS; i++) {
        if (i == DROP_AT) {
            ht__t_in_stack = 1; /* as if the unwinder allocated under an event of ours */
            void *p = ht_heap_alloc(h, 0, 48);
            ht__t_in_stack = 0;
            dropped_seq = ht__trace_seq;
            ht_heap_free(h, 0, p); /* the event after the gap */
            free_seq = ht__trace_seq;
            continue;
        }
        ht_heap_free(h, 0, ht_heap_alloc(h, 0, 48));
    }
    CHECK(ht_trace_stop() == 0);
    CHECK_EQ_U(free_seq, dropped_seq + 1);

    ru_file f;
    ru_file_read(path, &f);
    CHECK_EQ_U(f.status, HT_READER_OK);
    CHECK_EQ_U(f.info.n_lost, 1);
    uint32_t tid = (uint32_t)syscall(SYS_gettid);
    size_t n = 0, seen_free = 0, bad = 0;
    uint64_t last = 0;
    for (size_t i = 0; i < f.n; i++) {
        const ht_event *e = &f.ev[i];
        if (e->tid != tid || e->heap_handle != (uintptr_t)h)
            continue;
        n++;
        bad += e->sequence == dropped_seq; /* the dropped one's number, taken by another */
        bad += last != 0 && e->sequence != last + 1 + (last + 1 == dropped_seq);
        seen_free += e->sequence == free_seq && e->type == HT_EVENT_HEAP_FREE;
        last = e->sequence;
    }
    CHECK_EQ_U(n, 2 * N_PAIRS - 1);
    CHECK_EQ_U(bad, 0);
    CHECK_EQ_U(seen_free, 1);
    ru_file_free(&f);
    ht_heap_destroy(h);
    unlink(path);
}

/* With stacks: the in-stack drop happens only there (a capture is never under way in a
 * session without stacks, which is why the inline no-stack path does not test for it). */
static void inline_after_drop(void)
{
    after_drop(8);
}

TEST_MAIN(TEST(inline_no_stacks), TEST(inline_stacks), TEST(inline_after_drop))
