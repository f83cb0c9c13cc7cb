/* session.c — the one tracing session: its configuration, its sinks (the in-process
 * consumer and/or the file recorder of buffer.c/writer.c/recorder.c), and the in-flight count
 * that lets stop wait for consumer calls to finish. Per-thread state (tid, sequence, the
 * in-consumer guard) lives in initial-exec TLS. Never calls malloc. */
#include "trace/trace.h"

#include "common/clock.h"
#include "common/os.h"
#include "trace/internal.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#define SINK_CONSUMER 1u /* config->consumer */
#define SINK_FILE     2u /* config->path: the recorder */

typedef struct trace_session {
    atomic_int active;       /* 1 while the session runs */
    atomic_int n_inflight;   /* consumer calls in progress */
    atomic_uint sinks;       /* SINK_* of the running session, set before active = 1 */
    ht_consumer_fn consumer; /* set before active = 1 */
    void *consumer_ctx;
    unsigned stack_depth;
} trace_session;

static trace_session g_session;

static __thread uint32_t t_tid __attribute__((tls_model("initial-exec")));
static __thread int t_in_consumer __attribute__((tls_model("initial-exec")));

static void tid_reset_after_fork(void)
{
    t_tid = 0;
}

static pthread_once_t g_fork_once = PTHREAD_ONCE_INIT;
static void fork_hook_install(void)
{
    pthread_atfork(NULL, NULL, tid_reset_after_fork);
}

uint32_t ht__trace_tid(void)
{
    if (t_tid == 0) {
        pthread_once(&g_fork_once, fork_hook_install);
        t_tid = (uint32_t)ht__os_gettid();
    }
    return t_tid;
}

uint64_t ht__trace_now_local_read(void)
{
    uint64_t s = ht__os_stamp_unordered();
    ht__t_stamp = s;
    return s;
}

uint64_t ht__trace_now_ns(void)
{
    return ht__os.now_ns();
}

bool ht__trace_in_consumer(void)
{
    return t_in_consumer != 0;
}

int ht__trace_session_start(const ht_trace_config *config)
{
    if ((config->consumer == NULL && config->path == NULL) ||
        (config->stack_events & ~HT_TRACE_STACK_ALL) != 0)
        return -EINVAL;
    if (atomic_load(&g_session.active) != 0)
        return -EBUSY;
    /* A file-only session stamps with the TSC when usable (the writer converts); with an
     * in-process consumer, CLOCK_MONOTONIC: each event is delivered in exact ns at once. */
    ht__clock_use(config->consumer == NULL ? HT_CLOCK_TSC : HT_CLOCK_MONOTONIC);
    if (config->path != NULL) {
        int rc = ht__rec_start(config);
        if (rc != 0)
            return rc;
    }
    g_session.consumer = config->consumer;
    g_session.consumer_ctx = config->consumer_ctx;
    g_session.stack_depth = config->stack_depth;
    atomic_store(&g_session.sinks, (config->consumer != NULL ? SINK_CONSUMER : 0u) |
                                       (config->path != NULL ? SINK_FILE : 0u));
    int expected = 0;
    if (!atomic_compare_exchange_strong(&g_session.active, &expected, 1)) {
        if (config->path != NULL)
            ht__rec_stop();
        return -EBUSY;
    }
    return 0;
}

int ht__trace_session_stop(void)
{
    int expected = 1;
    if (!atomic_compare_exchange_strong(&g_session.active, &expected, 0))
        return -EINVAL;
    int rc = 0;
    if ((atomic_load(&g_session.sinks) & SINK_FILE) != 0)
        rc = ht__rec_stop();
    /* A consumer that stops the session from inside itself counts itself in flight. */
    int self = t_in_consumer != 0 ? 1 : 0;
    while (atomic_load(&g_session.n_inflight) > self)
        sched_yield();
    atomic_store(&g_session.sinks, 0);
    return rc;
}

void ht__trace_emit(ht_event *ev)
{
    if (t_in_consumer != 0)
        return;
    unsigned sinks = atomic_load_explicit(&g_session.sinks, memory_order_relaxed);
    if (sinks == 0)
        return;
    ev->tid = ht__trace_tid();
    ev->sequence = ++ht__trace_seq;
    if ((sinks & SINK_FILE) != 0)
        ht__buf_emit(ev); /* checks and waits on its own, without the shared counter */
    if ((sinks & SINK_CONSUMER) != 0) {
        ev->timestamp_ns = ht__clock_to_ns(ev->timestamp_ns); /* the file took the stamp */
        atomic_fetch_add(&g_session.n_inflight, 1);
        if (atomic_load(&g_session.active) != 0) {
            t_in_consumer = 1;
            g_session.consumer(ev, g_session.consumer_ctx);
            t_in_consumer = 0;
        }
        atomic_fetch_sub(&g_session.n_inflight, 1);
    }
}
