/* report_json.c — the report as one JSON object: the same content as report_text.c, with at
 * least DESIGN.md's fixed keys ("events", "sources", "lost_events", "peak_live_bytes",
 * "leaked_blocks", "leaked_bytes", "invalid_frees", "leaks"); every other key is documented in
 * README.md ("Reading traces"). Keys are only ever added, never renamed. Times ending in _ns
 * are nanoseconds since the trace start; addresses are "0x…" strings. Never prints. */
#include "analysis/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_INLINE 8u

static void j_u64(ht_sbuf *o, const char *key, uint64_t v)
{
    ht__sb_printf(o, "\"%s\":%llu", key, (unsigned long long)v);
}

static void j_hex(ht_sbuf *o, const char *key, uint64_t v)
{
    ht__sb_printf(o, "\"%s\":\"0x%llx\"", key, (unsigned long long)v);
}

static void j_cb(ht_sbuf *o, const char *key, const char *count_key, const char *bytes_key,
                 const ht_cb *c)
{
    ht__sb_printf(o, "\"%s\":{\"%s\":%llu,\"%s\":%llu}", key, count_key, (unsigned long long)c->n,
                  bytes_key, (unsigned long long)c->bytes);
}

/* [{"address","function","file","line","module","offset","inlined"}, …] */
static void j_stack(ht_sbuf *o, ht_reader *rd, ht_symbolizer *sym, uint32_t id)
{
    const uint64_t *frames;
    size_t n;
    ht__sb_puts(o, "[");
    if (id == 0 || !ht_reader_stack(rd, id, &frames, &n))
        n = 0;
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        ht_sym_frame f[MAX_INLINE];
        size_t k = 0;
        if (sym != NULL)
            k = ht__sym_resolve(sym, frames[i], f, MAX_INLINE);
        if (k == 0) {
            memset(f, 0, sizeof f[0]);
            f[0].address = frames[i];
            k = 1;
        }
        for (size_t j = 0; j < k; j++) {
            ht__sb_puts(o, first ? "{" : ",{");
            first = false;
            j_hex(o, "address", frames[i]);
            ht__sb_puts(o, ",\"function\":");
            ht__sb_json_str(o, f[j].function);
            ht__sb_puts(o, ",\"file\":");
            ht__sb_json_str(o, f[j].file);
            if (f[j].line)
                ht__sb_printf(o, ",\"line\":%u", f[j].line);
            else
                ht__sb_puts(o, ",\"line\":null");
            ht__sb_puts(o, ",\"module\":");
            ht__sb_json_str(o, f[j].module);
            if (f[j].module != NULL)
                ht__sb_printf(o, ",\"offset\":\"0x%llx\"", (unsigned long long)f[j].offset);
            else
                ht__sb_puts(o, ",\"offset\":null");
            ht__sb_printf(o, ",\"inlined\":%s}", f[j].inlined ? "true" : "false");
        }
    }
    ht__sb_puts(o, "]");
}

static void j_sources(ht_sbuf *o, const ht_src_count *src)
{
    ht__sb_puts(o, "{");
    for (unsigned s = 1; s <= HT_SOURCE_INVALID; s++) {
        ht__sb_printf(o,
                      "%s\"%u\":{\"name\":\"%s\",\"alloc_count\":%llu,\"alloc_bytes\":%llu,"
                      "\"free_count\":%llu,\"free_bytes\":%llu}",
                      s > 1 ? "," : "", s, ht__an_source_name[s],
                      (unsigned long long)src[s].n_alloc, (unsigned long long)src[s].bytes_alloc,
                      (unsigned long long)src[s].n_free, (unsigned long long)src[s].bytes_free);
    }
    ht__sb_puts(o, "}");
}

/* A site object: id, first frame's name, counts, and its stack. */
static void j_site(ht_analysis *an, ht_sbuf *o, ht_reader *rd, ht_symbolizer *sym, uint32_t id)
{
    const ht_site *s = &an->sites[id];
    char name[1024];
    ht__sb_printf(o, "{\"site\":%u,\"name\":", id);
    ht__sb_json_str(o, ht__report_site_name(rd, sym, id, name, sizeof name));
    ht__sb_puts(o, ",");
    j_u64(o, "alloc_count", s->n_alloc);
    ht__sb_puts(o, ",");
    j_u64(o, "alloc_bytes", s->bytes_alloc);
    ht__sb_puts(o, ",");
    j_u64(o, "free_count", s->n_free);
    ht__sb_puts(o, ",\"sources\":{");
    for (unsigned k = 1; k <= HT_SOURCE_INVALID; k++)
        ht__sb_printf(o, "%s\"%u\":{\"alloc_count\":%llu,\"alloc_bytes\":%llu}", k > 1 ? "," : "",
                      k, (unsigned long long)s->n_src[k], (unsigned long long)s->bytes_src[k]);
    ht__sb_puts(o, "},");
    j_u64(o, "peak_live_bytes", ht__an_site_peak_bytes(an, s));
    ht__sb_puts(o, ",");
    j_u64(o, "peak_live_blocks", ht__an_site_peak_blocks(an, s));
    ht__sb_puts(o, ",");
    j_u64(o, "leaked_blocks", s->leaked_blocks);
    ht__sb_puts(o, ",");
    j_u64(o, "leaked_bytes", s->leaked_bytes);
    ht__sb_puts(o, ",");
    j_u64(o, "destroyed_blocks", s->destroyed_blocks);
    ht__sb_puts(o, ",");
    j_u64(o, "destroyed_bytes", s->destroyed_bytes);
    ht__sb_puts(o, ",");
    j_u64(o, "temporary_count", s->n_temp);
    ht__sb_puts(o, ",");
    j_u64(o, "temporary_bytes", s->bytes_temp);
    ht__sb_puts(o, ",");
    j_u64(o, "rundown_blocks", s->n_rundown);
    ht__sb_puts(o, ",\"stack\":");
    j_stack(o, rd, sym, id);
    ht__sb_puts(o, "}");
}

static void j_ranking(ht_analysis *an, ht_sbuf *o, ht_reader *rd, ht_symbolizer *sym,
                      const char *key, ht_rank rank, uint32_t *ids, unsigned top)
{
    size_t n = ht__an_rank(an, rank, ids, top);
    ht__sb_printf(o, ",\"%s\":[", key);
    for (size_t i = 0; i < n; i++) {
        if (i)
            ht__sb_puts(o, ",");
        j_site(an, o, rd, sym, ids[i]);
    }
    ht__sb_puts(o, "]");
}

static void j_trace(ht_analysis *an, ht_sbuf *o, ht_reader *rd, const ht_report_opts *opts)
{
    ht_reader_trace_info info;
    ht_reader_info(rd, &info);
    ht__sb_puts(o, "\"trace\":{\"path\":");
    ht__sb_json_str(o, opts->path);
    ht__sb_puts(o, ",\"program\":");
    /* argv joined with spaces, as the text shows it */
    size_t plen = info.cmdline_size;
    if (plen > 0 && info.cmdline[plen - 1] == '\0')
        plen--; /* a terminating NUL */
    char *prog = malloc(plen + 1);
    if (prog != NULL) {
        for (size_t i = 0; i < plen; i++)
            prog[i] = info.cmdline[i] == '\0' ? ' ' : info.cmdline[i];
        ht__sb_json_strn(o, prog, plen);
        free(prog);
    } else
        ht__sb_puts(o, "null");
    ht__sb_puts(o, ",\"argv\":[");
    size_t start = 0;
    for (size_t i = 0; i <= info.cmdline_size && info.cmdline_size > 0; i++) {
        if (i == info.cmdline_size || info.cmdline[i] == '\0') {
            if (i == info.cmdline_size && start == i)
                break; /* a terminating NUL: no empty last argument */
            ht__sb_puts(o, start ? "," : "");
            ht__sb_json_strn(o, info.cmdline + start, i - start);
            start = i + 1;
            if (start > info.cmdline_size)
                break;
        }
    }
    ht__sb_puts(o, "],");
    j_u64(o, "pid", info.pid);
    ht__sb_puts(o, ",");
    j_u64(o, "format_version", info.version);
    ht__sb_printf(o, ",\"complete\":%s,", info.complete ? "true" : "false");
    j_u64(o, "bytes_read", info.valid_size);
    ht__sb_puts(o, ",");
    j_u64(o, "start_realtime_ns", info.start_realtime_ns);
    ht__sb_puts(o, ",");
    j_u64(o, "first_event_ns", an->n_events ? an->first_ts - an->start_ns : 0);
    ht__sb_puts(o, ",");
    j_u64(o, "last_event_ns", an->n_events ? an->last_ts - an->start_ns : 0);
    ht__sb_puts(o, ",");
    j_u64(o, "duration_ns", an->n_events ? an->last_ts - an->first_ts : 0);
    ht__sb_puts(o, "}");
}

static void j_heaps(ht_analysis *an, ht_sbuf *o)
{
    ht__sb_puts(o, ",\"heaps\":[");
    for (size_t k = 0; k < an->n_heaps; k++) {
        const ht_heap_info *h = &an->heaps[k];
        ht__sb_puts(o, k ? ",{" : "{");
        j_hex(o, "handle", h->handle);
        ht__sb_printf(o, ",\"created\":%s,\"destroyed\":%s,", h->created ? "true" : "false",
                      h->destroyed ? "true" : "false");
        j_u64(o, "flags", h->flags);
        ht__sb_puts(o, ",");
        j_u64(o, "create_ns", h->created ? h->create_ts - an->start_ns : 0);
        ht__sb_puts(o, ",");
        j_u64(o, "destroy_ns", h->destroyed ? h->destroy_ts - an->start_ns : 0);
        ht__sb_puts(o, ",");
        j_u64(o, "peak_live_bytes", h->peak_bytes);
        ht__sb_puts(o, ",");
        j_u64(o, "peak_ns", h->peak_bytes ? h->peak_ts - an->start_ns : 0);
        ht__sb_puts(o, ",");
        j_u64(o, "live_bytes_at_global_peak", ht__an_heap_peak_share(an, h));
        ht__sb_puts(o, ",");
        j_u64(o, "leaked_blocks", h->leaked_blocks);
        ht__sb_puts(o, ",");
        j_u64(o, "leaked_bytes", h->leaked_bytes);
        ht__sb_puts(o, ",");
        j_u64(o, "destroyed_blocks", h->destroyed_blocks);
        ht__sb_puts(o, ",");
        j_u64(o, "destroyed_bytes", h->destroyed_bytes);
        ht__sb_puts(o, ",");
        j_u64(o, "invalid_operations", h->n_invalid);
        ht__sb_puts(o, ",");
        j_u64(o, "max_committed_bytes", h->max_committed);
        ht__sb_puts(o, ",");
        j_cb(o, "expand", "count", "bytes", &(ht_cb){h->n_expand, h->bytes_expand});
        ht__sb_puts(o, ",");
        j_cb(o, "contract", "count", "bytes", &(ht_cb){h->n_contract, h->bytes_contract});
        ht__sb_puts(o, ",\"sources\":");
        j_sources(o, h->src);
        ht__sb_puts(o, "}");
    }
    ht__sb_puts(o, "]");
}

static const char *prior_name(uint32_t prior)
{
    switch (prior) {
    case HT_PRIOR_FREED:
        return "freed";
    case HT_PRIOR_REALLOCED:
        return "moved_by_realloc";
    case HT_PRIOR_DESTROYED:
        return "heap_destroyed";
    case HT_PRIOR_LIVE:
        return "live_in_other_heap";
    default:
        return NULL;
    }
}

static void j_invalid(ht_analysis *an, ht_sbuf *o, ht_reader *rd, ht_symbolizer *sym)
{
    ht__sb_puts(o, ",\"invalid\":[");
    for (size_t i = 0; i < an->n_invalid_kept; i++) {
        const ht_invalid_op *op = &an->invalid[i];
        const char *kind = op->type == HT_EVENT_HEAP_REALLOC     ? "realloc"
                           : (op->ev_flags & HT_EVENT_FROM_SIZE) ? "size"
                                                                 : "free";
        ht__sb_printf(o, "%s{\"type\":\"%s\",", i ? "," : "", kind);
        j_u64(o, "ts_ns", op->ts_ns - an->start_ns);
        ht__sb_puts(o, ",");
        j_u64(o, "tid", op->tid);
        ht__sb_puts(o, ",");
        j_hex(o, "heap", op->heap);
        ht__sb_puts(o, ",");
        j_hex(o, "address", op->address);
        ht__sb_puts(o, ",\"stack\":");
        j_stack(o, rd, sym, op->stack);
        ht__sb_puts(o, ",\"prior\":");
        ht__sb_json_str(o, prior_name(op->prior));
        if (op->prior != HT_PRIOR_NONE) {
            const ht_freed *f = &op->before;
            ht__sb_puts(o, ",");
            j_hex(o, "prior_heap", f->heap);
            ht__sb_puts(o, ",");
            j_u64(o, "prior_size", f->size);
            ht__sb_puts(o, ",");
            j_u64(o, "prior_ts_ns", f->ts_ns - an->start_ns);
            ht__sb_puts(o, ",");
            j_u64(o, "prior_tid", f->tid);
            ht__sb_puts(o, ",\"prior_free_stack\":");
            j_stack(o, rd, sym, op->prior == HT_PRIOR_LIVE ? 0 : f->free_stack);
            ht__sb_puts(o, ",\"prior_alloc_stack\":");
            j_stack(o, rd, sym, f->alloc_stack);
        }
        ht__sb_puts(o, "}");
    }
    ht__sb_puts(o, "]");
}

static void j_lost(ht_analysis *an, ht_sbuf *o, ht_reader *rd)
{
    ht_reader_trace_info info;
    ht_reader_info(rd, &info);
    ht__sb_puts(o, ",");
    j_u64(o, "lost_events", info.n_lost);
    ht__sb_puts(o, ",\"lost\":{\"by_thread\":[");
    const ht_reader_thread *th;
    size_t nth, k = 0;
    ht_reader_threads(rd, &th, &nth);
    for (size_t i = 0; i < nth; i++)
        if (th[i].n_lost)
            ht__sb_printf(o, "%s{\"tid\":%u,\"lost\":%llu}", k++ ? "," : "", th[i].tid,
                          (unsigned long long)th[i].n_lost);
    ht__sb_printf(o, "],\"exact\":%s,", info.n_lost == 0 ? "true" : "false");
    j_u64(o, "unknown_blocks_bound", info.n_lost);
    ht__sb_puts(o, ",\"peak_upper_bound_bytes\":");
    if (info.n_lost == 0)
        ht__sb_printf(o, "%llu", (unsigned long long)an->peak_bytes);
    else if (an->max_committed_sum >= an->peak_bytes && an->max_committed_sum > 0)
        ht__sb_printf(o, "%llu", (unsigned long long)an->max_committed_sum);
    else
        ht__sb_puts(o, "null");
    ht__sb_puts(o, ",");
    j_u64(o, "orphan_frees", an->n_orphan_free);
    ht__sb_puts(o, ",");
    j_u64(o, "stale_blocks", an->n_stale);
    ht__sb_puts(o, ",");
    j_u64(o, "stale_bytes", an->bytes_stale);
    ht__sb_puts(o, "}");
}

static void j_sizes(const ht_analysis *an, ht_sbuf *o)
{
    ht__sb_puts(o, ",\"sizes\":{\"pow2\":[");
    bool first = true;
    for (unsigned k = 0; k < HT_AN_N_POW2; k++) {
        if (an->pow2[k].n == 0)
            continue;
        uint64_t lo = k == 0 ? 0 : 1ull << (k - 1);
        uint64_t hi = k == 0 ? 0 : (k == 64 ? UINT64_MAX : (1ull << k) - 1);
        ht__sb_printf(o, "%s{\"min\":%llu,\"max\":%llu,\"count\":%llu,\"bytes\":%llu}",
                      first ? "" : ",", (unsigned long long)lo, (unsigned long long)hi,
                      (unsigned long long)an->pow2[k].n, (unsigned long long)an->pow2[k].bytes);
        first = false;
    }
    ht__sb_puts(o, "],\"lfh\":[");
    first = true;
    for (unsigned k = 0; k < HT_AN_N_LFH; k++) {
        if (an->lfh[k].n == 0)
            continue;
        ht__sb_printf(o, "%s{\"class\":%u,\"size\":%u,\"count\":%llu,\"bytes\":%llu}",
                      first ? "" : ",", k, ht__an_lfh_class_size[k],
                      (unsigned long long)an->lfh[k].n, (unsigned long long)an->lfh[k].bytes);
        first = false;
    }
    ht__sb_puts(o, "],");
    j_cb(o, "above_lfh", "count", "bytes", &an->lfh[HT_AN_N_LFH]);
    ht__sb_puts(o, "}");
}

static void j_threads(ht_analysis *an, ht_sbuf *o)
{
    ht__sb_puts(o, ",\"threads\":[");
    for (size_t i = 0; i < an->n_threads; i++) {
        const ht_thread_info *t = &an->threads[i];
        ht__sb_printf(o,
                      "%s{\"tid\":%u,\"events\":%llu,\"alloc_count\":%llu,\"alloc_bytes\":%llu,"
                      "\"free_count\":%llu,\"free_bytes\":%llu}",
                      i ? "," : "", t->tid, (unsigned long long)t->n_events,
                      (unsigned long long)t->n_alloc, (unsigned long long)t->bytes_alloc,
                      (unsigned long long)t->n_free, (unsigned long long)t->bytes_free);
    }
    ht__sb_puts(o, "],\"cross_thread\":[");
    ht_pair *pairs = ht__an_pairs_sorted(an);
    for (size_t i = 0; pairs != NULL && i < an->n_pairs; i++) {
        size_t a = (size_t)(pairs[i].key >> 32) - 1, b = (size_t)(pairs[i].key & 0xFFFFFFFFu) - 1;
        ht__sb_printf(o, "%s{\"alloc_tid\":%u,\"free_tid\":%u,\"blocks\":%llu,\"bytes\":%llu}",
                      i ? "," : "", an->threads[a].tid, an->threads[b].tid,
                      (unsigned long long)pairs[i].n, (unsigned long long)pairs[i].bytes);
    }
    free(pairs);
    ht__sb_puts(o, "],");
    j_cb(o, "same_thread_frees", "blocks", "bytes",
         &(ht_cb){an->same_thread_frees, an->same_thread_bytes});
}

bool ht__report_json(ht_analysis *an, ht_reader *rd, ht_symbolizer *sym, const ht_report_opts *opts,
                     ht_sbuf *o)
{
    ht__an_finish(an);
    unsigned top = opts->top ? opts->top : 10;
    uint32_t *ids = calloc(top, sizeof *ids);
    if (ids == NULL)
        return false;
    ht__sb_puts(o, "{");
    j_trace(an, o, rd, opts);
    uint64_t off;
    const char *msg;
    ht_reader_status_code st = ht__report_damage(rd, &off, &msg);
    ht__sb_puts(o, ",\"damage\":");
    if (st == HT_READER_OK)
        ht__sb_puts(o, "null");
    else {
        ht__sb_printf(o,
                      "{\"status\":\"%s\",\"offset\":%llu,\"message\":", ht_reader_status_name[st],
                      (unsigned long long)off);
        ht__sb_json_str(o, msg);
        ht__sb_puts(o, "}");
    }
    ht__sb_printf(o, ",\"incomplete\":%s", an->oom ? "true" : "false");
    /* summary */
    ht__sb_puts(o, ",\"events\":{");
    for (unsigned t = 0; t < HT_AN_N_TYPES; t++)
        ht__sb_printf(o, "%s\"%s\":%llu", t ? "," : "", ht__an_type_name[t],
                      (unsigned long long)an->n_type[t]);
    ht__sb_puts(o, "},");
    j_u64(o, "n_events", an->n_events);
    ht__sb_puts(o, ",");
    j_u64(o, "events_with_stack", an->n_with_stack);
    ht__sb_puts(o, ",");
    j_u64(o, "rundown_events", an->n_rundown);
    ht__sb_puts(o, ",");
    j_u64(o, "unknown_events", an->n_other_type);
    ht__sb_puts(o, ",");
    j_u64(o, "n_threads", an->n_threads);
    ht__sb_puts(o, ",");
    j_u64(o, "n_heaps", an->n_heaps);
    ht__sb_puts(o, ",");
    j_u64(o, "failed_allocations", an->n_failed);
    ht__sb_puts(o, ",");
    j_u64(o, "realloc_moved", an->n_realloc_moved);
    ht__sb_puts(o, ",");
    j_u64(o, "realloc_in_place", an->n_realloc_inplace);
    j_lost(an, o, rd);
    ht__sb_puts(o, ",\"sources\":");
    j_sources(o, an->src);
    /* peak */
    ht__sb_puts(o, ",");
    j_u64(o, "peak_live_bytes", an->peak_bytes);
    ht__sb_puts(o, ",");
    j_u64(o, "peak_live_blocks", an->peak_blocks);
    ht__sb_puts(o, ",");
    j_u64(o, "peak_ns", an->peak_bytes ? an->peak_ts - an->start_ns : 0);
    /* leaks */
    ht__sb_puts(o, ",");
    j_u64(o, "leaked_blocks", an->leaked_blocks);
    ht__sb_puts(o, ",");
    j_u64(o, "leaked_bytes", an->leaked_bytes);
    ht__sb_puts(o, ",");
    j_u64(o, "leaked_rundown_blocks", an->rundown_leaked_blocks);
    ht__sb_puts(o, ",");
    j_u64(o, "destroyed_blocks", an->destroyed_blocks);
    ht__sb_puts(o, ",");
    j_u64(o, "destroyed_bytes", an->destroyed_bytes);
    ht__sb_puts(o, ",");
    j_u64(o, "live_blocks_at_end", an->live_blocks);
    ht__sb_puts(o, ",");
    j_u64(o, "live_bytes_at_end", an->live_bytes);
    /* invalid */
    ht__sb_puts(o, ",");
    j_u64(o, "invalid_frees", an->n_invalid_free);
    ht__sb_puts(o, ",");
    j_u64(o, "invalid_operations", an->n_invalid);
    ht__sb_puts(o, ",");
    j_u64(o, "invalid_size_queries", an->n_invalid_size);
    ht__sb_puts(o, ",");
    j_u64(o, "invalid_reallocs", an->n_invalid_realloc);
    /* leaks, largest first: {"blocks","bytes","stack"} (DESIGN.md) + site, name */
    size_t n = ht__an_rank(an, HT_RANK_LEAKED, ids, top);
    ht__sb_puts(o, ",\"leaks\":[");
    char name[1024];
    for (size_t i = 0; i < n; i++) {
        const ht_site *s = &an->sites[ids[i]];
        ht__sb_printf(o, "%s{\"blocks\":%llu,\"bytes\":%llu,\"site\":%u,\"name\":", i ? "," : "",
                      (unsigned long long)s->leaked_blocks, (unsigned long long)s->leaked_bytes,
                      ids[i]);
        ht__sb_json_str(o, ht__report_site_name(rd, sym, ids[i], name, sizeof name));
        ht__sb_puts(o, ",\"stack\":");
        j_stack(o, rd, sym, ids[i]);
        ht__sb_puts(o, "}");
    }
    ht__sb_puts(o, "]");
    j_ranking(an, o, rd, sym, "destroyed_sites", HT_RANK_DESTROYED, ids, top);
    j_ranking(an, o, rd, sym, "peak_sites", HT_RANK_PEAK, ids, top);
    j_ranking(an, o, rd, sym, "hot_sites_by_count", HT_RANK_COUNT, ids, top);
    j_ranking(an, o, rd, sym, "hot_sites_by_bytes", HT_RANK_BYTES, ids, top);
    j_ranking(an, o, rd, sym, "slowpath_sites", HT_RANK_SLOW, ids, top);
    j_heaps(an, o);
    /* temporaries and lifetimes */
    ht__sb_puts(o, ",\"temporary\":{");
    j_u64(o, "count", an->n_temp);
    ht__sb_puts(o, ",");
    j_u64(o, "bytes", an->bytes_temp);
    ht__sb_puts(o, "}");
    j_ranking(an, o, rd, sym, "temporary_sites", HT_RANK_TEMP, ids, top);
    ht__sb_puts(o, ",\"lifetimes\":[");
    uint64_t limit = 100;
    for (unsigned k = 0; k < HT_AN_N_LIFETIME; k++, limit *= 10) {
        ht__sb_printf(o, "%s{\"bucket\":\"%s\",\"below_ns\":", k ? "," : "",
                      ht__an_lifetime_name[k]);
        if (k == HT_AN_N_LIFETIME - 1)
            ht__sb_puts(o, "null");
        else
            ht__sb_printf(o, "%llu", (unsigned long long)limit);
        ht__sb_printf(o, ",\"count\":%llu,\"bytes\":%llu}", (unsigned long long)an->lifetime[k].n,
                      (unsigned long long)an->lifetime[k].bytes);
    }
    ht__sb_puts(o, "]");
    /* window */
    ht__sb_puts(o, ",\"window\":");
    if (!an->cfg.window)
        ht__sb_puts(o, "null");
    else {
        ht__sb_puts(o, "{");
        j_u64(o, "from_ns", an->cfg.from_ns);
        ht__sb_puts(o, ",");
        if (an->cfg.to_ns == UINT64_MAX)
            ht__sb_puts(o, "\"to_ns\":null"); /* --from alone: to the end */
        else
            j_u64(o, "to_ns", an->cfg.to_ns);
        for (unsigned c = 0; c < HT_WIN_N; c++) {
            ht__sb_puts(o, ",");
            j_cb(o, ht__an_window_name[c], "count", "bytes", &an->win[c]);
        }
        ht__sb_printf(
            o, ",\"impacting_bytes\":%lld}",
            (long long)((int64_t)an->win[HT_WIN_AIFO].bytes - (int64_t)an->win[HT_WIN_AOFI].bytes));
    }
    j_sizes(an, o);
    j_threads(an, o);
    j_invalid(an, o, rd, sym);
    ht__sb_puts(o, ",\"symbols\":");
    if (sym == NULL)
        ht__sb_puts(o, "null");
    else {
        ht_sym_stats ss;
        ht__sym_get_stats(sym, &ss);
        ht__sb_printf(o,
                      "{\"addresses\":%llu,\"modules_used\":%llu,\"modules_dwarf\":%llu,"
                      "\"modules_symtab\":%llu,\"modules_none\":%llu,\"libdw\":%s}",
                      (unsigned long long)ss.n_addresses, (unsigned long long)ss.n_modules_used,
                      (unsigned long long)ss.n_modules_dwarf,
                      (unsigned long long)ss.n_modules_symtab,
                      (unsigned long long)ss.n_modules_none, ss.have_libdw ? "true" : "false");
    }
    ht__sb_puts(o, "}\n");
    free(ids);
    return !o->oom;
}
