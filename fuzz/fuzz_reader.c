/* fuzz_reader.c — libFuzzer target for the trace reader: every input is read through
 * ht_reader_open_memory as is (exercises the header and checksum checks) and with every chunk
 * checksum recomputed (so mutations reach the record decoders), the latter both with
 * ht_reader_next and with ht_reader_next_batch (batch sizes from the input's size), which
 * must agree on every event and on the status, and once more with every chunk of more than a
 * few events decoded in pieces (src/reader/merge.c; the piece size, the varint decoder and
 * the window merge on or off from the input's size), which must agree with them too. The same entry
 * point replays fuzz/corpus/reader/ in ordinary ctest runs (tests/test_fuzz_replay_reader.c).
 * Must never trust the input, and must stay deterministic (no time, no global state). */
#include <heaptrail/reader.h>

#include "reader/internal.h" /* ht__rd_piece_events */
#include "trace/format.h"
#include "../tests/trace_build.h" /* tb_fix_file_checksums */

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads the whole input (batch 0: ht_reader_next, else ht_reader_next_batch with at most
 * batch events per call); returns a digest of the events and the status, 0 when the open
 * failed. */
static uint64_t read_all(const uint8_t *data, size_t size, size_t batch)
{
    ht_reader *r = NULL;
    if (ht_reader_open_memory(data, size, &r) != HT_READER_OK)
        return 0;
    ht_reader_event ev;
    uint64_t n = 0, sum = 0;
    const ht_reader_event *ptr[300];
    size_t k = 0, pos = 0;
    while (n < 10000000) {
        if (batch == 0) {
            if (!ht_reader_next(r, &ev))
                break;
        } else {
            if (pos == k) {
                k = ht_reader_next_batch(r, ptr, batch);
                pos = 0;
                if (k == 0)
                    break;
                if (k > batch)
                    abort();
            }
            ev = *ptr[pos++];
        }
        sum = sum * 31 + (ev.event.timestamp_ns ^ ev.event.heap_handle ^ ev.event.sequence ^
                          ev.event.alloc.address ^ ev.event.tid ^ ev.event.type);
        if (ev.stack_id != 0) {
            const uint64_t *frames;
            size_t n_frames;
            if (!ht_reader_stack(r, ev.stack_id, &frames, &n_frames) || n_frames == 0)
                abort(); /* the reader promised the stack was defined */
            sum += frames[n_frames - 1];
        }
        n++;
    }
    uint64_t digest = sum ^ n << 40;
    const ht_reader_module *mods;
    size_t n_mods;
    ht_reader_modules(r, &mods, &n_mods);
    for (size_t i = 0; i < n_mods; i++)
        sum += strlen(mods[i].path) + mods[i].build_id_size;
    const ht_reader_marker *mk;
    size_t n_mk;
    ht_reader_markers(r, &mk, &n_mk);
    for (size_t i = 0; i < n_mk; i++)
        sum += strlen(mk[i].text);
    ht_reader_trace_info info;
    ht_reader_info(r, &info);
    uint64_t off;
    const char *msg;
    ht_reader_status_code st = ht_reader_status(r, &off, &msg);
    if (st >= HT_READER_N_STATUS || msg == NULL || (st != HT_READER_OK && off > size) ||
        info.valid_size > size || info.n_events < n)
        abort();
    ht_reader_close(r);
    return (digest ^ ((uint64_t)st << 56) ^ off) | 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    read_all(data, size, 0);
    uint8_t *copy = malloc(size + 1);
    if (copy == NULL)
        return 0;
    if (size > 0)
        memcpy(copy, data, size);
    tb_fix_file_checksums(copy, size);
    uint64_t whole = read_all(copy, size, 0);
    if (whole != read_all(copy, size, 1 + size % 300))
        abort(); /* the batch read must give the same events and status */
    /* the pieces read also takes, by the input's size, the shift-based varint decoder (a CPU
     * with fast pext never does otherwise) and the merges without the window */
    int pext = atomic_load(&ht__rd_pext), window = atomic_load(&ht__rd_window);
    if ((size >> 3) & 1)
        atomic_store(&ht__rd_pext, 0);
    if ((size >> 4) & 1)
        atomic_store(&ht__rd_window, 0);
    atomic_store(&ht__rd_piece_events, 1 + (uint32_t)(size % 7));
    uint64_t pieces = read_all(copy, size, 1 + size % 300);
    atomic_store(&ht__rd_piece_events, 0);
    atomic_store(&ht__rd_pext, pext);
    atomic_store(&ht__rd_window, window);
    if (pieces != whole)
        abort(); /* and so must the read in pieces */
    /* and the read whose cursors load their next chunk early, from 2 threads (else only from
     * 32, which an input here rarely has) */
    size_t early = atomic_load(&ht__rd_early_threads);
    atomic_store(&ht__rd_early_threads, 2);
    uint64_t early_read = read_all(copy, size, 1 + size % 300);
    atomic_store(&ht__rd_early_threads, early);
    if (early_read != whole)
        abort();
    free(copy);
    return 0;
}
