/* unwind_lib.c — a shared library that test_unwind_cfi dlopens: a recursion built without
 * frame pointers (some levels with alloca, so their CFA is rbp-based) that calls back into
 * the test at the bottom, so that a captured stack crosses this object's .eh_frame. Free of
 * heaptrail code and state. */
#include <alloca.h>
#include <string.h>

typedef unsigned (*ht_unwind_lib_fn)(void *arg);
unsigned ht_unwind_lib_recurse(unsigned depth, ht_unwind_lib_fn fn, void *arg);

__attribute__((noinline)) static unsigned lib_plain(unsigned depth, ht_unwind_lib_fn fn, void *arg)
{
    volatile unsigned pad[5] = {depth, 1, 2, 3, 4};
    unsigned r = ht_unwind_lib_recurse(depth - 1, fn, arg);
    return r + pad[depth % 5] * 0u;
}

__attribute__((noinline)) static unsigned lib_alloca(unsigned depth, ht_unwind_lib_fn fn, void *arg)
{
    char *buf = alloca(16 + depth * 24);
    memset(buf, (int)depth, 16 + depth * 24);
    __asm__ volatile("" : : "r"(buf) : "memory");
    unsigned r = ht_unwind_lib_recurse(depth - 1, fn, arg);
    return r + (unsigned)buf[3] * 0u;
}

__attribute__((noinline)) unsigned ht_unwind_lib_recurse(unsigned depth, ht_unwind_lib_fn fn,
                                                         void *arg)
{
    unsigned r;
    if (depth == 0)
        r = fn(arg);
    else if (depth % 3 == 0)
        r = lib_alloca(depth, fn, arg);
    else
        r = lib_plain(depth, fn, arg);
    __asm__ volatile("" : : "r"(r) : "memory");
    return r;
}
