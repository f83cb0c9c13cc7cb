/* heap.c — heap objects: the heap table (handles are checked against it, so a bad handle is
 * EINVAL, never a crash), the registry, create/destroy, the process heap, options, locks,
 * statistics, and tracing control (per-heap switch, rundown). */
#include "heap/internal.h"

#include "common/log.h"
#include "trace/trace.h"

#include <errno.h>
#include <linux/membarrier.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define TLS_IE __attribute__((tls_model("initial-exec")))

#define HEAP_SLOT_SIZE HT_HEAP_SLOT_SIZE
_Static_assert(sizeof(ht_heap) <= HEAP_SLOT_SIZE, "ht_heap must fit its slot");
_Static_assert(offsetof(ht_heap, magic) == 0, "heap_create clears everything after magic");

ht_rlock ht__registry_lock;
uint8_t *ht__heap_table; /* HT_MAX_HEAPS slots of HEAP_SLOT_SIZE */
#define g_table ht__heap_table
static uint8_t g_slot_used[HT_MAX_HEAPS]; /* registry lock */
static uint64_t g_next_gen = 1;           /* registry lock */
static bool g_init_ok;
static pthread_once_t g_init_once = PTHREAD_ONCE_INIT;
static bool g_trace_active;                  /* registry lock */
static uint64_t g_trace_session;             /* sessions started (registry lock) */
static _Atomic uint64_t g_trace_session_now; /* g_trace_session while it runs, else 0 */
static bool g_trace_heaps_off;               /* new heaps start disabled */
static ht_heap *g_process_heap;
static int g_membarrier;       /* MEMBARRIER_CMD_* that makes every thread's stores visible, or 0 */
static _Atomic int g_unlisted; /* calls in flight on threads on no list (gate) */
static __thread int t_unlisted TLS_IE;  /* the calling thread's share of it */
static __thread int t_api_locks TLS_IE; /* heaps the calling thread holds with ht_heap_lock */
static atomic_int g_rundown_busy;       /* 1 while a rundown waits and walks: one at a time */
static pthread_once_t g_process_once = PTHREAD_ONCE_INIT;

#define CREATE_FLAGS                                                                               \
    (HT_HEAP_NO_SERIALIZE | HT_HEAP_GENERATE_EXCEPTIONS | HT_HEAP_ENABLE_LFH |                     \
     HT_HEAP_TERMINATE_ON_CORRUPTION)

/* fork: hold every lock across it so the child never inherits one held by a thread that
 * does not exist there (registry first, then each heap's bins and heap lock). */
static void fork_prepare(void)
{
    ht__rlock_lock(&ht__registry_lock);
    for (unsigned i = 0; i < HT_MAX_HEAPS; i++) {
        ht_heap *heap = (ht_heap *)(g_table + (size_t)i * HEAP_SLOT_SIZE);
        if (g_slot_used[i] && atomic_load(&heap->magic) == HT_HEAP_MAGIC)
            ht__heap_lock_all(heap);
    }
    ht__tcache_fork_prepare(); /* a thread making its first tcache holds a pool lock */
}

static void fork_release(void)
{
    ht__tcache_fork_parent();
    for (unsigned i = HT_MAX_HEAPS; i-- > 0;) {
        ht_heap *heap = (ht_heap *)(g_table + (size_t)i * HEAP_SLOT_SIZE);
        if (g_slot_used[i] && atomic_load(&heap->magic) == HT_HEAP_MAGIC)
            ht__heap_unlock_all(heap);
    }
    ht__rlock_unlock(&ht__registry_lock);
}

/* The child is single-threaded: its thread, the one that forked, holds every lock that
 * fork_prepare took, and lets go of them all — also an ht_heap_lock it held (the API owner
 * is named by kernel thread id, which the child's thread no longer has), so the child finds
 * no lock held. Released, not made anew: a mutex re-initialised while held is undefined
 * (TSan reports a double lock when a thread of the child takes it); ht_rlock names its owner
 * by pthread_self(), which the child's thread keeps (src/common/lock.h). */
static void fork_child(void)
{
    for (unsigned i = 0; i < HT_MAX_HEAPS; i++) {
        ht_heap *heap = (ht_heap *)(g_table + (size_t)i * HEAP_SLOT_SIZE);
        if (!g_slot_used[i] || atomic_load(&heap->magic) != HT_HEAP_MAGIC)
            continue;
        /* a rundown under way in the parent has no thread here: its heaps are traced as if
         * it had walked them (the child writes none of the parent's trace) */
        if (atomic_load(&heap->trace_on) > HT_TSW_ON)
            atomic_store(&heap->trace_on, HT_TSW_ON);
        heap->n_rundown = 0;
        if (!heap->serialize)
            continue; /* fork_prepare took none of its locks */
        atomic_store(&heap->api_owner, 0);
        heap->api_depth = 0;
        ht__rlock_fork_child(&heap->lock);
        for (unsigned a = 0; a < HT_LFH_AFFINITY; a++)
            for (unsigned c = 0; c < HT_N_CLASSES; c++)
                ht__spin_unlock(&heap->bins[a][c].lock);
    }
    t_api_locks = 0;
    atomic_store(&g_unlisted, 0); /* the parent's other threads are not here */
    atomic_store(&g_rundown_busy, 0);
    t_unlisted = 0;
    ht__tcache_fork_child();
    ht__rlock_fork_child(&ht__registry_lock);
}

static void init(void)
{
    ht__rlock_init(&ht__registry_lock);
    size_t bytes = HT_MAX_HEAPS * HEAP_SLOT_SIZE;
    g_table = ht__os.reserve(bytes);
    if (g_table == NULL)
        return;
    if (!ht__os.commit(g_table, bytes) || !ht__segmap_init()) {
        ht__os.release(g_table, bytes);
        g_table = NULL;
        return;
    }
    pthread_atfork(fork_prepare, fork_release, fork_child);
    /* for the rundown's wait for calls in flight (calls_drain) */
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0)
        g_membarrier = MEMBARRIER_CMD_PRIVATE_EXPEDITED;
    else if ((syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0) & MEMBARRIER_CMD_GLOBAL) != 0)
        g_membarrier = MEMBARRIER_CMD_GLOBAL;
    g_init_ok = true;
}

void ht__heap_init_once(void)
{
    pthread_once(&g_init_once, init);
}

ht_heap *ht__heap_check_fail(void)
{
    errno = EINVAL;
    return NULL;
}

/* ---- locks ---- */

static inline bool api_held_here(ht_heap *heap)
{
    int owner = atomic_load_explicit(&heap->api_owner, memory_order_relaxed);
    return owner != 0 && (uint32_t)owner == ht__trace_tid();
}

void ht__heap_lock(ht_heap *heap)
{
    if (heap->serialize)
        ht__rlock_lock(&heap->lock);
}

void ht__heap_unlock(ht_heap *heap)
{
    if (heap->serialize)
        ht__rlock_unlock(&heap->lock);
}

void ht__heap_lock_all(ht_heap *heap)
{
    if (!heap->serialize)
        return;
    if (!api_held_here(heap))
        for (unsigned a = 0; a < HT_LFH_AFFINITY; a++)
            for (unsigned c = 0; c < HT_N_CLASSES; c++)
                ht__spin_lock(&heap->bins[a][c].lock);
    ht__rlock_lock(&heap->lock);
}

void ht__heap_unlock_all(ht_heap *heap)
{
    if (!heap->serialize)
        return;
    ht__rlock_unlock(&heap->lock);
    if (!api_held_here(heap))
        for (unsigned a = HT_LFH_AFFINITY; a-- > 0;)
            for (unsigned c = HT_N_CLASSES; c-- > 0;)
                ht__spin_unlock(&heap->bins[a][c].lock);
}

bool ht_heap_lock(ht_heap *h)
{
    ht_heap *heap = ht__heap_check(h);
    if (heap == NULL)
        return false;
    if (!heap->serialize)
        return true;
    if (api_held_here(heap)) {
        heap->api_depth++;
        return true;
    }
    ht__heap_lock_all(heap);
    atomic_store_explicit(&heap->api_owner, (int)ht__trace_tid(), memory_order_relaxed);
    heap->api_depth = 1;
    t_api_locks++;
    return true;
}

bool ht_heap_unlock(ht_heap *h)
{
    ht_heap *heap = ht__heap_check(h);
    if (heap == NULL)
        return false;
    if (!heap->serialize)
        return true;
    if (!api_held_here(heap)) {
        errno = EPERM;
        return false;
    }
    if (--heap->api_depth > 0)
        return true;
    atomic_store_explicit(&heap->api_owner, 0, memory_order_relaxed);
    ht__heap_unlock_all(heap);
    t_api_locks--;
    return true;
}

/* ---- events ---- */

void ht__op_emit_pending(ht_heap *heap, ht_op *op)
{
    (void)heap;
    for (unsigned i = 0; i < op->n_pending; i++)
        ht__trace_emit(&op->pending[i]);
    op->n_pending = 0;
}

static void emit_simple(ht_heap *heap, uint16_t type, uint64_t ts, uint16_t flags)
{
    ht_event ev;
    memset(&ev, 0, sizeof ev);
    ev.timestamp_ns = ts;
    ev.type = type;
    ev.flags = flags;
    ev.heap_handle = (uintptr_t)heap;
    if (type == HT_EVENT_HEAP_CREATE) {
        ev.create.flags = heap->flags;
        ev.create.reserved_space = heap->reserved;
        ev.create.committed_space = heap->committed;
    }
    ht__trace_emit(&ev);
}

/* ---- options ---- */

static void set_depths(ht_heap *heap)
{
    for (unsigned c = 0; c < HT_N_CLASSES; c++) {
        size_t d;
        if (heap->la_depth_opt == SIZE_MAX) {
            d = ((size_t)64 << 10) / ht__class_size[c];
            d = d < 4 ? 4 : d > 128 ? 128 : d;
        } else {
            d = heap->la_depth_opt;
        }
        heap->la_depth[c] = (uint16_t)d;
    }
}

bool ht_heap_set_option(ht_heap *h, ht_heap_option option, size_t value)
{
    ht_heap *heap = ht__heap_check(h);
    if (heap == NULL)
        return false;
    bool ok = true;
    ht__heap_lock(heap);
    switch (option) {
    case HT_OPT_LFH_THRESHOLD:
        if (value > UINT32_MAX) {
            ok = false;
            break;
        }
        heap->lfh_threshold = (uint32_t)value;
        for (unsigned c = 0; c < HT_N_CLASSES; c++)
            if (heap->class_n_main[c] >= value)
                atomic_store(&heap->class_active[c], 1);
        break;
    case HT_OPT_LARGE_THRESHOLD:
        if (value < ((size_t)64 << 10) || value > ((size_t)2 << 20)) {
            ok = false;
            break;
        }
        heap->large_threshold = value;
        break;
    case HT_OPT_DECOMMIT_THRESHOLD:
        heap->decommit_threshold = value;
        break;
    case HT_OPT_LOOKASIDE_DEPTH:
        if (value != SIZE_MAX && value > 1024) {
            ok = false;
            break;
        }
        heap->la_depth_opt = value;
        set_depths(heap);
        break;
    default:
        ok = false;
        break;
    }
    ht__heap_unlock(heap);
    if (!ok)
        errno = EINVAL;
    return ok;
}

bool ht_heap_get_option(ht_heap *h, ht_heap_option option, size_t *value)
{
    ht_heap *heap = ht__heap_check(h);
    if (heap == NULL)
        return false;
    if (value == NULL) {
        errno = EINVAL;
        return false;
    }
    switch (option) {
    case HT_OPT_LFH_THRESHOLD:
        *value = heap->lfh_threshold;
        return true;
    case HT_OPT_LARGE_THRESHOLD:
        *value = heap->large_threshold;
        return true;
    case HT_OPT_DECOMMIT_THRESHOLD:
        *value = heap->decommit_threshold;
        return true;
    case HT_OPT_LOOKASIDE_DEPTH:
        *value = heap->la_depth_opt;
        return true;
    }
    errno = EINVAL;
    return false;
}

unsigned ht_lfh_class_count(void)
{
    return HT_N_CLASSES;
}

size_t ht_lfh_class_size(unsigned index)
{
    return index < HT_N_CLASSES ? ht__class_size[index] : 0;
}

/* ---- create / destroy ---- */

static ht_heap *heap_create(unsigned flags, size_t initial_size, size_t maximum_size, int slot)
{
    ht__heap_init_once();
    if (!g_init_ok) {
        errno = ENOMEM;
        return NULL;
    }
    if ((flags & ~CREATE_FLAGS) != 0) {
        errno = EINVAL;
        return NULL;
    }
    ht__rlock_lock(&ht__registry_lock);
    if (slot < 0) {
        for (int i = 1; i < (int)HT_MAX_HEAPS; i++)
            if (!g_slot_used[i]) {
                slot = i;
                break;
            }
    }
    if (slot < 0) {
        ht__rlock_unlock(&ht__registry_lock);
        errno = ENOMEM;
        return NULL;
    }
    g_slot_used[slot] = 1;
    uint64_t gen = g_next_gen++;
    ht__rlock_unlock(&ht__registry_lock);

    ht_heap *heap = (ht_heap *)(g_table + (size_t)slot * HEAP_SLOT_SIZE);
    /* all but magic, which is 0 here (fresh, or destroyed) and which the registry's scans of
     * used slots read (atomically) meanwhile */
    memset((uint8_t *)heap + offsetof(ht_heap, index), 0, sizeof *heap - offsetof(ht_heap, index));
    heap->index = (uint32_t)slot;
    heap->gen = gen;
    heap->flags = flags;
    heap->serialize = (flags & HT_HEAP_NO_SERIALIZE) == 0;
    heap->lfh_threshold = (flags & HT_HEAP_ENABLE_LFH) != 0 ? 0 : 17;
    heap->large_threshold = (size_t)1 << 20;
    heap->decommit_threshold = (size_t)32 << 20;
    heap->la_depth_opt = SIZE_MAX;
    set_depths(heap);
    for (unsigned c = 0; c < HT_N_CLASSES; c++)
        atomic_store(&heap->class_active[c], heap->lfh_threshold == 0 ? 1u : 0u);
    if (maximum_size != 0) {
        heap->max_commit = ht__align_up(maximum_size, HT_COMMIT_ALIGN);
        if (heap->max_commit < maximum_size)
            heap->max_commit = SIZE_MAX;
    }
    ht__rlock_init(&heap->lock);

    ht_op op = {false, false, 0, {{0}}};
    size_t initial = initial_size;
    if (heap->max_commit != 0 && initial > heap->max_commit)
        initial = heap->max_commit;
    if (initial > HT_SEG_AREA_MAX)
        initial = HT_SEG_AREA_MAX - 2 * sizeof(ht_mblock);
    if (ht__segment_new(heap, initial, &op) == NULL) {
        ht__rlock_destroy(&heap->lock);
        ht__rlock_lock(&ht__registry_lock);
        g_slot_used[slot] = 0;
        ht__rlock_unlock(&ht__registry_lock);
        errno = ENOMEM;
        return NULL;
    }
    /* Published under the registry lock, with its switch and its HEAP_CREATE: a session that
     * starts concurrently either finds it live (and lists it in its rundown) or started before
     * (and the heap logs its own HEAP_CREATE), never neither nor both. */
    ht__rlock_lock(&ht__registry_lock);
    bool trace = g_trace_active && !g_trace_heaps_off;
    heap->trace_enabled = !g_trace_heaps_off;
    atomic_store(&heap->trace_on, trace ? HT_TSW_ON : HT_TSW_OFF);
    atomic_store_explicit(&heap->magic, HT_HEAP_MAGIC, memory_order_release);
    if (trace)
        emit_simple(heap, HT_EVENT_HEAP_CREATE, ht__trace_now(), 0);
    ht__rlock_unlock(&ht__registry_lock);
    return heap;
}

ht_heap *ht_heap_create(unsigned flags, size_t initial_size, size_t maximum_size)
{
    return heap_create(flags, initial_size, maximum_size, -1);
}

static void process_heap_make(void)
{
    ht__heap_init_once();
    g_process_heap = heap_create(0, 0, 0, 0);
}

ht_heap *ht_process_heap(void)
{
    pthread_once(&g_process_once, process_heap_make);
    return g_process_heap;
}

/* Waits until no rundown still has heap to walk (they list it under the registry lock, walk
 * it outside, then let go): a heap live when a session started is listed there, blocks and
 * all, even when it is destroyed while the rundown is under way. The caller has made the heap
 * dead (magic 0) and holds none of its locks. */
static void rundown_wait(ht_heap *heap)
{
    for (unsigned n = 0;; n++) {
        ht__rlock_lock(&ht__registry_lock);
        uint32_t pending = heap->n_rundown;
        ht__rlock_unlock(&ht__registry_lock);
        if (pending == 0)
            return;
        if (n < 64) {
            sched_yield();
        } else {
            struct timespec t = {0, 100 * 1000};
            nanosleep(&t, NULL);
        }
    }
}

bool ht_heap_destroy(ht_heap *h)
{
    ht_heap *heap = ht__heap_check(h);
    if (heap == NULL)
        return false;
    if (heap == g_process_heap) {
        errno = EINVAL;
        return false;
    }
    ht__rlock_lock(&ht__registry_lock);
    unsigned expected = HT_HEAP_MAGIC;
    if (!atomic_compare_exchange_strong(&heap->magic, &expected, 0)) {
        ht__rlock_unlock(&ht__registry_lock);
        errno = EINVAL;
        return false;
    }
    /* Decided under the registry lock, as ht_trace_start lists the heaps: a heap that a
     * session's rundown lists logs its HEAP_DESTROY in that session. */
    bool trace = atomic_load(&heap->trace_on) != HT_TSW_OFF;
    uint64_t ts = trace ? ht__trace_now() : 0;
    ht__tcache_detach_all_locked(heap);
    ht__rlock_unlock(&ht__registry_lock);
    if (heap->serialize && api_held_here(heap)) {
        /* destroyed by the thread that holds it locked: the lock goes with the heap (and a
         * rundown waiting for it, below, can go on) */
        atomic_store_explicit(&heap->api_owner, 0, memory_order_relaxed);
        heap->api_depth = 0;
        ht__heap_unlock_all(heap);
        t_api_locks--;
    }
    rundown_wait(heap);

    while (heap->segs != NULL)
        ht__segment_release(heap, heap->segs, NULL);
    while (heap->larges != NULL) {
        ht_large *l = heap->larges;
        heap->larges = l->next;
        ht__large_release(heap, l, NULL);
    }
    while (heap->large_cache != NULL) {
        ht_large *l = heap->large_cache;
        heap->large_cache = l->next;
        ht__large_release(heap, l, NULL);
    }
    ht__rlock_destroy(&heap->lock);
    if (trace)
        emit_simple(heap, HT_EVENT_HEAP_DESTROY, ts, 0);
    ht__rlock_lock(&ht__registry_lock);
    heap->gen = 0;
    g_slot_used[heap->index] = 0;
    ht__rlock_unlock(&ht__registry_lock);
    return true;
}

void ht_heap_get_stats(ht_heap *h, ht_heap_stats *out)
{
    if (out == NULL)
        return;
    memset(out, 0, sizeof *out);
    ht_heap *heap = ht__heap_check(h);
    if (heap == NULL)
        return;
    ht__rlock_lock(&ht__registry_lock);
    ht__stats_sum_locked(heap, out);
    ht__rlock_unlock(&ht__registry_lock);
    ht__heap_lock(heap);
    out->committed = heap->committed;
    out->reserved = heap->reserved;
    ht__heap_unlock(heap);
}

/* ---- tracing control ---- */

static void pause_briefly(unsigned n)
{
    if (n < 16) {
        sched_yield();
    } else {
        struct timespec t = {0, 50 * 1000};
        nanosleep(&t, NULL);
    }
}

void ht__op_unlisted_begin(void)
{
    t_unlisted++;
    atomic_fetch_add(&g_unlisted, 1); /* before the switch is read (seq_cst) */
}

void ht__op_unlisted_end(void)
{
    atomic_fetch_sub(&g_unlisted, 1);
    t_unlisted--;
}

/* A call may not wait for a walk while it holds some heap's ht_heap_lock (the walk may need
 * that heap first, or a call the rundown waits for may) or runs inside a consumer (its outer
 * call is one the rundown may wait for). */
static bool call_may_wait(void)
{
    return t_api_locks == 0 && !ht__trace_in_consumer();
}

unsigned ht__trace_gate(ht_heap *heap, unsigned sw)
{
    for (unsigned n = 0; sw > HT_TSW_ON; n++) {
        ht_tls *tls = ht__tls;
        if (!call_may_wait() && tls != NULL && tls->serial != 0) {
            /* Go on untraced; the walk waits for this call: it counts itself, then reads the
             * switch again (a Dekker with rundown_try's WALKING and exempt_drain: seq_cst). */
            atomic_store(&tls->exempt_gen, atomic_load(&tls->exempt_gen) + 1);
            sw = atomic_load(&heap->trace_on);
            if (sw != HT_TSW_WALKING)
                return sw;
        }
        /* Wait, out of the call (it has changed nothing yet), so that the rundown does not
         * wait for it: for the walk, or, for a call that may not wait for all of the rundown,
         * only while the heap is WALKING (its walk holds no lock of this thread's). */
        unsigned until = call_may_wait() ? HT_TSW_ON : HT_TSW_PENDING;
        ht__op_end();
        if (t_unlisted != 0)
            atomic_fetch_sub(&g_unlisted, t_unlisted);
        while (atomic_load_explicit(&heap->trace_on, memory_order_acquire) > until)
            pause_briefly(n++);
        if (t_unlisted != 0)
            atomic_fetch_add(&g_unlisted, t_unlisted);
        ht__op_begin();
        sw = atomic_load_explicit(&heap->trace_on, memory_order_acquire);
        if (until == HT_TSW_PENDING && sw == HT_TSW_PENDING && (tls == NULL || tls->serial == 0))
            return sw; /* on no list and may not wait: untraced (docs/heap.md, "Rundown") */
    }
    return sw;
}

/* -- the rundown's waits --
 * calls_drain: every call in flight when the heaps went PENDING is over (those that read OFF
 * change nothing after the walk); exempt_drain: every call that went past a pending rundown
 * untraced (ht__trace_gate) is over. Both note, under the list lock, each thread to wait on,
 * then poll until they have been seen out of a call (or left the list). */

static void note_in_call(ht_tls *tls, void *ctx)
{
    (void)ctx;
    /* after the switches went PENDING (seq_cst) */
    tls->waiting = tls != ht__tls && atomic_load(tls->in_call) != 0;
}

static void note_exempt(ht_tls *tls, void *ctx)
{
    (void)ctx;
    uint64_t gen = atomic_load(&tls->exempt_gen); /* after WALKING (seq_cst) */
    tls->waiting = false;
    if (gen != tls->exempt_seen) {
        tls->exempt_seen = gen;
        tls->waiting = tls != ht__tls && atomic_load(tls->in_call) != 0;
    }
}

static void count_waiting(ht_tls *tls, void *ctx)
{
    if (!tls->waiting)
        return;
    if (atomic_load_explicit(tls->in_call, memory_order_acquire) == 0)
        tls->waiting = false;
    else
        ++*(unsigned *)ctx;
}

static void wait_noted(void)
{
    for (unsigned n = 0;; n++) {
        unsigned left = 0;
        ht__tls_each(count_waiting, &left);
        if (left == 0)
            return;
        pause_briefly(n);
    }
}

static void calls_drain(void)
{
    /* Every other thread's in_call store before its switch load is visible from here on, or
     * that load sees PENDING (membarrier: a full barrier on each of them). */
    if (g_membarrier != 0)
        syscall(SYS_membarrier, g_membarrier, 0, 0);
    ht__tls_each(note_in_call, NULL);
    wait_noted();
    for (unsigned n = 0; atomic_load(&g_unlisted) > t_unlisted; n++)
        pause_briefly(n);
}

static void exempt_drain(void)
{
    ht__tls_each(note_exempt, NULL);
    wait_noted();
}

/* Every lock of heap if none is held by another thread (the walk of a heap that another
 * thread holds with ht_heap_lock waits for it, and lets other heaps go first). */
static bool heap_trylock_all(ht_heap *heap)
{
    if (!heap->serialize)
        return true;
    bool api = api_held_here(heap);
    unsigned a = 0, c = 0;
    if (!api) {
        for (a = 0; a < HT_LFH_AFFINITY; a++)
            for (c = 0; c < HT_N_CLASSES; c++)
                if (atomic_exchange_explicit(&heap->bins[a][c].lock.held, 1,
                                             memory_order_acquire) != 0)
                    goto fail;
    }
    if (ht__rlock_trylock(&heap->lock))
        return true;
    a = HT_LFH_AFFINITY;
    c = 0;
fail:
    if (!api) {
        /* release the bins taken: every one before (a, c) in array order */
        for (unsigned i = 0; i < HT_LFH_AFFINITY; i++)
            for (unsigned j = 0; j < HT_N_CLASSES; j++)
                if (i < a || (i == a && j < c))
                    ht__spin_unlock(&heap->bins[i][j].lock);
    }
    return false;
}

static void set_all_trace_locked(bool session)
{
    for (unsigned i = 0; i < HT_MAX_HEAPS; i++) {
        if (!g_slot_used[i])
            continue;
        ht_heap *heap = (ht_heap *)(g_table + (size_t)i * HEAP_SLOT_SIZE);
        if (atomic_load(&heap->magic) != HT_HEAP_MAGIC)
            continue;
        atomic_store(&heap->trace_on, session && heap->trace_enabled ? HT_TSW_ON : HT_TSW_OFF);
    }
}

/* One heap's rundown: HEAP_CREATE and one HEAP_ALLOC per live block, flagged RUNDOWN and
 * stamped ts (rundown_stamp). Once no call that went past the pending switch untraced is left
 * (exempt_drain), the walk takes every lock of the heap and sees it still: every call of the
 * heap that read OFF is over (calls_drain), every other waits at its entry until the switch is
 * ON, after the walk. The events are gathered under the locks into a temporary mapping, then
 * delivered. Returns false when the heap is held by another thread (try again later). */
static bool rundown_try(ht_heap *heap, uint64_t session, uint64_t ts)
{
    uint8_t sw = HT_TSW_PENDING;
    if (atomic_load(&g_trace_session_now) != session ||
        !atomic_compare_exchange_strong(&heap->trace_on, &sw, HT_TSW_WALKING))
        return true; /* stopped, or switched off: nothing to list */
    exempt_drain();
    if (!heap_trylock_all(heap)) {
        atomic_store(&heap->trace_on, HT_TSW_PENDING);
        return false;
    }
    ht_event create; /* its sizes read under the locks too */
    memset(&create, 0, sizeof create);
    create.timestamp_ns = ts;
    create.type = HT_EVENT_HEAP_CREATE;
    create.flags = HT_EVENT_RUNDOWN;
    create.heap_handle = (uintptr_t)heap;
    create.create.flags = heap->flags;
    create.create.reserved_space = heap->reserved;
    create.create.committed_space = heap->committed;
    size_t n = 0;
    ht_heap_entry e;
    e.address = NULL;
    while (ht__walk_locked(heap, &e))
        if (e.state & HT_ENTRY_BUSY)
            n++;
    ht_event *evs = NULL;
    size_t bytes = ht__align_up((n + 1) * sizeof(ht_event), HT_PAGE_SIZE);
    if (n != 0)
        evs = ht__os.map_rw(bytes);
    size_t k = 0;
    if (evs != NULL) {
        e.address = NULL;
        while (k < n && ht__walk_locked(heap, &e)) {
            if ((e.state & HT_ENTRY_BUSY) == 0)
                continue;
            ht_event *ev = &evs[k++];
            memset(ev, 0, sizeof *ev);
            ev->timestamp_ns = ts;
            ev->type = HT_EVENT_HEAP_ALLOC;
            ev->flags = HT_EVENT_RUNDOWN;
            ev->heap_handle = (uintptr_t)heap;
            ev->alloc.size = e.size;
            ev->alloc.address = (uintptr_t)e.address;
            ev->alloc.source = e.source;
        }
    }
    sw = HT_TSW_WALKING;
    bool on = atomic_compare_exchange_strong(&heap->trace_on, &sw, HT_TSW_ON);
    ht__heap_unlock_all(heap);
    if (on) {
        ht__trace_emit(&create);
        for (size_t i = 0; i < k; i++)
            ht__trace_emit(&evs[i]);
    }
    if (evs != NULL)
        ht__os.release(evs, bytes);
    return true;
}

/* The rundowns of the listed heaps (each pinned by n_rundown), heaps held by other threads
 * last; unpins each once done. */
static void rundown_all(ht_heap **list, unsigned n_list, uint64_t session, uint64_t ts)
{
    unsigned left = n_list;
    for (unsigned round = 0; left != 0; round++) {
        bool progress = false;
        for (unsigned i = 0; i < n_list; i++) {
            if (list[i] == NULL || !rundown_try(list[i], session, ts))
                continue;
            ht__rlock_lock(&ht__registry_lock);
            if (list[i]->n_rundown != 0) /* 0: a child forked meanwhile (fork_child) */
                list[i]->n_rundown--;
            ht__rlock_unlock(&ht__registry_lock);
            list[i] = NULL;
            left--;
            progress = true;
        }
        if (!progress)
            pause_briefly(round);
    }
}

/* The rundown's stamp, taken once the session started and before any heap is traced: earlier
 * than every event of the session, so that a block's FREE or a heap's event on another thread
 * that runs while the walk is under way sorts after the rundown's record of it. Those read the
 * clock later, or (under the TSC) reuse a stamp no earlier than the clock word the session
 * start published (src/common/os.h): HT_STAMP_STEP before that word. */
static uint64_t rundown_stamp(void)
{
    uint64_t now = ht__trace_now();
    uint64_t word = atomic_load_explicit(&ht__os_clock_line.word, memory_order_relaxed);
    if (atomic_load_explicit(&ht__os_clock, memory_order_relaxed) == HT_CLOCK_TSC &&
        (word & HT_STAMP_TSC) != 0 && word <= now && (word & ~HT_STAMP_TSC) > HT_STAMP_STEP)
        return word - HT_STAMP_STEP; /* before, not tied with, a stamp reusing that word */
    return now;
}

int ht_trace_start(const ht_trace_config *config)
{
    if (config == NULL)
        return -EINVAL;
    ht__heap_init_once();
    bool rundown = (config->flags & HT_TRACE_NO_RUNDOWN) == 0;
    size_t list_size = ht__align_up(HT_MAX_HEAPS * sizeof(ht_heap *), HT_PAGE_SIZE);
    ht_heap **list = rundown ? ht__os.map_rw(list_size) : NULL;
    if (rundown && list == NULL)
        return -ENOMEM;
    ht__rlock_lock(&ht__registry_lock);
    int rc = ht__trace_session_start(config);
    if (rc != 0) {
        ht__rlock_unlock(&ht__registry_lock);
        if (list != NULL)
            ht__os.release(list, list_size);
        return rc;
    }
    g_trace_active = true;
    g_trace_heaps_off = (config->flags & HT_TRACE_HEAPS_OFF) != 0;
    uint64_t session = ++g_trace_session;
    atomic_store(&g_trace_session_now, session);
    const uint64_t rundown_ts = rundown_stamp();
    /* The heaps live now, every one of them, listed while the switches go on and pinned
     * (n_rundown) so that a destroy waits for its walk: the rundown covers exactly these. */
    unsigned n_list = 0;
    for (unsigned i = 0; i < HT_MAX_HEAPS; i++) {
        if (!g_slot_used[i])
            continue;
        ht_heap *heap = (ht_heap *)(g_table + (size_t)i * HEAP_SLOT_SIZE);
        if (atomic_load(&heap->magic) != HT_HEAP_MAGIC)
            continue;
        heap->trace_enabled = !g_trace_heaps_off;
        uint8_t sw = heap->trace_enabled ? HT_TSW_ON : HT_TSW_OFF;
        if (list != NULL && heap->trace_enabled) {
            heap->n_rundown++;
            list[n_list++] = heap;
            sw = HT_TSW_PENDING; /* calls wait at their entry until the walk */
        }
        atomic_store(&heap->trace_on, sw);
    }
    ht__rlock_unlock(&ht__registry_lock);
    if (list == NULL)
        return 0;
    if (n_list != 0) {
        for (unsigned n = 0; atomic_exchange(&g_rundown_busy, 1) != 0; n++)
            pause_briefly(n); /* a stopped session's rundown, finishing */
        calls_drain();
        rundown_all(list, n_list, session, rundown_ts);
        atomic_store(&g_rundown_busy, 0);
    }
    ht__os.release(list, list_size);
    return 0;
}

int ht_trace_stop(void)
{
    ht__heap_init_once();
    ht__rlock_lock(&ht__registry_lock);
    if (!g_trace_active) {
        ht__rlock_unlock(&ht__registry_lock);
        return -EINVAL;
    }
    g_trace_active = false;
    atomic_store(&g_trace_session_now, 0);
    set_all_trace_locked(false);
    ht__rlock_unlock(&ht__registry_lock);
    return ht__trace_session_stop();
}

bool ht_trace_enable_heap(ht_heap *h, bool on)
{
    ht_heap *heap = ht__heap_check(h);
    if (heap == NULL)
        return false;
    ht__rlock_lock(&ht__registry_lock);
    bool old = heap->trace_enabled;
    heap->trace_enabled = on;
    /* Blocks freed while the heap was untraced sit on lookaside lists with no clock read
     * behind them: a later hit's reused stamp (ht__trace_now_local) must not sort before the
     * ALLOCs traced earlier. The writer republishes on its next pass. */
    if (on && !old && g_trace_active)
        ht__os_clock_word_publish();
    uint8_t sw = atomic_load(&heap->trace_on);
    if (!on || sw <= HT_TSW_ON) /* a pending rundown switches it on itself */
        atomic_store(&heap->trace_on, g_trace_active && on ? HT_TSW_ON : HT_TSW_OFF);
    ht__rlock_unlock(&ht__registry_lock);
    return old;
}
