/* test_symbolize.c — the symbolizer (src/analysis/symbolize.c) on this very process: the
 * module table comes from the recorder's own scanner (ht__modules_snapshot), the addresses are
 * return addresses taken in known functions, and each expected line is marked with __LINE__
 * at the call. Covers a function of the executable, one of a shared library, an inline frame,
 * build-id (and span) mismatches, hostile paths, addresses in no module, an empty table, the
 * cache, overlapping entries, separate debug files (by build-id, by .gnu_debuglink, for a
 * missing main file), DWARF without .debug_aranges, a non-PIE executable, glibc's installed
 * debug file when there is one, the debuginfod path as far as it goes offline, a trace file
 * written by the recorder and read back, and the display format.
 * Built -O0 -g (CMakeLists.txt), so the frames are what the source says. */
#include "analysis/symbolize.h"
#include "harness.h"
#include "recorder_util.h"
#include "trace/stack.h"

#include <dlfcn.h>
#include <errno.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

uint64_t ht_symtest_where(unsigned *line); /* tests/symbolize_lib.c */

/* `(line = __LINE__, expr)`: the line is that of the macro's use, the line of the call. */
#define AT_LINE(line, expr) ((line) = __LINE__, (expr))

/* -- this process's module table, as the recorder records it -------------------------------- */

static ht_reader_module *g_mods;
static size_t g_n_mods, g_cap_mods;

static void mods_add(ht_module_change change, const ht_module *m, void *ctx)
{
    (void)ctx;
    if (change != HT_MODULE_LOAD)
        return;
    if (g_n_mods == g_cap_mods) {
        g_cap_mods = g_cap_mods ? 2 * g_cap_mods : 64;
        g_mods = realloc(g_mods, g_cap_mods * sizeof *g_mods);
    }
    ht_reader_module *r = &g_mods[g_n_mods++];
    memset(r, 0, sizeof *r);
    r->base = m->base;
    r->size = m->size;
    r->path = strndup(m->path, m->path_size);
    memcpy(r->build_id, m->build_id, m->build_id_size);
    r->build_id_size = (uint32_t)m->build_id_size;
}

static bool mods_load(void)
{
    if (g_n_mods != 0)
        return true;
    int n = ht__modules_snapshot(mods_add, NULL);
    ht__modules_fini();
    return n > 0 && (size_t)n == g_n_mods;
}

static const ht_reader_module *mods_of(uint64_t address)
{
    for (size_t i = 0; i < g_n_mods; i++) {
        if (address >= g_mods[i].base && address - g_mods[i].base < g_mods[i].size)
            return &g_mods[i];
    }
    return NULL;
}

static bool ends_with(const char *s, const char *tail)
{
    size_t n = s != NULL ? strlen(s) : 0, k = strlen(tail);
    return n >= k && strcmp(s + n - k, tail) == 0;
}

static bool str_eq(const char *a, const char *b)
{
    return a != NULL && b != NULL && strcmp(a, b) == 0;
}

static void frame_dump(const char *what, const ht_sym_frame *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char buf[512];
        ht__sym_format(&f[i], buf, sizeof buf);
        fprintf(stderr, "  %s #%zu: %s\n", what, i, buf);
    }
}

/* -- the known functions -------------------------------------------------------------------- */

__attribute__((noinline)) static uint64_t return_address(void)
{
    uint64_t a = (uint64_t)(uintptr_t)__builtin_return_address(0);
    __asm__ volatile("" : : "r"(a) : "memory");
    return a;
}

__attribute__((noinline)) static uint64_t exe_caller(unsigned *line)
{
    return AT_LINE(*line, return_address());
}

__attribute__((always_inline)) static inline uint64_t inlined_callee(unsigned *line)
{
    return AT_LINE(*line, return_address());
}

__attribute__((noinline)) static uint64_t inline_caller(unsigned *inner_line, unsigned *line)
{
    return AT_LINE(*line, inlined_callee(inner_line));
}

static int qsort_cmp_seen;
static uint64_t qsort_cmp_address;

static int qsort_cmp(const void *a, const void *b)
{
    if (!qsort_cmp_seen++)
        qsort_cmp_address = (uint64_t)(uintptr_t)__builtin_return_address(0);
    return *(const int *)a - *(const int *)b;
}

/* -- tests ---------------------------------------------------------------------------------- */

/* Built without libdw (HT_SYMTEST_LIBDW 0) every address is module+offset: the tests that
 * expect names say so and stop; test_without_libdw checks that form instead. */
static bool with_libdw(const char *test)
{
    if (HT_SYMTEST_LIBDW)
        return true;
    printf("note: built without libdw: %s not run\n", test);
    return false;
}

static void test_executable_function(void)
{
    if (!with_libdw(__func__))
        return;
    REQUIRE(mods_load());
    unsigned line = 0;
    uint64_t a = exe_caller(&line);
    const ht_reader_module *m = mods_of(a);
    REQUIRE(m != NULL);
    CHECK(m->build_id_size >= 16);
    ht_symbolizer *sym = ht__sym_open(g_mods, g_n_mods);
    REQUIRE(sym != NULL);
    ht_sym_frame f[8] = {0};
    size_t n = ht__sym_resolve(sym, a, f, 8);
    CHECK_EQ_U(n, 1);
    CHECK(str_eq(f[0].function, "exe_caller"));
    CHECK_EQ_U(f[0].line, line);
    CHECK(ends_with(f[0].file, "tests/test_symbolize.c"));
    CHECK(str_eq(f[0].module, "test_symbolize"));
    CHECK_EQ_U(f[0].offset, a - m->base);
    CHECK_EQ_U(f[0].address, a);
    CHECK(!f[0].inlined);
    char buf[512], want[512];
    snprintf(want, sizeof want, "exe_caller (%s:%u)", f[0].file, line);
    CHECK_EQ_U(ht__sym_format(&f[0], buf, sizeof buf), strlen(want));
    CHECK(strcmp(buf, want) == 0);
    ht_sym_stats st;
    ht__sym_get_stats(sym, &st);
    CHECK(st.have_libdw);
    CHECK_EQ_U(st.n_modules_used, 1); /* only the module hit was opened */
    CHECK_EQ_U(st.n_modules_dwarf, 1);
    CHECK(st.n_modules >= 3);
    if (harness_failures_)
        frame_dump("exe", f, n);
    ht__sym_close(sym);
}

static void test_shared_library_function(void)
{
    if (!with_libdw(__func__))
        return;
    REQUIRE(mods_load());
    unsigned line = 0;
    uint64_t a = ht_symtest_where(&line);
    const ht_reader_module *m = mods_of(a);
    REQUIRE(m != NULL);
    CHECK(ends_with(m->path, "/libsymbolize_test_lib.so"));
    ht_symbolizer *sym = ht__sym_open(g_mods, g_n_mods);
    REQUIRE(sym != NULL);
    ht_sym_frame f[8] = {0};
    size_t n = ht__sym_resolve(sym, a, f, 8);
    CHECK_EQ_U(n, 1);
    CHECK(str_eq(f[0].function, "symtest_static_caller"));
    CHECK_EQ_U(f[0].line, line);
    CHECK(ends_with(f[0].file, "tests/symbolize_lib.c"));
    CHECK(str_eq(f[0].module, "libsymbolize_test_lib.so"));
    CHECK_EQ_U(f[0].offset, a - m->base);
    if (harness_failures_)
        frame_dump("lib", f, n);
    ht__sym_close(sym);
}

static void test_inline_frame(void)
{
    if (!with_libdw(__func__))
        return;
    REQUIRE(mods_load());
    unsigned inner_line = 0, line = 0;
    uint64_t a = inline_caller(&inner_line, &line);
    ht_symbolizer *sym = ht__sym_open(g_mods, g_n_mods);
    REQUIRE(sym != NULL);
    ht_sym_frame f[8] = {0};
    size_t n = ht__sym_resolve(sym, a, f, 8);
    CHECK_EQ_U(n, 2);
    CHECK(str_eq(f[0].function, "inlined_callee"));
    CHECK_EQ_U(f[0].line, inner_line);
    CHECK(f[0].inlined);
    CHECK(ends_with(f[0].file, "tests/test_symbolize.c"));
    CHECK(str_eq(f[1].function, "inline_caller"));
    CHECK_EQ_U(f[1].line, line);
    CHECK(!f[1].inlined);
    CHECK(ends_with(f[1].file, "tests/test_symbolize.c"));
    CHECK_EQ_U(f[0].address, a);
    CHECK_EQ_U(f[1].address, a);
    /* cap 1: only the innermost frame */
    ht_sym_frame one = {0};
    CHECK_EQ_U(ht__sym_resolve(sym, a, &one, 1), 1);
    CHECK(str_eq(one.function, "inlined_callee"));
    char buf[512], want[512];
    snprintf(want, sizeof want, "inlined_callee (%s:%u)", f[0].file, inner_line);
    ht__sym_format(&f[0], buf, sizeof buf);
    CHECK(strcmp(buf, want) == 0);
    if (harness_failures_)
        frame_dump("inline", f, n);
    ht__sym_close(sym);
}

/* The executable's entry with its build-id changed: the file at the path is not the one the
 * trace saw, so no name may come from it. */
static void test_build_id_mismatch(void)
{
    if (!with_libdw(__func__))
        return;
    REQUIRE(mods_load());
    unsigned line = 0;
    uint64_t a = exe_caller(&line);
    const ht_reader_module *m = mods_of(a);
    REQUIRE(m != NULL && m->build_id_size > 0);
    ht_reader_module wrong = *m;
    wrong.build_id[0] ^= 0x5a;
    ht_symbolizer *sym = ht__sym_open(&wrong, 1);
    REQUIRE(sym != NULL);
    ht_sym_frame f[8] = {0};
    size_t n = ht__sym_resolve(sym, a, f, 8);
    CHECK_EQ_U(n, 1);
    CHECK(f[0].function == NULL);
    CHECK(f[0].file == NULL);
    CHECK_EQ_U(f[0].line, 0);
    CHECK(str_eq(f[0].module, "test_symbolize"));
    CHECK_EQ_U(f[0].offset, a - m->base);
    char buf[256], want[256];
    snprintf(want, sizeof want, "test_symbolize+0x%" PRIx64, a - m->base);
    ht__sym_format(&f[0], buf, sizeof buf);
    CHECK(strcmp(buf, want) == 0);
    ht_sym_stats st;
    ht__sym_get_stats(sym, &st);
    CHECK_EQ_U(st.n_modules_none, 1);
    ht__sym_close(sym);

    /* No build-id recorded: the file at the path is taken as it is. */
    ht_reader_module none = *m;
    none.build_id_size = 0;
    sym = ht__sym_open(&none, 1);
    REQUIRE(sym != NULL);
    n = ht__sym_resolve(sym, a, f, 8);
    CHECK_EQ_U(n, 1);
    CHECK(str_eq(f[0].function, "exe_caller"));
    CHECK_EQ_U(f[0].line, line);
    ht__sym_close(sym);

    /* ... but not when its span differs from the recorded size: another build. */
    none.size += 4096;
    sym = ht__sym_open(&none, 1);
    REQUIRE(sym != NULL);
    n = ht__sym_resolve(sym, a, f, 8);
    CHECK_EQ_U(n, 1);
    CHECK(f[0].function == NULL);
    ht__sym_close(sym);

    /* A path that does not exist and a build-id found nowhere. */
    ht_reader_module gone = *m;
    gone.path = "/nonexistent/heaptrail/test_symbolize";
    gone.build_id[0] ^= 0x5a;
    sym = ht__sym_open(&gone, 1);
    REQUIRE(sym != NULL);
    n = ht__sym_resolve(sym, a, f, 8);
    CHECK_EQ_U(n, 1);
    CHECK(f[0].function == NULL);
    CHECK(str_eq(f[0].module, "test_symbolize"));
    ht__sym_close(sym);
}

/* Paths from the trace are untrusted: a FIFO, a directory or a device must not block or be
 * read as ELF. */
static void test_hostile_paths(void)
{
    if (!with_libdw(__func__))
        return;
    REQUIRE(mods_load());
    unsigned line = 0;
    uint64_t a = exe_caller(&line);
    const ht_reader_module *m = mods_of(a);
    REQUIRE(m != NULL);
    char fifo[64];
    snprintf(fifo, sizeof fifo, "/tmp/ht_symtest_fifo_%d", (int)getpid());
    unlink(fifo);
    REQUIRE(mkfifo(fifo, 0600) == 0);
    const char *paths[] = {fifo, "/tmp", "/dev/zero", "/dev/null", ""};
    alarm(30); /* a blocking open ends the test (SIGALRM) instead of hanging it */
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        ht_reader_module bad = *m;
        bad.path = paths[i];
        bad.build_id_size = 0; /* nothing to match: the file would be taken if it were ELF */
        ht_symbolizer *sym = ht__sym_open(&bad, 1);
        REQUIRE(sym != NULL);
        ht_sym_frame f[4] = {0};
        CHECK_EQ_U(ht__sym_resolve(sym, a, f, 4), 1);
        CHECK(f[0].function == NULL);
        CHECK_EQ_U(f[0].offset, a - m->base);
        ht__sym_close(sym);
    }
    alarm(0);
    unlink(fifo);
}

static void test_outside_every_module(void)
{
    REQUIRE(mods_load());
    ht_symbolizer *sym = ht__sym_open(g_mods, g_n_mods);
    REQUIRE(sym != NULL);
    static const uint64_t addrs[] = {0, 1, 0x10, UINT64_MAX, 0xffff800000001000u};
    for (size_t i = 0; i < sizeof addrs / sizeof addrs[0]; i++) {
        REQUIRE(mods_of(addrs[i]) == NULL);
        ht_sym_frame f[4];
        memset(f, 0xa5, sizeof f);
        CHECK_EQ_U(ht__sym_resolve(sym, addrs[i], f, 4), 1);
        CHECK(f[0].module == NULL);
        CHECK(f[0].function == NULL);
        CHECK(f[0].file == NULL);
        CHECK_EQ_U(f[0].line, 0);
        CHECK_EQ_U(f[0].address, addrs[i]);
        CHECK(!f[0].inlined);
        char buf[64], want[64];
        snprintf(want, sizeof want, "0x%" PRIx64, addrs[i]);
        ht__sym_format(&f[0], buf, sizeof buf);
        CHECK(strcmp(buf, want) == 0);
    }
    ht_sym_stats st;
    ht__sym_get_stats(sym, &st);
    CHECK_EQ_U(st.n_outside, sizeof addrs / sizeof addrs[0]);
    CHECK_EQ_U(st.n_modules_used, 0);
    ht__sym_close(sym);
}

static void test_empty_table(void)
{
    unsigned line = 0;
    uint64_t a = exe_caller(&line);
    ht_symbolizer *sym = ht__sym_open(NULL, 0);
    REQUIRE(sym != NULL);
    ht_sym_frame f[2] = {0};
    CHECK_EQ_U(ht__sym_resolve(sym, a, f, 2), 1);
    CHECK(f[0].module == NULL && f[0].function == NULL);
    CHECK_EQ_U(f[0].address, a);
    CHECK_EQ_U(ht__sym_resolve(sym, a, f, 0), 0);
    ht__sym_close(sym);
    ht__sym_close(NULL);
}

static void test_cache(void)
{
    if (!with_libdw(__func__))
        return;
    REQUIRE(mods_load());
    unsigned inner_line = 0, line = 0;
    uint64_t a = inline_caller(&inner_line, &line);
    ht_symbolizer *sym = ht__sym_open(g_mods, g_n_mods);
    REQUIRE(sym != NULL);
    ht_sym_frame f1[8] = {0}, f2[8] = {0};
    size_t n1 = ht__sym_resolve(sym, a, f1, 8);
    size_t n2 = ht__sym_resolve(sym, a, f2, 8);
    CHECK_EQ_U(n1, 2);
    CHECK_EQ_U(n2, n1);
    CHECK(memcmp(f1, f2, n1 * sizeof f1[0]) == 0); /* same strings, same pointers */
    ht_sym_stats st;
    ht__sym_get_stats(sym, &st);
    CHECK_EQ_U(st.n_resolves, 2);
    CHECK_EQ_U(st.n_cache_hits, 1);
    CHECK_EQ_U(st.n_addresses, 1);
    /* Many distinct addresses (the table grows, rehashes), then every one again: all hits,
     * and each answer equal to the first one. */
    enum { N = 5000 };
    const ht_reader_module *m = mods_of(a);
    REQUIRE(m != NULL);
    static ht_sym_frame first[N];
    size_t n_a = 0; /* how often a is among them (already cached) */
    for (size_t i = 0; i < N; i++) {
        n_a += m->base + i * 7 == a;
        CHECK(ht__sym_resolve(sym, m->base + i * 7, &first[i], 1) == 1);
    }
    int mismatches = 0;
    for (size_t i = 0; i < N; i++) {
        ht_sym_frame again;
        ht__sym_resolve(sym, m->base + i * 7, &again, 1);
        mismatches += memcmp(&again, &first[i], sizeof again) != 0;
    }
    CHECK_EQ_U(mismatches, 0);
    ht__sym_get_stats(sym, &st);
    CHECK_EQ_U(st.n_cache_hits, 1 + N + n_a);
    CHECK_EQ_U(st.n_addresses, 1 + N - n_a);
    /* the first address survived the rehashes */
    CHECK_EQ_U(ht__sym_resolve(sym, a, f2, 8), 2);
    CHECK(memcmp(f1, f2, n1 * sizeof f1[0]) == 0);
    ht__sym_close(sym);
}

/* Overlapping entries: an address belongs to the entry loaded last; identical entries (the
 * same library loaded twice) share one opened module. */
static void test_overlap_and_duplicates(void)
{
    if (!with_libdw(__func__))
        return;
    REQUIRE(mods_load());
    unsigned line = 0;
    uint64_t a = exe_caller(&line);
    const ht_reader_module *m = mods_of(a);
    REQUIRE(m != NULL);
    ht_reader_module t[3] = {*m, *m, *m};
    t[1].path = "/nonexistent/other_module.so"; /* loaded over it later */
    t[1].build_id[0] ^= 1;
    ht_symbolizer *sym = ht__sym_open(t, 2);
    REQUIRE(sym != NULL);
    ht_sym_frame f[4] = {0};
    CHECK_EQ_U(ht__sym_resolve(sym, a, f, 4), 1);
    CHECK(str_eq(f[0].module, "other_module.so"));
    CHECK(f[0].function == NULL);
    ht__sym_close(sym);
    /* [m, other, m again]: m again is the last */
    sym = ht__sym_open(t, 3);
    REQUIRE(sym != NULL);
    CHECK_EQ_U(ht__sym_resolve(sym, a, f, 4), 1);
    CHECK(str_eq(f[0].function, "exe_caller"));
    ht_sym_stats st;
    ht__sym_get_stats(sym, &st);
    CHECK_EQ_U(st.n_modules, 2); /* t[0] and t[2] merged */
    ht__sym_close(sym);
}

/* -- separate debug files (made by CMake with objcopy from libsymbolize_test_lib.so) ------- */

static char g_tmp[256];

static void hex_id(const ht_reader_module *m, char *xx, char *rest)
{
    for (uint32_t i = 0; i < m->build_id_size; i++) {
        char *p = i == 0 ? xx : rest + 2 * (i - 1);
        sprintf(p, "%02x", m->build_id[i]);
    }
}

/* A fresh debug root g_tmp with .build-id/xx/yyyy.debug -> the library's debug file when
 * with_file, else an empty one. */
static bool debug_root_make(const ht_reader_module *m, bool with_file, char *link, size_t cap)
{
    snprintf(g_tmp, sizeof g_tmp, "/tmp/ht_symtest_XXXXXX");
    if (mkdtemp(g_tmp) == NULL)
        return false;
    link[0] = '\0';
    if (!with_file)
        return true;
    char xx[3], rest[130], dir[400];
    hex_id(m, xx, rest);
    snprintf(dir, sizeof dir, "%s/.build-id", g_tmp);
    if (mkdir(dir, 0700) != 0)
        return false;
    snprintf(dir, sizeof dir, "%s/.build-id/%s", g_tmp, xx);
    if (mkdir(dir, 0700) != 0)
        return false;
    snprintf(link, cap, "%s/%s.debug", dir, rest);
    return symlink(HT_SYMTEST_DIR "/symtest-separate.debug", link) == 0;
}

static void debug_root_remove(const char *link)
{
    char dir[400];
    if (link[0] != '\0') {
        unlink(link);
        snprintf(dir, sizeof dir, "%s", link);
        *strrchr(dir, '/') = '\0';
        rmdir(dir);
        *strrchr(dir, '/') = '\0';
        rmdir(dir);
    }
    rmdir(g_tmp);
}

/* The library's entry, its path replaced. */
static bool lib_entry(const char *path, ht_reader_module *out, uint64_t *a, unsigned *line)
{
    if (!mods_load())
        return false;
    *a = ht_symtest_where(line);
    const ht_reader_module *m = mods_of(*a);
    if (m == NULL || m->build_id_size == 0)
        return false;
    *out = *m;
    out->path = path;
    return true;
}

static void test_debug_file_by_build_id(void)
{
    if (!with_libdw(__func__))
        return;
    ht_reader_module m;
    uint64_t a;
    unsigned line = 0;
    REQUIRE(lib_entry(HT_SYMTEST_DIR "/libsymtest_stripped.so", &m, &a, &line));
    char link[512];

    /* Stripped, no debug file anywhere: no line, and the static function has no name. */
    REQUIRE(debug_root_make(&m, false, link, sizeof link));
    ht_symbolizer *sym = ht__sym_open(&m, 1);
    REQUIRE(sym != NULL);
    CHECK(ht__sym_set_debug_dirs(sym, g_tmp));
    ht_sym_frame f[4] = {0};
    CHECK_EQ_U(ht__sym_resolve(sym, a, f, 4), 1);
    CHECK(!str_eq(f[0].function, "symtest_static_caller"));
    CHECK_EQ_U(f[0].line, 0);
    CHECK(str_eq(f[0].module, "libsymtest_stripped.so"));
    ht_sym_stats st;
    ht__sym_get_stats(sym, &st);
    CHECK_EQ_U(st.n_modules_symtab, 1);
    ht__sym_close(sym);
    debug_root_remove(link);

    /* The debug file under DIR/.build-id: name and line come from it. */
    REQUIRE(debug_root_make(&m, true, link, sizeof link));
    sym = ht__sym_open(&m, 1);
    REQUIRE(sym != NULL);
    CHECK(ht__sym_set_debug_dirs(sym, g_tmp));
    CHECK_EQ_U(ht__sym_resolve(sym, a, f, 4), 1);
    CHECK(str_eq(f[0].function, "symtest_static_caller"));
    CHECK_EQ_U(f[0].line, line);
    CHECK(ends_with(f[0].file, "tests/symbolize_lib.c"));
    ht__sym_get_stats(sym, &st);
    CHECK_EQ_U(st.n_modules_dwarf, 1);
    ht__sym_close(sym);

    /* The main file is gone: the debug file alone stands in for it. */
    m.path = "/nonexistent/heaptrail/libsymtest_stripped.so";
    sym = ht__sym_open(&m, 1);
    REQUIRE(sym != NULL);
    CHECK(ht__sym_set_debug_dirs(sym, g_tmp));
    CHECK_EQ_U(ht__sym_resolve(sym, a, f, 4), 1);
    CHECK(str_eq(f[0].function, "symtest_static_caller"));
    CHECK_EQ_U(f[0].line, line);
    CHECK(str_eq(f[0].module, "libsymtest_stripped.so"));
    ht__sym_close(sym);

    /* ... and with the build-id changed, the same debug root gives nothing. */
    m.build_id[1] ^= 0x11;
    sym = ht__sym_open(&m, 1);
    REQUIRE(sym != NULL);
    CHECK(ht__sym_set_debug_dirs(sym, g_tmp));
    CHECK_EQ_U(ht__sym_resolve(sym, a, f, 4), 1);
    CHECK(f[0].function == NULL);
    ht__sym_close(sym);
    debug_root_remove(link);
}

static void test_debug_file_by_debuglink(void)
{
    if (!with_libdw(__func__))
        return;
    ht_reader_module m;
    uint64_t a;
    unsigned line = 0;
    REQUIRE(lib_entry(HT_SYMTEST_DIR "/libsymtest_linked.so", &m, &a, &line));
    char link[512];
    REQUIRE(debug_root_make(&m, false, link, sizeof link)); /* no .build-id tree */
    ht_symbolizer *sym = ht__sym_open(&m, 1);
    REQUIRE(sym != NULL);
    CHECK(ht__sym_set_debug_dirs(sym, g_tmp));
    ht_sym_frame f[4] = {0};
    CHECK_EQ_U(ht__sym_resolve(sym, a, f, 4), 1);
    CHECK(str_eq(f[0].function, "symtest_static_caller"));
    CHECK_EQ_U(f[0].line, line);
    CHECK(str_eq(f[0].module, "libsymtest_linked.so"));
    ht__sym_close(sym);
    debug_root_remove(link);
}

/* A non-PIE executable (ET_EXEC: no bias), symbolized offline from the entry it printed. */
static void test_non_pie_executable(void)
{
    if (!with_libdw(__func__))
        return;
    FILE *p = popen(HT_SYMTEST_NOPIE, "r");
    REQUIRE(p != NULL);
    unsigned long long base = 0, size = 0, a = 0;
    unsigned line = 0;
    char id_hex[130] = "";
    int got = fscanf(p, "%llx %llx %129s %llx %u", &base, &size, id_hex, &a, &line);
    CHECK(pclose(p) == 0);
    REQUIRE(got == 5);
    CHECK_EQ_U(base, 0x400000);
    ht_reader_module m;
    memset(&m, 0, sizeof m);
    m.path = HT_SYMTEST_NOPIE;
    m.base = base;
    m.size = size;
    for (size_t i = 0; id_hex[2 * i] != '\0' && i < sizeof m.build_id; i++) {
        unsigned byte;
        REQUIRE(sscanf(id_hex + 2 * i, "%2x", &byte) == 1);
        m.build_id[m.build_id_size++] = (uint8_t)byte;
    }
    CHECK(m.build_id_size >= 16);
    ht_symbolizer *sym = ht__sym_open(&m, 1);
    REQUIRE(sym != NULL);
    ht_sym_frame f[4] = {0};
    CHECK_EQ_U(ht__sym_resolve(sym, a, f, 4), 1);
    CHECK(str_eq(f[0].function, "nopie_caller"));
    CHECK_EQ_U(f[0].line, line);
    CHECK(ends_with(f[0].file, "tests/symbolize_nopie.c"));
    CHECK(str_eq(f[0].module, "symbolize_nopie"));
    CHECK_EQ_U(f[0].offset, a - base);
    ht__sym_close(sym);

    /* An ET_EXEC file cannot be anywhere else: an entry at another base does not take it. */
    m.base += 0x10000;
    sym = ht__sym_open(&m, 1);
    REQUIRE(sym != NULL);
    memset(f, 0, sizeof f);
    CHECK_EQ_U(ht__sym_resolve(sym, a + 0x10000, f, 4), 1);
    CHECK(f[0].function == NULL);
    ht__sym_close(sym);
}

/* DWARF without .debug_aranges (clang's default): the CU is found by its own ranges. */
static void test_dwarf_without_aranges(void)
{
    if (!with_libdw(__func__))
        return;
    ht_reader_module m;
    uint64_t a;
    unsigned line = 0;
    REQUIRE(lib_entry(HT_SYMTEST_DIR "/libsymtest_noaranges.so", &m, &a, &line));
    ht_symbolizer *sym = ht__sym_open(&m, 1);
    REQUIRE(sym != NULL);
    ht_sym_frame f[4] = {0};
    CHECK_EQ_U(ht__sym_resolve(sym, a, f, 4), 1);
    CHECK(str_eq(f[0].function, "symtest_static_caller"));
    CHECK_EQ_U(f[0].line, line);
    CHECK(ends_with(f[0].file, "tests/symbolize_lib.c"));
    ht__sym_close(sym);
}

/* glibc's own qsort (found with dlsym: under ASan the name qsort is the interceptor's), and
 * the return address in glibc from which qsort calls our comparator (without ASan). With
 * Debian's libc6-dbg installed (/usr/lib/debug/.build-id) they have names and lines. */
static void test_system_debug_file(void)
{
    if (!with_libdw(__func__))
        return;
    REQUIRE(mods_load());
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    REQUIRE(libc != NULL);
    uint64_t entry = (uint64_t)(uintptr_t)dlsym(libc, "qsort");
    dlclose(libc);
    REQUIRE(entry != 0);
    const ht_reader_module *m = mods_of(entry);
    REQUIRE(m != NULL);
    CHECK(strstr(m->path, "/libc.so") != NULL);
    int v[] = {3, 1, 2};
    qsort_cmp_seen = 0;
    qsort(v, 3, sizeof v[0], qsort_cmp);
    bool called_from_libc = mods_of(qsort_cmp_address) == m;
    char xx[3], rest[130], path[400];
    hex_id(m, xx, rest);
    snprintf(path, sizeof path, "/usr/lib/debug/.build-id/%s/%s.debug", xx, rest);
    bool have_dbg = access(path, R_OK) == 0;
    if (!have_dbg)
        printf("note: %s missing (no libc6-dbg): only names from .dynsym\n", path);
    ht_symbolizer *sym = ht__sym_open(g_mods, g_n_mods);
    REQUIRE(sym != NULL);
    ht_sym_frame f[HT_SYM_MAX_FRAMES] = {0};
    size_t n = ht__sym_resolve(sym, entry + 1, f, HT_SYM_MAX_FRAMES); /* as if it returned there */
    CHECK_EQ_U(n, 1);
    CHECK(str_eq(f[0].module, m->path + strlen(m->path) - strlen(f[0].module)));
    CHECK(str_eq(f[0].function, "qsort"));
    if (have_dbg)
        CHECK(ends_with(f[0].file, "/msort.c") && f[0].line > 0);
    if (harness_failures_ || getenv("HT_TEST_VERBOSE"))
        frame_dump("libc qsort", f, n);
    if (called_from_libc) {
        n = ht__sym_resolve(sym, qsort_cmp_address, f, HT_SYM_MAX_FRAMES);
        CHECK(n >= 1);
        CHECK(f[n - 1].function != NULL && !f[n - 1].inlined);
        if (have_dbg)
            CHECK(f[0].file != NULL && f[0].line > 0);
        if (harness_failures_ || getenv("HT_TEST_VERBOSE"))
            frame_dump("libc caller", f, n);
    }
    ht__sym_close(sym);
}

/* debuginfod: no network here. With DEBUGINFOD_URLS unset (the normal run) a module found
 * nowhere is module+offset at once. The ctest entry test_symbolize_debuginfod runs this again
 * with DEBUGINFOD_URLS naming a closed local port: the client must have been asked (it creates
 * its cache folder, which we point at a fresh temporary path), and the answer must still be
 * module+offset, quickly. */
static int tree_remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void test_debuginfod_offline(void)
{
    if (!with_libdw(__func__))
        return;
    REQUIRE(mods_load());
    unsigned line = 0;
    uint64_t a = exe_caller(&line);
    const ht_reader_module *m = mods_of(a);
    REQUIRE(m != NULL && m->build_id_size > 0);
    ht_reader_module gone = *m;
    gone.path = "/nonexistent/heaptrail/test_symbolize";
    const char *urls = getenv("DEBUGINFOD_URLS");
    bool asked = urls != NULL && urls[0] != '\0';
    char cache[300] = "";
    if (asked) {
        snprintf(g_tmp, sizeof g_tmp, "/tmp/ht_symtest_XXXXXX");
        REQUIRE(mkdtemp(g_tmp) != NULL);
        snprintf(cache, sizeof cache, "%s/cache", g_tmp);
        REQUIRE(setenv("DEBUGINFOD_CACHE_PATH", cache, 1) == 0); /* read at each query */
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ht_symbolizer *sym = ht__sym_open(&gone, 1);
    REQUIRE(sym != NULL);
    CHECK(ht__sym_set_debug_dirs(sym, "/nonexistent/heaptrail/debug"));
    ht_sym_frame f[4] = {0};
    CHECK_EQ_U(ht__sym_resolve(sym, a, f, 4), 1);
    CHECK(f[0].function == NULL);
    CHECK(str_eq(f[0].module, "test_symbolize"));
    ht__sym_close(sym);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    CHECK(s < 30.0);
    if (asked) {
        struct stat st;
        CHECK(stat(cache, &st) == 0 && S_ISDIR(st.st_mode)); /* the client was asked */
        printf("note: debuginfod at %s asked, no answer, %.3f s\n", urls, s);
        nftw(g_tmp, tree_remove_one, 8, FTW_DEPTH | FTW_PHYS);
    }
}

/* End to end: a trace file written by the recorder (stacks on), read back by the reader; the
 * reader's module table and stacks go to the symbolizer, which names the allocating function
 * and its caller with their lines. */
static ht_heap *g_e2e_heap;

__attribute__((noinline)) static void *e2e_alloc_site(unsigned *line)
{
    void *p = AT_LINE(*line, ht_heap_alloc(g_e2e_heap, 0, 4321));
    __asm__ volatile("" : : "r"(p) : "memory");
    return p;
}

static void test_trace_file_end_to_end(void)
{
    if (!with_libdw(__func__))
        return;
    char path[256];
    ru_path(path, sizeof path, "symbolize");
    ht_trace_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.path = path;
    cfg.stack_depth = 8;
    cfg.flags = HT_TRACE_NO_RUNDOWN;
    cfg.loss_policy = HT_TRACE_LOSS_BLOCK;
    g_e2e_heap = ht_heap_create(0, 0, 0);
    REQUIRE(g_e2e_heap != NULL);
    REQUIRE(ht_trace_start(&cfg) == 0);
    unsigned site_line = 0, caller_line = 0;
    void *p = AT_LINE(caller_line, e2e_alloc_site(&site_line));
    REQUIRE(ht_trace_stop() == 0);
    ht_heap_free(g_e2e_heap, 0, p);
    ht_heap_destroy(g_e2e_heap);

    ht_reader *r = NULL;
    REQUIRE(ht_reader_open(path, &r) == HT_READER_OK);
    const ht_reader_module *mods;
    size_t n_mods;
    ht_reader_modules(r, &mods, &n_mods);
    CHECK(n_mods >= 3);
    ht_symbolizer *sym = ht__sym_open(mods, n_mods);
    REQUIRE(sym != NULL);
    ht_reader_event e;
    int n_found = 0;
    while (ht_reader_next(r, &e)) {
        if (e.event.type != HT_EVENT_HEAP_ALLOC || e.event.alloc.size != 4321)
            continue;
        n_found++;
        const uint64_t *frames;
        size_t n_frames;
        REQUIRE(e.stack_id != 0 && ht_reader_stack(r, e.stack_id, &frames, &n_frames));
        REQUIRE(n_frames >= 2);
        ht_sym_frame f[HT_SYM_MAX_FRAMES] = {0};
        CHECK_EQ_U(ht__sym_resolve(sym, frames[0], f, HT_SYM_MAX_FRAMES), 1);
        CHECK(str_eq(f[0].function, "e2e_alloc_site"));
        CHECK_EQ_U(f[0].line, site_line);
        CHECK(str_eq(f[0].module, "test_symbolize"));
        if (harness_failures_)
            frame_dump("e2e #0", f, 1);
        CHECK_EQ_U(ht__sym_resolve(sym, frames[1], f, HT_SYM_MAX_FRAMES), 1);
        CHECK(str_eq(f[0].function, "test_trace_file_end_to_end"));
        CHECK_EQ_U(f[0].line, caller_line);
        if (harness_failures_)
            frame_dump("e2e #1", f, 1);
    }
    CHECK_EQ_U(n_found, 1);
    ht__sym_close(sym);
    ht_reader_close(r);
    unlink(path);
}

static void test_without_libdw(void)
{
    REQUIRE(mods_load());
    unsigned line = 0;
    uint64_t a = exe_caller(&line);
    const ht_reader_module *m = mods_of(a);
    REQUIRE(m != NULL);
    ht_symbolizer *sym = ht__sym_open(g_mods, g_n_mods);
    REQUIRE(sym != NULL);
    ht_sym_stats st;
    ht__sym_get_stats(sym, &st);
    CHECK_EQ_U(st.have_libdw, HT_SYMTEST_LIBDW);
    ht_sym_frame f[4] = {0};
    CHECK_EQ_U(ht__sym_resolve(sym, a, f, 4), 1);
    CHECK(str_eq(f[0].module, "test_symbolize"));
    CHECK_EQ_U(f[0].offset, a - m->base);
    if (!HT_SYMTEST_LIBDW) {
        CHECK(f[0].function == NULL && f[0].file == NULL);
        ht__sym_get_stats(sym, &st);
        CHECK_EQ_U(st.n_modules_none, 1);
    }
    ht__sym_close(sym);
}

static void test_format(void)
{
    char buf[128];
    ht_sym_frame f = {0x401234, "main", "/src/a.c", 12, "prog", 0x1234, false};
    CHECK_EQ_U(ht__sym_format(&f, buf, sizeof buf), strlen("main (/src/a.c:12)"));
    CHECK(strcmp(buf, "main (/src/a.c:12)") == 0);
    f.inlined = true; /* not marked by the format */
    ht__sym_format(&f, buf, sizeof buf);
    CHECK(strcmp(buf, "main (/src/a.c:12)") == 0);
    f.inlined = false;
    f.line = 0;
    ht__sym_format(&f, buf, sizeof buf);
    CHECK(strcmp(buf, "main (prog+0x1234)") == 0);
    f.file = NULL;
    f.line = 7;
    ht__sym_format(&f, buf, sizeof buf);
    CHECK(strcmp(buf, "main (prog+0x1234)") == 0);
    f.function = NULL;
    ht__sym_format(&f, buf, sizeof buf);
    CHECK(strcmp(buf, "prog+0x1234") == 0);
    f.module = NULL;
    ht__sym_format(&f, buf, sizeof buf);
    CHECK(strcmp(buf, "0x401234") == 0);
    /* truncation: NUL-terminated, returns the length wanted */
    ht_sym_frame g = {0x1, "function_name", "file.c", 3, "m", 1, false};
    char small[8];
    memset(small, 'x', sizeof small);
    CHECK_EQ_U(ht__sym_format(&g, small, sizeof small), strlen("function_name (file.c:3)"));
    CHECK(strcmp(small, "functio") == 0);
    CHECK_EQ_U(ht__sym_format(&g, NULL, 0), strlen("function_name (file.c:3)"));
}

TEST_MAIN(TEST(test_executable_function), TEST(test_shared_library_function),
          TEST(test_inline_frame), TEST(test_build_id_mismatch), TEST(test_hostile_paths),
          TEST(test_outside_every_module), TEST(test_empty_table), TEST(test_cache),
          TEST(test_overlap_and_duplicates), TEST(test_debug_file_by_build_id),
          TEST(test_debug_file_by_debuglink), TEST(test_dwarf_without_aranges),
          TEST(test_non_pie_executable), TEST(test_system_debug_file),
          TEST(test_debuginfod_offline), TEST(test_trace_file_end_to_end), TEST(test_without_libdw),
          TEST(test_format))
