/* fuzz_report.c — libFuzzer target for the report path: every input is opened with
 * ht_reader_open_memory (as is, and with every checksum recomputed so that mutations reach the
 * record decoders and the analysis), replayed by src/analysis (with and without a --from/--to
 * window), rendered as text and as JSON, and every event is formatted by the dump formatter in
 * all three formats. The JSON report and JSON dump lines must parse (a small strict checker
 * below), and dump lines must fit HT_DUMP_LINE_MAX. The symbolizer is not used (NULL): paths
 * in a fuzzed module map must not make the fuzzer open files. The same entry point replays
 * fuzz/corpus/report/ in ordinary ctest runs (tests/test_fuzz_replay_report.c).
 * Deterministic: no time, no global state. */
#include "analysis/internal.h"
#include "trace/format.h"
#include "../tests/trace_build.h" /* tb_fix_file_checksums */

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- a strict JSON syntax checker (RFC 8259 shape; enough to catch broken escaping) ------ */

typedef struct jcur {
    const char *p, *end;
    int depth;
} jcur;

static void j_ws(jcur *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\t' || *c->p == '\r'))
        c->p++;
}

static int j_value(jcur *c);

static int j_string(jcur *c)
{
    if (c->p >= c->end || *c->p != '"')
        return 0;
    c->p++;
    while (c->p < c->end && *c->p != '"') {
        unsigned char ch = (unsigned char)*c->p;
        if (ch < 0x20)
            return 0;
        if (ch == '\\') {
            c->p++;
            if (c->p >= c->end)
                return 0;
            if (*c->p == 'u') {
                for (int i = 0; i < 4; i++) {
                    c->p++;
                    if (c->p >= c->end || !strchr("0123456789abcdefABCDEF", *c->p) || !*c->p)
                        return 0;
                }
            } else if (!strchr("\"\\/bfnrt", *c->p) || !*c->p)
                return 0;
        }
        c->p++;
    }
    if (c->p >= c->end)
        return 0;
    c->p++;
    return 1;
}

static int j_number(jcur *c)
{
    const char *s = c->p;
    if (c->p < c->end && *c->p == '-')
        c->p++;
    if (c->p >= c->end || *c->p < '0' || *c->p > '9')
        return 0;
    if (*c->p == '0')
        c->p++;
    else
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9')
            c->p++;
    return c->p > s;
}

static int j_lit(jcur *c, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, w, n) != 0)
        return 0;
    c->p += n;
    return 1;
}

static int j_value(jcur *c)
{
    j_ws(c);
    if (c->p >= c->end || ++c->depth > 64)
        return 0;
    int ok = 1;
    switch (*c->p) {
    case '{':
        c->p++;
        j_ws(c);
        if (c->p < c->end && *c->p == '}') {
            c->p++;
            break;
        }
        for (;;) {
            j_ws(c);
            if (!j_string(c))
                return 0;
            j_ws(c);
            if (c->p >= c->end || *c->p++ != ':')
                return 0;
            if (!j_value(c))
                return 0;
            j_ws(c);
            if (c->p >= c->end)
                return 0;
            if (*c->p == ',') {
                c->p++;
                continue;
            }
            if (*c->p++ != '}')
                return 0;
            break;
        }
        break;
    case '[':
        c->p++;
        j_ws(c);
        if (c->p < c->end && *c->p == ']') {
            c->p++;
            break;
        }
        for (;;) {
            if (!j_value(c))
                return 0;
            j_ws(c);
            if (c->p >= c->end)
                return 0;
            if (*c->p == ',') {
                c->p++;
                continue;
            }
            if (*c->p++ != ']')
                return 0;
            break;
        }
        break;
    case '"':
        ok = j_string(c);
        break;
    case 't':
        ok = j_lit(c, "true");
        break;
    case 'f':
        ok = j_lit(c, "false");
        break;
    case 'n':
        ok = j_lit(c, "null");
        break;
    default:
        ok = j_number(c);
        break;
    }
    c->depth--;
    return ok;
}

static void json_must_parse(const char *s, size_t n)
{
    jcur c = {s, s + n, 0};
    if (!j_value(&c))
        abort();
    j_ws(&c);
    if (c.p != c.end)
        abort();
}

/* ---- the target -------------------------------------------------------------------------- */

static void report_once(const uint8_t *data, size_t size, bool window)
{
    ht_reader *rd = NULL;
    if (ht_reader_open_memory(data, size, &rd) != HT_READER_OK)
        return;
    ht_reader_trace_info info;
    ht_reader_info(rd, &info);
    ht_an_config cfg = {0};
    if (window) {
        cfg.window = true;
        cfg.from_ns = size * 1000;
        cfg.to_ns = size * 100000;
    }
    cfg.recent_slots = 64; /* small: evictions happen */
    ht_analysis *an = ht__an_create(&cfg, info.start_mono_ns);
    if (an == NULL)
        goto close_reader;
    ht_reader_event ev;
    char line[HT_DUMP_LINE_MAX];
    uint64_t n = 0;
    while (ht_reader_next(rd, &ev) && n++ < 2000000) {
        ht__an_event(an, &ev);
        if (window)
            continue;
        for (int f = 0; f < 3; f++) {
            size_t k = ht__dump_line((ht_dump_format)f, &ev, line);
            if (k == 0 || k >= HT_DUMP_LINE_MAX || line[k - 1] != '\n')
                abort();
            if (f == HT_DUMP_JSON)
                json_must_parse(line, k - 1);
        }
    }
    ht__an_finish(an);
    ht_report_opts opts = {.top = 5, .leak_frames = 4, .path = "fuzz"};
    ht_sbuf out = {0};
    if (ht__report_json(an, rd, NULL, &opts, &out) && !out.oom)
        json_must_parse(out.p, out.n);
    ht__sb_free(&out);
    memset(&out, 0, sizeof out);
    ht__report_text(an, rd, NULL, &opts, &out);
    if (!out.oom && out.n > 0 && strlen(out.p) != out.n)
        abort(); /* no NUL inside the text */
    ht__sb_free(&out);
    ht__an_destroy(an);
close_reader:
    ht_reader_close(rd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    report_once(data, size, false);
    uint8_t *copy = malloc(size ? size : 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    tb_fix_file_checksums(copy, size);
    report_once(copy, size, false);
    report_once(copy, size, true);
    free(copy);
    return 0;
}
