/* symbolize_lib.c — a tiny shared library for test_symbolize: it returns a return address
 * taken inside a file-static function (so only the symbol table or DWARF can name it, not
 * .dynsym) and the line of that call. CMake also makes stripped copies and a separate debug
 * file of it (objcopy). Free of heaptrail code and state. */
#include <stdint.h>

uint64_t ht_symtest_where(unsigned *line);

__attribute__((noinline)) static uint64_t symtest_return_address(void)
{
    return (uint64_t)(uintptr_t)__builtin_return_address(0);
}

__attribute__((noinline)) static uint64_t symtest_static_caller(unsigned *line)
{
    return *line = __LINE__, symtest_return_address(); /* the line of the call */
}

uint64_t ht_symtest_where(unsigned *line)
{
    uint64_t a = symtest_static_caller(line);
    __asm__ volatile("" : : "r"(a) : "memory"); /* keep this frame: no sibling call */
    return a;
}
