/* test_fuzz_replay_report.c — replays every file of fuzz/corpus/report/ through the report
 * fuzzer's entry point (fuzz/fuzz_report.c), as an ordinary gcc-built ctest (label
 * fuzz-regression), so that inputs that once crashed stay fixed. Reads only the corpus. */
#include "harness.h"

#include "../fuzz/fuzz_report.c"

#include <dirent.h>

#ifndef HT_FUZZ_CORPUS_DIR
#define HT_FUZZ_CORPUS_DIR "fuzz/corpus"
#endif

static void test_replay_corpus(void)
{
    const char *dir_path = HT_FUZZ_CORPUS_DIR "/report";
    DIR *dir = opendir(dir_path);
    REQUIRE(dir != NULL);
    size_t n_files = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char path[4096];
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
    printf("replayed %zu corpus files\n", n_files);
    CHECK(n_files >= 5);
}

TEST_MAIN(TEST(test_replay_corpus))
