/* test_recorder.c — the file recorder end to end: events made through the heap API go to a
 * trace file and to a ground-truth consumer in the same session, and the reader library must
 * give back exactly the consumer's events (every type, rundown and INVALID included, one and
 * many threads); loss accounting under DROP, nothing lost under BLOCK, causal order of
 * reused addresses (allocs, frees and reallocs, blocks handed between threads), rundown = heap
 * walk, no overwrite of an existing file, and files of
 * processes killed by SIGKILL or dying of SIGSEGV (with other threads mid-packet: the file
 * reads back complete). Owns only its temporary files. */
#include "harness.h"
#include "recorder_util.h"
#include "trace/internal.h" /* ht__rec_buf_limit, HT_REC_MAX_THREADS */

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>

/* -- comparing a file with the truth ----------------------------------------------------- */

static void check_file_equals_truth(const char *path, ru_truth *t)
{
    ru_file f;
    ru_file_read(path, &f);
    CHECK_EQ_U(f.open_status, HT_READER_OK);
    CHECK_EQ_U(f.status, HT_READER_OK);
    CHECK(f.info.complete);
    CHECK_EQ_U(f.info.n_lost, 0);
    CHECK_EQ_U(f.n, t->n);
    qsort(f.ev, f.n, sizeof *f.ev, ru_cmp_tid_seq);
    qsort(t->ev, t->n, sizeof *t->ev, ru_cmp_tid_seq);
    size_t bad = 0;
    for (size_t i = 0; i < f.n && i < t->n; i++) {
        if (!ru_event_equal(&f.ev[i], &t->ev[i])) {
            if (bad++ < 5)
                fprintf(stderr, "event %zu differs: tid %u seq %" PRIu64 " type %#x vs %#x\n", i,
                        t->ev[i].tid, t->ev[i].sequence, t->ev[i].type, f.ev[i].type);
        }
    }
    CHECK_EQ_U(bad, 0);
    ht_trace_stats st;
    CHECK_EQ_U(ht_trace_get_stats(&st), 0);
    CHECK_EQ_U(st.n_events, t->n);
    CHECK_EQ_U(st.n_lost, 0);
    ru_file_free(&f);
}

/* Every event type, Source INVALID, FROM_SIZE, and EXPAND/CONTRACT from a private heap. */
static void workload_all_types(void)
{
    ht_heap *h = ht_heap_create(0, 0, 0);
    void *a = ht_heap_alloc(h, 0, 100);
    void *big = ht_heap_alloc(h, 0, (size_t)3 << 20);
    a = ht_heap_realloc(h, 0, a, 50);
    a = ht_heap_realloc(h, 0, a, 100000);
    void *stale = a;
    ht_heap_free(h, 0, a);
    ht_heap_free(h, 0, stale);              /* INVALID */
    (void)ht_heap_size(h, 0, stale);        /* INVALID, FROM_SIZE */
    (void)ht_heap_realloc(h, 0, stale, 10); /* INVALID realloc */
    void *many[64];
    for (int i = 0; i < 64; i++)
        many[i] = ht_heap_alloc(h, 0, 200000);
    for (int i = 0; i < 64; i++)
        ht_heap_free(h, 0, many[i]);
    ht_heap_compact(h, 0);
    ht_heap_free(h, 0, big);
    for (int i = 0; i < 100; i++)
        ht_heap_free(h, 0, ht_heap_alloc(h, 0, (size_t)(i * 37 % 900)));
    ht_heap_destroy(h);
}

static void roundtrip_single(void)
{
    char path[256];
    ru_path(path, sizeof path, "rt1");
    ht_heap *pre = ht_heap_create(0, 0, 0); /* live before the start: rundown */
    void *live[10];
    for (int i = 0; i < 10; i++)
        live[i] = ht_heap_alloc(pre, 0, (size_t)(16 + i * 100));
    ru_truth t;
    ru_truth_init(&t);
    ht_trace_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.path = path;
    cfg.stack_depth = ru_stack_depth();
    cfg.consumer = ru_truth_consumer;
    cfg.consumer_ctx = &t;
    REQUIRE(ht_trace_start(&cfg) == 0);
    workload_all_types();
    for (int i = 0; i < 10; i++)
        ht_heap_free(pre, 0, live[i]);
    CHECK_EQ_U(ht_trace_stop(), 0);

    unsigned seen_types = 0;
    bool rundown = false, invalid = false, from_size = false;
    for (size_t i = 0; i < t.n; i++) {
        seen_types |= 1u << (t.ev[i].type - 0x20);
        rundown |= (t.ev[i].flags & HT_EVENT_RUNDOWN) != 0;
        from_size |= (t.ev[i].flags & HT_EVENT_FROM_SIZE) != 0;
        invalid |= t.ev[i].type == HT_EVENT_HEAP_FREE && t.ev[i].free.source == HT_SOURCE_INVALID;
    }
    CHECK_EQ_U(seen_types, 0x43Fu); /* 0x20..0x25 and 0x2A */
    CHECK(rundown);
    CHECK(invalid);
    CHECK(from_size);
    check_file_equals_truth(path, &t);
    ru_truth_free(&t);
    ht_heap_destroy(pre);
    unlink(path);
}

/* -- many threads ------------------------------------------------------------------------ */

typedef struct churn_arg {
    ht_heap *shared;
    unsigned seed;
    unsigned n_ops;
} churn_arg;

static void *churn_thread(void *p)
{
    churn_arg *a = p;
    void *slots[64] = {0};
    unsigned s = a->seed;
    for (unsigned i = 0; i < a->n_ops; i++) {
        s = s * 1103515245u + 12345u;
        unsigned k = (s >> 8) % 64;
        ht_heap *h = (s >> 20) & 1 ? a->shared : ht_process_heap();
        if (slots[k] != NULL) {
            if ((s >> 22) % 4 == 0)
                slots[k] = ht_heap_realloc(h, 0, slots[k], (s >> 4) % 3000);
            else
                ht_heap_free(h, 0, slots[k]), slots[k] = NULL;
            if (slots[k] != NULL)
                ht_heap_free(h, 0, slots[k]), slots[k] = NULL;
        }
        slots[k] = ht_heap_alloc(h, 0, (s >> 4) % 2000);
        if (slots[k] != NULL)
            ht_heap_free(h, 0, slots[k]), slots[k] = NULL;
    }
    return NULL;
}

static void roundtrip_threads(void)
{
    char path[256];
    ru_path(path, sizeof path, "rt4");
    ru_truth t;
    ru_truth_init(&t);
    ht_heap *shared = ht_heap_create(0, 0, 0);
    ht_trace_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.path = path;
    cfg.stack_depth = ru_stack_depth();
    cfg.consumer = ru_truth_consumer;
    cfg.consumer_ctx = &t;
    cfg.buffer_size = 8192; /* many packets, many chunks */
    cfg.loss_policy = HT_TRACE_LOSS_BLOCK;
    REQUIRE(ht_trace_start(&cfg) == 0);
    pthread_t th[4];
    churn_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (churn_arg){shared, (unsigned)i * 7919u + 1u, 20000};
        pthread_create(&th[i], NULL, churn_thread, &args[i]);
    }
    churn_arg mine = {shared, 99, 5000};
    churn_thread(&mine);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ_U(ht_trace_stop(), 0);
    check_file_equals_truth(path, &t);
    ru_truth_free(&t);
    ht_heap_destroy(shared);
    unlink(path);
}

/* -- loss accounting --------------------------------------------------------------------- */

static __thread uint64_t t_counted;
static atomic_ullong g_counted;

static void counting_consumer(const ht_event *e, void *ctx)
{
    (void)e;
    (void)ctx;
    t_counted++;
}

static void *fast_thread(void *p)
{
    unsigned n = (unsigned)(uintptr_t)p;
    t_counted = 0;
    for (unsigned i = 0; i < n; i++)
        ht_heap_free(ht_process_heap(), 0, ht_heap_alloc(ht_process_heap(), 0, 64));
    atomic_fetch_add(&g_counted, t_counted);
    return NULL;
}

static void run_tiny_pool(unsigned policy, const char *name, ht_trace_stats *st, ru_file *f)
{
    char path[256];
    ru_path(path, sizeof path, name);
    atomic_store(&g_counted, 0);
    ht_trace_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.path = path;
    cfg.stack_depth = ru_stack_depth();
    cfg.consumer = counting_consumer;
    cfg.buffer_size = 4096;
    cfg.n_buffers = 2;
    cfg.loss_policy = policy;
    cfg.flags = HT_TRACE_NO_RUNDOWN;
    if (ht_trace_start(&cfg) != 0) {
        CHECK(!"start");
        return;
    }
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, fast_thread, (void *)(uintptr_t)200000);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ_U(ht_trace_stop(), 0);
    ht_trace_get_stats(st);
    ru_file_read(path, f);
    unlink(path);
}

static void loss_drop_counted(void)
{
    ht_trace_stats st;
    ru_file f;
    run_tiny_pool(HT_TRACE_LOSS_DROP, "drop", &st, &f);
    uint64_t produced = atomic_load(&g_counted);
    printf("     drop: %" PRIu64 " events produced, %" PRIu64 " written, %" PRIu64 " lost\n",
           produced, st.n_events, st.n_lost);
    CHECK(st.n_lost > 0); /* two 4 KiB packets cannot keep up with a tight loop */
    CHECK_EQ_U(f.status, HT_READER_OK);
    CHECK(f.info.complete);
    CHECK_EQ_U(f.info.n_lost, st.n_lost);
    CHECK_EQ_U(f.info.n_events, st.n_events);
    CHECK_EQ_U(f.n, st.n_events);
    CHECK_EQ_U(st.n_events + st.n_lost, produced);
    /* The gaps are visible: per thread, sequence numbers rise and skip exactly the losses. */
    qsort(f.ev, f.n, sizeof *f.ev, ru_cmp_tid_seq);
    uint64_t gaps = 0;
    for (size_t i = 1; i < f.n; i++) {
        if (f.ev[i].tid != f.ev[i - 1].tid)
            continue;
        CHECK(f.ev[i].sequence > f.ev[i - 1].sequence);
        gaps += f.ev[i].sequence - f.ev[i - 1].sequence - 1;
    }
    CHECK(gaps <= st.n_lost);
    ru_file_free(&f);
}

/* Threads past the session's buffer limit get no buffer: their events are lost and counted
 * under their own tids (ht_unbuf), in the file's lost counts and ht_trace_get_stats, never
 * dropped unseen. The limit is set low here (ht__rec_buf_limit); HT_REC_MAX_THREADS in use. */
#define LIMIT_BUFS    4
#define LIMIT_THREADS 10
#define LIMIT_PAIRS   50

typedef struct limit_arg {
    ht_heap *h;
    uint32_t tid;
} limit_arg;

static void *limit_thread(void *p)
{
    limit_arg *a = p;
    a->tid = (uint32_t)syscall(SYS_gettid);
    for (int i = 0; i < LIMIT_PAIRS; i++)
        ht_heap_free(a->h, 0, ht_heap_alloc(a->h, 0, 24 + (size_t)i));
    return NULL;
}

static void threads_past_limit_counted(void)
{
    char path[256];
    ru_path(path, sizeof path, "limit");
    ht_heap *h = ht_heap_create(0, 0, 0);
    REQUIRE(h != NULL);
    ht__rec_buf_limit = LIMIT_BUFS;
    ht_trace_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.path = path;
    cfg.flags = HT_TRACE_NO_RUNDOWN;
    cfg.loss_policy = HT_TRACE_LOSS_BLOCK; /* nothing lost but what has no buffer */
    REQUIRE(ht_trace_start(&cfg) == 0);
    ht_heap_free(h, 0, ht_heap_alloc(h, 0, 8)); /* this thread takes a buffer first */
    limit_arg a[LIMIT_THREADS];
    for (int t = 0; t < LIMIT_THREADS; t++) { /* one after another: buffers go in order */
        pthread_t th;
        a[t].h = h;
        REQUIRE(pthread_create(&th, NULL, limit_thread, &a[t]) == 0);
        pthread_join(th, NULL);
    }
    ht_trace_stats st;
    CHECK(ht_trace_get_stats(&st) == 0);
    uint64_t lost_live = st.n_lost;
    CHECK(ht_trace_stop() == 0);
    ht__rec_buf_limit = HT_REC_MAX_THREADS;
    CHECK(ht_trace_get_stats(&st) == 0);
    const uint64_t per_thread = 2 * LIMIT_PAIRS;
    const uint64_t want_lost = (LIMIT_THREADS - (LIMIT_BUFS - 1)) * per_thread;
    CHECK_EQ_U(lost_live, want_lost);
    CHECK_EQ_U(st.n_lost, want_lost);

    ht_reader *r = NULL;
    REQUIRE(ht_reader_open(path, &r) == HT_READER_OK);
    ht_reader_event re;
    uint64_t events[LIMIT_THREADS] = {0};
    while (ht_reader_next(r, &re))
        for (int t = 0; t < LIMIT_THREADS; t++)
            events[t] += re.event.tid == a[t].tid && re.event.heap_handle == (uintptr_t)h;
    CHECK_EQ_U(ht_reader_status(r, NULL, NULL), HT_READER_OK);
    ht_reader_trace_info info;
    ht_reader_info(r, &info);
    CHECK(info.complete);
    CHECK_EQ_U(info.n_lost, want_lost);
    const ht_reader_thread *ths = NULL;
    size_t n_ths = 0;
    ht_reader_threads(r, &ths, &n_ths);
    for (int t = 0; t < LIMIT_THREADS; t++) {
        const ht_reader_thread *th = NULL;
        for (size_t k = 0; k < n_ths; k++)
            if (ths[k].tid == a[t].tid)
                th = &ths[k];
        bool buffered = t < LIMIT_BUFS - 1;
        CHECK_EQ_U(events[t], buffered ? per_thread : 0);
        CHECK(th != NULL);
        if (th != NULL)
            CHECK_EQ_U(th->n_lost, buffered ? 0 : per_thread);
    }
    ht_reader_close(r);
    ht_heap_destroy(h);
    unlink(path);
}

static void loss_block_none(void)
{
    ht_trace_stats st;
    ru_file f;
    run_tiny_pool(HT_TRACE_LOSS_BLOCK, "block", &st, &f);
    uint64_t produced = atomic_load(&g_counted);
    CHECK_EQ_U(st.n_lost, 0);
    CHECK_EQ_U(f.info.n_lost, 0);
    CHECK_EQ_U(f.n, produced);
    CHECK_EQ_U(st.n_events, produced);
    CHECK(f.info.complete);
    ru_file_free(&f);
}

/* -- causal order ------------------------------------------------------------------------ */

#define N_SHARED 64
static _Atomic(void *) g_shared[N_SHARED];

static void *swap_thread(void *p)
{
    ht_heap *h = p;
    unsigned s = (unsigned)(uintptr_t)pthread_self();
    for (int i = 0; i < 40000; i++) {
        s = s * 1103515245u + 12345u;
        void *old = atomic_exchange(&g_shared[(s >> 8) % N_SHARED], NULL);
        if (old != NULL)
            ht_heap_free(h, 0, old);
        void *q = ht_heap_alloc(h, 0, 16 + (s >> 20) % 3 * 16);
        if (i % 8 == 7) { /* a realloc frees one address and allocates another (or the same) */
            void *r = ht_heap_realloc(h, 0, q, 16 + (s >> 24) % 5 * 24);
            q = r != NULL ? r : q;
        }
        void *back = atomic_exchange(&g_shared[(s >> 12) % N_SHARED], q);
        if (back != NULL)
            ht_heap_free(h, 0, back);
    }
    return NULL;
}

/* A tiny open-addressing set of addresses. */
typedef struct addr_set {
    uintptr_t *a;
    size_t cap;
} addr_set;

static bool set_has(const addr_set *s, uintptr_t x, size_t *slot)
{
    size_t i = (x >> 4) * 0x9E3779B97F4A7C15ull % s->cap;
    while (s->a[i] != 0 && s->a[i] != x)
        i = (i + 1) % s->cap;
    *slot = i;
    return s->a[i] == x;
}

static void set_del(addr_set *s, size_t i)
{
    /* backward-shift deletion for linear probing */
    s->a[i] = 0;
    for (size_t j = (i + 1) % s->cap; s->a[j] != 0; j = (j + 1) % s->cap) {
        uintptr_t x = s->a[j];
        s->a[j] = 0;
        size_t k;
        set_has(s, x, &k);
        s->a[k] = x;
    }
}

static void causal_order(void)
{
    char path[256];
    ru_path(path, sizeof path, "causal");
    ht_heap *h = ht_heap_create(0, 0, 0);
    ht_trace_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.path = path;
    cfg.stack_depth = ru_stack_depth();
    cfg.loss_policy = HT_TRACE_LOSS_BLOCK;
    REQUIRE(ht_trace_start(&cfg) == 0);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, swap_thread, h);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < N_SHARED; i++)
        ht_heap_free(h, 0, atomic_exchange(&g_shared[i], NULL));
    CHECK_EQ_U(ht_trace_stop(), 0);

    ru_file f;
    ru_file_read(path, &f);
    CHECK_EQ_U(f.status, HT_READER_OK);
    addr_set s = {calloc(1 << 16, sizeof(uintptr_t)), 1 << 16};
    uint64_t twice = 0, unknown = 0, n_alloc = 0, n_realloc = 0;
    for (size_t i = 0; i < f.n; i++) {
        const ht_event *e = &f.ev[i];
        if (e->heap_handle != (uintptr_t)h)
            continue;
        size_t k;
        if (e->type == HT_EVENT_HEAP_ALLOC) {
            n_alloc++;
            if (set_has(&s, e->alloc.address, &k))
                twice++;
            else
                s.a[k] = e->alloc.address;
        } else if (e->type == HT_EVENT_HEAP_FREE && e->free.source != HT_SOURCE_INVALID) {
            if (set_has(&s, e->free.address, &k))
                set_del(&s, k);
            else
                unknown++;
        } else if (e->type == HT_EVENT_HEAP_REALLOC && e->realloc.source != HT_SOURCE_INVALID &&
                   e->realloc.new_address != 0) {
            n_realloc++;
            if (set_has(&s, e->realloc.old_address, &k))
                set_del(&s, k);
            else
                unknown++;
            if (set_has(&s, e->realloc.new_address, &k))
                twice++;
            else
                s.a[k] = e->realloc.new_address;
        }
    }
    CHECK(n_realloc >= 4 * 40000 / 8);
    CHECK(n_alloc >= 4 * 40000);
    CHECK_EQ_U(twice, 0);
    CHECK_EQ_U(unknown, 0);
    free(s.a);
    ru_file_free(&f);
    ht_heap_destroy(h);
    unlink(path);
}

/* -- rundown ----------------------------------------------------------------------------- */

typedef struct blk {
    uintptr_t address;
    uint64_t size;
} blk;

static int blk_cmp(const void *a, const void *b)
{
    const blk *x = a, *y = b;
    return x->address < y->address ? -1 : x->address > y->address;
}

static void rundown_equals_walk(void)
{
    char path[256];
    ru_path(path, sizeof path, "rundown");
    ht_heap *h = ht_heap_create(0, 0, 0);
    void *p[3000];
    for (int i = 0; i < 3000; i++)
        p[i] = ht_heap_alloc(h, 0, (size_t)(i * 131 % 5000) + (i % 100 == 0 ? 2u << 20 : 0));
    for (int i = 0; i < 3000; i += 3)
        ht_heap_free(h, 0, p[i]);

    blk *walk = calloc(3000, sizeof *walk);
    size_t n_walk = 0;
    ht_heap_entry e;
    e.address = NULL;
    while (ht_heap_walk(h, &e))
        if (e.state & HT_ENTRY_BUSY)
            walk[n_walk++] = (blk){(uintptr_t)e.address, e.size};

    ht_trace_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.path = path;
    cfg.stack_depth = ru_stack_depth();
    cfg.buffer_size = 4096; /* rundown waits for packets even under DROP */
    cfg.n_buffers = 2;
    REQUIRE(ht_trace_start(&cfg) == 0);
    CHECK_EQ_U(ht_trace_stop(), 0);

    ru_file f;
    ru_file_read(path, &f);
    CHECK_EQ_U(f.status, HT_READER_OK);
    CHECK_EQ_U(f.info.n_lost, 0);
    blk *rd = calloc(f.n + 1, sizeof *rd);
    size_t n_rd = 0;
    bool created = false;
    for (size_t i = 0; i < f.n; i++) {
        if (f.ev[i].heap_handle != (uintptr_t)h)
            continue;
        CHECK(f.ev[i].flags & HT_EVENT_RUNDOWN);
        if (f.ev[i].type == HT_EVENT_HEAP_CREATE)
            created = true;
        if (f.ev[i].type == HT_EVENT_HEAP_ALLOC)
            rd[n_rd++] = (blk){f.ev[i].alloc.address, f.ev[i].alloc.size};
    }
    CHECK(created);
    CHECK_EQ_U(n_rd, n_walk);
    qsort(walk, n_walk, sizeof *walk, blk_cmp);
    qsort(rd, n_rd, sizeof *rd, blk_cmp);
    CHECK(n_rd == n_walk && memcmp(rd, walk, n_rd * sizeof *rd) == 0);
    free(rd);
    free(walk);
    ru_file_free(&f);
    ht_heap_destroy(h);
    unlink(path);
}

/* -- the file itself --------------------------------------------------------------------- */

static void existing_file_kept(void)
{
    char path[256], link[256];
    ru_path(path, sizeof path, "exists");
    ru_path(link, sizeof link, "link");
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    REQUIRE(fd >= 0);
    CHECK(write(fd, "hello", 5) == 5);
    close(fd);
    ht_trace_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.path = path;
    cfg.stack_depth = ru_stack_depth();
    CHECK_EQ_U(ht_trace_start(&cfg), (uint64_t)-EEXIST);
    CHECK(symlink(path, link) == 0);
    cfg.path = link;
    CHECK(ht_trace_start(&cfg) < 0); /* never follows a link */
    char buf[16] = {0};
    fd = open(path, O_RDONLY);
    CHECK(read(fd, buf, sizeof buf) == 5 && memcmp(buf, "hello", 5) == 0);
    close(fd);
    cfg.buffer_size = 1000; /* out of range */
    cfg.path = "/tmp/ht-rec-never-created.trace";
    CHECK_EQ_U(ht_trace_start(&cfg), (uint64_t)-EINVAL);
    CHECK(access(cfg.path, F_OK) != 0);
    cfg.buffer_size = 0;
    cfg.path = NULL;
    cfg.consumer = counting_consumer; /* the failed starts left no session behind */
    CHECK_EQ_U(ht_trace_start(&cfg), 0);
    CHECK_EQ_U(ht_trace_stop(), 0);
    unlink(link);
    unlink(path);
}

/* -- crashes ----------------------------------------------------------------------------- */

static void sigkill_cut_at_chunk(void)
{
    char path[256];
    ru_path(path, sizeof path, "sigkill");
    int pipefd[2];
    REQUIRE(pipe(pipefd) == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ht_trace_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.path = path;
        cfg.stack_depth = ru_stack_depth();
        cfg.buffer_size = 4096;
        cfg.loss_policy = HT_TRACE_LOSS_BLOCK;
        if (ht_trace_start(&cfg) != 0)
            _exit(3);
        bool told = false;
        for (unsigned i = 0;; i++) {
            ht_heap_free(ht_process_heap(), 0, ht_heap_alloc(ht_process_heap(), 0, i % 500));
            ht_trace_stats st;
            if (!told && i % 1000 == 0 && ht_trace_get_stats(&st) == 0 && st.n_chunks >= 5) {
                told = write(pipefd[1], "x", 1) == 1;
            }
        }
    }
    close(pipefd[1]);
    char c;
    CHECK(read(pipefd[0], &c, 1) == 1);
    usleep(3000);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    close(pipefd[0]);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    ru_file f;
    ru_file_read(path, &f);
    CHECK_EQ_U(f.open_status, HT_READER_OK);
    CHECK(f.status == HT_READER_OK || f.status == HT_READER_TRUNCATED);
    CHECK(!f.info.complete);
    CHECK(f.n >= 5 * 80);
    CHECK_EQ_U(f.n, f.info.n_events);
    qsort(f.ev, f.n, sizeof *f.ev, ru_cmp_tid_seq);
    uint64_t breaks = 0;
    for (size_t i = 1; i < f.n; i++)
        breaks += f.ev[i].tid == f.ev[i - 1].tid && f.ev[i].sequence != f.ev[i - 1].sequence + 1;
    CHECK_EQ_U(breaks, 0); /* a whole prefix: nothing missing before the cut */
    ru_file_free(&f);
    unlink(path);
}

static void sigsegv_flushed(void)
{
    char path[256];
    ru_path(path, sizeof path, "sigsegv");
    const unsigned n_allocs = 5000;
    ht_heap *h = ht_heap_create(0, 0, 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ht_trace_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.path = path;
        cfg.stack_depth = ru_stack_depth();
        cfg.buffer_size = 4096;
        cfg.n_buffers = 64;
        cfg.flags = HT_TRACE_NO_RUNDOWN;
        if (ht_trace_start(&cfg) != 0)
            _exit(3);
        for (unsigned i = 0; i < n_allocs; i++)
            (void)ht_heap_alloc(h, 0, 32 + i % 200);
        volatile uintptr_t bad = 8; /* volatile: a real fault, not something gcc can fold */
        *(volatile int *)bad = 1;   /* dies here */
        _exit(4);
    }
    int status;
    waitpid(pid, &status, 0);
    /* SIGSEGV, or a sanitizer's report and exit code after our handler chained to it. */
    CHECK((WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV) ||
          (WIFEXITED(status) && WEXITSTATUS(status) != 0 && WEXITSTATUS(status) != 3 &&
           WEXITSTATUS(status) != 4));
    ru_file f;
    ru_file_read(path, &f);
    CHECK_EQ_U(f.open_status, HT_READER_OK);
    CHECK_EQ_U(f.status, HT_READER_OK);
    CHECK(f.info.complete); /* the handler wrote the end summary */
    uint64_t allocs = 0;
    for (size_t i = 0; i < f.n; i++)
        allocs += f.ev[i].heap_handle == (uintptr_t)h && f.ev[i].type == HT_EVENT_HEAP_ALLOC;
    CHECK_EQ_U(allocs, n_allocs);
    ru_file_free(&f);
    ht_heap_destroy(h);
    unlink(path);
}

/* Three workers allocate in a loop and publish, in shared memory, how many ht_heap_alloc
 * calls have returned; the main thread reads those counts and faults. The file must read back
 * complete, holding for each worker at least every allocation it had published by then (all
 * committed before the crash; the workers go on during the handler, later ones may be in).
 * The child is this program run again (fork + exec, HT_TEST_CRASH_CHILD=<trace path>), not a
 * plain fork: TSan does not support threads in the child of a multi-threaded parent (its
 * die_after_fork); the shared memory is a file both map MAP_SHARED. */
#define CRASH_WORKERS 3

typedef struct crash_shared {
    _Atomic uint32_t tid[CRASH_WORKERS];
    _Atomic uint64_t done[CRASH_WORKERS];
    uint64_t at_crash[CRASH_WORKERS]; /* done as the main thread read it just before faulting */
    uint64_t heap;                    /* the workers' heap handle */
} crash_shared;

typedef struct crash_worker {
    crash_shared *sh;
    ht_heap *h;
    pthread_barrier_t *barrier;
    int ix;
} crash_worker;

/* Worker CRASH_PARKED stops after CRASH_PARK_AT calls and waits without another heap call:
 * its last events sit in its current packet, unsealed, which only the crash path's copy of
 * the committed slots brings into the file (the others keep sealing packets meanwhile). */
#define CRASH_PARKED  0
#define CRASH_PARK_AT 1037u /* not a whole number of 4 KiB packets */

static void *crash_worker_main(void *arg)
{
    crash_worker *w = arg;
    atomic_store(&w->sh->tid[w->ix], (uint32_t)syscall(SYS_gettid));
    for (uint64_t i = 1;; i++) {
        (void)ht_heap_alloc(w->h, 0, 16 + i % 300);
        atomic_store(&w->sh->done[w->ix], i); /* right after the call returned */
        if (i == 1000)
            pthread_barrier_wait(w->barrier);
        if (w->ix == CRASH_PARKED && i == CRASH_PARK_AT)
            for (;;)
                pause();
    }
    return NULL;
}

static crash_shared *crash_shared_map(const char *shm_path, int flags)
{
    int fd = open(shm_path, O_RDWR | O_CLOEXEC | flags, 0600);
    if (fd < 0 || ftruncate(fd, sizeof(crash_shared)) != 0)
        return NULL;
    void *p = mmap(NULL, sizeof(crash_shared), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    return p == MAP_FAILED ? NULL : p;
}

/* The child, before main: trace, start the workers, fault. Exit 3/4/5: setup failed. */
__attribute__((constructor)) static void crash_child(void)
{
    const char *path = getenv("HT_TEST_CRASH_CHILD");
    if (path == NULL)
        return;
    char shm_path[300];
    snprintf(shm_path, sizeof shm_path, "%s.shm", path);
    crash_shared *sh = crash_shared_map(shm_path, 0);
    if (sh == NULL)
        _exit(5);
    ht_heap *h = ht_heap_create(0, 0, 0);
    sh->heap = (uintptr_t)h;
    ht_trace_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.path = path;
    cfg.stack_depth = ru_stack_depth();
    cfg.buffer_size = 4096;
    cfg.n_buffers = 4;
    cfg.loss_policy = HT_TRACE_LOSS_BLOCK; /* nothing lost: every published call is in */
    cfg.flags = HT_TRACE_NO_RUNDOWN;
    if (ht_trace_start(&cfg) != 0)
        _exit(3);
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, CRASH_WORKERS + 1);
    crash_worker w[CRASH_WORKERS];
    pthread_t th[CRASH_WORKERS];
    for (int i = 0; i < CRASH_WORKERS; i++) {
        w[i] = (crash_worker){sh, h, &barrier, i};
        if (pthread_create(&th[i], NULL, crash_worker_main, &w[i]) != 0)
            _exit(5);
    }
    pthread_barrier_wait(&barrier);
    usleep(2000); /* the workers are mid-packet now (the parked one is parked) */
    while (atomic_load(&sh->done[CRASH_PARKED]) != CRASH_PARK_AT)
        usleep(100);
    /* The workers keep running while the handler flushes: what they publish after this may
     * or may not be in the file; what they published before it must be. */
    for (int i = 0; i < CRASH_WORKERS; i++)
        sh->at_crash[i] = atomic_load(&sh->done[i]);
    volatile uintptr_t bad = 8; /* volatile: a real fault, not something gcc can fold */
    *(volatile int *)bad = 1;   /* dies here */
    _exit(4);
}

static void sigsegv_threads_complete(void)
{
    char path[256], shm_path[300];
    ru_path(path, sizeof path, "sigsegv_mt");
    snprintf(shm_path, sizeof shm_path, "%s.shm", path);
    unlink(shm_path);
    crash_shared *sh = crash_shared_map(shm_path, O_CREAT | O_EXCL);
    REQUIRE(sh != NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        setenv("HT_TEST_CRASH_CHILD", path, 1);
        execl("/proc/self/exe", "test_recorder", (char *)NULL);
        _exit(6);
    }
    int status;
    waitpid(pid, &status, 0);
    /* SIGSEGV, or a sanitizer's report and exit code after our handler chained to it. */
    CHECK((WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV) ||
          (WIFEXITED(status) && WEXITSTATUS(status) != 0 && WEXITSTATUS(status) != 3 &&
           WEXITSTATUS(status) != 4 && WEXITSTATUS(status) != 5 && WEXITSTATUS(status) != 6));
    ru_file f;
    ru_file_read(path, &f);
    CHECK_EQ_U(f.open_status, HT_READER_OK);
    CHECK_EQ_U(f.status, HT_READER_OK);
    CHECK(f.info.complete);
    CHECK_EQ_U(f.n, f.info.n_events);
    for (int k = 0; k < CRASH_WORKERS; k++) {
        uint32_t tid = atomic_load(&sh->tid[k]);
        uint64_t done = sh->at_crash[k];
        uint64_t allocs = 0;
        for (size_t i = 0; i < f.n; i++)
            allocs += f.ev[i].tid == tid && f.ev[i].heap_handle == sh->heap &&
                      f.ev[i].type == HT_EVENT_HEAP_ALLOC;
        CHECK(done >= 1000);
        if (k == CRASH_PARKED) { /* parked before the fault: all of its calls, no more */
            CHECK_EQ_U(done, CRASH_PARK_AT);
            CHECK_EQ_U(allocs, done);
        }
        if (allocs + 1 < done)
            fprintf(stderr, "worker %d (tid %u): %" PRIu64 " events, %" PRIu64 " published\n", k,
                    tid, allocs, done);
        CHECK(allocs + 1 >= done);
    }
    ru_file_free(&f);
    munmap(sh, sizeof *sh);
    unlink(shm_path);
    unlink(path);
}

TEST_MAIN(TEST(roundtrip_single), TEST(roundtrip_threads), TEST(loss_drop_counted),
          TEST(loss_block_none), TEST(threads_past_limit_counted), TEST(causal_order),
          TEST(rundown_equals_walk), TEST(existing_file_kept), TEST(sigkill_cut_at_chunk),
          TEST(sigsegv_flushed), TEST(sigsegv_threads_complete))
