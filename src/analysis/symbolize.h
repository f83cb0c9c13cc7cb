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

/* A symbolizer over the trace's modules (copied: the array need not outlive the call).
 * NULL on out-of-memory. Without libdw it still maps addresses to module+offset. */
ht_symbolizer *ht__sym_open(const ht_reader_module *modules, size_t n_modules);
/* Resolves one return address into up to cap frames, innermost (deepest inline) first; returns
 * how many it wrote (>= 1 when cap >= 1: an unresolved address is one frame with function NULL).
 * Return addresses point after the call: lookups use address - 1. Results are cached. */
size_t ht__sym_resolve(ht_symbolizer *sym, uint64_t address, ht_sym_frame *out, size_t cap);
/* Writes "function (file:line)" / "module+0xoff" / "0xaddr" for frame into buf (always
 * NUL-terminated); returns the length it wanted. */
size_t ht__sym_format(const ht_sym_frame *frame, char *buf, size_t cap);
void ht__sym_close(ht_symbolizer *sym);

#endif
