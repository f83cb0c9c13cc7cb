/* control.c — the per-process control channel of the preload library (`heaptrail ctl PID
 * on|off|status`): a Unix socket <dir>/<pid>.sock in a private directory (mode 0700, owned
 * by this user: $XDG_RUNTIME_DIR/heaptrail, else /tmp/heaptrail-<uid>), served by one small
 * thread that sleeps in accept(2). Only peers of the same effective uid are answered
 * (SO_PEERCRED). Never allocates, never runs inside malloc: requests run on the control
 * thread, which calls the same start/stop the library constructor uses. */
#include "preload/control.h"

#include "common/log.h"
#include "preload/internal.h"

#include <errno.h>
#include <heaptrail.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define CTL_STACK_SIZE (64u << 10) /* the thread only parses a word and formats a line */
#define CTL_REPLY_MAX  (HT_PRELOAD_PATH_MAX + 256)

static int g_listen_fd = -1; /* the bound socket; -1 = no channel in this process */
static pid_t g_owner_pid;    /* the process that bound it (a forked child does not own it) */
static char g_sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static pthread_mutex_t g_ctl_lock = PTHREAD_MUTEX_INITIALIZER; /* one request at a time */

/* Appends s to buf (cap bytes, NUL-terminated), cut if it does not fit. */
static void append(char *buf, size_t cap, const char *s)
{
    size_t len = strlen(buf);
    size_t n = strlen(s);
    if (len + 1 >= cap)
        return;
    if (n > cap - 1 - len)
        n = cap - 1 - len;
    memcpy(buf + len, s, n);
    buf[len + n] = '\0';
}

/* Appends the trace file's path, made absolute with this process's working directory. */
static void append_path(char *buf, size_t cap, const char *path)
{
    if (path[0] != '/') {
        char cwd[HT_PRELOAD_PATH_MAX];
        if (getcwd(cwd, sizeof cwd) != NULL) {
            append(buf, cap, cwd);
            if (strcmp(cwd, "/") != 0)
                append(buf, cap, "/");
        }
    }
    append(buf, cap, path);
}

/* "status" reply: key=value pairs on one line. */
static void status_line(char *reply, size_t cap)
{
    ht_trace_stats st;
    char num[160];
    bool on = ht__preload_tracing();
    ht__fmt(reply, cap, "ok pid=%u tracing=%s", (unsigned)getpid(), on ? "on" : "off");
    if (ht_trace_get_stats(&st) == 0 && (on || st.file_size != 0)) {
        ht__fmt(num, sizeof num, " events=%zu lost=%zu bytes=%zu", (size_t)st.n_events,
                (size_t)st.n_lost, (size_t)st.file_size);
        append(reply, cap, num);
    }
    const char *path = ht__preload_trace_path();
    if (path != NULL && path[0] != '\0') {
        append(reply, cap, on ? " file=" : " last_file=");
        append_path(reply, cap, path);
    }
}

/* Runs one request (a word, NUL-terminated) and writes the one-line reply. */
static void serve(const char *req, char *reply, size_t cap)
{
    pthread_mutex_lock(&g_ctl_lock);
    if (strcmp(req, "status") == 0) {
        status_line(reply, cap);
    } else if (strcmp(req, "on") == 0) {
        int rc = ht__preload_tracing() ? -EALREADY : ht__preload_trace_on();
        if (rc == 0) {
            ht__fmt(reply, cap, "ok tracing on, file=");
            append_path(reply, cap, ht__preload_trace_path());
        } else if (rc == -EALREADY) {
            ht__fmt(reply, cap, "error tracing is already on, file=");
            append_path(reply, cap, ht__preload_trace_path());
        } else {
            const char *why = strerrordesc_np(-rc);
            ht__fmt(reply, cap, "error cannot start tracing: %s", why != NULL ? why : "error");
        }
    } else if (strcmp(req, "off") == 0) {
        if (!ht__preload_tracing()) {
            ht__fmt(reply, cap, "error tracing is already off");
        } else {
            int rc = ht__preload_trace_off();
            if (rc == 0) {
                ht__fmt(reply, cap, "ok tracing off, file=");
                append_path(reply, cap, ht__preload_trace_path());
            } else {
                const char *why = strerrordesc_np(-rc);
                ht__fmt(reply, cap, "error stopping the trace: %s", why != NULL ? why : "error");
            }
        }
    } else {
        ht__fmt(reply, cap, "error unknown request (on, off, status)");
    }
    pthread_mutex_unlock(&g_ctl_lock);
    append(reply, cap, "\n");
}

static void *ctl_thread(void *arg)
{
    (void)arg;
    static char reply[CTL_REPLY_MAX];
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* the program's signals go to its own threads */
    for (;;) {
        int fd = accept4(g_listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return NULL;
        }
        struct ucred cred;
        socklen_t len = sizeof cred;
        char req[32];
        ssize_t n = -1;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.uid == geteuid()) {
            struct timeval tv = {.tv_sec = 5, .tv_usec = 0};
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            n = read(fd, req, sizeof req - 1);
        }
        if (n > 0) {
            req[n] = '\0';
            req[strcspn(req, "\r\n")] = '\0';
            serve(req, reply, sizeof reply);
        } else {
            ht__fmt(reply, sizeof reply, "error refused\n");
        }
        (void)write(fd, reply, strlen(reply));
        close(fd);
    }
}

/* Unlinks the socket at exit, if this process bound it. */
static void ctl_at_exit(void)
{
    if (g_listen_fd >= 0 && g_owner_pid == getpid())
        unlink(g_sock_path);
}

/* In a forked child the channel is the parent's: forget it (the fd is closed; the parent's
 * socket file stays). */
static void ctl_after_fork_child(void)
{
    if (g_listen_fd >= 0)
        close(g_listen_fd);
    g_listen_fd = -1;
}

/* The socket path of this process into out; false when there is no usable directory. */
static bool sock_path(char *out, size_t cap, bool create)
{
    char dir[sizeof g_sock_path];
    if (!ht__ctl_dir(dir, sizeof dir - 16) || !ht__ctl_dir_ok(dir, create))
        return false;
    return ht__fmt(out, cap, "%s/%u.sock", dir, (unsigned)getpid()) < cap;
}

void ht__ctl_forget(void)
{
    char path[sizeof g_sock_path];
    if (sock_path(path, sizeof path, false))
        unlink(path);
}

int ht__ctl_start(void)
{
    if (g_listen_fd >= 0)
        return 0;
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    if (!sock_path(addr.sun_path, sizeof addr.sun_path, true))
        return -EACCES;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    /* A file left by an earlier process with this pid (killed) or an earlier image of this
     * one (exec) is stale: the directory is ours alone, so replacing it is safe. */
    unlink(addr.sun_path);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 4) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    memcpy(g_sock_path, addr.sun_path, sizeof g_sock_path);
    g_listen_fd = fd;
    g_owner_pid = getpid();

    pthread_attr_t attr;
    pthread_t th;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, CTL_STACK_SIZE);
    int rc = pthread_create(&th, &attr, ctl_thread, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        unlink(g_sock_path);
        close(fd);
        g_listen_fd = -1;
        return -rc;
    }
    static bool hooks;
    if (!hooks) {
        hooks = true;
        atexit(ctl_at_exit);
        pthread_atfork(NULL, NULL, ctl_after_fork_child);
    }
    return 0;
}
