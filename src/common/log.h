/* log.h — diagnostics that never allocate: a tiny formatter over write(2), for the few
 * places a library may speak (an abort on heap corruption). Supports %s %d %u %zu %x %p. */
#ifndef HT_COMMON_LOG_H
#define HT_COMMON_LOG_H

#include <stddef.h>

/* Formats into buf (always NUL-terminated); returns the length. */
size_t ht__fmt(char *buf, size_t cap, const char *fmt, ...);
/* Formats and writes to stderr in one write. */
void ht__log(const char *fmt, ...);
/* Writes the message to stderr and aborts. */
_Noreturn void ht__fatal(const char *fmt, ...);

#endif
