/* options.c — reads the HEAPTRAIL_<NAME> variables of the options table (types.h) with
 * secure_getenv, so a setuid or setgid program sees none of them and is never traced. Runs
 * once from the library constructor; never from inside malloc, never allocates. */
#include "preload/internal.h"

#include "common/log.h"
#include "trace/stack_events.h"

#include <heaptrail.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

ht_preload_config ht__preload_cfg;

#define OPT_NAME(name, kind, def, doc) "HEAPTRAIL_" #name,
static const char *const k_names[HT_PRELOAD_N_OPTS] = {HT_PRELOAD_OPTIONS(OPT_NAME)};
#undef OPT_NAME
#define OPT_DEFAULT(name, kind, def, doc) def,
static const char *const k_defaults[HT_PRELOAD_N_OPTS] = {HT_PRELOAD_OPTIONS(OPT_DEFAULT)};
#undef OPT_DEFAULT

static void bad_option(unsigned i, const char *value, const char *why)
{
    ht__log("heaptrail: %s=%s: %s; running untraced\n", k_names[i], value, why);
    ht__preload_cfg.bad = 1;
}

/* A decimal number no larger than max; false for anything else. */
static bool parse_uint(const char *s, unsigned max, unsigned *out)
{
    uint64_t v = 0;
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
        if (v > max)
            return false;
    }
    *out = (unsigned)v;
    return true;
}

static void copy_path(unsigned i, const char *value, char *dst)
{
    size_t n = strlen(value);
    if (n >= HT_PRELOAD_PATH_MAX) {
        bad_option(i, "...", "longer than 4095 bytes");
        return;
    }
    memcpy(dst, value, n + 1);
}

static void take(unsigned i, const char *v)
{
    ht_preload_config *c = &ht__preload_cfg;
    unsigned u = 0;
    switch ((ht_preload_opt)i) {
    case HT_PRELOAD_OPT_OUTPUT:
        if (*v == '\0')
            bad_option(i, v, "empty file name");
        else
            copy_path(i, v, c->output);
        break;
    case HT_PRELOAD_OPT_ENABLED:
    case HT_PRELOAD_OPT_FOLLOW_FORK:
    case HT_PRELOAD_OPT_CONTROL:
        if (!parse_uint(v, 1, &u)) {
            bad_option(i, v, "must be 0 or 1");
            break;
        }
        if (i == HT_PRELOAD_OPT_ENABLED)
            c->enabled = (int)u;
        else if (i == HT_PRELOAD_OPT_FOLLOW_FORK)
            c->follow_fork = (int)u;
        else
            c->control = (int)u;
        break;
    case HT_PRELOAD_OPT_STACKS:
        if (!parse_uint(v, 256, &u))
            bad_option(i, v, "must be a number of frames, 0..256");
        else
            c->stacks = u;
        break;
    case HT_PRELOAD_OPT_STACK_EVENTS:
        if (!ht__stack_events_parse(v, &u))
            bad_option(i, v, "must be a list of " HT_STACK_EVENT_NAMES);
        else
            c->stack_events = u;
        break;
    case HT_PRELOAD_OPT_LOSS:
        if (strcmp(v, "drop") == 0)
            c->loss_policy = HT_TRACE_LOSS_DROP;
        else if (strcmp(v, "block") == 0)
            c->loss_policy = HT_TRACE_LOSS_BLOCK;
        else
            bad_option(i, v, "must be drop or block");
        break;
    case HT_PRELOAD_OPT_BUFFERS:
        if (!parse_uint(v, 4096, &u) || u == 1)
            bad_option(i, v, "must be 0 or 2..4096 packets");
        else
            c->n_buffers = u;
        break;
    case HT_PRELOAD_OPT_ROOT_PID:
        if (!parse_uint(v, 0x7fffffffu, &u))
            bad_option(i, v, "must be a process id");
        else
            c->root_pid = u;
        break;
    case HT_PRELOAD_OPT_ROOT_OUTPUT:
        copy_path(i, v, c->root_output);
        break;
    case HT_PRELOAD_OPT_MANIFEST:
        copy_path(i, v, c->manifest);
        break;
    case HT_PRELOAD_N_OPTS:
        break;
    }
}

void ht__preload_options_read(void)
{
    ht_preload_config *c = &ht__preload_cfg;
    memset(c, 0, sizeof *c);
    bool output_set = false;
    for (unsigned i = 0; i < HT_PRELOAD_N_OPTS; i++) {
        const char *v = secure_getenv(k_names[i]);
        if (i == HT_PRELOAD_OPT_OUTPUT)
            output_set = v != NULL;
        if (v == NULL)
            v = k_defaults[i];
        if (v != NULL)
            take(i, v);
    }
    if (secure_getenv(k_names[HT_PRELOAD_OPT_ENABLED]) == NULL)
        c->enabled = output_set ? 1 : 0;
    /* --no-follow-fork: a program exec'd by a child of the root is not traced either. */
    if (!c->follow_fork && c->root_pid != 0 && (unsigned)getpid() != c->root_pid)
        c->enabled = 0;
    if (c->bad)
        c->enabled = 0;
}
