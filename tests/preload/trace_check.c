/* trace_check.c — reads heaptrail traces back with the reader library and checks that each is
 * consistent: every free and realloc names a live block or is INVALID, no block is allocated
 * twice, the events read agree with the reader's totals and with the end summary the
 * recorder wrote (parsed here straight from docs/FORMAT.md section 8, not through the
 * reader). Prints one line of key=value per file; exits 1 when a file is not consistent.
 *
 * usage: trace_check [--allow-incomplete] [--size N] [--slack N] FILE...
 *   --allow-incomplete  a file without its end summary (killed, or exec'd) is not an error
 *   --size N            also count the allocations (and reallocs) of exactly N bytes
 *   --slack N           allow N more unmatched frees / double allocations than the lost count
 *                       (the heap's rundown is exact only when no other thread allocates
 *                       while tracing starts)
 * Unmatched frees and double allocations are allowed only up to the lost-event count. */
#include <heaptrail/reader.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct slot {
    uint64_t heap, addr, size; /* addr 0 = empty */
} slot;

typedef struct live_map {
    slot *s;
    size_t cap, n;
} live_map;

static size_t hash(uint64_t heap, uint64_t addr, size_t cap)
{
    uint64_t h = (addr ^ (heap * 0x9E3779B97F4A7C15ull)) * 0xff51afd7ed558ccdull;
    return (size_t)(h >> 17) & (cap - 1);
}

static void map_grow(live_map *m);

static slot *map_find(live_map *m, uint64_t heap, uint64_t addr)
{
    for (size_t i = hash(heap, addr, m->cap);; i = (i + 1) & (m->cap - 1)) {
        if (m->s[i].addr == 0)
            return NULL;
        if (m->s[i].addr == addr && m->s[i].heap == heap)
            return &m->s[i];
    }
}

static void map_put(live_map *m, uint64_t heap, uint64_t addr, uint64_t size)
{
    if (2 * (m->n + 1) > m->cap)
        map_grow(m);
    size_t i = hash(heap, addr, m->cap);
    while (m->s[i].addr != 0)
        i = (i + 1) & (m->cap - 1);
    m->s[i] = (slot){heap, addr, size};
    m->n++;
}

static void map_grow(live_map *m)
{
    live_map g = {calloc(m->cap * 2, sizeof(slot)), m->cap * 2, 0};
    if (g.s == NULL) {
        fprintf(stderr, "trace_check: out of memory\n");
        exit(2);
    }
    for (size_t i = 0; i < m->cap; i++)
        if (m->s[i].addr != 0)
            map_put(&g, m->s[i].heap, m->s[i].addr, m->s[i].size);
    free(m->s);
    *m = g;
}

/* Removes *e (backward-shift deletion keeps probe chains whole). */
static void map_del(live_map *m, slot *e)
{
    size_t i = (size_t)(e - m->s);
    m->s[i].addr = 0;
    m->n--;
    for (size_t j = (i + 1) & (m->cap - 1); m->s[j].addr != 0; j = (j + 1) & (m->cap - 1)) {
        size_t home = hash(m->s[j].heap, m->s[j].addr, m->cap);
        /* can slot j move to i? only if its home is not in (i, j] cyclically */
        bool between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!between) {
            m->s[i] = m->s[j];
            m->s[j].addr = 0;
            i = j;
        }
    }
}

static uint64_t le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static bool varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *out = v;
            return true;
        }
    }
    return false;
}

/* The end summary's totals, read from the file's chunk headers (FORMAT.md 3, 4, 8). */
static bool summary_read(const char *path, uint64_t *events, uint64_t *lost)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return false;
    uint8_t hdr[72];
    bool found = false;
    if (fread(hdr, 1, 48, f) != 48)
        goto out;
    long off = 48 + (long)le(hdr + 20, 4);
    for (;;) {
        if (fseek(f, off, SEEK_SET) != 0 || fread(hdr, 1, 72, f) != 72 ||
            memcmp(hdr, "HTCK", 4) != 0)
            break;
        uint64_t kind = le(hdr + 6, 2), size = le(hdr + 56, 4);
        if (kind == 3) {
            uint8_t *pl = malloc(size + 1);
            if (pl == NULL || fread(pl, 1, size, f) != size) {
                free(pl);
                break;
            }
            const uint8_t *p = pl + 1, *end = pl + size;
            uint64_t ts, n, v[4];
            *events = *lost = 0;
            if (size > 0 && pl[0] == 0x10 && varint(&p, end, &ts) && varint(&p, end, &n)) {
                found = true;
                for (uint64_t i = 0; i < n && found; i++) {
                    for (int k = 0; k < 4 && found; k++)
                        found = varint(&p, end, &v[k]);
                    *events += v[1];
                    *lost += v[2];
                }
            }
            free(pl);
            break;
        }
        off += 72 + (long)size;
    }
out:
    fclose(f);
    return found;
}

static uint64_t g_size = UINT64_MAX; /* --size */
static uint64_t g_slack;             /* --slack */

static int check_file(const char *path, bool allow_incomplete)
{
    ht_reader *r;
    ht_reader_status_code st = ht_reader_open(path, &r);
    if (st != HT_READER_OK) {
        printf("file=%s open=%s\n", path, ht_reader_status_name[st]);
        return 1;
    }
    live_map m = {calloc(1024, sizeof(slot)), 1024, 0};
    uint64_t n = 0, n_alloc = 0, n_free = 0, n_realloc = 0, n_invalid = 0, n_rundown = 0;
    uint64_t unmatched = 0, twice = 0, other = 0, live_bytes = 0, peak = 0;
    uint64_t n_size = 0, n_stack = 0;
    ht_reader_event re;
    while (ht_reader_next(r, &re)) {
        const ht_event *e = &re.event;
        n++;
        if (e->flags & HT_EVENT_RUNDOWN)
            n_rundown++;
        if (re.stack_id != 0)
            n_stack++;
        if ((e->type == HT_EVENT_HEAP_ALLOC && e->alloc.size == g_size) ||
            (e->type == HT_EVENT_HEAP_REALLOC && e->realloc.new_size == g_size))
            n_size++;
        switch (e->type) {
        case HT_EVENT_HEAP_ALLOC:
            n_alloc++;
            if (e->alloc.source == HT_SOURCE_INVALID) {
                n_invalid++;
                break;
            }
            if (map_find(&m, e->heap_handle, e->alloc.address) != NULL) {
                twice++;
                break;
            }
            map_put(&m, e->heap_handle, e->alloc.address, e->alloc.size);
            live_bytes += e->alloc.size;
            break;
        case HT_EVENT_HEAP_FREE: {
            n_free++;
            if (e->free.source == HT_SOURCE_INVALID) {
                n_invalid++;
                break;
            }
            slot *s = map_find(&m, e->heap_handle, e->free.address);
            if (s == NULL) {
                unmatched++;
                break;
            }
            live_bytes -= s->size;
            map_del(&m, s);
            break;
        }
        case HT_EVENT_HEAP_REALLOC: {
            n_realloc++;
            if (e->realloc.source == HT_SOURCE_INVALID) {
                n_invalid++;
                break;
            }
            slot *s = map_find(&m, e->heap_handle, e->realloc.old_address);
            if (s == NULL) {
                unmatched++;
            } else {
                live_bytes -= s->size;
                map_del(&m, s);
            }
            if (map_find(&m, e->heap_handle, e->realloc.new_address) != NULL) {
                twice++;
                break;
            }
            map_put(&m, e->heap_handle, e->realloc.new_address, e->realloc.new_size);
            live_bytes += e->realloc.new_size;
            break;
        }
        case HT_EVENT_HEAP_DESTROY:
            for (size_t i = 0; i < m.cap; i++)
                if (m.s[i].addr != 0 && m.s[i].heap == e->heap_handle) {
                    live_bytes -= m.s[i].size;
                    map_del(&m, &m.s[i]);
                    i--; /* a later entry may have moved here */
                }
            other++;
            break;
        default:
            other++;
            break;
        }
        if (live_bytes > peak)
            peak = live_bytes;
    }
    ht_reader_trace_info info;
    ht_reader_info(r, &info);
    const char *msg = NULL;
    st = ht_reader_status(r, NULL, &msg);
    uint64_t s_events = 0, s_lost = 0;
    bool have_summary = summary_read(path, &s_events, &s_lost);
    int bad = 0;
    const char *why = "";
    if (n != info.n_events) {
        bad = 1;
        why = "events read differ from the reader's total";
    } else if (info.complete && (!have_summary || s_events != n || s_lost != info.n_lost)) {
        bad = 1;
        why = "events or lost differ from the end summary";
    } else if (!info.complete && !allow_incomplete) {
        bad = 1;
        why = "no end summary";
    } else if (st != HT_READER_OK && !(st == HT_READER_TRUNCATED && allow_incomplete)) {
        bad = 1;
        why = msg != NULL ? msg : "reader status";
    } else if (unmatched + twice > info.n_lost + g_slack) {
        bad = 1;
        why = "frees of unknown blocks or blocks allocated twice beyond the lost count";
    }
    printf("file=%s pid=%u status=%s complete=%d events=%llu lost=%llu summary_events=%llu "
           "allocs=%llu frees=%llu reallocs=%llu invalid=%llu rundown=%llu other=%llu "
           "unmatched=%llu twice=%llu live_blocks=%zu live_bytes=%llu peak_bytes=%llu "
           "threads=%llu stacks=%llu size_count=%llu ok=%d%s%s\n",
           path, info.pid, ht_reader_status_name[st], info.complete ? 1 : 0, (unsigned long long)n,
           (unsigned long long)info.n_lost, (unsigned long long)s_events,
           (unsigned long long)n_alloc, (unsigned long long)n_free, (unsigned long long)n_realloc,
           (unsigned long long)n_invalid, (unsigned long long)n_rundown, (unsigned long long)other,
           (unsigned long long)unmatched, (unsigned long long)twice, m.n,
           (unsigned long long)live_bytes, (unsigned long long)peak,
           (unsigned long long)info.n_threads, (unsigned long long)n_stack,
           (unsigned long long)n_size, !bad, bad ? " why=" : "", why);
    free(m.s);
    ht_reader_close(r);
    return bad;
}

int main(int argc, char **argv)
{
    bool allow_incomplete = false;
    int i = 1, bad = 0;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--allow-incomplete") == 0)
            allow_incomplete = true;
        else if (strcmp(argv[i], "--size") == 0 && i + 1 < argc)
            g_size = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--slack") == 0 && i + 1 < argc)
            g_slack = strtoull(argv[++i], NULL, 10);
        else
            break;
    }
    if (i >= argc) {
        fprintf(stderr, "usage: trace_check [--allow-incomplete] [--size N] [--slack N] FILE...\n");
        return 2;
    }
    for (; i < argc; i++)
        bad |= check_file(argv[i], allow_incomplete);
    return bad;
}
