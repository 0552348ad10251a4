/*
 * dist/mpi/comm.c: struct vox_dist_comm over MPI point-to-point messages.
 *
 * A chunk moves as two messages from its rank to rank 0: a header (chunk index, blob length:
 * two int64, tag VOX_DIST_MPI_TAG) and the blob (MPI_BYTE, tag VOX_DIST_MPI_TAG + 1). Rank 0
 * takes a header from MPI_ANY_SOURCE and then the blob from that header's source; MPI keeps
 * the messages of one sender with one tag in order, so the blob is the header's. The chunk
 * index, not the arrival order, says where a blob goes (dist/dist.c), so the result is the
 * same for any number of ranks and any timing. Rank 0's messages to a rank (send_to) are the
 * same pair with tags VOX_DIST_MPI_TAG + 2 and + 3.
 */
#include "vox/dist_mpi.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* A send in flight: its requests and one block holding the header (two int64) and a copy of
 * the blob, which MPI reads until both requests complete (the record may move; the block
 * does not). */
struct vox_dist_mpi_send {
    MPI_Request req[2];
    int64_t *copy;
    int to;
};

/* Completes send k (waiting for it) and drops it from the list. */
static bool send_complete(struct vox_dist_mpi *m, int k)
{
    struct vox_dist_mpi_send *x = &m->inflight[k];
    bool ok = MPI_Waitall(2, x->req, MPI_STATUSES_IGNORE) == MPI_SUCCESS;
    free(x->copy);
    m->inflight[k] = m->inflight[--m->ninflight];
    return ok;
}

/* Drops the sends that have completed, then waits for sends to `to` while it has
 * VOX_DIST_MPI_INFLIGHT of them; rank 0's own sends never wait (see vox_dist_mpi_comm). */
static bool sends_reap(struct vox_dist_mpi *m, int to)
{
    const int limit = to == 0 ? VOX_DIST_MPI_INFLIGHT : INT_MAX;
    bool ok = true;
    int n = 0;
    for (int k = 0; k < m->ninflight;) {
        int done = 0;
        if (MPI_Testall(2, m->inflight[k].req, &done, MPI_STATUSES_IGNORE) != MPI_SUCCESS)
            return false;
        if (done) {
            ok &= send_complete(m, k);
        } else {
            n += m->inflight[k].to == to;
            k++;
        }
    }
    for (int k = 0; ok && n >= limit && k < m->ninflight;) {
        if (m->inflight[k].to != to) {
            k++;
            continue;
        }
        ok &= send_complete(m, k);
        n--;
    }
    return ok;
}

bool vox_dist_mpi_finish(struct vox_dist_mpi *m)
{
    bool ok = true;
    while (m->ninflight > 0)
        ok &= send_complete(m, 0);
    free(m->inflight);
    m->inflight = NULL;
    m->capinflight = 0;
    return ok;
}

/* A header and a blob to rank `to`, tags tag and tag + 1, sent without waiting for the
 * receiver (MPI keeps the order of one sender's messages with one tag). */
static enum vox_status mpi_put(struct vox_ctx *ctx, struct vox_dist_mpi *m, int to, int tag,
                               int64_t key, const void *blob, int64_t len)
{
    if (len < 0 || len > INT_MAX)
        return vox_fail(ctx, VOX_UNSUPPORTED,
                        "MPI: the message for chunk %lld is %lld bytes, "
                        "at most %d",
                        (long long)key, (long long)len, INT_MAX);
    if (!sends_reap(m, to))
        return vox_fail(ctx, VOX_IO, "MPI: an earlier send failed");
    if (m->ninflight == m->capinflight) {
        int cap = 2 * m->capinflight + VOX_DIST_MPI_INFLIGHT;
        void *grown = realloc(m->inflight, (size_t)cap * sizeof *m->inflight);
        if (!grown)
            return VOX_OUT_OF_MEMORY;
        m->inflight = grown;
        m->capinflight = cap;
    }
    struct vox_dist_mpi_send *x = &m->inflight[m->ninflight];
    *x = (struct vox_dist_mpi_send){.copy = malloc(2 * sizeof(int64_t) + (size_t)len), .to = to};
    if (!x->copy)
        return VOX_OUT_OF_MEMORY;
    x->copy[0] = key;
    x->copy[1] = len;
    memcpy(x->copy + 2, blob, (size_t)len);
    int rc = MPI_Isend(x->copy, 2, MPI_INT64_T, to, tag, m->comm, &x->req[0]);
    if (rc == MPI_SUCCESS)
        rc = MPI_Isend(x->copy + 2, (int)len, MPI_BYTE, to, tag + 1, m->comm, &x->req[1]);
    if (rc != MPI_SUCCESS) {
        free(x->copy);
        return vox_fail(ctx, VOX_IO, "MPI: sending chunk %lld to rank %d failed (error %d)",
                        (long long)key, to, rc);
    }
    m->ninflight++;
    return VOX_OK;
}

static enum vox_status mpi_send(void *arg, struct vox_ctx *ctx, int64_t chunk, const void *blob,
                                int64_t len)
{
    return mpi_put(ctx, arg, 0, VOX_DIST_MPI_TAG, chunk, blob, len);
}

static enum vox_status mpi_send_to(void *arg, struct vox_ctx *ctx, int to, int64_t key,
                                   const void *blob, int64_t len)
{
    return mpi_put(ctx, arg, to, VOX_DIST_MPI_TAG + 2, key, blob, len);
}

/* A header from `from` (MPI_ANY_SOURCE: any rank) with tag, then its blob (tag + 1). */
static enum vox_status mpi_get(struct vox_ctx *ctx, MPI_Comm comm, int from, int tag,
                               int64_t *chunk_out, void **blob_out, int64_t *len_out)
{
    int64_t hd[2];
    MPI_Status ms;
    int rc = MPI_Recv(hd, 2, MPI_INT64_T, from, tag, comm, &ms);
    if (rc != MPI_SUCCESS)
        return vox_fail(ctx, VOX_IO, "MPI: receiving a chunk header failed (error %d)", rc);
    if (hd[1] < 0 || hd[1] > INT_MAX)
        return vox_fail(ctx, VOX_IO, "MPI: rank %d announced a blob of %lld bytes",
                        ms.MPI_SOURCE, (long long)hd[1]);
    void *b = vox_alloc(ctx, (size_t)hd[1] + 1);
    if (!b)
        return VOX_OUT_OF_MEMORY;
    rc = MPI_Recv(b, (int)hd[1], MPI_BYTE, ms.MPI_SOURCE, tag + 1, comm, MPI_STATUS_IGNORE);
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

static enum vox_status mpi_recv(void *arg, struct vox_ctx *ctx, int64_t *chunk_out, void **blob_out,
                                int64_t *len_out)
{
    struct vox_dist_mpi *m = arg;
    return mpi_get(ctx, m->comm, MPI_ANY_SOURCE, VOX_DIST_MPI_TAG, chunk_out, blob_out, len_out);
}

static bool mpi_ready(void *arg, struct vox_ctx *ctx)
{
    struct vox_dist_mpi *m = arg;
    int flag = 0;
    (void)ctx;
    return MPI_Iprobe(MPI_ANY_SOURCE, VOX_DIST_MPI_TAG, m->comm, &flag, MPI_STATUS_IGNORE) ==
               MPI_SUCCESS &&
           flag;
}

static enum vox_status mpi_recv_root(void *arg, struct vox_ctx *ctx, int64_t *key_out,
                                     void **blob_out, int64_t *len_out)
{
    struct vox_dist_mpi *m = arg;
    return mpi_get(ctx, m->comm, 0, VOX_DIST_MPI_TAG + 2, key_out, blob_out, len_out);
}

enum vox_status vox_dist_mpi_comm(struct vox_ctx *ctx, struct vox_dist_mpi *m,
                                  struct vox_dist_comm *comm_out)
{
    int rank = 0, size = 0;
    if (MPI_Comm_rank(m->comm, &rank) != MPI_SUCCESS ||
        MPI_Comm_size(m->comm, &size) != MPI_SUCCESS)
        return vox_fail(ctx, VOX_IO, "MPI: the communicator's rank and size are unknown");
    *comm_out = (struct vox_dist_comm){.rank = rank,
                                       .size = size,
                                       .send = mpi_send,
                                       .recv = mpi_recv,
                                       .send_to = mpi_send_to,
                                       .recv_root = mpi_recv_root,
                                       .arg = m,
                                       .ready = mpi_ready};
    return VOX_OK;
}
