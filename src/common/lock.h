/* lock.h — a small test-and-test-and-set spinlock that yields when contended, for short
 * critical sections (an LFH bin), not recursive; and a recursive lock (the heap lock, the
 * registry lock) that a forked child can release when its fork handler held it. */
#ifndef HT_COMMON_LOCK_H
#define HT_COMMON_LOCK_H

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>

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

/* A recursive lock over a plain (non-recursive) mutex, its owner named by pthread_self().
 * Not glibc's recursive mutex: that one names its owner by kernel thread id, which a forked
 * child's only thread no longer has, so the child could not unlock what the fork's prepare
 * handler locked, and making it anew over a held mutex is undefined (TSan: "double lock" once
 * a thread of the child takes it). pthread_self() is the same in the child, so fork handlers
 * take it in prepare and release it in parent and child alike (ht__rlock_fork_child). */
typedef struct ht_rlock {
    pthread_mutex_t mutex;   /* PTHREAD_MUTEX_DEFAULT */
    _Atomic uintptr_t owner; /* pthread_self() of the holder, 0 when free */
    unsigned depth;          /* the holder's nesting; owner != 0 <=> depth > 0 (holder only) */
} ht_rlock;

static inline void ht__rlock_init(ht_rlock *l)
{
    pthread_mutex_init(&l->mutex, NULL);
    atomic_store_explicit(&l->owner, 0, memory_order_relaxed);
    l->depth = 0;
}

static inline void ht__rlock_destroy(ht_rlock *l)
{
    pthread_mutex_destroy(&l->mutex);
}

/* True iff the calling thread holds l. Only the holder stores its own id there, so another
 * thread's stale or racing value never equals the caller's. */
static inline int ht__rlock_held(ht_rlock *l)
{
    return atomic_load_explicit(&l->owner, memory_order_relaxed) == (uintptr_t)pthread_self();
}

static inline void ht__rlock_lock(ht_rlock *l)
{
    if (ht__rlock_held(l)) {
        l->depth++;
        return;
    }
    pthread_mutex_lock(&l->mutex);
    atomic_store_explicit(&l->owner, (uintptr_t)pthread_self(), memory_order_relaxed);
    l->depth = 1;
}

/* Nonzero when it took l (or the caller already held it). */
static inline int ht__rlock_trylock(ht_rlock *l)
{
    if (ht__rlock_held(l)) {
        l->depth++;
        return 1;
    }
    if (pthread_mutex_trylock(&l->mutex) != 0)
        return 0;
    atomic_store_explicit(&l->owner, (uintptr_t)pthread_self(), memory_order_relaxed);
    l->depth = 1;
    return 1;
}

static inline void ht__rlock_unlock(ht_rlock *l)
{
    if (--l->depth != 0)
        return;
    atomic_store_explicit(&l->owner, 0, memory_order_relaxed);
    pthread_mutex_unlock(&l->mutex);
}

/* In a forked child: if the forking thread (now the only one) held l at fork, as the prepare
 * handler makes sure, let go of it entirely, however deep. */
static inline void ht__rlock_fork_child(ht_rlock *l)
{
    if (!ht__rlock_held(l))
        return;
    l->depth = 1;
    ht__rlock_unlock(l);
}

#endif
