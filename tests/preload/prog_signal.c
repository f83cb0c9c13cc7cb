/* prog_signal.c — allocates a little, then ends the way argv[1] says: "exit N" exits with N,
 * "signal N" raises signal N (with whatever handler is in place: heaptrail's crash handler
 * for the fatal ones when tracing, which then takes the default action). */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    void *p = malloc(100);
    free(p);
    if (argc > 2 && strcmp(argv[1], "signal") == 0) {
        raise(atoi(argv[2]));
    }
    return argc > 2 ? atoi(argv[2]) : 0;
}
