/* gen_corpus_reader.c — writes the reader fuzzer's seed corpus: a few small valid traces
 * (every event type, stacks, modules, markers, several threads, lost counts) and cut-off
 * copies of them. Run from the repository root:
 *   gcc -std=c17 -D_GNU_SOURCE -O1 -Iinclude -Isrc -Itests fuzz/gen_corpus_reader.c \
 *       src/trace/encode.c -o /tmp/gen && /tmp/gen fuzz/corpus/reader
 * Deterministic (fixed seeds): rerunning it rewrites the same files. Writes only there. */
#include "trace_build.h"

#include <stdio.h>

static void put_file(const char *dir, const char *name, const uint8_t *data, size_t size)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, size, f) != size) {
        perror(path);
        exit(1);
    }
    fclose(f);
}

/* One trace: n_threads threads of n events, optionally stacks and metadata. */
static void make(tb_trace *t, uint64_t seed, int n_threads, size_t n, bool stacks, size_t chunk)
{
    tb_init(t, (uint32_t)seed, "prog\0arg", 8, 1000, 2000);
    ht_enc_meta m;
    tb_meta_begin(t, &m, 2048);
    if (stacks) {
        uint64_t fr[4] = {0x401000, 0x401080, 0x7f0000002000, 0x400100};
        ht__enc_meta_stack(&m, 1, fr, 4);
        ht__enc_meta_stack(&m, 2, fr + 2, 2);
    }
    uint8_t bid[8] = {0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4};
    ht__enc_meta_module(&m, 1000, 0x400000, 0x8000, "/bin/prog", 9, bid, 8);
    ht__enc_meta_marker(&m, 1500, 1, "start", 5);
    tb_meta_end(t, &m);
    ht_event ev[400];
    uint32_t stk[400];
    ht_enc_thread_total tot[4];
    for (int th = 0; th < n_threads; th++) {
        ht_enc_stream s = {.tid = 10 + (uint32_t)th, .next_seq = 1, .lost_so_far = (uint64_t)th};
        tb_realistic(ev, n, s.tid, seed + (uint64_t)th, 1000, 0x7f0000100000ull);
        /* Sprinkle the rarer types and flags. */
        for (size_t i = 0; i + 4 < n; i += 37) {
            ev[i].type = HT_EVENT_HEAP_CREATE;
            ev[i].create.flags = 0x10000;
            ev[i].create.reserved_space = 1 << 20;
            ev[i].create.committed_space = 65536;
            ev[i].flags = HT_EVENT_RUNDOWN;
            ev[i + 1].type = HT_EVENT_HEAP_EXPAND;
            ev[i + 1].expand.address = 0x7f0000200000ull;
            ev[i + 1].expand.size = 4096;
            ev[i + 1].expand.committed_space = 69632;
            ev[i + 2].type = HT_EVENT_HEAP_CONTRACT;
            ev[i + 3].type = HT_EVENT_HEAP_DESTROY;
            ev[i + 3].heap_handle = 0x1234;
        }
        for (size_t i = 0; i < n; i++)
            stk[i] = stacks ? (uint32_t)(i % 3) : 0;
        tb_events(t, &s, ev, stacks ? stk : NULL, n, chunk);
        tot[th] = (ht_enc_thread_total){s.tid, s.n_events, s.lost_so_far, s.n_chunks};
    }
    tb_end(t, 1 << 20, tot, (size_t)n_threads);
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "fuzz/corpus/reader";
    struct {
        const char *name;
        uint64_t seed;
        int threads;
        size_t n;
        bool stacks;
        size_t chunk;
    } specs[] = {
        {"valid-1thread", 1, 1, 60, false, 256},
        {"valid-stacks", 2, 1, 80, true, 512},
        {"valid-3threads", 3, 3, 50, true, 300},
        {"valid-4threads-big-chunks", 4, 4, 120, false, 4096},
        /* the decoder's fast path with stacks, the window merge and the heap of 9+ threads */
        {"valid-9threads-stacks-big-chunks", 5, 9, 150, true, 2048},
    };
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        tb_trace t;
        make(&t, specs[i].seed, specs[i].threads, specs[i].n, specs[i].stacks, specs[i].chunk);
        put_file(dir, specs[i].name, t.data, t.size);
        if (i == 2) { /* cut-off copies: mid header, mid chunk, at a chunk boundary */
            put_file(dir, "cut-in-file-header", t.data, 30);
            put_file(dir, "cut-mid-chunk", t.data, t.size / 2);
            put_file(dir, "cut-at-chunk-boundary", t.data, t.chunk_end[t.n_chunks / 2]);
            put_file(dir, "cut-before-end-chunk", t.data, t.chunk_end[t.n_chunks - 2]);
        }
        printf("%s: %zu bytes\n", specs[i].name, t.size);
        tb_free(&t);
    }
    return 0;
}
