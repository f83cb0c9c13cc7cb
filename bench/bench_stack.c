/* bench_stack.c — ns per stack capture for each unwinder (frame pointers, DWARF/libunwind) at
 * depths 8, 16 and 32, from the bottom of a recursion deeper than the depth asked:
 *   unwind   the unwinder alone (no interning)
 *   hit      capture + intern of a stack already in the table (the common case)
 *   new      interning alone of a stack never seen before (synthetic frames): a capture of a
 *            new stack costs about unwind + new
 * and the cost of a module-map poll when nothing changed.
 *   bench_bench_stack [--iters N]      (default 200000; best of 5 runs per cell)
 * Output: a table on stdout. Built with frame pointers. Exit 0, or 1 when an unwinder fails. */
#include "trace/stack.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define KEEP_FRAME() __asm__ volatile("" ::: "memory")
#define EXTRA_LEVELS 8u /* recursion deeper than the captured depth */
#define RUNS         5

typedef enum mode { MODE_UNWIND, MODE_HIT, MODE_NEW } mode;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static volatile uint64_t g_sink;

/* Times iters operations at the bottom of the recursion. */
__attribute__((noinline)) static uint64_t bottom(mode m, unsigned depth, unsigned iters)
{
    const ht_unwinder *u = ht__stack_unwinder();
    uint64_t frames[HT_STACK_MAX_DEPTH];
    uint64_t sum = 0, t0 = now_ns();
    for (unsigned i = 0; i < iters; i++) {
        if (m == MODE_UNWIND)
            sum += u->capture(frames, depth, 0);
        else
            sum += ht__stack_capture(depth, 0);
    }
    uint64_t t1 = now_ns();
    g_sink = sum;
    return t1 - t0;
}

__attribute__((noinline)) static uint64_t recurse(unsigned level, mode m, unsigned depth,
                                                  unsigned iters)
{
    uint64_t r = level == 0 ? bottom(m, depth, iters) : recurse(level - 1, m, depth, iters);
    KEEP_FRAME();
    return r;
}

/* Interning alone of stacks never seen before: synthetic frames, each set distinct. */
static double intern_new_ns(unsigned depth, unsigned iters)
{
    double best = 1e30;
    uint64_t frames[HT_STACK_MAX_DEPTH];
    for (unsigned i = 0; i < depth; i++)
        frames[i] = 0x400000u + 0x40u * i;
    for (int run = 0; run < RUNS; run++) {
        ht_stack_config config = {HT_UNWIND_FP, depth, 0, 0};
        if (ht__stack_init(&config) != 0)
            return -1;
        uint64_t sum = 0, t0 = now_ns();
        for (unsigned i = 0; i < iters; i++) {
            frames[i % depth] += 0x1000; /* a new stack each time */
            sum += ht__stack_intern(frames, depth);
        }
        uint64_t t1 = now_ns();
        g_sink = sum;
        ht__stack_fini();
        if ((double)(t1 - t0) / iters < best)
            best = (double)(t1 - t0) / iters;
    }
    return best;
}

static double cell_ns(ht_unwind_kind kind, mode m, unsigned depth, unsigned iters)
{
    if (m == MODE_NEW)
        return kind == HT_UNWIND_FP ? intern_new_ns(depth, iters) : -2;
    ht_stack_config config = {kind, depth, 0, 0};
    if (ht__stack_init(&config) != 0)
        return -1;
    double best = 1e30;
    for (int run = 0; run < RUNS; run++) {
        uint64_t ns = recurse(depth + EXTRA_LEVELS, m, depth, iters);
        if ((double)ns / iters < best)
            best = (double)ns / iters;
    }
    ht__stack_fini();
    return best;
}

static void module_ignore(ht_module_change change, const ht_module *m, void *ctx)
{
    (void)change;
    (void)m;
    (void)ctx;
}

int main(int argc, char **argv)
{
    unsigned iters = 200000;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--iters") == 0 && i + 1 < argc)
            iters = (unsigned)strtoul(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: %s [--iters N]\n", argv[0]);
            return 2;
        }
    }
    static const unsigned depths[] = {8, 16, 32};
    static const char *const mode_names[] = {"unwind", "hit", "new"};
    ht_unwind_kind kinds[2] = {HT_UNWIND_FP, HT_UNWIND_DWARF};
    int n_kinds = ht__unwind_have_dwarf() ? 2 : 1;
    int status = 0;
    printf("stack capture, ns per capture (best of %d runs, %u iterations)\n", RUNS, iters);
    printf("%-8s %-8s %10s %10s %10s\n", "unwinder", "what", "depth 8", "depth 16", "depth 32");
    for (int k = 0; k < n_kinds; k++) {
        for (int m = MODE_UNWIND; m <= MODE_NEW; m++) {
            if (m == MODE_NEW && kinds[k] != HT_UNWIND_FP)
                continue;
            printf("%-8s %-8s",
                   m == MODE_NEW              ? "-"
                   : kinds[k] == HT_UNWIND_FP ? "fp"
                                              : "dwarf",
                   mode_names[m]);
            for (size_t d = 0; d < sizeof depths / sizeof depths[0]; d++) {
                double ns = cell_ns(kinds[k], (mode)m, depths[d], iters);
                if (ns < 0)
                    status = 1;
                printf(" %10.1f", ns);
            }
            printf("\n");
        }
    }
    if (!ht__unwind_have_dwarf())
        printf("dwarf: not built (libunwind-dev missing)\n");

    /* The writer's per-wake-up module check when nothing was loaded or unloaded. */
    int n_modules = ht__modules_snapshot(module_ignore, NULL);
    uint64_t t0 = now_ns();
    for (int i = 0; i < 10000; i++)
        ht__modules_poll(module_ignore, NULL);
    printf("modules: %d loaded; poll without change %.1f ns\n", n_modules,
           (double)(now_ns() - t0) / 10000);
    ht__modules_fini();
    return status;
}
