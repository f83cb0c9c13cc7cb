/* tracing.c — the preload library's tracing session: picks the trace file's name (pattern,
 * the root's own name, ".<pid>" for other processes or when a traced ancestor holds the name,
 * ".N" for a later program image of the same process), starts and stops the session with the
 * configured options, notes each trace in record's manifest, and resumes in forked children. Says
 * on stderr, in one write(2) line, why tracing cannot start; otherwise silent. Never allocates:
 * names are built in static buffers with the allocation-free formatter. */
#include "preload/internal.h"

#include "common/log.h"
#include "trace/format.h"

#include <errno.h>
#include <fcntl.h>
#include <heaptrail.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define NAME_CAP    (HT_PRELOAD_PATH_MAX + 64)
#define N_IMAGE_MAX 99 /* NAME.1 .. NAME.99 for later images of one process */

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER; /* on/off and the name buffers */
static atomic_bool g_on;                                   /* a session started here runs */
static bool g_forked_child; /* this process was forked from another */
static char g_base[NAME_CAP];
static char g_path[NAME_CAP];
static char g_line[2 * NAME_CAP];

/* Appends s (n bytes) at buf[*len]; false when it does not fit. */
static bool put(char *buf, size_t cap, size_t *len, const char *s, size_t n)
{
    if (*len + n >= cap)
        return false;
    memcpy(buf + *len, s, n);
    *len += n;
    buf[*len] = '\0';
    return true;
}

static bool put_uint(char *buf, size_t cap, size_t *len, unsigned v)
{
    char tmp[16];
    size_t n = ht__fmt(tmp, sizeof tmp, "%u", v);
    return put(buf, cap, len, tmp, n);
}

/* Expands pattern into out: %p the pid, %e the program's short name, %% a percent sign (any
 * other % stays as it is). *has_pid: %p was there. False when the result is too long. */
static bool expand(const char *pattern, char *out, size_t cap, bool *has_pid)
{
    size_t len = 0;
    out[0] = '\0';
    *has_pid = false;
    for (const char *p = pattern; *p != '\0'; p++) {
        bool ok;
        if (p[0] == '%' && p[1] == 'p') {
            ok = put_uint(out, cap, &len, (unsigned)getpid());
            *has_pid = true;
            p++;
        } else if (p[0] == '%' && p[1] == 'e') {
            const char *e = program_invocation_short_name;
            if (e == NULL || *e == '\0')
                e = "unknown";
            ok = put(out, cap, &len, e, strlen(e));
            p++;
        } else if (p[0] == '%' && p[1] == '%') {
            ok = put(out, cap, &len, "%", 1);
            p++;
        } else {
            ok = put(out, cap, &len, p, 1);
        }
        if (!ok)
            return false;
    }
    return true;
}

/* The pid in the header of the heaptrail trace at path, or 0 when it is not one. */
static uint32_t trace_pid(const char *path)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return 0;
    uint8_t hdr[16];
    ssize_t n = read(fd, hdr, sizeof hdr);
    close(fd);
    if (n != (ssize_t)sizeof hdr || memcmp(hdr, HT_FMT_FILE_MAGIC, 8) != 0)
        return 0;
    return (uint32_t)hdr[12] | (uint32_t)hdr[13] << 8 | (uint32_t)hdr[14] << 16 |
           (uint32_t)hdr[15] << 24;
}

/* The parent of process pid, from /proc/<pid>/stat ("pid (comm) state ppid ..."; comm may
 * hold spaces and parentheses: the last ')' ends it). 0 when unknown. */
static unsigned parent_of(unsigned pid)
{
    char path[32], buf[512];
    size_t len = 0;
    path[0] = '\0';
    if (!put(path, sizeof path, &len, "/proc/", 6) || !put_uint(path, sizeof path, &len, pid) ||
        !put(path, sizeof path, &len, "/stat", 5))
        return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ' || p[2] == '\0' || p[3] != ' ')
        return 0;
    unsigned ppid = 0;
    for (p += 4; *p >= '0' && *p <= '9'; p++)
        ppid = ppid * 10 + (unsigned)(*p - '0');
    return ppid;
}

/* True when pid is an ancestor of this process (up to 64 generations). */
static bool is_ancestor(unsigned pid)
{
    unsigned p = (unsigned)getppid();
    for (int i = 0; i < 64 && p > 1; i++, p = parent_of(p))
        if (p == pid)
            return true;
    return pid == 1 && p == 1;
}

/* Appends "<absolute path>\n" to record's manifest (one write, O_APPEND: lines of several
 * processes do not mix). The manifest must exist: it is never created here. */
static void manifest_add(const char *path)
{
    const char *m = ht__preload_cfg.manifest;
    if (m[0] == '\0')
        return;
    size_t len = 0;
    g_line[0] = '\0';
    if (path[0] != '/') {
        if (getcwd(g_line, sizeof g_line - 2) == NULL)
            return;
        len = strlen(g_line);
        if (!put(g_line, sizeof g_line, &len, "/", 1))
            return;
    }
    if (!put(g_line, sizeof g_line, &len, path, strlen(path)) ||
        !put(g_line, sizeof g_line, &len, "\n", 1))
        return;
    int fd = open(m, O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return;
    (void)write(fd, g_line, len);
    close(fd);
}

/* The file name this process traces to, into g_base. False (said on stderr) if too long. */
static bool base_name(void)
{
    const ht_preload_config *c = &ht__preload_cfg;
    unsigned pid = (unsigned)getpid();
    size_t len = 0;
    g_base[0] = '\0';
    if (c->root_pid != 0 && pid == c->root_pid && c->root_output[0] != '\0')
        return put(g_base, sizeof g_base, &len, c->root_output, strlen(c->root_output));
    bool has_pid;
    if (!expand(c->output, g_base, sizeof g_base, &has_pid))
        return false;
    /* Another process than the first one: its own name even when the pattern has no %p. */
    bool other = g_forked_child || (c->root_pid != 0 && pid != c->root_pid);
    if (other && !has_pid) {
        len = strlen(g_base);
        return put(g_base, sizeof g_base, &len, ".", 1) &&
               put_uint(g_base, sizeof g_base, &len, pid);
    }
    return true;
}

static int start_at(const char *path)
{
    ht_trace_config tc;
    memset(&tc, 0, sizeof tc);
    tc.path = path;
    tc.stack_depth = ht__preload_cfg.stacks;
    tc.loss_policy = ht__preload_cfg.loss_policy;
    tc.stack_events = ht__preload_cfg.stack_events;
    tc.n_buffers = ht__preload_cfg.n_buffers;
    return ht_trace_start(&tc);
}

static int trace_on_locked(void)
{
    if (g_on)
        return -EBUSY;
    if (ht__preload_cfg.bad)
        return -EINVAL;
    if (!base_name()) {
        ht__log("heaptrail: trace file name from HEAPTRAIL_OUTPUT is too long; running "
                "untraced\n");
        return -ENAMETOOLONG;
    }
    memcpy(g_path, g_base, strlen(g_base) + 1);
    int rc = start_at(g_path);
    uint32_t owner = rc == -EEXIST ? trace_pid(g_base) : 0;
    if (owner != 0 && owner != (uint32_t)getpid() && is_ancestor(owner)) {
        /* The pattern names one file for every process and a traced ancestor wrote it (say
         * `time prog` with both preloaded): this process takes NAME.<pid>. */
        size_t len = strlen(g_base);
        if (!put(g_base, sizeof g_base, &len, ".", 1) ||
            !put_uint(g_base, sizeof g_base, &len, (unsigned)getpid())) {
            ht__log("heaptrail: trace file name %s.<pid> is too long; running untraced\n", g_path);
            return -ENAMETOOLONG;
        }
        memcpy(g_path, g_base, len + 1);
        rc = start_at(g_path);
        owner = rc == -EEXIST ? trace_pid(g_base) : 0;
    }
    if (owner == (uint32_t)getpid()) {
        /* An earlier image of this process wrote g_base: this image takes NAME.1, .2, ... */
        for (unsigned k = 1; k <= N_IMAGE_MAX && rc == -EEXIST; k++) {
            size_t len = strlen(g_base);
            memcpy(g_path, g_base, len + 1);
            if (!put(g_path, sizeof g_path, &len, ".", 1) ||
                !put_uint(g_path, sizeof g_path, &len, k))
                break;
            rc = start_at(g_path);
        }
    }
    if (rc != 0) {
        const char *why =
            rc == -EEXIST ? "the file exists (never overwritten)" : strerrordesc_np(-rc);
        ht__log("heaptrail: cannot trace to %s: %s; running untraced\n", g_path,
                why != NULL ? why : "error");
        return rc;
    }
    atomic_store(&g_on, true);
    manifest_add(g_path);
    return 0;
}

int ht__preload_trace_on(void)
{
    pthread_mutex_lock(&g_lock);
    int rc = trace_on_locked();
    pthread_mutex_unlock(&g_lock);
    return rc;
}

int ht__preload_trace_off(void)
{
    pthread_mutex_lock(&g_lock);
    int rc = -EINVAL;
    if (atomic_load(&g_on)) {
        atomic_store(&g_on, false);
        rc = ht_trace_stop();
    }
    pthread_mutex_unlock(&g_lock);
    return rc;
}

const char *ht__preload_trace_path(void)
{
    return g_path;
}

bool ht__preload_tracing(void)
{
    return atomic_load(&g_on);
}

bool ht__preload_fork_child(void)
{
    /* Another thread of the parent may have held the lock at fork: this child's is free. */
    pthread_mutex_init(&g_lock, NULL);
    g_forked_child = true;
    return atomic_load(&g_on);
}

void ht__preload_fork_resume(void)
{
    pthread_mutex_lock(&g_lock);
    if (atomic_load(&g_on)) {
        atomic_store(&g_on, false);
        ht_trace_stop(); /* the parent's session, as this child sees it: nothing is written */
        if (ht__preload_cfg.follow_fork)
            trace_on_locked();
    }
    pthread_mutex_unlock(&g_lock);
}
