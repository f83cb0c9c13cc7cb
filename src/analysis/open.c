/* open.c — opens a trace for the report and dump commands and, when it cannot be read at all,
 * says why in one line naming the problem and the byte offset (the reader returns only a code
 * when ht_reader_open fails, so the header is looked at again here to say more). Never prints:
 * the message goes into the caller's buffer. */
#include "analysis/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

ht_reader_status_code ht__an_open(const char *path, ht_reader **out, char *msg, size_t cap)
{
    *out = NULL;
    msg[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(msg, cap, "cannot open: %s", strerror(errno));
        return HT_READER_IO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(msg, cap, "cannot stat: %s", strerror(errno));
        close(fd);
        return HT_READER_IO;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(msg, cap, "%s", S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file");
        close(fd);
        return HT_READER_IO;
    }
    unsigned char hdr[12] = {0};
    ssize_t got = pread(fd, hdr, sizeof hdr, 0);
    close(fd);
    ht_reader_status_code code = ht_reader_open(path, out);
    if (code == HT_READER_OK)
        return code;
    unsigned version = got >= 10 ? (unsigned)hdr[8] | (unsigned)hdr[9] << 8 : 0;
    switch (code) {
    case HT_READER_NOT_A_TRACE:
        snprintf(msg, cap, "not a heaptrail trace: no \"HTRACE\" magic at offset 0 (%lld bytes)",
                 (long long)st.st_size);
        break;
    case HT_READER_BAD_VERSION:
        snprintf(msg, cap, "trace format version %u at offset 8: this heaptrail reads version 1%s",
                 version, version > 1 ? " (the trace is from a newer heaptrail)" : "");
        break;
    case HT_READER_BAD_HEADER:
        snprintf(msg, cap, "damaged file header at offset 0 (checksum or field out of range)");
        break;
    case HT_READER_TRUNCATED:
        snprintf(msg, cap, "cut off inside the file header at offset %lld", (long long)st.st_size);
        break;
    case HT_READER_NOMEM:
        snprintf(msg, cap, "out of memory opening the trace");
        break;
    default:
        snprintf(msg, cap, "%s at offset 0", ht_reader_status_name[code]);
        break;
    }
    return code;
}
