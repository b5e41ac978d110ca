// The `dsa` command: one binary, one subcommand per job.
#include <stdio.h>
#include <string.h>
#include "train/commands.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} command;

// Each subcommand adds its line here.
static const command COMMANDS[] = {
    // DSA_COMMANDS_TABLE
    {"bench", dsa_cmd_bench, "benchmark the DSA kernels beside cuBLAS and PyTorch"},
    {"op", dsa_cmd_op, "run one DSA op's forward and backward on tensors from an HDF5 file"},
    {"train", dsa_cmd_train, "train a model from a config file"},
    {"gradcheck", dsa_cmd_gradcheck, "compare the sparse path with the dense reference"},
    {"inspect", dsa_cmd_inspect, "list the contents of a checkpoint"},
    {NULL, NULL, NULL},
};

static void usage(FILE *f) {
    fprintf(f, "usage: dsa COMMAND [args]   (dsa COMMAND --help for its options)\ncommands:\n");
    for (const command *c = COMMANDS; c->name; c++) fprintf(f, "  %-10s %s\n", c->name, c->help);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(stdout);
        return 0;
    }
    for (const command *c = COMMANDS; c->name; c++)
        if (!strcmp(argv[1], c->name)) return c->run(argc - 1, argv + 1);
    fprintf(stderr, "dsa: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
