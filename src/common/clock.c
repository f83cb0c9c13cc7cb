/* clock.c — the trace clock strategy (selection, calibration) and the stamp -> ns map (see
 * clock.h and docs/decisions/0002). The map is a list of pieces f(x) = m0 + (x - t0) * mult /
 * 2^32, appended (never changed) by one refresher at a time; piece k + 1 starts at a fresh
 * calibration tick t with m0 = f_k(t), so f is continuous and nondecreasing. Never mallocs. */
#include "common/clock.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__extension__ typedef unsigned __int128 u128;

#if defined(__x86_64__)
#define HAVE_TSC true
#else
#define HAVE_TSC false
#endif

#define PIECES_MAX  (1u << 18) /* 6 MiB reserved, touched as used; then the last one extends */
#define MULT_SHIFT  32
#define CALIB_NS    1000000u    /* the first calibration: 1 ms */
#define FIRST_NS    10000000u   /* first refresh after 10 ms, then the interval doubles ... */
#define INTERVAL_NS 100000000u  /* ... up to 100 ms */
#define HORIZON_NS  500000000.0 /* a measured error is steered away over this much time */
#define ERR_NEW_NS  200.0       /* a new piece only when the map is off by more than this */

typedef struct clock_piece {
    uint64_t t0;   /* first tick of the piece */
    uint64_t m0;   /* CLOCK_MONOTONIC ns at t0 (by the map) */
    uint64_t mult; /* ns per tick, 32.32 fixed point */
} clock_piece;

_Atomic ht_clock_kind ht__os_clock = HT_CLOCK_MONOTONIC;
_Alignas(64) ht_os_clock_line ht__os_clock_line;

static clock_piece *g_pieces;               /* PIECES_MAX, mapped at init */
static _Atomic uint32_t g_n;                /* pieces published (release) */
static _Atomic uint64_t g_next_check;       /* tick from which a refresh is due */
static atomic_int g_refreshing;             /* 1 while one thread refreshes */
static uint64_t g_prev_t, g_prev_m;         /* the last calibration pair (refresher only) */
static uint64_t g_interval, g_interval_max; /* ticks between refreshes (refresher only) */

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static bool g_tsc_ok; /* set once by init_once */

/* -- the map ----------------------------------------------------------------------------- */

static inline uint64_t piece_eval(const clock_piece *p, uint64_t x)
{
    if (x >= p->t0)
        return p->m0 + (uint64_t)(((u128)(x - p->t0) * p->mult) >> MULT_SHIFT);
    uint64_t d = (uint64_t)(((u128)(p->t0 - x) * p->mult) >> MULT_SHIFT);
    return d < p->m0 ? p->m0 - d : 0;
}

/* One calibration pair: the tightest of a few (tsc, mono, tsc) brackets, tsc at its middle. */
static void pair_take(uint64_t *t, uint64_t *m)
{
    uint64_t best = UINT64_MAX;
    for (int i = 0; i < 5; i++) {
        uint64_t a = ht__os_tsc_ordered();
        uint64_t mono = ht__os.now_ns();
        uint64_t b = ht__os_tsc_ordered();
        if (b - a < best) {
            best = b - a;
            *t = a + (b - a) / 2;
            *m = mono;
        }
    }
}

static uint64_t mult_of(double ns_per_tick)
{
    return (uint64_t)(ns_per_tick * 4294967296.0 + 0.5);
}

/* Takes a pair; appends a piece whose slope is the recent rate plus the error over the
 * horizon when the map has drifted by more than ERR_NEW_NS. One thread at a time; a thread
 * that finds another refreshing simply converts with the current piece. */
static void refresh(void)
{
    int expected = 0;
    if (!atomic_compare_exchange_strong(&g_refreshing, &expected, 1))
        return;
    uint64_t t = 0, m = 0;
    pair_take(&t, &m);
    uint32_t n = atomic_load_explicit(&g_n, memory_order_relaxed);
    const clock_piece *cur = &g_pieces[n - 1];
    if (t > cur->t0 && t > g_prev_t && m > g_prev_m) {
        uint64_t f = piece_eval(cur, t);
        double rate = (double)(m - g_prev_m) / (double)(t - g_prev_t); /* ns per tick */
        double err = (double)m - (double)f;                            /* ns behind mono */
        double slope = rate + err * rate / HORIZON_NS; /* err ns over HORIZON_NS of ticks */
        if (slope < rate * 0.5)
            slope = rate * 0.5;
        if (slope > rate * 1.5)
            slope = rate * 1.5;
        if ((err > ERR_NEW_NS || err < -ERR_NEW_NS) && n < PIECES_MAX) {
            g_pieces[n] = (clock_piece){.t0 = t, .m0 = f, .mult = mult_of(slope)};
            atomic_store_explicit(&g_n, n + 1, memory_order_release);
        }
        g_prev_t = t;
        g_prev_m = m;
        if (g_interval < g_interval_max)
            g_interval = 2 * g_interval < g_interval_max ? 2 * g_interval : g_interval_max;
    }
    atomic_store_explicit(&g_next_check, t + g_interval, memory_order_relaxed);
    atomic_store_explicit(&g_refreshing, 0, memory_order_release);
}

uint64_t ht__clock_to_ns(uint64_t stamp)
{
    if ((stamp & HT_STAMP_TSC) == 0)
        return stamp;
    stamp &= ~HT_STAMP_TSC;
    if (stamp >= atomic_load_explicit(&g_next_check, memory_order_relaxed))
        refresh();
    uint32_t n = atomic_load_explicit(&g_n, memory_order_acquire);
    if (stamp >= g_pieces[n - 1].t0)
        return piece_eval(&g_pieces[n - 1], stamp);
    /* An older stamp (a packet that waited): the last piece starting at or before it. */
    uint32_t lo = 0, hi = n - 1; /* g_pieces[hi].t0 > stamp */
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (g_pieces[mid].t0 <= stamp)
            lo = mid;
        else
            hi = mid;
    }
    return piece_eval(&g_pieces[lo], stamp);
}

void ht__clock_view_get(ht_clock_view *v)
{
    uint32_t n = atomic_load_explicit(&g_n, memory_order_acquire);
    if (n == 0) {
        *v = (ht_clock_view){0, 0, 0, 0};
        return;
    }
    const clock_piece *p = &g_pieces[n - 1];
    v->t0 = p->t0;
    v->m0 = p->m0;
    v->mult = p->mult;
    v->until = atomic_load_explicit(&g_next_check, memory_order_relaxed);
}

uint32_t ht__clock_pieces(void)
{
    return g_tsc_ok ? atomic_load(&g_n) : 0;
}

/* -- selection and calibration ----------------------------------------------------------- */

/* True when the "flags" line of /proc/cpuinfo (its first one) has every word in words. */
static bool cpuinfo_flags(const char *const *words, size_t n_words)
{
    static char buf[32768]; /* init runs once */
    int fd = open("/proc/cpuinfo", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    size_t used = 0;
    for (;;) {
        ssize_t k = read(fd, buf + used, sizeof buf - 1 - used);
        if (k <= 0)
            break;
        used += (size_t)k;
        if (used == sizeof buf - 1)
            break;
    }
    close(fd);
    buf[used] = '\0';
    char *line = strstr(buf, "\nflags");
    if (line == NULL)
        return false;
    char *end = strchr(line + 1, '\n');
    if (end == NULL)
        return false; /* cut off: do not guess */
    *end = ' ';
    end[1] = '\0';
    for (size_t i = 0; i < n_words; i++) {
        char word[64];
        size_t len = strlen(words[i]);
        if (len + 3 > sizeof word)
            return false;
        word[0] = ' ';
        memcpy(word + 1, words[i], len);
        word[len + 1] = ' ';
        word[len + 2] = '\0';
        if (strstr(line, word) == NULL)
            return false;
    }
    return true;
}

static ht_clock_kind select_kind(void)
{
    const char *env = secure_getenv("HEAPTRAIL_CLOCK");
    if (!HAVE_TSC || (env != NULL && strcmp(env, "monotonic") == 0))
        return HT_CLOCK_MONOTONIC;
    if (env != NULL && strcmp(env, "tsc") == 0)
        return HT_CLOCK_TSC;
    static const char *const need[] = {"constant_tsc", "nonstop_tsc"};
    return cpuinfo_flags(need, 2) ? HT_CLOCK_TSC : HT_CLOCK_MONOTONIC;
}

static void after_fork_child(void)
{
    atomic_store(&g_refreshing, 0); /* a refresher in another thread of the parent is gone */
}

/* The first piece: the rate over CALIB_NS of busy waiting. False when the TSC looks unusable
 * (not advancing, or an implausible rate). */
static bool calibrate(void)
{
    g_pieces = ht__os.map_rw((size_t)PIECES_MAX * sizeof(clock_piece));
    if (g_pieces == NULL)
        return false;
    uint64_t t0 = 0, m0 = 0, t1 = 0, m1 = 0;
    pair_take(&t0, &m0);
    while (ht__os.now_ns() - m0 < CALIB_NS) {
    }
    pair_take(&t1, &m1);
    if (t1 <= t0 || m1 <= m0)
        return false;
    double rate = (double)(m1 - m0) / (double)(t1 - t0);
    if (rate < 0.01 || rate > 100.0) /* 10 MHz .. 100 GHz */
        return false;
    g_pieces[0] = (clock_piece){.t0 = t1, .m0 = m1, .mult = mult_of(rate)};
    g_prev_t = t1;
    g_prev_m = m1;
    g_interval = (uint64_t)((double)FIRST_NS / rate);
    g_interval_max = (uint64_t)((double)INTERVAL_NS / rate);
    atomic_store_explicit(&g_next_check, t1 + g_interval, memory_order_relaxed);
    atomic_store_explicit(&g_n, 1, memory_order_release);
    return true;
}

static void init_once(void)
{
    if (select_kind() != HT_CLOCK_TSC)
        return;
    if (!calibrate())
        return;
    pthread_atfork(NULL, NULL, after_fork_child);
    g_tsc_ok = true;
}

ht_clock_kind ht__clock_init(void)
{
    pthread_once(&g_once, init_once);
    return g_tsc_ok ? HT_CLOCK_TSC : HT_CLOCK_MONOTONIC;
}

void ht__clock_use(ht_clock_kind kind)
{
    bool tsc = kind == HT_CLOCK_TSC && ht__clock_init() == HT_CLOCK_TSC;
    atomic_store(&ht__os_clock, tsc ? HT_CLOCK_TSC : HT_CLOCK_MONOTONIC);
    ht__os_clock_word_publish(); /* before the session's first event */
}
