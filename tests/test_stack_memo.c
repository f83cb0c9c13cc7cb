/* test_stack_memo.c — the walkers' memo (src/trace/unwind.c) never returns a stale stack:
 * recursions through two identical copies of each level function (same frame sizes, so
 * every slot address coincides from one capture to the next while the return addresses
 * differ), chosen by the bits of a pattern, captured over and over in orders that make
 * remembered walks match at every depth; each capture is checked against an uncached walk
 * (libunwind for DWARF, a plain frame-pointer walk written here for fp), and the memo must
 * have answered whole captures and partial ones. Again with captures cut short (a depth and
 * a skip: remembered walks that end at the depth, replays that stop there) and from 50 frames
 * deeper (walks longer than a memo way holds). Built with frame pointers. */
#include "harness.h"

#include "trace/stack.h"

#include <alloca.h>
#include <pthread.h>
#include <stdbool.h>

#if defined(__SANITIZE_THREAD__)
#define ON_TSAN 1
#else
#define ON_TSAN 0
#endif

#define MAXF  96u
#define DEPTH 12u

typedef struct tally {
    unsigned n_compared, n_differ, n_whole, n_part;
} tally;

static const ht_unwinder *g_u;  /* the walker under test */
static bool g_dwarf;            /* reference: libunwind (else the plain fp walk) */
static const ht_unwinder *g_lu; /* libunwind */
static tally g_t;
static size_t g_max = MAXF; /* the captures' max and skip */
static unsigned g_skip;
static uintptr_t g_other_ra; /* a return address into level_a/level_b (frame-pointer rule) */

/* The uncached frame-pointer walk, with the walker's own trust rules. */
__attribute__((noinline)) static size_t plain_fp(uint64_t *frames, size_t max)
{
    uintptr_t lo, hi;
    if (!ht__unwind_thread_bounds(&lo, &hi))
        return 0;
    const uintptr_t *fp = __builtin_frame_address(0);
    uintptr_t next = fp[0]; /* skip our own: start at the return into our caller's caller */
    size_t n = 0;
    while (n < max) {
        if (next <= (uintptr_t)fp || next > hi - 16 || (next & 7) != 0)
            break;
        fp = (const uintptr_t *)next;
        uintptr_t ra = fp[1];
        if (ra < 4096 || ra >= (uintptr_t)1 << 47)
            break;
        frames[n++] = ra;
        next = fp[0];
    }
    return n;
}

__attribute__((noinline)) static void check_here(void)
{
    uint64_t a[MAXF], full[MAXF];
    size_t na = g_u->capture(a, g_max, g_skip);
    unsigned memo = ht__unwind_memo_last;
    __asm__ volatile("" ::: "memory");
    size_t nfull = g_dwarf ? g_lu->capture(full, MAXF, 0) : plain_fp(full, MAXF);
    __asm__ volatile("" ::: "memory");
    /* the reference cut as the capture was: skip more frames dropped, at most max kept */
    const uint64_t *b = full + (nfull > g_skip ? g_skip : nfull);
    size_t nb = nfull > g_skip ? nfull - g_skip : 0;
    nb = nb < g_max ? nb : g_max;
    bool same = nfull < MAXF && na == nb && memcmp(a, b, na * sizeof a[0]) == 0;
    if (!same && g_t.n_differ == 0) {
        fprintf(stderr, "%s: memo %#x, %zu frames, reference %zu:\n", g_u->name, memo, na, nb);
        for (size_t i = 0; i < (na > nb ? na : nb); i++)
            fprintf(stderr, "  %2zu %#18llx %#18llx\n", i, i < na ? (unsigned long long)a[i] : 0ull,
                    i < nb ? (unsigned long long)b[i] : 0ull);
    }
    if (g_other_ra == 0 && na > 1)
        g_other_ra = (uintptr_t)a[1];
    g_t.n_compared++;
    g_t.n_differ += !same;
    g_t.n_whole += (memo & HT_UNWIND_MEMO_WHOLE) != 0;
    g_t.n_part += (memo & HT_UNWIND_MEMO_PART) != 0;
}

#define KEEP() __asm__ volatile("" ::: "memory")

static void level(unsigned depth, uint64_t pattern);

/* Two copies with the same body: same frame, different return addresses into them. */
#define LEVEL_COPY(name)                                                                           \
    __attribute__((noinline)) static void name(unsigned depth, uint64_t pattern)                   \
    {                                                                                              \
        volatile unsigned pad[4] = {depth, pattern, 0, 0};                                         \
        level(depth - 1, pattern);                                                                 \
        KEEP();                                                                                    \
        pad[2] = pad[0];                                                                           \
    }
LEVEL_COPY(level_a)
LEVEL_COPY(level_b)

/* check_here through one more frame, of another size: a capture whose first state differs
 * from the last one's while the frames above are the same (a remembered walk is then
 * reused from the second or third state on, and a cut capture reaches its depth inside the
 * reused part). */
__attribute__((noinline)) static void check_via(void)
{
    volatile unsigned pad[12] = {1, 2, 3};
    check_here();
    pad[3] = pad[0];
}

/* The same depth either way; bit depth of pattern picks the copy (bit 0: the capture's own
 * caller). */
__attribute__((noinline)) static void level(unsigned depth, uint64_t pattern)
{
    if (depth == 0 && (pattern & 1u) != 0)
        check_via();
    else if (depth == 0)
        check_here();
    else if ((pattern >> depth) & 1u)
        level_a(depth, pattern);
    else
        level_b(depth, pattern);
    KEEP();
}

/* With alloca (an rbp-based CFA for DWARF) of a size from the pattern's low bits: the same
 * return addresses above, different sps below. */
__attribute__((noinline)) static void with_alloca(unsigned pattern)
{
    size_t size = 16u + 32u * (pattern & 3u);
    char *p = alloca(size);
    memset(p, 1, size);
    __asm__ volatile("" : : "r"(p) : "memory");
    level(DEPTH, pattern);
    KEEP();
}

/* Makes this frame's saved-fp slot point at rec, a frame record {the caller's saved fp, a
 * return address of another function} inside the caller's frame, for the capture below:
 * the return addresses on the stack stay where they were, only a saved rbp changes. A memo
 * that checked return-address slots alone would answer the untouched stack. */

__attribute__((noinline)) static void relink(unsigned pattern, volatile uintptr_t *rec)
{
    uintptr_t *fp = __builtin_frame_address(0);
    uintptr_t saved = fp[0];
    if (rec != NULL) {
        rec[0] = ((const uintptr_t *)saved)[0];
        rec[1] = g_other_ra;
        __atomic_store_n(&fp[0], (uintptr_t)rec, __ATOMIC_RELAXED);
    }
    KEEP();
    level(DEPTH, pattern);
    KEEP();
    __atomic_store_n(&fp[0], saved, __ATOMIC_RELAXED);
    KEEP();
}

__attribute__((noinline)) static void relink_caller(unsigned pattern, bool fake)
{
    volatile uintptr_t rec[2] = {0, 0};
    relink(pattern, fake ? rec : NULL);
    KEEP();
}

/* Loop bounds the compiler cannot see, so that each loop below keeps one call site (a fully
 * unrolled loop would give each capture its own return address into run). */
static volatile unsigned g_three = 3, g_two = 2;

static void run(void)
{
    /* Patterns that differ in one bit, at every depth, in both directions, repeated. */
    for (unsigned round = 0; round < 3; round++)
        for (unsigned bit = 1; bit <= DEPTH; bit++) {
            unsigned base = 0x5a5u & ((1u << (DEPTH + 1)) - 1);
            /* one call site each: only the pattern differs between the captures */
            for (unsigned k = 0; k < g_three; k++)
                level(DEPTH, k == 1 ? base ^ (1u << bit) : base);
            for (unsigned k = 0; k < g_two; k++)
                with_alloca((k == 1 ? base ^ (1u << bit) : base) | round);
            for (unsigned k = 0; k < g_three && bit == 1; k++)
                relink_caller(base, k == 1);
        }
    /* Every pattern of the deepest four levels. */
    for (unsigned p = 0; p < 64; p++)
        level(DEPTH, p << 7 | p);
}

static void *thread_run(void *arg)
{
    (void)arg;
    run();
    return NULL;
}

/* n more frames (one function, so one return address) above run(). */
__attribute__((noinline)) static void deeper(unsigned n)
{
    if (n == 0)
        run();
    else
        deeper(n - 1);
    KEEP();
}

static void *thread_run_deep(void *arg)
{
    (void)arg;
    deeper(50);
    return NULL;
}

static void check_kind_with(ht_unwind_kind kind, bool on_thread, size_t max, unsigned skip,
                            bool deep);

/* The walker under test and the reference, a fresh tally. */
static bool walker_setup(ht_unwind_kind kind)
{
    ht_stack_config c = {kind, 0, 1024, 0};
    if (ht__stack_init(&c) != 0)
        return false;
    g_u = ht__unwind_get(kind);
    g_lu = ht__unwind_get(HT_UNWIND_LIBUNWIND);
    g_dwarf = kind == HT_UNWIND_DWARF;
    memset(&g_t, 0, sizeof g_t);
    return true;
}

/* The own DWARF walker is built in and libunwind is there to compare with. */
static bool have_own_dwarf(void)
{
    return ht__unwind_have_libunwind() && ht__unwind_get(HT_UNWIND_DWARF) != NULL &&
           strcmp(ht__unwind_get(HT_UNWIND_DWARF)->name, "dwarf") == 0;
}

static void check_kind(ht_unwind_kind kind, bool on_thread)
{
    static const struct {
        size_t max;
        unsigned skip;
        bool deep;
    } cuts[] = {{MAXF, 0, false}, {3, 0, false}, {7, 2, false}, {13, 1, false},
                {MAXF, 0, true},  {20, 3, true}, {55, 0, true}};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++)
        check_kind_with(kind, on_thread, cuts[i].max, cuts[i].skip, cuts[i].deep);
}

static void check_kind_with(ht_unwind_kind kind, bool on_thread, size_t max, unsigned skip,
                            bool deep)
{
    g_max = max;
    g_skip = skip;
    REQUIRE(walker_setup(kind));
    if (on_thread) {
        pthread_t t;
        REQUIRE(pthread_create(&t, NULL, deep ? thread_run_deep : thread_run, NULL) == 0);
        pthread_join(t, NULL);
    } else if (deep) {
        deeper(50);
    } else {
        run();
    }
    printf("%s%s, max %zu, skip %u%s: %u captures, %u whole from the memo, %u partly, %u differ\n",
           g_u->name, on_thread ? " (thread)" : "", max, skip, deep ? ", 50 frames deeper" : "",
           g_t.n_compared, g_t.n_whole, g_t.n_part, g_t.n_differ);
    CHECK_EQ_U(g_t.n_differ, 0);
    CHECK(g_t.n_compared == 3 * DEPTH * 5 + 3 * 3 + 64);
    /* Under TSan a frame-pointer walk on a thread ends in TSan's thread-start code, which
     * keeps no frame pointers: its last steps read slots TSan keeps changing, so no walk
     * there is ever reused (correctly). Elsewhere the memo must have been used. */
    if (!(ON_TSAN && on_thread && kind == HT_UNWIND_FP)) {
        if (max == MAXF && skip == 0 && !deep) {
            CHECK(g_t.n_whole >= 2 * DEPTH); /* the repeated pattern of each trio at least */
            CHECK(g_t.n_part >= DEPTH);      /* one-bit differences share the walk above the bit */
        } else {
            /* cut short, remembered walks end before the bits that differ; deep, the
             * recordings are full, never whole */
            CHECK(g_t.n_whole + g_t.n_part >= DEPTH);
        }
    }
    ht__stack_fini();
}

static void test_memo_fp(void)
{
    check_kind(HT_UNWIND_FP, false);
    check_kind(HT_UNWIND_FP, true);
}

static void test_memo_dwarf(void)
{
    if (!have_own_dwarf()) {
        printf("skip: no own DWARF walker or no libunwind to compare with\n");
        return;
    }
    check_kind(HT_UNWIND_DWARF, false);
    if (!ON_TSAN)
        check_kind(HT_UNWIND_DWARF, true); /* libunwind on an exiting thread crashes TSan */
}

/* Walks longer than a memo way holds (48 states) whose captures differ in one frame record
 * only: hop(d) calls a copy picked by bit d of the pattern through one call site, so the copy
 * changes the return address in one record (the frame above it, into the copy). Swept from
 * 20 to 80 frames out, ending in check_here directly or through check_via (both parities):
 * for some bit the difference lies in the last record a remembered walk read, the one a
 * replay resumes the real walk from (memo_holds checks records two at a time and an odd
 * last one on its own). */
static void hop(unsigned depth, uint64_t pattern);
#define HOP_COPY(name)                                                                             \
    __attribute__((noinline)) static void name(unsigned depth, uint64_t pattern)                   \
    {                                                                                              \
        volatile unsigned pad[4] = {depth, 0, 0, 0};                                               \
        hop(depth, pattern);                                                                       \
        KEEP();                                                                                    \
        pad[2] = pad[0];                                                                           \
    }
HOP_COPY(hop_a)
HOP_COPY(hop_b)
static void (*volatile g_hops[2])(unsigned, uint64_t) = {hop_a, hop_b};

__attribute__((noinline)) static void hop(unsigned depth, uint64_t pattern)
{
    if (depth == 0 && (pattern & 1u) != 0)
        check_via();
    else if (depth == 0)
        check_here();
    else
        g_hops[(pattern >> depth) & 1u](depth - 1, pattern); /* one call site for both */
    KEEP();
}

static void test_memo_far_difference(void)
{
    const ht_unwind_kind kinds[] = {HT_UNWIND_FP, HT_UNWIND_DWARF};
    for (size_t i = 0; i < 2; i++) {
        if (kinds[i] == HT_UNWIND_DWARF && !have_own_dwarf())
            continue;
        REQUIRE(walker_setup(kinds[i]));
        const uint64_t base = 0x5a5a5a5a5a5a5a5aull & ((1ull << 41) - 1);
        for (uint64_t bottom = 0; bottom < 2; bottom++)
            for (unsigned bit = 10; bit <= 40; bit++)
                for (unsigned k = 0; k < g_three; k++)
                    hop(40, (k == 1 ? base ^ (1ull << bit) : base) | bottom);
        printf("%s, far differences: %u captures, %u whole from the memo, %u partly, %u differ\n",
               g_u->name, g_t.n_compared, g_t.n_whole, g_t.n_part, g_t.n_differ);
        CHECK_EQ_U(g_t.n_differ, 0);
        CHECK(g_t.n_part >= 62); /* the third of each trio at least */
        ht__stack_fini();
    }
}

/* A fixed outer recursion (up to 60 frames: longer than a memo way's 48 states) over an
 * inner one whose depth changes from capture to capture, cut at depths on both sides of 48
 * and with skips: remembered walks are reused from their middle, replays stop at the depth
 * or where the recording is full, and resume for real where a remembered walk stopped. */
__attribute__((noinline)) static void inner(unsigned k)
{
    if (k > 0)
        inner(k - 1);
    else
        check_here();
    KEEP();
}

__attribute__((noinline)) static void outer(unsigned n, unsigned k)
{
    if (n > 0)
        outer(n - 1, k);
    else
        inner(k);
    KEEP();
}

static void long_cuts(ht_unwind_kind kind)
{
    REQUIRE(walker_setup(kind));
    static const unsigned outers[] = {5, 20, 30, 40, 60};
    static const size_t maxes[] = {3, 8, 20, 33, 47, 48, 49, 60, 90};
    for (size_t io = 0; io < sizeof outers / sizeof outers[0]; io++)
        for (size_t im = 0; im < sizeof maxes / sizeof maxes[0]; im++)
            for (unsigned skip = 0; skip < 4; skip++)
                for (unsigned k = 0; k < 28; k++) {
                    g_max = maxes[im];
                    g_skip = skip;
                    outer(outers[io], (k * 5) % 14);
                }
    printf("%s, long cuts: %u captures, %u whole from the memo, %u partly, %u differ\n", g_u->name,
           g_t.n_compared, g_t.n_whole, g_t.n_part, g_t.n_differ);
    CHECK_EQ_U(g_t.n_differ, 0);
    CHECK(g_t.n_part >= g_t.n_compared / 2);
    g_max = MAXF;
    g_skip = 0;
    ht__stack_fini();
}

static void test_memo_long_cuts(void)
{
    long_cuts(HT_UNWIND_FP);
    if (have_own_dwarf())
        long_cuts(HT_UNWIND_DWARF);
}

TEST_MAIN(TEST(test_memo_fp), TEST(test_memo_dwarf), TEST(test_memo_long_cuts),
          TEST(test_memo_far_difference))
