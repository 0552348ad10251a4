/*
 * cli.h: what the subcommands of `vox` share: the command table, argument parsing helpers
 * that turn bad values into one-line errors, and context set-up from common options.
 */
#ifndef VOX_CLI_H
#define VOX_CLI_H

#include "vox/vox.h"

#include <stdbool.h>
#include <stdint.h>

/* Each subcommand is `int vox_cmd_NAME(int argc, char **argv)` (argv[0] is the name) and
 * returns the process exit status: 0 ok, 1 failure while working, 2 bad usage. */
#define VOX_COMMAND(name, summary) int vox_cmd_##name(int argc, char **argv);
#include "commands.inc"
#undef VOX_COMMAND

struct vox_dist_comm;
/* `vox segment` whose --chunk run is shared by the ranks of comm (NULL: one process; the
 * vox-mpi binary passes an MPI one): only rank 0 writes the output and prints. */
int vox_cmd_segment_comm(int argc, char **argv, const struct vox_dist_comm *comm);

/* Prints "vox CMD: error: MESSAGE" to stderr and returns 2 (usage) for `return cli_usage(..)`. */
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "vox CMD: error: STATUS: CONTEXT MESSAGE" and returns 1. */
int cli_fail(const char *cmd, struct vox_ctx *ctx, enum vox_status s);

bool cli_parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out);
bool cli_parse_f64(const char *s, double *out);
/* "64,256,256" into n values (exactly n, each in [lo, hi]). */
bool cli_parse_shape(const char *s, int n, int64_t lo, int64_t hi, int64_t *out);
/* "512M", "8G", "1024" (bytes) */
bool cli_parse_bytes(const char *s, int64_t *out);

/* Options every command accepts: --threads N, --quiet. Returns 0 if argv[*i] was one of them
 * (advancing *i past its value), 1 if not, 2 after printing a usage error. */
struct cli_common {
    int threads;
    bool quiet;
};
int cli_common_option(const char *cmd, int argc, char **argv, int *i, struct cli_common *c);
/* A context with the common options applied; prints the error and returns NULL on failure. */
struct vox_ctx *cli_ctx_create(const char *cmd, const struct cli_common *c);

/* Parses one command-specific option at argv[*i] (advancing *i past its value); returns 0, or
 * 2 after printing a usage error. */
typedef int (*cli_option_fn)(int argc, char **argv, int *i, void *arg);
/* The option loop every subcommand shares: the common options, --help / -h (prints `help` and
 * returns -1), a bare argument (a usage error), and `one` for everything else. Returns 0 when
 * all parsed, -1 after --help, 2 after a usage error. */
int cli_parse_options(const char *cmd, int argc, char **argv, const char *help,
                      struct cli_common *common, cli_option_fn one, void *arg);

/* The value following option argv[*i], or NULL after printing a usage error. */
const char *cli_value(const char *cmd, int argc, char **argv, int *i);

#endif
