/* prog_foreign.c — frees pointers heaptrail did not allocate: mmap'ed memory, a stack
 * address, an interior pointer, a double free; reallocs a foreign pointer. None may crash or
 * change the memory. Prints "foreign ok" and then exits 0. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* through a pointer the compiler cannot see through: these frees are the point of the test */
static void (*volatile release)(void *) = free;
static void *(*volatile resize)(void *, size_t) = realloc;

int main(void)
{
    char *m = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return 1;
    memset(m, 'm', 8192);
    release(m + 16); /* foreign: mmap'ed by the program */
    char stack[64] = "stack";
    release(stack + 16); /* foreign: the stack */
    char *p = malloc(100);
    strcpy(p, "live");
    release(p + 16); /* interior */
    errno = 0;
    void *r = resize(m + 32, 100); /* foreign realloc: NULL + EINVAL, untouched */
    int realloc_ok = r == NULL && errno == EINVAL;
    char *q = malloc(50);
    release(q);
    release(q); /* double free */
    int intact =
        m[16] == 'm' && m[8191] == 'm' && strcmp(p, "live") == 0 && strcmp(stack, "stack") == 0;
    free(p);
    printf("foreign %s\n", intact && realloc_ok ? "ok" : "BROKEN");
    return intact && realloc_ok ? 0 : 1;
}
