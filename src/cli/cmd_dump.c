/* cmd_dump.c — `heaptrail dump`: every event of a trace (in the reader's merged order), one per
 * line, lossless, as text, JSON lines or CSV, optionally filtered. Lines are formatted by
 * src/analysis/dump.c into a large buffer written with fwrite; a damaged trace is dumped up to
 * the damage, then a one-line error and exit 1. */
#include "cli/cli.h"

#include "analysis/internal.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char usage_text[] =
    "usage: heaptrail dump [--format text|json|csv] [--type T] [--heap H] [--source S]\n"
    "                      [--tid T] FILE\n"
    "\n"
    "Prints every event of a trace, one per line, in timestamp order (ties by sequence), with\n"
    "every field: ts_ns (the event clock, CLOCK_MONOTONIC), tid, sequence, flags (1 rundown,\n"
    "2 logged by a size query), stack_id (0 none), HeapHandle and the ETW payload fields:\n"
    "  alloc     Size Address Source          free     Address Source\n"
    "  realloc   NewAddress OldAddress NewSize OldSize Source\n"
    "  create    Flags ReservedSpace CommittedSpace      destroy  (none)\n"
    "  expand, contract   Address Size CommittedSpace\n"
    "Addresses are 0x... hexadecimal (JSON: strings), everything else decimal.\n"
    "\n"
    "options:\n"
    "  --format text|json|csv  text lines (default), JSON lines, or CSV with a header\n"
    "  --type T     only these types: alloc free realloc create destroy expand contract,\n"
    "               or opcodes (0x21); a comma-separated list\n"
    "  --heap H     only events of HeapHandle H (0x... or decimal)\n"
    "  --source S   only alloc/free/realloc events with these Sources: 1..6 or lookaside,\n"
    "               lowfrag, mainpath, slowpath, invalid; a comma-separated list\n"
    "  --tid T      only events of thread T\n"
    "  -h, --help   this text\n"
    "\n"
    "Exit status: 0 ok, 1 the trace cannot be read or is damaged (what was readable is\n"
    "printed first), 2 usage error.\n";

#define OUT_BUF (1u << 20)

typedef struct dump_filter {
    unsigned types;   /* bit per ht__an_type_name index; 0 = all */
    unsigned sources; /* bit per Source value; 0 = all */
    bool heap_set;    /* heap applies */
    uint64_t heap;    /* HeapHandle */
    bool tid_set;     /* tid applies */
    uint32_t tid;     /* thread */
} dump_filter;

static bool parse_u64(const char *s, uint64_t *out)
{
    if (*s < '0' || *s > '9')
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno != 0 || *end != '\0')
        return false;
    *out = v;
    return true;
}

/* Applies f to each comma-separated item of list; false if any item is refused. */
static bool each_item(const char *list, bool (*f)(const char *item, unsigned *mask), unsigned *mask)
{
    char buf[256];
    if (strlen(list) >= sizeof buf || *list == '\0')
        return false;
    strcpy(buf, list);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save))
        if (!f(tok, mask))
            return false;
    return *mask != 0;
}

static bool type_item(const char *s, unsigned *mask)
{
    uint64_t code;
    for (unsigned i = 0; i < HT_AN_N_TYPES; i++)
        if (!strcasecmp(s, ht__an_type_name[i])) {
            *mask |= 1u << i;
            return true;
        }
    if (parse_u64(s, &code) && code <= 0xFFFF && ht__an_type_index((unsigned)code) >= 0) {
        *mask |= 1u << ht__an_type_index((unsigned)code);
        return true;
    }
    return false;
}

static bool source_item(const char *s, unsigned *mask)
{
    uint64_t v;
    for (unsigned i = 1; i < HT_AN_N_SOURCES; i++)
        if (!strcasecmp(s, ht__an_source_name[i])) {
            *mask |= 1u << i;
            return true;
        }
    if (parse_u64(s, &v) && v < 32) {
        *mask |= 1u << v;
        return true;
    }
    return false;
}

static bool keep(const dump_filter *f, const ht_reader_event *rev)
{
    const ht_event *ev = &rev->event;
    if (f->types != 0) {
        int ti = ht__an_type_index(ev->type);
        if (ti < 0 || !(f->types & (1u << ti)))
            return false;
    }
    if (f->heap_set && ev->heap_handle != f->heap)
        return false;
    if (f->tid_set && ev->tid != f->tid)
        return false;
    if (f->sources != 0) {
        uint32_t s;
        if (ev->type == HT_EVENT_HEAP_ALLOC)
            s = ev->alloc.source;
        else if (ev->type == HT_EVENT_HEAP_FREE)
            s = ev->free.source;
        else if (ev->type == HT_EVENT_HEAP_REALLOC)
            s = ev->realloc.source;
        else
            return false;
        if (s >= 32 || !(f->sources & (1u << s)))
            return false;
    }
    return true;
}

int ht__cli_dump(int argc, char **argv)
{
    static const struct option longopts[] = {{"format", required_argument, NULL, 'f'},
                                             {"type", required_argument, NULL, 'y'},
                                             {"heap", required_argument, NULL, 'H'},
                                             {"source", required_argument, NULL, 's'},
                                             {"tid", required_argument, NULL, 't'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    ht_dump_format fmt = HT_DUMP_TEXT;
    dump_filter flt = {0};
    optind = 1;
    opterr = 0;
    int c;
    uint64_t v;
    while ((c = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
        switch (c) {
        case 'f':
            if (!strcmp(optarg, "text"))
                fmt = HT_DUMP_TEXT;
            else if (!strcmp(optarg, "json"))
                fmt = HT_DUMP_JSON;
            else if (!strcmp(optarg, "csv"))
                fmt = HT_DUMP_CSV;
            else {
                fprintf(stderr, "heaptrail dump: --format is text, json or csv, not '%s'\n",
                        optarg);
                return HT_CLI_USAGE;
            }
            break;
        case 'y':
            if (!each_item(optarg, type_item, &flt.types)) {
                fprintf(stderr,
                        "heaptrail dump: --type wants alloc, free, realloc, create, destroy, "
                        "expand, contract or an opcode, not '%s'\n",
                        optarg);
                return HT_CLI_USAGE;
            }
            break;
        case 's':
            if (!each_item(optarg, source_item, &flt.sources)) {
                fprintf(stderr,
                        "heaptrail dump: --source wants 1..6 or lookaside, lowfrag, mainpath, "
                        "slowpath, invalid, not '%s'\n",
                        optarg);
                return HT_CLI_USAGE;
            }
            break;
        case 'H':
            if (!parse_u64(optarg, &flt.heap)) {
                fprintf(stderr,
                        "heaptrail dump: --heap wants a handle (0x... or decimal), "
                        "not '%s'\n",
                        optarg);
                return HT_CLI_USAGE;
            }
            flt.heap_set = true;
            break;
        case 't':
            if (!parse_u64(optarg, &v) || v > UINT32_MAX) {
                fprintf(stderr, "heaptrail dump: --tid wants a thread id, not '%s'\n", optarg);
                return HT_CLI_USAGE;
            }
            flt.tid = (uint32_t)v;
            flt.tid_set = true;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return HT_CLI_OK;
        default:
            fprintf(stderr, "heaptrail dump: unknown or incomplete option '%s' (see --help)\n",
                    argv[optind - 1]);
            return HT_CLI_USAGE;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "heaptrail dump: %s (see --help)\n",
                optind >= argc ? "no trace file given" : "one trace file only");
        return HT_CLI_USAGE;
    }
    const char *path = argv[optind];
    char msg[512];
    ht_reader *rd;
    if (ht__an_open(path, &rd, msg, sizeof msg) != HT_READER_OK) {
        fprintf(stderr, "heaptrail dump: %s: %s\n", path, msg);
        return HT_CLI_FAIL;
    }
    int rc = HT_CLI_FAIL;
    char *buf = malloc(OUT_BUF);
    if (buf == NULL) {
        fprintf(stderr, "heaptrail dump: out of memory\n");
        goto close_reader;
    }
    size_t n = 0;
    bool filtered = flt.types || flt.sources || flt.heap_set || flt.tid_set;
    if (fmt == HT_DUMP_CSV) {
        n = strlen(ht__dump_csv_header);
        memcpy(buf, ht__dump_csv_header, n);
    }
    ht_reader_event ev;
    uint64_t n_events = 0;
    while (ht_reader_next(rd, &ev)) {
        n_events++;
        if (filtered && !keep(&flt, &ev))
            continue;
        if (OUT_BUF - n < HT_DUMP_LINE_MAX) {
            if (fwrite(buf, 1, n, stdout) != n)
                goto write_failed;
            n = 0;
        }
        n += ht__dump_line(fmt, &ev, buf + n);
    }
    if (n > 0 && fwrite(buf, 1, n, stdout) != n)
        goto write_failed;
    if (fflush(stdout) != 0)
        goto write_failed;
    uint64_t off;
    const char *dmsg;
    ht_reader_status_code st = ht_reader_status(rd, &off, &dmsg);
    if (st != HT_READER_OK) {
        fprintf(stderr,
                "heaptrail dump: %s: damaged trace: %s (%s at offset %llu); dumped the %llu "
                "events before it\n",
                path, dmsg ? dmsg : "", ht_reader_status_name[st], (unsigned long long)off,
                (unsigned long long)n_events);
        goto free_buf;
    }
    rc = HT_CLI_OK;
    goto free_buf;
write_failed:
    fprintf(stderr, "heaptrail dump: writing to stdout failed: %s\n", strerror(errno));
free_buf:
    free(buf);
close_reader:
    ht_reader_close(rd);
    return rc;
}
