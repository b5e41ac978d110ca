// Entry points of the `dsa` subcommands (train/main.c dispatches). Each returns the process exit
// code: 0 success, 1 failure (message printed), 2 usage error.
#pragma once

int dsa_cmd_train(int argc, char **argv);     // train/cmd_train.c
int dsa_cmd_gradcheck(int argc, char **argv); // train/cmd_gradcheck.c
int dsa_cmd_inspect(int argc, char **argv);   // train/cmd_inspect.c
int dsa_cmd_op(int argc, char **argv);        // train/cmd_op.c
int dsa_cmd_bench(int argc, char **argv);     // bench/ (dsa bench)
