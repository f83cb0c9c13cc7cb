/* test_fuzz_replay_report.c — replays every file of fuzz/corpus/report/ through the report
 * fuzzer's entry point (fuzz/fuzz_report.c), as an ordinary gcc-built ctest (label
 * fuzz-regression), so that inputs that once crashed stay fixed. Reads only the corpus. */
#include "../fuzz/fuzz_report.c"
#include "fuzz_replay.h"

static void test_replay_corpus(void)
{
    fuzz_replay_corpus("report", 5);
}

TEST_MAIN(TEST(test_replay_corpus))
