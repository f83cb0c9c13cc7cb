/* main.c — the `heaptrail` command: dispatches to one cmd_<name>.c per subcommand through the
 * table below (git's way). Data goes to stdout, diagnostics to stderr; exit 0 ok, 1 failure,
 * 2 usage. Never links the heap: the analysis side reads traces only. */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

typedef struct cli_command {
    const char *name;    /* subcommand as typed */
    ht_cli_fn fn;        /* its entry point */
    const char *summary; /* one line for `heaptrail --help` */
} cli_command;

static const cli_command commands[] = {
    {"record", ht__cli_record, "run a program on heaptrail's heap and trace it to a file"},
    {"report", ht__cli_report, "leaks, peak, hot sites, Sources, lifetimes from a trace"},
    {"dump", ht__cli_dump, "every event of a trace, one per line (text, json, csv)"},
    {"export", ht__cli_export, "convert a trace for other tools (pprof, ctf, chrome, ...)"},
    {"ctl", ht__cli_ctl, "switch tracing of a running preloaded process on or off"},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *out)
{
    fprintf(out, "usage: heaptrail <command> [options] ...\n\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n'heaptrail <command> --help' describes one command.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return HT_CLI_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return HT_CLI_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("heaptrail %s\n", HT_VERSION_STRING);
        return HT_CLI_OK;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "heaptrail: '%s' is not a command (see 'heaptrail --help')\n", argv[1]);
    return HT_CLI_USAGE;
}
