/* modules.c — the module map: every loaded ELF object's path, address span and GNU build-id
 * from dl_iterate_phdr, kept in two mmap'ed tables (the baseline and the next scan) so that a
 * poll can report what dlopen/dlclose changed. Callbacks run after the loader's lock is
 * released. Writer-thread code: one caller at a time; never mallocs (so it is also safe in a
 * process whose malloc is ours), but takes the loader's lock, so never call it from malloc. */
#include "trace/stack.h"

#include "common/os.h"

#include <elf.h>
#include <errno.h>
#include <link.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#define MAX_MODULES    2048u
#define MAX_PATH       4096u /* FORMAT.md 7.1 */
#define MAX_BUILD_ID   64u   /* FORMAT.md 7.1 */
#define PATH_POOL_SIZE ((size_t)1 << 20)

typedef struct mod_entry {
    uint64_t base;                  /* page-aligned start of the lowest PT_LOAD */
    uint64_t size;                  /* page-rounded span of the PT_LOADs */
    uint32_t path_off;              /* into the table's pool */
    uint32_t path_size;             /* <= MAX_PATH */
    uint8_t build_id_size;          /* <= MAX_BUILD_ID */
    uint8_t build_id[MAX_BUILD_ID]; /* NT_GNU_BUILD_ID descriptor */
} mod_entry;

typedef struct mod_table {
    mod_entry entries[MAX_MODULES]; /* [0, n) */
    size_t n;                       /* <= MAX_MODULES */
    size_t pool_used;               /* <= PATH_POOL_SIZE */
    unsigned long long adds, subs;  /* glibc's dlpi_adds/dlpi_subs when scanned */
    bool truncated;                 /* more objects than MAX_MODULES or pool bytes */
    char pool[PATH_POOL_SIZE];      /* paths, not NUL-terminated */
} mod_table;

/* tables[cur] is the baseline (valid once have_baseline); the other is scratch. */
static mod_table *g_tables[2];
static unsigned g_cur;
static bool g_have_baseline;

static bool tables_map(void)
{
    for (int i = 0; i < 2; i++) {
        if (g_tables[i] == NULL && (g_tables[i] = ht__os.map_rw(sizeof(mod_table))) == NULL)
            return false;
    }
    return true;
}

void ht__modules_fini(void)
{
    for (int i = 0; i < 2; i++) {
        if (g_tables[i] != NULL)
            ht__os.release(g_tables[i], sizeof(mod_table));
        g_tables[i] = NULL;
    }
    g_cur = 0;
    g_have_baseline = false;
}

/* -- scanning (inside dl_iterate_phdr: the loader's lock is held; copy only) --------------- */

static void build_id_find(const struct dl_phdr_info *info, mod_entry *e)
{
    e->build_id_size = 0;
    for (ElfW(Half) i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_NOTE)
            continue;
        size_t align = ph->p_align == 8 ? 8 : 4;
        const uint8_t *p = (const uint8_t *)(info->dlpi_addr + ph->p_vaddr);
        const uint8_t *end = p + ph->p_memsz;
        while ((size_t)(end - p) >= sizeof(ElfW(Nhdr))) {
            const ElfW(Nhdr) *nh = (const ElfW(Nhdr) *)(const void *)p;
            size_t name_size = (nh->n_namesz + align - 1) & ~(align - 1);
            size_t desc_size = (nh->n_descsz + align - 1) & ~(align - 1);
            const uint8_t *name = p + sizeof *nh, *desc = name + name_size;
            if (name_size > (size_t)(end - name) || desc_size > (size_t)(end - desc))
                break;
            if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 && memcmp(name, "GNU", 4) == 0 &&
                nh->n_descsz <= MAX_BUILD_ID) {
                memcpy(e->build_id, desc, nh->n_descsz);
                e->build_id_size = (uint8_t)nh->n_descsz;
                return;
            }
            p = desc + desc_size;
        }
    }
}

typedef struct scan_state {
    mod_table *t;    /* table being filled */
    size_t index;    /* objects seen so far (the first is the executable) */
    char *exe;       /* /proc/self/exe, resolved before the scan */
    size_t exe_size; /* bytes at exe */
} scan_state;

static int scan_one(struct dl_phdr_info *info, size_t size, void *arg)
{
    scan_state *s = arg;
    mod_table *t = s->t;
    size_t index = s->index++;
    if (index == 0 && size >= offsetof(struct dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs) {
        t->adds = info->dlpi_adds;
        t->subs = info->dlpi_subs;
    }
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (ElfW(Half) i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || ph->p_memsz == 0)
            continue;
        uintptr_t start = info->dlpi_addr + ph->p_vaddr;
        uintptr_t stop = start + ph->p_memsz;
        if (start < lo)
            lo = start;
        if (stop > hi)
            hi = stop;
    }
    if (hi == 0)
        return 0; /* nothing mapped */
    if (t->n >= MAX_MODULES) {
        t->truncated = true;
        return 0;
    }
    const char *path = info->dlpi_name != NULL ? info->dlpi_name : "";
    size_t path_size = strlen(path);
    if (path_size == 0 && index == 0) {
        path = s->exe;
        path_size = s->exe_size;
    }
    if (path_size > MAX_PATH)
        path_size = MAX_PATH;
    if (PATH_POOL_SIZE - t->pool_used < path_size) {
        t->truncated = true;
        return 0;
    }
    mod_entry *e = &t->entries[t->n++];
    lo &= ~(uintptr_t)(HT_PAGE_SIZE - 1);
    hi = (hi + HT_PAGE_SIZE - 1) & ~(uintptr_t)(HT_PAGE_SIZE - 1);
    e->base = lo;
    e->size = hi - lo;
    e->path_off = (uint32_t)t->pool_used;
    e->path_size = (uint32_t)path_size;
    memcpy(t->pool + t->pool_used, path, path_size);
    t->pool_used += path_size;
    build_id_find(info, e);
    return 0;
}

static void table_scan(mod_table *t)
{
    static char exe[MAX_PATH]; /* one caller at a time: no need for a stack copy this big */
    ssize_t exe_size = readlink("/proc/self/exe", exe, sizeof exe);
    scan_state s = {t, 0, exe, exe_size > 0 ? (size_t)exe_size : 0};
    t->n = 0;
    t->pool_used = 0;
    t->adds = t->subs = 0;
    t->truncated = false;
    dl_iterate_phdr(scan_one, &s);
}

/* -- cheap change check --------------------------------------------------------------------- */

typedef struct counters {
    unsigned long long adds, subs; /* from the first object */
    bool ok;                       /* the loader reported them */
} counters;

static int counters_one(struct dl_phdr_info *info, size_t size, void *arg)
{
    counters *c = arg;
    if (size >= offsetof(struct dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs) {
        c->adds = info->dlpi_adds;
        c->subs = info->dlpi_subs;
        c->ok = true;
    }
    return 1; /* the counters are the same in every entry: stop after the first */
}

bool ht__modules_counters(unsigned long long *adds, unsigned long long *subs)
{
    counters c = {0, 0, false};
    dl_iterate_phdr(counters_one, &c);
    *adds = c.adds;
    *subs = c.subs;
    return c.ok;
}

/* -- reporting ------------------------------------------------------------------------------- */

static void entry_report(const mod_table *t, const mod_entry *e, ht_module_change change,
                         ht_module_fn fn, void *ctx)
{
    ht_module m = {t->pool + e->path_off,
                   e->path_size,
                   e->base,
                   e->size,
                   e->build_id_size != 0 ? e->build_id : NULL,
                   e->build_id_size};
    fn(change, &m, ctx);
}

static bool entry_same(const mod_table *ta, const mod_entry *a, const mod_table *tb,
                       const mod_entry *b)
{
    return a->base == b->base && a->size == b->size && a->path_size == b->path_size &&
           a->build_id_size == b->build_id_size &&
           memcmp(ta->pool + a->path_off, tb->pool + b->path_off, a->path_size) == 0 &&
           memcmp(a->build_id, b->build_id, a->build_id_size) == 0;
}

static bool table_has(const mod_table *t, const mod_table *te, const mod_entry *e)
{
    for (size_t i = 0; i < t->n; i++) {
        if (entry_same(t, &t->entries[i], te, e))
            return true;
    }
    return false;
}

int ht__modules_snapshot(ht_module_fn fn, void *ctx)
{
    if (!tables_map())
        return -ENOMEM;
    mod_table *t = g_tables[g_cur];
    table_scan(t);
    g_have_baseline = true;
    for (size_t i = 0; i < t->n; i++)
        entry_report(t, &t->entries[i], HT_MODULE_LOAD, fn, ctx);
    return (int)t->n;
}

int ht__modules_poll(ht_module_fn fn, void *ctx)
{
    if (!g_have_baseline)
        return ht__modules_snapshot(fn, ctx);
    const mod_table *old = g_tables[g_cur];
    unsigned long long adds, subs;
    if (ht__modules_counters(&adds, &subs) && adds == old->adds && subs == old->subs)
        return 0;
    mod_table *t = g_tables[g_cur ^ 1u];
    table_scan(t);
    int n_changes = 0;
    /* Unloads first: a module loaded again at the same base must follow its unload
     * (FORMAT.md 7.3 refers to "the module most recently loaded at base"). */
    for (size_t i = 0; i < old->n; i++) {
        if (!table_has(t, old, &old->entries[i])) {
            entry_report(old, &old->entries[i], HT_MODULE_UNLOAD, fn, ctx);
            n_changes++;
        }
    }
    for (size_t i = 0; i < t->n; i++) {
        if (!table_has(old, t, &t->entries[i])) {
            entry_report(t, &t->entries[i], HT_MODULE_LOAD, fn, ctx);
            n_changes++;
        }
    }
    g_cur ^= 1u;
    return n_changes;
}
