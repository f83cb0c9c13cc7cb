/* test_recorder_memory.c — a thread buffer's memory follows what the thread has waiting, not
 * the size of its ring: a thread whose packets the writer keeps up with touches one or two of
 * its 32 packets however many it fills, and a thread that exits gives its packets' pages back
 * to the OS (those free at once, those in flight when the writer has written them), not only
 * when the session stops. Resident pages are counted with mincore(2) over the buffer's
 * packets (src/trace/buffer.c, packet_take and buf_release_free). */
#include "harness.h"

#include "tbuf_resident.h"
#include "trace/internal.h"

#include <heaptrail.h>

#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <unistd.h>

static char g_path[256];

/* Waits (up to ~5 s) until the writer has taken every packet b sealed. */
static bool drained(ht_tbuf *b)
{
    for (int i = 0; i < 5000; i++) {
        if (atomic_load(&b->tail) == atomic_load(&b->head) && atomic_load(&b->draining) == 0)
            return true;
        usleep(1000);
    }
    return false;
}

/* About n packets' worth of ALLOC+FREE pairs on the process heap. */
static void fill(unsigned n, bool paced)
{
    ht_heap *h = ht_process_heap();
    size_t pairs = ht__rec.slots_per_packet / 2;
    for (unsigned k = 0; k < n; k++) {
        for (size_t i = 0; i < pairs; i++) {
            void *p = ht_heap_alloc(h, 0, 32);
            ht_heap_free(h, 0, p);
        }
        if (paced)
            REQUIRE(drained(ht__t_buf));
    }
}

static void start(void)
{
    snprintf(g_path, sizeof g_path, "/tmp/ht-test-memory-%d.trace", (int)getpid());
    unlink(g_path);
    ht_trace_config c = {0};
    c.path = g_path;
    c.flags = HT_TRACE_NO_RUNDOWN;
    c.loss_policy = HT_TRACE_LOSS_BLOCK;
    c.n_buffers = 32;
    REQUIRE(ht_trace_start(&c) == 0);
}

static void stop(void)
{
    ht_trace_stats st;
    REQUIRE(ht_trace_get_stats(&st) == 0);
    CHECK_EQ_U(st.n_lost, 0);
    REQUIRE(ht_trace_stop() == 0);
    unlink(g_path);
}

/* 48 packets, each taken by the writer before the next is filled: the lowest free packet is
 * taken each time, so two packets at most were ever touched (a ring that moved on through
 * its positions would have touched all 32). */
static void live_thread_touches_what_waits(void)
{
    start();
    fill(1, false);
    ht_tbuf *b = ht__t_buf;
    REQUIRE(b != NULL && b->packets != NULL);
    REQUIRE(drained(b));
    fill(48, true);
    unsigned n = tbuf_resident_packets(b->packets);
    printf("paced: 48 packets written, %u of %u packets resident\n", n, ht__rec.n_packets);
    CHECK(n <= 2);
    CHECK(atomic_load(&b->head) >= 48);
    stop();
}

typedef struct exit_run {
    ht_tbuf *b;
    bool paced;
} exit_run;

static void *exiting_thread(void *arg)
{
    exit_run *r = arg;
    fill(1, false);
    r->b = ht__t_buf;
    fill(r->paced ? 8 : 40, r->paced);
    return NULL;
}

/* Threads that fill 40 packets as fast as they can (several in flight when they exit) or 8
 * paced ones, then exit: once the writer has taken the rest, none of their packets is
 * resident. Before, an exited thread kept every packet it had cycled through (~2 MiB) until
 * the session stopped. */
static void exited_thread_gives_back(void)
{
    start();
    unsigned left = 0;
    for (int t = 0; t < 12; t++) {
        exit_run r = {NULL, t % 3 == 2};
        pthread_t th;
        REQUIRE(pthread_create(&th, NULL, exiting_thread, &r) == 0);
        REQUIRE(pthread_join(th, NULL) == 0);
        REQUIRE(r.b != NULL && r.b->packets != NULL);
        REQUIRE(drained(r.b));
        CHECK(atomic_load(&r.b->exited) != 0);
        left += tbuf_resident_packets(r.b->packets);
    }
    printf("12 exited threads: %u packets resident\n", left);
    CHECK_EQ_U(left, 0);
    stop();
}

TEST_MAIN(TEST(live_thread_touches_what_waits), TEST(exited_thread_gives_back))
