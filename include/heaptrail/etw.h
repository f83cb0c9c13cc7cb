/* heaptrail/etw.h — the Windows ETW heap-event names, verbatim, for people porting ETW code.
 * The structs carry the fields of the ETW events; heaptrail's own event is ht_event. */
#ifndef HEAPTRAIL_ETW_H
#define HEAPTRAIL_ETW_H

#include <stdint.h>

#define MEMORY_FROM_LOOKASIDE    1
#define MEMORY_FROM_LOWFRAG      2
#define MEMORY_FROM_MAINPATH     3
#define MEMORY_FROM_SLOWPATH     4
#define MEMORY_FROM_INVALID      5
#define MEMORY_FROM_SEGMENT_HEAP 6 /* reserved for future use; never emitted */

typedef struct ETW_HEAP_EVENT_ALLOC {
    uintptr_t HeapHandle;
    uint64_t Size;
    uintptr_t Address;
    uint32_t Source;
} ETW_HEAP_EVENT_ALLOC;

typedef struct ETW_HEAP_EVENT_FREE {
    uintptr_t HeapHandle;
    uintptr_t Address;
    uint32_t Source;
} ETW_HEAP_EVENT_FREE;

typedef struct ETW_HEAP_EVENT_REALLOC {
    uintptr_t HeapHandle;
    uintptr_t NewAddress;
    uintptr_t OldAddress;
    uint64_t NewSize;
    uint64_t OldSize;
    uint32_t Source;
} ETW_HEAP_EVENT_REALLOC;

#endif
