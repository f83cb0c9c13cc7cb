/* harness.h — the tiny test harness every C test uses: CHECK records a failure and goes on,
 * REQUIRE returns from the test, TEST_MAIN runs the listed tests and ends with the plain
 * closing line "N passed, N failed" that CI reads. Single-threaded bookkeeping: call CHECK
 * from the main thread (threads report through their own counters). */
#ifndef HT_TEST_HARNESS_H
#define HT_TEST_HARNESS_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int harness_failures_ = 0; /* failures in the current test */

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
            harness_failures_++;                                                                   \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_U(a, b)                                                                           \
    do {                                                                                           \
        uint64_t ha_ = (uint64_t)(a), hb_ = (uint64_t)(b);                                         \
        if (ha_ != hb_) {                                                                          \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%" PRIu64 " != %" PRIu64 ")\n",        \
                    __FILE__, __LINE__, #a, #b, ha_, hb_);                                         \
            harness_failures_++;                                                                   \
        }                                                                                          \
    } while (0)

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond);             \
            harness_failures_++;                                                                   \
            return;                                                                                \
        }                                                                                          \
    } while (0)

typedef struct harness_test {
    const char *name;
    void (*fn)(void);
} harness_test;

#define TEST(name)                                                                                 \
    {                                                                                              \
#name, name                                                                                \
    }

static inline int harness_run(const harness_test *tests, size_t n, int argc, char **argv)
{
    int passed = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        if (argc > 1 && strstr(tests[i].name, argv[1]) == NULL)
            continue;
        harness_failures_ = 0;
        tests[i].fn();
        if (harness_failures_ == 0) {
            passed++;
            printf("ok   %s\n", tests[i].name);
        } else {
            failed++;
            printf("FAIL %s (%d checks)\n", tests[i].name, harness_failures_);
        }
        fflush(stdout);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}

#define TEST_MAIN(...)                                                                             \
    int main(int argc, char **argv)                                                                \
    {                                                                                              \
        static const harness_test tests_[] = {__VA_ARGS__};                                        \
        return harness_run(tests_, sizeof tests_ / sizeof tests_[0], argc, argv);                  \
    }

#endif
