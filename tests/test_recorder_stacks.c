/* test_recorder_stacks.c — stacks and the module map in trace files: events made from known
 * call sites are traced with stack_depth 16 (frame-pointer and, when built in, DWARF
 * unwinding); read back, every event has a stack whose first frame is in the function that
 * called ht_heap_*, one call site gives one stack id, ids are defined once and before use
 * (the simple decoder checks FORMAT.md's rules), the module list holds the executable and
 * libc with build-ids, and a library dlopen'ed during the trace shows up with its frames
 * inside its mapping. With stack_events = alloc+realloc (xperf's recipe) the valid frees
 * have no stack and everything else is as before, the INVALID free included. Built with
 * frame pointers and exported symbols (dladdr). */
#include "harness.h"
#include "recorder_util.h"
#include "simple_decoder.h"
#include "trace/stack.h"

#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>

#define N_PER_SITE 50

static ht_heap *g_heap;

#define KEEP() __asm__ volatile("" : : : "memory")

__attribute__((noinline)) void *rs_site_a(size_t n);
__attribute__((noinline)) void *rs_site_b(size_t n);
__attribute__((noinline)) void rs_free_site(void *p);
__attribute__((noinline)) void rs_bad_free(void *p);
__attribute__((noinline)) void *rs_realloc_site(void *p, size_t n);
__attribute__((noinline)) void *rs_dl_cb(void *arg);

void *rs_site_a(size_t n)
{
    void *p = ht_heap_alloc(g_heap, 0, n);
    KEEP();
    return p;
}

void *rs_site_b(size_t n)
{
    void *p = ht_heap_alloc(g_heap, 0, n);
    KEEP();
    return p;
}

void rs_free_site(void *p)
{
    ht_heap_free(g_heap, 0, p);
    KEEP();
}

void rs_bad_free(void *p)
{
    ht_heap_free(g_heap, 0, p);
    KEEP();
}

void *rs_realloc_site(void *p, size_t n)
{
    void *q = ht_heap_realloc(g_heap, 0, p, n);
    KEEP();
    return q;
}

void *rs_dl_cb(void *arg)
{
    void *p = ht_heap_alloc(g_heap, 0, (size_t)(uintptr_t)arg);
    KEEP();
    return p;
}

/* The function that contains return address pc (dladdr on pc - 1). */
static uintptr_t fn_of(uint64_t pc)
{
    Dl_info info;
    if (dladdr((void *)(uintptr_t)(pc - 1), &info) == 0)
        return 0;
    return (uintptr_t)info.dli_saddr;
}

typedef struct site_ids {
    uint32_t a, b, free_, bad, realloc_, dl;
    int n_a, n_b, n_free, n_bad, n_realloc, n_dl, n_other, n_no_stack, n_bad_frame;
    int n_free_no_stack, n_other_no_stack; /* without a stack: valid FREEs; EXPAND/CONTRACT */
} site_ids;

/* Records the id of a site; all events of one site must share it. */
static void site_note(uint32_t *slot, int *count, uint32_t id)
{
    if (*slot == 0)
        *slot = id;
    CHECK_EQ_U(*slot, id);
    (*count)++;
}

static void check_modules(ht_reader *r, const ht_reader_module **dl_mod)
{
    const ht_reader_module *mods;
    size_t n;
    ht_reader_modules(r, &mods, &n);
    char exe[PATH_MAX];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    REQUIRE(k > 0);
    exe[k] = 0;
    bool have_exe = false, have_libc = false;
    *dl_mod = NULL;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(mods[i].path, exe) == 0 && mods[i].build_id_size > 0)
            have_exe = true;
        if (strstr(mods[i].path, "libc.so") != NULL && mods[i].build_id_size > 0)
            have_libc = true;
        if (strcmp(mods[i].path, HT_DLOPEN_TEST_LIB) == 0)
            *dl_mod = &mods[i];
    }
    CHECK(have_exe);
    CHECK(have_libc);
    CHECK(*dl_mod != NULL);
}

void run_unwinder(const char *unwind, unsigned stack_events);

/* A file session's config with stacks of depth, by the unwinder named (HEAPTRAIL_UNWIND, set
 * here; the caller unsets it), to path, a scratch file called name. */
static ht_trace_config stack_session(char *path, size_t size, const char *name, const char *unwind,
                                     unsigned depth)
{
    ru_path(path, size, name);
    setenv("HEAPTRAIL_UNWIND", unwind, 1);
    ht_trace_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.path = path;
    cfg.stack_depth = depth;
    return cfg;
}

/* stack_events: 0 (every event) or alloc+realloc. */
void run_unwinder(const char *unwind, unsigned stack_events)
{
    const bool free_stacks = stack_events == 0;
    char path[256];
    char name[64];
    snprintf(name, sizeof name, "stacks-%s-%x", unwind, stack_events);
    ht_trace_config cfg = stack_session(path, sizeof path, name, unwind, 16);
    cfg.flags = HT_TRACE_NO_RUNDOWN;
    cfg.loss_policy = HT_TRACE_LOSS_BLOCK;
    cfg.stack_events = stack_events;
    g_heap = ht_heap_create(0, 0, 0);
    REQUIRE(g_heap != NULL);
    REQUIRE(ht_trace_start(&cfg) == 0);

    void *pa[N_PER_SITE], *pb[N_PER_SITE];
    for (int i = 0; i < N_PER_SITE; i++) {
        pa[i] = rs_site_a((size_t)(16 + i));
        pb[i] = rs_site_b((size_t)(200 + i));
    }
    pa[0] = rs_realloc_site(pa[0], 5000);
    void *all[2 * N_PER_SITE];
    memcpy(all, pa, sizeof pa);
    memcpy(all + N_PER_SITE, pb, sizeof pb);
    for (int i = 0; i < 2 * N_PER_SITE; i++) /* one call site for every free */
        rs_free_site(all[i]);
    rs_bad_free(pa[1]); /* INVALID: already freed */

    void *lib = dlopen(HT_DLOPEN_TEST_LIB, RTLD_NOW | RTLD_LOCAL);
    REQUIRE(lib != NULL);
    void *(*call)(void *(*)(void *), void *);
    *(void **)&call = dlsym(lib, "ht_dlopen_test_call");
    REQUIRE(call != NULL);
    void *pd = call(rs_dl_cb, (void *)(uintptr_t)77);
    usleep(30 * 1000); /* the writer polls the module map at its next wake-up (<= 5 ms) */
    REQUIRE(ht_trace_stop() == 0);
    ht_heap_free(g_heap, 0, pd);
    ht_heap_destroy(g_heap);

    /* The file obeys FORMAT.md's stack rules (dense ids, each defined once, before use). */
    FILE *fp = fopen(path, "rb");
    REQUIRE(fp != NULL);
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *data = malloc((size_t)size);
    REQUIRE(data != NULL && fread(data, 1, (size_t)size, fp) == (size_t)size);
    fclose(fp);
    sd_result sd;
    memset(&sd, 0, sizeof sd);
    sd_decode(data, (size_t)size, &sd);
    CHECK(sd.complete);
    CHECK(!sd.damaged);
    CHECK(sd.n_stacks >= 5);

    ht_reader *r = NULL;
    REQUIRE(ht_reader_open(path, &r) == HT_READER_OK);
    const ht_reader_module *dl_mod = NULL;
    check_modules(r, &dl_mod);
    site_ids s;
    memset(&s, 0, sizeof s);
    ht_reader_event e;
    while (ht_reader_next(r, &e)) {
        if (e.stack_id == 0) {
            unsigned t = e.event.type;
            if (!free_stacks && t == HT_EVENT_HEAP_FREE && e.event.free.source != HT_SOURCE_INVALID)
                s.n_free_no_stack++;
            else if (!free_stacks && t != HT_EVENT_HEAP_ALLOC && t != HT_EVENT_HEAP_REALLOC &&
                     t != HT_EVENT_HEAP_FREE)
                s.n_other_no_stack++;
            else
                s.n_no_stack++;
            continue;
        }
        const uint64_t *f;
        size_t nf;
        if (!ht_reader_stack(r, e.stack_id, &f, &nf) || nf < 2) {
            s.n_bad_frame++;
            continue;
        }
        uintptr_t fn = fn_of(f[0]);
        unsigned type = e.event.type;
        if (type != HT_EVENT_HEAP_ALLOC && type != HT_EVENT_HEAP_FREE &&
            type != HT_EVENT_HEAP_REALLOC) {
            /* EXPAND / CONTRACT made on the way: the stack of the operation's caller. */
            CHECK(fn == (uintptr_t)rs_site_a || fn == (uintptr_t)rs_site_b ||
                  fn == (uintptr_t)rs_free_site || fn == (uintptr_t)rs_realloc_site ||
                  fn == (uintptr_t)rs_bad_free || fn == (uintptr_t)rs_dl_cb);
            continue;
        }
        if (fn == (uintptr_t)rs_site_a && type == HT_EVENT_HEAP_ALLOC)
            site_note(&s.a, &s.n_a, e.stack_id);
        else if (fn == (uintptr_t)rs_site_b && type == HT_EVENT_HEAP_ALLOC)
            site_note(&s.b, &s.n_b, e.stack_id);
        else if (fn == (uintptr_t)rs_free_site && type == HT_EVENT_HEAP_FREE)
            site_note(&s.free_, &s.n_free, e.stack_id);
        else if (fn == (uintptr_t)rs_bad_free && type == HT_EVENT_HEAP_FREE &&
                 e.event.free.source == HT_SOURCE_INVALID)
            site_note(&s.bad, &s.n_bad, e.stack_id);
        else if (fn == (uintptr_t)rs_realloc_site && type == HT_EVENT_HEAP_REALLOC)
            site_note(&s.realloc_, &s.n_realloc, e.stack_id);
        else if (fn == (uintptr_t)rs_dl_cb && type == HT_EVENT_HEAP_ALLOC) {
            site_note(&s.dl, &s.n_dl, e.stack_id);
            /* The next frame is in the dlopen'ed library's mapping. */
            CHECK(dl_mod != NULL && f[1] >= dl_mod->base && f[1] < dl_mod->base + dl_mod->size);
        } else {
            s.n_other++;
            Dl_info info;
            if (dladdr((void *)(uintptr_t)(f[0] - 1), &info) != 0)
                fprintf(stderr, "%s: type %#x frame 0 in %s\n", unwind, type,
                        info.dli_sname ? info.dli_sname : "?");
        }
        if (fn == (uintptr_t)rs_site_a || fn == (uintptr_t)rs_site_b)
            CHECK(fn_of(f[1]) == (uintptr_t)run_unwinder); /* the caller of the site */
    }
    CHECK_EQ_U(ht_reader_status(r, NULL, NULL), HT_READER_OK);
    ht_reader_close(r);
    if (s.n_no_stack != 0 || s.n_bad_frame != 0 || s.n_other != 0)
        fprintf(stderr, "%s: %d events without stack, %d bad, %d elsewhere\n", unwind, s.n_no_stack,
                s.n_bad_frame, s.n_other);
    CHECK_EQ_U(s.n_no_stack, 0);
    CHECK_EQ_U(s.n_bad_frame, 0);
    CHECK_EQ_U(s.n_a, N_PER_SITE);
    CHECK_EQ_U(s.n_b, N_PER_SITE);
    CHECK_EQ_U(s.n_free, free_stacks ? 2 * N_PER_SITE : 0);
    CHECK_EQ_U(s.n_free_no_stack, free_stacks ? 0 : 2 * N_PER_SITE);
    CHECK_EQ_U(s.n_bad, 1); /* the INVALID free has its stack too */
    CHECK_EQ_U(s.n_realloc, 1);
    CHECK_EQ_U(s.n_dl, 1);
    CHECK(s.a != s.b && s.a != s.free_ && s.b != s.free_ && s.bad != s.free_ && s.bad != 0);
    CHECK_EQ_U(s.n_other, 0);

    free(sd.events);
    free(data);
    dlclose(lib);
    unlink(path);
    unsetenv("HEAPTRAIL_UNWIND");
}

static void stacks_fp(void)
{
    run_unwinder("fp", 0);
}

static void stacks_dwarf(void)
{
    if (!ht__unwind_have_dwarf()) {
        printf("skip stacks_dwarf: libunwind not built in\n");
        return;
    }
    run_unwinder("dwarf", 0);
}

/* After sessions with the memoised walkers: libunwind's captures leave the walker's memo
 * note alone, and a stale one once made every site share the first event's stack. */
static void stacks_libunwind(void)
{
#if defined(__SANITIZE_THREAD__)
    printf("skip stacks_libunwind: libunwind's thread-exit destructor crashes TSan\n");
#else
    if (!ht__unwind_have_libunwind()) {
        printf("skip stacks_libunwind: libunwind not built in\n");
        return;
    }
    /* a frame-pointer session whose last capture is a whole memo match ... */
    char path[256];
    ht_trace_config cfg = stack_session(path, sizeof path, "stacks-fp-whole", "fp", 16);
    cfg.flags = HT_TRACE_NO_RUNDOWN;
    g_heap = ht_heap_create(0, 0, 0);
    REQUIRE(g_heap != NULL);
    REQUIRE(ht_trace_start(&cfg) == 0);
    void *p[3];
    /* one call site: a loop the optimizer unrolls gives each call its own return address */
#pragma GCC unroll 1
    for (int i = 0; i < 3; i++)
        p[i] = rs_site_a(32);
    unsigned last = ht__unwind_memo_last;
    REQUIRE(ht_trace_stop() == 0);
    for (int i = 0; i < 3; i++)
        ht_heap_free(g_heap, 0, p[i]);
    ht_heap_destroy(g_heap);
    unlink(path);
    unsetenv("HEAPTRAIL_UNWIND");
    CHECK((last & HT_UNWIND_MEMO_WHOLE) != 0);
    /* ... then libunwind: every site still its own stack */
    run_unwinder("libunwind", 0);
#endif
}

static void stacks_alloc_only(void)
{
    const unsigned ev = HT_TRACE_STACK(HT_EVENT_HEAP_ALLOC) | HT_TRACE_STACK(HT_EVENT_HEAP_REALLOC);
    run_unwinder("fp", ev);
    if (ht__unwind_have_dwarf())
        run_unwinder("dwarf", ev);
}

static void bad_consumer(const ht_event *ev, void *ctx)
{
    (void)ev;
    (void)ctx;
}

static void bad_unwinder_rejected(void)
{
    char path[256];
    ht_trace_config cfg = stack_session(path, sizeof path, "stacks-bad", "nonsense", 8);
    CHECK(ht_trace_start(&cfg) == -EINVAL);
    CHECK(access(path, F_OK) != 0); /* no file left behind */
    unsetenv("HEAPTRAIL_UNWIND");
    cfg.stack_events = HT_TRACE_STACK_ALL | 1u << 20; /* no such event */
    CHECK(ht_trace_start(&cfg) == -EINVAL);
    CHECK(access(path, F_OK) != 0);
    cfg.path = NULL; /* a consumer-only session checks it too */
    cfg.consumer = bad_consumer;
    CHECK(ht_trace_start(&cfg) == -EINVAL);
}

TEST_MAIN(TEST(stacks_fp), TEST(stacks_dwarf), TEST(stacks_alloc_only), TEST(stacks_libunwind),
          TEST(bad_unwinder_rejected))
