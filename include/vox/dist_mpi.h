/*
 * vox/dist_mpi.h: vox_dist_segment over MPI ranks (libvox_dist_mpi, built with the CMake
 * option VOX_MPI; libvox itself needs no MPI).
 *
 * The comm shares the atomic chunks of all three stages among the ranks of an MPI
 * communicator (see struct vox_dist_comm): chunk i to rank i mod size; each other rank sends
 * rank 0 two messages per chunk (a header: chunk index and length, tag VOX_DIST_MPI_TAG; then
 * its serialized summary, with the fragment labels in stage (a), tag VOX_DIST_MPI_TAG + 1),
 * which rank 0 takes from any rank in any order; rank 0 sends a rank the same pair (tags
 * VOX_DIST_MPI_TAG + 2 and + 3) with the setup of stages (b) and (c) and each chunk's labels.
 */
#ifndef VOX_DIST_MPI_H
#define VOX_DIST_MPI_H

#include "vox/dist.h"

#include <mpi.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VOX_DIST_MPI_TAG 7301

/* A comm over the MPI communicator m->comm (MPI initialized); *comm_out points at m, which
 * must outlive the run. */
struct vox_dist_mpi {
    MPI_Comm comm;
};
enum vox_status vox_dist_mpi_comm(struct vox_ctx *ctx, struct vox_dist_mpi *m,
                                  struct vox_dist_comm *comm_out);

#ifdef __cplusplus
}
#endif
#endif
