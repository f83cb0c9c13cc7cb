/* lock.h — a small test-and-test-and-set spinlock that yields when contended; for short
 * critical sections (an LFH bin). Not recursive. */
#ifndef HT_COMMON_LOCK_H
#define HT_COMMON_LOCK_H

#include <sched.h>
#include <stdatomic.h>

typedef struct ht_spinlock {
    atomic_int held; /* 0 free, 1 held */
} ht_spinlock;

static inline void ht__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static inline void ht__spin_lock(ht_spinlock *l)
{
    if (atomic_exchange_explicit(&l->held, 1, memory_order_acquire) == 0)
        return;
    for (unsigned n = 0;; n++) {
        while (atomic_load_explicit(&l->held, memory_order_relaxed) != 0) {
            if (n++ < 64)
                ht__cpu_relax();
            else
                sched_yield();
        }
        if (atomic_exchange_explicit(&l->held, 1, memory_order_acquire) == 0)
            return;
    }
}

static inline void ht__spin_unlock(ht_spinlock *l)
{
    atomic_store_explicit(&l->held, 0, memory_order_release);
}

#endif
