/* tcache.c — per-thread state: one ht_tls per thread (a direct-mapped table of tcaches), one
 * ht_tcache per (thread, heap) with the lookaside lists and the thread's statistics share.
 * Structures come from a small mmap-backed pool, never malloc. At thread exit a pthread key
 * destructor flushes every lookaside list back to its heap. */
#include "heap/internal.h"

#include "trace/trace.h"

__thread ht_tls *ht__tls __attribute__((tls_model("initial-exec")));

#define LA_NONE                                                                                    \
    {                                                                                              \
        NULL, UINT32_MAX                                                                           \
    }
#define LA_NONE4 LA_NONE, LA_NONE, LA_NONE, LA_NONE
ht_tcache ht__tc_none = {
    .heap = NULL,
    .gen = 0,
    .affinity = UINT32_MAX,
    .la = {LA_NONE4, LA_NONE4, LA_NONE4, LA_NONE4, LA_NONE4, LA_NONE4, LA_NONE4, LA_NONE4,
           LA_NONE4},
};
_Static_assert(HT_N_CLASSES == 36, "ht__tc_none lists every class");
__thread ht_tcache *ht__tc_process __attribute__((tls_model("initial-exec"))) = &ht__tc_none;

/* ---- a fixed-size object pool over mmap ---- */

typedef struct pool {
    ht_spinlock lock;
    size_t obj_size;      /* bytes per object, multiple of 64 */
    void *free_list;      /* recycled objects */
    uint8_t *chunk, *end; /* bump region of the current chunk */
} pool;

#define POOL_CHUNK ((size_t)256 << 10)

static pool g_tls_pool = {{0}, ((sizeof(ht_tls) + 63) / 64) * 64, NULL, NULL, NULL};
static pool g_tc_pool = {{0}, ((sizeof(ht_tcache) + 63) / 64) * 64, NULL, NULL, NULL};

static void *pool_get(pool *p)
{
    ht__spin_lock(&p->lock);
    void *o = p->free_list;
    if (o != NULL) {
        p->free_list = *(void **)o;
    } else {
        if (p->chunk == NULL || p->chunk + p->obj_size > p->end) {
            uint8_t *c = ht__os.map_rw(POOL_CHUNK);
            if (c == NULL) {
                ht__spin_unlock(&p->lock);
                return NULL;
            }
            p->chunk = c;
            p->end = c + POOL_CHUNK;
        }
        o = p->chunk;
        p->chunk += p->obj_size;
    }
    ht__spin_unlock(&p->lock);
    memset(o, 0, p->obj_size);
    return o;
}

static void pool_put(pool *p, void *o)
{
    ht__spin_lock(&p->lock);
    *(void **)o = p->free_list;
    p->free_list = o;
    ht__spin_unlock(&p->lock);
}

static ht_spinlock g_list_lock;
static ht_tls *g_list;

void ht__tcache_fork_prepare(void)
{
    ht__spin_lock(&g_tls_pool.lock);
    ht__spin_lock(&g_tc_pool.lock);
    ht__spin_lock(&g_list_lock);
}

void ht__tcache_fork_parent(void)
{
    ht__spin_unlock(&g_list_lock);
    ht__spin_unlock(&g_tc_pool.lock);
    ht__spin_unlock(&g_tls_pool.lock);
}

/* A thread that held a pool lock at fork does not exist in the child: the prepare handler
 * made sure none did, so the locks (held by the forking thread) are simply released. The
 * other threads are gone: only the forking one stays on the list of threads a rundown waits
 * on (the others' in_call words are in stacks the child reuses). */
void ht__tcache_fork_child(void)
{
    ht_tls *self = ht__tls;
    for (ht_tls *t = g_list, *next; t != NULL; t = next) {
        next = t->next;
        if (t != self) {
            t->next = t->prev = NULL;
            t->serial = 0;
            t->in_call = NULL;
        }
    }
    g_list = NULL;
    if (self != NULL && self->serial != 0) {
        self->next = self->prev = NULL;
        g_list = self;
    }
    ht__tcache_fork_parent();
}

/* ---- thread tags ----
 * Each live ht_tls has a tag, 1 .. HT_TAG_N - 1, that every small block it allocates or
 * resizes carries (ht__t_tagbits, src/heap/types.h). A traced free of a block with its own
 * thread's tag may reuse the thread's last stamp (src/heap/api.c, free_body): the block's
 * ALLOC is an earlier event of this thread, so no clock read is needed to sort after it.
 * Tags are recycled at thread exit; a tag's next owner starts with a last stamp no earlier
 * than the previous owner's (whose blocks may still be live with that tag). Past HT_TAG_N - 1
 * live threads, a thread has none (0: its frees read the clock). Under g_tls_pool.lock. */
#define HT_TAG_N ((uint32_t)1 << HT_TAG_BITS)

static uint16_t g_tag_free[HT_TAG_N]; /* released tags, a stack */
static uint32_t g_tag_n_free;
static uint32_t g_tag_next = 1;        /* tags never handed out: g_tag_next .. HT_TAG_N - 1 */
static uint64_t g_tag_stamp[HT_TAG_N]; /* the last stamp of each tag's previous owner */

static void tag_take(void)
{
    ht__spin_lock(&g_tls_pool.lock);
    uint32_t tag = 0;
    if (g_tag_n_free != 0)
        tag = g_tag_free[--g_tag_n_free];
    else if (g_tag_next < HT_TAG_N)
        tag = g_tag_next++;
    uint64_t stamp = g_tag_stamp[tag];
    ht__spin_unlock(&g_tls_pool.lock);
    if (tag == 0)
        return;
    if (stamp != 0 && stamp + HT_STAMP_STEP > ht__t_stamp) /* after the last owner, no tie */
        ht__t_stamp = stamp + HT_STAMP_STEP;
    ht__t_tagbits = tag << HT_TAG_SHIFT;
    ht__t_tagcmp = tag << HT_TAG_SHIFT;
}

static void tag_release(void)
{
    uint32_t tag = ht__t_tagbits >> HT_TAG_SHIFT;
    ht__t_tagbits = 0;
    ht__t_tagcmp = HT_TAG_CMP_NONE;
    if (tag == 0)
        return;
    ht__spin_lock(&g_tls_pool.lock);
    if (ht__t_stamp > g_tag_stamp[tag])
        g_tag_stamp[tag] = ht__t_stamp;
    g_tag_free[g_tag_n_free++] = (uint16_t)tag;
    ht__spin_unlock(&g_tls_pool.lock);
}

/* ---- the list of threads a rundown waits on ----
 * Every thread with an ht_tls is linked from its creation to its thread-exit destructor, with
 * the address of its ht__t_in_call, which only stays valid while it is linked. Under g_list_lock
 * (a leaf: nothing is taken under it, and nobody waits while holding it). */
static uint64_t g_list_serial;

static void tls_link(ht_tls *tls)
{
    ht__spin_lock(&g_list_lock);
    tls->in_call = &ht__t_in_call;
    tls->serial = ++g_list_serial;
    tls->prev = NULL;
    tls->next = g_list;
    if (g_list != NULL)
        g_list->prev = tls;
    g_list = tls;
    ht__spin_unlock(&g_list_lock);
}

static void tls_unlink(ht_tls *tls)
{
    ht__spin_lock(&g_list_lock);
    if (tls->prev != NULL)
        tls->prev->next = tls->next;
    else
        g_list = tls->next;
    if (tls->next != NULL)
        tls->next->prev = tls->prev;
    tls->next = tls->prev = NULL;
    tls->serial = 0;
    tls->in_call = NULL;
    ht__spin_unlock(&g_list_lock);
}

void ht__tls_each(void (*fn)(ht_tls *tls, void *ctx), void *ctx)
{
    ht__spin_lock(&g_list_lock);
    for (ht_tls *t = g_list; t != NULL; t = t->next)
        fn(t, ctx);
    ht__spin_unlock(&g_list_lock);
}

/* ---- thread exit ---- */

static ht_tls g_dead_tls; /* all slots NULL: threads past their exit get no tcache */
static pthread_key_t g_key;
static pthread_once_t g_key_once = PTHREAD_ONCE_INIT;
static bool g_key_ok;

static void tcache_retire_locked(ht_tcache *tc);

static void tls_destroy(void *arg)
{
    ht_tls *tls = arg;
    ht__tls = &g_dead_tls;
    ht__tc_process = &ht__tc_none;
    tls_unlink(tls); /* its calls from now on count themselves (ht__op_unlisted_begin) */
    tag_release();   /* before the flush: no block it touches is handed out again with it */
    for (unsigned i = 0; i < HT_TLS_SLOTS; i++) {
        ht_tcache *tc = tls->slot[i];
        if (tc == NULL)
            continue;
        tls->slot[i] = NULL;
        ht__rlock_lock(&ht__registry_lock);
        tcache_retire_locked(tc);
        ht__rlock_unlock(&ht__registry_lock);
    }
    pool_put(&g_tls_pool, tls);
}

static void key_create(void)
{
    g_key_ok = pthread_key_create(&g_key, tls_destroy) == 0;
}

/* ---- flushing and retiring ---- */

static void acc_fold(ht_stat_acc *dst, ht_stat_acc *src)
{
    for (int s = 0; s < 7; s++) {
        atomic_fetch_add(&dst->n_alloc[s], atomic_load(&src->n_alloc[s]));
        atomic_fetch_add(&dst->n_free[s], atomic_load(&src->n_free[s]));
        atomic_fetch_add(&dst->bytes_alloc[s], atomic_load(&src->bytes_alloc[s]));
        atomic_fetch_add(&dst->bytes_free[s], atomic_load(&src->bytes_free[s]));
    }
    atomic_fetch_add(&dst->inplace_blocks, atomic_load(&src->inplace_blocks));
    atomic_fetch_add(&dst->inplace_bytes, atomic_load(&src->inplace_bytes));
    atomic_fetch_add(&dst->n_invalid, atomic_load(&src->n_invalid));
}

/* Returns every lookaside block of tc to its owner (heap alive, tc current). */
void ht__tcache_flush(ht_tcache *tc, ht_heap *heap)
{
    ht_op op;
    op.trace = atomic_load_explicit(&heap->trace_on, memory_order_relaxed) == HT_TSW_ON;
    op.slow = false;
    op.n_pending = 0;
    for (unsigned c = 0; c < HT_N_CLASSES; c++) {
        ht_lookaside *la = &tc->la[c];
        while (la->head != NULL) {
            void *p = la->head;
            la->head = *(void **)p;
            la->count--;
            ht_segment *seg = ht__seg_of(p);
            ht_run *run = ht__run_of(seg, (uintptr_t)p);
            if (run != NULL) {
                ht__lfh_free(heap, run, p, &op);
            } else {
                ht__heap_lock(heap);
                ht__main_free_locked(heap, (ht_mblock *)p - 1, &op);
                ht__heap_unlock(heap);
            }
            if (op.n_pending >= HT_OP_PENDING / 2)
                ht__op_emit_pending(heap, &op);
        }
    }
    ht__op_emit_pending(heap, &op);
}

static void heap_list_remove(ht_heap *heap, ht_tcache *tc)
{
    if (tc->hprev != NULL)
        tc->hprev->hnext = tc->hnext;
    else
        heap->tcaches = tc->hnext;
    if (tc->hnext != NULL)
        tc->hnext->hprev = tc->hprev;
    tc->hnext = tc->hprev = NULL;
}

/* Flushes (if its heap lives), folds the stats into the heap, unlinks and frees tc. */
static void tcache_retire_locked(ht_tcache *tc)
{
    ht_heap *heap = tc->heap;
    if (tc == ht__tc_process) /* always the calling thread's own tcaches here */
        ht__tc_process = &ht__tc_none;
    if (heap != NULL && atomic_load(&heap->magic) == HT_HEAP_MAGIC && heap->gen == tc->gen) {
        ht__tcache_flush(tc, heap);
        acc_fold(&heap->shared, &tc->st);
        heap_list_remove(heap, tc);
    }
    pool_put(&g_tc_pool, tc);
}

void ht__tcache_detach_all_locked(ht_heap *heap)
{
    ht_tcache *tc = heap->tcaches;
    while (tc != NULL) {
        ht_tcache *next = tc->hnext;
        tc->heap = NULL;
        tc->hnext = tc->hprev = NULL;
        tc = next;
    }
    heap->tcaches = NULL;
}

ht_tcache *ht__tcache_get_slow(ht_heap *heap)
{
    ht_tls *tls = ht__tls;
    if (tls == &g_dead_tls)
        return NULL;
    if (tls == NULL) {
        pthread_once(&g_key_once, key_create);
        if (!g_key_ok)
            return NULL;
        tls = pool_get(&g_tls_pool);
        if (tls == NULL)
            return NULL;
        tls->affinity = ht__trace_tid() % HT_LFH_AFFINITY; /* documented: tid mod 4 */
        tag_take();
        ht__tls = tls;
        pthread_setspecific(g_key, tls);
        tls_link(tls);
    }
    unsigned slot = heap->index % HT_TLS_SLOTS;
    ht_tcache *old = tls->slot[slot];
    ht__rlock_lock(&ht__registry_lock);
    if (old != NULL) {
        tls->slot[slot] = NULL;
        tcache_retire_locked(old); /* stale, or another heap sharing the slot */
    }
    ht_tcache *tc = pool_get(&g_tc_pool);
    if (tc != NULL) {
        tc->heap = heap;
        tc->gen = heap->gen;
        tc->affinity = tls->affinity;
        tc->owner = tls;
        tc->hprev = NULL;
        tc->hnext = heap->tcaches;
        if (heap->tcaches != NULL)
            heap->tcaches->hprev = tc;
        heap->tcaches = tc;
        tls->slot[slot] = tc;
        if (heap->index == 0)
            ht__tc_process = tc;
    }
    ht__rlock_unlock(&ht__registry_lock);
    return tc;
}

static void acc_sum(ht_heap_stats *out, ht_stat_acc *a, int64_t *blocks, int64_t *bytes)
{
    /* live figures: see ht_stat_acc (INVALID, Source 5, never changes them) */
    for (int s = 1; s <= 5; s++) {
        uint64_t na = atomic_load_explicit(&a->n_alloc[s], memory_order_relaxed);
        uint64_t nf = atomic_load_explicit(&a->n_free[s], memory_order_relaxed);
        uint64_t ba = atomic_load_explicit(&a->bytes_alloc[s], memory_order_relaxed);
        uint64_t bf = atomic_load_explicit(&a->bytes_free[s], memory_order_relaxed);
        out->by_source[s].n_alloc += na;
        out->by_source[s].n_free += nf;
        out->by_source[s].bytes_alloc += ba;
        out->by_source[s].bytes_free += bf;
        if (s != HT_SOURCE_INVALID) {
            *blocks += (int64_t)(na - nf);
            *bytes += (int64_t)(ba - bf);
        }
    }
    *blocks -= (int64_t)atomic_load_explicit(&a->inplace_blocks, memory_order_relaxed);
    *bytes -= (int64_t)atomic_load_explicit(&a->inplace_bytes, memory_order_relaxed);
    out->n_invalid += atomic_load_explicit(&a->n_invalid, memory_order_relaxed);
}

void ht__stats_sum_locked(ht_heap *heap, ht_heap_stats *out)
{
    int64_t blocks = 0, bytes = 0;
    acc_sum(out, &heap->shared, &blocks, &bytes);
    for (ht_tcache *tc = heap->tcaches; tc != NULL; tc = tc->hnext)
        acc_sum(out, &tc->st, &blocks, &bytes);
    out->live_blocks = blocks > 0 ? (uint64_t)blocks : 0;
    out->live_bytes = bytes > 0 ? (uint64_t)bytes : 0;
}
