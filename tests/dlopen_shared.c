/* dlopen_shared.c — libheaptrail.so loaded with dlopen, as Python's ctypes or a plugin host
 * loads it, and a traced session with stacks run through it. Built as test_dlopen_shared
 * without linking heaptrail (CMakeLists.txt): every call goes through dlsym.
 *
 * What it guards: a library loaded by dlopen gets its initial-exec TLS from glibc's small
 * static-TLS reserve, and dlopen fails ("cannot allocate memory in static TLS block") when
 * the library asks for more. The unwinder's memo once kept ~12 KiB there. The session then
 * checks that stacks are captured through the per-thread memo mapped at a thread's first
 * walk, in threads that exit (and give the mapping back) while others start. Then dlclose:
 * a thread that captured stacks exits afterwards, and its thread-exit destructors (in the
 * library) must still be there (the library is linked -z nodelete). */
#include "harness.h"

#include <heaptrail.h>
#include <heaptrail/reader.h>

#include <dlfcn.h>
#include <pthread.h>
#include <unistd.h>

#define N_THREADS 4
#define N_ROUNDS  3
#define N_OPS     2000

static struct {
    ht_heap *(*process_heap)(void);
    void *(*alloc)(ht_heap *, unsigned, size_t);
    bool (*free_)(ht_heap *, unsigned, void *);
    int (*trace_start)(const ht_trace_config *);
    int (*trace_stop)(void);
    ht_reader_status_code (*reader_open)(const char *, ht_reader **);
    bool (*reader_next)(ht_reader *, ht_reader_event *);
    bool (*reader_stack)(const ht_reader *, uint32_t, const uint64_t **, size_t *);
    void (*reader_close)(ht_reader *);
} lib;

static void *lib_sym(void *h, const char *name)
{
    void *p = dlsym(h, name);
    if (p == NULL)
        fprintf(stderr, "dlsym %s: %s\n", name, dlerror());
    return p;
}

/* lib.field = dlsym(h, name), through memcpy (ISO C has no object-to-function cast). */
#define LOAD(field, name)                                                                          \
    do {                                                                                           \
        void *sym_ = lib_sym(h, name);                                                             \
        memcpy(&lib.field, &sym_, sizeof sym_);                                                    \
    } while (0)

/* Keeps a frame of its own so the captured stacks are a few frames deep. */
__attribute__((noinline)) static unsigned churn_level(ht_heap *heap, unsigned depth)
{
    if (depth > 0)
        return churn_level(heap, depth - 1) + 1;
    unsigned bad = 0;
    for (unsigned i = 0; i < N_OPS; i++) {
        void *p = lib.alloc(heap, 0, 16 + i % 200);
        if (p == NULL || !lib.free_(heap, 0, p))
            bad++;
    }
    return bad;
}

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static int g_stage; /* 1: the lingering thread has churned; 2: it may exit */

/* Churns in the session, then waits past dlclose before it exits. */
static void *lingerer(void *arg)
{
    unsigned *bad = arg;
    *bad = churn_level(lib.process_heap(), 4) - 4;
    pthread_mutex_lock(&g_mu);
    g_stage = 1;
    pthread_cond_broadcast(&g_cv);
    while (g_stage != 2)
        pthread_cond_wait(&g_cv, &g_mu);
    pthread_mutex_unlock(&g_mu);
    return NULL;
}

static void *worker(void *arg)
{
    unsigned *bad = arg;
    *bad = churn_level(lib.process_heap(), 4) - 4;
    return NULL;
}

static void test_dlopen_traced_stacks(void)
{
    void *h = dlopen(HT_SHARED_LIB, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL)
        fprintf(stderr, "dlopen: %s\n", dlerror());
    REQUIRE(h != NULL);
    LOAD(process_heap, "ht_process_heap");
    LOAD(alloc, "ht_heap_alloc");
    LOAD(free_, "ht_heap_free");
    LOAD(trace_start, "ht_trace_start");
    LOAD(trace_stop, "ht_trace_stop");
    LOAD(reader_open, "ht_reader_open");
    LOAD(reader_next, "ht_reader_next");
    LOAD(reader_stack, "ht_reader_stack");
    LOAD(reader_close, "ht_reader_close");
    REQUIRE(lib.process_heap && lib.alloc && lib.free_ && lib.trace_start && lib.trace_stop &&
            lib.reader_open && lib.reader_next && lib.reader_stack && lib.reader_close);

    char path[] = "/tmp/ht-dlopen-XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    close(fd);
    unlink(path); /* the session creates it */
    ht_trace_config cfg = {0};
    cfg.path = path;
    cfg.stack_depth = 12;
    REQUIRE(lib.trace_start(&cfg) == 0);
    unsigned bad[N_ROUNDS][N_THREADS] = {{0}}, bad_linger = 0;
    pthread_t linger;
    REQUIRE(pthread_create(&linger, NULL, lingerer, &bad_linger) == 0);
    pthread_mutex_lock(&g_mu);
    while (g_stage != 1)
        pthread_cond_wait(&g_cv, &g_mu);
    pthread_mutex_unlock(&g_mu);
    for (unsigned r = 0; r < N_ROUNDS; r++) { /* threads exit and new ones start */
        pthread_t t[N_THREADS];
        for (unsigned i = 0; i < N_THREADS; i++)
            REQUIRE(pthread_create(&t[i], NULL, worker, &bad[r][i]) == 0);
        for (unsigned i = 0; i < N_THREADS; i++)
            pthread_join(t[i], NULL);
    }
    CHECK(lib.trace_stop() == 0);
    for (unsigned r = 0; r < N_ROUNDS; r++)
        for (unsigned i = 0; i < N_THREADS; i++)
            CHECK_EQ_U(bad[r][i], 0);

    ht_reader *rd = NULL;
    CHECK(lib.reader_open(path, &rd) == HT_READER_OK);
    uint64_t n_alloc = 0, n_free = 0, n_stack = 0, n_deep = 0;
    ht_reader_event ev;
    while (rd != NULL && lib.reader_next(rd, &ev)) {
        if (ev.event.type == HT_EVENT_HEAP_ALLOC)
            n_alloc++;
        else if (ev.event.type == HT_EVENT_HEAP_FREE)
            n_free++;
        else
            continue;
        const uint64_t *frames;
        size_t n;
        if (ev.stack_id != 0 && lib.reader_stack(rd, ev.stack_id, &frames, &n)) {
            n_stack++;
            n_deep += n >= 6; /* churn_level x5, worker, start_thread, ... */
        }
    }
    if (rd != NULL)
        lib.reader_close(rd);
    unlink(path);
    const uint64_t want = ((uint64_t)N_ROUNDS * N_THREADS + 1) * N_OPS;
    CHECK_EQ_U(n_alloc, want);
    CHECK_EQ_U(n_free, want);
    CHECK_EQ_U(n_stack, 2 * want);
    CHECK_EQ_U(n_deep, 2 * want);

    /* dlclose, then the thread that captured stacks exits: its destructors run library code */
    CHECK(dlclose(h) == 0);
    pthread_mutex_lock(&g_mu);
    g_stage = 2;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
    pthread_join(linger, NULL);
    CHECK_EQ_U(bad_linger, 0);
    void *again = dlopen(HT_SHARED_LIB, RTLD_NOW | RTLD_NOLOAD);
    CHECK(again != NULL); /* -z nodelete: still mapped */
}

TEST_MAIN(TEST(test_dlopen_traced_stacks))
