/* control.h — the control channel between `heaptrail ctl` and a preloaded process: where the
 * socket lives and what is said on it. Header-only for the naming rules, so that the CLI
 * (which never links the preload library) and the library agree by construction.
 *
 * Protocol: the client connects to <dir>/<pid>.sock, writes one request word ("on", "off",
 * "status") and reads one reply line: "ok ..." or "error ...". Only a peer with the
 * process's effective uid is answered; the directory is mode 0700 and owned by that uid.
 */
#ifndef HT_PRELOAD_CONTROL_H
#define HT_PRELOAD_CONTROL_H

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The control directory of this user: $XDG_RUNTIME_DIR/heaptrail when XDG_RUNTIME_DIR is an
 * absolute path to a directory owned by the effective uid, else /tmp/heaptrail-<euid>.
 * False when it does not fit in cap bytes. Allocation-free. */
static inline bool ht__ctl_dir(char *out, size_t cap)
{
    const char *xdg = secure_getenv("XDG_RUNTIME_DIR");
    struct stat st;
    char uid[24];
    const char *a = "/tmp/heaptrail-";
    const char *b = uid;
    if (xdg != NULL && xdg[0] == '/' && stat(xdg, &st) == 0 && S_ISDIR(st.st_mode) &&
        st.st_uid == geteuid()) {
        a = xdg;
        b = "/heaptrail";
    } else {
        unsigned v = (unsigned)geteuid();
        char rev[24];
        size_t n = 0;
        do {
            rev[n++] = (char)('0' + v % 10);
            v /= 10;
        } while (v != 0);
        for (size_t i = 0; i < n; i++)
            uid[i] = rev[n - 1 - i];
        uid[n] = '\0';
    }
    size_t la = strlen(a), lb = strlen(b);
    if (la + lb + 1 > cap)
        return false;
    memcpy(out, a, la);
    memcpy(out + la, b, lb + 1);
    return true;
}

/* True when dir is a directory (not a symlink) owned by the effective uid that nobody else
 * may enter; with create, makes it (0700) first when it is missing. */
static inline bool ht__ctl_dir_ok(const char *dir, bool create)
{
    struct stat st;
    if (create && mkdir(dir, 0700) != 0 && errno != EEXIST)
        return false;
    if (lstat(dir, &st) != 0)
        return false;
    return S_ISDIR(st.st_mode) && st.st_uid == geteuid() && (st.st_mode & 0077) == 0;
}

/* Starts this process's control channel (socket + thread); 0 or -errno. Called by the
 * library constructor when HEAPTRAIL_CONTROL is 1 (the default); a forked child has none. */
int ht__ctl_start(void);
/* Removes a socket named for this pid that an earlier program image of this process (before
 * an exec) left behind; for processes without a channel. */
void ht__ctl_forget(void);

#endif
