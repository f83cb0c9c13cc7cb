/* cmd_export.c — `heaptrail export`: not built yet (placeholder so the table is complete; it says
 * so and fails). */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

int ht__cli_export(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: heaptrail export ...\n\nnot built yet in this version of heaptrail.\n");
        return HT_CLI_OK;
    }
    fprintf(stderr, "heaptrail export: not built yet in this version of heaptrail\n");
    return HT_CLI_FAIL;
}
