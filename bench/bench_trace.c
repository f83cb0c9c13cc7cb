/* bench_trace.c — what tracing to a file costs per event: a one-thread churn loop on a private
 * heap (free a random slot, allocate 16..256 B into it: two events per operation), untraced
 * and traced to a file without stacks (BLOCK: nothing dropped; DROP: the default), in
 * interleaved rounds; prints ns/event, overhead and slowdown against untraced, bytes/event
 * on disk, the writer thread's CPU time, and events lost.
 *
 *   bench_trace [OPS [ROUNDS [DIR]]]      defaults: 5000000 operations, 3 rounds, /tmp
 * Report on stdout; exit 0, or 1 when a run fails. Writes and removes DIR/ht-bench-*.trace. */
#include <heaptrail.h>

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define N_SLOTS 4096

typedef struct result {
    double ns_per_event;
    double bytes_per_event;
    double writer_cpu_ms;
    uint64_t n_lost;
    uint64_t n_events;
} result;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* mode 0: untraced; 1: file, BLOCK; 2: file, DROP. */
static int run(int mode, uint64_t ops, const char *dir, int round, result *out)
{
    ht_heap *h = ht_heap_create(0, 0, 0);
    void **slots = calloc(N_SLOTS, sizeof *slots);
    if (h == NULL || slots == NULL)
        return -1;
    uint32_t s = 12345;
    for (int i = 0; i < N_SLOTS; i++) /* warm: the live set exists before timing */
        slots[i] = ht_heap_alloc(h, 0, 16 + (size_t)(i % 241));
    char path[512];
    snprintf(path, sizeof path, "%s/ht-bench-%d-%d-%d.trace", dir, (int)getpid(), mode, round);
    unlink(path);
    if (mode != 0) {
        ht_trace_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.path = path;
        cfg.flags = HT_TRACE_NO_RUNDOWN;
        cfg.loss_policy = mode == 1 ? HT_TRACE_LOSS_BLOCK : HT_TRACE_LOSS_DROP;
        int rc = ht_trace_start(&cfg);
        if (rc != 0) {
            fprintf(stderr, "bench_trace: ht_trace_start(%s): %s\n", path, strerror(-rc));
            return -1;
        }
    }
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < ops; i++) {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        uint32_t k = s % N_SLOTS;
        ht_heap_free(h, 0, slots[k]);
        slots[k] = ht_heap_alloc(h, 0, 16 + (s >> 16) % 241);
    }
    uint64_t t1 = now_ns();
    memset(out, 0, sizeof *out);
    out->n_events = 2 * ops;
    if (mode != 0) {
        if (ht_trace_stop() != 0)
            return -1;
        ht_trace_stats st;
        ht_trace_get_stats(&st);
        out->bytes_per_event = (double)st.file_size / (double)(st.n_events ? st.n_events : 1);
        out->writer_cpu_ms = (double)st.writer_cpu_ns / 1e6;
        out->n_lost = st.n_lost;
        unlink(path);
    }
    out->ns_per_event = (double)(t1 - t0) / (double)out->n_events;
    for (int i = 0; i < N_SLOTS; i++)
        ht_heap_free(h, 0, slots[i]);
    free(slots);
    ht_heap_destroy(h);
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    uint64_t ops = argc > 1 ? strtoull(argv[1], NULL, 10) : 5000000;
    int rounds = argc > 2 ? atoi(argv[2]) : 3;
    const char *dir = argc > 3 ? argv[3] : "/tmp";
    if (ops == 0 || rounds <= 0 || rounds > 50) {
        fprintf(stderr, "usage: bench_trace [OPS [ROUNDS [DIR]]]\n");
        return 2;
    }
    static const char *const names[3] = {"untraced", "file, BLOCK", "file, DROP"};
    double ns[3][50];
    result last[3];
    for (int r = 0; r < rounds; r++) {
        for (int m = 0; m < 3; m++) {
            if (run(m, ops, dir, r, &last[m]) != 0)
                return 1;
            ns[m][r] = last[m].ns_per_event;
        }
    }
    double med[3];
    for (int m = 0; m < 3; m++) {
        qsort(ns[m], (size_t)rounds, sizeof(double), cmp_double);
        med[m] = ns[m][rounds / 2];
    }
    printf("bench_trace: %" PRIu64 " ops (%" PRIu64 " events) per run, %d rounds, medians\n", ops,
           2 * ops, rounds);
    printf("%-12s %10s %12s %9s %11s %14s %10s\n", "mode", "ns/event", "overhead ns", "slowdown",
           "bytes/event", "writer cpu ms", "lost");
    for (int m = 0; m < 3; m++) {
        printf("%-12s %10.2f %12.2f %8.2fx", names[m], med[m], med[m] - med[0], med[m] / med[0]);
        if (m == 0)
            printf(" %11s %14s %10s\n", "-", "-", "-");
        else
            printf(" %11.2f %14.1f %10" PRIu64 "\n", last[m].bytes_per_event, last[m].writer_cpu_ms,
                   last[m].n_lost);
    }
    return 0;
}
