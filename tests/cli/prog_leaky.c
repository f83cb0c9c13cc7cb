/* prog_leaky.c — a plain program (no heaptrail library: it runs under `heaptrail record`) with
 * a known pattern for test_record_report.sh: 7 blocks of 333 bytes leaked in leak_here, 50
 * temporaries in churn_here, one double free in free_twice, and one block each through
 * posix_memalign (align_here) and realloc (grow_here), whose shim functions keep a frame. Each
 * marked call is one statement on one line, marked SITE:<name>. Built -O0 -g with frame pointers
 * (CMakeLists.txt). */
#include <stdio.h>
#include <stdlib.h>

static void *keep[7];

static void leak_here(int i)
{
    keep[i] = malloc(333); /* SITE:leak_here */
}

static void churn_here(void)
{
    for (int i = 0; i < 50; i++) {
        char *p = malloc(40); /* SITE:churn_here */
        p[0] = (char)i;
        free(p);
    }
}

static void align_here(void)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, 100) == 0) /* SITE:align_here */
        free(p);
}

static void grow_here(void)
{
    char *p = malloc(10);
    char *q = realloc(p, 5000); /* SITE:grow_here */
    free(q != NULL ? q : p);
}

static void free_twice(void)
{
    void *p = malloc(24);
    free(p);
    free(p); /* SITE:free_twice */
}

int main(void)
{
    for (int i = 0; i < 7; i++)
        leak_here(i);
    churn_here();
    align_here();
    grow_here();
    free_twice();
    printf("leaky done %p\n", keep[0] != NULL ? (void *)keep : NULL);
    return 0;
}
