// `dsa train CONFIG [section.key=value ...]`: train a model from a config file (train/trainer.h).
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include "train/commands.h"
#include "train/config.h"
#include "train/trainer.h"

static void usage(FILE *f) {
    fprintf(f, "usage: dsa train CONFIG [section.key=value ...]\n"
               "  Trains the model of CONFIG (an INI file; see configs/tiny.cfg), overrides applied after the file.\n"
               "  Ctrl-C (SIGINT) or SIGTERM saves a checkpoint and stops; train.resume=latest continues.\n"
               "  dsa train --help-keys lists every key.\n");
}

int dsa_cmd_train(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--help-keys")) {
        dsa_config_help(stdout);
        return 0;
    }
    dsa_config cfg;
    if (dsa_config_load(&cfg, argv[1], argc - 2, argv + 2) != DSA_OK) {
        fprintf(stderr, "dsa train: %s\n", dsa_error_message());
        return 1;
    }
    dsa_trainer *t = NULL;
    if (dsa_trainer_create(&cfg, &t) != DSA_OK) {
        fprintf(stderr, "dsa train: %s\n", dsa_error_message());
        return 1;
    }
    bool main_rank = dsa_launch_detect().world_rank == 0;
    dsa_trainer_install_signal_handlers();
    dsa_train_summary s;
    dsa_status st = dsa_trainer_run(t, &s);
    if (st != DSA_OK) {
        fprintf(stderr, "dsa train: %s\n", dsa_error_message());
        dsa_trainer_abort(t, "this rank failed (message above)");  // other ranks must not wait on it
        dsa_trainer_free(t);
        return 1;
    }
    dsa_trainer_free(t);
    dsa_comm_finalize();
    if (!main_rank) return 0;
    printf("done: %lld steps (%lld this run) in %.1f s | last loss %.4f kl %.4f", (long long)s.steps_done,
           (long long)s.steps_this_run, s.wall_s, s.last_loss, s.last_kl);
    if (isfinite(s.eval_loss)) printf(" | eval loss %.4f", s.eval_loss);
    if (isfinite(s.eval_accuracy)) printf(" | answer accuracy %.4f", s.eval_accuracy);
    printf("%s\n", s.interrupted ? " | interrupted" : "");
    return 0;
}
