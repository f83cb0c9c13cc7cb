/* symbolize.c — return addresses to function, file:line and inline frames over a trace's
 * module map. Owns a sorted copy of the module table, the per-address cache and a backend:
 * libdw (one Dwfl session; each module reported the first time an address falls in it) or,
 * built without libdw, module+offset only. Strings handed out live until close.
 * Never prints, never exits; one thread per symbolizer. */
#include "analysis/symbolize.h"

#include "common/os.h" /* HT_PAGE_SIZE: what the recorder rounds a module's base down to */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef HT_HAVE_LIBDW
#include <dwarf.h>
#include <elfutils/libdw.h>
#include <elfutils/libdwelf.h>
#include <elfutils/libdwfl.h>
#include <fcntl.h>
#include <gelf.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

#define DEFAULT_DEBUG_DIRS "/usr/lib/debug"
#define CACHE_MIN_SLOTS    1024u

/* -- types ---------------------------------------------------------------------------------- */

typedef enum mod_state {
    MOD_UNTRIED = 0, /* no address has fallen in it yet */
    MOD_OPEN = 1,    /* handle is the backend's module */
    MOD_FAILED = 2,  /* no matching file: module+offset only */
} mod_state;

typedef struct sym_module {
    uint64_t base;          /* recorded: page-aligned start of the lowest PT_LOAD */
    uint64_t end;           /* base + size */
    char *path;             /* owned copy of the recorded path */
    const char *name;       /* basename, inside path */
    uint8_t build_id[64];   /* as recorded */
    uint32_t build_id_size; /* 0: the trace has none, any file at path is taken */
    size_t order;           /* index in the trace's table: the later load wins an overlap */
    size_t canon;           /* index of the first identical entry (itself if none) */
    mod_state state;        /* only meaningful on canonical entries */
    void *handle;           /* the backend's module when state == MOD_OPEN */
} sym_module;

typedef struct cache_slot {
    uint64_t address; /* key */
    uint32_t first;   /* index into ht_symbolizer.frames */
    uint32_t n;       /* frames; 0 = empty slot */
} cache_slot;

struct ht_symbolizer {
    sym_module *modules;  /* [0, n_modules), sorted by (base, order) */
    size_t n_modules;     /* entries kept (those covering no address are dropped) */
    uint64_t *max_end;    /* max_end[i] = max(modules[0..i].end): bounds the overlap scan */
    cache_slot *slots;    /* open addressing, linear probing; n_slots a power of two */
    size_t n_slots;       /* 0 until the first store */
    size_t n_used;        /* <= n_slots / 2 */
    ht_sym_frame *frames; /* every cached frame, [0, n_frames) */
    size_t n_frames;      /* <= cap_frames <= UINT32_MAX (cache_slot.first) */
    size_t cap_frames;    /* allocated */
    char *debug_dirs;     /* absolute directories, colon-separated */
    char *debug_path;     /* libdwfl's debuginfo_path form: ":.debug:" debug_dirs */
    void *backend;        /* the backend's session state */
    ht_sym_stats stats;   /* counters, handed out by ht__sym_get_stats */
};

/* A strategy: the libdw one or the module+offset one, chosen at build time. */
typedef struct sym_backend {
    bool have_libdw;                    /* for ht_sym_stats */
    void *(*begin)(ht_symbolizer *sym); /* session state, NULL on out-of-memory */
    void (*end)(void *state);
    /* Finds and opens m's file; sets m->handle and returns true, or false: no usable file. */
    bool (*module_open)(ht_symbolizer *sym, sym_module *m);
    /* Fills out[0, cap) from proto (address, module, offset already set) for an address in
     * the open module m; returns the count, >= 1. */
    size_t (*frames)(ht_symbolizer *sym, sym_module *m, const ht_sym_frame *proto,
                     ht_sym_frame *out, size_t cap);
} sym_backend;

/* Fibonacci hashing of a key into [0, n_slots), n_slots a power of two <= 2^32. */
static size_t cache_hash(uint64_t address, size_t n_slots)
{
    return (size_t)((address * 0x9E3779B97F4A7C15u) >> 32) & (n_slots - 1);
}

/* -- the libdw backend ---------------------------------------------------------------------- */

#ifdef HT_HAVE_LIBDW

/* Address ranges [lo, hi) sorted by lo, searched by binary search plus a short backward scan
 * bounded by max_hi (they may nest or overlap: a function's cold part, aliases). */
typedef struct dw_range {
    uint64_t lo, hi; /* lo < hi */
    uint32_t rank;   /* rank / 4: a class tried before width; rank % 4 breaks width ties */
    uint32_t item;   /* index into the owner's payload */
} dw_range;

typedef struct dw_ranges {
    dw_range *r;      /* [0, n), sorted by (lo, rank, item) once sealed */
    uint64_t *max_hi; /* max_hi[i] = max(r[0..i].hi), once sealed */
    size_t n;         /* ranges in r */
    size_t cap;       /* allocated */
} dw_ranges;

/* An open module: its place in the session and two indexes built on first need, its ELF
 * function symbols (dwfl_module_addrinfo scans the whole table on every call) and, for DWARF
 * without .debug_aranges, its CUs' address ranges. */
typedef struct dw_module {
    Dwfl_Module *dm;        /* in the session */
    uint64_t end;           /* the module's recorded end: bounds a sizeless last symbol */
    dw_ranges syms;         /* absolute addresses; item indexes names */
    const char **sym_names; /* in the ELF's string table */
    bool syms_built;        /* tried (syms may stay empty) */
    dw_ranges cus;          /* CU ranges (no bias), when .debug_aranges lacks them; item: */
    Dwarf_Die *cu_dies;     /* their CU DIEs */
    bool cus_built;         /* tried */
    struct dw_module *next; /* every open module, for dw_end */
} dw_module;

/* The concrete functions of one CU (DW_TAG_subprogram with code), built on the first lookup
 * that falls in the CU: dwarf_getscopes would walk the CU's whole DIE tree on every lookup. */
typedef struct dw_cu {
    const void *key; /* the CU DIE's address in the section data; NULL = empty slot */
    dw_ranges funcs; /* CU addresses (no bias); item indexes dies */
    Dwarf_Die *dies; /* the DW_TAG_subprogram DIEs */
} dw_cu;

typedef struct dw_state {
    Dwfl_Callbacks callbacks; /* libdwfl keeps a pointer to it: lives as long as dwfl */
    Dwfl *dwfl;               /* the session: every reported module */
    dw_module *modules;       /* list of the open ones */
    dw_cu *cus;               /* open addressing by key; n_cu_slots a power of two (or 0) */
    size_t n_cu_slots;        /* allocated slots */
    size_t n_cus;             /* <= n_cu_slots / 2 */
} dw_state;

static bool ranges_add(dw_ranges *rs, uint64_t lo, uint64_t hi, uint32_t rank, uint32_t item)
{
    if (rs->n == rs->cap) {
        size_t cap = rs->cap != 0 ? 2 * rs->cap : 16;
        dw_range *r = realloc(rs->r, cap * sizeof *r);
        if (r == NULL)
            return false;
        rs->r = r;
        rs->cap = cap;
    }
    rs->r[rs->n++] = (dw_range){lo, hi, rank, item};
    return true;
}

static int range_cmp(const void *a, const void *b)
{
    const dw_range *x = a, *y = b;
    if (x->lo != y->lo)
        return x->lo < y->lo ? -1 : 1;
    if (x->rank != y->rank)
        return x->rank < y->rank ? -1 : 1;
    return x->item < y->item ? -1 : x->item > y->item;
}

static bool ranges_seal(dw_ranges *rs)
{
    if (rs->n == 0)
        return true;
    rs->max_hi = malloc(rs->n * sizeof *rs->max_hi);
    if (rs->max_hi == NULL)
        return false;
    qsort(rs->r, rs->n, sizeof *rs->r, range_cmp);
    for (size_t i = 0; i < rs->n; i++)
        rs->max_hi[i] = i > 0 && rs->max_hi[i - 1] > rs->r[i].hi ? rs->max_hi[i - 1] : rs->r[i].hi;
    return true;
}

/* Whether r beats best: a lower class (rank / 4), else narrower, else lower rank, else earlier. */
static bool range_better(const dw_range *r, const dw_range *best)
{
    if (r->rank / 4 != best->rank / 4)
        return r->rank < best->rank;
    if (r->hi - r->lo != best->hi - best->lo)
        return r->hi - r->lo < best->hi - best->lo;
    return range_cmp(r, best) < 0;
}

/* The best range containing pc (range_better), or NULL. */
static const dw_range *ranges_find(const dw_ranges *rs, uint64_t pc)
{
    size_t lo = 0, hi = rs->n; /* first index whose lo is above pc */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (rs->r[mid].lo <= pc)
            lo = mid + 1;
        else
            hi = mid;
    }
    const dw_range *best = NULL;
    for (size_t i = lo; i-- > 0 && rs->max_hi[i] > pc;) {
        const dw_range *r = &rs->r[i];
        if (pc >= r->hi)
            continue;
        if (best == NULL || range_better(r, best))
            best = r;
    }
    return best;
}

static void ranges_free(dw_ranges *rs)
{
    free(rs->r);
    free(rs->max_hi);
}

static void *dw_begin(ht_symbolizer *sym)
{
    dw_state *st = calloc(1, sizeof *st);
    if (st == NULL)
        return NULL;
    /* Modules found by build-id alone (dwfl_report_module) get their file from
     * .build-id/xx/yyyy under the debug dirs, then from debuginfod (DEBUGINFOD_URLS). The
     * debug info of every module: DWARF in the file itself, else by build-id, by
     * .gnu_debuglink name, then debuginfod. */
    st->callbacks.find_elf = dwfl_build_id_find_elf;
    st->callbacks.find_debuginfo = dwfl_standard_find_debuginfo;
    st->callbacks.section_address = dwfl_offline_section_address;
    st->callbacks.debuginfo_path = &sym->debug_path; /* read at each lookup: settable later */
    elf_version(EV_CURRENT);
    st->dwfl = dwfl_begin(&st->callbacks);
    if (st->dwfl == NULL) {
        free(st);
        return NULL;
    }
    return st;
}

static void dw_end(void *state)
{
    dw_state *st = state;
    if (st == NULL)
        return;
    for (dw_module *d = st->modules, *next; d != NULL; d = next) {
        next = d->next;
        ranges_free(&d->syms);
        free(d->sym_names);
        ranges_free(&d->cus);
        free(d->cu_dies);
        free(d);
    }
    for (size_t i = 0; i < st->n_cu_slots; i++) {
        ranges_free(&st->cus[i].funcs);
        free(st->cus[i].dies);
    }
    free(st->cus);
    dwfl_end(st->dwfl);
    free(st);
}

/* Whether the ELF open on fd is m's file (its build-id is the recorded one, or the trace has
 * none and its PT_LOAD span is the recorded size); if so sets *bias = load address - link address
 * from its program headers. The recorded base is the page-aligned start of the lowest PT_LOAD, so
 * the bias is base minus that PT_LOAD's page-aligned p_vaddr. Works for a debug file made by
 * objcopy
 * --only-keep-debug too: it keeps the program headers. */
static bool dw_file_matches(int fd, const sym_module *m, GElf_Addr *bias)
{
    bool ok = false;
    Elf *elf = elf_begin(fd, ELF_C_READ_MMAP, NULL);
    if (elf == NULL)
        return false;
    GElf_Ehdr ehdr;
    size_t phnum;
    if (elf_kind(elf) != ELF_K_ELF || gelf_getehdr(elf, &ehdr) == NULL ||
        elf_getphdrnum(elf, &phnum) != 0)
        goto out_elf;
    if (m->build_id_size != 0) {
        const void *id = NULL;
        ssize_t id_size = dwelf_elf_gnu_build_id(elf, &id);
        if (id_size != (ssize_t)m->build_id_size || memcmp(id, m->build_id, m->build_id_size))
            goto out_elf;
    }
    GElf_Addr lo = UINT64_MAX, hi = 0;
    for (size_t i = 0; i < phnum; i++) {
        GElf_Phdr ph;
        if (gelf_getphdr(elf, (int)i, &ph) == NULL || ph.p_type != PT_LOAD || ph.p_memsz == 0)
            continue;
        if (ph.p_vaddr < lo)
            lo = ph.p_vaddr;
        if (ph.p_vaddr + ph.p_memsz > hi)
            hi = ph.p_vaddr + ph.p_memsz;
    }
    if (lo == UINT64_MAX)
        goto out_elf;
    lo &= ~(GElf_Addr)(HT_PAGE_SIZE - 1);
    hi = (hi + HT_PAGE_SIZE - 1) & ~(GElf_Addr)(HT_PAGE_SIZE - 1);
    if (m->build_id_size == 0 && hi - lo != m->end - m->base)
        goto out_elf; /* no build-id to go by: at least the span must be the recorded one */
    if (ehdr.e_type == ET_EXEC) {
        ok = lo == m->base; /* not relocatable: anywhere else it is not this file */
        *bias = 0;
    } else {
        ok = ehdr.e_type == ET_DYN;
        *bias = m->base - lo;
    }
out_elf:
    elf_end(elf);
    return ok;
}

/* libdwfl merges modules reported with the same name and range; ours must stay apart. */
static char *dw_module_name(const sym_module *m, size_t index)
{
    size_t size = strlen(m->path) + 24;
    char *name = malloc(size);
    if (name != NULL)
        snprintf(name, size, "%s#%zu", m->path, index);
    return name;
}

/* Reports file_name (open on fd, which this consumes) as m at bias. */
static Dwfl_Module *dw_report_file(dw_state *st, const sym_module *m, size_t index,
                                   const char *file_name, int fd, GElf_Addr bias)
{
    char *name = dw_module_name(m, index);
    if (name == NULL) {
        close(fd);
        return NULL;
    }
    dwfl_report_begin_add(st->dwfl);
    Dwfl_Module *dm = dwfl_report_elf(st->dwfl, name, file_name, fd, bias, true);
    dwfl_report_end(st->dwfl, NULL, NULL);
    if (dm == NULL)
        close(fd); /* consumed only on success */
    free(name);
    return dm;
}

/* Opens path and reports it when it is m's file. The path comes from the trace: only a
 * regular file is read (O_NONBLOCK: opening a FIFO must not wait for a writer). */
static Dwfl_Module *dw_try_file(dw_state *st, const sym_module *m, size_t index, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return NULL;
    struct stat sb;
    GElf_Addr bias = 0;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || !dw_file_matches(fd, m, &bias)) {
        close(fd);
        return NULL;
    }
    return dw_report_file(st, m, index, path, fd, bias);
}

/* DIR/.build-id/xx/yyyy.debug for each debug dir: a separate debug file holds the symbol
 * table, the DWARF and the program headers, so it stands in for a main file that is gone. */
static Dwfl_Module *dw_try_build_id_dirs(ht_symbolizer *sym, dw_state *st, const sym_module *m,
                                         size_t index)
{
    static const char hex[] = "0123456789abcdef";
    char id[2 * sizeof m->build_id + 2]; /* "xx/yyyy...", NUL */
    size_t k = 0;
    for (uint32_t i = 0; i < m->build_id_size; i++) {
        id[k++] = hex[m->build_id[i] >> 4];
        id[k++] = hex[m->build_id[i] & 15u];
        if (i == 0)
            id[k++] = '/';
    }
    id[k] = '\0';
    const char *dirs = sym->debug_dirs;
    while (*dirs != '\0') {
        size_t len = strcspn(dirs, ":");
        if (len != 0 && dirs[0] == '/') {
            size_t size = len + sizeof "/.build-id/" + k + sizeof ".debug";
            char *path = malloc(size);
            if (path == NULL)
                return NULL;
            snprintf(path, size, "%.*s/.build-id/%s.debug", (int)len, dirs, id);
            Dwfl_Module *dm = dw_try_file(st, m, index, path);
            free(path);
            if (dm != NULL)
                return dm;
        }
        dirs += len;
        if (*dirs == ':')
            dirs++;
    }
    return NULL;
}

/* Reports m by its address range and build-id only, so that libdwfl's find_elf looks the
 * file up by build-id (.build-id/xx/yyyy under the debug dirs, then debuginfod). */
static Dwfl_Module *dw_try_by_build_id(dw_state *st, const sym_module *m, size_t index)
{
    if (m->build_id_size == 0)
        return NULL;
    char *name = dw_module_name(m, index);
    if (name == NULL)
        return NULL;
    dwfl_report_begin_add(st->dwfl);
    Dwfl_Module *dm = dwfl_report_module(st->dwfl, name, m->base, m->end);
    if (dm != NULL && dwfl_module_report_build_id(dm, m->build_id, m->build_id_size, 0) != 0)
        dm = NULL;
    dwfl_report_end(st->dwfl, NULL, NULL);
    free(name);
    GElf_Addr bias;
    if (dm == NULL || dwfl_module_getelf(dm, &bias) == NULL)
        return NULL; /* the module stays reported, unused */
    return dm;
}

static bool dw_module_open(ht_symbolizer *sym, sym_module *m)
{
    dw_state *st = sym->backend;
    size_t index = (size_t)(m - sym->modules);
    Dwfl_Module *dm = dw_try_file(st, m, index, m->path);
    if (dm == NULL && m->build_id_size != 0)
        dm = dw_try_build_id_dirs(sym, st, m, index);
    if (dm == NULL)
        dm = dw_try_by_build_id(st, m, index);
    dw_module *d = dm != NULL ? calloc(1, sizeof *d) : NULL;
    if (d == NULL) {
        sym->stats.n_modules_none++;
        return false;
    }
    d->dm = dm;
    d->end = m->end;
    d->next = st->modules;
    st->modules = d;
    Dwarf_Addr bias;
    if (dwfl_module_getdwarf(dm, &bias) != NULL)
        sym->stats.n_modules_dwarf++;
    else
        sym->stats.n_modules_symtab++;
    m->handle = d;
    return true;
}

/* The source file that DW_AT_call_file of an inlined subroutine names in cu's file table. */
static const char *dw_call_file(Dwarf_Die *cu, Dwarf_Die *die)
{
    Dwarf_Attribute attr;
    Dwarf_Word index;
    Dwarf_Files *files;
    size_t n_files;
    if (dwarf_formudata(dwarf_attr(die, DW_AT_call_file, &attr), &index) != 0 ||
        dwarf_getsrcfiles(cu, &files, &n_files) != 0 || index >= n_files)
        return NULL;
    return dwarf_filesrc(files, (size_t)index, NULL, NULL);
}

static unsigned dw_call_line(Dwarf_Die *die)
{
    Dwarf_Attribute attr;
    Dwarf_Word line;
    if (dwarf_formudata(dwarf_attr(die, DW_AT_call_line, &attr), &line) != 0 || line > UINT32_MAX)
        return 0;
    return (unsigned)line;
}

/* -- names: ELF symbols and the CU function index -- */

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* A symbol without a size (hand-written assembly: __restore_rt) covers up to the next function
 * symbol's start, or the module's end; it loses to any sized symbol containing the address. */
static void dw_sizeless_close(dw_ranges *rs, uint64_t *starts, size_t n_starts, uint64_t end)
{
    qsort(starts, n_starts, sizeof *starts, u64_cmp);
    size_t k = 0;
    for (size_t i = 0; i < rs->n; i++) {
        dw_range r = rs->r[i];
        if (r.rank >= 4) {
            size_t lo = 0, hi = n_starts; /* first start above r.lo */
            while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (starts[mid] <= r.lo)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            r.hi = lo < n_starts && starts[lo] < end ? starts[lo] : end;
            if (r.hi <= r.lo)
                continue;
        }
        rs->r[k++] = r;
    }
    rs->n = k;
}

static void dw_syms_build(dw_module *d)
{
    d->syms_built = true;
    int n = dwfl_module_getsymtab(d->dm);
    if (n <= 1 || (d->sym_names = calloc((size_t)n, sizeof *d->sym_names)) == NULL)
        return;
    uint64_t *starts = malloc((size_t)n * sizeof *starts);
    size_t n_starts = 0;
    if (starts == NULL)
        return;
    for (int i = 1; i < n; i++) {
        GElf_Sym es;
        GElf_Addr addr;
        GElf_Word shndx;
        Elf *elf;
        Dwarf_Addr bias;
        const char *name = dwfl_module_getsym_info(d->dm, i, &es, &addr, &shndx, &elf, &bias);
        int type = GELF_ST_TYPE(es.st_info), bind = GELF_ST_BIND(es.st_info);
        if (name == NULL || name[0] == '\0' || shndx == SHN_UNDEF ||
            (type != STT_FUNC && type != STT_GNU_IFUNC) || addr + es.st_size < addr)
            continue;
        uint32_t rank = (bind == STB_GLOBAL ? 0u
                         : bind == STB_WEAK ? 1u
                                            : 2u) +
                        (es.st_size ? 0u : 4u);
        uint64_t hi = es.st_size != 0 ? addr + es.st_size : UINT64_MAX; /* sizeless: see below */
        d->sym_names[i] = name;
        starts[n_starts++] = addr;
        if (!ranges_add(&d->syms, addr, hi, rank, (uint32_t)i))
            break; /* out of memory: what is in still works */
    }
    dw_sizeless_close(&d->syms, starts, n_starts, d->end);
    free(starts);
    if (!ranges_seal(&d->syms))
        d->syms.n = 0;
}

/* The ELF function symbol containing pc (absolute), or NULL. */
static const char *dw_sym_name(dw_module *d, uint64_t pc)
{
    if (!d->syms_built)
        dw_syms_build(d);
    const dw_range *r = ranges_find(&d->syms, pc);
    return r != NULL ? d->sym_names[r->item] : NULL;
}

typedef struct dw_cu_builder {
    dw_cu *cu;   /* being filled */
    size_t cap;  /* of cu->dies */
    bool failed; /* out of memory */
} dw_cu_builder;

static int dw_cu_add(Dwarf_Die *die, void *arg)
{
    dw_cu_builder *b = arg;
    dw_cu *cu = b->cu;
    Dwarf_Addr base, lo, hi;
    ptrdiff_t off = 0;
    while ((off = dwarf_ranges(die, off, &base, &lo, &hi)) > 0) {
        if (lo >= hi)
            continue;
        if (cu->funcs.n == b->cap) { /* one die per range: a cold part gets its own copy */
            size_t cap = b->cap != 0 ? 2 * b->cap : 16;
            Dwarf_Die *dies = cap <= UINT32_MAX ? realloc(cu->dies, cap * sizeof *dies) : NULL;
            if (dies == NULL) {
                b->failed = true;
                return DWARF_CB_ABORT;
            }
            cu->dies = dies;
            b->cap = cap;
        }
        cu->dies[cu->funcs.n] = *die;
        if (!ranges_add(&cu->funcs, lo, hi, 0, (uint32_t)cu->funcs.n)) {
            b->failed = true;
            return DWARF_CB_ABORT;
        }
    }
    return DWARF_CB_OK;
}

static bool dw_cu_slots_grow(dw_state *st)
{
    size_t n_slots = st->n_cu_slots != 0 ? 2 * st->n_cu_slots : 64;
    dw_cu *cus = calloc(n_slots, sizeof *cus);
    if (cus == NULL)
        return false;
    for (size_t i = 0; i < st->n_cu_slots; i++) {
        if (st->cus[i].key == NULL)
            continue;
        size_t j = cache_hash((uint64_t)(uintptr_t)st->cus[i].key, n_slots);
        while (cus[j].key != NULL)
            j = (j + 1) & (n_slots - 1);
        cus[j] = st->cus[i];
    }
    free(st->cus);
    st->cus = cus;
    st->n_cu_slots = n_slots;
    return true;
}

/* The function index of the CU cudie, built on first use; NULL on out-of-memory. */
static const dw_cu *dw_cu_get(dw_state *st, Dwarf_Die *cudie)
{
    const void *key = cudie->addr;
    if (2 * (st->n_cus + 1) > st->n_cu_slots && !dw_cu_slots_grow(st))
        return NULL;
    size_t mask = st->n_cu_slots - 1, i = cache_hash((uint64_t)(uintptr_t)key, st->n_cu_slots);
    for (; st->cus[i].key != NULL; i = (i + 1) & mask) {
        if (st->cus[i].key == key)
            return &st->cus[i];
    }
    dw_cu cu = {key, {NULL, NULL, 0, 0}, NULL};
    dw_cu_builder b = {&cu, 0, false};
    if (dwarf_getfuncs(cudie, dw_cu_add, &b, 0) < 0)
        cu.funcs.n = 0; /* unreadable: an empty index, the ELF symbols answer */
    if (b.failed || !ranges_seal(&cu.funcs)) {
        ranges_free(&cu.funcs);
        free(cu.dies);
        return NULL;
    }
    st->cus[i] = cu;
    st->n_cus++;
    return &st->cus[i];
}

/* -- inline chains -- */

static bool dw_is_block(int tag)
{
    return tag == DW_TAG_inlined_subroutine || tag == DW_TAG_lexical_block ||
           tag == DW_TAG_try_block || tag == DW_TAG_catch_block || tag == DW_TAG_with_stmt;
}

/* From the function fn down to the innermost block containing pc (CU address): chain[0] = fn,
 * each next one a child of the previous that contains pc. Returns the count. */
static size_t dw_scope_chain(const Dwarf_Die *fn, Dwarf_Addr pc, Dwarf_Die *chain, size_t cap)
{
    size_t n = 0;
    chain[n++] = *fn;
    while (n < cap) {
        Dwarf_Die child;
        if (dwarf_child(&chain[n - 1], &child) != 0)
            break;
        bool found = false;
        do {
            found = dw_is_block(dwarf_tag(&child)) && dwarf_haspc(&child, pc) == 1;
        } while (!found && dwarf_siblingof(&child, &child) == 0);
        if (!found)
            break;
        chain[n++] = child;
    }
    return n;
}

/* The frames at pc (CU address) in the function fn of cu: one per DW_TAG_inlined_subroutine
 * containing pc, innermost first, then fn itself. The innermost frame is at (file, line) from
 * the line table; each outer one is at the call site that the inlined subroutine inside it
 * records (DW_AT_call_file, DW_AT_call_line). Returns the count (>= 1). */
static size_t dw_inline_frames(Dwarf_Die *cu, const Dwarf_Die *fn, Dwarf_Addr pc,
                               const ht_sym_frame *proto, const char *file, unsigned line,
                               ht_sym_frame *out, size_t cap)
{
    Dwarf_Die chain[2 * HT_SYM_MAX_FRAMES];
    size_t n_chain = dw_scope_chain(fn, pc, chain, sizeof chain / sizeof chain[0]);
    size_t n = 0;
    for (size_t i = n_chain; i-- > 0 && n < cap;) {
        bool is_fn = i == 0;
        if (!is_fn && dwarf_tag(&chain[i]) != DW_TAG_inlined_subroutine)
            continue;
        ht_sym_frame *f = &out[n++];
        *f = *proto;
        f->function = dwarf_diename(&chain[i]);
        f->file = file;
        f->line = line;
        f->inlined = !is_fn;
        file = dw_call_file(cu, &chain[i]);
        line = dw_call_line(&chain[i]);
    }
    return n;
}

/* The CUs of d by their own address ranges, for DWARF without .debug_aranges (clang does not
 * emit it by default, and libdw 0.188's lookup needs it). Built on the first miss. */
static void dw_cus_build(dw_module *d)
{
    d->cus_built = true;
    Dwarf_Addr bias;
    Dwarf *dw = dwfl_module_getdwarf(d->dm, &bias);
    Dwarf_CU *unit = NULL;
    Dwarf_Half version;
    uint8_t type;
    Dwarf_Die cudie;
    size_t cap = 0;
    while (dw != NULL && dwarf_get_units(dw, unit, &unit, &version, &type, &cudie, NULL) == 0) {
        if (type != DW_UT_compile)
            continue;
        Dwarf_Addr base, lo, hi;
        ptrdiff_t off = 0;
        while ((off = dwarf_ranges(&cudie, off, &base, &lo, &hi)) > 0) {
            if (lo >= hi)
                continue;
            if (d->cus.n == cap) {
                size_t new_cap = cap != 0 ? 2 * cap : 16;
                Dwarf_Die *dies =
                    new_cap <= UINT32_MAX ? realloc(d->cu_dies, new_cap * sizeof *dies) : NULL;
                if (dies == NULL)
                    goto out_seal;
                d->cu_dies = dies;
                cap = new_cap;
            }
            d->cu_dies[d->cus.n] = cudie;
            if (!ranges_add(&d->cus, lo, hi, 0, (uint32_t)d->cus.n))
                goto out_seal;
        }
    }
out_seal:
    if (!ranges_seal(&d->cus))
        d->cus.n = 0;
}

/* The CU DIE containing pc (absolute) and the module's bias, or NULL. */
static Dwarf_Die *dw_cudie(dw_module *d, Dwarf_Addr pc, Dwarf_Addr *bias)
{
    Dwarf_Die *cudie = dwfl_module_addrdie(d->dm, pc, bias);
    if (cudie != NULL)
        return cudie;
    if (!d->cus_built)
        dw_cus_build(d);
    if (d->cus.n == 0 || dwfl_module_getdwarf(d->dm, bias) == NULL)
        return NULL;
    const dw_range *r = ranges_find(&d->cus, pc - *bias);
    return r != NULL ? &d->cu_dies[r->item] : NULL;
}

static size_t dw_frames(ht_symbolizer *sym, sym_module *m, const ht_sym_frame *proto,
                        ht_sym_frame *out, size_t cap)
{
    dw_state *st = sym->backend;
    dw_module *d = m->handle;
    Dwarf_Addr pc = proto->address != 0 ? proto->address - 1 : 0;
    const char *file = NULL;
    unsigned line = 0;
    size_t n = 0;
    Dwarf_Addr bias = 0;
    Dwarf_Die *cudie = dw_cudie(d, pc, &bias);
    Dwarf_Line *row = cudie != NULL ? dwarf_getsrc_die(cudie, pc - bias) : NULL;
    int lineno = 0;
    if (row != NULL && (file = dwarf_linesrc(row, NULL, NULL)) != NULL &&
        dwarf_lineno(row, &lineno) == 0 && lineno > 0)
        line = (unsigned)lineno;
    const dw_cu *cu = cudie != NULL ? dw_cu_get(st, cudie) : NULL;
    const dw_range *fn = cu != NULL ? ranges_find(&cu->funcs, pc - bias) : NULL;
    if (fn != NULL)
        n = dw_inline_frames(cudie, &cu->dies[fn->item], pc - bias, proto, file, line, out, cap);
    if (n == 0) {
        out[0] = *proto;
        out[0].file = file;
        out[0].line = line;
        n = 1;
    }
    ht_sym_frame *outer = &out[n - 1];
    if (outer->function == NULL && !outer->inlined)
        outer->function = dw_sym_name(d, pc);
    return n;
}

static const sym_backend backend_used = {true, dw_begin, dw_end, dw_module_open, dw_frames};

#else /* !HT_HAVE_LIBDW */

/* -- the module+offset backend (built without libdw) ---------------------------------------- */

static void *none_begin(ht_symbolizer *sym)
{
    return sym; /* no state; any non-NULL value */
}

static void none_end(void *state)
{
    (void)state;
}

static bool none_module_open(ht_symbolizer *sym, sym_module *m)
{
    (void)m;
    sym->stats.n_modules_none++;
    return false;
}

static size_t none_frames(ht_symbolizer *sym, sym_module *m, const ht_sym_frame *proto,
                          ht_sym_frame *out, size_t cap)
{
    (void)sym, (void)m, (void)cap;
    out[0] = *proto;
    return 1;
}

static const sym_backend backend_used = {false, none_begin, none_end, none_module_open,
                                         none_frames};

#endif

/* -- the module table ----------------------------------------------------------------------- */

static int module_cmp(const void *a, const void *b)
{
    const sym_module *x = a, *y = b;
    if (x->base != y->base)
        return x->base < y->base ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

static bool module_same(const sym_module *a, const sym_module *b)
{
    return a->base == b->base && a->end == b->end && a->build_id_size == b->build_id_size &&
           memcmp(a->build_id, b->build_id, a->build_id_size) == 0 && strcmp(a->path, b->path) == 0;
}

static bool modules_copy(ht_symbolizer *sym, const ht_reader_module *in, size_t n)
{
    if (n == 0)
        return true;
    sym->modules = calloc(n, sizeof *sym->modules);
    sym->max_end = calloc(n, sizeof *sym->max_end);
    if (sym->modules == NULL || sym->max_end == NULL)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (in[i].size == 0 || in[i].base + in[i].size < in[i].base)
            continue; /* covers nothing (or wraps): no address can fall in it */
        sym_module *m = &sym->modules[sym->n_modules];
        m->path = strdup(in[i].path != NULL ? in[i].path : "");
        if (m->path == NULL)
            return false;
        sym->n_modules++; /* close frees the paths of [0, n_modules) */
        const char *slash = strrchr(m->path, '/');
        m->name = slash != NULL ? slash + 1 : m->path;
        m->base = in[i].base;
        m->end = in[i].base + in[i].size;
        m->build_id_size = in[i].build_id_size <= sizeof m->build_id ? in[i].build_id_size : 0;
        memcpy(m->build_id, in[i].build_id, m->build_id_size);
        m->order = i;
    }
    size_t k = sym->n_modules;
    qsort(sym->modules, k, sizeof *sym->modules, module_cmp);
    for (size_t i = 0; i < k; i++) {
        sym_module *m = &sym->modules[i];
        m->canon = i;
        for (size_t j = i; j-- > 0 && sym->modules[j].base == m->base;) {
            if (module_same(&sym->modules[j], m))
                m->canon = sym->modules[j].canon;
        }
        if (m->canon == i)
            sym->stats.n_modules++;
        sym->max_end[i] = i > 0 && sym->max_end[i - 1] > m->end ? sym->max_end[i - 1] : m->end;
    }
    return true;
}

/* The canonical entry of the last-loaded module containing address, or NULL. */
static sym_module *module_find(ht_symbolizer *sym, uint64_t address)
{
    size_t lo = 0, hi = sym->n_modules; /* first index whose base is above address */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sym->modules[mid].base <= address)
            lo = mid + 1;
        else
            hi = mid;
    }
    const sym_module *best = NULL;
    for (size_t i = lo; i-- > 0 && sym->max_end[i] > address;) {
        const sym_module *m = &sym->modules[i];
        if (address < m->end && (best == NULL || m->order > best->order))
            best = m;
    }
    return best != NULL ? &sym->modules[best->canon] : NULL;
}

/* -- the cache ------------------------------------------------------------------------------ */

static cache_slot *cache_find(ht_symbolizer *sym, uint64_t address)
{
    if (sym->n_slots == 0)
        return NULL;
    size_t mask = sym->n_slots - 1;
    for (size_t i = cache_hash(address, sym->n_slots);; i = (i + 1) & mask) {
        cache_slot *s = &sym->slots[i];
        if (s->n == 0 || s->address == address)
            return s; /* never full: n_used <= n_slots / 2 */
    }
}

static bool cache_grow(ht_symbolizer *sym)
{
    size_t n_slots = sym->n_slots != 0 ? 2 * sym->n_slots : CACHE_MIN_SLOTS;
    cache_slot *slots = calloc(n_slots, sizeof *slots);
    if (slots == NULL)
        return false;
    cache_slot *old = sym->slots;
    size_t n_old = sym->n_slots;
    sym->slots = slots;
    sym->n_slots = n_slots;
    for (size_t i = 0; i < n_old; i++) {
        if (old[i].n != 0)
            *cache_find(sym, old[i].address) = old[i];
    }
    free(old);
    return true;
}

/* Keeps frames[0, n) for address; on out-of-memory the address just stays uncached. */
static void cache_store(ht_symbolizer *sym, uint64_t address, const ht_sym_frame *frames, size_t n)
{
    if (2 * (sym->n_used + 1) > sym->n_slots && !cache_grow(sym))
        return;
    if (sym->n_frames + n > sym->cap_frames) {
        size_t cap = sym->cap_frames != 0 ? 2 * sym->cap_frames : 4 * CACHE_MIN_SLOTS;
        while (cap < sym->n_frames + n)
            cap *= 2;
        if (cap > UINT32_MAX)
            return;
        ht_sym_frame *p = realloc(sym->frames, cap * sizeof *p);
        if (p == NULL)
            return;
        sym->frames = p;
        sym->cap_frames = cap;
    }
    cache_slot *s = cache_find(sym, address);
    s->address = address;
    s->first = (uint32_t)sym->n_frames;
    s->n = (uint32_t)n;
    memcpy(sym->frames + sym->n_frames, frames, n * sizeof *frames);
    sym->n_frames += n;
    sym->n_used++;
}

/* -- the interface -------------------------------------------------------------------------- */

static bool debug_dirs_set(ht_symbolizer *sym, const char *dirs)
{
    size_t size = strlen(dirs) + sizeof ":.debug:";
    char *copy = strdup(dirs), *path = malloc(size);
    if (copy == NULL || path == NULL) {
        free(copy);
        free(path);
        return false;
    }
    snprintf(path, size, ":.debug:%s", dirs);
    free(sym->debug_dirs);
    free(sym->debug_path);
    sym->debug_dirs = copy;
    sym->debug_path = path;
    return true;
}

ht_symbolizer *ht__sym_open(const ht_reader_module *modules, size_t n_modules)
{
    ht_symbolizer *sym = calloc(1, sizeof *sym);
    if (sym == NULL)
        return NULL;
    sym->stats.have_libdw = backend_used.have_libdw;
    if (!modules_copy(sym, modules, n_modules) || !debug_dirs_set(sym, DEFAULT_DEBUG_DIRS) ||
        (sym->backend = backend_used.begin(sym)) == NULL) {
        ht__sym_close(sym);
        return NULL;
    }
    return sym;
}

bool ht__sym_set_debug_dirs(ht_symbolizer *sym, const char *dirs)
{
    return debug_dirs_set(sym, dirs != NULL ? dirs : DEFAULT_DEBUG_DIRS);
}

static size_t resolve_uncached(ht_symbolizer *sym, uint64_t address, ht_sym_frame *out, size_t cap)
{
    sym_module *m = module_find(sym, address);
    ht_sym_frame proto = {address, NULL, NULL, 0, NULL, 0, false};
    if (m == NULL) {
        sym->stats.n_outside++;
        out[0] = proto;
        return 1;
    }
    proto.module = m->name;
    proto.offset = address - m->base;
    if (m->state == MOD_UNTRIED) {
        sym->stats.n_modules_used++;
        m->state = backend_used.module_open(sym, m) ? MOD_OPEN : MOD_FAILED;
    }
    if (m->state != MOD_OPEN) {
        out[0] = proto;
        return 1;
    }
    return backend_used.frames(sym, m, &proto, out, cap);
}

size_t ht__sym_resolve(ht_symbolizer *sym, uint64_t address, ht_sym_frame *out, size_t cap)
{
    if (cap == 0)
        return 0;
    sym->stats.n_resolves++;
    const cache_slot *s = cache_find(sym, address);
    if (s != NULL && s->n != 0) {
        sym->stats.n_cache_hits++;
        size_t n = s->n < cap ? s->n : cap;
        memcpy(out, sym->frames + s->first, n * sizeof *out);
        return n;
    }
    ht_sym_frame frames[HT_SYM_MAX_FRAMES];
    size_t n = resolve_uncached(sym, address, frames, HT_SYM_MAX_FRAMES);
    sym->stats.n_addresses++;
    cache_store(sym, address, frames, n);
    if (n > cap)
        n = cap;
    memcpy(out, frames, n * sizeof *out);
    return n;
}

size_t ht__sym_format(const ht_sym_frame *f, char *buf, size_t cap)
{
    int n;
    if (f->function != NULL && f->file != NULL && f->line != 0)
        n = snprintf(buf, cap, "%s (%s:%u)", f->function, f->file, f->line);
    else if (f->function != NULL && f->module != NULL)
        n = snprintf(buf, cap, "%s (%s+0x%" PRIx64 ")", f->function, f->module, f->offset);
    else if (f->function != NULL)
        n = snprintf(buf, cap, "%s", f->function);
    else if (f->module != NULL)
        n = snprintf(buf, cap, "%s+0x%" PRIx64, f->module, f->offset);
    else
        n = snprintf(buf, cap, "0x%" PRIx64, f->address);
    if (n < 0) {
        if (cap != 0)
            buf[0] = '\0';
        return 0;
    }
    return (size_t)n;
}

void ht__sym_get_stats(const ht_symbolizer *sym, ht_sym_stats *out)
{
    *out = sym->stats;
}

void ht__sym_close(ht_symbolizer *sym)
{
    if (sym == NULL)
        return;
    if (sym->backend != NULL)
        backend_used.end(sym->backend);
    for (size_t i = 0; i < sym->n_modules; i++)
        free(sym->modules[i].path);
    free(sym->modules);
    free(sym->max_end);
    free(sym->slots);
    free(sym->frames);
    free(sym->debug_dirs);
    free(sym->debug_path);
    free(sym);
}
