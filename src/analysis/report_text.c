/* report_text.c — the human-readable report: one section per question (summary, Sources, peak,
 * leaks, hot sites, temporaries and lifetimes, window, sizes, threads, invalid operations),
 * aligned tables, symbolized stacks. Writes into an ht_sbuf; never prints. Counts and bytes
 * are exact integers (bytes also in KiB/MiB where it helps a reader) so tests can check them. */
#include "analysis/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_INLINE 8u /* source frames per return address */

ht_reader_status_code ht__report_damage(const ht_reader *rd, uint64_t *offset, const char **message)
{
    return ht_reader_status(rd, offset, message);
}

/* heaptrail's own frames: the malloc family of the preload library (and a shared libheaptrail)
 * sit above the program's caller in stacks recorded through malloc. */
static bool own_frame(const ht_sym_frame *f)
{
    return f->module != NULL && strncmp(f->module, "libheaptrail", 12) == 0;
}

/* The site's display name: its first frame outside heaptrail's own libraries, symbolized, and
 * its caller's function ("f (file:line) <- caller"; "(no stack)" for site 0). The full stack
 * keeps every frame. */
const char *ht__report_site_name(ht_reader *rd, ht_symbolizer *sym, uint32_t site, char *buf,
                                 size_t cap)
{
    const uint64_t *frames;
    size_t n;
    if (site == 0 || !ht_reader_stack(rd, site, &frames, &n) || n == 0) {
        snprintf(buf, cap, site == 0 ? "(no stack)" : "(stack %u undefined)", site);
        return buf;
    }
    if (sym == NULL) {
        snprintf(buf, cap, "0x%llx", (unsigned long long)frames[0]);
        return buf;
    }
    ht_sym_frame f[MAX_INLINE], first;
    bool have_first = false;
    for (size_t i = 0; i < n; i++) {
        size_t k = ht__sym_resolve(sym, frames[i], f, MAX_INLINE);
        if (k == 0)
            continue;
        if (!have_first) {
            first = f[0];
            have_first = true;
        }
        if (!own_frame(&f[0])) {
            size_t len = ht__sym_format(&f[0], buf, cap);
            /* and its caller's function, which tells apart sites with the same first frame */
            if (i + 1 < n && len + 8 < cap) {
                ht_sym_frame c[MAX_INLINE];
                size_t kc = ht__sym_resolve(sym, frames[i + 1], c, MAX_INLINE);
                if (kc > 0 && c[0].function != NULL)
                    snprintf(buf + len, cap - len, " <- %s", c[0].function);
                else if (kc > 0 && c[0].module != NULL)
                    snprintf(buf + len, cap - len, " <- %s+0x%llx", c[0].module,
                             (unsigned long long)c[0].offset);
            }
            return buf;
        }
    }
    if (have_first)
        ht__sym_format(&first, buf, cap);
    else
        snprintf(buf, cap, "0x%llx", (unsigned long long)frames[0]);
    return buf;
}

/* The frames of a stack, one per line, each inline frame on its own line. */
static void text_stack(ht_sbuf *out, ht_reader *rd, ht_symbolizer *sym, uint32_t id,
                       unsigned max_frames, const char *indent)
{
    const uint64_t *frames;
    size_t n;
    if (id == 0 || !ht_reader_stack(rd, id, &frames, &n)) {
        ht__sb_printf(out, "%s(no stack recorded)\n", indent);
        return;
    }
    size_t shown = n < max_frames ? n : max_frames;
    char buf[1024];
    for (size_t i = 0; i < shown; i++) {
        if (sym == NULL) {
            ht__sb_printf(out, "%s#%-2zu 0x%llx\n", indent, i, (unsigned long long)frames[i]);
            continue;
        }
        ht_sym_frame f[MAX_INLINE];
        size_t k = ht__sym_resolve(sym, frames[i], f, MAX_INLINE);
        for (size_t j = 0; j < k; j++) {
            ht__sym_format(&f[j], buf, sizeof buf);
            ht__sb_printf(out, "%s#%-2zu 0x%llx %s%s\n", indent, i, (unsigned long long)frames[i],
                          f[j].inlined ? "(inlined) " : "", buf);
        }
    }
    if (shown < n)
        ht__sb_printf(out, "%s... %zu more frames\n", indent, n - shown);
}

static double pct(uint64_t part, uint64_t whole)
{
    return whole == 0 ? 0.0 : 100.0 * (double)part / (double)whole;
}

static void text_summary(ht_analysis *an, ht_reader *rd, const ht_report_opts *opts, ht_sbuf *out)
{
    ht_reader_trace_info info;
    ht_reader_info(rd, &info);
    char b1[64], b2[64];
    ht__sb_puts(out, "== Summary\n");
    ht__sb_puts(out, "  program        ");
    if (info.cmdline_size == 0)
        ht__sb_puts(out, "(not recorded)");
    for (size_t i = 0; i < info.cmdline_size; i++) {
        char c = info.cmdline[i];
        if (c == '\0' && i + 1 == info.cmdline_size)
            break; /* a terminating NUL */
        ht__sb_put(out, c == '\0' ? " " : ((unsigned char)c < 0x20 ? "?" : &c), 1);
    }
    ht__sb_printf(out, "\n  pid            %u\n", info.pid);
    if (opts->path != NULL)
        ht__sb_printf(out, "  trace          %s (format version %u, %llu bytes read)\n", opts->path,
                      info.version, (unsigned long long)info.valid_size);
    uint64_t dur = an->n_events ? an->last_ts - an->first_ts : 0;
    ht__sb_printf(out, "  duration       %s (first to last event)\n",
                  ht__fmt_ns(dur, b1, sizeof b1));
    ht__sb_printf(out, "  threads        %zu\n", an->n_threads);
    size_t n_created = 0, n_destroyed = 0;
    for (size_t i = 0; i < an->n_heaps; i++) {
        n_created += an->heaps[i].created;
        n_destroyed += an->heaps[i].destroyed;
    }
    ht__sb_printf(out, "  heaps          %zu (%zu created in the trace, %zu destroyed)\n",
                  an->n_heaps, n_created, n_destroyed);
    ht__sb_printf(out, "  events         %llu (%llu with a stack, %llu rundown)\n",
                  (unsigned long long)an->n_events, (unsigned long long)an->n_with_stack,
                  (unsigned long long)an->n_rundown);
    ht__sb_puts(out, "   ");
    for (unsigned t = 0; t < HT_AN_N_TYPES; t++)
        ht__sb_printf(out, " %s %llu", ht__an_type_name[t], (unsigned long long)an->n_type[t]);
    if (an->n_other_type)
        ht__sb_printf(out, " unknown %llu", (unsigned long long)an->n_other_type);
    ht__sb_puts(out, "\n");
    if (an->n_with_stack == 0 && an->n_events > 0)
        ht__sb_puts(out, "  stacks         none recorded: sites below are all \"(no stack)\" "
                         "(record with --stacks)\n");
    /* Lost events and what they bound. */
    if (info.n_lost == 0) {
        ht__sb_puts(out, "  lost events    0: peak, leaks and every count below are exact\n");
    } else {
        ht__sb_printf(out, "  lost events    %llu:", (unsigned long long)info.n_lost);
        const ht_reader_thread *th;
        size_t nth;
        ht_reader_threads(rd, &th, &nth);
        size_t shown = 0, losers = 0; /* the first 10 threads that lost events, then a count */
        for (size_t i = 0; i < nth; i++) {
            if (th[i].n_lost == 0)
                continue;
            if (shown < 10) {
                ht__sb_printf(out, " tid %u lost %llu;", th[i].tid,
                              (unsigned long long)th[i].n_lost);
                shown++;
            }
            losers++;
        }
        if (losers > shown)
            ht__sb_printf(out, " and %zu more threads", losers - shown);
        ht__sb_puts(out, "\n");
        ht__sb_printf(out,
                      "                 each can hide one block of unknown size: peak and leak "
                      "figures are exact to within %llu blocks\n",
                      (unsigned long long)info.n_lost);
        if (an->max_committed_sum >= an->peak_bytes && an->max_committed_sum > 0)
            ht__sb_printf(out,
                          "                 the heaps never committed more than %llu bytes, so "
                          "the true peak is at most that: peak exact to within %llu bytes\n",
                          (unsigned long long)an->max_committed_sum,
                          (unsigned long long)(an->max_committed_sum - an->peak_bytes));
        ht__sb_printf(out,
                      "                 seen: %llu frees of blocks never seen allocated, %llu "
                      "blocks (%s) found live under a new allocation (their free was lost)\n",
                      (unsigned long long)an->n_orphan_free, (unsigned long long)an->n_stale,
                      ht__fmt_bytes(an->bytes_stale, b2, sizeof b2));
    }
    if (info.n_lost == 0 && (an->n_orphan_free || an->n_stale))
        ht__sb_printf(out,
                      "  unmatched      %llu frees of blocks allocated before the trace "
                      "(no rundown), %llu blocks re-allocated while live\n",
                      (unsigned long long)an->n_orphan_free, (unsigned long long)an->n_stale);
    ht__sb_printf(out, "  invalid ops    %llu (free %llu, size query %llu, realloc %llu)\n",
                  (unsigned long long)an->n_invalid, (unsigned long long)an->n_invalid_free,
                  (unsigned long long)an->n_invalid_size,
                  (unsigned long long)an->n_invalid_realloc);
    if (an->n_failed)
        ht__sb_printf(out, "  failed allocs  %llu\n", (unsigned long long)an->n_failed);
    ht__sb_printf(out, "  peak live      %llu bytes (%s) in %llu blocks\n",
                  (unsigned long long)an->peak_bytes, ht__fmt_bytes(an->peak_bytes, b1, sizeof b1),
                  (unsigned long long)an->peak_blocks);
    ht__sb_printf(out, "  leaked         %llu bytes in %llu blocks\n",
                  (unsigned long long)an->leaked_bytes, (unsigned long long)an->leaked_blocks);
    if (an->oom)
        ht__sb_puts(out, "  WARNING        out of memory during the analysis: figures are "
                         "incomplete\n");
}

static void text_src_row(ht_sbuf *out, const char *label, const ht_src_count *c)
{
    ht__sb_printf(out, "  %-16s %12llu %16llu %12llu %16llu\n", label,
                  (unsigned long long)c->n_alloc, (unsigned long long)c->bytes_alloc,
                  (unsigned long long)c->n_free, (unsigned long long)c->bytes_free);
}

/* One line per site: a fixed header, then the symbolized name. */
static void site_line(ht_sbuf *out, ht_reader *rd, ht_symbolizer *sym, uint32_t id,
                      const char *cols)
{
    char name[1024];
    ht__sb_printf(out, "  %s  %s\n", cols, ht__report_site_name(rd, sym, id, name, sizeof name));
}

static void text_sources(ht_analysis *an, ht_reader *rd, ht_symbolizer *sym,
                         const ht_report_opts *opts, ht_sbuf *out, uint32_t *ids)
{
    ht__sb_puts(out, "\n== Sources (allocator path per operation)\n");
    ht__sb_printf(out, "  %-16s %12s %16s %12s %16s\n", "Source", "allocs", "bytes", "frees",
                  "bytes freed");
    char label[64];
    for (unsigned s = 1; s <= HT_SOURCE_INVALID; s++) {
        snprintf(label, sizeof label, "%u %s", s, ht__an_source_name[s]);
        text_src_row(out, label, &an->src[s]);
    }
    if (an->src[0].n_alloc || an->src[0].n_free || an->src[6].n_alloc || an->src[6].n_free) {
        ht_src_count o = an->src[0];
        o.n_alloc += an->src[6].n_alloc;
        o.bytes_alloc += an->src[6].bytes_alloc;
        o.n_free += an->src[6].n_free;
        o.bytes_free += an->src[6].bytes_free;
        text_src_row(out, "other", &o);
    }
    ht__sb_puts(out, "  (realloc: one alloc of the new size under its Source; the rundown's "
                     "blocks are not counted)\n");
    for (size_t k = 0; k < an->n_heaps; k++) {
        const ht_heap_info *h = &an->heaps[k];
        ht__sb_printf(out, "  heap 0x%llx:\n", (unsigned long long)h->handle);
        for (unsigned s = 1; s <= HT_SOURCE_INVALID; s++) {
            const ht_src_count *c = &h->src[s];
            if (c->n_alloc == 0 && c->n_free == 0)
                continue;
            snprintf(label, sizeof label, "  %u %s", s, ht__an_source_name[s]);
            text_src_row(out, label, c);
        }
    }
    size_t n = ht__an_rank(an, HT_RANK_SLOW, ids, opts->top);
    ht__sb_printf(out, "  who drives the slow path (top %u sites by SLOWPATH allocations):\n",
                  opts->top);
    if (n == 0)
        ht__sb_puts(out, "    (no SLOWPATH allocations)\n");
    else
        ht__sb_printf(out, "  %10s %14s %10s %10s %10s %10s  %s\n", "slow", "slow bytes",
                      "lookaside", "lowfrag", "main", "total", "site");
    for (size_t i = 0; i < n; i++) {
        const ht_site *s = &an->sites[ids[i]];
        char cols[160];
        snprintf(cols, sizeof cols, "%10llu %14llu %10llu %10llu %10llu %10llu",
                 (unsigned long long)s->n_src[4], (unsigned long long)s->bytes_src[4],
                 (unsigned long long)s->n_src[1], (unsigned long long)s->n_src[2],
                 (unsigned long long)s->n_src[3], (unsigned long long)s->n_alloc);
        site_line(out, rd, sym, ids[i], cols);
    }
}

static void text_peak(ht_analysis *an, ht_reader *rd, ht_symbolizer *sym,
                      const ht_report_opts *opts, ht_sbuf *out, uint32_t *ids)
{
    char b1[64], b2[64];
    ht__sb_puts(out, "\n== Peak\n");
    if (an->peak_bytes == 0) {
        ht__sb_puts(out, "  nothing was ever live\n");
        return;
    }
    ht__sb_printf(out, "  peak live %llu bytes (%s) in %llu blocks, at %s after trace start\n",
                  (unsigned long long)an->peak_bytes, ht__fmt_bytes(an->peak_bytes, b1, sizeof b1),
                  (unsigned long long)an->peak_blocks,
                  ht__fmt_ns(an->peak_ts - an->start_ns, b2, sizeof b2));
    ht__sb_printf(out, "  %-20s %16s %16s %16s\n", "heap", "at global peak", "own peak",
                  "own peak at");
    for (size_t k = 0; k < an->n_heaps; k++) {
        const ht_heap_info *h = &an->heaps[k];
        if (h->peak_bytes == 0)
            continue;
        ht__sb_printf(out, "  0x%-18llx %16llu %16llu %16s\n", (unsigned long long)h->handle,
                      (unsigned long long)ht__an_heap_peak_share(an, h),
                      (unsigned long long)h->peak_bytes,
                      ht__fmt_ns(h->peak_ts - an->start_ns, b1, sizeof b1));
    }
    size_t n = ht__an_rank(an, HT_RANK_PEAK, ids, opts->top);
    ht__sb_printf(out, "  top %u sites live at the peak:\n  %14s %10s %6s  %s\n", opts->top,
                  "bytes", "blocks", "%", "site");
    for (size_t i = 0; i < n; i++) {
        const ht_site *s = &an->sites[ids[i]];
        char cols[96];
        uint64_t pb = ht__an_site_peak_bytes(an, s);
        snprintf(cols, sizeof cols, "%14llu %10llu %5.1f%%", (unsigned long long)pb,
                 (unsigned long long)ht__an_site_peak_blocks(an, s), pct(pb, an->peak_bytes));
        site_line(out, rd, sym, ids[i], cols);
    }
}

static void text_leaks(ht_analysis *an, ht_reader *rd, ht_symbolizer *sym,
                       const ht_report_opts *opts, ht_sbuf *out, uint32_t *ids)
{
    ht__sb_puts(out, "\n== Leaks (live at the end, by allocation stack)\n");
    ht__sb_printf(out, "  %llu bytes in %llu blocks leaked", (unsigned long long)an->leaked_bytes,
                  (unsigned long long)an->leaked_blocks);
    if (an->rundown_leaked_blocks)
        ht__sb_printf(out, " (%llu of them live before tracing started)",
                      (unsigned long long)an->rundown_leaked_blocks);
    ht__sb_printf(out,
                  "\n  %llu bytes in %llu blocks were live when their heap was destroyed "
                  "(gone with the heap: not leaks)\n",
                  (unsigned long long)an->destroyed_bytes,
                  (unsigned long long)an->destroyed_blocks);
    size_t n = ht__an_rank(an, HT_RANK_LEAKED, ids, opts->top);
    for (size_t i = 0; i < n; i++) {
        const ht_site *s = &an->sites[ids[i]];
        ht__sb_printf(out, "  #%zu %llu bytes in %llu blocks (site %u), allocated at:\n", i + 1,
                      (unsigned long long)s->leaked_bytes, (unsigned long long)s->leaked_blocks,
                      ids[i]);
        text_stack(out, rd, sym, ids[i], opts->leak_frames, "      ");
    }
    n = ht__an_rank(an, HT_RANK_DESTROYED, ids, opts->top);
    if (n > 0)
        ht__sb_printf(out, "  destroyed with their heap:\n  %14s %10s  %s\n", "bytes", "blocks",
                      "site");
    for (size_t i = 0; i < n; i++) {
        const ht_site *s = &an->sites[ids[i]];
        char cols[64];
        snprintf(cols, sizeof cols, "%14llu %10llu", (unsigned long long)s->destroyed_bytes,
                 (unsigned long long)s->destroyed_blocks);
        site_line(out, rd, sym, ids[i], cols);
    }
}

static void text_hot(ht_analysis *an, ht_reader *rd, ht_symbolizer *sym, const ht_report_opts *opts,
                     ht_sbuf *out, uint32_t *ids)
{
    ht__sb_puts(out, "\n== Hot sites\n");
    for (int pass = 0; pass < 2; pass++) {
        size_t n = ht__an_rank(an, pass == 0 ? HT_RANK_COUNT : HT_RANK_BYTES, ids, opts->top);
        ht__sb_printf(out, "  top %u by %s:\n  %12s %16s %10s  %s\n", opts->top,
                      pass == 0 ? "allocations" : "bytes", "allocs", "bytes", "temporary", "site");
        for (size_t i = 0; i < n; i++) {
            const ht_site *s = &an->sites[ids[i]];
            char cols[96];
            snprintf(cols, sizeof cols, "%12llu %16llu %10llu", (unsigned long long)s->n_alloc,
                     (unsigned long long)s->bytes_alloc, (unsigned long long)s->n_temp);
            site_line(out, rd, sym, ids[i], cols);
        }
    }
}

static void text_temp(ht_analysis *an, ht_reader *rd, ht_symbolizer *sym,
                      const ht_report_opts *opts, ht_sbuf *out, uint32_t *ids)
{
    uint64_t n_alloc = 0;
    for (unsigned s = 0; s < HT_AN_N_SOURCES; s++)
        if (s != HT_SOURCE_INVALID)
            n_alloc += an->src[s].n_alloc;
    ht__sb_puts(out, "\n== Temporary allocations (freed before their thread allocated again)\n");
    ht__sb_printf(out, "  %llu temporary of %llu allocations (%.1f%%), %llu bytes\n",
                  (unsigned long long)an->n_temp, (unsigned long long)n_alloc,
                  pct(an->n_temp, n_alloc), (unsigned long long)an->bytes_temp);
    size_t n = ht__an_rank(an, HT_RANK_TEMP, ids, opts->top);
    if (n > 0)
        ht__sb_printf(out, "  %12s %16s %12s  %s\n", "temporary", "bytes", "allocs", "site");
    for (size_t i = 0; i < n; i++) {
        const ht_site *s = &an->sites[ids[i]];
        char cols[96];
        snprintf(cols, sizeof cols, "%12llu %16llu %12llu", (unsigned long long)s->n_temp,
                 (unsigned long long)s->bytes_temp, (unsigned long long)s->n_alloc);
        site_line(out, rd, sym, ids[i], cols);
    }
    ht__sb_puts(out, "\n== Lifetimes (blocks freed, by time from allocation to free)\n");
    ht__sb_printf(out, "  %-10s %12s %16s\n", "lifetime", "blocks", "bytes");
    for (unsigned k = 0; k < HT_AN_N_LIFETIME; k++)
        ht__sb_printf(out, "  %-10s %12llu %16llu\n", ht__an_lifetime_name[k],
                      (unsigned long long)an->lifetime[k].n,
                      (unsigned long long)an->lifetime[k].bytes);
    ht__sb_printf(out, "  %-10s %12llu %16llu\n", "still live", (unsigned long long)an->live_blocks,
                  (unsigned long long)an->live_bytes);
}

static void text_window(const ht_analysis *an, ht_sbuf *out)
{
    if (!an->cfg.window)
        return;
    char b1[64], b2[64];
    ht__sb_printf(
        out, "\n== Window %s .. %s after trace start\n", ht__fmt_ns(an->cfg.from_ns, b1, sizeof b1),
        an->cfg.to_ns == UINT64_MAX ? "the end" : ht__fmt_ns(an->cfg.to_ns, b2, sizeof b2));
    static const char *const what[HT_WIN_N] = {
        "allocated inside, freed inside", "allocated inside, freed outside (or never)",
        "allocated before, freed inside", "allocated before, freed outside (or never)"};
    ht__sb_printf(out, "  %-5s %12s %16s\n", "class", "blocks", "bytes");
    for (unsigned c = 0; c < HT_WIN_N; c++)
        ht__sb_printf(out, "  %-5s %12llu %16llu  %s\n", ht__an_window_name[c],
                      (unsigned long long)an->win[c].n, (unsigned long long)an->win[c].bytes,
                      what[c]);
    int64_t impact = (int64_t)an->win[HT_WIN_AIFO].bytes - (int64_t)an->win[HT_WIN_AOFI].bytes;
    ht__sb_printf(out,
                  "  impacting size %lld bytes (AIFO - AOFI: what the window added to the "
                  "live set)\n",
                  (long long)impact);
}

static void text_sizes(const ht_analysis *an, ht_sbuf *out)
{
    ht__sb_puts(out, "\n== Sizes (requested bytes per allocation)\n");
    ht__sb_printf(out, "  %-22s %12s %16s\n", "power of two", "allocs", "bytes");
    for (unsigned k = 0; k < HT_AN_N_POW2; k++) {
        if (an->pow2[k].n == 0)
            continue;
        char range[48];
        if (k == 0)
            snprintf(range, sizeof range, "0");
        else if (k == 64)
            snprintf(range, sizeof range, "2^63 ..");
        else
            snprintf(range, sizeof range, "%llu .. %llu", 1ull << (k - 1), (1ull << k) - 1);
        ht__sb_printf(out, "  %-22s %12llu %16llu\n", range, (unsigned long long)an->pow2[k].n,
                      (unsigned long long)an->pow2[k].bytes);
    }
    ht__sb_printf(out, "  %-22s %12s %16s\n", "LFH size class", "allocs", "bytes");
    for (unsigned k = 0; k <= HT_AN_N_LFH; k++) {
        if (an->lfh[k].n == 0)
            continue;
        char label[48];
        if (k == HT_AN_N_LFH)
            snprintf(label, sizeof label, "> %u (not LFH)", ht__an_lfh_class_size[k - 1]);
        else
            snprintf(label, sizeof label, "class %2u (%u B)", k, ht__an_lfh_class_size[k]);
        ht__sb_printf(out, "  %-22s %12llu %16llu\n", label, (unsigned long long)an->lfh[k].n,
                      (unsigned long long)an->lfh[k].bytes);
    }
}

static void text_threads(ht_analysis *an, ht_sbuf *out)
{
    ht__sb_puts(out, "\n== Threads\n");
    ht__sb_printf(out, "  %-10s %12s %12s %16s %12s %16s\n", "tid", "events", "allocs", "bytes",
                  "frees", "bytes freed");
    for (size_t i = 0; i < an->n_threads; i++) {
        const ht_thread_info *t = &an->threads[i];
        ht__sb_printf(out, "  %-10u %12llu %12llu %16llu %12llu %16llu\n", t->tid,
                      (unsigned long long)t->n_events, (unsigned long long)t->n_alloc,
                      (unsigned long long)t->bytes_alloc, (unsigned long long)t->n_free,
                      (unsigned long long)t->bytes_free);
    }
    ht__sb_printf(out, "  freed on the allocating thread: %llu blocks, %llu bytes\n",
                  (unsigned long long)an->same_thread_frees,
                  (unsigned long long)an->same_thread_bytes);
    ht__sb_puts(out, "  allocated on one thread, freed on another:\n");
    if (an->n_pairs == 0)
        ht__sb_puts(out, "    (none)\n");
    else
        ht__sb_printf(out, "  %-10s %-10s %12s %16s\n", "alloc tid", "free tid", "blocks", "bytes");
    ht_pair *pairs = ht__an_pairs_sorted(an);
    for (size_t i = 0; pairs != NULL && i < an->n_pairs; i++) {
        size_t a = (size_t)(pairs[i].key >> 32) - 1, b = (size_t)(pairs[i].key & 0xFFFFFFFFu) - 1;
        ht__sb_printf(out, "  %-10u %-10u %12llu %16llu\n", an->threads[a].tid, an->threads[b].tid,
                      (unsigned long long)pairs[i].n, (unsigned long long)pairs[i].bytes);
    }
    free(pairs);
}

static const char *invalid_kind(const ht_invalid_op *op)
{
    if (op->type == HT_EVENT_HEAP_REALLOC)
        return "realloc";
    return (op->ev_flags & HT_EVENT_FROM_SIZE) ? "size query" : "free";
}

static void text_invalid(ht_analysis *an, ht_reader *rd, ht_symbolizer *sym,
                         const ht_report_opts *opts, ht_sbuf *out)
{
    char b1[64];
    ht__sb_printf(out, "\n== Invalid operations (%llu)\n", (unsigned long long)an->n_invalid);
    for (size_t i = 0; i < an->n_invalid_kept; i++) {
        const ht_invalid_op *op = &an->invalid[i];
        ht__sb_printf(out, "  #%zu %s of 0x%llx in heap 0x%llx, tid %u, at %s\n", i + 1,
                      invalid_kind(op), (unsigned long long)op->address,
                      (unsigned long long)op->heap, op->tid,
                      ht__fmt_ns(op->ts_ns - an->start_ns, b1, sizeof b1));
        text_stack(out, rd, sym, op->stack, opts->leak_frames, "      ");
        const ht_freed *f = &op->before;
        switch (op->prior) {
        case HT_PRIOR_FREED:
        case HT_PRIOR_REALLOCED:
            ht__sb_printf(out,
                          "    already %s by tid %u at %s (block of %llu bytes, heap 0x%llx):\n",
                          op->prior == HT_PRIOR_FREED ? "freed" : "moved by a realloc", f->tid,
                          ht__fmt_ns(f->ts_ns - an->start_ns, b1, sizeof b1),
                          (unsigned long long)f->size, (unsigned long long)f->heap);
            text_stack(out, rd, sym, f->free_stack, opts->leak_frames, "      ");
            ht__sb_puts(out, "    it had been allocated at:\n");
            text_stack(out, rd, sym, f->alloc_stack, opts->leak_frames, "      ");
            break;
        case HT_PRIOR_DESTROYED:
            ht__sb_printf(out, "    its heap 0x%llx was destroyed at %s; allocated at:\n",
                          (unsigned long long)f->heap,
                          ht__fmt_ns(f->ts_ns - an->start_ns, b1, sizeof b1));
            text_stack(out, rd, sym, f->alloc_stack, opts->leak_frames, "      ");
            break;
        case HT_PRIOR_LIVE:
            ht__sb_printf(out,
                          "    live in another heap (0x%llx, %llu bytes, tid %u); "
                          "allocated at:\n",
                          (unsigned long long)f->heap, (unsigned long long)f->size, f->tid);
            text_stack(out, rd, sym, f->alloc_stack, opts->leak_frames, "      ");
            break;
        default:
            ht__sb_puts(out, "    (nothing known about this address from before: never "
                             "allocated in the trace, an interior pointer, or freed before "
                             "the last 4096 frees, which are all that is remembered)\n");
            break;
        }
    }
    if (an->n_invalid > an->n_invalid_kept)
        ht__sb_printf(out, "  ... %llu more (only the first %u are kept in detail)\n",
                      (unsigned long long)(an->n_invalid - an->n_invalid_kept), HT_AN_MAX_INVALID);
}

bool ht__report_text(ht_analysis *an, ht_reader *rd, ht_symbolizer *sym, const ht_report_opts *opts,
                     ht_sbuf *out)
{
    ht__an_finish(an);
    ht_report_opts o = *opts;
    if (o.top == 0)
        o.top = 10;
    if (o.leak_frames == 0)
        o.leak_frames = 16;
    uint32_t *ids = calloc(o.top, sizeof *ids);
    if (ids == NULL)
        return false;
    ht__sb_printf(out, "heaptrail report%s%s\n", o.path ? " — " : "", o.path ? o.path : "");
    uint64_t off;
    const char *msg;
    ht_reader_status_code st = ht__report_damage(rd, &off, &msg);
    if (st != HT_READER_OK) {
        ht_reader_trace_info info;
        ht_reader_info(rd, &info);
        ht__sb_printf(out,
                      "WARNING: damaged trace (%s at offset %llu): %s\n"
                      "WARNING: this report covers only what was readable: the first %llu bytes, "
                      "%llu events\n",
                      ht_reader_status_name[st], (unsigned long long)off, msg ? msg : "",
                      (unsigned long long)info.valid_size, (unsigned long long)an->n_events);
    }
    text_summary(an, rd, &o, out);
    text_sources(an, rd, sym, &o, out, ids);
    text_peak(an, rd, sym, &o, out, ids);
    text_leaks(an, rd, sym, &o, out, ids);
    text_hot(an, rd, sym, &o, out, ids);
    text_temp(an, rd, sym, &o, out, ids);
    text_window(an, out);
    text_sizes(an, out);
    text_threads(an, out);
    text_invalid(an, rd, sym, &o, out);
    if (sym != NULL) {
        ht_sym_stats ss;
        ht__sym_get_stats(sym, &ss);
        ht__sb_printf(out,
                      "\n== Symbols\n  %llu addresses in %llu modules: %llu with DWARF "
                      "(function, file:line), %llu with ELF symbols only, %llu not found "
                      "(module+offset)%s\n",
                      (unsigned long long)ss.n_addresses, (unsigned long long)ss.n_modules_used,
                      (unsigned long long)ss.n_modules_dwarf,
                      (unsigned long long)ss.n_modules_symtab,
                      (unsigned long long)ss.n_modules_none,
                      ss.have_libdw ? "" : "; built without libdw: module+offset only");
    }
    free(ids);
    return !out->oom;
}
