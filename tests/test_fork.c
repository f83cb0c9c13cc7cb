/* test_fork.c — fork while other threads work the heaps and threads come and go: the child
 * must find no lock held (it allocates, frees and validates every heap), and the parent goes
 * on unharmed. */
#include "harness.h"

#include <heaptrail.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
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

TEST_MAIN(TEST(fork_under_load))
