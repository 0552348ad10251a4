/*
 * vox/dist_mpi.h: vox_dist_segment over MPI ranks (libvox_dist_mpi, built with the CMake
 * option VOX_MPI; libvox itself needs no MPI).
 *
 * The comm shares the atomic chunks of all three stages among the ranks of an MPI
 * communicator (see struct vox_dist_comm: which rank owns which chunk); each other rank sends
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
 * must outlive the run. Sends do not wait for their receiver (a copy goes out with
 * MPI_Isend), so a rank computes its next chunk while rank 0 is busy; vox_dist_mpi_finish
 * waits for the last ones (before MPI_Finalize). A rank other than 0 has at most
 * VOX_DIST_MPI_INFLIGHT sends to rank 0 in flight and waits for the oldest beyond that (in
 * stage (a) it computes its chunks without waiting for rank 0, so that bounds the copies);
 * rank 0's sends never wait: it hands a rank only a few chunks ahead of the summaries it
 * took, and were it to wait for a rank that waits to send it a summary, neither would go on
 * (2 ranks on a 1024^3 volume did, once a rank also sent its subtrees' parents). */
#define VOX_DIST_MPI_INFLIGHT 4
struct vox_dist_mpi_send;
struct vox_dist_mpi {
    MPI_Comm comm;
    struct vox_dist_mpi_send *inflight; /* the comm's own: sends not known to be complete */
    int ninflight, capinflight;
};
enum vox_status vox_dist_mpi_comm(struct vox_ctx *ctx, struct vox_dist_mpi *m,
                                  struct vox_dist_comm *comm_out);
/* Waits for the sends still in flight and frees them; false if one failed. */
bool vox_dist_mpi_finish(struct vox_dist_mpi *m);

#ifdef __cplusplus
}
#endif
#endif
