/* lfh.c — the low-fragmentation front end: size classes, runs of same-size blocks carved
 * from the main path, per-class bins with their own lock (no global lock), activation.
 * Never touches the live bits or per-block metadata of a block it hands out: api.c does. */
#include "heap/internal.h"

const uint32_t ht__class_size[HT_N_CLASSES] = {
    16,   32,   48,   64,   80,   96,   112,  128,  160,   192,   224,   256,
    320,  384,  448,  512,  640,  768,  896,  1024, 1280,  1536,  1792,  2048,
    2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192, 10240, 12288, 14336, 16384};

static void avail_insert(ht_bin *bin, ht_run *run)
{
    run->prev = NULL;
    run->next = bin->avail;
    if (bin->avail != NULL)
        bin->avail->prev = run;
    bin->avail = run;
    run->on_avail = 1;
}

static void avail_remove(ht_bin *bin, ht_run *run)
{
    if (run->prev != NULL)
        run->prev->next = run->next;
    else
        bin->avail = run->next;
    if (run->next != NULL)
        run->next->prev = run->prev;
    run->next = run->prev = NULL;
    run->on_avail = 0;
}

static size_t run_bytes_for(unsigned cls, uint32_t n_runs)
{
    size_t size = ht__class_size[cls];
    size_t base = ht__align_up(size * 16, HT_PAGE_SIZE);
    if (base < ((size_t)16 << 10))
        base = (size_t)16 << 10;
    unsigned shift = n_runs < 4 ? n_runs : 4;
    size_t bytes = base << shift;
    size_t cap = (size_t)512 << 10;
    if (bytes > cap)
        bytes = cap > base ? cap : base;
    return bytes;
}

/* Makes a run for the bin (bin lock held; takes the heap lock). */
static ht_run *run_new(ht_heap *heap, ht_bin *bin, unsigned cls, ht_op *op)
{
    size_t bytes = run_bytes_for(cls, bin->n_runs);
    size_t smallest = run_bytes_for(cls, 0);
    ht__heap_lock(heap);
    ht_mblock *b = ht__main_alloc_locked(heap, bytes, HT_PAGE_SIZE, op);
    while (b == NULL && bytes > smallest) {
        /* a capped or crowded heap: settle for a smaller run */
        bytes = bytes / 2 > smallest ? bytes / 2 : smallest;
        b = ht__main_alloc_locked(heap, bytes, HT_PAGE_SIZE, op);
    }
    if (b == NULL) {
        ht__heap_unlock(heap);
        return NULL;
    }
    b->flags |= MB_RUN;
    HT_UNPOISON(b + 1, bytes);
    b->aux = 0;
    b->source = 0;
    ht_run *run = (ht_run *)(b + 1);
    ht_segment *seg = ht__seg_of(run);
    size_t first_page = ((uintptr_t)run - (uintptr_t)seg) / HT_PAGE_SIZE;
    size_t n_pages = bytes / HT_PAGE_SIZE;
    for (size_t i = 0; i < n_pages; i++)
        seg->pagemap[first_page + i] = (uint16_t)(first_page + 1);
    ht__heap_unlock(heap);

    uint32_t size = ht__class_size[cls];
    size_t fixed = offsetof(ht_run, meta);
    uint32_t n = (uint32_t)((bytes - fixed) / (size + sizeof(uint32_t)));
    uint8_t *first;
    for (;;) {
        first = (uint8_t *)ht__align_up((uintptr_t)run + fixed + n * sizeof(uint32_t), HT_GRANULE);
        if (first + (size_t)n * size <= (uint8_t *)run + bytes)
            break;
        n--;
    }
    run->magic = HT_RUN_MAGIC;
    run->cls = (uint16_t)cls;
    run->n_pages = (uint32_t)n_pages;
    run->affinity = (uint8_t)((size_t)(bin - &heap->bins[0][0]) / HT_N_CLASSES);
    run->block_size = size;
    run->n_blocks = n;
    run->n_used = 0;
    run->n_carved = 0;
    run->inv = (((uint64_t)1 << 40) + size - 1) / size;
    run->free_list = NULL;
    run->n_free_list = 0;
    run->first = first;
    avail_insert(bin, run);
    bin->n_runs++;
    bin->n_empty++;
    return run;
}

void *ht__lfh_alloc(ht_heap *heap, unsigned cls, ht_op *op, ht_run **run_out)
{
    ht_tls *tls = ht__tls;
    unsigned aff = tls != NULL ? tls->affinity : 0;
    return ht__lfh_alloc_aff(heap, cls, aff, op, run_out);
}

void *ht__lfh_alloc_aff(ht_heap *heap, unsigned cls, unsigned aff, ht_op *op, ht_run **run_out)
{
    ht_bin *bin = &heap->bins[aff][cls];
    ht__bin_lock(heap, bin);
    ht_run *run = bin->avail;
    if (run == NULL) {
        run = run_new(heap, bin, cls, op);
        if (run == NULL) {
            ht__bin_unlock(heap, bin);
            return NULL;
        }
    }
    void *p;
    if (run->free_list != NULL) {
        p = run->free_list;
        run->free_list = *(void **)p;
        run->n_free_list--;
    } else {
        p = run->first + (size_t)run->n_carved * run->block_size;
        run->n_carved++;
    }
    if (run->n_used++ == 0)
        bin->n_empty--;
    if (run->free_list == NULL && run->n_carved == run->n_blocks)
        avail_remove(bin, run);
    ht__bin_unlock(heap, bin);
    *run_out = run;
    return p;
}

static void run_release(ht_heap *heap, ht_bin *bin, ht_run *run, ht_op *op)
{
    if (run->on_avail)
        avail_remove(bin, run);
    bin->n_runs--;
    bin->n_empty--;
    ht_segment *seg = ht__seg_of(run);
    size_t first_page = ((uintptr_t)run - (uintptr_t)seg) / HT_PAGE_SIZE;
    ht__heap_lock(heap);
    for (size_t i = 0; i < run->n_pages; i++)
        seg->pagemap[first_page + i] = 0;
    run->magic = 0;
    ht_mblock *b = (ht_mblock *)run - 1;
    b->flags = MB_BUSY;
    ht__main_free_locked(heap, b, op);
    ht__heap_unlock(heap);
}

void ht__lfh_free(ht_heap *heap, ht_run *run, void *block, ht_op *op)
{
    ht_bin *bin = &heap->bins[run->affinity][run->cls];
    ht__bin_lock(heap, bin);
    *(void **)block = run->free_list;
    run->free_list = block;
    run->n_free_list++;
    if (!run->on_avail)
        avail_insert(bin, run);
    if (--run->n_used == 0) {
        bin->n_empty++;
        if (bin->n_empty > 1)
            run_release(heap, bin, run, op);
    }
    ht__bin_unlock(heap, bin);
}

void ht__lfh_release_empty_locked(ht_heap *heap, ht_op *op, bool all)
{
    for (unsigned c = 0; c < HT_N_CLASSES * HT_LFH_AFFINITY; c++) {
        ht_bin *bin = &heap->bins[0][0] + c;
        ht_run *run = bin->avail;
        while (run != NULL && (all || bin->n_empty > 1)) {
            ht_run *next = run->next;
            if (run->n_used == 0)
                run_release(heap, bin, run, op);
            run = next;
        }
    }
}
