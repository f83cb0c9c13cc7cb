/* fuzz_replay.h — the one replay loop of the fuzz-regression tests: every file of
 * HT_FUZZ_CORPUS_DIR/<target>/ goes through the fuzzer's LLVMFuzzerTestOneInput (the file
 * that includes this one also includes the fuzzer's source), as an ordinary gcc-built ctest,
 * so that inputs that once crashed stay fixed. Reads only the corpus. */
#ifndef HT_TESTS_FUZZ_REPLAY_H
#define HT_TESTS_FUZZ_REPLAY_H

#include "harness.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef HT_FUZZ_CORPUS_DIR
#define HT_FUZZ_CORPUS_DIR "fuzz/corpus"
#endif

/* Replays every file of HT_FUZZ_CORPUS_DIR/target; checks that at least min_files were there. */
static void fuzz_replay_corpus(const char *target, size_t min_files)
{
    char dir_path[4096];
    snprintf(dir_path, sizeof dir_path, "%s/%s", HT_FUZZ_CORPUS_DIR, target);
    DIR *dir = opendir(dir_path);
    REQUIRE(dir != NULL);
    size_t n_files = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir_path, de->d_name);
        FILE *f = fopen(path, "rb");
        if (f == NULL)
            continue;
        uint8_t *buf = NULL;
        size_t size = 0, cap = 0, k;
        uint8_t tmp[65536];
        while ((k = fread(tmp, 1, sizeof tmp, f)) > 0) {
            if (size + k > cap) {
                cap = (size + k) * 2;
                buf = realloc(buf, cap);
                REQUIRE(buf != NULL);
            }
            memcpy(buf + size, tmp, k);
            size += k;
        }
        fclose(f);
        LLVMFuzzerTestOneInput(buf != NULL ? buf : tmp, size);
        free(buf);
        n_files++;
    }
    closedir(dir);
    printf("replayed %zu corpus files of %s\n", n_files, target);
    CHECK(n_files >= min_files);
}

#endif
