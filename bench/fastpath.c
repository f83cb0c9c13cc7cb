/* fastpath.c — malloc/free pairs on one thread, for per-operation costs of the two small
 * paths (run it under callgrind for instruction and cache-miss counts, or plainly for ns/op).
 *
 *   bench_fastpath --alloc malloc|ht|ht-nolock --pattern pair|batch [--size B] [--batch N]
 *                  [--ops M]
 *
 *   pair   malloc(B) then free of that block, M times: after the first round every
 *          allocation is a lookaside hit and every free a lookaside push (heaptrail).
 *   batch  N allocations of B bytes, then their N frees (oldest first), M/N times: with N far
 *          above the lookaside depth (at most 128) most operations take the LFH path.
 *
 * malloc: the process's malloc (glibc, or LD_PRELOAD=libheaptrail-preload.so, …);
 * ht: ht_heap_alloc/ht_heap_free on ht_process_heap(); ht-nolock: on a private
 * HT_HEAP_NO_SERIALIZE heap (plain stores instead of atomics: what the atomics cost).
 * The timed loop is the function run_loop (callgrind: --toggle-collect=run_loop).
 * Output: one line: fastpath alloc=… pattern=… size=… batch=… pairs=… ns_per_pair=… */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "heaptrail.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int use_ht;
static ht_heap *g_heap;

static inline void *a_alloc(size_t n)
{
    return use_ht ? ht_heap_alloc(g_heap, 0, n) : malloc(n);
}

static inline void a_free(void *p)
{
    if (use_ht)
        ht_heap_free(g_heap, 0, p);
    else
        free(p);
}

static void **g_slots;

__attribute__((noinline)) static uint64_t run_loop(int batch_mode, size_t size, size_t batch,
                                                   uint64_t pairs)
{
    uint64_t sum = 0;
    if (!batch_mode) {
        for (uint64_t i = 0; i < pairs; i++) {
            char *p = a_alloc(size);
            p[0] = (char)i;
            sum += (uintptr_t)p & 0xff;
            a_free(p);
        }
        return sum;
    }
    for (uint64_t done = 0; done < pairs; done += batch) {
        for (size_t i = 0; i < batch; i++) {
            char *p = a_alloc(size);
            p[0] = (char)i;
            g_slots[i] = p;
        }
        for (size_t i = 0; i < batch; i++) {
            sum += (uintptr_t)g_slots[i] & 0xff;
            a_free(g_slots[i]);
        }
    }
    return sum;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    const char *alloc = "malloc", *pattern = "pair";
    size_t size = 32, batch = 4096;
    uint64_t ops = 10000000;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--alloc") == 0)
            alloc = argv[i + 1];
        else if (strcmp(argv[i], "--pattern") == 0)
            pattern = argv[i + 1];
        else if (strcmp(argv[i], "--size") == 0)
            size = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--batch") == 0)
            batch = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--ops") == 0)
            ops = strtoull(argv[i + 1], NULL, 10);
        else {
            fprintf(stderr,
                    "usage: bench_fastpath --alloc malloc|ht|ht-nolock --pattern pair|batch "
                    "[--size B] [--batch N] [--ops M]\n");
            return 2;
        }
    }
    use_ht = strncmp(alloc, "ht", 2) == 0;
    int batch_mode = strcmp(pattern, "batch") == 0;
    if (batch == 0)
        batch = 1;
    if (strcmp(alloc, "ht-nolock") == 0)
        g_heap = ht_heap_create(HT_HEAP_NO_SERIALIZE, 0, 0);
    else if (use_ht)
        g_heap = ht_process_heap();
    g_slots = calloc(batch, sizeof *g_slots);
    if (g_slots == NULL || (use_ht && g_heap == NULL))
        return 1;
    /* warm-up: 64 blocks at once (the class becomes LFH-active in heaptrail's heaps, as in
     * any program that allocates), then one round of the pattern */
    run_loop(1, size, 64, 64);
    run_loop(batch_mode, size, batch, batch_mode ? batch * 2 : 1000);
    double t0 = now_s();
    uint64_t sum = run_loop(batch_mode, size, batch, ops);
    double t1 = now_s();
    printf("fastpath alloc=%s pattern=%s size=%zu batch=%zu pairs=%llu ns_per_pair=%.2f "
           "sum=%llu\n",
           alloc, pattern, size, batch_mode ? batch : 1, (unsigned long long)ops,
           (t1 - t0) * 1e9 / (double)ops, (unsigned long long)sum);
    return 0;
}
