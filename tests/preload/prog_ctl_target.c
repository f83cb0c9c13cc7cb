/* prog_ctl_target.c — a long-running program for the `heaptrail ctl` test: reads commands
 * from stdin, one per line, and answers each on stdout:
 *   alloc N SIZE   allocates N blocks of SIZE bytes and keeps them ("ok N")
 *   free           frees every kept block ("ok freed N")
 *   exit           exits 0
 * Starts with "ready PID". Plain malloc/free: it runs on whatever malloc is preloaded. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_KEPT 100000

static void *kept[MAX_KEPT];
static size_t n_kept;

int main(void)
{
    char line[256];
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready %d\n", (int)getpid());
    while (fgets(line, sizeof line, stdin) != NULL) {
        unsigned long n, size;
        if (sscanf(line, "alloc %lu %lu", &n, &size) == 2) {
            for (unsigned long i = 0; i < n && n_kept < MAX_KEPT; i++) {
                char *p = malloc(size);
                if (p == NULL)
                    return 1;
                memset(p, 0x5a, size);
                kept[n_kept++] = p;
            }
            printf("ok %zu\n", n_kept);
        } else if (strncmp(line, "free", 4) == 0) {
            size_t n_freed = n_kept;
            while (n_kept > 0)
                free(kept[--n_kept]);
            printf("ok freed %zu\n", n_freed);
        } else if (strncmp(line, "exit", 4) == 0) {
            return 0;
        } else {
            printf("error %s", line);
        }
    }
    return 0;
}
