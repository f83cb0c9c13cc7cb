/* cmd_record.c — `heaptrail record`: runs a program with libheaptrail-preload.so and the
 * HEAPTRAIL_* variables, passes its exit status (or its signal) through, and reads the
 * traces back to say where they went and what they hold. Never links the heap: the program
 * is traced by the preload library in its own process; this side only reads the files. */
#include "cli/cli.h"

#include "preload/types.h"
#include "trace/stack_events.h"

#include <heaptrail/reader.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: heaptrail record [-o FILE] [--stacks[=DEPTH]] [--no-follow-fork] -- CMD [ARG...]\n"
    "\n"
    "Runs CMD on heaptrail's heap (LD_PRELOAD=libheaptrail-preload.so, put before any\n"
    "LD_PRELOAD already set) and traces every heap operation to a file. Then prints to\n"
    "stderr where the traces went and what they hold (events, lost events, peak live bytes).\n"
    "The exit status is CMD's; when CMD dies of a signal, record re-raises that signal\n"
    "(without a core dump of its own), or exits 128+N if the signal does not end it.\n"
    "\n"
    "options:\n"
    "  -o, --output FILE     the trace of CMD's process (default: heaptrail.<prog>.<pid>.htr\n"
    "                        in the current directory); never overwritten: an existing FILE\n"
    "                        is an error. Other processes write FILE.<pid> (with -o) or\n"
    "                        heaptrail.<prog>.<pid>.htr (without); a program a process\n"
    "                        exec's writes NAME.1, NAME.2, ... of that process's NAME\n"
    "      --stacks[=DEPTH]  record each event's call stack, DEPTH frames (1..256, default 16)\n"
    "      --stack-events=LIST  only these events get a stack (implies --stacks): names from\n"
    "                        " HT_STACK_EVENT_NAMES ",\n"
    "                        joined by ',' or '+'; e.g. alloc,realloc (xperf's recipe: half the\n"
    "                        cost, no free stacks); INVALID events always get one\n"
    "      --no-follow-fork  trace only CMD's own process (and the programs it exec's itself),\n"
    "                        not its children\n"
    "      --off             start with tracing off: switch it on (and off) while CMD runs\n"
    "                        with 'heaptrail ctl PID on|off' (the first 'on' writes the\n"
    "                        rundown of every block already live)\n"
    "      --no-control      no control channel (by default every traced process serves\n"
    "                        'heaptrail ctl' on a socket, from one extra thread)\n"
    "  -h, --help            this text\n"
    "\n"
    "environment: HEAPTRAIL_PRELOAD_LIB overrides where the preload library is found; TMPDIR\n"
    "holds record's list of traces while CMD runs. The preload library reads these (record\n"
    "sets ENABLED, OUTPUT, STACKS, FOLLOW_FORK and the ROOT_ and MANIFEST ones, and\n"
    "STACK_EVENTS with --stack-events; the others pass through from record's environment):\n";

#define DEFAULT_STACK_DEPTH 16u
#define MAX_LISTED          10u /* child traces listed one per line */

/* -- helpers --------------------------------------------------------------------------- */

static void print_usage(FILE *out)
{
    fputs(usage_text, out);
#define OPT_DOC(name, kind, def, doc) fprintf(out, "  HEAPTRAIL_%-12s %s\n", #name, doc);
    HT_PRELOAD_OPTIONS(OPT_DOC)
#undef OPT_DOC
}

static int usage_error(const char *msg, const char *arg)
{
    if (arg != NULL)
        fprintf(stderr, "heaptrail record: %s '%s' (see 'heaptrail record --help')\n", msg, arg);
    else
        fprintf(stderr, "heaptrail record: %s (see 'heaptrail record --help')\n", msg);
    return HT_CLI_USAGE;
}

/* path made absolute against the current directory (traced programs may chdir); malloc'd. */
static char *absolute(const char *path)
{
    if (path[0] == '/')
        return strdup(path);
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof cwd) == NULL)
        return NULL;
    size_t n = strlen(cwd) + strlen(path) + 2;
    char *out = malloc(n);
    if (out != NULL)
        snprintf(out, n, "%s/%s", cwd, path);
    return out;
}

/* s with every % doubled (HEAPTRAIL_OUTPUT expands %p, %e, %%); malloc'd. */
static char *escape_percent(const char *s)
{
    size_t n = 0;
    for (const char *p = s; *p != '\0'; p++)
        n += *p == '%' ? 2 : 1;
    char *out = malloc(n + 1);
    if (out == NULL)
        return NULL;
    char *q = out;
    for (const char *p = s; *p != '\0'; p++) {
        *q++ = *p;
        if (*p == '%')
            *q++ = '%';
    }
    *q = '\0';
    return out;
}

/* Can a new file be made at path? 0, or the errno of trying (EEXIST: it exists). */
static int probe_create(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno;
    close(fd);
    unlink(path);
    return 0;
}

static const char *preload_path(void)
{
    const char *env = getenv("HEAPTRAIL_PRELOAD_LIB");
    if (env != NULL && env[0] != '\0')
        return env;
    if (HT_PRELOAD_BUILD_PATH[0] != '\0' && access(HT_PRELOAD_BUILD_PATH, R_OK) == 0)
        return HT_PRELOAD_BUILD_PATH;
    if (access(HT_PRELOAD_INSTALL_PATH, R_OK) == 0)
        return HT_PRELOAD_INSTALL_PATH;
    return NULL;
}

/* -- reading the traces back ------------------------------------------------------------ */

typedef struct live_slot {
    uint64_t heap, addr, size; /* addr 0: empty */
} live_slot;

typedef struct live_set {
    live_slot *s;
    size_t cap, n;
    uint64_t bytes, peak;
} live_set;

static size_t slot_of(const live_set *m, uint64_t heap, uint64_t addr)
{
    uint64_t h = (addr ^ (heap * 0x9E3779B97F4A7C15ull)) * 0xff51afd7ed558ccdull;
    return (size_t)(h >> 17) & (m->cap - 1);
}

static bool live_add(live_set *m, uint64_t heap, uint64_t addr, uint64_t size);

static bool live_grow(live_set *m)
{
    live_set g = {calloc(m->cap * 2, sizeof(live_slot)), m->cap * 2, 0, 0, 0};
    if (g.s == NULL)
        return false;
    for (size_t i = 0; i < m->cap; i++)
        if (m->s[i].addr != 0)
            live_add(&g, m->s[i].heap, m->s[i].addr, m->s[i].size);
    free(m->s);
    m->s = g.s;
    m->cap = g.cap;
    return true;
}

static bool live_add(live_set *m, uint64_t heap, uint64_t addr, uint64_t size)
{
    if (2 * (m->n + 1) > m->cap && !live_grow(m))
        return false;
    size_t i = slot_of(m, heap, addr);
    while (m->s[i].addr != 0) {
        if (m->s[i].addr == addr && m->s[i].heap == heap)
            return true; /* already live (an event was lost): keep the first */
        i = (i + 1) & (m->cap - 1);
    }
    m->s[i] = (live_slot){heap, addr, size};
    m->n++;
    m->bytes += size;
    if (m->bytes > m->peak)
        m->peak = m->bytes;
    return true;
}

static void live_remove(live_set *m, uint64_t heap, uint64_t addr)
{
    size_t i = slot_of(m, heap, addr);
    for (;; i = (i + 1) & (m->cap - 1)) {
        if (m->s[i].addr == 0)
            return; /* not live (lost events): nothing to do */
        if (m->s[i].addr == addr && m->s[i].heap == heap)
            break;
    }
    m->bytes -= m->s[i].size;
    m->s[i].addr = 0;
    m->n--;
    for (size_t j = (i + 1) & (m->cap - 1); m->s[j].addr != 0; j = (j + 1) & (m->cap - 1)) {
        size_t home = slot_of(m, m->s[j].heap, m->s[j].addr);
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            m->s[i] = m->s[j];
            m->s[j].addr = 0;
            i = j;
        }
    }
}

typedef struct trace_sum {
    bool ok;             /* the file could be opened as a trace */
    bool complete;       /* its end summary was read */
    uint32_t pid;        /* traced process */
    char prog[64];       /* basename of its argv[0] */
    uint64_t n_events;   /* events read */
    uint64_t n_lost;     /* events lost */
    uint64_t peak_bytes; /* largest sum of live blocks' requested sizes */
    char status[128];    /* reader status when not ok/complete */
} trace_sum;

static void summarize(const char *path, trace_sum *t)
{
    memset(t, 0, sizeof *t);
    ht_reader *r;
    ht_reader_status_code st = ht_reader_open(path, &r);
    if (st != HT_READER_OK) {
        snprintf(t->status, sizeof t->status, "%s", ht_reader_status_name[st]);
        return;
    }
    t->ok = true;
    live_set m = {calloc(1024, sizeof(live_slot)), 1024, 0, 0, 0};
    ht_reader_event re;
    while (m.s != NULL && ht_reader_next(r, &re)) {
        const ht_event *e = &re.event;
        t->n_events++;
        if (e->type == HT_EVENT_HEAP_ALLOC && e->alloc.source != HT_SOURCE_INVALID) {
            live_add(&m, e->heap_handle, e->alloc.address, e->alloc.size);
        } else if (e->type == HT_EVENT_HEAP_FREE && e->free.source != HT_SOURCE_INVALID) {
            live_remove(&m, e->heap_handle, e->free.address);
        } else if (e->type == HT_EVENT_HEAP_REALLOC && e->realloc.source != HT_SOURCE_INVALID) {
            live_remove(&m, e->heap_handle, e->realloc.old_address);
            live_add(&m, e->heap_handle, e->realloc.new_address, e->realloc.new_size);
        } else if (e->type == HT_EVENT_HEAP_DESTROY) {
            for (size_t i = 0; i < m.cap; i++)
                if (m.s[i].addr != 0 && m.s[i].heap == e->heap_handle) {
                    live_remove(&m, m.s[i].heap, m.s[i].addr);
                    i--; /* a later entry may have moved here */
                }
        }
    }
    ht_reader_trace_info info;
    ht_reader_info(r, &info);
    t->complete = info.complete;
    t->pid = info.pid;
    t->n_lost = info.n_lost;
    t->peak_bytes = m.peak;
    const char *prog = info.cmdline != NULL ? info.cmdline : "";
    const char *slash = strrchr(prog, '/');
    snprintf(t->prog, sizeof t->prog, "%s", slash != NULL ? slash + 1 : prog);
    const char *msg = NULL;
    if (ht_reader_status(r, NULL, &msg) != HT_READER_OK && msg != NULL)
        snprintf(t->status, sizeof t->status, "%s", msg);
    free(m.s);
    ht_reader_close(r);
}

/* The pid in a trace's file header (docs/FORMAT.md 3), or 0: cheap, no reader scan. */
static uint32_t header_pid(const char *path)
{
    unsigned char hdr[16];
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return 0;
    size_t n = fread(hdr, 1, sizeof hdr, f);
    fclose(f);
    if (n != sizeof hdr || memcmp(hdr, "HTRACE\r\n", 8) != 0)
        return 0;
    return (uint32_t)hdr[12] | (uint32_t)hdr[13] << 8 | (uint32_t)hdr[14] << 16 |
           (uint32_t)hdr[15] << 24;
}

typedef struct manifest_entry {
    char *path;   /* absolute path of the trace */
    uint32_t pid; /* from its header; 0 = unreadable */
} manifest_entry;

/* The manifest's lines (one absolute path each, in the order the traces started). */
static manifest_entry *manifest_read(const char *manifest, size_t *n_out)
{
    manifest_entry *e = NULL;
    size_t n = 0, cap = 0;
    char line[PATH_MAX + 2];
    FILE *f = fopen(manifest, "r");
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (line[0] == '\0')
            continue;
        if (n == cap) {
            cap = cap != 0 ? 2 * cap : 16;
            manifest_entry *g = realloc(e, cap * sizeof *e);
            if (g == NULL)
                break;
            e = g;
        }
        e[n].path = strdup(line);
        if (e[n].path == NULL)
            break;
        e[n].pid = header_pid(line);
        n++;
    }
    if (f != NULL)
        fclose(f);
    *n_out = n;
    return e;
}

/* Prints where the traces went and what they hold. The root's images (its trace, then the
 * NAME.N of programs it exec'd, same pid) come first; the summary line is about its last
 * image, the program that ran last in that process. Then every other process's trace; one
 * whose process went on to exec another program (a later trace has its pid) is said to have
 * ended by exec: its events were still in memory when exec replaced the program. */
static void report(const char *manifest, const char *root_path, pid_t root_pid)
{
    size_t n = 0;
    manifest_entry *e = manifest_read(manifest, &n);
    size_t first = n;
    for (size_t i = 0; i < n && first == n; i++)
        if (strcmp(e[i].path, root_path) == 0)
            first = i;
    trace_sum t, last;
    memset(&last, 0, sizeof last);
    bool *is_root = calloc(n + 1, sizeof *is_root);
    if (first < n && is_root != NULL) {
        fprintf(stderr, "heaptrail record: trace written to %s\n", e[first].path);
        for (size_t i = first; i < n; i++) {
            if (i != first && e[i].pid != (uint32_t)root_pid)
                continue;
            is_root[i] = true;
            summarize(e[i].path, &last);
            if (i != first)
                fprintf(stderr, "heaptrail record: and to %s (%s, exec'd by the same process)\n",
                        e[i].path, last.prog);
        }
        if (!last.ok)
            fprintf(stderr, "heaptrail record: unreadable trace: %s\n", last.status);
        else
            fprintf(stderr, "heaptrail record: %llu events, %llu lost, peak live bytes %llu%s\n",
                    (unsigned long long)last.n_events, (unsigned long long)last.n_lost,
                    (unsigned long long)last.peak_bytes,
                    last.complete ? ""
                                  : " (incomplete: no end summary; the program called "
                                    "_exit or was killed)");
    } else {
        fprintf(stderr,
                "heaptrail record: no trace of the program's own process was written to "
                "%s (see any message above)\n",
                root_path);
    }
    size_t n_other = 0, n_incomplete = 0, n_exec = 0;
    uint64_t other_events = 0, other_lost = 0;
    for (size_t i = 0; i < n && is_root != NULL; i++) {
        if (is_root[i])
            continue;
        bool exec_ended = false;
        for (size_t j = i + 1; j < n && !exec_ended; j++)
            exec_ended = e[j].pid != 0 && e[j].pid == e[i].pid;
        summarize(e[i].path, &t);
        n_other++;
        other_events += t.n_events;
        other_lost += t.n_lost;
        if (t.ok && !t.complete && exec_ended)
            n_exec++;
        else if (!t.ok || !t.complete)
            n_incomplete++;
        if (n_other > MAX_LISTED)
            continue;
        if (!t.ok)
            fprintf(stderr, "heaptrail record:   %s: unreadable (%s)\n", e[i].path, t.status);
        else
            fprintf(stderr,
                    "heaptrail record:   %s (%s, pid %u): %llu events, %llu lost, peak live bytes "
                    "%llu%s\n",
                    e[i].path, t.prog, t.pid, (unsigned long long)t.n_events,
                    (unsigned long long)t.n_lost, (unsigned long long)t.peak_bytes,
                    t.complete   ? ""
                    : exec_ended ? ", ended by exec"
                                 : ", incomplete (no end summary: _exit or killed)");
    }
    if (n_other > MAX_LISTED)
        fprintf(stderr, "heaptrail record:   ... and %zu more\n", n_other - MAX_LISTED);
    if (n_other > 0)
        fprintf(stderr,
                "heaptrail record: %zu more trace(s) from child processes: %llu events, %llu "
                "lost, %zu ended by exec, %zu incomplete\n",
                n_other, (unsigned long long)other_events, (unsigned long long)other_lost, n_exec,
                n_incomplete);
    for (size_t i = 0; i < n; i++)
        free(e[i].path);
    free(e);
    free(is_root);
}

/* -- running the program ---------------------------------------------------------------- */

typedef struct child_error {
    int stage; /* 1 trace file, 2 exec */
    int err;   /* errno */
} child_error;

static volatile sig_atomic_t g_child_pid;

static void forward_signal(int sig)
{
    if (g_child_pid > 0)
        kill((pid_t)g_child_pid, sig);
}

/* In the child: the environment for the preload library, then exec. Reports failure on fd. */
__attribute__((noreturn)) static void child_run(int fd, char **cmd, const char *lib,
                                                const char *output, const char *pattern,
                                                unsigned stacks, bool follow, const char *manifest,
                                                bool start_on, bool control)
{
    child_error ce = {0, 0};
    char buf[PATH_MAX + 64];
    char *root_output = NULL;
    if (output != NULL) {
        root_output = (char *)output;
    } else {
        const char *slash = strrchr(cmd[0], '/');
        char cwd[PATH_MAX];
        if (getcwd(cwd, sizeof cwd) == NULL) {
            ce = (child_error){1, errno};
            goto fail;
        }
        snprintf(buf, sizeof buf, "%s/heaptrail.%s.%d.htr", cwd, slash ? slash + 1 : cmd[0],
                 (int)getpid());
        root_output = buf;
        int err = probe_create(root_output);
        if (err != 0) {
            ce = (child_error){1, err};
            goto fail;
        }
    }
    const char *old = getenv("LD_PRELOAD");
    size_t n = strlen(lib) + (old != NULL ? strlen(old) : 0) + 2;
    char *pre = malloc(n);
    char num[32];
    if (pre == NULL) {
        ce = (child_error){2, ENOMEM};
        goto fail;
    }
    snprintf(pre, n, "%s%s%s", lib, old != NULL && old[0] != '\0' ? ":" : "",
             old != NULL ? old : "");
    if (setenv("LD_PRELOAD", pre, 1) != 0 ||
        setenv("HEAPTRAIL_ENABLED", start_on ? "1" : "0", 1) != 0 ||
        setenv("HEAPTRAIL_CONTROL", control ? "1" : "0", 1) != 0 ||
        setenv("HEAPTRAIL_OUTPUT", pattern, 1) != 0 ||
        setenv("HEAPTRAIL_ROOT_OUTPUT", root_output, 1) != 0 ||
        setenv("HEAPTRAIL_MANIFEST", manifest, 1) != 0 ||
        setenv("HEAPTRAIL_FOLLOW_FORK", follow ? "1" : "0", 1) != 0) {
        ce = (child_error){2, errno};
        goto fail;
    }
    snprintf(num, sizeof num, "%u", stacks);
    setenv("HEAPTRAIL_STACKS", num, 1);
    snprintf(num, sizeof num, "%d", (int)getpid());
    setenv("HEAPTRAIL_ROOT_PID", num, 1);
    execvp(cmd[0], cmd);
    ce = (child_error){2, errno};
fail:
    (void)!write(fd, &ce, sizeof ce);
    _exit(127);
}

/* The child's status as a shell would give it back: its exit code, or its signal again. */
static int pass_status(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core); /* the child's core, if any, is the one that counts */
        fflush(NULL);
        signal(sig, SIG_DFL);
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, sig);
        sigprocmask(SIG_UNBLOCK, &set, NULL);
        raise(sig);
        return 128 + sig; /* the signal did not end us (SIG_DFL ignores it) */
    }
    return HT_CLI_FAIL;
}

int ht__cli_record(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"output", required_argument, NULL, 'o'},
        {"stacks", optional_argument, NULL, 's'},
        {"stack-events", required_argument, NULL, 'E'},
        {"no-follow-fork", no_argument, NULL, 'F'},
        {"off", no_argument, NULL, 'O'},
        {"no-control", no_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *output = NULL;
    unsigned stacks = 0;
    bool follow = true, start_on = true, control = true;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+o:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'o':
            if (optarg[0] == '\0')
                return usage_error("empty output file name", NULL);
            output = optarg;
            break;
        case 's':
            stacks = DEFAULT_STACK_DEPTH;
            if (optarg != NULL) {
                char *end;
                errno = 0;
                unsigned long v = strtoul(optarg, &end, 10);
                if (errno != 0 || end == optarg || *end != '\0' || v < 1 || v > 256)
                    return usage_error("--stacks wants a depth of 1..256, not", optarg);
                stacks = (unsigned)v;
            }
            break;
        case 'E': {
            unsigned bits;
            if (!ht__stack_events_parse(optarg, &bits))
                return usage_error("--stack-events wants a list of " HT_STACK_EVENT_NAMES ", not",
                                   optarg);
            if (stacks == 0)
                stacks = DEFAULT_STACK_DEPTH;
            setenv("HEAPTRAIL_STACK_EVENTS", optarg, 1); /* for CMD, not for record */
            break;
        }
        case 'F':
            follow = false;
            break;
        case 'O':
            start_on = false;
            break;
        case 'C':
            control = false;
            break;
        case 'h':
            print_usage(stdout);
            return HT_CLI_OK;
        case ':':
            return usage_error("option needs a value:", argv[optind - 1]);
        default:
            return usage_error("unknown option", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return usage_error("no program to run", NULL);
    if (!start_on && !control)
        return usage_error("--off needs the control channel to switch tracing on; drop",
                           "--no-control");
    char **cmd = argv + optind;

    const char *lib = preload_path();
    if (lib == NULL) {
        fprintf(stderr,
                "heaptrail record: libheaptrail-preload.so not found (looked at %s%s%s); "
                "set HEAPTRAIL_PRELOAD_LIB\n",
                HT_PRELOAD_BUILD_PATH, HT_PRELOAD_BUILD_PATH[0] != '\0' ? " and " : "",
                HT_PRELOAD_INSTALL_PATH);
        return HT_CLI_FAIL;
    }

    int rc = HT_CLI_FAIL;
    char *out_abs = NULL, *pattern = NULL, *root_path = NULL;
    char manifest[PATH_MAX];
    int mfd = -1;
    const char *tmpdir = getenv("TMPDIR");
    snprintf(manifest, sizeof manifest, "%s/heaptrail-record.XXXXXX",
             tmpdir != NULL && tmpdir[0] == '/' ? tmpdir : "/tmp");
    if (output != NULL) {
        out_abs = absolute(output);
        if (out_abs == NULL) {
            fprintf(stderr, "heaptrail record: %s: %s\n", output, strerror(errno));
            goto out;
        }
        int err = probe_create(out_abs);
        if (err == EEXIST) {
            fprintf(stderr, "heaptrail record: %s exists; traces are never overwritten\n", out_abs);
            goto out;
        }
        if (err != 0) {
            fprintf(stderr, "heaptrail record: cannot create %s: %s\n", out_abs, strerror(err));
            goto out;
        }
        pattern = escape_percent(out_abs); /* other processes: FILE.<pid> (the preload adds it) */
    } else {
        pattern = absolute("heaptrail.%e.%p.htr");
    }
    if (pattern == NULL) {
        fprintf(stderr, "heaptrail record: out of memory\n");
        goto out;
    }
    mfd = mkostemp(manifest, O_CLOEXEC);
    if (mfd < 0) {
        fprintf(stderr, "heaptrail record: cannot create %s: %s\n", manifest, strerror(errno));
        goto out;
    }

    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0) {
        fprintf(stderr, "heaptrail record: pipe: %s\n", strerror(errno));
        goto out_manifest;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "heaptrail record: fork: %s\n", strerror(errno));
        close(pfd[0]);
        close(pfd[1]);
        goto out_manifest;
    }
    if (pid == 0) {
        close(pfd[0]);
        child_run(pfd[1], cmd, lib, out_abs, pattern, stacks, follow, manifest, start_on, control);
    }
    close(pfd[1]);
    g_child_pid = pid;
    if (!start_on)
        fprintf(stderr,
                "heaptrail record: %s runs as pid %d with tracing off; switch it with "
                "'heaptrail ctl %d on|off'\n",
                cmd[0], (int)pid, (int)pid);
    /* As a shell does for a foreground job: the terminal's ^C and ^\ reach the program (same
     * process group); record stays to report. SIGTERM and SIGHUP are passed on. */
    signal(SIGINT, SIG_IGN);
    signal(SIGQUIT, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = forward_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);

    child_error ce = {0, 0};
    ssize_t got;
    do
        got = read(pfd[0], &ce, sizeof ce);
    while (got < 0 && errno == EINTR);
    close(pfd[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    g_child_pid = 0;
    if (got == (ssize_t)sizeof ce) {
        if (ce.stage == 1)
            fprintf(stderr,
                    "heaptrail record: cannot create the trace file in the current "
                    "directory: %s\n",
                    strerror(ce.err));
        else if (ce.err == ENOENT && cmd[0][strspn(cmd[0], "0123456789")] == '\0' &&
                 cmd > argv + 1 && strcmp(cmd[-1], "--stacks") == 0)
            fprintf(stderr,
                    "heaptrail record: %s: command not found (a depth is given as "
                    "--stacks=%s)\n",
                    cmd[0], cmd[0]);
        else if (ce.err == ENOENT)
            fprintf(stderr, "heaptrail record: %s: command not found\n", cmd[0]);
        else
            fprintf(stderr, "heaptrail record: cannot run %s: %s\n", cmd[0], strerror(ce.err));
        goto out_manifest;
    }
    if (out_abs != NULL) {
        root_path = strdup(out_abs);
    } else {
        const char *slash = strrchr(cmd[0], '/');
        char name[PATH_MAX + 64];
        snprintf(name, sizeof name, "heaptrail.%s.%d.htr", slash ? slash + 1 : cmd[0], (int)pid);
        root_path = absolute(name);
    }
    if (root_path != NULL)
        report(manifest, root_path, pid);
    rc = pass_status(status);

out_manifest:
    close(mfd);
    unlink(manifest);
out:
    free(out_abs);
    free(pattern);
    free(root_path);
    return rc;
}
