/* symbolize.h — turns the return addresses of recorded stacks into function, file:line and
 * inline frames, using the trace's module map (path, base, size, GNU build-id) and elfutils'
 * libdw. Modules are matched by build-id: the file at the recorded path when its build-id
 * agrees, else a separate debug file (/usr/lib/debug/.build-id/xx/yyyy.debug), else
 * debuginfod when DEBUGINFOD_URLS is set. What cannot be resolved comes back as
 * module+offset (or the bare address), never dropped.
 * Never prints, never exits; not thread-safe (one symbolizer per thread). */
#ifndef HT_ANALYSIS_SYMBOLIZE_H
#define HT_ANALYSIS_SYMBOLIZE_H

#include <heaptrail/reader.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ht_symbolizer ht_symbolizer; /* opaque */

/* Frames kept per address: an inline chain deeper than this keeps its innermost frames. */
#define HT_SYM_MAX_FRAMES 32u

/* One source-level frame. Strings belong to the symbolizer and stay valid until close. */
typedef struct ht_sym_frame {
    uint64_t address;     /* the recorded return address (for every inline frame too) */
    const char *function; /* demangled-free name, or NULL when unknown */
    const char *file;     /* source file, or NULL */
    unsigned line;        /* 0 when unknown */
    const char *module;   /* basename of the module's path, or NULL: not in any module */
    uint64_t offset;      /* address - module base (file offset form) when module != NULL */
    bool inlined;         /* this frame was inlined into the next one of the same address */
} ht_sym_frame;

/* What the symbolizer found so far (for a report's "symbols: ..." line and for tests). */
typedef struct ht_sym_stats {
    uint64_t n_resolves;       /* ht__sym_resolve calls with cap >= 1 */
    uint64_t n_cache_hits;     /* of them answered from the per-address cache */
    uint64_t n_addresses;      /* distinct addresses resolved = cache entries */
    uint64_t n_outside;        /* of them in no module of the table */
    uint64_t n_modules;        /* distinct modules (identical table entries merged) */
    uint64_t n_modules_used;   /* modules at least one address fell in (opened lazily) */
    uint64_t n_modules_dwarf;  /* of those: DWARF found (function, file:line, inline frames) */
    uint64_t n_modules_symtab; /* ELF found but no DWARF: ELF symbol names, no file:line */
    uint64_t n_modules_none;   /* no file with the recorded build-id: module+offset only */
    bool have_libdw;           /* built with libdw; false: everything is module+offset */
} ht_sym_stats;

/* A symbolizer over the trace's modules (copied: the array need not outlive the call).
 * NULL on out-of-memory. Without libdw it still maps addresses to module+offset.
 * Modules are opened lazily, on the first address that falls in each, so a trace with
 * hundreds of modules costs only for those its stacks touch. When table entries overlap
 * (a module unloaded and another loaded at the same addresses) an address belongs to the
 * entry loaded last; entries that are identical (path, base, size, build-id: the same
 * library dlopened again) share one opened module. */
ht_symbolizer *ht__sym_open(const ht_reader_module *modules, size_t n_modules);
/* Where separate debug files are looked up by build-id (DIR/.build-id/xx/yyyy.debug) and by
 * .gnu_debuglink name: a colon-separated list of absolute directories, replacing the default
 * "/usr/lib/debug"; NULL restores it. Debug links are also looked up beside the module's file
 * and in its .debug subdirectory. Affects modules not yet opened: call it before the first
 * resolve. Returns false on out-of-memory (the previous setting stays). */
bool ht__sym_set_debug_dirs(ht_symbolizer *sym, const char *dirs);
/* Resolves one return address into up to cap frames, innermost (deepest inline) first; returns
 * how many it wrote (>= 1 when cap >= 1: an unresolved address is one frame with function NULL).
 * Return addresses point after the call: lookups use address - 1. Results are cached. The last
 * frame is the real (not inlined) function; a chain longer than cap keeps its innermost cap
 * frames, so pass HT_SYM_MAX_FRAMES to always get the real function. Names: DWARF's DW_AT_name
 * (for C++ the unqualified name), else the ELF function symbol containing the address (for C++
 * mangled: nothing is demangled). The first address in a module opens it: with DEBUGINFOD_URLS
 * set that may wait for the network (DEBUGINFOD_TIMEOUT). */
size_t ht__sym_resolve(ht_symbolizer *sym, uint64_t address, ht_sym_frame *out, size_t cap);
/* Writes frame into buf (always NUL-terminated when cap >= 1; buf may be NULL when cap is 0)
 * and returns the length it wanted, like snprintf. The forms, from most to least known:
 *   "function (file:line)"      DWARF found the function and its line
 *   "function (module+0xoff)"   a name (DWARF or ELF symbol) but no line
 *   "module+0xoff"              in a module, nothing more known
 *   "0xaddr"                    in no module
 * Inlining is not marked here (frame->inlined says it; callers show it their way). file is as
 * DWARF names it (usually absolute: the compile directory joined; relative when the build
 * remapped it, as Debian's packages do); off and addr are lower-case hex. */
size_t ht__sym_format(const ht_sym_frame *frame, char *buf, size_t cap);
/* Counters so far (see ht_sym_stats). */
void ht__sym_get_stats(const ht_symbolizer *sym, ht_sym_stats *out);
void ht__sym_close(ht_symbolizer *sym);

#endif
