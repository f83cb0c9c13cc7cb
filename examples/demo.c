/* demo.c — `make demo`: a private heap worked through every allocator path, with its events
 * traced to an in-process consumer. Prints the first events as ETW-style lines, then how many
 * operations and bytes each path (the ETW Source) served. */
#include <heaptrail.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

static const char *const source_names[7] = {
    "", "LOOKASIDE", "LOWFRAG", "MAINPATH", "SLOWPATH", "INVALID", "SEGMENT_HEAP",
};

typedef struct demo_log {
    unsigned n_seen;     /* events received */
    bool shown[0x30][8]; /* (type, Source) pairs already printed */
} demo_log;

static const char *src_name(uint32_t s)
{
    return s < 7 ? source_names[s] : "?";
}

/* Runs on the thread that did the operation; its own heap use would not be traced. */
static void show(const ht_event *e, void *ctx)
{
    demo_log *log = ctx;
    log->n_seen++;
    uint32_t src = e->type == HT_EVENT_HEAP_ALLOC     ? e->alloc.source
                   : e->type == HT_EVENT_HEAP_FREE    ? e->free.source
                   : e->type == HT_EVENT_HEAP_REALLOC ? e->realloc.source
                                                      : 0;
    if (e->type >= 0x30 || src >= 8 || log->shown[e->type][src])
        return; /* the first event of each kind and Source is enough to show */
    log->shown[e->type][src] = true;
    switch (e->type) {
    case HT_EVENT_HEAP_CREATE:
        printf("  HEAP_CREATE   HeapHandle=%#lx Flags=%#x CommittedSpace=%llu\n",
               (unsigned long)e->heap_handle, e->create.flags,
               (unsigned long long)e->create.committed_space);
        break;
    case HT_EVENT_HEAP_ALLOC:
        printf("  HEAP_ALLOC    HeapHandle=%#lx Size=%-8llu Address=%#lx Source=%s\n",
               (unsigned long)e->heap_handle, (unsigned long long)e->alloc.size,
               (unsigned long)e->alloc.address, src_name(e->alloc.source));
        break;
    case HT_EVENT_HEAP_FREE:
        printf("  HEAP_FREE     HeapHandle=%#lx Address=%#lx Source=%s\n",
               (unsigned long)e->heap_handle, (unsigned long)e->free.address,
               src_name(e->free.source));
        break;
    case HT_EVENT_HEAP_REALLOC:
        printf("  HEAP_REALLOC  HeapHandle=%#lx NewAddress=%#lx OldAddress=%#lx NewSize=%llu "
               "Source=%s\n",
               (unsigned long)e->heap_handle, (unsigned long)e->realloc.new_address,
               (unsigned long)e->realloc.old_address, (unsigned long long)e->realloc.new_size,
               src_name(e->realloc.source));
        break;
    case HT_EVENT_HEAP_EXPAND:
    case HT_EVENT_HEAP_CONTRACT:
        printf("  %s Address=%#lx Size=%llu CommittedSpace=%llu\n",
               e->type == HT_EVENT_HEAP_EXPAND ? "HEAP_EXPAND  " : "HEAP_CONTRACT",
               (unsigned long)e->expand.address, (unsigned long long)e->expand.size,
               (unsigned long long)e->expand.committed_space);
        break;
    default:
        printf("  event 0x%x\n", e->type);
        break;
    }
}

int main(void)
{
    static void *blocks[64];
    const size_t sizes[] = {24, 100, 1000, 40000, 2u << 20};
    static demo_log log;
    ht_trace_config cfg = {0};
    cfg.consumer = show;
    cfg.consumer_ctx = &log;
    if (ht_trace_start(&cfg) != 0) {
        fprintf(stderr, "demo: ht_trace_start failed\n");
        return 1;
    }
    printf("the first event of each kind and Source:\n");
    ht_heap *heap = ht_heap_create(0, 0, 0);
    if (heap == NULL) {
        perror("ht_heap_create");
        return 1;
    }
    /* 40 blocks of one size class: the first 17 come from the main path, then the class's
     * low-fragmentation heap takes over */
    for (size_t i = 0; i < 40; i++)
        blocks[i] = ht_heap_alloc(heap, 0, 64);
    for (size_t i = 0; i < 40; i++)
        ht_heap_free(heap, 0, blocks[i]);
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++) {
            blocks[i] = ht_heap_alloc(heap, 0, sizes[i % (sizeof sizes / sizeof sizes[0])]);
            if (blocks[i] == NULL) {
                perror("ht_heap_alloc");
                return 1;
            }
        }
        blocks[0] = ht_heap_realloc(heap, 0, blocks[0], 48);
        for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++)
            ht_heap_free(heap, 0, blocks[i]);
    }
    ht_heap_free(heap, 0, blocks[1]); /* a double free: refused, logged INVALID */
    ht_trace_stop();
    printf("%u events in all\n\n", log.n_seen);

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
