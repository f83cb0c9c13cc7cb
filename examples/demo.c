/* demo.c — `make demo`: creates a private heap, allocates and frees blocks of a few sizes, and
 * prints how many operations each allocator path (the ETW Source) served. A placeholder until
 * the real demo (with tracing) is written. */
#include <heaptrail.h>

#include <stdio.h>
#include <stdlib.h>

static const char *const source_names[7] = {
    "", "LOOKASIDE", "LOWFRAG", "MAINPATH", "SLOWPATH", "INVALID", "SEGMENT_HEAP",
};

int main(void)
{
    static void *blocks[64];
    const size_t sizes[] = {24, 100, 1000, 40000, 2u << 20};
    ht_heap *heap = ht_heap_create(0, 0, 0);
    if (heap == NULL) {
        perror("ht_heap_create");
        return 1;
    }

    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++) {
            blocks[i] = ht_heap_alloc(heap, 0, sizes[i % (sizeof sizes / sizeof sizes[0])]);
            if (blocks[i] == NULL) {
                perror("ht_heap_alloc");
                return 1;
            }
        }
        for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++)
            ht_heap_free(heap, 0, blocks[i]);
    }

    ht_heap_stats stats;
    ht_heap_get_stats(heap, &stats);
    printf("%-10s %10s %14s %10s %14s\n", "source", "allocs", "bytes", "frees", "bytes");
    for (int s = HT_SOURCE_LOOKASIDE; s <= HT_SOURCE_INVALID; s++) {
        const ht_source_stats *st = &stats.by_source[s];
        printf("%-10s %10llu %14llu %10llu %14llu\n", source_names[s],
               (unsigned long long)st->n_alloc, (unsigned long long)st->bytes_alloc,
               (unsigned long long)st->n_free, (unsigned long long)st->bytes_free);
    }
    printf("live %llu blocks (%llu bytes), committed %llu, reserved %llu, invalid %llu\n",
           (unsigned long long)stats.live_blocks, (unsigned long long)stats.live_bytes,
           (unsigned long long)stats.committed, (unsigned long long)stats.reserved,
           (unsigned long long)stats.n_invalid);

    if (!ht_heap_destroy(heap)) {
        perror("ht_heap_destroy");
        return 1;
    }
    return EXIT_SUCCESS;
}
