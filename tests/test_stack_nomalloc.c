/* test_stack_nomalloc.c — proves the stack code never calls malloc where the recorder will call
 * it from inside malloc: this program interposes malloc/calloc/realloc/free (forwarding to
 * glibc's __libc_* entry points) and counts calls made while a thread-local flag is up,
 * around first and later captures on fresh threads (both unwinders), drains and module scans.
 * It must not be linked with anything else that defines malloc. */
#include "harness.h"

#include "trace/stack.h"

#include <pthread.h>
#include <stdatomic.h>

/* Sanitizers own malloc themselves: with one, this test only reports a skip. */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

#if SANITIZED
int main(void)
{
    printf("skip: a sanitizer owns malloc in this build\n0 passed, 0 failed\n");
    return 0;
}
#else

void *__libc_malloc(size_t size);
void *__libc_calloc(size_t n, size_t size);
void *__libc_realloc(void *p, size_t size);
void __libc_free(void *p);

static __thread int t_counting __attribute__((tls_model("initial-exec")));
static atomic_int g_n_calls; /* malloc-family calls made while some thread was counting */

static void note_call(void)
{
    if (t_counting)
        atomic_fetch_add(&g_n_calls, 1);
}

void *malloc(size_t size)
{
    note_call();
    return __libc_malloc(size);
}

void *calloc(size_t n, size_t size)
{
    note_call();
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t size)
{
    note_call();
    return __libc_realloc(p, size);
}

void free(void *p)
{
    note_call();
    __libc_free(p);
}

#define KEEP_FRAME() __asm__ volatile("" ::: "memory")

uint32_t deep(unsigned n, unsigned salt);
uint32_t deep_b(unsigned n, unsigned salt);

/* Distinct stacks per salt (each bit picks deep or deep_b on the way down), n levels. */
__attribute__((noinline)) uint32_t deep(unsigned n, unsigned salt)
{
    uint32_t id;
    if (n == 0)
        id = ht__stack_capture(0, 0);
    else if (salt & 1u)
        id = deep(n - 1, salt >> 1);
    else
        id = deep_b(n - 1, salt >> 1);
    KEEP_FRAME();
    return id;
}

__attribute__((noinline)) uint32_t deep_b(unsigned n, unsigned salt)
{
    uint32_t id = deep(n, salt);
    KEEP_FRAME();
    return id;
}

typedef struct run_result {
    unsigned n_ids; /* captures that returned an id */
} run_result;

static void *capture_thread(void *arg)
{
    run_result *r = arg;
    t_counting = 1;
    for (unsigned i = 0; i < 2000; i++) {
        uint32_t id = deep(4 + i % 24, i * 2654435761u);
        r->n_ids += id != HT_STACK_ID_NONE && id != HT_STACK_ID_FULL;
    }
    t_counting = 0;
    return NULL;
}

static bool drain_cb(uint32_t id, const uint64_t *frames, size_t n, void *ctx)
{
    (void)id;
    (void)frames;
    *(size_t *)ctx += n;
    return true;
}

static void module_cb(ht_module_change change, const ht_module *m, void *ctx)
{
    (void)change;
    (void)m;
    (*(int *)ctx)++;
}

static void run_kind(ht_unwind_kind kind)
{
    ht_stack_config config = {kind, 32, 0, 0};
    REQUIRE(ht__stack_init(&config) == 0);
    atomic_store(&g_n_calls, 0);
    for (int t = 0; t < 3; t++) { /* fresh threads: first-capture paths each time */
        run_result r = {0};
        pthread_t tid;
        REQUIRE(pthread_create(&tid, NULL, capture_thread, &r) == 0);
        pthread_join(tid, NULL);
        CHECK(r.n_ids == 2000);
    }
    t_counting = 1;
    size_t n_frames = 0;
    uint32_t drained = ht__stack_drain(drain_cb, &n_frames);
    t_counting = 0;
    CHECK(drained > 0 && n_frames > 0);
    CHECK_EQ_U(atomic_load(&g_n_calls), 0);
    ht__stack_fini();
}

static void test_fp_nomalloc(void)
{
    run_kind(HT_UNWIND_FP);
}

static void test_dwarf_nomalloc(void)
{
    if (ht__unwind_have_dwarf())
        run_kind(HT_UNWIND_DWARF);
}

static void test_modules_nomalloc(void)
{
    int n = 0;
    atomic_store(&g_n_calls, 0);
    t_counting = 1;
    int n_snap = ht__modules_snapshot(module_cb, &n);
    int n_poll = ht__modules_poll(module_cb, &n);
    t_counting = 0;
    CHECK(n_snap >= 3 && n_poll == 0 && n == n_snap);
    CHECK_EQ_U(atomic_load(&g_n_calls), 0);
    ht__modules_fini();
}

TEST_MAIN(TEST(test_fp_nomalloc), TEST(test_dwarf_nomalloc), TEST(test_modules_nomalloc))
#endif
