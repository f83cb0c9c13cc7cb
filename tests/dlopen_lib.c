/* dlopen_lib.c — a tiny shared library that test_stack dlopens and dlcloses to check that the
 * module map reports its load and unload. It must stay free of heaptrail code and state. */
int ht_dlopen_test_fn(int x);

int ht_dlopen_test_fn(int x)
{
    return x * 3 + 1;
}

/* Calls fn(arg) from inside this library, so a stack captured under fn has a frame here
 * (test_recorder_stacks). Built without sibling calls, so this frame stays on the stack. */
void *ht_dlopen_test_call(void *(*fn)(void *), void *arg);

void *ht_dlopen_test_call(void *(*fn)(void *), void *arg)
{
    void *r = fn(arg);
    __asm__ volatile("" : : "r"(r) : "memory");
    return r;
}
