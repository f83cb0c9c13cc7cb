/* heaptrail/reader.h — the trace reader library: opens a heaptrail trace file
 * (docs/FORMAT.md), validates it, and yields its events merged across threads in timestamp
 * order (ties by sequence number, then tid), with the stacks, modules, markers, process info
 * and lost-event totals. Streaming: memory grows with the number of threads, distinct stacks
 * and modules, never with the number of events.
 *
 * Errors: functions return a status code or false; damage in the file is reported by
 * ht_reader_status (what, and at which byte offset) while every event of the whole chunks
 * before the damage is still delivered. The library never prints, never exits, never reads
 * outside the file or a buffer it was given.
 * Thread safety: one ht_reader may be used by one thread at a time; distinct readers are
 * independent. Nothing here is async-signal-safe.
 */
#ifndef HEAPTRAIL_READER_H
#define HEAPTRAIL_READER_H

#include <heaptrail.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ht_reader ht_reader; /* opaque */

/* What is wrong with a trace (ht_reader_status_name[code] is its name). */
typedef enum ht_reader_status_code {
    HT_READER_OK = 0,             /* nothing wrong (so far) */
    HT_READER_IO = 1,             /* open/read failed (errno in the message) */
    HT_READER_NOMEM = 2,          /* out of memory */
    HT_READER_INVALID_ARG = 3,    /* NULL or out-of-range argument */
    HT_READER_NOT_A_TRACE = 4,    /* the file does not start with the heaptrail magic */
    HT_READER_BAD_VERSION = 5,    /* a format version this reader does not know */
    HT_READER_BAD_HEADER = 6,     /* the file header is damaged */
    HT_READER_TRUNCATED = 7,      /* the file is cut off (possibly at a chunk boundary) */
    HT_READER_BAD_CHUNK = 8,      /* a chunk header is damaged (magic, checksum, field) */
    HT_READER_BAD_CHECKSUM = 9,   /* a chunk's payload does not match its checksum */
    HT_READER_BAD_RECORD = 10,    /* a record does not decode (checksum right: writer bug) */
    HT_READER_BAD_SEQUENCE = 11,  /* a chunk is missing or out of order in its stream */
    HT_READER_TRAILING_DATA = 12, /* bytes after the end-of-trace summary */
    HT_READER_N_STATUS = 13
} ht_reader_status_code;

/* Names ("ok", "truncated", …) indexed by ht_reader_status_code. */
HT_API extern const char *const ht_reader_status_name[HT_READER_N_STATUS];

/* One event: the ht_event (its tid, sequence, and ETW payload) plus its stack. */
typedef struct ht_reader_event {
    ht_event event;     /* as the heap produced it (sequence: per-thread, from 1) */
    uint32_t stack_id;  /* 0 = none; else ht_reader_stack(reader, stack_id, …) */
    uint32_t reserved_; /* 0 */
} ht_reader_event;

typedef struct ht_reader_module {
    uint64_t load_ts_ns;    /* when it was loaded (trace start for modules already there) */
    uint64_t unload_ts_ns;  /* when it was unloaded; 0 = still loaded at the end */
    uint64_t base;          /* load address */
    uint64_t size;          /* bytes of address space */
    const char *path;       /* NUL-terminated copy */
    uint8_t build_id[64];   /* GNU build-id bytes */
    uint32_t build_id_size; /* 0 = none */
} ht_reader_module;

typedef struct ht_reader_marker {
    uint64_t ts_ns;
    uint32_t tid;
    const char *text; /* NUL-terminated copy */
} ht_reader_marker;

typedef struct ht_reader_thread {
    uint32_t tid;
    uint64_t n_chunks; /* whole event chunks read */
    uint64_t n_events; /* events in them */
    uint64_t n_lost;   /* events lost: max of the last chunk's lost_so_far and the summary's */
} ht_reader_thread;

typedef struct ht_reader_trace_info {
    uint32_t version;           /* format version */
    uint32_t pid;               /* traced process */
    const char *cmdline;        /* argv joined with NUL separators, NUL-terminated copy */
    size_t cmdline_size;        /* bytes of cmdline, without the final NUL */
    uint32_t clock_id;          /* 1 = CLOCK_MONOTONIC */
    uint64_t start_mono_ns;     /* trace start, event time domain */
    uint64_t start_realtime_ns; /* the same instant, ns since the epoch */
    bool complete;              /* the end-of-trace summary was read */
    uint64_t end_ts_ns;         /* from the summary, else 0 */
    uint64_t n_threads;         /* threads with at least one whole chunk */
    uint64_t n_chunks;          /* whole chunks of every kind */
    uint64_t n_events;          /* events in the whole event chunks */
    uint64_t n_lost;            /* sum of the threads' n_lost */
    uint64_t valid_size;        /* bytes from the start up to the damage point (or file size) */
} ht_reader_trace_info;

/* Opens path and scans it once (headers, checksums, metadata). Returns HT_READER_OK and
 * *out = a reader, even when damage was found after the file header (see ht_reader_status);
 * on failure (IO, NOMEM, NOT_A_TRACE, BAD_VERSION, BAD_HEADER, TRUNCATED inside the file
 * header) returns that code and *out = NULL. */
HT_API ht_reader_status_code ht_reader_open(const char *path, ht_reader **out);
/* The same over size bytes at data, which must stay valid and unchanged until close. */
HT_API ht_reader_status_code ht_reader_open_memory(const void *data, size_t size, ht_reader **out);
/* Next event in merged order: true and *out filled, or false at the end of the good data
 * (check ht_reader_status); false for reader or out NULL. */
HT_API bool ht_reader_next(ht_reader *reader, ht_reader_event *out);
/* The next events in merged order, without copying them: fills events[0 .. n) with pointers
 * to them and returns n, 1 <= n <= max (n may be less than max before the end: a batch ends
 * where a thread's chunk, or the piece of it decoded at a time, does), or 0 at the end of the good
 * data (check ht_reader_status), and 0 for reader or events NULL or max 0. The events pointed to
 * are const and stay valid until the next ht_reader_next, ht_reader_next_batch or ht_reader_close
 * on this reader. The events and their order are exactly those of calling ht_reader_next n times,
 * and the two calls may be mixed. The fastest way to read a trace (no 80-byte copy per event, one
 * call per batch); a max of 256 or more lets the merge fill whole batches. */
HT_API size_t ht_reader_next_batch(ht_reader *reader, const ht_reader_event **events, size_t max);
/* The frames (return addresses, innermost first) of stack id; false if it is not defined.
 * The array stays valid until close. */
HT_API bool ht_reader_stack(const ht_reader *reader, uint32_t id, const uint64_t **frames,
                            size_t *n_frames);
/* Module map, in load order; valid until close. */
HT_API void ht_reader_modules(const ht_reader *reader, const ht_reader_module **modules, size_t *n);
/* Markers in file order; valid until close. */
HT_API void ht_reader_markers(const ht_reader *reader, const ht_reader_marker **markers, size_t *n);
/* Threads in order of first appearance; valid until close. */
HT_API void ht_reader_threads(const ht_reader *reader, const ht_reader_thread **threads, size_t *n);
/* Process info and totals (lost events …). */
HT_API void ht_reader_info(const ht_reader *reader, ht_reader_trace_info *info);
/* The first damage found so far: code, byte offset (may be NULL), and a one-line message
 * naming the problem and where (may be NULL; valid until close). HT_READER_OK: none. */
HT_API ht_reader_status_code ht_reader_status(const ht_reader *reader, uint64_t *offset,
                                              const char **message);
/* Frees the reader (NULL is fine). */
HT_API void ht_reader_close(ht_reader *reader);

#ifdef __cplusplus
}
#endif
#endif
