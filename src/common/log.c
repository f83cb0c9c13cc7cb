/* log.c — the allocation-free formatter behind ht__log and ht__fatal. Async-signal-safe
 * as long as the arguments are. */
#include "common/log.h"

#include "common/os.h"

#include <stdarg.h>
#include <stdbool.h>
#include <sys/types.h>
#include <stdint.h>
#include <stdlib.h>

static size_t put_num(char *buf, size_t cap, size_t n, uint64_t v, unsigned base, bool neg)
{
    char tmp[24];
    size_t k = 0;
    do {
        tmp[k++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v != 0);
    if (neg && n + 1 < cap)
        buf[n++] = '-';
    while (k > 0 && n + 1 < cap)
        buf[n++] = tmp[--k];
    return n;
}

static size_t vfmt(char *buf, size_t cap, const char *fmt, va_list ap)
{
    size_t n = 0;
    if (cap == 0)
        return 0;
    for (const char *f = fmt; *f != '\0' && n + 1 < cap; f++) {
        if (*f != '%') {
            buf[n++] = *f;
            continue;
        }
        f++;
        bool z = false;
        if (*f == 'z') {
            z = true;
            f++;
        }
        switch (*f) {
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (s == NULL)
                s = "(null)";
            while (*s != '\0' && n + 1 < cap)
                buf[n++] = *s++;
            break;
        }
        case 'd': {
            long long v = z ? (long long)va_arg(ap, ssize_t) : va_arg(ap, int);
            n = put_num(buf, cap, n, v < 0 ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v, 10, v < 0);
            break;
        }
        case 'u':
            n = put_num(buf, cap, n, z ? va_arg(ap, size_t) : va_arg(ap, unsigned), 10, false);
            break;
        case 'x':
            n = put_num(buf, cap, n, z ? va_arg(ap, size_t) : va_arg(ap, unsigned), 16, false);
            break;
        case 'p':
            if (n + 3 < cap) {
                buf[n++] = '0';
                buf[n++] = 'x';
            }
            n = put_num(buf, cap, n, (uintptr_t)va_arg(ap, void *), 16, false);
            break;
        case '%':
            buf[n++] = '%';
            break;
        default:
            if (*f == '\0')
                f--;
            break;
        }
    }
    buf[n] = '\0';
    return n;
}

size_t ht__fmt(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t n = vfmt(buf, cap, fmt, ap);
    va_end(ap);
    return n;
}

void ht__log(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    size_t n = vfmt(buf, sizeof buf, fmt, ap);
    va_end(ap);
    ht__os.write(2, buf, n);
}

_Noreturn void ht__fatal(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    size_t n = vfmt(buf, sizeof buf, fmt, ap);
    va_end(ap);
    ht__os.write(2, buf, n);
    abort();
}
