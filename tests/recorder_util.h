/* recorder_util.h — helpers shared by the recorder tests: a ground-truth consumer that keeps
 * the session's events in memory, reading a trace file back through the reader library,
 * event comparison and an order-independent event hash. Test code only (may malloc). */
#ifndef HT_TEST_RECORDER_UTIL_H
#define HT_TEST_RECORDER_UTIL_H

#include <heaptrail.h>
#include <heaptrail/reader.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "event_equal.h"

static inline int ru_event_equal(const ht_event *a, const ht_event *b)
{
    return ht_test_event_equal(a, b);
}

static inline uint64_t ru_mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    h *= 0xBF58476D1CE4E5B9ull;
    return h ^ (h >> 31);
}

/* A hash of every field the file carries (summed over events: order-independent). */
static inline uint64_t ru_event_hash(const ht_event *e)
{
    uint64_t h = ru_mix(0, e->timestamp_ns);
    h = ru_mix(h, e->tid);
    h = ru_mix(h, e->sequence);
    h = ru_mix(h, (uint64_t)e->type << 16 | e->flags);
    h = ru_mix(h, e->heap_handle);
    switch (e->type) {
    case HT_EVENT_HEAP_ALLOC:
        h = ru_mix(ru_mix(ru_mix(h, e->alloc.size), e->alloc.address), e->alloc.source);
        break;
    case HT_EVENT_HEAP_FREE:
        h = ru_mix(ru_mix(h, e->free.address), e->free.source);
        break;
    case HT_EVENT_HEAP_REALLOC:
        h = ru_mix(ru_mix(h, e->realloc.new_address), e->realloc.old_address);
        h = ru_mix(ru_mix(ru_mix(h, e->realloc.new_size), e->realloc.old_size), e->realloc.source);
        break;
    case HT_EVENT_HEAP_CREATE:
        h = ru_mix(ru_mix(ru_mix(h, e->create.flags), e->create.reserved_space),
                   e->create.committed_space);
        break;
    case HT_EVENT_HEAP_DESTROY:
        break;
    default:
        h = ru_mix(ru_mix(ru_mix(h, e->expand.address), e->expand.size), e->expand.committed_space);
        break;
    }
    return h;
}

/* The stack depth the recorder tests trace with: HT_TEST_STACK_DEPTH (CTest runs
 * test_recorder again with 8), else 0. */
static inline unsigned ru_stack_depth(void)
{
    const char *s = getenv("HT_TEST_STACK_DEPTH");
    return s != NULL ? (unsigned)atoi(s) : 0u;
}

/* Ground truth: every event the consumer saw, under a mutex. */
typedef struct ru_truth {
    pthread_mutex_t lock;
    ht_event *ev;
    size_t n, cap;
} ru_truth;

static inline void ru_truth_consumer(const ht_event *e, void *ctx)
{
    ru_truth *t = ctx;
    pthread_mutex_lock(&t->lock);
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 4096;
        t->ev = realloc(t->ev, t->cap * sizeof *t->ev);
    }
    t->ev[t->n++] = *e;
    pthread_mutex_unlock(&t->lock);
}

static inline void ru_truth_init(ru_truth *t)
{
    memset(t, 0, sizeof *t);
    pthread_mutex_init(&t->lock, NULL);
}

static inline void ru_truth_free(ru_truth *t)
{
    free(t->ev);
    pthread_mutex_destroy(&t->lock);
}

/* Every event of the file, in the reader's merged order. */
typedef struct ru_file {
    ht_event *ev;
    size_t n;
    ht_reader_trace_info info;
    ht_reader_status_code status;
    ht_reader_status_code open_status;
} ru_file;

static inline void ru_file_read(const char *path, ru_file *f)
{
    memset(f, 0, sizeof *f);
    ht_reader *r = NULL;
    f->open_status = ht_reader_open(path, &r);
    if (r == NULL)
        return;
    size_t cap = 0;
    ht_reader_event re;
    while (ht_reader_next(r, &re)) {
        if (f->n == cap) {
            cap = cap ? 2 * cap : 4096;
            f->ev = realloc(f->ev, cap * sizeof *f->ev);
        }
        f->ev[f->n++] = re.event;
    }
    ht_reader_info(r, &f->info);
    f->status = ht_reader_status(r, NULL, NULL);
    ht_reader_close(r);
}

static inline void ru_file_free(ru_file *f)
{
    free(f->ev);
}

static inline int ru_cmp_tid_seq(const void *a, const void *b)
{
    const ht_event *x = a, *y = b;
    if (x->tid != y->tid)
        return x->tid < y->tid ? -1 : 1;
    if (x->sequence != y->sequence)
        return x->sequence < y->sequence ? -1 : 1;
    return 0;
}

/* A fresh temporary path for this test (no file there). */
static inline void ru_path(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "/tmp/ht-rec-%d-%s.trace", (int)getpid(), name);
    unlink(buf);
}

#endif
