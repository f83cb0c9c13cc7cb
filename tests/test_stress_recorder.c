/* test_stress_recorder.c — the recorder under load: several threads churn the heaps for a few
 * million events (HEAPTRAIL_STRESS_BIG=1: tens of millions) while a per-thread consumer keeps
 * the count and an order-independent hash of every event; the file read back must match
 * per thread (BLOCK), or account for every missing event as lost (DROP). Threads start and
 * exit during the session, so exit flushes and stop flushes are both exercised. */
#include "harness.h"
#include "recorder_util.h"

#include <stdatomic.h>

#define MAX_TIDS 64

typedef struct tid_sum {
    uint32_t tid;
    uint64_t n, hash;
} tid_sum;

static tid_sum g_truth[MAX_TIDS];
static atomic_int g_n_truth;
static __thread tid_sum *t_sum;

static void hashing_consumer(const ht_event *e, void *ctx)
{
    (void)ctx;
    if (t_sum == NULL) {
        t_sum = &g_truth[atomic_fetch_add(&g_n_truth, 1) % MAX_TIDS];
        t_sum->tid = e->tid;
    }
    t_sum->n++;
    t_sum->hash += ru_event_hash(e);
}

static void *churn(void *p)
{
    uint64_t n_ops = (uint64_t)(uintptr_t)p;
    ht_heap *h = ht_heap_create(0, 0, 0);
    void *slots[256] = {0};
    unsigned s = (unsigned)(uintptr_t)&slots;
    for (uint64_t i = 0; i < n_ops; i++) {
        s = s * 1103515245u + 12345u;
        unsigned k = (s >> 8) % 256;
        ht_heap *heap = (s >> 20) & 1 ? h : ht_process_heap();
        if (slots[k] != NULL) {
            ht_heap_free(ht_process_heap(), 0, slots[k]);
            slots[k] = NULL;
        }
        if ((s >> 21) % 8 == 0) {
            void *q = ht_heap_alloc(heap, 0, (s >> 4) % 4000);
            q = ht_heap_realloc(heap, 0, q, (s >> 12) % 9000);
            ht_heap_free(heap, 0, q);
        } else {
            slots[k] = ht_heap_alloc(ht_process_heap(), 0, (s >> 4) % 3000);
        }
    }
    for (int i = 0; i < 256; i++)
        ht_heap_free(ht_process_heap(), 0, slots[i]);
    ht_heap_destroy(h);
    return NULL;
}

static void run(unsigned policy, const char *name)
{
    bool big = getenv("HEAPTRAIL_STRESS_BIG") != NULL;
    uint64_t ops_per_thread = big ? 6000000 : 300000; /* ~2.4 events per op */
    char path[256];
    ru_path(path, sizeof path, name);
    memset(g_truth, 0, sizeof g_truth);
    atomic_store(&g_n_truth, 0);
    ht_trace_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.path = path;
    cfg.consumer = hashing_consumer;
    cfg.loss_policy = policy;
    cfg.flags = HT_TRACE_NO_RUNDOWN;
    REQUIRE(ht_trace_start(&cfg) == 0);
    /* Two waves: the first wave's threads exit (and flush) while the second runs. */
    pthread_t th[6];
    for (int i = 0; i < 3; i++)
        pthread_create(&th[i], NULL, churn, (void *)(uintptr_t)ops_per_thread);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    for (int i = 3; i < 6; i++)
        pthread_create(&th[i], NULL, churn, (void *)(uintptr_t)ops_per_thread);
    for (int i = 3; i < 6; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ_U(ht_trace_stop(), 0);
    ht_trace_stats st;
    ht_trace_get_stats(&st);

    /* Streamed, never held: per-tid counts and hashes of what the file gives back. */
    tid_sum got[MAX_TIDS];
    memset(got, 0, sizeof got);
    ht_reader *r = NULL;
    REQUIRE(ht_reader_open(path, &r) == HT_READER_OK);
    ht_reader_event re;
    uint64_t n_read = 0;
    while (ht_reader_next(r, &re)) {
        n_read++;
        int k = 0;
        while (k < MAX_TIDS && got[k].tid != re.event.tid && got[k].tid != 0)
            k++;
        if (k == MAX_TIDS)
            continue;
        got[k].tid = re.event.tid;
        got[k].n++;
        got[k].hash += ru_event_hash(&re.event);
    }
    ht_reader_trace_info info;
    ht_reader_info(r, &info);
    CHECK_EQ_U(ht_reader_status(r, NULL, NULL), HT_READER_OK);
    ht_reader_close(r);
    CHECK(info.complete);
    uint64_t produced = 0;
    int n_truth = atomic_load(&g_n_truth);
    for (int i = 0; i < n_truth; i++)
        produced += g_truth[i].n;
    printf("     %s: %" PRIu64 " events, %" PRIu64 " lost, %.2f bytes/event\n", name, produced,
           st.n_lost, (double)st.file_size / (double)(st.n_events ? st.n_events : 1));
    CHECK_EQ_U(n_read + info.n_lost, produced);
    CHECK_EQ_U(info.n_lost, st.n_lost);
    CHECK_EQ_U(n_read, st.n_events);
    if (policy == HT_TRACE_LOSS_BLOCK) {
        CHECK_EQ_U(st.n_lost, 0);
        for (int i = 0; i < n_truth; i++) {
            int k = 0;
            while (k < MAX_TIDS && got[k].tid != g_truth[i].tid)
                k++;
            REQUIRE(k < MAX_TIDS);
            CHECK_EQ_U(got[k].n, g_truth[i].n);
            CHECK_EQ_U(got[k].hash, g_truth[i].hash);
        }
    }
    unlink(path);
}

static void stress_block(void)
{
    run(HT_TRACE_LOSS_BLOCK, "stress-block");
}

static void stress_drop(void)
{
    run(HT_TRACE_LOSS_DROP, "stress-drop");
}

TEST_MAIN(TEST(stress_block), TEST(stress_drop))
