/* malloc.c — the exported malloc family, and glibc's __libc_* names for it, over the process
 * heap: every call is one state check and one heaptrail heap call. It owns initialization
 * (the first call from any thread, even before constructors run; a re-entry from inside it is
 * served by a static bootstrap arena), the fork hook (the child resumes tracing at its first
 * call) and the library constructor (options, tracing on). Nothing here calls malloc, uses
 * stdio or lazily allocated TLS. */
#include "heap/shim.h"
#include "preload/control.h"
#include "preload/internal.h"
#include "trace/trace.h"

#include <errno.h>
#include <heaptrail.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SHIM        __attribute__((visibility("default")))
#define TLS_IE      __attribute__((tls_model("initial-exec")))
#define LIKELY(x)   __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

#define ALIGN_MIN  ((size_t)16)        /* what malloc guarantees (glibc: 16 on x86_64) */
#define PAGE       ((size_t)4096)      /* valloc, pvalloc */
#define BOOT_SIZE  ((size_t)256 << 10) /* bootstrap arena bytes */
#define BOOT_ALIGN ((size_t)4096)      /* largest alignment the bootstrap arena serves */

enum {
    STATE_NEW = 0,   /* the heap is not ready yet (or could not be made) */
    STATE_READY = 1, /* g_heap is the process heap */
    STATE_FORKED = 2 /* a child forked while tracing: the next call resumes first */
};

static ht_heap *g_heap;     /* the process heap; valid once g_state is READY (release) */
static _Atomic int g_state; /* STATE_* */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static __thread int t_initializing TLS_IE; /* 1 while this thread makes the heap */

/* -- the bootstrap arena ------------------------------------------------------------------ */

/* A bump arena in .bss: zero from the start and never reused, so its blocks need no
 * clearing. Each block is preceded by its size. Blocks are never freed (free ignores them). */
typedef struct boot_hdr {
    size_t size; /* requested bytes */
    size_t pad_; /* keeps the user pointer 16-byte aligned */
} boot_hdr;

static _Alignas(4096) unsigned char g_boot[BOOT_SIZE];
static atomic_size_t g_boot_used; /* bytes of g_boot handed out, <= BOOT_SIZE */

static inline bool boot_owns(const void *p)
{
    return (uintptr_t)p - (uintptr_t)g_boot < BOOT_SIZE;
}

static void *boot_alloc(size_t size, size_t align)
{
    if (align < ALIGN_MIN)
        align = ALIGN_MIN;
    if (size > BOOT_SIZE || align > BOOT_ALIGN) {
        errno = ENOMEM;
        return NULL;
    }
    size_t used = atomic_load(&g_boot_used);
    for (;;) {
        uintptr_t start = (uintptr_t)g_boot + used + sizeof(boot_hdr);
        uintptr_t user = (start + align - 1) & ~(uintptr_t)(align - 1);
        size_t end = (size_t)(user - (uintptr_t)g_boot) + ((size + 15) & ~(size_t)15);
        if (end > BOOT_SIZE) {
            errno = ENOMEM;
            return NULL;
        }
        if (atomic_compare_exchange_weak(&g_boot_used, &used, end)) {
            ((boot_hdr *)user - 1)->size = size;
            return (void *)user;
        }
    }
}

static inline size_t boot_size(const void *p)
{
    return ((const boot_hdr *)p - 1)->size;
}

/* -- initialization and fork -------------------------------------------------------------- */

/* atfork child handler (registered after the heap's, so the heap's locks are new by now):
 * only notes the fork; the real work waits for the child's first call, outside any handler. */
static void after_fork_child(void)
{
    if (ht__preload_fork_child() && atomic_load(&g_state) == STATE_READY)
        atomic_store(&g_state, STATE_FORKED);
}

static void entries_register(void);

static void init_once(void)
{
    ht_heap *heap = ht_process_heap();
    if (heap == NULL)
        return; /* every call stays on the slow path and the bootstrap arena */
    g_heap = heap;
    entries_register();
    pthread_atfork(NULL, NULL, after_fork_child);
    atomic_store_explicit(&g_state, STATE_READY, memory_order_release);
}

/* NULL: serve the call from the bootstrap arena (re-entry while this thread initializes, or
 * no heap could be made). */
__attribute__((noinline)) static ht_heap *heap_slow(void)
{
    int state = atomic_load(&g_state);
    if (state == STATE_FORKED) {
        int expected = STATE_FORKED;
        /* READY first: the resume itself allocates (thread creation, file name) */
        if (atomic_compare_exchange_strong(&g_state, &expected, STATE_READY))
            ht__preload_fork_resume();
        return g_heap;
    }
    if (state == STATE_READY)
        return g_heap;
    if (t_initializing)
        return NULL;
    t_initializing = 1;
    pthread_once(&g_once, init_once);
    t_initializing = 0;
    return atomic_load_explicit(&g_state, memory_order_acquire) == STATE_READY ? g_heap : NULL;
}

static inline ht_heap *heap_get(void)
{
    if (LIKELY(atomic_load_explicit(&g_state, memory_order_acquire) == STATE_READY))
        return g_heap;
    return heap_slow();
}

/* Runs before main (after libc's own initialization): the options, then tracing. Calls made
 * earlier (ld.so, other constructors) already ran on the heap; the trace's rundown lists the
 * blocks they left live. */
__attribute__((constructor)) static void preload_init(void)
{
    (void)heap_get();
    ht__preload_options_read();
    if (ht__preload_cfg.enabled)
        (void)ht__preload_trace_on();
    if (ht__preload_cfg.control)
        (void)ht__ctl_start(); /* no channel (e.g. no writable /tmp): ctl says so */
    else
        ht__ctl_forget(); /* an earlier image of this process (before exec) may have had one */
}

/* -- the malloc family -------------------------------------------------------------------- */

/* Inline: a frame of its own would sit between the shim functions and the heap, outside the
 * entry points that recorded stacks are cut at. */
__attribute__((always_inline)) static inline void *alloc_aligned(size_t align, size_t size)
{
    ht_heap *heap = heap_get();
    if (UNLIKELY(heap == NULL))
        return boot_alloc(size, align);
    if (align <= ALIGN_MIN)
        return ht__heap_alloc_known(heap, 0, size);
    return ht_heap_alloc_aligned(heap, 0, size, align);
}

SHIM void *malloc(size_t size)
{
    ht_heap *heap = heap_get();
    if (UNLIKELY(heap == NULL))
        return boot_alloc(size, ALIGN_MIN);
    return ht__heap_alloc_known(heap, 0, size);
}

/* A pointer the heap does not own (ld.so's early blocks, another allocator's, a double
 * free): logged INVALID by the heap (when tracing), otherwise left alone: nothing is
 * written anywhere, the memory stays where it is. errno is kept, as glibc's free keeps it. */
SHIM void free(void *block)
{
    if (block == NULL || UNLIKELY(boot_owns(block)))
        return;
    ht_heap *heap = heap_get();
    if (UNLIKELY(heap == NULL))
        return;
    (void)ht__heap_free_keep_errno(heap, block);
}

SHIM void *calloc(size_t n, size_t size)
{
    size_t total;
    if (UNLIKELY(__builtin_mul_overflow(n, size, &total))) {
        errno = ENOMEM;
        return NULL;
    }
    ht_heap *heap = heap_get();
    if (UNLIKELY(heap == NULL))
        return boot_alloc(total, ALIGN_MIN); /* .bss: already zero */
    return ht__heap_alloc_known(heap, HT_HEAP_ZERO_MEMORY, total);
}

/* As glibc: realloc(NULL, n) is malloc(n); realloc(p, 0) frees p and returns NULL. A block
 * the heap does not own: NULL with errno EINVAL (logged INVALID), the block untouched. */
SHIM void *realloc(void *block, size_t size)
{
    if (block == NULL)
        return malloc(size);
    if (UNLIKELY(boot_owns(block))) {
        void *p = malloc(size);
        if (p != NULL) {
            size_t old = boot_size(block);
            memcpy(p, block, old < size ? old : size);
        }
        return p;
    }
    if (size == 0) {
        free(block);
        return NULL;
    }
    ht_heap *heap = heap_get();
    if (UNLIKELY(heap == NULL)) {
        errno = ENOMEM;
        return NULL;
    }
    return ht_heap_realloc(heap, 0, block, size);
}

SHIM void *reallocarray(void *block, size_t n, size_t size)
{
    size_t total;
    if (UNLIKELY(__builtin_mul_overflow(n, size, &total))) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(block, total);
}

/* alignment: a power of two and a multiple of sizeof(void *), else EINVAL (returned; errno
 * is left as it was). */
SHIM int posix_memalign(void **out, size_t alignment, size_t size)
{
    if (alignment < sizeof(void *) || (alignment & (alignment - 1)) != 0)
        return EINVAL;
    int saved = errno;
    void *p = alloc_aligned(alignment, size);
    if (p == NULL) {
        int rc = errno == EINVAL ? EINVAL : ENOMEM;
        errno = saved;
        return rc;
    }
    *out = p;
    return 0;
}

/* alignment: a power of two (C11), else NULL + EINVAL. */
SHIM void *aligned_alloc(size_t alignment, size_t size)
{
    if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
        errno = EINVAL;
        return NULL;
    }
    return alloc_aligned(alignment, size);
}

/* As glibc: an alignment that is not a power of two is rounded up to one; above
 * SIZE_MAX / 2 + 1 it is EINVAL. */
SHIM void *memalign(size_t alignment, size_t size)
{
    if (alignment > SIZE_MAX / 2 + 1) {
        errno = EINVAL;
        return NULL;
    }
    size_t a = ALIGN_MIN;
    while (a < alignment)
        a <<= 1;
    return alloc_aligned(a, size);
}

SHIM void *valloc(size_t size)
{
    return alloc_aligned(PAGE, size);
}

/* size rounded up to whole pages (0: one page). */
SHIM void *pvalloc(size_t size)
{
    if (size > SIZE_MAX - PAGE) {
        errno = ENOMEM;
        return NULL;
    }
    size_t rounded = size == 0 ? PAGE : (size + PAGE - 1) & ~(PAGE - 1);
    return alloc_aligned(PAGE, rounded);
}

/* The bytes the block can hold; 0 for NULL and for a pointer the heap does not own. */
SHIM size_t malloc_usable_size(void *block)
{
    if (block == NULL)
        return 0;
    if (UNLIKELY(boot_owns(block)))
        return boot_size(block);
    ht_heap *heap = heap_get();
    if (UNLIKELY(heap == NULL))
        return 0;
    int saved = errno;
    size_t n = ht_heap_usable_size(heap, block);
    if (n == (size_t)-1) {
        errno = saved;
        return 0;
    }
    return n;
}

/* glibc's own names (exported by libc.so.6 with GLIBC_2.2.5; some programs and libraries
 * call them directly). */
SHIM extern __typeof(malloc) __libc_malloc __attribute__((alias("malloc"), copy(malloc)));
SHIM extern __typeof(free) __libc_free __attribute__((alias("free"), copy(free)));
SHIM extern __typeof(calloc) __libc_calloc __attribute__((alias("calloc"), copy(calloc)));
SHIM extern __typeof(realloc) __libc_realloc __attribute__((alias("realloc"), copy(realloc)));
SHIM extern __typeof(memalign) __libc_memalign __attribute__((alias("memalign"), copy(memalign)));
SHIM extern __typeof(valloc) __libc_valloc __attribute__((alias("valloc"), copy(valloc)));
SHIM extern __typeof(pvalloc) __libc_pvalloc __attribute__((alias("pvalloc"), copy(pvalloc)));

/* -- stack capture ------------------------------------------------------------------------ */

/* Hidden aliases: their addresses are this library's code, taken PC-relative. The exported
 * names would be read through the GOT, which holds whatever definition won symbol lookup
 * (a non-PIE program that takes &posix_memalign makes its own PLT stub the canonical
 * address; another allocator preloaded first makes its function the answer). */
#define OWN(fn)                                                                                    \
    extern __typeof(fn) own_##fn __attribute__((alias(#fn), copy(fn), visibility("hidden")))
OWN(malloc);
OWN(free);
OWN(calloc);
OWN(realloc);
OWN(reallocarray);
OWN(posix_memalign);
OWN(aligned_alloc);
OWN(memalign);
OWN(valloc);
OWN(pvalloc);
OWN(malloc_usable_size);

/* Recorded stacks start at the program's call: these frames are heaptrail's (the __libc_
 * names are aliases of the same code). Only stores the addresses: runs inside malloc. */
static void entries_register(void)
{
    const uintptr_t entries[] = {(uintptr_t)own_malloc,
                                 (uintptr_t)own_free,
                                 (uintptr_t)own_calloc,
                                 (uintptr_t)own_realloc,
                                 (uintptr_t)own_reallocarray,
                                 (uintptr_t)own_posix_memalign,
                                 (uintptr_t)own_aligned_alloc,
                                 (uintptr_t)own_memalign,
                                 (uintptr_t)own_valloc,
                                 (uintptr_t)own_pvalloc,
                                 (uintptr_t)own_malloc_usable_size};
    for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++)
        ht__trace_add_entry(entries[i]);
}
