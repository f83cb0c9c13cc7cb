/* test_recorder_exit_events.c — events a thread makes after the recorder's thread-exit
 * destructor ran (another pthread key's destructor that allocates and frees): they land in
 * the file exactly as an in-process consumer saw them (BLOCK: all of them; DROP: file + lost
 * = consumer), and the exited threads' packets go back to the OS but for at most one each
 * (the one such an event takes again), with rings of 2, 3 and 64 packets of 4 KiB, threads
 * exiting one after another or together (src/trace/buffer.c, buf_thread_exit and
 * packet_take). */
#include "harness.h"
#include "recorder_util.h"

#include "tbuf_resident.h"
#include "trace/internal.h"

#include <sys/mman.h>

static pthread_key_t g_key;
static unsigned g_pairs;

static void late_dtor(void *arg)
{
    ht_heap *h = arg;
    for (unsigned i = 0; i < g_pairs; i++) {
        void *p = ht_heap_alloc(h, 0, 24 + i % 200);
        ht_heap_free(h, 0, p);
    }
}

typedef struct targ {
    ht_heap *h;
    ht_tbuf *b;
} targ;

static void *thread_fn(void *p)
{
    targ *a = p;
    for (int i = 0; i < 300; i++)
        ht_heap_free(a->h, 0, ht_heap_alloc(a->h, 0, 40));
    a->b = ht__t_buf;
    pthread_setspecific(g_key, a->h);
    return NULL;
}

static void run(unsigned n_buffers, unsigned loss, unsigned pairs, int n_threads, bool concurrent)
{
    char path[256];
    ru_path(path, sizeof path, "probe-dtor");
    ru_truth t;
    ru_truth_init(&t);
    ht_trace_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.path = path;
    cfg.consumer = ru_truth_consumer;
    cfg.consumer_ctx = &t;
    cfg.flags = HT_TRACE_NO_RUNDOWN;
    cfg.buffer_size = 4096;
    cfg.n_buffers = n_buffers;
    cfg.loss_policy = loss;
    REQUIRE(ht_trace_start(&cfg) == 0);
    static bool key_made;
    if (!key_made) {
        REQUIRE(pthread_key_create(&g_key, late_dtor) == 0);
        key_made = true;
    }
    g_pairs = pairs;
    ht_heap *h = ht_heap_create(0, 0, 0);
    targ a[16];
    pthread_t th[16];
    unsigned resident = 0;
    for (int i = 0; i < n_threads; i++) {
        a[i].h = i % 2 ? h : ht_process_heap();
        REQUIRE(pthread_create(&th[i], NULL, thread_fn, &a[i]) == 0);
        if (!concurrent)
            pthread_join(th[i], NULL);
    }
    if (concurrent)
        for (int i = 0; i < n_threads; i++)
            pthread_join(th[i], NULL);
    usleep(50000);
    for (int i = 0; i < n_threads; i++)
        resident += tbuf_resident_packets(a[i].b->packets);
    ht_trace_stats st;
    ht_trace_get_stats(&st);
    printf("n_buffers %u loss %u pairs %u threads %d: %u packets resident after exit, lost %" PRIu64
           "\n",
           n_buffers, loss, pairs, n_threads, resident, st.n_lost);
    CHECK(resident <= (unsigned)n_threads);
    CHECK_EQ_U(ht_trace_stop(), 0);
    ru_file f;
    ru_file_read(path, &f);
    CHECK_EQ_U(f.status, HT_READER_OK);
    CHECK(f.info.complete);
    if (loss == HT_TRACE_LOSS_BLOCK) {
        CHECK_EQ_U(f.info.n_lost, 0);
        CHECK_EQ_U(f.n, t.n);
    }
    qsort(f.ev, f.n, sizeof *f.ev, ru_cmp_tid_seq);
    qsort(t.ev, t.n, sizeof *t.ev, ru_cmp_tid_seq);
    size_t bad = 0, j = 0;
    for (size_t i = 0; i < f.n; i++) {
        while (j < t.n && (t.ev[j].tid != f.ev[i].tid || t.ev[j].sequence < f.ev[i].sequence))
            j++;
        if (j == t.n || !ru_event_equal(&f.ev[i], &t.ev[j])) {
            if (bad++ < 5)
                fprintf(stderr, "file event %zu (tid %u seq %" PRIu64 ") not in truth\n", i,
                        f.ev[i].tid, f.ev[i].sequence);
            j = 0;
        }
    }
    CHECK_EQ_U(bad, 0);
    printf("  file %zu events, truth %zu, lost in file %" PRIu64 "\n", f.n, t.n, f.info.n_lost);
    if (loss == HT_TRACE_LOSS_DROP)
        CHECK_EQ_U(f.n + f.info.n_lost, t.n);
    ru_file_free(&f);
    ru_truth_free(&t);
    ht_heap_destroy(h);
    unlink(path);
}

static void exit_dtor_block(void)
{
    run(2, HT_TRACE_LOSS_BLOCK, 2000, 6, false);
    run(2, HT_TRACE_LOSS_BLOCK, 2000, 6, true);
    run(64, HT_TRACE_LOSS_BLOCK, 5000, 6, true);
    run(3, HT_TRACE_LOSS_BLOCK, 777, 12, true);
}

static void exit_dtor_drop(void)
{
    run(2, HT_TRACE_LOSS_DROP, 2000, 6, true);
    run(64, HT_TRACE_LOSS_DROP, 20000, 4, true);
}

TEST_MAIN(TEST(exit_dtor_block), TEST(exit_dtor_drop))
