/* fuzz_cfi.c — libFuzzer target for the own unwinder's .eh_frame_hdr / .eh_frame parser
 * (src/trace/cfi.c). An input is: 2 bytes (little-endian) of header size h, then h bytes of
 * .eh_frame_hdr, then the .eh_frame bytes; the header is placed at address 0x10000 and
 * .eh_frame right after it (as a linker lays them out), and ht__cfi_find runs for pcs
 * taken from the header's own table and around them. Each buffer is copied to an exact-size
 * allocation so that ASan sees any read past it. The same entry point replays
 * fuzz/corpus/cfi/ in ordinary ctest runs (tests/test_fuzz_replay_cfi.c). Deterministic. */
#include "trace/cfi.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_HDR_ADDR 0x10000u

/* Lookups that found a complete rule (the replay test checks that the seeds get there). */
static unsigned long fuzz_cfi_n_ok;

static void probe(const ht_cfi_image *img, uint64_t pc)
{
    ht_cfi_rule rule;
    ht_cfi_status st = ht__cfi_find(img, pc, &rule);
    uint64_t w = ht__cfi_encode((uintptr_t)pc + 1, st, &rule);
    if (st == HT_CFI_OK && w != 0 && HT_CFI_W_KIND(w) == HT_CFI_W_NORMAL &&
        (rule.cfa_off < 8 || rule.ra_off != -8))
        abort(); /* the encoder let through a rule the walker must not get */
    fuzz_cfi_n_ok += st == HT_CFI_OK;
    (void)ht__cfi_status_name(st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t h = (size_t)data[0] | (size_t)data[1] << 8;
    if (h > size - 2)
        h = size - 2;
    size_t e = size - 2 - h;
    uint8_t *hdr = malloc(h != 0 ? h : 1), *eh = malloc(e != 0 ? e : 1);
    if (hdr == NULL || eh == NULL) {
        free(hdr);
        free(eh);
        return 0;
    }
    memcpy(hdr, data + 2, h);
    memcpy(eh, data + 2 + h, e);
    ht_cfi_image img = {hdr, h, FUZZ_HDR_ADDR, eh, e, FUZZ_HDR_ADDR + h};
    /* pcs: each table entry's start and a few bytes after it, plus fixed ones */
    probe(&img, 0);
    probe(&img, FUZZ_HDR_ADDR);
    probe(&img, UINT64_MAX);
    if (h >= 12) {
        size_t n = (h - 12) / 8;
        for (size_t i = 0; i < n && i < 64; i++) {
            int32_t s;
            memcpy(&s, hdr + 12 + 8 * i, 4);
            uint64_t pc = FUZZ_HDR_ADDR + (uint64_t)(int64_t)s;
            probe(&img, pc);
            probe(&img, pc + 1);
            probe(&img, pc + 7);
            probe(&img, pc + 100);
        }
    }
    free(hdr);
    free(eh);
    return 0;
}
