/* types.h — the preload library's options table and constants. Holds data only; the code is
 * in malloc.c (the exported malloc family), options.c (reading the table) and tracing.c
 * (starting and stopping the session). Header-only macros, so `heaptrail record` can list
 * the same variables in its --help without linking any of it.
 *
 * Glossary (docs/architecture.md has the heap's words):
 *   shim       the exported malloc family: a thin layer over the process heap
 *   bootstrap  a small static arena for the calls a thread makes while it initializes the
 *              heap (re-entry from inside ht_process_heap); its blocks are never freed
 *   option     one HEAPTRAIL_<NAME> environment variable, read with secure_getenv
 *   root       the process `heaptrail record` started (HEAPTRAIL_ROOT_PID)
 *   image      one program run by a process: exec starts a new image in the same process
 *   resume     the first malloc-family call of a child forked while tracing: it stops the
 *              inherited session and, when following forks, starts the child's own
 */
#ifndef HT_PRELOAD_TYPES_H
#define HT_PRELOAD_TYPES_H

/* X(NAME, KIND, DEFAULT, DOC): the variable is HEAPTRAIL_<NAME>; DEFAULT NULL = unset.
 * KIND: STR (a string), UINT (a decimal number), BOOL (0 or 1). */
#define HT_PRELOAD_OPTIONS(X)                                                                      \
    X(OUTPUT, STR, "heaptrail.%e.%p.htr",                                                          \
      "trace file; %p = pid, %e = program name, %% = %; relative to the process's cwd")            \
    X(ENABLED, BOOL, NULL, "1: trace from the start; 0: do not; unset: trace iff OUTPUT is set")   \
    X(STACKS, UINT, "0", "call-stack frames per event; 0 = no stacks (at most 256)")               \
    X(STACK_EVENTS, STR, "all",                                                                    \
      "with STACKS: the events that get a stack, e.g. alloc,realloc (INVALID ones always do)")     \
    X(FOLLOW_FORK, BOOL, "1", "1: a child forked while tracing traces into its own file")          \
    X(LOSS, STR, "drop", "when the writer falls behind: drop (and count) or block")                \
    X(BUFFERS, UINT, "0", "64 KiB packets per thread buffer, 2..4096; 0 = the recorder's (32)")    \
    X(ROOT_PID, UINT, "0", "set by heaptrail record: the pid whose trace file is ROOT_OUTPUT")     \
    X(ROOT_OUTPUT, STR, NULL, "set by heaptrail record: the first process's trace file, as is")    \
    X(MANIFEST, STR, NULL,                                                                         \
      "set by heaptrail record: file each traced process appends its path to")                     \
    X(CONTROL, BOOL, "0", "1: serve heaptrail ctl on a control socket (one thread); set by record")

#define HT_PRELOAD_OPT_ENUM(name, kind, def, doc) HT_PRELOAD_OPT_##name,
typedef enum ht_preload_opt {
    HT_PRELOAD_OPTIONS(HT_PRELOAD_OPT_ENUM) HT_PRELOAD_N_OPTS
} ht_preload_opt;
#undef HT_PRELOAD_OPT_ENUM

#define HT_PRELOAD_PATH_MAX 4096u /* bytes of a path option, NUL included */

/* The options as read at load time (options.c), kept for the fork children's resume. */
typedef struct ht_preload_config {
    char output[HT_PRELOAD_PATH_MAX];      /* HEAPTRAIL_OUTPUT pattern */
    char root_output[HT_PRELOAD_PATH_MAX]; /* HEAPTRAIL_ROOT_OUTPUT; "" = unset */
    char manifest[HT_PRELOAD_PATH_MAX];    /* HEAPTRAIL_MANIFEST; "" = unset */
    int enabled;                           /* 1, 0 */
    unsigned stacks;                       /* frames per event; 0 = none */
    unsigned stack_events;                 /* HT_TRACE_STACK bits (HEAPTRAIL_STACK_EVENTS) */
    int follow_fork;                       /* 1, 0 */
    unsigned loss_policy;                  /* HT_TRACE_LOSS_* */
    unsigned n_buffers;                    /* packets per thread; 0 = default */
    unsigned root_pid;                     /* 0 = unset */
    int control;                           /* 1: start the control channel (control.c) */
    int bad;                               /* an option did not parse: never trace */
} ht_preload_config;

#endif
