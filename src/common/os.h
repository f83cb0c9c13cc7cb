/* os.h — the OS seam: every mmap, mprotect, madvise, clock read, thread id and raw write in
 * heaptrail goes through here, so tests can inject failures (fail the Nth reserve, ...).
 * Nothing here allocates with malloc. */
#ifndef HT_COMMON_OS_H
#define HT_COMMON_OS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HT_PAGE_SIZE 4096u

typedef struct ht_os_ops {
    void *(*reserve)(size_t size);             /* PROT_NONE, NULL on failure */
    bool (*commit)(void *addr, size_t size);   /* make read/write */
    bool (*decommit)(void *addr, size_t size); /* give pages back, keep them usable */
    bool (*release)(void *addr, size_t size);  /* unmap */
    void *(*map_rw)(size_t size);              /* read/write anonymous, NULL on failure */
    uint64_t (*now_ns)(void);                  /* CLOCK_MONOTONIC */
    ssize_t (*write)(int fd, const void *buf, size_t size);
} ht_os_ops;

/* The table in force; tests may replace entries (ht__os_set_ops) before heaps exist. */
extern ht_os_ops ht__os;
void ht__os_set_ops(const ht_os_ops *ops); /* NULL restores the defaults */

/* Reserves size bytes aligned to align (a power of two >= page), PROT_NONE. */
void *ht__os_reserve_aligned(size_t size, size_t align);
pid_t ht__os_gettid(void);

#endif
