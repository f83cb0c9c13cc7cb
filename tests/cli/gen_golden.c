/* gen_golden.c — a deterministic program for the report/dump golden tests: it records a trace
 * (frame-pointer stacks, depth 16) of known allocation patterns through the heap API, and
 * keeps its own simple model of what it did, printed as key=value lines on stdout for the
 * test to compare against the report (the expectations are computed, not written down):
 *   - two blocks live before tracing starts (rundown, leaked), 5 leaks in leak_small (process
 *     heap) and 3 in leak_big (private heap A), 100 temporaries in make_temporaries, a batch
 *     of 10 where only the last is temporary (batch_alloc), a peak in build_peak, one large
 *     block (slow_path_block), a moving realloc (grow_block), a double free (double_free_*),
 *     8 blocks allocated on one thread and freed on another (cross_alloc / cross_free), a
 *     private heap B destroyed with 7 live blocks (doomed_alloc).
 * Every heap call of interest is a statement of one line marked with a comment SITE:<name>,
 * so the test finds its line with grep (a call inside a statement that spans lines would be
 * attributed to the statement's first line). The consumer copy of every event goes to a second
 * file, as JSON lines in `heaptrail dump --format json`'s layout without stack_id, for the dump
 * round trip. usage: gen_golden TRACE_FILE EVENTS_FILE Built -O0 -g with frame pointers, no
 * inlining, no sibling calls (see CMakeLists.txt). */
#include <heaptrail.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ---- the model ------------------------------------------------------------------------------ */

#define MAX_LIVE 4096
typedef struct mblock {
    void *p;
    size_t size;
    ht_heap *heap;
    int thread; /* model thread index */
} mblock;
static mblock model[MAX_LIVE];
static uint64_t live_bytes, peak_bytes, peak_blocks, live_blocks;
static uint64_t n_temp, bytes_temp;
static void *last_alloc[4]; /* per model thread */
static int cur_thread;      /* model thread doing the operation (set by each thread) */
static uint64_t n_alloc_traced, n_free_traced;
static int tracing;

static void m_alloc(ht_heap *h, void *p, size_t size)
{
    for (int i = 0; i < MAX_LIVE; i++)
        if (model[i].p == NULL) {
            model[i] = (mblock){p, size, h, cur_thread};
            break;
        }
    live_bytes += size;
    live_blocks++;
    if (live_bytes > peak_bytes) {
        peak_bytes = live_bytes;
        peak_blocks = live_blocks;
    }
    if (tracing) {
        last_alloc[cur_thread] = p;
        n_alloc_traced++;
    }
}

static void m_free(void *p, int is_free)
{
    for (int i = 0; i < MAX_LIVE; i++)
        if (model[i].p == p) {
            if (is_free && last_alloc[model[i].thread] == p) {
                n_temp++;
                bytes_temp += model[i].size;
            }
            live_bytes -= model[i].size;
            live_blocks--;
            model[i].p = NULL;
            n_free_traced++;
            return;
        }
}

static uint64_t destroyed_blocks, destroyed_bytes;

static void m_destroy(ht_heap *h)
{
    for (int i = 0; i < MAX_LIVE; i++)
        if (model[i].p != NULL && model[i].heap == h) {
            live_bytes -= model[i].size;
            live_blocks--;
            destroyed_blocks++;
            destroyed_bytes += model[i].size;
            model[i].p = NULL;
        }
}

static void *xalloc(ht_heap *h, size_t size, void *p)
{
    if (p == NULL) {
        fprintf(stderr, "gen_golden: allocation of %zu failed\n", size);
        exit(1);
    }
    m_alloc(h, p, size);
    return p;
}

/* ---- the workload --------------------------------------------------------------------------- */

static ht_heap *heap_a, *heap_b;
#define N_CROSS    8
#define CROSS_SIZE 128
static void *cross_blocks[N_CROSS];

static void *pre_trace_block(void)
{
    void *p = ht_heap_alloc(ht_process_heap(), 0, 77); /* SITE:pre */
    return xalloc(ht_process_heap(), 77, p);
}

static void leak_small(void)
{
    void *p = ht_heap_alloc(ht_process_heap(), 0, 48); /* SITE:leak_small */
    xalloc(ht_process_heap(), 48, p);
}

static void leak_big(void)
{
    xalloc(heap_a, 1000, ht_heap_alloc(heap_a, 0, 1000)); /* SITE:leak_big */
}

static void make_temporaries(void)
{
    for (int i = 0; i < 100; i++) {
        void *p = ht_heap_alloc(ht_process_heap(), 0, 32); /* SITE:temp */
        xalloc(ht_process_heap(), 32, p);
        m_free(p, 1);
        ht_heap_free(ht_process_heap(), 0, p);
    }
}

static void batch_alloc(void **out, int n)
{
    for (int i = 0; i < n; i++) {
        out[i] = ht_heap_alloc(ht_process_heap(), 0, 64); /* SITE:batch */
        xalloc(ht_process_heap(), 64, out[i]);
    }
}

static void build_peak(void **out, int n)
{
    for (int i = 0; i < n; i++)
        out[i] = xalloc(heap_a, 4096, ht_heap_alloc(heap_a, 0, 4096)); /* SITE:peak */
}

static void *slow_path_block(void)
{
    void *p = ht_heap_alloc(ht_process_heap(), 0, 2u << 20); /* SITE:slow */
    return xalloc(ht_process_heap(), 2u << 20, p);
}

static void *grow_block(void *p, size_t size)
{
    void *q = ht_heap_realloc(ht_process_heap(), 0, p, size); /* SITE:realloc */
    if (q == NULL)
        exit(1);
    m_free(p, 0);
    return xalloc(ht_process_heap(), size, q);
}

static void *double_free_alloc(void)
{
    void *p = ht_heap_alloc(ht_process_heap(), 0, 24); /* SITE:df_alloc */
    return xalloc(ht_process_heap(), 24, p);
}

static void double_free_first(void *p)
{
    m_free(p, 1);
    ht_heap_free(ht_process_heap(), 0, p); /* SITE:df_free1 */
}

static int double_free_second(void *p)
{
    return ht_heap_free(ht_process_heap(), 0, p); /* SITE:df_free2 */
}

static void doomed_alloc(void)
{
    xalloc(heap_b, 200, ht_heap_alloc(heap_b, 0, 200)); /* SITE:doomed */
}

static uint32_t tids[2];

static void *cross_alloc(void *arg)
{
    (void)arg;
    cur_thread = 1;
    tids[0] = (uint32_t)syscall(SYS_gettid);
    for (int i = 0; i < N_CROSS; i++) {
        void *p = ht_heap_alloc(ht_process_heap(), 0, CROSS_SIZE); /* SITE:cross_alloc */
        cross_blocks[i] = xalloc(ht_process_heap(), CROSS_SIZE, p);
    }
    return NULL;
}

static void *cross_free(void *arg)
{
    (void)arg;
    cur_thread = 2;
    tids[1] = (uint32_t)syscall(SYS_gettid);
    for (int i = 0; i < N_CROSS; i++) {
        m_free(cross_blocks[i], 1);
        ht_heap_free(ht_process_heap(), 0, cross_blocks[i]); /* SITE:cross_free */
    }
    return NULL;
}

/* ---- the consumer copy ------------------------------------------------------------------------
 */

static FILE *events_out;

static void consume(const ht_event *e, void *ctx)
{
    (void)ctx;
    static const char *const names[] = {
        [0x20] = "create", [0x21] = "alloc",  [0x22] = "realloc", [0x23] = "destroy",
        [0x24] = "free",   [0x25] = "expand", [0x2A] = "contract"};
    FILE *f = events_out;
    fprintf(f,
            "{\"type\":\"%s\",\"ts_ns\":%" PRIu64 ",\"tid\":%u,\"sequence\":%" PRIu64
            ",\"flags\":%u,\"HeapHandle\":\"0x%" PRIxPTR "\"",
            e->type <= 0x2A && names[e->type] ? names[e->type] : "?", e->timestamp_ns, e->tid,
            e->sequence, (unsigned)e->flags, e->heap_handle);
    switch (e->type) {
    case HT_EVENT_HEAP_ALLOC:
        fprintf(f, ",\"Size\":%" PRIu64 ",\"Address\":\"0x%" PRIxPTR "\",\"Source\":%u",
                e->alloc.size, e->alloc.address, e->alloc.source);
        break;
    case HT_EVENT_HEAP_FREE:
        fprintf(f, ",\"Address\":\"0x%" PRIxPTR "\",\"Source\":%u", e->free.address,
                e->free.source);
        break;
    case HT_EVENT_HEAP_REALLOC:
        fprintf(f,
                ",\"NewAddress\":\"0x%" PRIxPTR "\",\"OldAddress\":\"0x%" PRIxPTR
                "\",\"NewSize\":%" PRIu64 ",\"OldSize\":%" PRIu64 ",\"Source\":%u",
                e->realloc.new_address, e->realloc.old_address, e->realloc.new_size,
                e->realloc.old_size, e->realloc.source);
        break;
    case HT_EVENT_HEAP_CREATE:
        fprintf(f, ",\"Flags\":%u,\"ReservedSpace\":%" PRIu64 ",\"CommittedSpace\":%" PRIu64,
                e->create.flags, e->create.reserved_space, e->create.committed_space);
        break;
    case HT_EVENT_HEAP_EXPAND:
    case HT_EVENT_HEAP_CONTRACT:
        fprintf(f,
                ",\"Address\":\"0x%" PRIxPTR "\",\"Size\":%" PRIu64 ",\"CommittedSpace\":%" PRIu64,
                e->expand.address, e->expand.size, e->expand.committed_space);
        break;
    default:
        break;
    }
    fprintf(f, "}\n");
}

/* Per-Source counters of h since *base (the heap's own statistics: an independent account). */
static void print_stats(const char *name, ht_heap *h, const ht_heap_stats *base)
{
    ht_heap_stats st;
    ht_heap_get_stats(h, &st);
    for (int s = 1; s <= 5; s++)
        printf("stats.%s.%d=%" PRIu64 " %" PRIu64 " %" PRIu64 "\n", name, s,
               st.by_source[s].n_alloc - base->by_source[s].n_alloc,
               st.by_source[s].bytes_alloc - base->by_source[s].bytes_alloc,
               st.by_source[s].n_free - base->by_source[s].n_free);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: gen_golden TRACE_FILE EVENTS_FILE\n");
        return 2;
    }
    events_out = fopen(argv[2], "w");
    if (events_out == NULL)
        return 1;
    setenv("HEAPTRAIL_UNWIND", "fp", 1);
    pre_trace_block();
    pre_trace_block();
    /* Heap stats count from creation: the process heap's are taken relative to this point. */
    ht_heap_stats base_process, zero;
    memset(&zero, 0, sizeof zero);
    ht_heap_get_stats(ht_process_heap(), &base_process);
    ht_trace_config cfg = {0};
    cfg.path = argv[1];
    cfg.stack_depth = getenv("GEN_GOLDEN_NO_STACKS") ? 0 : 16; /* (a corpus seed without stacks) */
    cfg.consumer = consume;
    cfg.loss_policy = HT_TRACE_LOSS_BLOCK;
    int rc = ht_trace_start(&cfg);
    if (rc != 0) {
        fprintf(stderr, "gen_golden: ht_trace_start: %d\n", rc);
        return 1;
    }
    tracing = 1;
    heap_a = ht_heap_create(0, 0, 0);
    heap_b = ht_heap_create(0, 0, 0);
    for (int i = 0; i < 5; i++)
        leak_small();
    make_temporaries();
    void *batch[10];
    batch_alloc(batch, 10);
    for (int i = 0; i < 10; i++) {
        m_free(batch[i], 1);
        ht_heap_free(ht_process_heap(), 0, batch[i]);
    }
    void *peak[20];
    build_peak(peak, 20);
    for (int i = 0; i < 20; i++) {
        m_free(peak[i], 1);
        ht_heap_free(heap_a, 0, peak[i]);
    }
    for (int i = 0; i < 3; i++)
        leak_big();
    void *big = slow_path_block();
    m_free(big, 1);
    ht_heap_free(ht_process_heap(), 0, big);
    void *g = xalloc(ht_process_heap(), 100, ht_heap_alloc(ht_process_heap(), 0, 100));
    g = grow_block(g, 5000);
    m_free(g, 1);
    ht_heap_free(ht_process_heap(), 0, g);
    void *d = double_free_alloc();
    double_free_first(d);
    int second = double_free_second(d);
    pthread_t t;
    pthread_create(&t, NULL, cross_alloc, NULL);
    pthread_join(t, NULL);
    pthread_create(&t, NULL, cross_free, NULL);
    pthread_join(t, NULL);
    cur_thread = 0;
    for (int i = 0; i < 7; i++)
        doomed_alloc();
    print_stats("b", heap_b, &zero);
    m_destroy(heap_b);
    ht_heap_destroy(heap_b);
    uint64_t leaked_bytes = live_bytes, leaked_blocks = live_blocks;
    print_stats("process", ht_process_heap(), &base_process);
    print_stats("a", heap_a, &zero);
    rc = ht_trace_stop();
    fclose(events_out);
    if (rc != 0) {
        fprintf(stderr, "gen_golden: ht_trace_stop: %d\n", rc);
        return 1;
    }
    printf("second_free_result=%d\n", second);
    printf("expect.leaked_blocks=%" PRIu64 "\n", leaked_blocks);
    printf("expect.leaked_bytes=%" PRIu64 "\n", leaked_bytes);
    printf("expect.peak_live_bytes=%" PRIu64 "\n", peak_bytes);
    printf("expect.peak_live_blocks=%" PRIu64 "\n", peak_blocks);
    printf("expect.temporary_count=%" PRIu64 "\n", n_temp);
    printf("expect.temporary_bytes=%" PRIu64 "\n", bytes_temp);
    printf("expect.destroyed_blocks=%" PRIu64 "\n", destroyed_blocks);
    printf("expect.destroyed_bytes=%" PRIu64 "\n", destroyed_bytes);
    printf("expect.cross_alloc_tid=%u\nexpect.cross_free_tid=%u\n", tids[0], tids[1]);
    printf("expect.cross_blocks=%d\nexpect.cross_bytes=%d\n", N_CROSS, N_CROSS * CROSS_SIZE);
    printf("expect.main_tid=%u\n", (uint32_t)syscall(SYS_gettid));
    printf("expect.allocs=%" PRIu64 "\n", n_alloc_traced);
    printf("expect.process_heap=0x%" PRIxPTR "\n", (uintptr_t)ht_process_heap());
    printf("expect.heap_a=0x%" PRIxPTR "\nexpect.heap_b=0x%" PRIxPTR "\n", (uintptr_t)heap_a,
           (uintptr_t)heap_b);
    return 0;
}
