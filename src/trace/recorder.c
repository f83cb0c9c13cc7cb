/* recorder.c — the file session: checks the options, creates the trace file (never over an
 * existing one) and writes its header, starts and stops the writer, flushes at process exit,
 * and on fatal signals flushes what it can before the signal takes its course (chaining to
 * any previous handler). A forked child never writes to its parent's file; stopping the
 * inherited session there lets go of the parent's copies, so the child may start its own.
 * Never mallocs; the signal path uses only async-signal-safe calls and no locks. */
#include "trace/internal.h"

#include "common/os.h"
#include "trace/format.h"
#include "trace/stack.h"
#include "trace/trace.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/membarrier.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

ht_recorder ht__rec = {.fd = -1, .fast_gen = HT_REC_NO_GEN};

#define HT_REC_FD_MIN 300 /* the trace file's descriptor is moved to this number or above */

static const char *g_path_created; /* for unlink when start fails after the create */

/* -- one-time setup ---------------------------------------------------------------------- */

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_once_rc;

static void rec_atexit(void)
{
    if (ht__rec_open() && !ht__rec.forked_child)
        ht_trace_stop(); /* the public stop: the heaps' switches are reset too */
}

static void rec_after_fork_child(void)
{
    if (ht__rec.fd >= 0) {
        ht__rec.forked_child = true;
        atomic_store(&ht__rec.fast_gen, HT_REC_NO_GEN);
        atomic_store(&ht__rec.live_gen, 0);
        /* Threads of the parent that were registering do not exist here: a later stop in
         * this process must not wait for them. */
        atomic_store(&ht__rec.n_slow, 0);
    }
}

static void once_init(void)
{
    size_t size = (size_t)HT_REC_MAX_THREADS * sizeof(ht_tbuf);
    ht__rec.bufs = ht__os.map_rw(size);
    if (ht__rec.bufs == NULL) {
        g_once_rc = -ENOMEM;
        return;
    }
#ifdef HT_TSAN
    ht__rec.strong_fence = 1; /* TSan does not model membarrier */
#else
    ht__rec.strong_fence =
        syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) != 0;
#endif
    g_once_rc = ht__buf_init_once();
    if (g_once_rc == 0 && atexit(rec_atexit) != 0)
        g_once_rc = -ENOMEM;
    if (g_once_rc == 0)
        g_once_rc = -pthread_atfork(NULL, NULL, rec_after_fork_child);
}

/* -- fatal signals ----------------------------------------------------------------------- */

static const int k_fatal[] = {SIGSEGV, SIGABRT, SIGBUS, SIGILL, SIGFPE};
#define N_FATAL (sizeof k_fatal / sizeof k_fatal[0])
static struct sigaction g_old_action[N_FATAL];
static bool g_handlers_on;
static atomic_int g_in_crash;

static void crash_handler(int sig, siginfo_t *info, void *uc)
{
    int saved_errno = errno;
    if (atomic_exchange(&g_in_crash, 1) == 0 && !ht__rec.forked_child &&
        atomic_load(&ht__rec.live_gen) != 0)
        ht__writer_crash_flush(ht__buf_self());
    size_t k = 0;
    while (k < N_FATAL && k_fatal[k] != sig)
        k++;
    if (k == N_FATAL)
        return;
    const struct sigaction *old = &g_old_action[k];
    sigaction(sig, old, NULL); /* from here on the previous disposition is in force */
    if ((old->sa_flags & SA_SIGINFO) != 0 && old->sa_sigaction != NULL) {
        old->sa_sigaction(sig, info, uc);
    } else if (old->sa_handler == SIG_DFL) {
        raise(sig); /* pending until we return; a fault re-executes and dies too */
    } else if (old->sa_handler != SIG_IGN) {
        old->sa_handler(sig);
    }
    errno = saved_errno;
}

static void handlers_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = crash_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    for (size_t k = 0; k < N_FATAL; k++)
        sigaction(k_fatal[k], &sa, &g_old_action[k]);
    atomic_store(&g_in_crash, 0);
    g_handlers_on = true;
}

static void handlers_remove(void)
{
    if (!g_handlers_on)
        return;
    for (size_t k = 0; k < N_FATAL; k++) {
        struct sigaction cur;
        /* Put the previous one back only where nobody installed a handler after ours. */
        if (sigaction(k_fatal[k], NULL, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) != 0 &&
            cur.sa_sigaction == crash_handler)
            sigaction(k_fatal[k], &g_old_action[k], NULL);
    }
    g_handlers_on = false;
}

/* -- the file ---------------------------------------------------------------------------- */

/* Reads /proc/self/cmdline into buf (without its final NUL); returns the bytes. */
static size_t read_cmdline(uint8_t *buf, size_t cap)
{
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    size_t n = 0;
    while (n < cap) {
        ssize_t k = read(fd, buf + n, cap - n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        n += (size_t)k;
    }
    close(fd);
    if (n > 0 && buf[n - 1] == 0)
        n--;
    return n;
}

static int header_write(uint64_t start_mono_ns)
{
    /* [header + room for the command line][the command line as read]: the encoder copies
     * it from the second part into the first. */
    size_t half = HT_FMT_FILE_HDR_SIZE + HT_FMT_MAX_CMDLINE;
    size_t cap = (2 * half + HT_PAGE_SIZE - 1) & ~(size_t)(HT_PAGE_SIZE - 1);
    uint8_t *buf = ht__os.map_rw(cap);
    if (buf == NULL)
        return -ENOMEM;
    size_t cmd = read_cmdline(buf + half, HT_FMT_MAX_CMDLINE);
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    uint64_t rt_ns = (uint64_t)rt.tv_sec * 1000000000u + (uint64_t)rt.tv_nsec;
    size_t size = ht__enc_file_header(buf, half, (uint32_t)getpid(), (const char *)buf + half, cmd,
                                      start_mono_ns, rt_ns);
    int rc = 0;
    if (size == 0)
        rc = -EINVAL;
    else if (!ht__writer_write(buf, size))
        rc = -atomic_load(&ht__rec.io_error);
    ht__os.release(buf, cap);
    return rc;
}

/* -- start and stop ---------------------------------------------------------------------- */

bool ht__rec_open(void)
{
    return ht__rec.fd >= 0;
}

static int options_check(const ht_trace_config *c, size_t *packet_size, unsigned *n_packets)
{
    size_t ps = c->buffer_size != 0 ? c->buffer_size : HT_REC_PACKET_SIZE_DEFAULT;
    unsigned np = c->n_buffers != 0 ? c->n_buffers : HT_REC_N_PACKETS_DEFAULT;
    if (ps < HT_REC_PACKET_SIZE_MIN || ps > HT_REC_PACKET_SIZE_MAX || np < HT_REC_N_PACKETS_MIN ||
        np > HT_REC_N_PACKETS_MAX ||
        (c->loss_policy != HT_TRACE_LOSS_DROP && c->loss_policy != HT_TRACE_LOSS_BLOCK) ||
        (c->stack_events & ~HT_TRACE_STACK_ALL) != 0)
        return -EINVAL;
    *packet_size = (ps + HT_PAGE_SIZE - 1) & ~(size_t)(HT_PAGE_SIZE - 1);
    *n_packets = np;
    return 0;
}

/* Stacks on (stack_depth > 0): the unwinder named by HEAPTRAIL_UNWIND (fp, dwarf, auto;
 * unset = auto), the interning table, and the entry-point ranges callsite.c strips at. */
static int stacks_start(unsigned depth)
{
    int kind = ht__unwind_kind_from_name(secure_getenv("HEAPTRAIL_UNWIND"));
    if (kind < 0)
        return -EINVAL;
    ht_stack_config sc;
    memset(&sc, 0, sizeof sc);
    sc.unwind = (ht_unwind_kind)kind;
    sc.depth = depth;
    int rc = ht__stack_init(&sc);
    if (rc == 0)
        ht__callsite_init();
    return rc;
}

static void stacks_stop(void)
{
    if (ht__rec.stack_depth == 0)
        return;
    ht__stack_fini();
    ht__modules_fini();
    ht__rec.stack_depth = 0;
}

int ht__rec_start(const ht_trace_config *config)
{
    size_t packet_size;
    unsigned n_packets;
    int rc = options_check(config, &packet_size, &n_packets);
    if (rc != 0)
        return rc;
    if (ht__rec.fd >= 0)
        return -EBUSY; /* a forked child that did not stop its parent's session */
    pthread_once(&g_once, once_init);
    if (g_once_rc != 0)
        return g_once_rc;

    int fd = open(config->path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    /* Out of the way of the application's own descriptors (the preload library traces
     * programs that close and reopen low numbers: one of their files must never get the
     * trace's number while the writer still writes to it). */
    int high = fcntl(fd, F_DUPFD_CLOEXEC, HT_REC_FD_MIN);
    if (high >= 0) {
        close(fd);
        fd = high;
    }
    g_path_created = config->path;
    ht__rec.fd = fd;
    ht__rec.forked_child = false;
    ht__rec.packet_size = packet_size;
    ht__rec.n_packets = n_packets;
    ht__rec.slots_per_packet = (uint32_t)((packet_size - sizeof(ht_packet)) / sizeof(ht_raw_event));
    ht__rec.loss_policy = config->loss_policy;
    ht__rec.stack_depth =
        config->stack_depth < HT_STACK_MAX_DEPTH ? config->stack_depth : HT_STACK_MAX_DEPTH;
    ht__rec.stack_events = config->stack_events != 0 ? config->stack_events : HT_TRACE_STACK_ALL;
    atomic_store(&ht__rec.io_error, 0);
    atomic_store(&ht__rec.crashed, 0);
    atomic_store(&ht__rec.n_events, 0);
    atomic_store(&ht__rec.n_taken, 0);
    atomic_store(&ht__rec.n_chunks, 0);
    atomic_store(&ht__rec.file_size, 0);
    ht__rec.n_lost_io = 0;
    ht__rec.n_bad_slots = 0;
    ht__rec.final_lost = 0;
    ht__rec.writer_cpu_ns = 0;
    ht__rec.ran = true;

    ht__rec.start_ns = ht__trace_now_ns();
    rc = header_write(ht__rec.start_ns);
    if (rc != 0)
        goto fail_close;
    if (ht__rec.stack_depth != 0) {
        rc = stacks_start(ht__rec.stack_depth);
        if (rc != 0) {
            ht__rec.stack_depth = 0;
            goto fail_close;
        }
    }
    ht__rec.gen++; /* before the writer exists: it reads both */
    ht__rec.first_buf = atomic_load(&ht__rec.n_bufs);
    rc = ht__writer_start();
    if (rc != 0) {
        stacks_stop();
        goto fail_close;
    }
    handlers_install();
    ht__rec.fast_off = config->consumer != NULL;
    /* the clock is the session's (ht__clock_use ran before this) */
    bool tsc = atomic_load(&ht__os_clock) == HT_CLOCK_TSC;
    atomic_store(&ht__rec.fast_gen, !ht__rec.fast_off && ht__rec.stack_depth == 0 && tsc &&
                                            (!ht__rec.strong_fence || HT_FAST_FENCE_TEST)
                                        ? ht__rec.gen
                                        : HT_REC_NO_GEN);
    atomic_store(&ht__rec.live_gen, ht__rec.gen); /* recording from here */
    return 0;

fail_close:
    close(fd);
    unlink(g_path_created); /* ours: O_EXCL made it */
    ht__rec.fd = -1;
    return rc;
}

static uint64_t lost_sum(void)
{
    uint64_t lost = ht__rec.n_lost_io + atomic_load(&ht__rec.n_lost_unbuf);
    if (ht__rec.unbuf_folded) {
        lost += ht__rec.unbuf_total;
    } else if (ht__rec.unbuf != NULL) {
        uint32_t n = atomic_load(&ht__rec.n_unbuf);
        for (uint32_t i = 0; i < n && i < HT_REC_UNBUF_MAX; i++)
            lost += atomic_load_explicit(&ht__rec.unbuf[i].n_lost, memory_order_relaxed);
    }
    uint64_t end = ht__rec_bufs_end();
    for (uint64_t i = ht__rec.first_buf; i < end; i++) {
        ht_tbuf *b = &ht__rec.bufs[i % HT_REC_MAX_THREADS];
        if (atomic_load_explicit(&b->gen, memory_order_acquire) == ht__rec.gen)
            lost += atomic_load_explicit(&b->n_lost, memory_order_relaxed);
    }
    return lost;
}

int ht__rec_stop(void)
{
    if (ht__rec.fd < 0)
        return 0;
    uint64_t end = ht__rec_bufs_end();
    if (ht__rec.forked_child) {
        /* The parent's file and writer are not ours: let go of our copies only (the
         * parent's thread buffers and the writer's maps are private copies here, and the
         * crash handlers would chain to themselves if a new session installed them again). */
        close(ht__rec.fd);
        ht__rec.fd = -1;
        ht__rec.writer_running = false;
        ht__writer_forget();
        for (uint64_t i = ht__rec.first_buf; i < end; i++) {
            ht_tbuf *b = &ht__rec.bufs[i % HT_REC_MAX_THREADS];
            if (atomic_load_explicit(&b->gen, memory_order_acquire) == ht__rec.gen &&
                b->packets != NULL) {
                ht__os.release(b->packets, ht__tbuf_map_size());
                b->packets = NULL;
            }
        }
        stacks_stop(); /* the only thread here, and live_gen is 0: no capture in flight */
        handlers_remove();
        ht__rec.forked_child = false;
        return 0;
    }
    atomic_store(&ht__rec.fast_gen, HT_REC_NO_GEN);
    atomic_store(&ht__rec.live_gen, 0);
    ht__buf_quiesce();
    /* No thread writes now: seal every partial packet on its owner's behalf. */
    for (uint64_t i = ht__rec.first_buf; i < end; i++) {
        ht_tbuf *b = &ht__rec.bufs[i % HT_REC_MAX_THREADS];
        if (atomic_load_explicit(&b->gen, memory_order_acquire) == ht__rec.gen &&
            b->packets != NULL)
            ht__buf_seal_stopped(b);
    }
    ht__writer_finish();
    stacks_stop(); /* no capture in flight (quiesced), no drain (the writer is gone) */
    handlers_remove();
    ht__rec.final_lost = lost_sum();
    int rc = -atomic_load(&ht__rec.io_error);
    if (close(ht__rec.fd) != 0 && rc == 0)
        rc = -errno;
    ht__rec.fd = -1;
    end = ht__rec_bufs_end();
    for (uint64_t i = ht__rec.first_buf; i < end; i++) {
        ht_tbuf *b = &ht__rec.bufs[i % HT_REC_MAX_THREADS];
        if (atomic_load_explicit(&b->gen, memory_order_acquire) == ht__rec.gen &&
            b->packets != NULL) {
            ht__os.release(b->packets, ht__tbuf_map_size());
            b->packets = NULL;
        }
    }
    return rc;
}

/* -- statistics -------------------------------------------------------------------------- */

int ht_trace_get_stats(ht_trace_stats *out)
{
    if (out == NULL)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    if (!ht__rec.ran)
        return 0;
    out->n_events = atomic_load(&ht__rec.n_events);
    out->n_packets = atomic_load(&ht__rec.n_taken);
    out->n_chunks = atomic_load(&ht__rec.n_chunks);
    out->file_size = atomic_load(&ht__rec.file_size);
    out->n_threads = ht__rec_bufs_end() - ht__rec.first_buf;
    out->n_lost = ht__rec.fd >= 0 ? lost_sum() : ht__rec.final_lost;
    out->writer_cpu_ns = ht__rec.writer_cpu_ns;
    return 0;
}
