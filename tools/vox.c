/*
 * vox.c: the `vox` command line. It only dispatches: each subcommand lives in its own
 * tools/cmd_NAME.c and is listed once in commands.inc.
 */
#include "cli.h"
#include "commit.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
} commands[] = {
#define VOX_COMMAND(name, summary) {#name, summary, vox_cmd_##name},
#include "commands.inc"
#undef VOX_COMMAND
};

static void usage(FILE *f)
{
    fprintf(f, "usage: vox COMMAND [OPTIONS]\n\n"
               "vox turns 3D electron-microscope images into neuron segmentations on CPUs.\n\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n'vox COMMAND --help' describes each command. Environment: VOX_THREADS (worker\n"
               "threads), VOX_ISA=ref|avx2|avx512 (cap the instruction set).\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("vox %s\n", VOX_COMMIT);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "vox: error: unknown command '%s' (see 'vox --help')\n", argv[1]);
    return 2;
}
