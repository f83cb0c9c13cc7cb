/* test_unwind_cfi.c — the own DWARF walker (src/trace/cfi.c, cfi_map.c, unwind.c) against
 * libunwind's unw_backtrace on the same stacks: deep recursions through functions built
 * without frame pointers (-O2 -fomit-frame-pointer, see CMakeLists.txt), some with alloca
 * (rbp-based CFA) or big frames, on the main thread and another thread, and through a
 * dlopen'ed library (before the walker's refresh: handed to libunwind; after: walked; again
 * after dlclose + dlopen). Every capture must equal libunwind's frame for frame, and the
 * walker must not have fallen back where it knows the module. */
#include "harness.h"

#include "trace/stack.h"

#include <alloca.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>

#if defined(__SANITIZE_THREAD__)
#define LIBUNWIND_ON_THREADS 0 /* libunwind's thread-exit destructor crashes TSan (0003) */
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define LIBUNWIND_ON_THREADS 0
#endif
#endif
#ifndef LIBUNWIND_ON_THREADS
#define LIBUNWIND_ON_THREADS 1
#endif

#define MAXF 160u

typedef struct result {
    unsigned n_compared; /* captures compared */
    unsigned n_differ;   /* captures that differed */
    size_t min_frames;   /* fewest frames in one capture */
} result;

static const ht_unwinder *g_own, *g_ref;

/* Both captures from the same frame: each skips its own frame and the return into here, so
 * both start at the return address into this function's caller. */
__attribute__((noinline)) static unsigned compare_here(void *arg)
{
    result *r = arg;
    uint64_t a[MAXF], b[MAXF];
    size_t na = g_own->capture(a, MAXF, 0);
    __asm__ volatile("" ::: "memory");
    size_t nb = g_ref->capture(b, MAXF, 0);
    __asm__ volatile("" ::: "memory");
    bool same = na == nb && memcmp(a, b, na * sizeof a[0]) == 0;
    if (!same && r->n_differ == 0) {
        fprintf(stderr, "own %zu frames, libunwind %zu:\n", na, nb);
        for (size_t i = 0; i < (na > nb ? na : nb); i++)
            fprintf(stderr, "  %2zu %#18llx %#18llx\n", i, i < na ? (unsigned long long)a[i] : 0ull,
                    i < nb ? (unsigned long long)b[i] : 0ull);
    }
    r->n_compared++;
    r->n_differ += !same;
    if (na < r->min_frames)
        r->min_frames = na;
    return (unsigned)na;
}

/* -- a recursion without frame pointers --------------------------------------------------- */

typedef unsigned (*leaf_fn)(void *arg);
static unsigned rec(unsigned depth, unsigned path, leaf_fn fn, void *arg);

__attribute__((noinline)) static unsigned f_plain(unsigned depth, unsigned path, leaf_fn fn,
                                                  void *arg)
{
    volatile unsigned pad[3] = {depth, path, 7};
    unsigned r = rec(depth - 1, path, fn, arg);
    return r + pad[depth % 3] * 0u;
}

__attribute__((noinline)) static unsigned f_alloca(unsigned depth, unsigned path, leaf_fn fn,
                                                   void *arg)
{
    size_t size = 8 + (depth * 40 + path * 8) % 300;
    char *buf = alloca(size);
    memset(buf, (int)depth, size);
    __asm__ volatile("" : : "r"(buf) : "memory");
    unsigned r = rec(depth - 1, path, fn, arg);
    return r + (unsigned)buf[1] * 0u;
}

__attribute__((noinline)) static unsigned f_big(unsigned depth, unsigned path, leaf_fn fn,
                                                void *arg)
{
    volatile char big[6000];
    big[depth % sizeof big] = (char)path;
    unsigned r = rec(depth - 1, path, fn, arg);
    return r + (unsigned)big[depth % sizeof big] * 0u;
}

/* Many callee-saved registers live across the call: pushes of rbx, r12..r15 (and rbp). */
__attribute__((noinline)) static unsigned f_regs(unsigned depth, unsigned path, leaf_fn fn,
                                                 void *arg)
{
    unsigned x0 = depth * 3, x1 = path * 5, x2 = depth ^ path, x3 = depth + 11, x4 = path + 13;
    unsigned x5 = depth * path;
    __asm__ volatile("" : "+r"(x0), "+r"(x1), "+r"(x2), "+r"(x3), "+r"(x4), "+r"(x5));
    unsigned r = rec(depth - 1, path, fn, arg);
    __asm__ volatile("" : "+r"(x0), "+r"(x1), "+r"(x2), "+r"(x3), "+r"(x4), "+r"(x5));
    return r + (x0 ^ x1 ^ x2 ^ x3 ^ x4 ^ x5) * 0u;
}

__attribute__((noinline)) static unsigned rec(unsigned depth, unsigned path, leaf_fn fn, void *arg)
{
    unsigned r;
    if (depth == 0)
        r = fn(arg);
    else
        switch ((depth * 7 + path) % 4) {
        case 0:
            r = f_plain(depth, path, fn, arg);
            break;
        case 1:
            r = f_alloca(depth, path, fn, arg);
            break;
        case 2:
            r = f_big(depth, path, fn, arg);
            break;
        default:
            r = f_regs(depth, path, fn, arg);
            break;
        }
    __asm__ volatile("" : : "r"(r) : "memory");
    return r;
}

static bool start(void)
{
    if (!ht__unwind_have_libunwind()) {
        printf("skip: no libunwind to compare with\n");
        return false;
    }
    ht_stack_config c = {HT_UNWIND_DWARF, 0, 1024, 0};
    if (ht__stack_init(&c) != 0)
        return false;
    g_own = ht__unwind_get(HT_UNWIND_DWARF);
    g_ref = ht__unwind_get(HT_UNWIND_LIBUNWIND);
    return g_own != NULL && g_ref != NULL && strcmp(g_own->name, "dwarf") == 0;
}

static void run_paths(result *r)
{
    for (unsigned depth = 1; depth <= 60; depth += 7)
        for (unsigned path = 0; path < 4; path++)
            rec(depth, path, compare_here, r);
}

static void test_main_thread(void)
{
    REQUIRE(start());
    result r = {0, 0, SIZE_MAX};
    uint64_t fb = ht__unwind_n_fallback();
    run_paths(&r);
    CHECK_EQ_U(r.n_differ, 0);
    CHECK(r.n_compared == 36);
    CHECK(r.min_frames >= 3);                /* rec, ..., main */
    CHECK_EQ_U(ht__unwind_n_fallback(), fb); /* all walked by the own rules */
    ht__stack_fini();
}

static void *thread_run(void *arg)
{
    run_paths(arg);
    return NULL;
}

static void test_other_thread(void)
{
    if (!LIBUNWIND_ON_THREADS) {
        printf("skip: libunwind on an exiting thread under TSan\n");
        return;
    }
    REQUIRE(start());
    result r = {0, 0, SIZE_MAX};
    uint64_t fb = ht__unwind_n_fallback();
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, thread_run, &r) == 0);
    pthread_join(t, NULL);
    CHECK_EQ_U(r.n_differ, 0);
    CHECK(r.n_compared == 36);
    CHECK_EQ_U(ht__unwind_n_fallback(), fb);
    ht__stack_fini();
}

/* -- through a dlopen'ed object ------------------------------------------------------------ */

typedef unsigned (*lib_recurse_fn)(unsigned depth, leaf_fn fn, void *arg);

typedef struct lib_arg {
    lib_recurse_fn recurse; /* ht_unwind_lib_recurse */
    unsigned depth;         /* levels inside the library */
    result *r;
} lib_arg;

static unsigned into_lib(void *arg)
{
    lib_arg *a = arg;
    unsigned x = a->recurse(a->depth, compare_here, a->r);
    __asm__ volatile("" : : "r"(x) : "memory");
    return x;
}

/* Test frames, then the library's, then test frames again, then compare. */
static void lib_round(lib_recurse_fn recurse, result *r)
{
    for (unsigned depth = 1; depth <= 13; depth += 4) {
        lib_arg a = {recurse, depth, r};
        rec(5 + depth, depth, into_lib, &a);
    }
}

static void test_dlopen(void)
{
    REQUIRE(start());
    void *lib = dlopen(HT_UNWIND_TEST_LIB, RTLD_NOW | RTLD_LOCAL);
    REQUIRE(lib != NULL);
    lib_recurse_fn recurse = (lib_recurse_fn)(uintptr_t)dlsym(lib, "ht_unwind_lib_recurse");
    REQUIRE(recurse != NULL);

    /* Not refreshed yet: the library is unknown to the walker, libunwind answers. */
    result r = {0, 0, SIZE_MAX};
    uint64_t fb = ht__unwind_n_fallback();
    lib_round(recurse, &r);
    CHECK_EQ_U(r.n_differ, 0);
    CHECK(ht__unwind_n_fallback() > fb);

    ht__unwind_refresh();
    fb = ht__unwind_n_fallback();
    lib_round(recurse, &r);
    CHECK_EQ_U(r.n_differ, 0);
    CHECK_EQ_U(ht__unwind_n_fallback(), fb);

    /* Unloaded and loaded again (maybe elsewhere): refreshed, still walked right. */
    dlclose(lib);
    ht__unwind_refresh();
    lib = dlopen(HT_UNWIND_TEST_LIB, RTLD_NOW | RTLD_LOCAL);
    REQUIRE(lib != NULL);
    recurse = (lib_recurse_fn)(uintptr_t)dlsym(lib, "ht_unwind_lib_recurse");
    REQUIRE(recurse != NULL);
    ht__unwind_refresh();
    fb = ht__unwind_n_fallback();
    lib_round(recurse, &r);
    CHECK_EQ_U(r.n_differ, 0);
    CHECK_EQ_U(ht__unwind_n_fallback(), fb);
    CHECK(r.n_compared == 12);
    CHECK(r.min_frames >= 8);
    dlclose(lib);
    ht__stack_fini();
}

TEST_MAIN(TEST(test_main_thread), TEST(test_other_thread), TEST(test_dlopen))
