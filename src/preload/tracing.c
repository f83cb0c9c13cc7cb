/* tracing.c — the preload library's tracing session: picks the trace file's name (pattern,
 * the root's own name, ".<pid>" for other processes, ".N" for a later program image of the
 * same process), starts and stops the session with the configured options, notes each trace
 * in record's manifest, and resumes in forked children. Says on stderr, in one write(2)
 * line, why tracing cannot start; otherwise silent. Never allocates: names are built in
 * static buffers with the allocation-free formatter. */
#include "preload/internal.h"

#include "common/log.h"
#include "trace/format.h"

#include <errno.h>
#include <fcntl.h>
#include <heaptrail.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define NAME_CAP    (HT_PRELOAD_PATH_MAX + 64)
#define N_IMAGE_MAX 99 /* NAME.1 .. NAME.99 for later images of one process */

static bool g_on;           /* a session started here runs */
static bool g_forked_child; /* this process was forked from a traced one */
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

/* True when path is a heaptrail trace that this process wrote: an earlier program image of
 * the same process (it called exec while tracing, and the environment carried tracing on). */
static bool written_by_this_process(const char *path)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return false;
    uint8_t hdr[16];
    ssize_t n = read(fd, hdr, sizeof hdr);
    close(fd);
    if (n != (ssize_t)sizeof hdr || memcmp(hdr, HT_FMT_FILE_MAGIC, 8) != 0)
        return false;
    uint32_t pid = (uint32_t)hdr[12] | (uint32_t)hdr[13] << 8 | (uint32_t)hdr[14] << 16 |
                   (uint32_t)hdr[15] << 24;
    return pid == (uint32_t)getpid();
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
    return ht_trace_start(&tc);
}

int ht__preload_trace_on(void)
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
    if (rc == -EEXIST && written_by_this_process(g_base)) {
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
    g_on = true;
    manifest_add(g_path);
    return 0;
}

int ht__preload_trace_off(void)
{
    if (!g_on)
        return -EINVAL;
    g_on = false;
    return ht_trace_stop();
}

const char *ht__preload_trace_path(void)
{
    return g_path;
}

bool ht__preload_tracing(void)
{
    return g_on;
}

bool ht__preload_fork_child(void)
{
    g_forked_child = true;
    return g_on;
}

void ht__preload_fork_resume(void)
{
    if (!g_on)
        return;
    g_on = false;
    ht_trace_stop(); /* the parent's session, as this child sees it: nothing is written */
    if (ht__preload_cfg.follow_fork)
        ht__preload_trace_on();
}
