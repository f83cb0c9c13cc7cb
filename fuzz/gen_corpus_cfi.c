/* gen_corpus_cfi.c — writes the seed corpus of fuzz_cfi (fuzz/corpus/cfi/) from the unwind
 * tables of this very program (and of each shared object named on the command line, which
 * it dlopens): the header plus the bytes up to .eh_frame, then .eh_frame, in fuzz_cfi's input
 * layout; then cut and flipped copies so that the seeds reach the parser's error paths.
 *   gcc -D_GNU_SOURCE -O1 fuzz/gen_corpus_cfi.c -o /tmp/gen -ldl && \
 *       /tmp/gen fuzz/corpus/cfi build/dev/libunwind_test_lib.so */
#include <dlfcn.h>
#include <link.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *g_out;
static unsigned g_n;

static void put(const uint8_t *hdr, size_t h, const uint8_t *eh, size_t e)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/seed-%03u", g_out, g_n++);
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        perror(path);
        exit(1);
    }
    uint8_t len[2] = {(uint8_t)h, (uint8_t)(h >> 8)};
    fwrite(len, 1, 2, f);
    fwrite(hdr, 1, h, f);
    fwrite(eh, 1, e, f);
    fclose(f);
}

/* The object's [hdr, eh_frame) and [eh_frame, end of its PT_LOAD), when .eh_frame follows
 * the header within 64 KiB (what GNU ld and lld do). */
static int one(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    const char *want = arg;
    if (want != NULL ? strstr(info->dlpi_name, want) == NULL : info->dlpi_name[0] != '\0')
        return 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_GNU_EH_FRAME)
            continue;
        const uint8_t *hdr = (const uint8_t *)(info->dlpi_addr + ph->p_vaddr);
        if (hdr[0] != 1 || hdr[1] != 0x1b)
            return 1;
        int32_t rel;
        memcpy(&rel, hdr + 4, 4);
        const uint8_t *eh = hdr + 4 + rel;
        if (eh < hdr + ph->p_memsz || eh - hdr > 65535)
            return 1;
        size_t h = (size_t)(eh - hdr), e = 0;
        for (int j = 0; j < info->dlpi_phnum; j++) {
            const ElfW(Phdr) *l = &info->dlpi_phdr[j];
            uintptr_t a = info->dlpi_addr + l->p_vaddr;
            if (l->p_type == PT_LOAD && (uintptr_t)eh >= a && (uintptr_t)eh < a + l->p_filesz)
                e = a + l->p_filesz - (uintptr_t)eh;
        }
        if (e > 256 * 1024)
            e = 256 * 1024;
        put(hdr, h, eh, e);
        put(hdr, h, eh, e / 2);
        put(hdr, h / 2, eh, e);
        put(hdr, 11, eh, e);
        uint8_t *copy = malloc(h + e);
        for (unsigned k = 0; k < 6; k++) {
            memcpy(copy, hdr, h);
            memcpy(copy + h, eh, e);
            size_t at = h + (e * (k + 1)) / 8; /* a byte inside .eh_frame */
            copy[at] ^= (uint8_t)(0x5a + k);
            put(copy, h, copy + h, e);
        }
        free(copy);
        return 1;
    }
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: gen_corpus_cfi OUT_DIR [LIB.so ...]\n");
        return 2;
    }
    g_out = argv[1];
    dl_iterate_phdr(one, NULL);
    for (int i = 2; i < argc; i++) {
        if (dlopen(argv[i], RTLD_NOW) == NULL) {
            fprintf(stderr, "%s\n", dlerror());
            return 1;
        }
        const char *base = strrchr(argv[i], '/');
        dl_iterate_phdr(one, (void *)(base != NULL ? base + 1 : argv[i]));
    }
    uint8_t tiny[4] = {1, 0x1b, 3, 0x3b};
    put(tiny, 4, tiny, 0);
    printf("%u seeds in %s\n", g_n, g_out);
    return 0;
}
