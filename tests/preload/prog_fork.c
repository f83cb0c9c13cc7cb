/* prog_fork.c — fork without exec while a second thread allocates: parent and child keep
 * allocating; the child makes 77 blocks of 4321 bytes, the parent 55 of 4322 (sizes a test
 * can count in each trace), then the child exits with exit() and the parent waits. Prints the
 * child's pid ("child=PID") and "fork ok". */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile int stop;

static void *churn(void *arg)
{
    (void)arg;
    while (!stop) {
        void *p = malloc(64);
        free(p);
    }
    return NULL;
}

static void blocks(int n, size_t size)
{
    void *keep[100];
    for (int i = 0; i < n; i++) {
        keep[i] = malloc(size);
        memset(keep[i], 1, size);
    }
    for (int i = 0; i < n; i++)
        free(keep[i]);
}

int main(void)
{
    pthread_t t;
    pthread_create(&t, NULL, churn, NULL);
    void *before = malloc(1000); /* inherited by the child: its trace's rundown lists it */
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return 1;
    if (pid == 0) {
        blocks(77, 4321);
        free(before);
        printf("child done\n");
        exit(0);
    }
    blocks(55, 4322);
    int status;
    waitpid(pid, &status, 0);
    stop = 1;
    pthread_join(t, NULL);
    free(before);
    printf("child=%d\nfork ok %d\n", (int)pid, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return 0;
}
