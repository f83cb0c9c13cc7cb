/* unwind.c — the stack-capture strategies: a frame-pointer walker bounded by this thread's
 * stack mapping (read once per thread from /proc/self/maps with raw syscalls, because
 * pthread_getattr_np mallocs), the own DWARF CFI walker on x86-64 (rules from cfi_map.c's
 * cache; a frame it cannot describe hands the whole capture to libunwind), and libunwind's
 * local unwinder when it was found at build time. Runs inside malloc: never calls malloc,
 * stdio or pthread functions that allocate; per-thread state is initial-exec TLS, except the
 * memo's ways (mapped per thread, see memo_set). Built with frame pointers. */
#include "trace/stack.h"

#include "common/log.h"
#include "common/os.h"
#include "trace/cfi.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#ifndef HT_HAVE_LIBUNWIND
#define HT_HAVE_LIBUNWIND 0 /* CMake sets 1 when it finds libunwind */
#endif
#if HT_HAVE_LIBUNWIND
#define UNW_LOCAL_ONLY
#include <libunwind.h>
#endif

#if defined(__x86_64__)
#define HT_HAVE_CFI 1 /* the own DWARF walker (cfi.c) knows x86-64 only */
#else
#define HT_HAVE_CFI 0
#endif

#define TLS_IE __attribute__((tls_model("initial-exec")))

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NO_ASAN __attribute__((no_sanitize_address))
#endif
#endif
#if !defined(NO_ASAN) && defined(__SANITIZE_ADDRESS__)
#define NO_ASAN __attribute__((no_sanitize_address))
#endif
#ifndef NO_ASAN
#define NO_ASAN
#endif

/* -- this thread's stack bounds ------------------------------------------------------------ */

/* The mapping that held this thread's stack pointer when last looked up: [t_lo, t_hi).
 * Invariant: t_lo < t_hi, or both 0 (unknown). A frame pointer outside it triggers one
 * fresh lookup (stack growth, sigaltstack, another context); t_n_lookups rate-limits that. */
static void ms_init_once(void); /* the memo's thread-exit key (below) */

static __thread uintptr_t t_lo TLS_IE;
static __thread uintptr_t t_hi TLS_IE;
static __thread unsigned t_n_lookups TLS_IE;

/* Past this many lookups, a frame outside the cached mapping just ends the walk. */
#define MAX_LOOKUPS_PER_THREAD 64u

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Finds the mapping of /proc/self/maps that contains addr. open/read/close only: no malloc,
 * async-signal-safe. A line is "start-end perms ..."; only the range is parsed, with a state
 * machine so lines may straddle reads. */
static bool maps_find(uintptr_t addr, uintptr_t *lo, uintptr_t *hi)
{
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    char buf[2048];
    enum { S_START, S_END, S_SKIP } state = S_START;
    uintptr_t start = 0, end = 0;
    bool found = false;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n && !found; i++) {
            char c = buf[i];
            int d = hex_digit(c);
            switch (state) {
            case S_START:
                if (d >= 0)
                    start = start << 4 | (uintptr_t)d;
                else
                    state = c == '-' ? S_END : S_SKIP;
                break;
            case S_END:
                if (d >= 0) {
                    end = end << 4 | (uintptr_t)d;
                } else {
                    if (start <= addr && addr < end)
                        found = true;
                    state = S_SKIP;
                }
                break;
            case S_SKIP:
                if (c == '\n') {
                    state = S_START;
                    start = end = 0;
                }
                break;
            }
        }
        if (found)
            break;
    }
    close(fd);
    if (found) {
        *lo = start;
        *hi = end;
    }
    return found;
}

/* Makes [t_lo, t_hi) the mapping holding sp; false when it cannot be known. */
static bool bounds_refresh(uintptr_t sp)
{
    if (t_n_lookups >= MAX_LOOKUPS_PER_THREAD)
        return false;
    t_n_lookups++;
    uintptr_t lo, hi;
    if (!maps_find(sp, &lo, &hi))
        return false;
    t_lo = lo;
    t_hi = hi;
    return true;
}

bool ht__unwind_thread_bounds(uintptr_t *lo, uintptr_t *hi)
{
    uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
    if (!(t_lo <= sp && sp < t_hi) && !bounds_refresh(sp))
        return false;
    *lo = t_lo;
    *hi = t_hi;
    return true;
}

/* -- DWARF via libunwind ------------------------------------------------------------------- */

#if HT_HAVE_LIBUNWIND
/* unw_backtrace: libunwind's fast path (a per-thread cache of per-address CFA rules, mmap'ed,
 * keyed by pthread_setspecific once per thread) with a unw_step fallback for odd frames.
 * Its first entry is the address inside this function, then the return address into
 * ht__stack_capture: both skipped. */
#define DWARF_OWN_FRAMES 2u

static bool dwarf_init(void)
{
    ms_init_once(); /* the call-site cache lives in the memo's mapping */
    /* Per-thread caching keeps the unw_step fallback off libunwind's global cache lock. */
    unw_set_caching_policy(unw_local_addr_space, UNW_CACHE_PER_THREAD);
    void *warm[4];
    return unw_backtrace(warm, 4) > 0; /* creates this thread's cache and the pthread key */
}

__attribute__((noinline)) static size_t dwarf_capture(uint64_t *frames, size_t max, unsigned skip)
{
    void *buf[HT_STACK_MAX_DEPTH + 2 * DWARF_OWN_FRAMES];
    size_t want = max + DWARF_OWN_FRAMES + skip;
    if (want > sizeof buf / sizeof buf[0])
        want = sizeof buf / sizeof buf[0];
    int got = unw_backtrace(buf, (int)want);
    size_t first = DWARF_OWN_FRAMES + skip, n = 0;
    for (size_t i = first; got > 0 && i < (size_t)got && n < max; i++)
        frames[n++] = (uint64_t)(uintptr_t)buf[i];
    return n;
}

static const ht_unwinder unwinder_libunwind = {"libunwind", dwarf_init, dwarf_capture};
#endif

/* -- DWARF via the own CFI walker (x86-64) ------------------------------------------------- */

#if HT_HAVE_CFI
/* Captures handed to libunwind (or cut short without it): tests check it stays put. */
static _Atomic uint64_t g_n_fallback;

static bool cfi_init(void)
{
    ms_init_once();
    uintptr_t lo, hi;
    if (!ht__unwind_thread_bounds(&lo, &hi) || !ht__cfi_map_init())
        return false;
#if HT_HAVE_LIBUNWIND
    (void)dwarf_init(); /* the fallback for frames the walker cannot describe */
#endif
    return true;
}

/* The whole capture again with libunwind (a frame the rules cannot describe: signal frames,
 * CFA expressions, a pc in no known module). skip counts from cfi_capture's caller, so two
 * more frames (the returns into cfi_capture and into its caller) are dropped. Never a tail call
 * (the frame count depends on it). Without libunwind the walk just ends where it was. */
__attribute__((noinline)) static size_t cfi_fallback(uint64_t *frames, size_t max, unsigned skip,
                                                     size_t n_done)
{
    atomic_fetch_add_explicit(&g_n_fallback, 1, memory_order_relaxed);
#if HT_HAVE_LIBUNWIND
    (void)n_done;
    size_t n = dwarf_capture(frames, max, skip + 2);
    __asm__ volatile("" ::: "memory");
    return n;
#else
    (void)frames;
    (void)max;
    (void)skip;
    return n_done;
#endif
}
#endif

/* -- the walk, memoised ------------------------------------------------------------------- */

/* Both walkers step through states (ra, sp, rbp) — a frame's pc (a return address), its rsp
 * and rbp — by a rule per state: CFA = (rbp or rsp) + off, the caller's return address at
 * CFA - 8, its rbp unchanged or reloaded from CFA - 8k, its rsp = CFA. The frame-pointer
 * walker is the constant rule {rbp + 16, rbp at CFA - 16} (plus an alignment check); the
 * DWARF walker looks the rule of ra up in cfi_map.c's cache.
 *
 * Memo (docs/decisions/0007): each thread keeps its last MEMO_WAYS walks as their states and
 * the stack slots each step read. The walk from a state is a function of the state, of the
 * values in the slots it reads, of the rules (a function of ra for one map generation) and of
 * the stack's top. So when the current state equals a remembered walk's state at the same sp
 * and every slot that walk read from there on still holds what it read, the rest of the walk
 * is the remembered one: checked with independent loads, no rule lookups. A walk whose first
 * state matches, with the same arguments, is the same capture (HT_UNWIND_MEMO_WHOLE). */
#define MEMO_STATES 48u /* depth 32 (the default) + heaptrail's frames + 2 fit */

enum {
    END_OPEN = 0,   /* state n-1 is one whose walk is not recorded (depth reached, full) */
    END_EMIT = 1,   /* ras[n-1] is the last frame (outermost, or the next step failed) */
    END_NOEMIT = 2, /* ras[n-1] is not a frame (implausible): the walk ended before it */
};

typedef struct mread {
    const uintptr_t *addr; /* a stack slot a step read */
    uintptr_t val;         /* what it held */
} mread;

typedef struct mpair {
    uintptr_t rbp, ra; /* what a {saved rbp, return address} record held (rp_addr[i][0], [1]) */
} mpair;

typedef struct memo {
    uint64_t key;                /* walker and rule generation; 0 = empty or being written */
    uintptr_t top;               /* the stack's highest word when recorded */
    uint32_t n;                  /* states, 1..MEMO_STATES */
    uint8_t end;                 /* END_*: what follows state n-1 */
    uint8_t by_max;              /* the capture stopped at max right before state n-1 */
    uint16_t skip;               /* the capture's skip ... */
    size_t max;                  /* ... and max */
    uint32_t n_rd, n_rp;         /* entries in rd, rp */
    uintptr_t ras[MEMO_STATES];  /* state t: its pc (return address) ... */
    uintptr_t sps[MEMO_STATES];  /* ... rsp (strictly increasing with t) ... */
    uintptr_t rbps[MEMO_STATES]; /* ... and rbp */
    uint16_t rd_at[MEMO_STATES]; /* the step out of state t read rd[rd_at[t], rd_at[t + 1]) */
    uint16_t rp_at[MEMO_STATES]; /* ... and rp[rp_at[t], rp_at[t + 1]) */
    mread rd[2 * MEMO_STATES];   /* the slots read one by one */
    /* {saved rbp, return address} records read (frame pointers): where, and what they held;
     * apart, so that memo_holds xors a record with an aligned 16-byte operand */
    const uintptr_t *rp_addr[MEMO_STATES];
    _Alignas(16) mpair rp[MEMO_STATES];
} memo;

/* A thread's memo ways (~12 KiB), mapped at its first memoised walk and unmapped at its exit.
 * Only the pointer is in initial-exec TLS: static TLS is a small reserve for libraries loaded
 * by dlopen, and 12 KiB there made dlopen of libheaptrail.so fail ("cannot allocate memory
 * in static TLS block"). */
static __thread unsigned t_walking TLS_IE; /* a walk is in progress (signal re-entry) */

typedef struct memo_set {
    memo way[HT_UNWIND_MEMO_WAYS];
    unsigned victim;                                           /* the way recorded next */
    _Alignas(16) unsigned char caller[HT_UNWIND_CALLER_BYTES]; /* ht__unwind_caller_area */
} memo_set;

#define MEMO_SET_BYTES ((sizeof(memo_set) + HT_PAGE_SIZE - 1) / HT_PAGE_SIZE * HT_PAGE_SIZE)

static __thread memo_set *t_ms TLS_IE; /* NULL: not mapped yet; MS_NONE: never (exited) */
static char g_ms_none;
#define MS_NONE ((memo_set *)(void *)&g_ms_none)
static pthread_key_t g_ms_key;
static pthread_once_t g_ms_once = PTHREAD_ONCE_INIT;
static atomic_bool g_ms_key_ok; /* the key exists and setspecific on it never allocates */

/* At thread exit: later destructors that free memory walk without a memo. */
static void ms_thread_exit(void *arg)
{
    t_ms = MS_NONE;
    if (arg != NULL)
        (void)ht__os.release(arg, MEMO_SET_BYTES);
}

/* glibc keeps the values of the first 32 keys in the thread descriptor; a later key's first
 * pthread_setspecific in a thread callocs a block (that would be malloc inside the walk, and
 * from a signal handler). So the key is made when the library loads (a low index), and a
 * key at 32 or above is not used: the walks then go without a memo. */
#define MS_KEY_INLINE 32u

static void ms_key_create(void)
{
    bool ok = pthread_key_create(&g_ms_key, ms_thread_exit) == 0;
    if (ok && (unsigned)g_ms_key >= MS_KEY_INLINE) {
        (void)pthread_key_delete(g_ms_key);
        ok = false;
    }
    atomic_store_explicit(&g_ms_key_ok, ok, memory_order_release);
}

/* Not in the walk: pthread_once is no call for a signal handler. */
static void ms_init_once(void)
{
    pthread_once(&g_ms_once, ms_key_create);
}

__attribute__((constructor)) static void ms_init_at_load(void)
{
    ms_init_once();
}

/* This thread's memo ways, mapped on first use; NULL when there are none (no key, no
 * memory, or the thread is exiting). Called only outside a walk's re-entry (t_walking set
 * by the caller), so a signal handler's walk never maps a second set. */
static memo_set *ms_get(void)
{
    memo_set *m = t_ms;
    if (__builtin_expect(m != NULL, 1))
        return m == MS_NONE ? NULL : m;
    if (!atomic_load_explicit(&g_ms_key_ok, memory_order_acquire))
        return NULL; /* no usable key (see ms_key_create) */
    if ((m = ht__os.map_rw(MEMO_SET_BYTES)) == NULL) {
        t_ms = MS_NONE;
        return NULL;
    }
    if (pthread_setspecific(g_ms_key, m) != 0) {
        (void)ht__os.release(m, MEMO_SET_BYTES);
        t_ms = MS_NONE;
        return NULL;
    }
    t_ms = m;
    return m;
}

void *ht__unwind_caller_area(void)
{
    memo_set *m = t_ms;
    if (__builtin_expect(m != NULL && m != MS_NONE, 1))
        return m->caller;
    if (m != NULL || t_walking != 0)
        return NULL;
    t_walking = 1; /* a signal handler's walk meanwhile maps nothing */
    m = ms_get();
    t_walking = 0;
    return m != NULL ? m->caller : NULL;
}

__thread unsigned ht__unwind_memo_last TLS_IE = HT_UNWIND_MEMO_NONE;
__thread unsigned ht__unwind_memo_known TLS_IE;

/* A return address worth looking up: user space, not in the first page. */
static inline bool ra_plausible(uintptr_t ra)
{
    return ra - 4096 < ((uintptr_t)1 << 47) - 4096;
}

/* One step by the rule word w (NORMAL): every read lies in [*sp, top] and the new sp is
 * above the old one, so a walk ends and never leaves the stack mapping. False when the rule
 * points outside that (nothing changed then). *rbp_slot is NULL when rbp kept its value. */
NO_ASAN static inline bool step(uint64_t w, uintptr_t *ra, uintptr_t *sp, uintptr_t *rbp,
                                uintptr_t top, const uintptr_t **ra_slot,
                                const uintptr_t **rbp_slot)
{
    uintptr_t cfa = ((w & HT_CFI_W_RBPCFA) != 0 ? *rbp : *sp) + HT_CFI_W_OFF(w);
    const uintptr_t *ras = (const uintptr_t *)(cfa - sizeof(uintptr_t));
    if ((uintptr_t)ras - *sp > top - *sp)
        return false; /* below the current sp or past the stack's top */
    unsigned k = HT_CFI_W_RBPK(w);
    uintptr_t next_ra = *ras;
    *ra_slot = ras;
    *rbp_slot = NULL;
    if (k != 0) {
        const uintptr_t *rbps = (const uintptr_t *)(cfa - 8u * k);
        if ((uintptr_t)rbps < *sp)
            return false;
        *rbp = *rbps;
        *rbp_slot = rbps;
    }
    *ra = next_ra;
    *sp = cfa;
    return true;
}

/* Adds the reads of a step (its results ra and rbp) to the recording r. */
static inline void rec_reads(memo *r, const uintptr_t *ra_slot, const uintptr_t *rbp_slot,
                             uintptr_t ra, uintptr_t rbp)
{
    if (rbp_slot == ra_slot - 1) {
        r->rp_addr[r->n_rp] = rbp_slot;
        r->rp[r->n_rp++] = (mpair){rbp, ra};
        return;
    }
    r->rd[r->n_rd++] = (mread){ra_slot, ra};
    if (rbp_slot != NULL)
        r->rd[r->n_rd++] = (mread){rbp_slot, rbp};
}

/* The frame-pointer rule: CFA = rbp + 16, rbp saved at CFA - 16. */
#define FP_RULE                                                                                    \
    ((uint64_t)HT_CFI_W_NORMAL << 26 | HT_CFI_W_RBPCFA | (uint64_t)2 << 19 | (uint64_t)16)

/* True when every slot e's walk read from state `from` on still holds what it read. The
 * slots lie in [e->sps[from], e->top]: inside this thread's stack when the caller checked
 * that sp and top are the current ones. The loads are independent of each other (addresses
 * come from the memo, not from the loads), so they overlap; a difference ends it. */
NO_ASAN static inline bool memo_holds(const memo *e, uint32_t from)
{
    const uintptr_t *const *a = &e->rp_addr[e->rp_at[from]], *const *aend =
                                                                 &e->rp_addr[e->rp_at[e->n - 1]];
    const mpair *v = &e->rp[e->rp_at[from]];
#if defined(__SSE2__)
    /* a frame record is 16 bytes: one unaligned load, one xor against {rbp, ra} (aligned),
     * two records per round into two accumulators */
    __m128i acc0 = _mm_setzero_si128(), acc1 = _mm_setzero_si128();
    for (const uintptr_t *const *alast = aend - 1; a < alast; a += 2, v += 2) {
        acc0 |= _mm_loadu_si128((const __m128i *)(const void *)a[0]) ^
                *(const __m128i *)(const void *)&v[0];
        acc1 |= _mm_loadu_si128((const __m128i *)(const void *)a[1]) ^
                *(const __m128i *)(const void *)&v[1];
    }
    if (a < aend)
        acc0 |= _mm_loadu_si128((const __m128i *)(const void *)a[0]) ^
                *(const __m128i *)(const void *)v;
    acc0 |= acc1;
    if (_mm_movemask_epi8(_mm_cmpeq_epi8(acc0, _mm_setzero_si128())) != 0xFFFF)
        return false;
#else
    for (; a < aend; a++, v++)
        if ((((*a)[0] ^ v->rbp) | ((*a)[1] ^ v->ra)) != 0)
            return false;
#endif
    const mread *r = &e->rd[e->rd_at[from]], *end = &e->rd[e->rd_at[e->n - 1]];
    for (; end - r >= 4; r += 4)
        if (((*r[0].addr ^ r[0].val) | (*r[1].addr ^ r[1].val) | (*r[2].addr ^ r[2].val) |
             (*r[3].addr ^ r[3].val)) != 0)
            return false;
    for (; r < end; r++)
        if (*r->addr != r->val)
            return false;
    return true;
}

/* The frames of a whole match: those e's own capture (same skip and max) emitted. States
 * [0, last) were emitted or skipped: all n of them for END_EMIT, all but the last else. */
static inline size_t memo_frames(const memo *e, uint64_t *frames, size_t max, unsigned skip)
{
    size_t last = e->end == END_EMIT ? e->n : e->n - 1, first = (size_t)skip + 1;
    if (last <= first)
        return 0;
    size_t k = last - first < max ? last - first : max;
    memcpy(frames, &e->ras[first], k * sizeof(uint64_t));
    return k;
}

/* Appends state (ra, sp, rbp) to the recording r; false when it is full. */
static inline bool rec_state(memo *r, uintptr_t ra, uintptr_t sp, uintptr_t rbp)
{
    if (r->n == MEMO_STATES)
        return false;
    r->ras[r->n] = ra;
    r->sps[r->n] = sp;
    r->rbps[r->n] = rbp;
    r->rd_at[r->n] = (uint16_t)r->n_rd;
    r->rp_at[r->n] = (uint16_t)r->n_rp;
    r->n++;
    return true;
}

typedef struct walk_out {
    uint64_t *frames;
    size_t n, max, skip_left; /* frames stored; the most; return addresses still to drop */
} walk_out;

#if HT_DEBUG >= 2
/* memo_replay state by state, as it was first written: the reference the bulk version is
 * checked against in debug builds (HT_DEBUG >= 2). */
static bool memo_replay_ref(const memo *e, uint32_t from, walk_out *o, memo *r, bool *full,
                            uint32_t *resume)
{
    for (uint32_t t = from;; t++) {
        bool last = t + 1 == e->n;
        if (last && e->end == END_OPEN) {
            *resume = t;
            return false;
        }
        if (!*full && !rec_state(r, e->ras[t], e->sps[t], e->rbps[t]))
            *full = true;
        if (!*full && !last) {
            for (uint32_t i = e->rd_at[t]; i < e->rd_at[t + 1]; i++)
                r->rd[r->n_rd++] = e->rd[i];
            for (uint32_t i = e->rp_at[t]; i < e->rp_at[t + 1]; i++) {
                r->rp_addr[r->n_rp] = e->rp_addr[i];
                r->rp[r->n_rp++] = e->rp[i];
            }
        }
        if (last && e->end == END_NOEMIT) {
            r->end = END_NOEMIT;
            return true;
        }
        if (o->skip_left > 0)
            o->skip_left--;
        else
            o->frames[o->n++] = e->ras[t];
        if (last) {
            r->end = END_EMIT;
            return true;
        }
        if (o->n == o->max) {
            if (!*full && rec_state(r, e->ras[t + 1], e->sps[t + 1], e->rbps[t + 1]))
                r->by_max = 1;
            r->end = END_OPEN;
            return true;
        }
    }
}
#endif

/* Appends e's states [a, b) and the reads of the steps out of them to r, as many as r has room
 * for (else *full). b <= e->n - 1: each of those steps is recorded in e. */
static inline void rec_copy(memo *r, const memo *e, uint32_t a, uint32_t b, bool *full)
{
    if (*full || a >= b)
        return;
    uint32_t k = b - a, n = r->n;
    if (k > MEMO_STATES - n) {
        k = MEMO_STATES - n;
        *full = true;
    }
    memcpy(&r->ras[n], &e->ras[a], k * sizeof r->ras[0]);
    memcpy(&r->sps[n], &e->sps[a], k * sizeof r->sps[0]);
    memcpy(&r->rbps[n], &e->rbps[a], k * sizeof r->rbps[0]);
    uint32_t rd0 = e->rd_at[a], rp0 = e->rp_at[a];
    for (uint32_t i = 0; i < k; i++) {
        r->rd_at[n + i] = (uint16_t)(r->n_rd + (e->rd_at[a + i] - rd0));
        r->rp_at[n + i] = (uint16_t)(r->n_rp + (e->rp_at[a + i] - rp0));
    }
    uint32_t n_rd = e->rd_at[a + k] - rd0, n_rp = e->rp_at[a + k] - rp0;
    memcpy(&r->rd[r->n_rd], &e->rd[rd0], n_rd * sizeof r->rd[0]);
    memcpy(&r->rp_addr[r->n_rp], &e->rp_addr[rp0], n_rp * sizeof r->rp_addr[0]);
    memcpy(&r->rp[r->n_rp], &e->rp[rp0], n_rp * sizeof r->rp[0]);
    r->n = n + k;
    r->n_rd += n_rd;
    r->n_rp += n_rp;
}

/* Emits the return addresses of e's states [a, b) (dropping those still to skip); the caller
 * made sure they fit. */
static inline void emit_copy(walk_out *o, const memo *e, uint32_t a, uint32_t b)
{
    uint32_t k = b - a;
    uint32_t drop = o->skip_left < k ? (uint32_t)o->skip_left : k;
    o->skip_left -= drop;
    memcpy(&o->frames[o->n], &e->ras[a + drop], (k - drop) * sizeof o->frames[0]);
    o->n += k - drop;
}

/* Emits e's states from `from` on (as the real walk would have) and appends them and their
 * reads to the recording r (until it is full). Returns true when the walk is complete; false
 * when it must go on for real from e's last state (END_OPEN), whose index is then *resume.
 * In bulk: the states before the one that fills max (or before the last), then that one. */
static bool memo_replay_bulk(const memo *e, uint32_t from, walk_out *o, memo *r, bool *full,
                             uint32_t *resume)
{
    const uint32_t last = e->n - 1;
    /* the state whose return address is the max-th frame (o->n < max here) */
    const uint64_t fill = (uint64_t)from + o->skip_left + (o->max - o->n) - 1;
    if (fill < last) {
        uint32_t f = (uint32_t)fill;
        rec_copy(r, e, from, f + 1, full);
        emit_copy(o, e, from, f + 1);
        if (!*full && rec_state(r, e->ras[f + 1], e->sps[f + 1], e->rbps[f + 1]))
            r->by_max = 1;
        r->end = END_OPEN;
        return true;
    }
    rec_copy(r, e, from, last, full);
    emit_copy(o, e, from, last);
    if (e->end == END_OPEN) {
        *resume = last;
        return false;
    }
    if (!*full && !rec_state(r, e->ras[last], e->sps[last], e->rbps[last]))
        *full = true;
    if (e->end == END_NOEMIT) {
        r->end = END_NOEMIT;
        return true;
    }
    emit_copy(o, e, last, last + 1);
    r->end = END_EMIT;
    return true;
}

#if HT_DEBUG >= 2
/* Both replays on copies, compared field by field; a difference aborts. */
static bool memo_replay(const memo *e, uint32_t from, walk_out *o, memo *r, bool *full,
                        uint32_t *resume)
{
    uint64_t frames[HT_STACK_MAX_DEPTH + 64];
    if (o->max > sizeof frames / sizeof frames[0])
        return memo_replay_bulk(e, from, o, r, full, resume);
    memo ref; /* ~4 KiB of stack, debug builds only */
    memo *r2 = &ref;
    memcpy(r2, r, sizeof *r);
    walk_out o2 = *o;
    o2.frames = frames;
    memcpy(frames, o->frames, o->n * sizeof frames[0]);
    bool full2 = *full;
    uint32_t resume2 = 0, resume1 = 0;
    bool ok2 = memo_replay_ref(e, from, &o2, r2, &full2, &resume2);
    bool ok1 = memo_replay_bulk(e, from, o, r, full, &resume1);
    bool same = ok1 == ok2 && (ok1 || resume1 == resume2) && *full == full2 && o->n == o2.n &&
                o->skip_left == o2.skip_left &&
                memcmp(o->frames, frames, o->n * sizeof frames[0]) == 0 && r->n == r2->n &&
                r->n_rd == r2->n_rd && r->n_rp == r2->n_rp && r->end == r2->end &&
                r->by_max == r2->by_max;
    for (uint32_t i = 0; same && i < r->n; i++)
        same = r->ras[i] == r2->ras[i] && r->sps[i] == r2->sps[i] && r->rbps[i] == r2->rbps[i] &&
               r->rd_at[i] == r2->rd_at[i] && r->rp_at[i] == r2->rp_at[i];
    for (uint32_t i = 0; same && i < r->n_rd; i++)
        same = r->rd[i].addr == r2->rd[i].addr && r->rd[i].val == r2->rd[i].val;
    for (uint32_t i = 0; same && i < r->n_rp; i++)
        same = r->rp_addr[i] == r2->rp_addr[i] && r->rp[i].rbp == r2->rp[i].rbp &&
               r->rp[i].ra == r2->rp[i].ra;
    if (!same) {
        ht__log("heaptrail: unwind.c: memo_replay_bulk differs from the reference (from %u of %u, "
                "end %u, max %zu, skip %zu)\n",
                from, e->n, e->end, o2.max, o2.skip_left);
        abort();
    }
    if (!ok1)
        *resume = resume1;
    return ok1;
}
#else
#define memo_replay memo_replay_bulk
#endif

enum { F_STEP, F_END, F_UNSUP }; /* frame_step: went on; the walk ends; hand to libunwind */

/* Emits *ra (or drops it while skipping), then steps out of its frame by its rule: the
 * constant FP_RULE (with the frame-pointer walker's alignment check), or the cached rule. */
NO_ASAN __attribute__((always_inline)) static inline int
frame_step(walk_out *o, uintptr_t *ra, uintptr_t *sp, uintptr_t *rbp, uintptr_t top, bool dwarf,
           _Atomic uint64_t *cache, uint64_t want, const uintptr_t **ra_slot,
           const uintptr_t **rbp_slot)
{
    if (o->skip_left > 0)
        o->skip_left--;
    else
        o->frames[o->n++] = *ra;
    uint64_t rule = FP_RULE;
#if HT_HAVE_CFI
    if (dwarf) {
        rule = ht__cfi_rule(cache, want, *ra);
        if (HT_CFI_W_KIND(rule) != HT_CFI_W_NORMAL)
            return HT_CFI_W_KIND(rule) == HT_CFI_W_OUTER ? F_END : F_UNSUP;
    }
#else
    (void)cache;
    (void)want;
#endif
    if (!dwarf && (*rbp & (sizeof(uintptr_t) - 1)) != 0)
        return F_END;
    return step(rule, ra, sp, rbp, top, ra_slot, rbp_slot) ? F_STEP : F_END;
}

/* The walk from this capture function's own frame fp (built with a frame pointer). The first
 * skip + 1 return addresses (the first is into the capture's caller) are dropped. dwarf: rules
 * from the CFI cache (an UNSUP rule hands the capture to libunwind); else FP_RULE. */
NO_ASAN __attribute__((always_inline)) static inline size_t
walk(uint64_t *frames, size_t max, unsigned skip, uintptr_t fp, bool dwarf)
{
    const uintptr_t top = t_hi - sizeof(uintptr_t); /* highest readable word */
#if HT_HAVE_CFI
    _Atomic uint64_t *cache = ht__cfi_cache;
    const uint64_t want = atomic_load_explicit(&ht__cfi_gen_tag, memory_order_relaxed) |
                          (uint64_t)HT_CFI_W_NORMAL << 26;
#else
    _Atomic uint64_t *cache = NULL;
    const uint64_t want = 0;
#endif
    const uint64_t key = dwarf ? want | 2u : 1u;
    const uintptr_t *own = (const uintptr_t *)fp;
    uintptr_t rbp = own[0], ra = own[1], sp = fp + 2 * sizeof(uintptr_t);
    walk_out o = {frames, 0, max, (size_t)skip + 1};
    bool full = false; /* the recording ran out of states */
    unsigned part = 0; /* HT_UNWIND_MEMO_PART once a remembered walk supplied the rest */
    const uintptr_t *ra_slot, *rbp_slot;
    ht__unwind_memo_last = HT_UNWIND_MEMO_NONE;
    if (max == 0 || t_walking != 0)
        goto no_memo;
    t_walking = 1;
    memo_set *ms = ms_get();
    if (ms == NULL) {
        t_walking = 0;
        goto no_memo;
    }
    memo *const t_memo = ms->way;

    /* The whole capture again? */
    for (unsigned w = 0; w < HT_UNWIND_MEMO_WAYS; w++) {
        const memo *e = &t_memo[w];
        if (e->key == key && e->sps[0] == sp && e->ras[0] == ra && e->rbps[0] == rbp &&
            e->top == top && e->skip == skip && e->max == max &&
            (e->end != END_OPEN || e->by_max) && memo_holds(e, 0)) {
            ht__unwind_memo_last = w | HT_UNWIND_MEMO_WHOLE;
            t_walking = 0;
            if ((ht__unwind_memo_known >> w & 1u) != 0)
                return 0; /* the caller has this capture's result */
            return memo_frames(e, frames, max, skip);
        }
    }

    /* Walk for real, recording into the victim way and looking for a remembered state. */
    unsigned v = ms->victim;
    ms->victim = (v + 1) % HT_UNWIND_MEMO_WAYS;
    memo *r = &t_memo[v];
    r->key = 0;
    r->n = 0;
    r->n_rd = 0;
    r->n_rp = 0;
    r->by_max = 0;
    uint32_t pos[HT_UNWIND_MEMO_WAYS] = {0};
    bool usable[HT_UNWIND_MEMO_WAYS];
    /* The smallest sps[pos[w]] of the usable ways: below it no way can match, so the scan
     * below is skipped (sp only grows); 0 makes the next step scan. */
    uintptr_t next_sp = UINTPTR_MAX;
    for (unsigned w = 0; w < HT_UNWIND_MEMO_WAYS; w++) {
        usable[w] = w != v && t_memo[w].key == key && t_memo[w].top == top;
        if (usable[w] && t_memo[w].sps[0] < next_sp)
            next_sp = t_memo[w].sps[0];
    }
    for (;;) {
        if (sp >= next_sp) {
            next_sp = UINTPTR_MAX;
            for (unsigned w = 0; w < HT_UNWIND_MEMO_WAYS; w++) {
                if (!usable[w])
                    continue;
                const memo *e = &t_memo[w];
                uint32_t p = pos[w];
                while (p < e->n && e->sps[p] < sp)
                    p++;
                pos[w] = p;
                if (p < e->n && e->sps[p] == sp && e->ras[p] == ra && e->rbps[p] == rbp) {
                    usable[w] = false;
                    if (!memo_holds(e, p))
                        continue;
                    uint32_t at;
                    part = HT_UNWIND_MEMO_PART;
                    if (memo_replay(e, p, &o, r, &full, &at))
                        goto recorded;
                    ra = e->ras[at];
                    sp = e->sps[at];
                    rbp = e->rbps[at];
                    next_sp = 0; /* the ways after w were not looked at */
                    break;
                }
                if (p == e->n)
                    usable[w] = false; /* walked past all of it */
                else if (e->sps[p] < next_sp)
                    next_sp = e->sps[p];
            }
        }
        if (!full && !rec_state(r, ra, sp, rbp))
            full = true;
        if (!ra_plausible(ra)) {
            r->end = END_NOEMIT;
            goto recorded;
        }
        int f = frame_step(&o, &ra, &sp, &rbp, top, dwarf, cache, want, &ra_slot, &rbp_slot);
        if (f == F_UNSUP) {
            r->n = 0;
            t_walking = 0;
            return cfi_fallback(frames, max, skip, o.n);
        }
        if (f == F_END) {
            r->end = END_EMIT;
            goto recorded;
        }
        if (!full)
            rec_reads(r, ra_slot, rbp_slot, ra, rbp);
        if (o.n == max) {
            if (!full && rec_state(r, ra, sp, rbp))
                r->by_max = 1;
            r->end = END_OPEN;
            goto recorded;
        }
    }
recorded:
    if (full) {
        /* the last state's walk on is not (all) recorded: replays resume there, and it is
         * never a whole capture (by_max would claim its end is known) */
        r->end = END_OPEN;
        r->by_max = 0;
    }
    r->top = top;
    r->skip = (uint16_t)skip;
    r->max = max;
    r->key = r->n > 0 && skip <= 0xFFFF ? key : 0;
    ht__unwind_memo_last = v | part;
    t_walking = 0;
    return o.n;

no_memo: /* a walk interrupting a walk on this thread (a signal handler): no memo */
    while (o.n < max && ra_plausible(ra)) {
        int f = frame_step(&o, &ra, &sp, &rbp, top, dwarf, cache, want, &ra_slot, &rbp_slot);
        if (f == F_UNSUP)
            return cfi_fallback(frames, max, skip, o.n);
        if (f == F_END)
            break;
    }
    return o.n;
}

/* -- the two walkers ------------------------------------------------------------------------ */

/* This thread's stack holds fp (refreshing the bounds once if not): the walk may start. */
static inline bool walk_can_start(uintptr_t fp)
{
    if (!(t_lo <= fp && fp < t_hi) && !bounds_refresh(fp))
        return false;
    return t_hi - fp >= 2 * sizeof(uintptr_t);
}

static bool fp_init(void)
{
    ms_init_once();
    uintptr_t lo, hi;
    return ht__unwind_thread_bounds(&lo, &hi);
}

/* Each frame is {saved fp, return address} at fp (x86-64 rbp, AArch64 x29): FP_RULE. A frame
 * is trusted only when its record lies in [current sp, t_hi - 16], is 8-aligned, and each
 * next fp is above the previous one (so the walk ends and stays in mapped memory). */
/* A capture function: its own frame (a frame pointer, never inlined) is where the walk
 * starts; walk() is inlined into it with dwarf a constant. */
#define DEFINE_CAPTURE(name, dwarf)                                                                \
    NO_ASAN __attribute__((noinline)) static size_t name(uint64_t *frames, size_t max,             \
                                                         unsigned skip)                            \
    {                                                                                              \
        uintptr_t fp = (uintptr_t)__builtin_frame_address(0);                                      \
        if (!walk_can_start(fp))                                                                   \
            return 0;                                                                              \
        return walk(frames, max, skip, fp, dwarf);                                                 \
    }

DEFINE_CAPTURE(fp_capture, false)

static const ht_unwinder unwinder_fp = {"fp", fp_init, fp_capture};

#if HT_HAVE_CFI
/* Rules per return address from cfi_map.c's cache; a frame whose rule is UNSUP hands the
 * capture to libunwind (cfi_fallback, which counts on being called from here: unwind.c is
 * built without sibling calls). */
DEFINE_CAPTURE(cfi_capture, true)

static const ht_unwinder unwinder_cfi = {"dwarf", cfi_init, cfi_capture};
#endif

/* -- choice ---------------------------------------------------------------------------------- */

bool ht__unwind_have_dwarf(void)
{
    return HT_HAVE_CFI != 0 || HT_HAVE_LIBUNWIND != 0;
}

bool ht__unwind_have_libunwind(void)
{
    return HT_HAVE_LIBUNWIND != 0;
}

void ht__unwind_refresh(void)
{
#if HT_HAVE_CFI
    (void)ht__cfi_map_refresh();
#endif
}

uint64_t ht__unwind_n_fallback(void)
{
#if HT_HAVE_CFI
    return atomic_load_explicit(&g_n_fallback, memory_order_relaxed);
#else
    return 0;
#endif
}

void ht__unwind_fini(void)
{
#if HT_HAVE_CFI
    ht__cfi_map_fini();
#endif
}

const ht_unwinder *ht__unwind_get(ht_unwind_kind kind)
{
    switch (kind) {
    case HT_UNWIND_FP:
        return &unwinder_fp;
    case HT_UNWIND_AUTO:
    case HT_UNWIND_DWARF:
#if HT_HAVE_CFI
        return &unwinder_cfi;
#elif HT_HAVE_LIBUNWIND
        return &unwinder_libunwind;
#else
        return kind == HT_UNWIND_AUTO ? &unwinder_fp : NULL;
#endif
    case HT_UNWIND_LIBUNWIND:
#if HT_HAVE_LIBUNWIND
        return &unwinder_libunwind;
#else
        return NULL;
#endif
    }
    return NULL;
}

int ht__unwind_kind_from_name(const char *name)
{
    if (name == NULL || name[0] == '\0' || strcmp(name, "auto") == 0)
        return HT_UNWIND_AUTO;
    if (strcmp(name, "fp") == 0)
        return HT_UNWIND_FP;
    if (strcmp(name, "dwarf") == 0)
        return HT_UNWIND_DWARF;
    if (strcmp(name, "libunwind") == 0)
        return HT_UNWIND_LIBUNWIND;
    return -1;
}
