// The `dsa` command. Subcommands are added as they are built (train, gradcheck, op, inspect, bench).
#include <stdio.h>
#include <string.h>
#include "core/error.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: dsa COMMAND [args]\n"
            "commands:\n"
            "  help                 this text\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "help") || !strcmp(argv[1], "--help")) {
        usage(stdout);
        return argc < 2 ? 2 : 0;
    }
    fprintf(stderr, "dsa: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
