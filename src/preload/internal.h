/* internal.h — cross-file prototypes of the preload library, grouped by the file that
 * defines them. Nothing here may allocate with malloc. */
#ifndef HT_PRELOAD_INTERNAL_H
#define HT_PRELOAD_INTERNAL_H

#include "preload/types.h"

#include <stdbool.h>

/* -- options.c -- */
extern ht_preload_config ht__preload_cfg;
/* Reads every HEAPTRAIL_<NAME> with secure_getenv (nothing in setuid programs) into
 * ht__preload_cfg. Says on stderr (one line) which option is bad, and then leaves tracing off.
 * Called once, from the library constructor (not from inside malloc). */
void ht__preload_options_read(void);

/* -- tracing.c -- */
/* Starts the session with the configured options (file name as README describes, stacks,
 * loss policy). 0, or -errno with one line on stderr saying why the process runs untraced.
 * The hook for switching tracing on from outside (heaptrail ctl): any thread, outside malloc
 * (on and off serialize on one lock); -EBUSY when a session of ours runs already. */
int ht__preload_trace_on(void);
/* Stops the session (flushes, writes the summary, closes the file). 0, -EINVAL when none of
 * ours runs, or -errno of the recorder. */
int ht__preload_trace_off(void);
/* The file of the running session, or of the last one ("" before the first). */
const char *ht__preload_trace_path(void);
/* True while this process traces. */
bool ht__preload_tracing(void);
/* In a forked child (atfork handler; async-signal-safe): notes that this process is not the
 * first one, and returns whether a session was running (then the shim calls resume). */
bool ht__preload_fork_child(void);
/* The first malloc-family call in a child forked while a session ran: stops the inherited
 * session and, when following forks, starts the child's own. Called once, not re-entered. */
void ht__preload_fork_resume(void);

#endif
