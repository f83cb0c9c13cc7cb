/* cmd_ctl.c — `heaptrail ctl PID on|off|status`: switches tracing of a running process that
 * has libheaptrail-preload.so loaded, through its control socket (src/preload/control.h).
 * Same user only: the socket sits in a 0700 directory of this user and the process answers
 * only peers of its own uid. */
#include "cli/cli.h"
#include "preload/control.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: heaptrail ctl [--timeout SECONDS] PID on|off|status\n"
    "\n"
    "Switches tracing of a running process that runs with libheaptrail-preload.so (started\n"
    "by 'heaptrail record', or with LD_PRELOAD and HEAPTRAIL_ENABLED=0) on or off.\n"
    "  on      starts a trace: first the rundown (every heap and block already live), then\n"
    "          every heap operation; the file is named as HEAPTRAIL_OUTPUT says (a later\n"
    "          session of the same process gets NAME.1, NAME.2, ...)\n"
    "  off     stops the trace: flushes every thread, writes the summary, closes the file\n"
    "  status  prints pid=, tracing=on|off, events=, lost=, bytes= and the file\n"
    "Only processes of the same user can be controlled. The channel is a Unix socket\n"
    "$XDG_RUNTIME_DIR/heaptrail/PID.sock (else /tmp/heaptrail-UID/PID.sock), in a directory\n"
    "of mode 0700; HEAPTRAIL_CONTROL=0 in the process's environment turns it off.\n"
    "  --timeout SECONDS  how long to wait for the answer (default 30; 'on' writes the\n"
    "                     rundown first, which takes time in a process with many blocks)\n"
    "Exit status: 0 done, 1 the process could not be reached or refused, 2 usage.\n";

/* PID as a positive decimal number; false for anything else. */
static bool parse_pid(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v <= 0 || v > 0x7fffffff)
        return false;
    *out = v;
    return true;
}

/* Why connecting failed, for a person. */
static void explain(long pid, const char *path, int err)
{
    if (kill((pid_t)pid, 0) != 0 && errno == ESRCH) {
        fprintf(stderr, "heaptrail ctl: no process %ld\n", pid);
        return;
    }
    if (err == ENOENT)
        fprintf(stderr,
                "heaptrail ctl: process %ld has no heaptrail control socket (%s): it does not "
                "run with libheaptrail-preload.so, runs as another user, or has "
                "HEAPTRAIL_CONTROL=0\n",
                pid, path);
    else if (err == ECONNREFUSED)
        fprintf(stderr, "heaptrail ctl: process %ld does not listen on %s (stale socket)\n", pid,
                path);
    else
        fprintf(stderr, "heaptrail ctl: cannot reach process %ld at %s: %s\n", pid, path,
                strerror(err));
}

int ht__cli_ctl(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"timeout", required_argument, NULL, 't'},
        {NULL, 0, NULL, 0},
    };
    long timeout_s = 30;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+ht:", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            fputs(usage_text, stdout);
            return HT_CLI_OK;
        case 't': {
            char *end;
            errno = 0;
            timeout_s = strtol(optarg, &end, 10);
            if (errno != 0 || end == optarg || *end != '\0' || timeout_s <= 0 ||
                timeout_s > 86400) {
                fprintf(stderr,
                        "heaptrail ctl: --timeout: '%s' is not a number of seconds "
                        "(1..86400)\n",
                        optarg);
                return HT_CLI_USAGE;
            }
            break;
        }
        default:
            fputs(usage_text, stderr);
            return HT_CLI_USAGE;
        }
    }
    if (argc - optind != 2) {
        fprintf(stderr, "heaptrail ctl: expected PID and one of on, off, status\n%s", usage_text);
        return HT_CLI_USAGE;
    }
    long pid;
    const char *req = argv[optind + 1];
    if (!parse_pid(argv[optind], &pid)) {
        fprintf(stderr, "heaptrail ctl: '%s' is not a process id\n", argv[optind]);
        return HT_CLI_USAGE;
    }
    if (strcmp(req, "on") != 0 && strcmp(req, "off") != 0 && strcmp(req, "status") != 0) {
        fprintf(stderr, "heaptrail ctl: '%s' is not a request (on, off, status)\n", req);
        return HT_CLI_USAGE;
    }

    char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
    if (!ht__ctl_dir(dir, sizeof dir)) {
        fprintf(stderr, "heaptrail ctl: the control directory's name is too long\n");
        return HT_CLI_FAIL;
    }
    if (!ht__ctl_dir_ok(dir, false)) {
        if (access(dir, F_OK) != 0)
            fprintf(stderr,
                    "heaptrail ctl: %s does not exist: no process of this user runs with "
                    "libheaptrail-preload.so's control channel\n",
                    dir);
        else
            fprintf(stderr,
                    "heaptrail ctl: %s is not a private directory of this user (mode 0700): "
                    "refusing to use it\n",
                    dir);
        return HT_CLI_FAIL;
    }
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    int n = snprintf(addr.sun_path, sizeof addr.sun_path, "%s/%ld.sock", dir, pid);
    if (n < 0 || (size_t)n >= sizeof addr.sun_path) {
        fprintf(stderr, "heaptrail ctl: the socket's name is too long\n");
        return HT_CLI_FAIL;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, "heaptrail ctl: socket: %s\n", strerror(errno));
        return HT_CLI_FAIL;
    }
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        int e = errno;
        close(fd);
        explain(pid, addr.sun_path, e);
        return HT_CLI_FAIL;
    }
    struct timeval tv = {.tv_sec = timeout_s, .tv_usec = 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    size_t len = strlen(req);
    if (write(fd, req, len) != (ssize_t)len) {
        fprintf(stderr, "heaptrail ctl: cannot send to process %ld: %s\n", pid, strerror(errno));
        close(fd);
        return HT_CLI_FAIL;
    }
    shutdown(fd, SHUT_WR);
    char reply[8192];
    size_t got = 0;
    for (;;) {
        ssize_t r = read(fd, reply + got, sizeof reply - 1 - got);
        if (r > 0) {
            got += (size_t)r;
            if (got == sizeof reply - 1)
                break;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            fprintf(stderr, "heaptrail ctl: no answer from process %ld: %s\n", pid,
                    errno == EAGAIN ? "timed out" : strerror(errno));
            close(fd);
            return HT_CLI_FAIL;
        }
        break;
    }
    close(fd);
    reply[got] = '\0';
    reply[strcspn(reply, "\n")] = '\0';
    if (strncmp(reply, "ok ", 3) == 0) {
        printf("%s\n", reply + 3);
        return HT_CLI_OK;
    }
    if (strncmp(reply, "error ", 6) == 0)
        fprintf(stderr, "heaptrail ctl: process %ld: %s\n", pid, reply + 6);
    else
        fprintf(stderr, "heaptrail ctl: process %ld gave no valid answer\n", pid);
    return HT_CLI_FAIL;
}
