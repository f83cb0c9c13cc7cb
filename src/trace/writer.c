/* writer.c — the writer thread: takes sealed packets from every thread buffer (whole, in
 * registration order), encodes them into chunks with ht__enc_* and writes them with
 * ht__os.write, whole chunks only; at stop, the lost-count chunks and the end summary; on a
 * fatal signal, the same flush from the crashing thread, plus the committed records of every
 * other thread's current packet (up to its ht_tbuf.pos). With stacks on, also the metadata:
 * the module snapshot and its load/unload changes (polled at each wake-up), and each new
 * stack's definition, written before the first event chunk that uses it. Owns the per-tid streams
 * and the encoding buffer (whoever holds io_owner uses them). Never mallocs, never touches a slot
 * the owner may still write, never writes part of a chunk on purpose. */
#include "trace/internal.h"

#include "common/clock.h"
#include "common/os.h"
#include "trace/format.h"
#include "trace/stack.h"
#include "trace/trace.h"

#include <errno.h>
#include <sched.h>
#include <linux/futex.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define OUT_MIN_SIZE ((size_t)1 << 20)

static size_t stream_ix_size(void)
{
    return (size_t)2 * HT_REC_MAX_THREADS * sizeof(uint32_t);
}

static size_t unbuf_size(void)
{
    return (size_t)HT_REC_UNBUF_MAX * sizeof(ht_unbuf);
}

static size_t streams_size(void)
{
    return (size_t)HT_REC_MAX_THREADS * sizeof(ht_wstream);
}

/* -- file output ------------------------------------------------------------------------- */

bool ht__writer_write(const void *p, size_t size)
{
    const uint8_t *q = p;
    while (size > 0) {
        ssize_t n = ht__os.write(ht__rec.fd, q, size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int expected = 0;
            atomic_compare_exchange_strong(&ht__rec.io_error, &expected, n < 0 ? errno : EIO);
            return false;
        }
        q += n;
        size -= (size_t)n;
        atomic_fetch_add_explicit(&ht__rec.file_size, (uint64_t)n, memory_order_relaxed);
    }
    return true;
}

static uint64_t g_out_events; /* events encoded into out, not yet written */

/* Writes the encoded chunks; on failure their events count as lost. */
static bool out_flush(void)
{
    bool ok = true;
    if (ht__rec.out_used > 0 && atomic_load(&ht__rec.io_error) == 0)
        ok = ht__writer_write(ht__rec.out, ht__rec.out_used);
    else if (ht__rec.out_used > 0)
        ok = false;
    if (!ok)
        ht__rec.n_lost_io += g_out_events;
    ht__rec.out_used = 0;
    g_out_events = 0;
    return ok;
}

/* -- streams ----------------------------------------------------------------------------- */

/* The stream for b's tid; a buffer whose tid an earlier buffer of this session had (the
 * kernel reused it) continues that stream, carrying its lost count. */
/* The slot of tid in stream_ix: its stream's, or the empty one where it would go. */
static uint32_t stream_slot(uint32_t tid)
{
    uint32_t mask = 2 * HT_REC_MAX_THREADS - 1;
    uint32_t h = (tid * 0x9E3779B1u) & mask;
    while (ht__rec.stream_ix[h] != 0 && ht__rec.streams[ht__rec.stream_ix[h] - 1].enc.tid != tid)
        h = (h + 1) & mask;
    return h;
}

static ht_wstream *stream_for(ht_tbuf *b)
{
    if (b->stream != 0)
        return &ht__rec.streams[b->stream - 1];
    uint32_t h = stream_slot(b->tid);
    if (ht__rec.stream_ix[h] != 0) {
        ht_wstream *s = &ht__rec.streams[ht__rec.stream_ix[h] - 1];
        if (s->cur != b) {
            if (s->cur != NULL)
                s->lost_base += atomic_load(&s->cur->n_lost);
            s->cur = b;
        }
        b->stream = ht__rec.stream_ix[h];
        return s;
    }
    /* At most HT_REC_MAX_THREADS buffers per session, so there is always room. */
    ht_wstream *s = &ht__rec.streams[ht__rec.n_streams++];
    memset(s, 0, sizeof *s);
    s->enc.tid = b->tid;
    s->enc.next_seq = b->first_seq;
    s->cur = b;
    ht__rec.stream_ix[h] = ht__rec.n_streams;
    b->stream = ht__rec.n_streams;
    return s;
}

/* -- metadata: stacks and modules ------------------------------------------------------- */

/* The metadata chunk being built at out + out_used (whoever holds io_owner). It is always
 * closed before anything else is encoded into out, so chunks stay in file order. */
static ht_enc_meta g_meta;
static bool g_meta_open;

#define META_ROOM ((size_t)16 << 10) /* > the largest record: a 256-frame stack, a module */

static void meta_close(void)
{
    if (!g_meta_open)
        return;
    g_meta_open = false;
    if (g_meta.n_records == 0)
        return; /* nothing added: the space is simply reused */
    ht__rec.out_used += ht__enc_meta_end(&g_meta);
    ht__rec.meta_seq++;
    atomic_fetch_add_explicit(&ht__rec.n_chunks, 1, memory_order_relaxed);
}

static void meta_open(void)
{
    if (g_meta_open)
        return;
    if (ht__rec.out_cap - ht__rec.out_used < META_ROOM)
        out_flush();
    ht__enc_meta_begin(&g_meta, ht__rec.out + ht__rec.out_used, ht__rec.out_cap - ht__rec.out_used,
                       ht__rec.meta_seq);
    g_meta_open = true;
}

/* Runs add until it fits, starting a new chunk (after a flush) once. */
#define META_ADD(add)                                                                              \
    do {                                                                                           \
        meta_open();                                                                               \
        if (add)                                                                                   \
            return true;                                                                           \
        meta_close();                                                                              \
        out_flush();                                                                               \
        meta_open();                                                                               \
        return (add);                                                                              \
    } while (0)

static bool meta_stack_cb(uint32_t id, const uint64_t *frames, size_t n, void *ctx)
{
    (void)ctx;
    META_ADD(ht__enc_meta_stack(&g_meta, id, frames, n));
}

static bool meta_module(ht_module_change change, const ht_module *m, uint64_t ts)
{
    if (change == HT_MODULE_LOAD)
        META_ADD(ht__enc_meta_module(&g_meta, ts, m->base, m->size, m->path, m->path_size,
                                     m->build_id, m->build_id_size));
    META_ADD(ht__enc_meta_unload(&g_meta, ts, m->base));
}

static void meta_module_cb(ht_module_change change, const ht_module *m, void *ctx)
{
    meta_module(change, m, *(const uint64_t *)ctx);
}

/* Defines every stack up to need (at least), waiting briefly for ids another thread is
 * still publishing. Returns the highest id now defined. The caller holds io_owner. */
static uint32_t stacks_define(uint32_t need)
{
    for (unsigned spins = 0;; spins++) {
        ht__rec.stack_hi = ht__stack_drain(meta_stack_cb, NULL);
        if (ht__rec.stack_hi >= need || spins >= 1000)
            break;
        sched_yield();
    }
    meta_close();
    return ht__rec.stack_hi;
}

/* The module snapshot the first time, then the changes since (writer thread only: the
 * loader's lock is taken). The caller holds io_owner. */
static void modules_write(void)
{
    if (!ht__rec.modules_done) {
        ht__rec.modules_done = true;
        ht__modules_snapshot(meta_module_cb, &ht__rec.start_ns);
    } else {
        uint64_t ts = ht__trace_now_ns();
        ht__modules_poll(meta_module_cb, &ts);
    }
    ht__unwind_refresh(); /* the DWARF walker's copies of the new objects' tables */
    meta_close();
}

/* Makes sure every stack id the packet's slots use is defined earlier in the file. An id
 * that cannot be defined (a thread stuck between interning and publishing) is cleared:
 * the event is written without its stack rather than with an undefined one. */
static void packet_stacks(ht_raw_event *slots, size_t n)
{
    uint32_t max = 0;
    for (size_t i = 0; i < n; i++)
        max = slots[i].stack_id > max ? slots[i].stack_id : max;
    if (max <= ht__rec.stack_hi)
        return;
    uint32_t hi = stacks_define(max);
    if (max <= hi)
        return;
    for (size_t i = 0; i < n; i++)
        if (slots[i].stack_id > hi)
            slots[i].stack_id = 0;
}

/* -- encoding ---------------------------------------------------------------------------- */

static uint64_t count_events(const ht_raw_event *slots, size_t n)
{
    uint64_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += !ht__raw_is_control(slots[i].type);
    return k;
}

/* Turns the events' stamps into CLOCK_MONOTONIC ns (src/common/clock.h), nondecreasing per
 * stream (a thread that moved to a CPU whose TSC lags keeps its order). Each slot exactly
 * once: a sealed packet is the writer's until the tail store; on the crash path, committed
 * slots the owner no longer writes, encoded once. */
static void packet_stamps_to_ns(ht_wstream *s, ht_raw_event *slots, size_t n)
{
    uint64_t last = s->last_ns;
    ht_clock_view v;
    ht__clock_view_get(&v);
    for (size_t i = 0; i < n; i++) {
        if (ht__raw_is_control(slots[i].type))
            continue;
        uint64_t ns = ht__clock_view_ns(&v, slots[i].ts_ns);
        last = ns > last ? ns : last;
        slots[i].ts_ns = last;
    }
    s->last_ns = last;
}

/* Encodes the first n_slots slots of pk (all of a sealed packet; the committed ones of a
 * current packet on the crash path). */
static void encode_packet(ht_wstream *s, ht_tbuf *b, ht_packet *pk, uint32_t n_slots)
{
    ht_raw_event *slots = (ht_raw_event *)(pk + 1);
    size_t n = n_slots <= ht__rec.slots_per_packet ? n_slots : ht__rec.slots_per_packet;
    uint64_t lost = s->lost_base + pk->n_lost;
    if (lost > s->enc.lost_so_far)
        s->enc.lost_so_far = lost;
    if (atomic_load(&ht__rec.io_error) != 0) {
        ht__rec.n_lost_io += count_events(slots, n);
        return;
    }
    packet_stamps_to_ns(s, slots, n);
    if (ht__rec.stack_depth != 0)
        packet_stacks(slots, n); /* the sealed packet is the writer's until the tail store */
    while (n > 0) {
        if (ht__rec.out_cap - ht__rec.out_used < HT_FMT_CHUNK_HDR_SIZE + HT_ENC_EVENT_MAX &&
            !out_flush()) {
            ht__rec.n_lost_io += count_events(slots, n);
            return;
        }
        size_t chunk_size = 0, n_bad = 0;
        uint64_t before = s->enc.n_events;
        size_t used = ht__enc_chunk(&s->enc, slots, n, ht__rec.out + ht__rec.out_used,
                                    ht__rec.out_cap - ht__rec.out_used, &chunk_size, &n_bad);
        uint64_t k = s->enc.n_events - before;
        ht__rec.out_used += chunk_size;
        ht__rec.n_bad_slots += n_bad;
        g_out_events += k;
        b->n_events += k;
        atomic_fetch_add_explicit(&ht__rec.n_events, k, memory_order_relaxed);
        if (chunk_size != 0)
            atomic_fetch_add_explicit(&ht__rec.n_chunks, 1, memory_order_relaxed);
        if (used == 0)
            break; /* cannot happen: cap was checked */
        slots += used;
        n -= used;
    }
}

/* Encodes and writes b's sealed packets [tail, head) and gives them back. The caller holds
 * io_owner. Returns true when there was something. */
static bool drain_buf(ht_tbuf *b, bool crash)
{
    if (b->packets == NULL)
        return false;
    uint64_t tail = atomic_load_explicit(&b->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&b->head, memory_order_acquire);
    if (tail == head)
        return false;
    ht_wstream *s = stream_for(b);
    for (uint64_t i = tail; i < head; i++) {
        ht_packet *pk = ht__packet_at(b, i);
        encode_packet(s, b, pk, pk->n_slots);
    }
    out_flush();
    atomic_fetch_add_explicit(&ht__rec.n_taken, head - tail, memory_order_relaxed);
    /* The owner, exiting, stores `exited`, gives back the packets it sees free (tail), then
     * waits while `draining` is 1 and looks at tail again (buf_thread_exit): so these packets
     * are given back here (exited seen) or by the owner (tail seen), all atomics seq_cst. */
    atomic_store(&b->draining, 1);
    if (!crash && atomic_load(&b->exited) != 0) {
        /* The thread is gone: give the pages back (they fault in again if it still emits
         * from a later destructor). Before the tail store, so the owner cannot be in them. */
        uint64_t n = head - tail < ht__rec.n_packets ? head - tail : ht__rec.n_packets;
        for (uint64_t i = tail; i < tail + n; i++)
            ht__os.decommit(ht__packet_at(b, i), ht__rec.packet_size);
    }
    atomic_store(&b->tail, head);
    atomic_store(&b->draining, 0);
    return true;
}

static bool io_acquire(int me)
{
    int expected = 0;
    return atomic_compare_exchange_strong(&ht__rec.io_owner, &expected, me);
}

static void io_release(void)
{
    atomic_store(&ht__rec.io_owner, 0);
}

/* One pass over the session's buffers in registration order. */
static bool drain_pass(int me)
{
    bool worked = false;
    uint64_t end = ht__rec_bufs_end();
    for (uint64_t i = ht__rec.first_buf; i < end; i++) {
        ht_tbuf *b = &ht__rec.bufs[i % HT_REC_MAX_THREADS];
        if (atomic_load_explicit(&b->gen, memory_order_acquire) != ht__rec.gen)
            continue; /* still registering (or a failed registration) */
        if (atomic_load(&ht__rec.crashed) != 0 || !io_acquire(me))
            return worked;
        worked |= drain_buf(b, false);
        io_release();
    }
    return worked;
}

/* Once, at the end (stop or the crash path), before the lost chunks and the summary: the
 * events of threads that got no buffer join their tid's lost count, in the tid's stream (a
 * new one, with no event chunk, when no buffered thread had the tid). The entries' sum is
 * kept for ht_trace_get_stats, since the table goes with the writer's maps. */
static void unbuf_fold(void)
{
    if (ht__rec.unbuf_folded || ht__rec.unbuf == NULL)
        return;
    ht__rec.unbuf_folded = true;
    uint32_t n = atomic_load(&ht__rec.n_unbuf);
    n = n < HT_REC_UNBUF_MAX ? n : HT_REC_UNBUF_MAX;
    uint64_t total = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t tid = atomic_load_explicit(&ht__rec.unbuf[i].tid, memory_order_relaxed);
        uint64_t lost = atomic_load_explicit(&ht__rec.unbuf[i].n_lost, memory_order_acquire);
        if (lost == 0)
            continue;
        uint32_t h = stream_slot(tid);
        ht_wstream *s;
        if (tid != 0 && ht__rec.stream_ix[h] != 0) {
            s = &ht__rec.streams[ht__rec.stream_ix[h] - 1];
        } else if (tid != 0 && ht__rec.n_streams < HT_REC_MAX_THREADS) {
            s = &ht__rec.streams[ht__rec.n_streams++];
            memset(s, 0, sizeof *s);
            s->enc.tid = tid;
            s->enc.next_seq = 1;
            ht__rec.stream_ix[h] = ht__rec.n_streams;
        } else { /* no tid yet (a thread still claiming its entry) or no stream left */
            atomic_fetch_add(&ht__rec.n_lost_unbuf, lost);
            continue;
        }
        s->lost_base += lost;
        total += lost;
    }
    ht__rec.unbuf_total = total;
}

/* Lost-count chunks for streams whose thread lost events after its last chunk. */
static void write_lost_chunks(void)
{
    unbuf_fold();
    for (uint32_t i = 0; i < ht__rec.n_streams; i++) {
        ht_wstream *s = &ht__rec.streams[i];
        uint64_t lost = s->lost_base + (s->cur != NULL ? atomic_load(&s->cur->n_lost) : 0);
        if (lost <= s->enc.lost_so_far)
            continue;
        s->enc.lost_so_far = lost;
        if (ht__rec.out_cap - ht__rec.out_used < HT_FMT_CHUNK_HDR_SIZE)
            out_flush();
        size_t k = ht__enc_lost_chunk(&s->enc, ht__rec.out + ht__rec.out_used,
                                      ht__rec.out_cap - ht__rec.out_used);
        ht__rec.out_used += k;
        if (k != 0)
            atomic_fetch_add_explicit(&ht__rec.n_chunks, 1, memory_order_relaxed);
    }
    out_flush();
}

static void write_end_summary(void)
{
    size_t n = ht__rec.n_streams;
    size_t totals_size = (n + 1) * sizeof(ht_enc_thread_total);
    size_t cap = HT_FMT_CHUNK_HDR_SIZE + 1 + 2 * HT_FMT_VARINT_MAX + n * 4 * HT_FMT_VARINT_MAX;
    size_t map_size = (totals_size + cap + HT_PAGE_SIZE - 1) & ~(size_t)(HT_PAGE_SIZE - 1);
    uint8_t *mem = ht__os.map_rw(map_size);
    if (mem == NULL) {
        atomic_store(&ht__rec.io_error, ENOMEM);
        return;
    }
    ht_enc_thread_total *t = (ht_enc_thread_total *)mem;
    for (size_t i = 0; i < n; i++) {
        const ht_wstream *s = &ht__rec.streams[i];
        t[i].tid = s->enc.tid;
        t[i].n_events = s->enc.n_events;
        /* As written by write_lost_chunks just before (on the crash path the owner may lose
         * more meanwhile: the file stays consistent with its last chunk). */
        t[i].n_lost = s->enc.lost_so_far;
        t[i].n_chunks = s->enc.n_chunks;
    }
    uint8_t *buf = mem + totals_size;
    size_t size = ht__enc_end(buf, cap, ht__rec.meta_seq, ht__trace_now_ns(), t, n);
    if (size != 0 && atomic_load(&ht__rec.io_error) == 0 && ht__writer_write(buf, size)) {
        ht__rec.meta_seq++;
        atomic_fetch_add_explicit(&ht__rec.n_chunks, 1, memory_order_relaxed);
    }
    ht__os.release(mem, map_size);
}

/* -- the thread -------------------------------------------------------------------------- */

static void futex_wait(_Atomic uint32_t *word, uint32_t val, long timeout_ns)
{
    struct timespec ts = {0, timeout_ns};
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, val, &ts, NULL, 0);
}

static void *writer_main(void *arg)
{
    (void)arg;
    int me = (int)ht__trace_tid();
    ht__rec.writer_tid = (uint32_t)me;
    for (;;) {
        if (atomic_load(&ht__rec.crashed) != 0)
            return NULL; /* the crash path owns the file now */
        bool finishing = atomic_load(&ht__rec.finishing) != 0;
        atomic_store(&ht__rec.writer_idle, 1); /* producers that seal from here on wake us */
        uint32_t w = atomic_load(&ht__rec.wake);
        if (ht__rec.stack_depth != 0 && atomic_load(&ht__rec.crashed) == 0 && io_acquire(me)) {
            modules_write(); /* before the events: a new module's stacks follow it */
            out_flush();
            io_release();
        }
        ht__os_clock_word_publish(); /* each pass: the wait below is 5 ms */
        bool worked = drain_pass(me);
        if (finishing)
            break; /* every packet was sealed before finishing was set: that was the last */
        if (!worked)
            futex_wait(&ht__rec.wake, w, 5 * 1000 * 1000);
        atomic_store(&ht__rec.writer_idle, 0);
    }
    atomic_store(&ht__rec.writer_idle, 0);
    if (io_acquire(me)) {
        write_lost_chunks();
        write_end_summary();
        io_release();
    }
    struct rusage ru;
    if (getrusage(RUSAGE_THREAD, &ru) == 0)
        ht__rec.writer_cpu_ns = (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000u +
                                (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000u;
    return NULL;
}

/* Unmaps the writer's buffers (those that were mapped) and forgets them. */
static void maps_release(void)
{
    if (ht__rec.out != NULL)
        ht__os.release(ht__rec.out, ht__rec.out_cap);
    if (ht__rec.streams != NULL)
        ht__os.release(ht__rec.streams, streams_size());
    if (ht__rec.stream_ix != NULL)
        ht__os.release(ht__rec.stream_ix, stream_ix_size());
    if (ht__rec.unbuf != NULL)
        ht__os.release(ht__rec.unbuf, unbuf_size());
    ht__rec.unbuf = NULL;
    ht__rec.out = NULL;
    ht__rec.streams = NULL;
    ht__rec.stream_ix = NULL;
}

int ht__writer_start(void)
{
    ht__rec.out_cap =
        3 * ht__rec.packet_size > OUT_MIN_SIZE ? 3 * ht__rec.packet_size : OUT_MIN_SIZE;
    ht__rec.out = ht__os.map_rw(ht__rec.out_cap);
    ht__rec.streams = ht__os.map_rw(streams_size());
    ht__rec.stream_ix = ht__os.map_rw(stream_ix_size());
    /* mapped before any thread can look (the session is not live yet); pages as used */
    ht__rec.unbuf = ht__os.map_rw(unbuf_size());
    if (ht__rec.out == NULL || ht__rec.streams == NULL || ht__rec.stream_ix == NULL ||
        ht__rec.unbuf == NULL)
        goto fail_unmap;
    atomic_store(&ht__rec.n_unbuf, 0);
    atomic_store(&ht__rec.n_lost_unbuf, 0);
    ht__rec.unbuf_folded = false;
    ht__rec.unbuf_total = 0;
    ht__rec.out_used = 0;
    ht__rec.n_streams = 0;
    ht__rec.meta_seq = 0;
    ht__rec.stack_hi = 0;
    ht__rec.modules_done = false;
    g_meta_open = false;
    g_out_events = 0;
    atomic_store(&ht__rec.finishing, 0);
    atomic_store(&ht__rec.writer_idle, 0);
    atomic_store(&ht__rec.io_owner, 0);

    /* The writer takes no asynchronous signal meant for the application. */
    sigset_t all, old;
    sigfillset(&all);
    sigdelset(&all, SIGSEGV);
    sigdelset(&all, SIGBUS);
    sigdelset(&all, SIGILL);
    sigdelset(&all, SIGFPE);
    sigdelset(&all, SIGABRT);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&ht__rec.writer, NULL, writer_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        goto fail_unmap;
    ht__rec.writer_running = true;
    return 0;

fail_unmap:
    maps_release();
    return -ENOMEM;
}

void ht__writer_finish(void)
{
    if (ht__rec.writer_running) {
        atomic_store(&ht__rec.finishing, 1);
        atomic_fetch_add(&ht__rec.wake, 1);
        syscall(SYS_futex, &ht__rec.wake, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
        pthread_join(ht__rec.writer, NULL);
        ht__rec.writer_running = false;
    }
    maps_release();
}

void ht__writer_forget(void)
{
    ht__rec.writer_running = false;
    maps_release();
    atomic_store(&ht__rec.io_owner, 0);
}

/* -- the crash path ---------------------------------------------------------------------- */

/* Another thread's buffer on the crash path (its owner may still run): every sealed packet,
 * then the records of its current packet committed by now (before its pos, acquire). Never
 * gives that packet back (no tail store past it), so its committed slots stay as read. */
static void crash_drain_buf(ht_tbuf *b)
{
    if (b->packets == NULL)
        return;
    for (int tries = 0; tries < 8; tries++) {
        drain_buf(b, true);
        uint64_t h = atomic_load_explicit(&b->head, memory_order_acquire);
        if (h != atomic_load_explicit(&b->tail, memory_order_relaxed))
            continue; /* sealed meanwhile: drain those first */
        /* Position h is the owner's current one, or its next. pos, read after head = h
         * (acquire; the owner clears pos before it seals), is NULL or a pointer into the
         * packet it took for h: it names phys[h] before it stores pos (release), so phys read
         * after pos names that packet. A NULL pos (no packet taken for h yet, or h sealed
         * empty) counts nothing; one past h's packet means head has moved, and the loop
         * drains that packet whole. */
        ht_raw_event *pos = __atomic_load_n(&b->pos, __ATOMIC_ACQUIRE);
        ht_packet *pk = ht__packet_at(b, h);
        ht_raw_event *first = (ht_raw_event *)(pk + 1);
        uint32_t n = pos != NULL && pos > first && pos <= first + ht__rec.slots_per_packet
                         ? (uint32_t)(pos - first)
                         : 0;
        if (atomic_load_explicit(&b->head, memory_order_acquire) != h)
            continue; /* sealed while read: take it whole instead */
        if (n != 0) {
            encode_packet(stream_for(b), b, pk, n);
            out_flush();
        }
        return;
    }
}

void ht__writer_crash_flush(ht_tbuf *self)
{
    int me = (int)ht__trace_tid();
    if (atomic_load(&ht__rec.io_owner) == me)
        return; /* this thread crashed while writing: the streams are half-updated */
    bool got = false;
    for (int i = 0; i < 2000 && !got; i++) { /* the writer holds it for one buffer at most */
        got = io_acquire(me);
        if (!got) {
            struct timespec ts = {0, 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    if (!got)
        return;
    atomic_store(&ht__rec.crashed, 1); /* never released: the writer stays out */
    if (self != NULL)
        ht__buf_seal(self);
    uint64_t end = ht__rec_bufs_end();
    for (uint64_t i = ht__rec.first_buf; i < end; i++) {
        ht_tbuf *b = &ht__rec.bufs[i % HT_REC_MAX_THREADS];
        if (atomic_load_explicit(&b->gen, memory_order_acquire) != ht__rec.gen)
            continue;
        if (b == self)
            drain_buf(b, true);
        else
            crash_drain_buf(b);
    }
    write_lost_chunks();
    write_end_summary(); /* totals of what this file holds: the reader sees it complete */
}
