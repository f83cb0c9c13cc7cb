/* dl_lib.c — the library prog_dlopen loads (built by test_programs.sh): blocks of 5555 bytes
 * in its constructor and in dl_work, freed in dl_work and in its destructor. */
#include <stdlib.h>
#include <string.h>

static char *g_ctor_block;

__attribute__((constructor)) static void dl_ctor(void)
{
    g_ctor_block = malloc(5555);
    memset(g_ctor_block, 1, 5555);
}

__attribute__((destructor)) static void dl_dtor(void)
{
    free(g_ctor_block);
}

int dl_work(int n)
{
    int sum = 0;
    for (int i = 0; i < n; i++) {
        char *p = malloc(5555);
        p[0] = (char)i;
        sum += p[0];
        free(p);
    }
    return sum;
}
