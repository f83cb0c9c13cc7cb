/* symbolize_nopie.c — a non-PIE (ET_EXEC) helper for test_symbolize: prints its own module
 * entry as the recorder's scanner sees it and a return address taken in a known function with
 * the line of that call, one line: "base size build-id-hex address line". Built -no-pie. */
#include "trace/stack.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int g_done;

static void print_exe(ht_module_change change, const ht_module *m, void *ctx)
{
    if (change != HT_MODULE_LOAD || g_done++)
        return; /* the first module is the executable */
    printf("%llx %llx ", (unsigned long long)m->base, (unsigned long long)m->size);
    for (size_t i = 0; i < m->build_id_size; i++)
        printf("%02x", m->build_id[i]);
    printf(" %s\n", (const char *)ctx);
}

__attribute__((noinline)) static uint64_t nopie_return_address(void)
{
    return (uint64_t)(uintptr_t)__builtin_return_address(0);
}

__attribute__((noinline)) static uint64_t nopie_caller(unsigned *line)
{
    return *line = __LINE__, nopie_return_address(); /* the line of the call */
}

int main(void)
{
    unsigned line = 0;
    uint64_t a = nopie_caller(&line);
    char tail[64];
    snprintf(tail, sizeof tail, "%llx %u", (unsigned long long)a, line);
    if (ht__modules_snapshot(print_exe, tail) <= 0)
        return 1;
    ht__modules_fini();
    return g_done ? 0 : 1;
}
