/*
 * dist/mpi/comm.c: struct vox_dist_comm over MPI point-to-point messages.
 *
 * A chunk moves as two messages from its rank to rank 0: a header (chunk index, blob length:
 * two int64, tag VOX_DIST_MPI_TAG) and the blob (MPI_BYTE, tag VOX_DIST_MPI_TAG + 1). Rank 0
 * takes a header from MPI_ANY_SOURCE and then the blob from that header's source; MPI keeps
 * the messages of one sender with one tag in order, so the blob is the header's. The chunk
 * index, not the arrival order, says where a blob goes (dist/dist.c), so the result is the
 * same for any number of ranks and any timing.
 */
#include "vox/dist_mpi.h"

#include <limits.h>

static enum vox_status mpi_send(void *arg, struct vox_ctx *ctx, int64_t chunk, const void *blob,
                                int64_t len)
{
    struct vox_dist_mpi *m = arg;
    if (len < 0 || len > INT_MAX)
        return vox_fail(ctx, VOX_UNSUPPORTED, "MPI: the summary of chunk %lld is %lld bytes, "
                        "at most %d", (long long)chunk, (long long)len, INT_MAX);
    int64_t hd[2] = {chunk, len};
    int rc = MPI_Send(hd, 2, MPI_INT64_T, 0, VOX_DIST_MPI_TAG, m->comm);
    if (rc == MPI_SUCCESS)
        rc = MPI_Send(blob, (int)len, MPI_BYTE, 0, VOX_DIST_MPI_TAG + 1, m->comm);
    if (rc != MPI_SUCCESS)
        return vox_fail(ctx, VOX_IO, "MPI: sending chunk %lld to rank 0 failed (error %d)",
                        (long long)chunk, rc);
    return VOX_OK;
}

static enum vox_status mpi_recv(void *arg, struct vox_ctx *ctx, int64_t *chunk_out,
                                void **blob_out, int64_t *len_out)
{
    struct vox_dist_mpi *m = arg;
    int64_t hd[2];
    MPI_Status ms;
    int rc = MPI_Recv(hd, 2, MPI_INT64_T, MPI_ANY_SOURCE, VOX_DIST_MPI_TAG, m->comm, &ms);
    if (rc != MPI_SUCCESS)
        return vox_fail(ctx, VOX_IO, "MPI: receiving a chunk header failed (error %d)", rc);
    if (hd[1] < 0 || hd[1] > INT_MAX)
        return vox_fail(ctx, VOX_IO, "MPI: rank %d announced a blob of %lld bytes",
                        ms.MPI_SOURCE, (long long)hd[1]);
    void *b = vox_alloc(ctx, (size_t)hd[1] + 1);
    if (!b)
        return VOX_OUT_OF_MEMORY;
    rc = MPI_Recv(b, (int)hd[1], MPI_BYTE, ms.MPI_SOURCE, VOX_DIST_MPI_TAG + 1, m->comm,
                  MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) {
        vox_free(ctx, b);
        return vox_fail(ctx, VOX_IO, "MPI: receiving chunk %lld from rank %d failed (error %d)",
                        (long long)hd[0], ms.MPI_SOURCE, rc);
    }
    *chunk_out = hd[0];
    *len_out = hd[1];
    *blob_out = b;
    return VOX_OK;
}

enum vox_status vox_dist_mpi_comm(struct vox_ctx *ctx, struct vox_dist_mpi *m,
                                  struct vox_dist_comm *comm_out)
{
    int rank = 0, size = 0;
    if (MPI_Comm_rank(m->comm, &rank) != MPI_SUCCESS ||
        MPI_Comm_size(m->comm, &size) != MPI_SUCCESS)
        return vox_fail(ctx, VOX_IO, "MPI: the communicator's rank and size are unknown");
    *comm_out = (struct vox_dist_comm){.rank = rank, .size = size, .send = mpi_send,
                                       .recv = mpi_recv, .arg = m};
    return VOX_OK;
}
