/* prog_churn.c — allocates and frees argv[1] times (blocks kept in a ring of 64, so frees
 * and allocations interleave), prints "ready", then waits to be killed. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 100000;
    void *keep[64] = {0};
    for (long i = 0; i < n; i++) {
        unsigned k = (unsigned)i % 64;
        free(keep[k]);
        keep[k] = malloc(16 + (size_t)(i % 512));
    }
    printf("ready\n");
    fflush(stdout);
    for (;;)
        pause();
}
