/* early_lib.c — preloaded after heaptrail by test_programs.sh: its constructor allocates and
 * starts a thread that keeps allocating blocks of 7777 bytes, so a thread exists (and has
 * used the heap) before or while tracing starts; the destructor stops it. */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

static pthread_t g_thread;
static volatile int g_stop;

static void *run(void *arg)
{
    (void)arg;
    for (long n = 1; !g_stop; n++) {
        void *p = malloc(7777);
        free(p);
        if (n % 100 == 0)
            usleep(100);
    }
    return NULL;
}

__attribute__((constructor)) static void early_ctor(void)
{
    free(malloc(7777));
    pthread_create(&g_thread, NULL, run, NULL);
    usleep(5000);
}

__attribute__((destructor)) static void early_dtor(void)
{
    g_stop = 1;
    pthread_join(g_thread, NULL);
}
