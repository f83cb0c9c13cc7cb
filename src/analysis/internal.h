/* internal.h — cross-file prototypes of src/analysis, grouped by the file that defines them.
 * The heaptrail command (src/cli) and the fuzzers use these too; nothing here is installed.
 * Nothing in src/analysis prints or exits: text goes into an ht_sbuf the caller writes. */
#ifndef HT_ANALYSIS_INTERNAL_H
#define HT_ANALYSIS_INTERNAL_H

#include "analysis/symbolize.h"
#include "analysis/types.h"

#include <stdarg.h>

/* ---- livemap.h: one heap's live set (inline functions) ------------------------------------ */
#include "analysis/livemap.h"

/* ---- tables.c: heaps, threads, thread pairs, sites, recently freed ------------------------- */
/* Index of the current heap of handle, or SIZE_MAX. */
size_t ht__an_heap_lookup(const ht_analysis *an, uint64_t handle);
/* Appends a heap (the handle's current one from now on); SIZE_MAX + an->oom on failure. */
size_t ht__an_heap_new(ht_analysis *an, uint64_t handle);
/* The current heap of handle, made when unseen; SIZE_MAX + an->oom on failure. */
size_t ht__an_heap_get(ht_analysis *an, uint64_t handle);
/* Index of thread tid, made when unseen; SIZE_MAX + an->oom on failure. */
size_t ht__an_thread_get(ht_analysis *an, uint32_t tid);
/* Counts bytes allocated on thread index a and freed on b (a == b: the same-thread total). */
void ht__an_pair_add(ht_analysis *an, size_t a, size_t b, uint64_t bytes);
/* Site of stack id (the table grows to it); NULL + an->oom on failure. */
ht_site *ht__an_site(ht_analysis *an, uint32_t id);
bool ht__an_recent_init(ht_analysis *an, size_t slots);
void ht__an_recent_put(ht_analysis *an, const ht_freed *f);
/* The ring's newest entry for address, or NULL (not among the last frees). O(ring size). */
const ht_freed *ht__an_recent_get(const ht_analysis *an, uint64_t address);

/* ---- replay.c: the streaming replay ---------------------------------------------------------- */
/* A new analysis for a trace that started at start_ns (event clock); NULL when out of memory. */
ht_analysis *ht__an_create(const ht_an_config *cfg, uint64_t start_ns);
/* Applies one event (in the reader's merged order). */
void ht__an_event(ht_analysis *an, const ht_reader_event *ev);
/* Called each time the count passes a multiple of 2^20 events (at a batch end), with the
 * count so far; return false to stop. */
typedef bool (*ht_an_progress_fn)(uint64_t n_events, void *ctx);
/* Replays every event of the reader (ht_reader_next_batch until 0), then ht__an_finish.
 * Returns false when progress stopped it. */
bool ht__an_run(ht_analysis *an, ht_reader *rd, ht_an_progress_fn progress, void *ctx);
void ht__an_destroy(ht_analysis *an);

/* ---- finish.c: end of trace, rankings -------------------------------------------------------- */
/* Counts what is still live as leaks (and closes the window's classes). Idempotent. */
void ht__an_finish(ht_analysis *an);
/* Rankings of sites (ids with a non-zero key, best first, ties by id). */
typedef enum ht_rank {
    HT_RANK_COUNT,    /* allocations */
    HT_RANK_BYTES,    /* bytes allocated */
    HT_RANK_LEAKED,   /* leaked bytes (then blocks) */
    HT_RANK_PEAK,     /* bytes live at the peak */
    HT_RANK_SLOW,     /* SLOWPATH allocations */
    HT_RANK_TEMP,     /* temporaries */
    HT_RANK_DESTROYED /* bytes live when their heap was destroyed */
} ht_rank;
/* Writes up to cap site ids into out (best first), returns how many. O(sites log sites). */
size_t ht__an_rank(ht_analysis *an, ht_rank rank, uint32_t *out, size_t cap);
/* Live bytes / blocks of a site, and of a heap, at the peak. */
uint64_t ht__an_site_peak_bytes(const ht_analysis *an, const ht_site *s);
uint64_t ht__an_site_peak_blocks(const ht_analysis *an, const ht_site *s);
uint64_t ht__an_heap_peak_share(const ht_analysis *an, const ht_heap_info *h);
/* The threads matrix's cells sorted by (allocating, freeing) thread index: an->n_pairs entries
 * to free(); NULL when there are none (or out of memory: an->oom). */
ht_pair *ht__an_pairs_sorted(ht_analysis *an);

/* ---- sizes.c: buckets, classes, names ----------------------------------------------------- */
extern const uint32_t ht__an_lfh_class_size[HT_AN_N_LFH];        /* copy of the heap's table */
extern const char *const ht__an_type_name[HT_AN_N_TYPES];        /* "alloc", "free", ... */
extern const uint16_t ht__an_type_code[HT_AN_N_TYPES];           /* HT_EVENT_HEAP_* */
extern const char *const ht__an_source_name[HT_AN_N_SOURCES];    /* "?", "lookaside", ... */
extern const char *const ht__an_window_name[HT_WIN_N];           /* "AIFI", ... */
extern const char *const ht__an_lifetime_name[HT_AN_N_LIFETIME]; /* "< 100 ns", ... */
/* Index into ht__an_type_name for an event type code, or -1. */
int ht__an_type_index(unsigned code);
/* Power-of-two bucket of size: 0 for 0, else 1 + floor(log2 size). */
unsigned ht__an_pow2_bucket(uint64_t size);
/* LFH class of a request (the smallest class that holds it); HT_AN_N_LFH when above 16 KiB. */
unsigned ht__an_lfh_class(uint64_t size);
/* Lifetime bucket of a duration in ns. */
unsigned ht__an_lifetime_bucket(uint64_t ns);

/* ---- sbuf.c: growing text buffer --------------------------------------------------------- */
typedef struct ht_sbuf {
    char *p;    /* text, NUL-terminated when cap > 0 */
    size_t n;   /* bytes of text */
    size_t cap; /* bytes allocated */
    bool oom;   /* an append failed: the text is incomplete */
} ht_sbuf;
void ht__sb_free(ht_sbuf *b);
void ht__sb_put(ht_sbuf *b, const char *s, size_t n);
void ht__sb_puts(ht_sbuf *b, const char *s);
void ht__sb_printf(ht_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A JSON string literal (quotes, escapes; invalid UTF-8 bytes become U+FFFD); NULL -> null. */
void ht__sb_json_str(ht_sbuf *b, const char *s);
void ht__sb_json_strn(ht_sbuf *b, const char *s, size_t n);
/* "1.5 KiB", "12 B" ... into buf; returns buf. */
const char *ht__fmt_bytes(uint64_t bytes, char *buf, size_t cap);
/* "1.234567 s", "12.3 ms" ... into buf; returns buf. */
const char *ht__fmt_ns(uint64_t ns, char *buf, size_t cap);

/* ---- report_text.c / report_json.c: the report ------------------------------------------- */
typedef struct ht_report_opts {
    unsigned top;         /* rows per ranking */
    unsigned leak_frames; /* frames shown per leak stack (text) */
    const char *path;     /* the trace's file name, for the header (may be NULL) */
} ht_report_opts;
/* The report of a finished analysis (ht__an_finish) over rd; sym may be NULL (addresses
 * only). Returns false when out of memory (out->oom). */
bool ht__report_text(ht_analysis *an, ht_reader *rd, ht_symbolizer *sym, const ht_report_opts *opts,
                     ht_sbuf *out);
bool ht__report_json(ht_analysis *an, ht_reader *rd, ht_symbolizer *sym, const ht_report_opts *opts,
                     ht_sbuf *out);
/* Shared by both: the site's display name (first frame outside heaptrail's libraries,
 * symbolized, and its caller's function; "(no stack)" for 0). */
const char *ht__report_site_name(ht_reader *rd, ht_symbolizer *sym, uint32_t site, char *buf,
                                 size_t cap);
/* The trace's damage summary: code (OK when none), offset, message. */
ht_reader_status_code ht__report_damage(const ht_reader *rd, uint64_t *offset,
                                        const char **message);

/* ---- open.c: opening a trace for a command ------------------------------------------------ */
/* ht_reader_open, and on failure a one-line reason naming the problem and the byte offset in
 * msg (cap bytes). Returns the reader's code; *out is NULL unless HT_READER_OK. */
ht_reader_status_code ht__an_open(const char *path, ht_reader **out, char *msg, size_t cap);

/* ---- dump.c: one event per line ----------------------------------------------------------- */
typedef enum ht_dump_format { HT_DUMP_TEXT, HT_DUMP_JSON, HT_DUMP_CSV } ht_dump_format;
#define HT_DUMP_LINE_MAX 640u /* bytes a line may need, newline included, + 32 of slack */
/* Formats ev as one line (with '\n') into buf (>= HT_DUMP_LINE_MAX bytes); returns its length. */
size_t ht__dump_line(ht_dump_format fmt, const ht_reader_event *ev, char *buf);
/* The CSV header line (with '\n'). */
extern const char ht__dump_csv_header[];

#endif
