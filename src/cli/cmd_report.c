/* cmd_report.c — `heaptrail report`: streams a trace through the analysis (src/analysis) and
 * prints the report (text or JSON) on stdout; progress on stderr when it is a terminal; a
 * damaged trace is reported as far as it could be read, then a one-line error and exit 1. */
#include "cli/cli.h"

#include "analysis/internal.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: heaptrail report [--top N] [--format text|json] [--from T] [--to T] FILE\n"
    "\n"
    "Reads a heaptrail trace and answers: summary (program, duration, threads, heaps, events,\n"
    "lost events and what they bound, invalid operations), Sources (per Source overall, per\n"
    "heap, per allocation site), peak (when, per heap, sites live at the peak), leaks (by\n"
    "allocation stack; blocks of destroyed heaps apart), hot sites (by count and bytes),\n"
    "temporary allocations and lifetimes, sizes (powers of two, LFH classes), threads (bytes\n"
    "allocated on one thread and freed on another), invalid operations with their stacks.\n"
    "\n"
    "options:\n"
    "  --top N              rows per ranking (default 10, 1..100000)\n"
    "  --format text|json   text (default) or one JSON object (keys: README.md)\n"
    "  --from T, --to T     a window: classes AIFI/AIFO/AOFI/AOFO and the impacting size.\n"
    "                       T is a time since the trace start: a number with a unit, ns, us,\n"
    "                       ms or s (1.5s, 200ms, 350us, 1000ns); a bare number is seconds.\n"
    "                       --from alone runs to the end, --to alone from the start.\n"
    "  -h, --help           this text\n"
    "\n"
    "Exit status: 0 ok, 1 the trace cannot be read or is damaged (the report then covers what\n"
    "was readable and says so at its top), 2 usage error.\n";

/* Parses T: a non-negative decimal with an optional fraction and unit (ns, us, ms, s;
 * none = s) into ns. false when malformed or out of range. */
static bool parse_time(const char *s, uint64_t *out)
{
    uint64_t whole = 0, frac = 0, frac_div = 1;
    const char *p = s;
    if (*p < '0' || *p > '9')
        return false;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (whole > (UINT64_MAX - 9) / 10)
            return false;
        whole = whole * 10 + (uint64_t)(*p - '0');
    }
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return false;
        for (; *p >= '0' && *p <= '9'; p++)
            if (frac_div < 1000000000000ull) {
                frac = frac * 10 + (uint64_t)(*p - '0');
                frac_div *= 10;
            }
    }
    uint64_t unit;
    if (*p == '\0' || !strcmp(p, "s"))
        unit = 1000000000ull;
    else if (!strcmp(p, "ms"))
        unit = 1000000ull;
    else if (!strcmp(p, "us"))
        unit = 1000ull;
    else if (!strcmp(p, "ns"))
        unit = 1ull;
    else
        return false;
    if (whole > UINT64_MAX / unit)
        return false;
    /* frac / frac_div * unit, without overflow: frac_div <= 10^12, unit <= 10^9. */
    long double f = (long double)frac / (long double)frac_div * (long double)unit;
    uint64_t ns = whole * unit;
    if ((long double)(UINT64_MAX - ns) < f)
        return false;
    *out = ns + (uint64_t)(f + 0.5L);
    return true;
}

typedef struct progress_ctx {
    uint64_t n_events; /* events in the good chunks (the reader's scan) */
    uint64_t size;     /* bytes of them */
    bool shown;        /* a bar was drawn (erase it at the end) */
} progress_ctx;

static bool show_progress(uint64_t n, void *vctx)
{
    progress_ctx *c = vctx;
    if (c->n_events == 0)
        return true;
    double frac = (double)n / (double)c->n_events;
    if (frac > 1.0)
        frac = 1.0;
    int w = 40, k = (int)(frac * w);
    char bar[41];
    for (int i = 0; i < w; i++)
        bar[i] = i < k ? '#' : '.';
    bar[w] = '\0';
    fprintf(stderr, "\rreport: [%s] %3d%%  %.0f of %.0f MiB", bar, (int)(frac * 100.0),
            frac * (double)c->size / 1048576.0, (double)c->size / 1048576.0);
    fflush(stderr);
    c->shown = true;
    return true;
}

int ht__cli_report(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"top", required_argument, NULL, 't'},  {"format", required_argument, NULL, 'f'},
        {"from", required_argument, NULL, 'F'}, {"to", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},       {NULL, 0, NULL, 0}};
    unsigned top = 10;
    bool json = false;
    ht_an_config cfg = {0};
    cfg.to_ns = UINT64_MAX;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
        switch (c) {
        case 't': {
            char *end;
            unsigned long v = strtoul(optarg, &end, 10);
            if (*optarg < '0' || *optarg > '9' || *end != '\0' || v < 1 || v > 100000) {
                fprintf(stderr, "heaptrail report: --top wants a number 1..100000, not '%s'\n",
                        optarg);
                return HT_CLI_USAGE;
            }
            top = (unsigned)v;
            break;
        }
        case 'f':
            if (!strcmp(optarg, "json"))
                json = true;
            else if (!strcmp(optarg, "text"))
                json = false;
            else {
                fprintf(stderr, "heaptrail report: --format is text or json, not '%s'\n", optarg);
                return HT_CLI_USAGE;
            }
            break;
        case 'F':
        case 'T':
            if (!parse_time(optarg, c == 'F' ? &cfg.from_ns : &cfg.to_ns)) {
                fprintf(stderr,
                        "heaptrail report: %s wants a time like 1.5s, 200ms, 350us or 1000ns, "
                        "not '%s'\n",
                        c == 'F' ? "--from" : "--to", optarg);
                return HT_CLI_USAGE;
            }
            cfg.window = true;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return HT_CLI_OK;
        default:
            fprintf(stderr, "heaptrail report: unknown or incomplete option '%s' (see --help)\n",
                    argv[optind - 1]);
            return HT_CLI_USAGE;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "heaptrail report: %s (see --help)\n",
                optind >= argc ? "no trace file given" : "one trace file only");
        return HT_CLI_USAGE;
    }
    if (cfg.window && cfg.from_ns > cfg.to_ns) {
        fprintf(stderr, "heaptrail report: --from is after --to\n");
        return HT_CLI_USAGE;
    }
    const char *path = argv[optind];

    char msg[512];
    ht_reader *rd;
    if (ht__an_open(path, &rd, msg, sizeof msg) != HT_READER_OK) {
        fprintf(stderr, "heaptrail report: %s: %s\n", path, msg);
        return HT_CLI_FAIL;
    }
    ht_reader_trace_info info;
    ht_reader_info(rd, &info);
    int rc = HT_CLI_FAIL;
    ht_sbuf out = {0};
    ht_symbolizer *sym = NULL;
    ht_analysis *an = ht__an_create(&cfg, info.start_mono_ns);
    if (an == NULL) {
        fprintf(stderr, "heaptrail report: out of memory\n");
        goto close_reader;
    }
    progress_ctx pc = {info.n_events, info.valid_size, false};
    ht__an_run(an, rd, isatty(STDERR_FILENO) ? show_progress : NULL, &pc);
    if (pc.shown)
        fprintf(stderr, "\r%60s\r", "");
    const ht_reader_module *mods;
    size_t n_mods;
    ht_reader_modules(rd, &mods, &n_mods);
    sym = ht__sym_open(mods, n_mods); /* NULL: addresses only */
    ht_report_opts opts = {.top = top, .leak_frames = 16, .path = path};
    bool ok = json ? ht__report_json(an, rd, sym, &opts, &out)
                   : ht__report_text(an, rd, sym, &opts, &out);
    if (!ok) {
        fprintf(stderr, "heaptrail report: out of memory writing the report\n");
        goto free_all;
    }
    if (fwrite(out.p, 1, out.n, stdout) != out.n || fflush(stdout) != 0) {
        fprintf(stderr, "heaptrail report: writing the report failed\n");
        goto free_all;
    }
    uint64_t off;
    const char *dmsg;
    ht_reader_status_code st = ht_reader_status(rd, &off, &dmsg);
    if (st != HT_READER_OK) {
        fprintf(stderr,
                "heaptrail report: %s: damaged trace: %s (%s at offset %llu); the report covers "
                "the %llu events before it\n",
                path, dmsg ? dmsg : "", ht_reader_status_name[st], (unsigned long long)off,
                (unsigned long long)an->n_events);
        goto free_all;
    }
    if (an->oom) {
        fprintf(stderr, "heaptrail report: out of memory during the analysis: figures are "
                        "incomplete\n");
        goto free_all;
    }
    rc = HT_CLI_OK;
free_all:
    ht__sb_free(&out);
    if (sym != NULL)
        ht__sym_close(sym);
    ht__an_destroy(an);
close_reader:
    ht_reader_close(rd);
    return rc;
}
