/* test_fuzz_replay_reader.c — replays every file of fuzz/corpus/reader/ through the reader
 * fuzzer's entry point (fuzz/fuzz_reader.c), as an ordinary gcc-built ctest (label
 * fuzz-regression), so that inputs that once crashed stay fixed. Reads only the corpus. */
#include "../fuzz/fuzz_reader.c"
#include "fuzz_replay.h"

static void test_replay_corpus(void)
{
    fuzz_replay_corpus("reader", 5);
}

TEST_MAIN(TEST(test_replay_corpus))
