/* test_fork.c — fork while other threads work the heaps and threads come and go: the child
 * must find no lock held (it allocates, frees and validates every heap, starts threads that
 * do the same, untraced and traced), and the parent goes on unharmed. */
#include "harness.h"

#include <heaptrail.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static ht_heap *g_heaps[3];
static atomic_int g_stop;

static void *churn(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    void *slots[256] = {0};
    while (!atomic_load(&g_stop)) {
        seed = seed * 1103515245u + 12345u;
        unsigned k = (seed >> 8) % 256;
        ht_heap *h = g_heaps[(seed >> 20) % 3];
        if (slots[k] != NULL)
            ht_heap_free(ht_process_heap(), 0, slots[k]);
        slots[k] = ht_heap_alloc(ht_process_heap(), 0, (seed >> 4) % 70000);
        void *q = ht_heap_alloc(h, 0, (seed >> 12) % 5000);
        ht_heap_free(h, 0, q);
    }
    for (int i = 0; i < 256; i++)
        ht_heap_free(ht_process_heap(), 0, slots[i]);
    return NULL;
}

/* Short-lived threads: each makes its per-thread state (pool objects under the pools' locks)
 * on its first call and gives it back at exit, so forks land inside those paths too. */
static void *one_shot(void *arg)
{
    (void)arg;
    for (int i = 0; i < 3; i++)
        ht_heap_free(g_heaps[i], 0, ht_heap_alloc(g_heaps[i], 0, 64));
    return NULL;
}

static void *spawner(void *arg)
{
    (void)arg;
    while (!atomic_load(&g_stop)) {
        pthread_t t;
        if (pthread_create(&t, NULL, one_shot, NULL) == 0)
            pthread_join(t, NULL);
    }
    return NULL;
}

static int child_work(void)
{
    for (int i = 0; i < 3; i++) {
        for (int n = 0; n < 2000; n++) {
            void *p = ht_heap_alloc(g_heaps[i], 0, (size_t)(n * 37) % 40000);
            if (p == NULL || !ht_heap_free(g_heaps[i], 0, p))
                return 2;
        }
        if (!ht_heap_validate(g_heaps[i], 0, NULL))
            return 3;
    }
    ht_heap *fresh = ht_heap_create(0, 0, 0);
    if (fresh == NULL || !ht_heap_destroy(fresh))
        return 4;
    return 0;
}

/* -- threads in the child ----------------------------------------------------------------- */

#define CHILD_THREADS 3
#define CHILD_OPS     2000

static ht_heap *g_child_heap; /* made in the child */
static atomic_uint g_child_events;

static void count_events(const ht_event *ev, void *ctx)
{
    (void)ctx;
    if (ev->heap_handle == (uintptr_t)g_child_heap && ev->flags == 0 &&
        (ev->type == HT_EVENT_HEAP_ALLOC || ev->type == HT_EVENT_HEAP_FREE))
        atomic_fetch_add(&g_child_events, 1);
}

/* A thread of the child: its first call makes its per-thread state (the registry lock), then
 * it works every heap, the inherited ones and the child's own. */
static void *child_thread(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    for (int n = 0; n < CHILD_OPS; n++) {
        seed = seed * 1103515245u + 12345u;
        ht_heap *h = g_heaps[(seed >> 20) % 3];
        void *p = ht_heap_alloc(h, 0, (seed >> 4) % 3000);
        void *q = ht_heap_alloc(g_child_heap, 0, (seed >> 8) % 700);
        if (p == NULL || q == NULL || !ht_heap_free(h, 0, p) || !ht_heap_free(g_child_heap, 0, q))
            return (void *)1;
    }
    return NULL;
}

/* The child's threads run on stacks of their own: glibc hands a child the stacks (and so the
 * thread ids) of its parent's other threads again, which TSan, still knowing those threads,
 * refuses ("dup thread"). */
#define CHILD_STACK ((size_t)2 << 20)

static int child_threads_run(void)
{
    pthread_t t[CHILD_THREADS];
    void *stacks[CHILD_THREADS];
    for (uintptr_t i = 0; i < CHILD_THREADS; i++) {
        stacks[i] =
            mmap(NULL, CHILD_STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        pthread_attr_t a;
        if (stacks[i] == MAP_FAILED || pthread_attr_init(&a) != 0 ||
            pthread_attr_setstack(&a, stacks[i], CHILD_STACK) != 0 ||
            pthread_create(&t[i], &a, child_thread, (void *)(i + 7)) != 0)
            return 10;
        pthread_attr_destroy(&a);
    }
    int rc = 0;
    for (int i = 0; i < CHILD_THREADS; i++) {
        void *r = NULL;
        pthread_join(t[i], &r);
        munmap(stacks[i], CHILD_STACK);
        if (r != NULL)
            rc = 11;
    }
    return rc;
}

/* The child of a parent that traces to a file while two threads churn: it lets the inherited
 * session go, starts threads (untraced), then traces them with a consumer of its own. */
static int child_threads_work(bool parent_traced)
{
    if (parent_traced && ht_trace_stop() != 0)
        return 20; /* the parent's session, as this child sees it */
    g_child_heap = ht_heap_create(0, 0, 0);
    if (g_child_heap == NULL)
        return 21;
    int rc = child_threads_run();
    if (rc != 0)
        return rc;
    ht_trace_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.consumer = count_events;
    if (ht_trace_start(&cfg) != 0)
        return 22;
    rc = child_threads_run();
    if (ht_trace_stop() != 0)
        return 23;
    if (rc != 0)
        return rc;
    if (atomic_load(&g_child_events) != 2u * CHILD_THREADS * CHILD_OPS)
        return 24;
    for (int i = 0; i < 3; i++)
        if (!ht_heap_validate(g_heaps[i], 0, NULL))
            return 25;
    if (!ht_heap_destroy(g_child_heap))
        return 26;
    return child_work();
}

/* loaded: the parent traces to a file and two threads churn while it forks; else it forks
 * alone, untraced (TSan supports threads in the child of a single-threaded parent only). */
static void fork_children_start_threads(bool loaded)
{
    g_heaps[0] = ht_process_heap();
    g_heaps[1] = ht_heap_create(0, 0, 0);
    g_heaps[2] = ht_heap_create(HT_HEAP_ENABLE_LFH, 0, 0);
    REQUIRE(g_heaps[1] != NULL && g_heaps[2] != NULL);
    char path[256];
    snprintf(path, sizeof path, "/tmp/ht-fork-%d.trace", (int)getpid());
    unlink(path);
    ht_trace_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.path = path;
    atomic_store(&g_stop, 0);
    pthread_t t[2];
    if (loaded) {
        REQUIRE(ht_trace_start(&cfg) == 0);
        for (uintptr_t i = 0; i < 2; i++)
            REQUIRE(pthread_create(&t[i], NULL, churn, (void *)(i + 1)) == 0);
    }
    int bad = 0, hung = 0;
    for (int round = 0; round < 12; round++) {
        pid_t pid = fork();
        if (pid == 0) {
            alarm(20); /* a deadlock shows as SIGALRM, not a hung test */
            _exit(child_threads_work(loaded));
        }
        REQUIRE(pid > 0);
        int status = 0;
        waitpid(pid, &status, 0);
        if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM) {
            hung++;
            break;
        } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "child: %s %d\n", WIFEXITED(status) ? "exit" : "signal",
                    WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
            bad++;
        }
        usleep(2000);
    }
    atomic_store(&g_stop, 1);
    if (loaded) {
        for (int i = 0; i < 2; i++)
            pthread_join(t[i], NULL);
        CHECK_EQ_U(ht_trace_stop(), 0);
        unlink(path);
    }
    CHECK_EQ_U(hung, 0);
    CHECK_EQ_U(bad, 0);
    for (int i = 0; i < 3; i++)
        CHECK(ht_heap_validate(g_heaps[i], 0, NULL));
    CHECK(ht_heap_destroy(g_heaps[1]));
    CHECK(ht_heap_destroy(g_heaps[2]));
}

static void fork_under_load(void)
{
    g_heaps[0] = ht_process_heap();
    g_heaps[1] = ht_heap_create(0, 0, 0);
    g_heaps[2] = ht_heap_create(HT_HEAP_ENABLE_LFH, 0, 0);
    REQUIRE(g_heaps[1] != NULL && g_heaps[2] != NULL);
    pthread_t t[3];
    for (uintptr_t i = 0; i < 2; i++)
        REQUIRE(pthread_create(&t[i], NULL, churn, (void *)(i + 1)) == 0);
    REQUIRE(pthread_create(&t[2], NULL, spawner, NULL) == 0);
    int bad = 0, hung = 0;
    for (int round = 0; round < 40; round++) {
        pid_t pid = fork();
        if (pid == 0) {
            alarm(5); /* a deadlock shows as SIGALRM, not a hung test */
            _exit(child_work());
        }
        REQUIRE(pid > 0);
        int status = 0;
        waitpid(pid, &status, 0);
        if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM) {
            hung++;
            break; /* one deadlock is enough to fail */
        } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            bad++;
        usleep(2000);
    }
    atomic_store(&g_stop, 1);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    CHECK_EQ_U(hung, 0);
    CHECK_EQ_U(bad, 0);
    for (int i = 0; i < 3; i++)
        CHECK(ht_heap_validate(g_heaps[i], 0, NULL));
    CHECK(ht_heap_destroy(g_heaps[1]));
    CHECK(ht_heap_destroy(g_heaps[2]));
}

static void fork_child_starts_threads(void)
{
    fork_children_start_threads(false);
}

static void fork_child_starts_threads_loaded(void)
{
    fork_children_start_threads(true);
}

TEST_MAIN(TEST(fork_under_load), TEST(fork_child_starts_threads),
          TEST(fork_child_starts_threads_loaded))
