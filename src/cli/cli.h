/* cli.h — the `heaptrail` command's subcommand table and the helpers every cmd_<name>.c
 * shares. Only src/cli prints and chooses exit codes: 0 ok, 1 failure, 2 usage. */
#ifndef HT_CLI_CLI_H
#define HT_CLI_CLI_H

#define HT_CLI_OK    0
#define HT_CLI_FAIL  1
#define HT_CLI_USAGE 2

/* One subcommand: argv[0] is the subcommand's name; returns the exit code. */
typedef int (*ht_cli_fn)(int argc, char **argv);

/* Defined by cmd_<name>.c, one per subcommand. */
int ht__cli_record(int argc, char **argv);
int ht__cli_report(int argc, char **argv);
int ht__cli_dump(int argc, char **argv);
int ht__cli_export(int argc, char **argv);
int ht__cli_ctl(int argc, char **argv);

#endif
