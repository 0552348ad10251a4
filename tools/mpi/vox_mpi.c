/*
 * tools/mpi/vox_mpi.c: `vox-mpi segment ...`, `vox segment` run by MPI ranks
 * (mpirun -np N vox-mpi segment --chunk Z,Y,X ...).
 *
 * Every rank parses the same command line; the atomic chunks of the three stages are shared
 * among the ranks (vox/dist_mpi.h) and rank 0 runs the rest and writes the output, which
 * equals the single-process run's bitwise.
 */
#include "cli.h"
#include "vox/dist_mpi.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "segment") != 0) {
        fprintf(stderr, "usage: mpirun -np N vox-mpi segment --chunk Z,Y,X [vox segment "
                        "options] (see 'vox segment --help')\n"
                        "Every rank runs its chunks on --threads threads (give every rank "
                        "the same); rank 0 also runs the levels above the chunks and writes "
                        "the output.\n");
        return 2;
    }
    if (MPI_Init(&argc, &argv) != MPI_SUCCESS) {
        fprintf(stderr, "vox-mpi: error: MPI_Init failed\n");
        return 1;
    }
    struct vox_ctx *ctx = NULL;
    struct vox_dist_mpi m = {.comm = MPI_COMM_WORLD};
    struct vox_dist_comm comm;
    int rc = 1;
    if (vox_ctx_create(NULL, &ctx) != VOX_OK)
        fprintf(stderr, "vox-mpi: error: cannot create a context\n");
    else if (vox_dist_mpi_comm(ctx, &m, &comm) != VOX_OK)
        fprintf(stderr, "vox-mpi: error: %s\n", vox_ctx_error(ctx));
    else
        rc = vox_cmd_segment_comm(argc - 1, argv + 1, &comm);
    if (rc == 0 && !vox_dist_mpi_finish(&m)) { /* (after a failure: MPI_Abort) */
        fprintf(stderr, "vox-mpi: error: a message to another rank failed\n");
        rc = 1;
    }
    vox_ctx_destroy(ctx);
    if (rc != 0)
        MPI_Abort(MPI_COMM_WORLD, rc);
    MPI_Finalize();
    return rc;
}
