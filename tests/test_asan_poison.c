/* test_asan_poison.c — in ASan builds the heap poisons freed blocks, so a use after free of a
 * heaptrail block is reported by ASan (checked in forked children). In other builds there is
 * nothing to check and the test says so. */
#include "harness.h"

#include <heaptrail.h>

#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
/* Runs fn in a child; true iff the child died with ASan's report (non-zero exit). */
static bool child_reports(void (*fn)(void))
{
    pid_t pid = fork();
    if (pid == 0) {
        fn();
        _exit(0); /* not caught */
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static volatile char sink;

static void uaf(size_t size)
{
    ht_heap *h = ht_heap_create(0, 0, 0);
    char *p = ht_heap_alloc(h, 0, size);
    p[0] = 1;
    ht_heap_free(h, 0, p);
    sink = p[size / 2 + 8]; /* past the lookaside link word */
}

static void uaf_small(void)
{
    uaf(100);
}
static void uaf_medium(void)
{
    uaf(40000);
}
static void uaf_large(void)
{
    uaf(3u << 20);
}

static void reuse_is_clean(void)
{
    ht_heap *h = ht_heap_create(0, 0, 0);
    for (int i = 0; i < 1000; i++) {
        char *p = ht_heap_alloc(h, 0, (size_t)(i * 131) % 50000 + 1);
        p[0] = 1;
        p[ht_heap_usable_size(h, p) - 1] = 2; /* the usable size is writable */
        ht_heap_free(h, 0, p);
    }
}

static void use_after_free_is_reported(void)
{
    CHECK(child_reports(uaf_small));
    CHECK(child_reports(uaf_medium));
    CHECK(child_reports(uaf_large));
    CHECK(!child_reports(reuse_is_clean));
}
#else
static void use_after_free_is_reported(void)
{
    printf("skipped: not an ASan build\n");
}
#endif

TEST_MAIN(TEST(use_after_free_is_reported))
