/* sbuf.c — a growing text buffer for the report (the analysis never prints: the caller writes
 * the text), JSON string escaping, and human-readable bytes and durations.
 * An allocation failure sets oom and later appends do nothing. */
#include "analysis/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ht__sb_free(ht_sbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

static bool sb_reserve(ht_sbuf *b, size_t extra)
{
    if (b->oom)
        return false;
    if (b->n + extra + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + extra + 1) {
        if (cap > SIZE_MAX / 2) {
            b->oom = true;
            return false;
        }
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (p == NULL) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void ht__sb_put(ht_sbuf *b, const char *s, size_t n)
{
    if (!sb_reserve(b, n))
        return;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void ht__sb_puts(ht_sbuf *b, const char *s)
{
    ht__sb_put(b, s, strlen(s));
}

void ht__sb_printf(ht_sbuf *b, const char *fmt, ...)
{
    va_list ap;
    char tmp[512];
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k < 0)
        return;
    if ((size_t)k < sizeof tmp) {
        ht__sb_put(b, tmp, (size_t)k);
        return;
    }
    if (!sb_reserve(b, (size_t)k))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)k + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0 when it is not one. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned min;
    if (c < 0x80)
        return 1;
    if ((c & 0xE0) == 0xC0) {
        len = 2;
        min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3;
        min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4;
        min = 0x10000;
    } else
        return 0;
    if (len > n)
        return 0;
    unsigned cp = c & (0x7Fu >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3Fu);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

void ht__sb_json_strn(ht_sbuf *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    ht__sb_put(b, "\"", 1);
    size_t i = 0;
    while (i < n) {
        unsigned c = u[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            ht__sb_put(b, e, 2);
            i++;
        } else if (c < 0x20) {
            char e[8];
            snprintf(e, sizeof e, "\\u%04x", c);
            ht__sb_put(b, e, 6);
            i++;
        } else {
            size_t len = utf8_len(u + i, n - i);
            if (len == 0) {
                ht__sb_put(b, "\\ufffd", 6);
                i++;
            } else {
                ht__sb_put(b, s + i, len);
                i += len;
            }
        }
    }
    ht__sb_put(b, "\"", 1);
}

void ht__sb_json_str(ht_sbuf *b, const char *s)
{
    if (s == NULL)
        ht__sb_puts(b, "null");
    else
        ht__sb_json_strn(b, s, strlen(s));
}

const char *ht__fmt_bytes(uint64_t bytes, char *buf, size_t cap)
{
    static const char *const unit[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (bytes < 1024) {
        snprintf(buf, cap, "%llu B", (unsigned long long)bytes);
        return buf;
    }
    double v = (double)bytes / 1024.0;
    unsigned u = 0;
    while (v >= 1024.0 && u < 5) {
        v /= 1024.0;
        u++;
    }
    snprintf(buf, cap, "%.1f %s", v, unit[u]);
    return buf;
}

const char *ht__fmt_ns(uint64_t ns, char *buf, size_t cap)
{
    if (ns < 1000)
        snprintf(buf, cap, "%llu ns", (unsigned long long)ns);
    else if (ns < 1000000)
        snprintf(buf, cap, "%.3f us", (double)ns / 1e3);
    else if (ns < 1000000000)
        snprintf(buf, cap, "%.3f ms", (double)ns / 1e6);
    else
        snprintf(buf, cap, "%.6f s", (double)ns / 1e9);
    return buf;
}
