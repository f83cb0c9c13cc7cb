/* test_walk_cursor.c — ht_heap_walk refuses cursors it did not hand out (garbage, another
 * heap's, a cursor whose block went away) instead of following them. */
#include "harness.h"

#include <heaptrail.h>

#include <errno.h>

static void garbage_cursor_refused(void)
{
    ht_heap *h = ht_heap_create(0, 0, 0);
    REQUIRE(h != NULL);
    void *p = ht_heap_alloc(h, 0, 100);
    REQUIRE(p != NULL);
    ht_heap_entry e;
    memset(&e, 0, sizeof e);
    e.address = p; /* non-NULL: "continue", but the cursor was never filled */
    errno = 0;
    CHECK(!ht_heap_walk(h, &e));
    CHECK_EQ_U(errno, EINVAL);
    uint64_t seed = 12345;
    for (int i = 0; i < 10000; i++) {
        for (int k = 0; k < 4; k++) {
            seed = seed * 6364136223846793005u + 1442695040888963407u;
            e.cursor_[k] = (uintptr_t)(seed >> (k * 3));
        }
        e.address = (void *)(uintptr_t)(seed | 16);
        errno = 0;
        CHECK(!ht_heap_walk(h, &e));
    }
    CHECK(ht_heap_free(h, 0, p));
    CHECK(ht_heap_destroy(h));
}

static void other_heaps_cursor_refused(void)
{
    ht_heap *a = ht_heap_create(0, 0, 0), *b = ht_heap_create(0, 0, 0);
    REQUIRE(a != NULL && b != NULL);
    void *pa = ht_heap_alloc(a, 0, 64), *pb = ht_heap_alloc(b, 0, 64);
    ht_heap_entry e;
    e.address = NULL;
    REQUIRE(ht_heap_walk(a, &e));
    errno = 0;
    CHECK(!ht_heap_walk(b, &e));
    CHECK_EQ_U(errno, EINVAL);
    /* the same cursor still works on its own heap */
    CHECK(ht_heap_walk(a, &e) || errno == ENOENT);
    ht_heap_free(a, 0, pa);
    ht_heap_free(b, 0, pb);
    CHECK(ht_heap_destroy(a));
    CHECK(ht_heap_destroy(b));
}

static void full_walk_still_exact(void)
{
    ht_heap *h = ht_heap_create(0, 0, 0);
    REQUIRE(h != NULL);
    static void *ps[300];
    for (int i = 0; i < 300; i++)
        ps[i] = ht_heap_alloc(h, 0, (size_t)(i * 97) % 70000 + (i % 7 == 0 ? (1u << 20) : 0));
    size_t busy = 0;
    ht_heap_entry e;
    e.address = NULL;
    while (ht_heap_walk(h, &e))
        if (e.state & HT_ENTRY_BUSY)
            busy++;
    CHECK_EQ_U(errno, ENOENT);
    CHECK_EQ_U(busy, 300);
    for (int i = 0; i < 300; i++)
        CHECK(ht_heap_free(h, 0, ps[i]));
    CHECK(ht_heap_destroy(h));
}

TEST_MAIN(TEST(garbage_cursor_refused), TEST(other_heaps_cursor_refused),
          TEST(full_walk_still_exact))
