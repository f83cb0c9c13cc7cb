/* prog_threads.c — threads that allocate and hand their blocks to other threads to free
 * (cross-thread frees), threads started at different times, some exiting while others work.
 * Each block is stamped and checked by the thread that frees it. Argument: blocks per thread.
 * Prints "threads ok N" with the number of blocks freed. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_PAIRS 4
#define RING    256

typedef struct ring {
    void *slot[RING];
    size_t size[RING];
    unsigned head, tail;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
} ring;

static ring rings[N_PAIRS];
static long n_blocks = 20000;
static long freed[N_PAIRS];

static void *producer(void *arg)
{
    ring *r = arg;
    unsigned seed = (unsigned)(r - rings) + 1;
    for (long i = 0; i < n_blocks; i++) {
        size_t size = 1 + (size_t)(rand_r(&seed) % (i % 100 == 0 ? 200000 : 600));
        unsigned char *p = malloc(size);
        if (p == NULL)
            abort();
        memset(p, (int)(size & 0xff), size);
        pthread_mutex_lock(&r->lock);
        while (r->head - r->tail == RING)
            pthread_cond_wait(&r->cond, &r->lock);
        r->slot[r->head % RING] = p;
        r->size[r->head % RING] = size;
        r->head++;
        pthread_cond_broadcast(&r->cond);
        pthread_mutex_unlock(&r->lock);
    }
    pthread_mutex_lock(&r->lock);
    r->done = 1;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

static void *consumer(void *arg)
{
    ring *r = arg;
    for (;;) {
        pthread_mutex_lock(&r->lock);
        while (r->head == r->tail && !r->done)
            pthread_cond_wait(&r->cond, &r->lock);
        if (r->head == r->tail && r->done) {
            pthread_mutex_unlock(&r->lock);
            return NULL;
        }
        unsigned char *p = r->slot[r->tail % RING];
        size_t size = r->size[r->tail % RING];
        r->tail++;
        pthread_cond_broadcast(&r->cond);
        pthread_mutex_unlock(&r->lock);
        if (p[0] != (unsigned char)(size & 0xff) || p[size - 1] != (unsigned char)(size & 0xff))
            abort();
        if (size % 3 == 0)
            p = realloc(p, size * 2);
        free(p);
        freed[r - rings]++;
    }
}

int main(int argc, char **argv)
{
    if (argc > 1)
        n_blocks = atol(argv[1]);
    pthread_t prod[N_PAIRS], cons[N_PAIRS];
    for (int i = 0; i < N_PAIRS; i++) {
        pthread_mutex_init(&rings[i].lock, NULL);
        pthread_cond_init(&rings[i].cond, NULL);
    }
    /* consumers first, producers later: threads of both kinds start while others work */
    for (int i = 0; i < N_PAIRS; i++)
        pthread_create(&cons[i], NULL, consumer, &rings[i]);
    for (int i = 0; i < N_PAIRS; i++) {
        pthread_create(&prod[i], NULL, producer, &rings[i]);
        if (i == 1)
            pthread_join(prod[0], NULL); /* one thread exits while the others run */
    }
    for (int i = 0; i < N_PAIRS; i++) {
        if (i != 0)
            pthread_join(prod[i], NULL);
        pthread_join(cons[i], NULL);
    }
    long total = 0;
    for (int i = 0; i < N_PAIRS; i++)
        total += freed[i];
    printf("threads ok %ld\n", total);
    return total == N_PAIRS * n_blocks ? 0 : 1;
}
