/* bench_reader.c — reader throughput: builds a synthetic trace (realistic alloc/free stream,
 * --threads T threads, 4 by default, whose chunks interleave: CHUNK bytes at most, 64 KiB by
 * default, and at most 8192 events, the batch the encoder is given; no stacks) in memory with
 * the real encoder, then
 * times full ht_reader passes: from memory through ht_reader_next (mode=memory) and through
 * ht_reader_next_batch (mode=memory-batch), and from a file. Prints one key=value line per mode.
 *   bench_reader [--events N] [--threads T] [--keep FILE]   (CHUNK=bytes: chunk size, 65536)
 * Default 20,000,000 events. Measures; asserts nothing beyond the event count. */
#include "trace_build.h"

#include <heaptrail/reader.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#define BATCH_MAX 512 /* events per ht_reader_next_batch call */

static int run(const char *mode, ht_reader *r, size_t want, size_t bytes, double t_open)
{
    double t0 = now_s(), c0 = cpu_s();
    uint64_t n = 0, sum = 0;
    if (strstr(mode, "batch") != NULL) {
        const ht_reader_event *evs[BATCH_MAX];
        size_t k;
        while ((k = ht_reader_next_batch(r, evs, BATCH_MAX)) > 0) {
            for (size_t i = 0; i < k; i++)
                sum += evs[i]->event.heap_handle;
            n += k;
        }
    } else {
        ht_reader_event ev;
        while (ht_reader_next(r, &ev)) {
            sum += ev.event.heap_handle;
            n++;
        }
    }
    double dt = now_s() - t0, dc = cpu_s() - c0;
    printf("reader mode=%s events=%llu bytes=%zu open_s=%.3f read_s=%.3f events_per_s=%.1fM "
           "cpu_events_per_s=%.1fM total_events_per_s=%.1fM status=%s check=%llu\n",
           mode, (unsigned long long)n, bytes, t_open, dt, (double)n / dt / 1e6,
           (double)n / dc / 1e6, (double)n / (dt + t_open) / 1e6,
           ht_reader_status_name[ht_reader_status(r, NULL, NULL)],
           (unsigned long long)(sum & 0xFFFF));
    ht_reader_close(r);
    return n == want ? 0 : 1;
}

int main(int argc, char **argv)
{
    size_t n_events = 20000000;
    int n_threads = 4;
    const char *keep = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--events") == 0)
            n_events = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--threads") == 0)
            n_threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--keep") == 0)
            keep = argv[i + 1];
        else {
            fprintf(stderr, "usage: bench_reader [--events N] [--threads T] [--keep FILE]\n");
            return 2;
        }
    }
    if (n_threads < 1 || n_threads > 64 || n_events < (size_t)n_threads)
        return 2;
    size_t per = n_events / (size_t)n_threads, batch = 8192;
    n_events = per * (size_t)n_threads;
    ht_event *ev = calloc(batch, sizeof *ev);
    if (ev == NULL)
        return 1;
    tb_trace t;
    tb_init(&t, 1, "bench", 5, 0, 0);
    ht_enc_stream s[64];
    double t0 = now_s();
    for (int th = 0; th < n_threads; th++) {
        s[th] = (ht_enc_stream){.tid = 100 + (uint32_t)th, .next_seq = 1};
    }
    /* Each thread's stream is generated batch by batch and the batches are written round
     * robin, so chunks interleave in the file as a writer thread would flush them. */
    uint64_t last_ts[64];
    for (int th = 0; th < n_threads; th++)
        last_ts[th] = 1000000;
    for (size_t at = 0; at < per; at += batch) {
        size_t k = at + batch <= per ? batch : per - at;
        for (int th = 0; th < n_threads; th++) {
            tb_realistic(ev, k, s[th].tid, 1 + (uint64_t)th * 1000003 + at, last_ts[th],
                         0x7f0000001000ull);
            for (size_t i = 0; i < k; i++)
                ev[i].sequence += at;
            last_ts[th] = ev[k - 1].timestamp_ns;
            tb_events(&t, &s[th], ev, NULL, k,
                      getenv("CHUNK") ? (size_t)atoi(getenv("CHUNK")) : 65536);
        }
    }
    tb_end(&t, 0, NULL, 0);
    double t_enc = now_s() - t0;
    printf("encode events=%zu bytes=%zu bytes_per_event=%.2f encode_s=%.3f (incl. generation)\n",
           n_events, t.size, (double)t.size / (double)n_events, t_enc);
    free(ev);

    int rc = 0;
    ht_reader *r;
    t0 = now_s();
    if (ht_reader_open_memory(t.data, t.size, &r) != HT_READER_OK)
        return 1;
    rc |= run("memory", r, n_events, t.size, now_s() - t0);
    t0 = now_s();
    if (ht_reader_open_memory(t.data, t.size, &r) != HT_READER_OK)
        return 1;
    rc |= run("memory-batch", r, n_events, t.size, now_s() - t0);

    char path[] = "/tmp/ht_bench_reader_XXXXXX";
    const char *file = keep;
    int fd = keep ? -1 : mkstemp(path);
    if (!keep)
        file = path;
    FILE *f = keep ? fopen(keep, "wb") : fdopen(fd, "wb");
    if (f == NULL || fwrite(t.data, 1, t.size, f) != t.size || fclose(f) != 0)
        return 1;
    t0 = now_s();
    if (ht_reader_open(file, &r) != HT_READER_OK)
        return 1;
    rc |= run("file", r, n_events, t.size, now_s() - t0);
    if (!keep)
        unlink(path);
    tb_free(&t);
    return rc;
}
