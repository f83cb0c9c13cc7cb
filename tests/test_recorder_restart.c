/* test_recorder_restart.c — sessions started and stopped 60 times while other threads keep
 * making heap calls, exit, and make more from a later thread-exit destructor: every file
 * reads back whole (status ok, end summary), under DROP and BLOCK and rings of 2 to 4 small
 * packets. Under TSan it also checks that nothing the hot path reads while a session starts
 * or stops is written without synchronisation (stack_depth, fast_off, a stopped buffer's
 * pos/end). */
#include "harness.h"
#include "recorder_util.h"

#include <stdatomic.h>

static pthread_key_t g_key;
static atomic_int g_run;

static void late_dtor(void *arg)
{
    (void)arg;
    ht_heap *h = ht_process_heap();
    for (unsigned i = 0; i < 700; i++)
        ht_heap_free(h, 0, ht_heap_alloc(h, 0, 24 + i % 200));
}

static void *short_thread(void *p)
{
    (void)p;
    ht_heap *h = ht_process_heap();
    for (unsigned i = 0; i < 900; i++)
        ht_heap_free(h, 0, ht_heap_alloc(h, 0, 40));
    pthread_setspecific(g_key, h);
    return NULL;
}

static void *spawner(void *p)
{
    (void)p;
    while (atomic_load(&g_run)) {
        pthread_t th[3];
        for (int i = 0; i < 3; i++)
            pthread_create(&th[i], NULL, short_thread, NULL);
        for (int i = 0; i < 3; i++)
            pthread_join(th[i], NULL);
    }
    return NULL;
}

static void stop_race(void)
{
    char path[256];
    ht_trace_config c0 = {0};
    ru_path(path, sizeof path, "probe-stop0");
    c0.path = path;
    REQUIRE(ht_trace_start(&c0) == 0); /* the recorder's key first */
    REQUIRE(ht_trace_stop() == 0);
    unlink(path);
    REQUIRE(pthread_key_create(&g_key, late_dtor) == 0);
    atomic_store(&g_run, 1);
    pthread_t sp[2];
    for (int i = 0; i < 2; i++)
        REQUIRE(pthread_create(&sp[i], NULL, spawner, NULL) == 0);
    unsigned bad = 0;
    for (int round = 0; round < 60; round++) {
        ru_path(path, sizeof path, "probe-stop");
        ht_trace_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.path = path;
        cfg.flags = HT_TRACE_NO_RUNDOWN;
        cfg.buffer_size = 4096;
        cfg.n_buffers = 2 + (unsigned)round % 3;
        cfg.loss_policy = round % 2 ? HT_TRACE_LOSS_BLOCK : HT_TRACE_LOSS_DROP;
        REQUIRE(ht_trace_start(&cfg) == 0);
        usleep(3000 + (unsigned)round * 100);
        CHECK_EQ_U(ht_trace_stop(), 0);
        ru_file f;
        ru_file_read(path, &f);
        if (f.status != HT_READER_OK || !f.info.complete)
            bad++;
        ru_file_free(&f);
        unlink(path);
    }
    atomic_store(&g_run, 0);
    for (int i = 0; i < 2; i++)
        pthread_join(sp[i], NULL);
    CHECK_EQ_U(bad, 0);
}

TEST_MAIN(TEST(stop_race))
