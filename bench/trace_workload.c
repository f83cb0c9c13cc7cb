/* trace_workload.c — one deterministic heap churn for every tracer row of bench/run_trace.sh:
 * the loop of bench_trace.c (4096 slots warmed with 16 + i % 241 B, then per operation an
 * xorshift32 step picks a slot, frees it and allocates 16..256 B into it: two events), run
 * either through malloc/free (for heaptrack and LTTng's libc wrapper, which interpose
 * malloc) or through ht_heap_alloc/ht_heap_free on the process heap, optionally recorded to a
 * file by heaptrail (with stacks of a given depth, frame-pointer or DWARF unwinding).
 *
 *   bench_trace_workload [--alloc malloc|ht] [--ops N] [--nest D] [--trace FILE
 *                        [--stacks DEPTH] [--unwind fp|dwarf|auto] [--loss block|drop]
 *                        [--stack-events LIST]]    (LIST as HEAPTRAIL_STACK_EVENTS)
 *   bench_trace_workload --verify FILE
 *
 * The churn runs at the bottom of a recursion D frames deep (default 16), so that a stack
 * of depth 16 is full for every tracer. Events per run: 2 * N + 2 * 4096 (warm-up
 * allocations, churn, final frees); a heaptrail session spans all of them. Prints one line of
 * key=value fields on stdout (`workload ...`: loop and run times, the recorder's counters, this
 * process's CPU time); --verify reads a trace back and prints
 * `verify events=… with_stack=… lost=… complete=…`. Exit 0, 1 on failure, 2 on bad usage.
 * Built with frame pointers (gcc) so that a frame-pointer walk reaches main. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-omit-frame-pointer")
#endif

#include <heaptrail.h>
#include <heaptrail/reader.h>

#include "trace/stack_events.h"

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define N_SLOTS      4096
#define KEEP_FRAME() __asm__ volatile("" ::: "memory")

typedef struct options {
    int use_ht;            /* 0: malloc/free; 1: ht_heap_alloc/ht_heap_free on the process heap */
    uint64_t ops;          /* churn operations (two events each) */
    unsigned nest;         /* frames of recursion above the churn loop */
    const char *trace;     /* heaptrail trace file, or NULL (ht only) */
    unsigned stacks;       /* stack depth per event; 0 = none */
    const char *unwind;    /* HEAPTRAIL_UNWIND for the session, or NULL */
    unsigned stack_events; /* ht_trace_config.stack_events; 0 = every event */
    unsigned loss;         /* HT_TRACE_LOSS_* */
} options;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The churn of bench_trace.c, through malloc or the process heap. Returns the loop's ns. */
__attribute__((noinline)) static uint64_t churn(const options *o, void **slots)
{
    ht_heap *h = ht_process_heap();
    uint32_t s = 12345;
    for (int i = 0; i < N_SLOTS; i++) {
        size_t size = 16 + (size_t)(i % 241);
        slots[i] = o->use_ht ? ht_heap_alloc(h, 0, size) : malloc(size);
    }
    uint64_t t0 = now_ns();
    if (o->use_ht) {
        for (uint64_t i = 0; i < o->ops; i++) {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            uint32_t k = s % N_SLOTS;
            ht_heap_free(h, 0, slots[k]);
            slots[k] = ht_heap_alloc(h, 0, 16 + (s >> 16) % 241);
        }
    } else {
        for (uint64_t i = 0; i < o->ops; i++) {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            uint32_t k = s % N_SLOTS;
            free(slots[k]);
            slots[k] = malloc(16 + (s >> 16) % 241);
        }
    }
    uint64_t t1 = now_ns();
    int failed = 0;
    for (int i = 0; i < N_SLOTS; i++) {
        failed |= slots[i] == NULL;
        if (o->use_ht)
            ht_heap_free(h, 0, slots[i]);
        else
            free(slots[i]);
    }
    return failed ? 0 : t1 - t0;
}

/* depth more frames (none inlined or tail-called away), then the churn. */
__attribute__((noinline)) static uint64_t nest(const options *o, void **slots, unsigned depth)
{
    KEEP_FRAME();
    uint64_t r = depth == 0 ? churn(o, slots) : nest(o, slots, depth - 1);
    KEEP_FRAME();
    return r;
}

static int verify(const char *path)
{
    ht_reader *rd;
    ht_reader_status_code st = ht_reader_open(path, &rd);
    if (st != HT_READER_OK) {
        fprintf(stderr, "trace_workload: %s: %s\n", path, ht_reader_status_name[st]);
        return 1;
    }
    uint64_t n = 0, n_stack = 0, max_frames = 0;
    ht_reader_event ev;
    while (ht_reader_next(rd, &ev)) {
        n++;
        if (ev.stack_id != 0) {
            const uint64_t *frames;
            size_t nf = 0;
            n_stack++;
            if (ht_reader_stack(rd, ev.stack_id, &frames, &nf) && nf > max_frames)
                max_frames = nf;
        }
    }
    ht_reader_trace_info info;
    ht_reader_info(rd, &info);
    printf("verify events=%" PRIu64 " with_stack=%" PRIu64 " max_frames=%" PRIu64 " lost=%" PRIu64
           " complete=%d\n",
           n, n_stack, max_frames, info.n_lost, info.complete ? 1 : 0);
    ht_reader_close(rd);
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: bench_trace_workload [--alloc malloc|ht] [--ops N] [--nest D]\n"
                    "         [--trace FILE [--stacks DEPTH] [--unwind fp|dwarf|auto]"
                    " [--loss block|drop]\n"
                    "         [--stack-events LIST]]\n"
                    "       bench_trace_workload --verify FILE\n");
    return 2;
}

int main(int argc, char **argv)
{
    options o = {.ops = 5000000, .nest = 16, .loss = HT_TRACE_LOSS_BLOCK};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL)
            return usage();
        i++;
        if (strcmp(a, "--verify") == 0)
            return verify(v);
        else if (strcmp(a, "--alloc") == 0 && (strcmp(v, "malloc") == 0 || strcmp(v, "ht") == 0))
            o.use_ht = strcmp(v, "ht") == 0;
        else if (strcmp(a, "--ops") == 0)
            o.ops = strtoull(v, NULL, 10);
        else if (strcmp(a, "--nest") == 0)
            o.nest = (unsigned)strtoul(v, NULL, 10);
        else if (strcmp(a, "--trace") == 0)
            o.trace = v;
        else if (strcmp(a, "--stacks") == 0)
            o.stacks = (unsigned)strtoul(v, NULL, 10);
        else if (strcmp(a, "--unwind") == 0)
            o.unwind = v;
        else if (strcmp(a, "--stack-events") == 0 && ht__stack_events_parse(v, &o.stack_events))
            ;
        else if (strcmp(a, "--loss") == 0 && (strcmp(v, "block") == 0 || strcmp(v, "drop") == 0))
            o.loss = strcmp(v, "block") == 0 ? HT_TRACE_LOSS_BLOCK : HT_TRACE_LOSS_DROP;
        else
            return usage();
    }
    if (o.ops == 0 || o.nest > 10000 || (o.trace != NULL && !o.use_ht) ||
        ((o.stacks != 0 || o.unwind != NULL) && o.trace == NULL))
        return usage();

    void **slots = calloc(N_SLOTS, sizeof *slots);
    if (slots == NULL)
        return 1;
    if (o.trace != NULL) {
        /* The recorder reads the unwinder's name from the environment at start. */
        if (o.unwind != NULL && setenv("HEAPTRAIL_UNWIND", o.unwind, 1) != 0)
            return 1;
        ht_trace_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.path = o.trace;
        cfg.flags = HT_TRACE_NO_RUNDOWN;
        cfg.loss_policy = o.loss;
        cfg.stack_depth = o.stacks;
        cfg.stack_events = o.stack_events;
        int rc = ht_trace_start(&cfg);
        if (rc != 0) {
            fprintf(stderr, "trace_workload: ht_trace_start(%s): %s\n", o.trace, strerror(-rc));
            return 1;
        }
    }
    uint64_t t0 = now_ns();
    uint64_t loop_ns = nest(&o, slots, o.nest);
    ht_trace_stats st;
    memset(&st, 0, sizeof st);
    if (o.trace != NULL) {
        int rc = ht_trace_stop();
        if (rc != 0) {
            fprintf(stderr, "trace_workload: ht_trace_stop: %s\n", strerror(-rc));
            return 1;
        }
        ht_trace_get_stats(&st);
    }
    uint64_t t1 = now_ns();
    free(slots);
    struct rusage ru; /* this process, writer thread included (not a tracer's helpers) */
    getrusage(RUSAGE_SELF, &ru);
    uint64_t self_cpu_ns =
        ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000u +
        ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000u;
    if (loop_ns == 0) {
        fprintf(stderr, "trace_workload: an allocation failed\n");
        return 1;
    }
    uint64_t events = 2 * o.ops + 2 * N_SLOTS;
    printf("workload alloc=%s ops=%" PRIu64 " events=%" PRIu64 " nest=%u loop_ns=%" PRIu64
           " run_ns=%" PRIu64 " loop_ns_per_event=%.2f traced=%d stacks=%u unwind=%s"
           " rec_events=%" PRIu64 " lost=%" PRIu64 " file_size=%" PRIu64 " writer_cpu_ns=%" PRIu64
           " self_cpu_ns=%" PRIu64 "\n",
           o.use_ht ? "ht" : "malloc", o.ops, events, o.nest, loop_ns, t1 - t0,
           (double)loop_ns / (double)(2 * o.ops), o.trace != NULL, o.stacks,
           o.unwind != NULL ? o.unwind : "-", st.n_events, st.n_lost, st.file_size,
           st.writer_cpu_ns, self_cpu_ns);
    return 0;
}
