/* cmd_report.c — `heaptrail report`: not built yet (placeholder so the table is complete; it says
 * so and fails). */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

int ht__cli_report(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: heaptrail report ...\n\nnot built yet in this version of heaptrail.\n");
        return HT_CLI_OK;
    }
    fprintf(stderr, "heaptrail report: not built yet in this version of heaptrail\n");
    return HT_CLI_FAIL;
}
