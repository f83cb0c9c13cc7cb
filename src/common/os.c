/* os.c — default implementations of the OS seam over Linux system calls, and aligned
 * reservation built on top of it. Never calls malloc; never prints. */
#include "common/os.h"
#include "common/thread_hot.h"

#include <errno.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static void *os_reserve(size_t size)
{
    void *p = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static bool os_commit(void *addr, size_t size)
{
    return mprotect(addr, size, PROT_READ | PROT_WRITE) == 0;
}

static bool os_decommit(void *addr, size_t size)
{
    return madvise(addr, size, MADV_DONTNEED) == 0;
}

static bool os_release(void *addr, size_t size)
{
    return munmap(addr, size) == 0;
}

static void *os_map_rw(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static uint64_t os_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static ssize_t os_write(int fd, const void *buf, size_t size)
{
    return write(fd, buf, size);
}

static const ht_os_ops os_defaults = {os_reserve, os_commit, os_decommit, os_release,
                                      os_map_rw,  os_now_ns, os_write};

ht_os_ops ht__os = {os_reserve, os_commit, os_decommit, os_release, os_map_rw, os_now_ns, os_write};

void ht__os_set_ops(const ht_os_ops *ops)
{
    ht__os = ops != NULL ? *ops : os_defaults;
}

void *ht__os_reserve_aligned(size_t size, size_t align)
{
    if (size + align < size)
        return NULL;
    uint8_t *p = ht__os.reserve(size + align);
    if (p == NULL)
        return NULL;
    uintptr_t start = ((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1);
    size_t head = start - (uintptr_t)p;
    size_t tail = align - head;
    if (head != 0)
        ht__os.release(p, head);
    if (tail != 0)
        ht__os.release((uint8_t *)start + size, tail);
    return (void *)start;
}

pid_t ht__os_gettid(void)
{
    return (pid_t)syscall(SYS_gettid);
}

__thread ht_thread_hot ht__thot __attribute__((tls_model("initial-exec"))) = {
    .tagcmp = HT_TAG_CMP_NONE,
};
