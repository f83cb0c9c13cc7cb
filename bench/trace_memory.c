/* trace_memory.c — what the recorder's thread buffers cost in memory: T threads (default 64)
 * each make heap calls at a moderate rate (bursts of 500 ALLOC+FREE pairs every 10 ms, about
 * 100,000 events/s per thread) while a session records to a file; the process's resident
 * set is read before the threads start and after they have run for S seconds (default 2),
 * and again after they were joined. Prints one line of key=value fields:
 *
 *   trace_memory threads=64 seconds=2 rss_live_kib=… per_thread_kib=… rss_joined_kib=…
 *                events=… lost=…
 *
 *   bench_trace_memory [--threads T] [--seconds S] [--file PATH]
 *
 * The file defaults to a fresh name under $TMPDIR (removed afterwards). Exit 0, 1 on failure,
 * 2 on bad usage. */
#include <heaptrail.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int g_stop;

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, res = 0;
    if (f == NULL)
        return -1;
    if (fscanf(f, "%ld %ld", &size, &res) != 2)
        res = -1;
    fclose(f);
    return res < 0 ? -1 : res * (sysconf(_SC_PAGESIZE) / 1024);
}

static void *worker(void *arg)
{
    (void)arg;
    ht_heap *h = ht_process_heap();
    void *keep[64] = {0};
    while (!atomic_load(&g_stop)) {
        for (int i = 0; i < 500; i++) {
            int k = i & 63;
            if (keep[k] != NULL)
                ht_heap_free(h, 0, keep[k]);
            keep[k] = ht_heap_alloc(h, 0, 16 + (size_t)(i % 200));
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    for (int k = 0; k < 64; k++)
        if (keep[k] != NULL)
            ht_heap_free(h, 0, keep[k]);
    return NULL;
}

static int usage(void)
{
    fprintf(stderr, "usage: bench_trace_memory [--threads T] [--seconds S] [--file PATH]\n");
    return 2;
}

int main(int argc, char **argv)
{
    long threads = 64, seconds = 2;
    const char *file = NULL;
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--threads") == 0)
            threads = strtol(argv[++i], NULL, 10);
        else if (i + 1 < argc && strcmp(argv[i], "--seconds") == 0)
            seconds = strtol(argv[++i], NULL, 10);
        else if (i + 1 < argc && strcmp(argv[i], "--file") == 0)
            file = argv[++i];
        else
            return usage();
    }
    if (threads < 1 || threads > 4096 || seconds < 1 || seconds > 600)
        return usage();
    char path[4096];
    if (file == NULL) {
        const char *tmp = getenv("TMPDIR");
        snprintf(path, sizeof path, "%s/ht-trace-memory-%d.trace", tmp != NULL ? tmp : "/tmp",
                 (int)getpid());
        file = path;
    }
    ht_trace_config c = {0};
    c.path = file;
    c.flags = HT_TRACE_NO_RUNDOWN;
    int rc = ht_trace_start(&c);
    if (rc != 0) {
        fprintf(stderr, "bench_trace_memory: ht_trace_start(%s): %s\n", file, strerror(-rc));
        return 1;
    }
    long r0 = rss_kib();
    pthread_t *t = calloc((size_t)threads, sizeof *t);
    if (t == NULL)
        return 1;
    for (long i = 0; i < threads; i++)
        if (pthread_create(&t[i], NULL, worker, NULL) != 0) {
            fprintf(stderr, "bench_trace_memory: pthread_create failed\n");
            return 1;
        }
    sleep((unsigned)seconds);
    long r1 = rss_kib();
    atomic_store(&g_stop, 1);
    for (long i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    long r2 = rss_kib();
    ht_trace_stats st;
    memset(&st, 0, sizeof st);
    (void)ht_trace_get_stats(&st);
    rc = ht_trace_stop();
    if (file == path)
        unlink(path);
    free(t);
    if (rc != 0 || r0 < 0 || r1 < 0 || r2 < 0) {
        fprintf(stderr, "bench_trace_memory: stop %d, rss %ld %ld %ld\n", rc, r0, r1, r2);
        return 1;
    }
    printf("trace_memory threads=%ld seconds=%ld rss_live_kib=%ld per_thread_kib=%ld "
           "rss_joined_kib=%ld events=%llu lost=%llu\n",
           threads, seconds, r1 - r0, (r1 - r0) / threads, r2 - r0, (unsigned long long)st.n_events,
           (unsigned long long)st.n_lost);
    return 0;
}
