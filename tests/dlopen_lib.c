/* dlopen_lib.c — a tiny shared library that test_stack dlopens and dlcloses to check that the
 * module map reports its load and unload. It must stay free of heaptrail code and state. */
int ht_dlopen_test_fn(int x);

int ht_dlopen_test_fn(int x)
{
    return x * 3 + 1;
}
