/* test_stack.c — stack capture and interning (src/trace/stack.c, unwind.c) and the module map
 * (modules.c): frames land in the known nested functions for both unwinders, equal stacks
 * share an id, 4 threads agree on ids and each id is drained exactly once, a full table
 * answers HT_STACK_ID_FULL, and dlopen/dlclose show up in the module map. Built with frame
 * pointers and exported symbols (dladdr names the functions). Never writes a trace file. */
#include "harness.h"

#include "trace/stack.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

/* Keeps a call out of tail position, so its caller's frame stays on the stack. */
/* Under ThreadSanitizer, libunwind's per-thread cache destructor (run at thread exit) calls
 * an intercepted pthread_mutex_lock after TSan has torn the thread down and crashes: DWARF
 * captures on threads that exit are skipped there (docs/decisions/0003). */
#if defined(__SANITIZE_THREAD__)
#define DWARF_ON_THREADS 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define DWARF_ON_THREADS 0
#endif
#endif
#ifndef DWARF_ON_THREADS
#define DWARF_ON_THREADS 1
#endif

#define KEEP_FRAME() __asm__ volatile("" ::: "memory")

/* -- known nested functions (exported for dladdr) ---------------------------------------------- */

uint32_t nest_leaf(unsigned skip);
uint32_t nest_mid(unsigned skip);
uint32_t nest_top(unsigned skip);
uint32_t nest_other(unsigned skip);

__attribute__((noinline)) uint32_t nest_leaf(unsigned skip)
{
    uint32_t id = ht__stack_capture(16, skip);
    KEEP_FRAME();
    return id;
}

__attribute__((noinline)) uint32_t nest_mid(unsigned skip)
{
    uint32_t id = nest_leaf(skip);
    KEEP_FRAME();
    return id;
}

__attribute__((noinline)) uint32_t nest_top(unsigned skip)
{
    uint32_t id = nest_mid(skip);
    KEEP_FRAME();
    return id;
}

__attribute__((noinline)) uint32_t nest_other(unsigned skip)
{
    uint32_t id = nest_leaf(skip);
    KEEP_FRAME();
    return id;
}

static const char *symbol_of(uint64_t pc)
{
    Dl_info info;
    /* pc is a return address: pc - 1 is inside the call instruction, so inside the caller. */
    if (dladdr((void *)(uintptr_t)(pc - 1), &info) == 0 || info.dli_sname == NULL)
        return "?";
    return info.dli_sname;
}

static bool frame_is(const uint64_t *frames, size_t n, size_t i, const char *name)
{
    if (i >= n) {
        fprintf(stderr, "  frame %zu missing (have %zu), wanted %s\n", i, n, name);
        return false;
    }
    const char *got = symbol_of(frames[i]);
    if (strcmp(got, name) != 0) {
        fprintf(stderr, "  frame %zu is %s (%#" PRIx64 "), wanted %s\n", i, got, frames[i], name);
        return false;
    }
    return true;
}

/* -- per-unwinder checks --------------------------------------------------------------------- */

static bool stack_start(ht_unwind_kind kind, uint32_t max_stacks)
{
    ht_stack_config config = {kind, 16, max_stacks, 0};
    int rc = ht__stack_init(&config);
    if (rc != 0)
        fprintf(stderr, "  ht__stack_init(%d): %d\n", (int)kind, rc);
    return rc == 0;
}

uint32_t frames_check_body(void);

__attribute__((noinline)) uint32_t frames_check_body(void)
{
    uint32_t id = nest_top(0);
    CHECK(id >= 1 && id != HT_STACK_ID_FULL);
    size_t n = 0;
    const uint64_t *frames = ht__stack_frames(id, &n);
    CHECK(frames != NULL);
    if (frames != NULL) {
        CHECK(frame_is(frames, n, 0, "nest_leaf"));
        CHECK(frame_is(frames, n, 1, "nest_mid"));
        CHECK(frame_is(frames, n, 2, "nest_top"));
        CHECK(frame_is(frames, n, 3, "frames_check_body"));
    }
    /* skip = 1 drops nest_leaf. */
    uint32_t id_skip = nest_top(1);
    frames = ht__stack_frames(id_skip, &n);
    CHECK(frames != NULL && id_skip != id);
    if (frames != NULL) {
        CHECK(frame_is(frames, n, 0, "nest_mid"));
        CHECK(frame_is(frames, n, 1, "nest_top"));
    }
    KEEP_FRAME();
    return id;
}

static void frames_check(ht_unwind_kind kind)
{
    REQUIRE(stack_start(kind, 0));
    frames_check_body();

    /* The same call path twice: one id. Another path: another id. */
    /* A loop with a count the compiler cannot see keeps one call site (no peeling). */
    static volatile int two = 2;
    uint32_t a = 0, b = 0;
    for (int i = 0; i < two; i++) {
        uint32_t id = nest_top(0);
        if (i == 0)
            a = id;
        else
            b = id;
    }
    CHECK(a != 0 && a == b);
    uint32_t other[2];
    for (int i = 0; i < two; i++)
        other[i] = nest_other(0);
    CHECK(other[0] != 0 && other[0] != a && other[0] == other[1]);
    ht__stack_fini();
}

static void test_fp_frames(void)
{
    frames_check(HT_UNWIND_FP);
}

static void test_dwarf_frames(void)
{
    if (!ht__unwind_have_dwarf()) {
        printf("skip dwarf: built without libunwind\n");
        return;
    }
    frames_check(HT_UNWIND_DWARF);
}

/* -- bounds, names, lifecycle ------------------------------------------------------------------ */

static void *bounds_thread(void *arg)
{
    int local = 0;
    uintptr_t lo = 0, hi = 0;
    bool ok = ht__unwind_thread_bounds(&lo, &hi);
    *(int *)arg = ok && lo <= (uintptr_t)&local && (uintptr_t)&local < hi;
    return NULL;
}

static void test_bounds_and_names(void)
{
    int local = 0;
    uintptr_t lo = 0, hi = 0;
    CHECK(ht__unwind_thread_bounds(&lo, &hi));
    CHECK(lo <= (uintptr_t)&local && (uintptr_t)&local < hi);
    int ok = 0;
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, bounds_thread, &ok) == 0);
    pthread_join(t, NULL);
    CHECK(ok == 1);

    CHECK(ht__unwind_kind_from_name("fp") == HT_UNWIND_FP);
    CHECK(ht__unwind_kind_from_name("dwarf") == HT_UNWIND_DWARF);
    CHECK(ht__unwind_kind_from_name(NULL) == HT_UNWIND_AUTO);
    CHECK(ht__unwind_kind_from_name("bogus") == -1);

    CHECK(ht__stack_capture(8, 0) == HT_STACK_ID_NONE); /* before init */
    REQUIRE(ht__stack_init(NULL) == 0);
    CHECK(ht__stack_init(NULL) == -EBUSY);
    CHECK(ht__stack_unwinder() != NULL);
    CHECK(strcmp(ht__stack_unwinder()->name, ht__unwind_have_dwarf() ? "dwarf" : "fp") == 0);
    ht__stack_fini();
    CHECK(ht__stack_unwinder() == NULL);
}

/* -- full table -------------------------------------------------------------------------------- */

static void test_full(void)
{
    REQUIRE(stack_start(HT_UNWIND_FP, 16));
    uint64_t frames[3] = {0x1000, 0x2000, 0};
    for (uint64_t i = 0; i < 20; i++) {
        frames[2] = 0x3000 + i;
        uint32_t id = ht__stack_intern(frames, 3);
        if (i < 16)
            CHECK_EQ_U(id, i + 1);
        else
            CHECK_EQ_U(id, HT_STACK_ID_FULL);
    }
    frames[2] = 0x3000; /* already interned: still found */
    CHECK_EQ_U(ht__stack_intern(frames, 3), 1);
    ht_stack_stats st;
    ht__stack_get_stats(&st);
    CHECK_EQ_U(st.n_new, 16);
    CHECK_EQ_U(st.n_full, 4);
    CHECK_EQ_U(ht__stack_intern(frames, 0), HT_STACK_ID_NONE);
    ht__stack_fini();

    /* A tiny arena fills before the table does. */
    ht_stack_config config = {HT_UNWIND_FP, 8, 1024, 4096};
    REQUIRE(ht__stack_init(&config) == 0);
    uint32_t last = 0;
    int n_full = 0;
    for (uint64_t i = 0; i < 200; i++) {
        frames[2] = 0x5000 + i;
        uint32_t id = ht__stack_intern(frames, 3);
        if (id == HT_STACK_ID_FULL)
            n_full++;
        else
            last = id;
    }
    CHECK(n_full > 0 && last > 0 && last < 200);
    ht__stack_fini();
}

/* -- concurrency ------------------------------------------------------------------------------- */

#define LEVELS    10u
#define N_PATTERN (1u << LEVELS)
#define N_THREADS 4
#define N_ROUNDS  20

uint32_t path_step(unsigned bits, unsigned level);
uint32_t path_a(unsigned bits, unsigned level);
uint32_t path_b(unsigned bits, unsigned level);

/* Each of the LEVELS bits picks path_a or path_b: N_PATTERN distinct stacks, the same on
 * every thread as long as the depth stays inside them (2 * LEVELS + 1 frames). */
__attribute__((noinline)) uint32_t path_step(unsigned bits, unsigned level)
{
    uint32_t id;
    if (level == 0)
        id = ht__stack_capture(2 * LEVELS + 1, 0);
    else if (bits & 1u)
        id = path_a(bits >> 1, level - 1);
    else
        id = path_b(bits >> 1, level - 1);
    KEEP_FRAME();
    return id;
}

__attribute__((noinline)) uint32_t path_a(unsigned bits, unsigned level)
{
    uint32_t id = path_step(bits, level);
    KEEP_FRAME();
    return id;
}

__attribute__((noinline)) uint32_t path_b(unsigned bits, unsigned level)
{
    uint32_t id = path_step(bits, level);
    KEEP_FRAME();
    return id;
}

typedef struct conc_thread {
    unsigned index;          /* 0..N_THREADS-1: the order it walks the patterns in */
    uint32_t ids[N_PATTERN]; /* id of each pattern (first round) */
    unsigned n_mismatch;     /* later rounds that gave another id */
    unsigned n_bad;          /* NONE or FULL answers */
} conc_thread;

static atomic_int g_conc_go;

static void *conc_run(void *arg)
{
    conc_thread *t = arg;
    while (atomic_load(&g_conc_go) == 0)
        ;
    for (unsigned round = 0; round < N_ROUNDS; round++) {
        for (unsigned k = 0; k < N_PATTERN; k++) {
            unsigned bits = (k * 7919u + t->index * 331u + round) % N_PATTERN;
            uint32_t id = path_step(bits, LEVELS);
            if (id == HT_STACK_ID_NONE || id == HT_STACK_ID_FULL)
                t->n_bad++;
            else if (t->ids[bits] == 0)
                t->ids[bits] = id;
            else if (t->ids[bits] != id)
                t->n_mismatch++;
        }
    }
    return NULL;
}

typedef struct drain_log {
    unsigned count[N_PATTERN * 2 + 2]; /* times each id was drained */
    uint32_t last;                     /* previous id drained */
    unsigned n_out_of_order;           /* ids not previous + 1 */
    unsigned n_bad_frames;             /* frames that differ from ht__stack_frames */
} drain_log;

static bool drain_cb(uint32_t id, const uint64_t *frames, size_t n, void *ctx)
{
    drain_log *log = ctx;
    if (id != log->last + 1)
        log->n_out_of_order++;
    log->last = id;
    if (id < sizeof log->count / sizeof log->count[0])
        log->count[id]++;
    size_t n2 = 0;
    const uint64_t *f2 = ht__stack_frames(id, &n2);
    if (f2 != frames || n2 != n || n != 2 * LEVELS + 1)
        log->n_bad_frames++;
    return true;
}

static void concurrency_check(ht_unwind_kind kind)
{
    REQUIRE(stack_start(kind, 0));
    static conc_thread threads[N_THREADS];
    static drain_log log;
    memset(threads, 0, sizeof threads);
    memset(&log, 0, sizeof log);
    pthread_t tids[N_THREADS];
    atomic_store(&g_conc_go, 0);
    for (unsigned i = 0; i < N_THREADS; i++) {
        threads[i].index = i;
        REQUIRE(pthread_create(&tids[i], NULL, conc_run, &threads[i]) == 0);
    }
    atomic_store(&g_conc_go, 1);
    for (int i = 0; i < 2000; i++)
        ht__stack_drain(drain_cb, &log); /* drains while the threads intern */
    for (unsigned i = 0; i < N_THREADS; i++)
        pthread_join(tids[i], NULL);
    uint32_t drained = ht__stack_drain(drain_cb, &log);

    CHECK_EQ_U(drained, N_PATTERN);
    CHECK_EQ_U(log.n_out_of_order, 0);
    CHECK_EQ_U(log.n_bad_frames, 0);
    for (uint32_t id = 1; id <= N_PATTERN; id++)
        CHECK_EQ_U(log.count[id], 1);
    CHECK_EQ_U(log.count[N_PATTERN + 1], 0);
    uint8_t seen[N_PATTERN + 1] = {0};
    unsigned n_disagree = 0, n_dup = 0;
    for (unsigned i = 0; i < N_THREADS; i++) {
        CHECK_EQ_U(threads[i].n_bad, 0);
        CHECK_EQ_U(threads[i].n_mismatch, 0);
        for (unsigned b = 0; b < N_PATTERN; b++)
            n_disagree += threads[i].ids[b] != threads[0].ids[b];
    }
    for (unsigned b = 0; b < N_PATTERN; b++) {
        uint32_t id = threads[0].ids[b];
        if (id >= 1 && id <= N_PATTERN)
            n_dup += seen[id]++ != 0;
    }
    CHECK_EQ_U(n_disagree, 0);
    CHECK_EQ_U(n_dup, 0);
    ht_stack_stats st;
    ht__stack_get_stats(&st);
    CHECK_EQ_U(st.n_new, N_PATTERN);
    CHECK_EQ_U(st.n_drained, N_PATTERN);
    CHECK_EQ_U(st.n_full, 0);
    ht__stack_fini();
}

static void test_concurrency_fp(void)
{
    concurrency_check(HT_UNWIND_FP);
}

static void test_concurrency_dwarf(void)
{
    if (!DWARF_ON_THREADS)
        printf("skip dwarf threads: ThreadSanitizer build\n");
    else if (ht__unwind_have_dwarf())
        concurrency_check(HT_UNWIND_DWARF);
}

/* -- module map -------------------------------------------------------------------------------- */

typedef struct mod_log {
    int n_load, n_unload;  /* callbacks */
    uintptr_t want;        /* an address to find */
    bool found;            /* a LOAD module contains want */
    size_t found_build_id; /* its build-id size */
    char found_path[4097]; /* its path */
    uint64_t found_base;   /* its base */
    bool unload_seen;      /* an UNLOAD at unload_base */
    uint64_t unload_base;  /* base to look for */
    bool libc_ok;          /* a libc.so.6 with a build-id */
} mod_log;

static void mod_cb(ht_module_change change, const ht_module *m, void *ctx)
{
    mod_log *log = ctx;
    if (change == HT_MODULE_LOAD) {
        log->n_load++;
        uintptr_t a = log->want;
        if (m->base <= a && a < m->base + m->size) {
            log->found = true;
            log->found_build_id = m->build_id_size;
            log->found_base = m->base;
            size_t n = m->path_size < 4096 ? m->path_size : 4096;
            memcpy(log->found_path, m->path, n);
            log->found_path[n] = '\0';
        }
        if (m->path_size >= 9 && memcmp(m->path + m->path_size - 9, "libc.so.6", 9) == 0 &&
            m->build_id_size >= 16 && m->build_id != NULL)
            log->libc_ok = true;
    } else {
        log->n_unload++;
        if (m->base == log->unload_base)
            log->unload_seen = true;
    }
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static void test_modules(void)
{
    mod_log log;
    memset(&log, 0, sizeof log);
    log.want = (uintptr_t)nest_top;
    int n = ht__modules_snapshot(mod_cb, &log);
    CHECK(n >= 3 && n == log.n_load);
    CHECK(log.found);
    CHECK(ends_with(log.found_path, "/test_stack"));
    CHECK(log.found_build_id >= 16);
    CHECK(log.libc_ok);
    CHECK(ht__modules_poll(mod_cb, &log) == 0); /* nothing changed */

    void *lib = dlopen(HT_DLOPEN_TEST_LIB, RTLD_NOW | RTLD_LOCAL);
    REQUIRE(lib != NULL);
    void *fn = dlsym(lib, "ht_dlopen_test_fn");
    REQUIRE(fn != NULL);
    memset(&log, 0, sizeof log);
    log.want = (uintptr_t)fn;
    CHECK(ht__modules_poll(mod_cb, &log) == 1);
    CHECK(log.n_load == 1 && log.n_unload == 0 && log.found);
    CHECK(strcmp(log.found_path, HT_DLOPEN_TEST_LIB) == 0);
    CHECK(log.found_build_id >= 16);
    uint64_t base = log.found_base;
    CHECK(ht__modules_poll(mod_cb, &log) == 0);

    dlclose(lib);
    memset(&log, 0, sizeof log);
    log.unload_base = base;
    CHECK(ht__modules_poll(mod_cb, &log) == 1);
    CHECK(log.n_unload == 1 && log.n_load == 0 && log.unload_seen);
    ht__modules_fini();

    /* After fini, poll starts over like a snapshot. */
    memset(&log, 0, sizeof log);
    CHECK(ht__modules_poll(mod_cb, &log) >= 3);
    ht__modules_fini();
}

TEST_MAIN(TEST(test_bounds_and_names), TEST(test_fp_frames), TEST(test_dwarf_frames),
          TEST(test_full), TEST(test_concurrency_fp), TEST(test_concurrency_dwarf),
          TEST(test_modules))
