/* bench_symbolize.c — how fast the symbolizer (src/analysis/symbolize.c) resolves addresses in
 * a real library of this process: every STEP-th byte of its executable segment, once with a
 * fresh symbolizer (uncached: includes opening the module and its debug file) and once again
 * (cached). Prints one line per library: addresses, resolves per second both ways, how many
 * got a name, a line, and the frames per address (inline chains).
 * Usage: bench_symbolize [STEP] [LIBRARY...]  (default 37 libc.so.6 libpython3.11.so.1.0)
 *        bench_symbolize --offline PATH BASE SIZE BUILD-ID TEXT-LO TEXT-HI [STEP]
 *          (a file not loaded here, e.g. /usr/bin/python3.11, described as a trace would:
 *          hex numbers, the build-id as hex digits; TEXT-LO..HI the addresses to resolve)
 * With HT_BENCH_DUMP=FILE it also writes every answer there (offset: frames), for comparing
 * two versions of the symbolizer. */
#include "analysis/symbolize.h"
#include "trace/stack.h"

#include <dlfcn.h>
#include <inttypes.h>
#include <link.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

typedef struct text_find {
    const char *name; /* basename looked for */
    uint64_t lo, hi;  /* its executable segment */
} text_find;

static int text_one(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    text_find *t = arg;
    const char *slash = info->dlpi_name != NULL ? strrchr(info->dlpi_name, '/') : NULL;
    if (slash == NULL || strcmp(slash + 1, t->name) != 0)
        return 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
            t->lo = info->dlpi_addr + ph->p_vaddr;
            t->hi = t->lo + ph->p_memsz;
            return 1;
        }
    }
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Resolves every step-th address of [lo, hi) twice and prints the line. */
static void bench_range(const char *lib, const ht_reader_module *mods, size_t n_mods, uint64_t lo,
                        uint64_t hi, uint64_t step);

static void bench_one(const char *lib, uint64_t step)
{
    if (dlopen(lib, RTLD_LAZY | RTLD_LOCAL) == NULL) {
        printf("%-24s not loadable: %s\n", lib, dlerror());
        return;
    }
    text_find t = {lib, 0, 0};
    dl_iterate_phdr(text_one, &t);
    if (t.hi == 0) {
        printf("%-24s no executable segment found\n", lib);
        return;
    }
    for (size_t i = 0; i < g_n_mods; i++)
        free((void *)g_mods[i].path);
    g_n_mods = 0;
    ht__modules_snapshot(mods_add, NULL);
    ht__modules_fini();
    bench_range(lib, g_mods, g_n_mods, t.lo, t.hi, step);
}

static void bench_range(const char *lib, const ht_reader_module *mods, size_t n_mods, uint64_t lo,
                        uint64_t hi, uint64_t step)
{
    text_find t = {lib, lo, hi};
    ht_symbolizer *sym = ht__sym_open(mods, n_mods);
    if (sym == NULL)
        return;
    size_t n_addr = 0, n_named = 0, n_lined = 0, n_frames = 0;
    ht_sym_frame f[HT_SYM_MAX_FRAMES];
    double t0 = now_s();
    ht__sym_resolve(sym, t.lo + 1, f, HT_SYM_MAX_FRAMES); /* opens the module */
    double t1 = now_s();
    for (uint64_t a = t.lo + 1 + step; a < t.hi; a += step) {
        size_t n = ht__sym_resolve(sym, a, f, HT_SYM_MAX_FRAMES);
        n_addr++;
        n_frames += n;
        n_named += f[n - 1].function != NULL;
        n_lined += f[0].line != 0;
    }
    double t2 = now_s();
    for (uint64_t a = t.lo + 1 + step; a < t.hi; a += step)
        ht__sym_resolve(sym, a, f, HT_SYM_MAX_FRAMES);
    double t3 = now_s();
    const char *dump_path = getenv("HT_BENCH_DUMP");
    FILE *dump = dump_path != NULL ? fopen(dump_path, "a") : NULL;
    for (uint64_t a = t.lo + 1 + step; dump != NULL && a < t.hi; a += step) {
        size_t n = ht__sym_resolve(sym, a, f, HT_SYM_MAX_FRAMES);
        fprintf(dump, "%s+%#" PRIx64 ":", lib, a - t.lo);
        for (size_t i = 0; i < n; i++) {
            char buf[1024];
            ht__sym_format(&f[i], buf, sizeof buf);
            fprintf(dump, " | %s", buf);
        }
        fputc('\n', dump);
    }
    if (dump != NULL)
        fclose(dump);
    ht_sym_stats st;
    ht__sym_get_stats(sym, &st);
    printf("%-24s open %.3f s; %zu addresses: uncached %.0f/s, cached %.0f/s; named %.1f%%, "
           "with line %.1f%%, %.2f frames/address; dwarf %s\n",
           lib, t1 - t0, n_addr, (double)n_addr / (t2 - t1), (double)n_addr / (t3 - t2),
           100.0 * (double)n_named / (double)n_addr, 100.0 * (double)n_lined / (double)n_addr,
           (double)n_frames / (double)n_addr, st.n_modules_dwarf ? "yes" : "no");
    ht__sym_close(sym);
}

static int bench_offline(int argc, char **argv)
{
    if (argc < 8) {
        fprintf(stderr, "usage: bench_symbolize --offline PATH BASE SIZE BUILD-ID LO HI [STEP]\n");
        return 2;
    }
    ht_reader_module m;
    memset(&m, 0, sizeof m);
    m.path = argv[2];
    m.base = strtoull(argv[3], NULL, 16);
    m.size = strtoull(argv[4], NULL, 16);
    for (const char *h = argv[5]; h[0] != '\0' && h[1] != '\0' && m.build_id_size < 64; h += 2) {
        unsigned byte;
        if (sscanf(h, "%2x", &byte) != 1)
            return 2;
        m.build_id[m.build_id_size++] = (uint8_t)byte;
    }
    uint64_t step = argc > 8 ? strtoull(argv[8], NULL, 0) : 37;
    bench_range(argv[2], &m, 1, strtoull(argv[6], NULL, 16), strtoull(argv[7], NULL, 16),
                step != 0 ? step : 37);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--offline") == 0)
        return bench_offline(argc, argv);
    uint64_t step = argc > 1 ? strtoull(argv[1], NULL, 0) : 37;
    if (step == 0)
        step = 37;
    if (argc > 2) {
        for (int i = 2; i < argc; i++)
            bench_one(argv[i], step);
    } else {
        bench_one("libc.so.6", step);
        bench_one("libpython3.11.so.1.0", step);
    }
    for (size_t i = 0; i < g_n_mods; i++)
        free((void *)g_mods[i].path);
    free(g_mods);
    return 0;
}
