/* prog_churn.c — allocates and frees without end; after argv[1] operations it prints
 * "ready" (so a test can kill it mid-trace) and keeps going. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    long ready = argc > 1 ? atol(argv[1]) : 100000;
    void *keep[64] = {0};
    for (long i = 0;; i++) {
        unsigned k = (unsigned)i % 64;
        free(keep[k]);
        keep[k] = malloc(16 + (size_t)(i % 512));
        if (i == ready) {
            printf("ready\n");
            fflush(stdout);
        }
    }
}
