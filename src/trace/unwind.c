/* unwind.c — the stack-capture strategies: a frame-pointer walker bounded by this thread's
 * stack mapping (read once per thread from /proc/self/maps with raw syscalls, because
 * pthread_getattr_np mallocs), the own DWARF CFI walker on x86-64 (rules from cfi_map.c's
 * cache; a frame it cannot describe hands the whole capture to libunwind), and libunwind's
 * local unwinder when it was found at build time. Runs inside malloc: never calls malloc,
 * stdio or pthread functions that allocate; per-thread state is initial-exec TLS. Built with
 * frame pointers. */
#include "trace/stack.h"

#include "trace/cfi.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

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

/* -- frame-pointer walker -------------------------------------------------------------------- */

static bool fp_init(void)
{
    uintptr_t lo, hi;
    return ht__unwind_thread_bounds(&lo, &hi);
}

/* Each frame is {saved fp, return address} at fp (x86-64 rbp, AArch64 x29). A frame is
 * trusted only when fp lies in [current sp, t_hi - 16], is 8-aligned, and each next fp is
 * strictly above the previous one (so the walk ends and stays in mapped memory). The first
 * return address read is this function's own (into ht__stack_capture): skipped. */
NO_ASAN __attribute__((noinline)) static size_t fp_capture(uint64_t *frames, size_t max,
                                                           unsigned skip)
{
    uintptr_t fp = (uintptr_t)__builtin_frame_address(0);
    if (!(t_lo <= fp && fp < t_hi) && !bounds_refresh(fp))
        return 0;
    if (t_hi - fp < 2 * sizeof(uintptr_t))
        return 0;
    /* fp is trusted iff fp - lo <= span (one unsigned compare for both bounds) and aligned */
    const uintptr_t lo = fp, span = t_hi - 2 * sizeof(uintptr_t) - lo;
    size_t n = 0;
    for (unsigned i = 0; i <= skip; i++) { /* skip + 1 frames, the first into our caller */
        const uintptr_t *frame = (const uintptr_t *)fp;
        uintptr_t next = frame[0];
        if (frame[1] < 4096 || next <= fp || next - lo > span ||
            (next & (sizeof(uintptr_t) - 1)) != 0)
            return 0;
        fp = next;
    }
    while (n < max) {
        const uintptr_t *frame = (const uintptr_t *)fp;
        uintptr_t next = frame[0], ra = frame[1];
        if (ra < 4096)
            break;
        frames[n++] = ra;
        if (next <= fp || next - lo > span || (next & (sizeof(uintptr_t) - 1)) != 0)
            break;
        fp = next;
    }
    return n;
}

static const ht_unwinder unwinder_fp = {"fp", fp_init, fp_capture};

/* -- DWARF via libunwind ------------------------------------------------------------------- */

#if HT_HAVE_LIBUNWIND
/* unw_backtrace: libunwind's fast path (a per-thread cache of per-address CFA rules, mmap'ed,
 * keyed by pthread_setspecific once per thread) with a unw_step fallback for odd frames.
 * Its first entry is the address inside this function, then the return address into
 * ht__stack_capture: both skipped. */
#define DWARF_OWN_FRAMES 2u

static bool dwarf_init(void)
{
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

/* One step of the walk: the caller of the frame whose pc is *ra and whose rsp is *sp, by
 * the rule word w (NORMAL): CFA = (rbp or rsp) + off, return address at CFA - 8, rbp
 * unchanged or reloaded from CFA - 8k; the caller's rsp is the CFA. Every read lies in
 * [*sp, top] and the new sp is above the old one, so a walk ends and never leaves the stack
 * mapping. False when the rule points outside that. */
NO_ASAN static inline bool cfi_step(uint64_t w, uintptr_t *ra, uintptr_t *sp, uintptr_t *rbp,
                                    uintptr_t top)
{
    uintptr_t cfa = ((w & HT_CFI_W_RBPCFA) != 0 ? *rbp : *sp) + HT_CFI_W_OFF(w);
    uintptr_t ra_slot = cfa - sizeof(uintptr_t);
    if (ra_slot - *sp > top - *sp)
        return false; /* below the current sp or past the stack's top */
    unsigned k = HT_CFI_W_RBPK(w);
    uintptr_t next_ra = *(const uintptr_t *)ra_slot;
    if (k != 0) {
        uintptr_t rbp_slot = cfa - 8u * k;
        if (rbp_slot < *sp)
            return false;
        *rbp = *(const uintptr_t *)rbp_slot;
    }
    *ra = next_ra;
    *sp = cfa;
    return true;
}

/* A return address worth looking up: user space, not in the first page. */
static inline bool ra_plausible(uintptr_t ra)
{
    return ra - 4096 < ((uintptr_t)1 << 47) - 4096;
}

/* Walks by per-return-address rules (cfi_step), starting from this function's own frame
 * (built with a frame pointer); the first skip + 1 return addresses (the first one is into
 * the capture's caller) are stepped over, not stored. A frame whose rule is not NORMAL ends
 * the walk (OUTER) or hands the capture to libunwind (UNSUP). */
NO_ASAN __attribute__((noinline)) static size_t cfi_capture(uint64_t *frames, size_t max,
                                                            unsigned skip)
{
    uintptr_t fp = (uintptr_t)__builtin_frame_address(0);
    if (!(t_lo <= fp && fp < t_hi) && !bounds_refresh(fp))
        return 0;
    if (t_hi - fp < 2 * sizeof(uintptr_t))
        return 0;
    _Atomic uint64_t *cache = ht__cfi_cache;
    const uint64_t want = atomic_load_explicit(&ht__cfi_gen_tag, memory_order_relaxed) |
                          (uint64_t)HT_CFI_W_NORMAL << 26;
    const uintptr_t top = t_hi - sizeof(uintptr_t); /* highest readable word */
    const uintptr_t *own = (const uintptr_t *)fp;
    uintptr_t rbp = own[0], ra = own[1], sp = fp + 2 * sizeof(uintptr_t);
    size_t n = 0;
    uint64_t w;
    for (unsigned i = 0; i <= skip; i++) { /* ra is into the caller's caller afterwards */
        if (!ra_plausible(ra))
            return 0;
        w = ht__cfi_rule(cache, want, ra);
        if (HT_CFI_W_KIND(w) != HT_CFI_W_NORMAL)
            goto not_normal;
        if (!cfi_step(w, &ra, &sp, &rbp, top))
            return 0;
    }
    while (n < max && ra_plausible(ra)) {
        frames[n++] = ra;
        w = ht__cfi_rule(cache, want, ra);
        if (HT_CFI_W_KIND(w) != HT_CFI_W_NORMAL)
            goto not_normal;
        if (!cfi_step(w, &ra, &sp, &rbp, top))
            break;
    }
    return n;
not_normal:
    if (HT_CFI_W_KIND(w) == HT_CFI_W_OUTER)
        return n;
    return cfi_fallback(frames, max, skip, n);
}

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
