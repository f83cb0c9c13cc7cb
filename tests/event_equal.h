/* event_equal.h — field-by-field equality of two ht_event structs (every ETW field of the
 * type, timestamp, thread, flags, heap and sequence), shared by the tests that read traces
 * back. */
#ifndef HT_TEST_EVENT_EQUAL_H
#define HT_TEST_EVENT_EQUAL_H

#include <heaptrail.h>

static inline int ht_test_event_equal(const ht_event *a, const ht_event *b)
{
    if (a->timestamp_ns != b->timestamp_ns || a->tid != b->tid || a->type != b->type ||
        a->flags != b->flags || a->heap_handle != b->heap_handle || a->sequence != b->sequence)
        return 0;
    switch (a->type) {
    case HT_EVENT_HEAP_ALLOC:
        return a->alloc.size == b->alloc.size && a->alloc.address == b->alloc.address &&
               a->alloc.source == b->alloc.source;
    case HT_EVENT_HEAP_FREE:
        return a->free.address == b->free.address && a->free.source == b->free.source;
    case HT_EVENT_HEAP_REALLOC:
        return a->realloc.new_address == b->realloc.new_address &&
               a->realloc.old_address == b->realloc.old_address &&
               a->realloc.new_size == b->realloc.new_size &&
               a->realloc.old_size == b->realloc.old_size && a->realloc.source == b->realloc.source;
    case HT_EVENT_HEAP_CREATE:
        return a->create.flags == b->create.flags &&
               a->create.reserved_space == b->create.reserved_space &&
               a->create.committed_space == b->create.committed_space;
    case HT_EVENT_HEAP_DESTROY:
        return 1;
    default:
        return a->expand.address == b->expand.address && a->expand.size == b->expand.size &&
               a->expand.committed_space == b->expand.committed_space;
    }
}

#endif
