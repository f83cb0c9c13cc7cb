/* clock.h — the trace clock's conversion: event stamps (src/common/os.h, ht__os_stamp) to
 * CLOCK_MONOTONIC ns. With the TSC strategy, a piecewise-linear map of TSC ticks kept close
 * to CLOCK_MONOTONIC by calibration pairs (tsc, mono) taken at least every 100 ms by whoever
 * converts (the writer thread, the crash path, the consumer path): a new piece starts where
 * the last one ends (continuous) with a slope steered to absorb the measured error, so the map
 * is nondecreasing and a tick value converts to the same ns whenever and by whichever thread
 * it is converted. Never mallocs (one mmap at init); lock-free readers. docs/decisions/0002. */
#ifndef HT_COMMON_CLOCK_H
#define HT_COMMON_CLOCK_H

#include "common/os.h"

#include <stdint.h>

/* Selects what the process may use, once (HEAPTRAIL_CLOCK=monotonic|tsc, else TSC when
 * /proc/cpuinfo shows constant_tsc and nonstop_tsc on x86-64), and calibrates the TSC (about
 * 1 ms, the first time only). Returns HT_CLOCK_TSC when usable. Thread-safe, idempotent. */
ht_clock_kind ht__clock_init(void);

/* Sets the clock stamps are taken in from now on (ht__os_clock): HT_CLOCK_TSC only when
 * ht__clock_init found it usable; else HT_CLOCK_MONOTONIC. */
void ht__clock_use(ht_clock_kind kind);

/* Stamp -> CLOCK_MONOTONIC ns: a TSC stamp (HT_STAMP_TSC) through the map, nondecreasing in
 * the ticks; any other stamp is already ns. Async-signal-safe (a refresh it cannot take is
 * skipped). */
uint64_t ht__clock_to_ns(uint64_t stamp);

/* A converter's snapshot of the newest piece, for converting a run of stamps without the
 * shared loads per stamp (the writer, one packet at a time). Same answers as ht__clock_to_ns
 * while no other thread appends a piece meanwhile (in a file-only session the writer, or the
 * crash path in its place, is the only converter). */
typedef struct ht_clock_view {
    uint64_t t0, m0, mult; /* the piece */
    uint64_t until;        /* ticks from which ht__clock_to_ns must decide (a refresh is due) */
} ht_clock_view;

/* Takes the snapshot (until = 0 under HT_CLOCK_MONOTONIC or before init: every TSC stamp
 * goes through ht__clock_to_ns). */
void ht__clock_view_get(ht_clock_view *v);

/* ht__clock_to_ns(stamp), through the snapshot when the stamp falls inside it. */
static inline uint64_t ht__clock_view_ns(const ht_clock_view *v, uint64_t stamp)
{
    if ((stamp & HT_STAMP_TSC) == 0)
        return stamp;
    uint64_t x = stamp & ~HT_STAMP_TSC;
    if (x >= v->t0 && x < v->until) {
        __extension__ typedef unsigned __int128 u128_;
        return v->m0 + (uint64_t)(((u128_)(x - v->t0) * v->mult) >> 32);
    }
    return ht__clock_to_ns(stamp);
}

/* Testing and diagnostics: pieces of the map so far (>= 1 once the TSC is usable, else 0). */
uint32_t ht__clock_pieces(void);

#endif
