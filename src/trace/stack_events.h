/* stack_events.h — the names of ht_trace_config.stack_events: a list of event names
 * (create, alloc, realloc, destroy, free, expand, contract, or all) separated by ',' or '+',
 * as HEAPTRAIL_STACK_EVENTS and `heaptrail record --stack-events` take it. Header-only: the
 * preload library parses it at load time (no malloc), the CLI checks it before it runs
 * anything. */
#ifndef HT_TRACE_STACK_EVENTS_H
#define HT_TRACE_STACK_EVENTS_H

#include <heaptrail.h>

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#define HT_STACK_EVENT_NAMES "create, alloc, realloc, destroy, free, expand, contract, all"

/* Parses s into HT_TRACE_STACK bits (never 0 on success); false for an empty list, an empty
 * or unknown name. */
static inline bool ht__stack_events_parse(const char *s, unsigned *out)
{
    static const struct {
        const char *name;
        unsigned bits;
    } names[] = {
        {"create", HT_TRACE_STACK(HT_EVENT_HEAP_CREATE)},
        {"alloc", HT_TRACE_STACK(HT_EVENT_HEAP_ALLOC)},
        {"realloc", HT_TRACE_STACK(HT_EVENT_HEAP_REALLOC)},
        {"destroy", HT_TRACE_STACK(HT_EVENT_HEAP_DESTROY)},
        {"free", HT_TRACE_STACK(HT_EVENT_HEAP_FREE)},
        {"expand", HT_TRACE_STACK(HT_EVENT_HEAP_EXPAND)},
        {"contract", HT_TRACE_STACK(HT_EVENT_HEAP_CONTRACT)},
        {"all", HT_TRACE_STACK_ALL},
    };
    unsigned bits = 0;
    for (;;) {
        size_t n = strcspn(s, ",+");
        size_t i = 0;
        while (i < sizeof names / sizeof names[0] &&
               !(strlen(names[i].name) == n && strncmp(names[i].name, s, n) == 0))
            i++;
        if (n == 0 || i == sizeof names / sizeof names[0])
            return false;
        bits |= names[i].bits;
        if (s[n] == '\0')
            break;
        s += n + 1;
    }
    *out = bits;
    return true;
}

#endif
