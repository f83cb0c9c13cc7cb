/* prog_api.c — the malloc contract as a preloaded heaptrail keeps it: every call of the family
 * once, its errno and alignment rules, and where the symbols come from. Prints one line per
 * check ("ok NAME" or "FAIL NAME") and exits 1 if any failed. Also prints how many threads the
 * process has (tasks=N), so a test can see that no writer thread runs when tracing is off. */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static int failed;
static volatile size_t huge = SIZE_MAX / 2; /* hidden from the compiler's size checks */

static void check(const char *name, int ok)
{
    printf("%s %s\n", ok ? "ok" : "FAIL", name);
    failed |= !ok;
}

static int aligned(const void *p, size_t a)
{
    return p != NULL && ((uintptr_t)p & (a - 1)) == 0;
}

static int from_heaptrail(void *fn)
{
    Dl_info info;
    return dladdr(fn, &info) != 0 && info.dli_fname != NULL &&
           strstr(info.dli_fname, "heaptrail-preload") != NULL;
}

int main(void)
{
    check("malloc comes from heaptrail", from_heaptrail((void *)malloc));
    check("__libc_malloc comes from heaptrail", from_heaptrail((void *)__libc_malloc));
    check("__libc_free comes from heaptrail", from_heaptrail((void *)__libc_free));

    char *p = malloc(100);
    check("malloc 16-byte aligned", aligned(p, 16));
    memset(p, 'x', 100);
    check("malloc_usable_size >= size", malloc_usable_size(p) >= 100);
    p = realloc(p, 100000);
    check("realloc keeps the bytes", p != NULL && p[0] == 'x' && p[99] == 'x');
    /* malloc_usable_size's bytes are the program's: realloc keeps them too (as glibc) */
    size_t sizes[] = {20, 1000, 5000, 300000, 1500000};
    int kept = 1;
    for (int i = 0; i < 5; i++) {
        char *u = malloc(sizes[i]);
        size_t n = malloc_usable_size(u);
        memset(u, 'u', n);
        char *v = realloc(u, 4 * n + 100000);
        for (size_t k = 0; v != NULL && k < n; k++)
            kept &= v[k] == 'u';
        kept &= v != NULL && n >= sizes[i];
        free(v);
    }
    check("realloc keeps every usable byte", kept);
    errno = 1234;
    free(p);
    check("free keeps errno", errno == 1234);
    void *z = malloc(0);
    check("malloc(0) is a unique pointer", z != NULL);
    free(z);
    check("malloc_usable_size(NULL) is 0", malloc_usable_size(NULL) == 0);

    errno = 0;
    check("calloc overflow is NULL", calloc(huge, 3) == NULL && errno == ENOMEM);
    unsigned char *c = calloc(1000, 10);
    int zero = c != NULL;
    for (int i = 0; c != NULL && i < 10000; i++)
        zero &= c[i] == 0;
    check("calloc zeroes", zero);
    free(c);
    errno = 0;
    check("malloc too large is NULL + ENOMEM", malloc(huge * 2 - 4096) == NULL && errno == ENOMEM);

    errno = 0;
    check("reallocarray overflow", reallocarray(NULL, huge, 3) == NULL && errno == ENOMEM);
    int *ra = reallocarray(NULL, 10, sizeof(int));
    check("reallocarray", ra != NULL);
    free(ra);
    void *r0 = malloc(10);
    check("realloc(p, 0) frees and is NULL", realloc(r0, 0) == NULL);
    void *rn = realloc(NULL, 33);
    check("realloc(NULL, n) allocates", rn != NULL);
    free(rn);

    void *m = NULL;
    errno = 77;
    check("posix_memalign 3 is EINVAL", posix_memalign(&m, 3, 10) == EINVAL && m == NULL);
    check("posix_memalign 4 is EINVAL", posix_memalign(&m, 4, 10) == EINVAL);
    check("posix_memalign keeps errno", errno == 77);
    check("posix_memalign 4096", posix_memalign(&m, 4096, 10) == 0 && aligned(m, 4096));
    free(m);
    check("posix_memalign 1 MiB", posix_memalign(&m, 1 << 20, 3 << 20) == 0 && aligned(m, 1 << 20));
    free(m);
    errno = 0;
    check("aligned_alloc 24 is EINVAL", aligned_alloc(24, 48) == NULL && errno == EINVAL);
    void *a = aligned_alloc(64, 100);
    check("aligned_alloc 64", aligned(a, 64));
    free(a);
    a = memalign(256, 1000);
    check("memalign 256", aligned(a, 256));
    free(a);
    a = memalign(48, 10); /* glibc rounds a non-power of two up */
    check("memalign 48 rounds up to 64", aligned(a, 64));
    free(a);
    errno = 0;
    check("memalign huge is EINVAL", memalign(SIZE_MAX, 1) == NULL && errno == EINVAL);
    a = valloc(10);
    check("valloc page aligned", aligned(a, 4096));
    free(a);
    a = pvalloc(10);
    check("pvalloc page aligned, whole page", aligned(a, 4096) && malloc_usable_size(a) >= 4096);
    free(a);

    void *l = __libc_malloc(50);
    l = __libc_realloc(l, 500);
    check("__libc_realloc", l != NULL && malloc_usable_size(l) >= 500);
    __libc_free(l);
    l = __libc_calloc(4, 4);
    check("__libc_calloc", l != NULL && ((int *)l)[3] == 0);
    free(l);
    l = __libc_memalign(128, 10);
    check("__libc_memalign", aligned(l, 128));
    free(l);

    int tasks = 0;
    DIR *d = opendir("/proc/self/task");
    for (struct dirent *e; d != NULL && (e = readdir(d)) != NULL;)
        tasks += e->d_name[0] != '.';
    if (d != NULL)
        closedir(d);
    printf("tasks=%d\n", tasks);
    return failed;
}
