/* test_fuzz_replay_cfi.c — replays every file of fuzz/corpus/cfi/ through the CFI parser
 * fuzzer's entry point (fuzz/fuzz_cfi.c), as an ordinary gcc-built ctest (label
 * fuzz-regression), so that inputs that once crashed stay fixed. Reads only the corpus. */
#include "../fuzz/fuzz_cfi.c"
#include "fuzz_replay.h"

static void test_replay_corpus(void)
{
    fuzz_replay_corpus("cfi", 5);
    printf("%lu lookups found a rule\n", fuzz_cfi_n_ok);
    CHECK(fuzz_cfi_n_ok >= 20); /* the real tables among the seeds parse */
}

TEST_MAIN(TEST(test_replay_corpus))
