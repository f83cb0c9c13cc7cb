/* prog_dlopen.c — dlopen and dlclose, three times, of a library (argv[1]) that allocates in
 * its constructor, in a function, and frees in its destructor. Prints "dlopen ok N". */
#include <dlfcn.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    int total = 0;
    for (int round = 0; round < 3; round++) {
        void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
        if (h == NULL) {
            fprintf(stderr, "dlopen: %s\n", dlerror());
            return 1;
        }
        int (*work)(int) = (int (*)(int))dlsym(h, "dl_work");
        if (work == NULL)
            return 1;
        total += work(10);
        dlclose(h);
    }
    printf("dlopen ok %d\n", total);
    return 0;
}
