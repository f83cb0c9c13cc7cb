/* prog_forkstorm.c — fork while four threads allocate and free without pause: argv[1]
 * children (default 20), each allocating, some forking a grandchild of their own, all ending
 * with exit(). The children check their blocks; the parent prints "forkstorm ok N" with the
 * number of children that exited 0. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static atomic_int stop;

static void *churn(void *arg)
{
    unsigned seed = (unsigned)(size_t)arg;
    void *ring[32] = {0};
    for (unsigned i = 0; !atomic_load(&stop); i++) {
        unsigned k = i % 32;
        free(ring[k]);
        ring[k] = malloc(1 + (size_t)(rand_r(&seed) % 3000));
    }
    for (unsigned k = 0; k < 32; k++)
        free(ring[k]);
    return NULL;
}

static int child_work(int depth)
{
    char *blocks[50];
    for (int i = 0; i < 50; i++) {
        blocks[i] = malloc(100 + (size_t)i * 37);
        memset(blocks[i], i, 100 + (size_t)i * 37);
    }
    int ok = 1;
    for (int i = 0; i < 50; i++) {
        ok &= blocks[i][99] == (char)i;
        free(blocks[i]);
    }
    if (depth == 0 && ok) {
        pid_t g = fork();
        if (g == 0)
            exit(child_work(1));
        int st;
        ok = g > 0 && waitpid(g, &st, 0) == g && WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 20;
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, churn, (void *)(size_t)(i + 1));
    int good = 0;
    for (int i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid == 0)
            exit(child_work(i % 2));
        int st;
        if (pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0)
            good++;
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    printf("forkstorm ok %d\n", good);
    return good == n ? 0 : 1;
}
