/* bench_trace.c — what tracing to a file costs per event: a one-thread churn loop on a private
 * heap (free a random slot, allocate 16..256 B into it: two events per operation), untraced
 * and traced to a file without stacks (BLOCK: nothing dropped; DROP: the default), in
 * interleaved rounds; prints ns/event, overhead and slowdown against untraced, bytes/event
 * on disk, the writer thread's CPU time, and events lost. With --stacks N, one more mode:
 * traced (BLOCK) with N-frame stacks, through the unwinder --unwind names (fp, dwarf; default
 * auto), set as HEAPTRAIL_UNWIND.
 *
 *   bench_trace [--stacks N] [--unwind fp|dwarf] [OPS [ROUNDS [DIR]]]
 *                                         defaults: 5000000 operations, 3 rounds, /tmp
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

static unsigned g_stacks; /* --stacks */

/* mode 0: untraced; 1: file, BLOCK; 2: file, DROP; 3: file, BLOCK, stacks. */
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
        cfg.loss_policy = mode == 2 ? HT_TRACE_LOSS_DROP : HT_TRACE_LOSS_BLOCK;
        cfg.stack_depth = mode == 3 ? g_stacks : 0;
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
    const char *pos[3] = {NULL, NULL, NULL};
    int n_pos = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--stacks") == 0 && i + 1 < argc) {
            g_stacks = (unsigned)atoi(argv[++i]);
        } else if (strcmp(argv[i], "--unwind") == 0 && i + 1 < argc) {
            setenv("HEAPTRAIL_UNWIND", argv[++i], 1);
        } else if (n_pos < 3 && argv[i][0] != '-') {
            pos[n_pos++] = argv[i];
        } else {
            n_pos = -1;
            break;
        }
    }
    uint64_t ops = pos[0] != NULL ? strtoull(pos[0], NULL, 10) : 5000000;
    int rounds = pos[1] != NULL ? atoi(pos[1]) : 3;
    const char *dir = pos[2] != NULL ? pos[2] : "/tmp";
    if (n_pos < 0 || ops == 0 || rounds <= 0 || rounds > 50) {
        fprintf(stderr,
                "usage: bench_trace [--stacks N] [--unwind fp|dwarf] [OPS [ROUNDS [DIR]]]\n");
        return 2;
    }
    const char *unwind = getenv("HEAPTRAIL_UNWIND");
    char stacks_name[40];
    snprintf(stacks_name, sizeof stacks_name, "stacks %u %s", g_stacks,
             unwind != NULL ? unwind : "auto");
    const char *const names[4] = {"untraced", "file, BLOCK", "file, DROP", stacks_name};
    int n_modes = g_stacks != 0 ? 4 : 3;
    double ns[4][50];
    result last[4];
    for (int r = 0; r < rounds; r++) {
        for (int m = 0; m < n_modes; m++) {
            if (run(m, ops, dir, r, &last[m]) != 0)
                return 1;
            ns[m][r] = last[m].ns_per_event;
        }
    }
    double med[4];
    for (int m = 0; m < n_modes; m++) {
        qsort(ns[m], (size_t)rounds, sizeof(double), cmp_double);
        med[m] = ns[m][rounds / 2];
    }
    printf("bench_trace: %" PRIu64 " ops (%" PRIu64 " events) per run, %d rounds, medians\n", ops,
           2 * ops, rounds);
    printf("%-16s %10s %12s %9s %11s %14s %10s\n", "mode", "ns/event", "overhead ns", "slowdown",
           "bytes/event", "writer cpu ms", "lost");
    for (int m = 0; m < n_modes; m++) {
        printf("%-16s %10.2f %12.2f %8.2fx", names[m], med[m], med[m] - med[0], med[m] / med[0]);
        if (m == 0)
            printf(" %11s %14s %10s\n", "-", "-", "-");
        else
            printf(" %11.2f %14.1f %10" PRIu64 "\n", last[m].bytes_per_event, last[m].writer_cpu_ms,
                   last[m].n_lost);
    }
    return 0;
}
