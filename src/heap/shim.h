/* shim.h — the heap's entry points for the preload library: ht_heap_alloc and ht_heap_free
 * without the handle check, for a heap the caller knows is live (the process heap, which is
 * never destroyed). Same contract as the public functions otherwise (Sources, statistics,
 * events, exact invalid-pointer detection). */
#ifndef HT_HEAP_SHIM_H
#define HT_HEAP_SHIM_H

#include <heaptrail.h>

#include <stdbool.h>
#include <stddef.h>

/* ht_heap_alloc(heap, flags, size). */
void *ht__heap_alloc_known(ht_heap *heap, unsigned flags, size_t size);
/* ht_heap_free(heap, 0, block), except that errno is left as it was, also when block is
 * not a live block of heap (false, logged INVALID). */
bool ht__heap_free_keep_errno(ht_heap *heap, void *block);

#endif
