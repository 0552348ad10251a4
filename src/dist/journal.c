/*
 * dist/journal.c: the restart records of a chunked run kept in its work directory.
 *
 * Files (in the work directory): vox-dist-journal, an append-only array of fixed-size
 * records; vox-dist-blobs, the records' payloads (chunk summaries, stage results), appended.
 * A record names a task (kind, chunk index), the hash of the data it vouches for (a chunk's
 * block in the affinity or label file, written before the record) and the hash of its blob,
 * and carries a hash of itself. A task is done when its latest record is whole, its blob
 * hashes right and the block it vouches for still hashes to the recorded value: a record
 * torn by a kill, a truncated file or flipped bytes anywhere fail one of the three checks,
 * and the task is run again. Data are written before their record, so a kill between the two
 * only loses the task. The first record binds the run's settings (shape, chunks, parameters):
 * a resumed run with other settings is refused.
 *
 * The hash is a 64-bit multiply-rotate over 8-byte words (not cryptographic: it detects
 * damage, not malice).
 */
#include "dist_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define JR_MAGIC 0x4A584F56u /* "VOXJ" */

uint64_t dist_hash(const void *p, size_t n, uint64_t h)
{
    const uint8_t *b = p;
    h ^= 0x9E3779B97F4A7C15ull * (n + 1);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, b + i, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDull;
        h ^= h >> 29;
    }
    for (; i < n; i++)
        h = (h ^ b[i]) * 0x100000001B3ull;
    h ^= h >> 33;
    return h * 0xC4CEB9FE1A85EC53ull;
}

static uint64_t jr_self(const struct dist_jrec *r)
{
    return dist_hash(r, offsetof(struct dist_jrec, self), 7);
}

static enum vox_status jr_open(struct vox_ctx *ctx, const char *dir, const char *name, bool keep,
                               int *fd_out)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDWR | O_CREAT | (keep ? 0 : O_TRUNC), 0600);
    if (fd < 0)
        return vox_fail(ctx, VOX_IO, "chunked segmentation: cannot open %s: %s", path,
                        strerror(errno));
    *fd_out = fd;
    return VOX_OK;
}

/* The whole records of the journal (torn or damaged ones dropped). */
static enum vox_status jr_load(struct vox_ctx *ctx, struct dist_journal *j)
{
    struct stat st;
    if (fstat(j->fd, &st) != 0 || fstat(j->bfd, &st) != 0)
        return vox_fail(ctx, VOX_IO, "chunked segmentation: cannot stat the journal");
    j->bend = (int64_t)st.st_size;
    fstat(j->fd, &st);
    int64_t n = (int64_t)st.st_size / (int64_t)sizeof(struct dist_jrec);
    j->jend = n * (int64_t)sizeof(struct dist_jrec);
    j->rec = vox_alloc(ctx, (size_t)(n + 1) * sizeof *j->rec);
    if (!j->rec)
        return VOX_OUT_OF_MEMORY;
    if (n > 0 && pread(j->fd, j->rec, (size_t)j->jend, 0) != (ssize_t)j->jend)
        return vox_fail(ctx, VOX_IO, "chunked segmentation: cannot read the journal");
    for (int64_t i = 0; i < n; i++)
        if (j->rec[i].magic == JR_MAGIC && j->rec[i].self == jr_self(&j->rec[i]))
            j->rec[j->nrec++] = j->rec[i];
    return VOX_OK;
}

enum vox_status dist_journal_open(struct vox_ctx *ctx, const char *dir, bool resume,
                                  uint64_t config, struct dist_journal *j)
{
    memset(j, 0, sizeof *j);
    j->fd = j->bfd = -1;
    pthread_mutex_init(&j->mu, NULL);
    enum vox_status s = jr_open(ctx, dir, "vox-dist-journal", resume, &j->fd);
    s = s ? s : jr_open(ctx, dir, "vox-dist-blobs", resume, &j->bfd);
    s = s ? s : jr_load(ctx, j);
    if (s != VOX_OK)
        return s;
    const struct dist_jrec *c = dist_journal_find(j, DJ_CONFIG, 0);
    if (c && c->sum != config)
        return vox_fail(ctx, VOX_INVALID_ARG,
                        "chunked segmentation: --resume: %s holds a run "
                        "with other settings (shape, chunks or parameters)",
                        dir);
    if (c)
        return VOX_OK;
    j->nrec = 0; /* nothing of another run is used */
    return dist_journal_add(ctx, j, DJ_CONFIG, 0, config, NULL, 0);
}

void dist_journal_close(struct vox_ctx *ctx, struct dist_journal *j)
{
    if (j->fd >= 0)
        close(j->fd);
    if (j->bfd >= 0)
        close(j->bfd);
    vox_free(ctx, j->rec);
    pthread_mutex_destroy(&j->mu);
    memset(j, 0, sizeof *j);
    j->fd = j->bfd = -1;
}

const struct dist_jrec *dist_journal_find(const struct dist_journal *j, int kind, int64_t index)
{
    for (int64_t i = j->nrec - 1; i >= 0; i--)
        if (j->rec[i].kind == (uint32_t)kind && j->rec[i].index == index)
            return &j->rec[i];
    return NULL;
}

enum vox_status dist_journal_add(struct vox_ctx *ctx, struct dist_journal *j, int kind,
                                 int64_t index, uint64_t sum, const void *blob, int64_t len)
{
    struct dist_jrec r = {.magic = JR_MAGIC,
                          .kind = (uint32_t)kind,
                          .index = index,
                          .sum = sum,
                          .len = len,
                          .blob_sum = dist_hash(blob, (size_t)len, 0)};
    enum vox_status s = VOX_OK;
    pthread_mutex_lock(&j->mu);
    r.off = j->bend;
    r.self = jr_self(&r);
    if (len > 0 && pwrite(j->bfd, blob, (size_t)len, (off_t)r.off) != (ssize_t)len)
        s = vox_fail(ctx, VOX_IO, "chunked segmentation: cannot write the blobs file: %s",
                     strerror(errno));
    if (s == VOX_OK && pwrite(j->fd, &r, sizeof r, (off_t)j->jend) != (ssize_t)sizeof r)
        s = vox_fail(ctx, VOX_IO, "chunked segmentation: cannot write the journal: %s",
                     strerror(errno));
    if (s == VOX_OK) {
        j->bend += len;
        j->jend += (int64_t)sizeof r;
        if (kind != DJ_CONFIG && j->die_after > 0 && ++j->added >= j->die_after)
            _exit(3); /* the test hook: a kill right after this record */
    }
    pthread_mutex_unlock(&j->mu);
    return s;
}

enum vox_status dist_journal_blob(struct vox_ctx *ctx, const struct dist_journal *j,
                                  const struct dist_jrec *r, void **blob_out)
{
    *blob_out = NULL;
    uint8_t *b = vox_alloc(ctx, (size_t)r->len + 1);
    if (!b)
        return VOX_OUT_OF_MEMORY;
    if (pread(j->bfd, b, (size_t)r->len, (off_t)r->off) != (ssize_t)r->len ||
        dist_hash(b, (size_t)r->len, 0) != r->blob_sum) {
        vox_free(ctx, b);
        return VOX_OK; /* damaged: the task runs again */
    }
    *blob_out = b;
    return VOX_OK;
}

void dist_journal_count(struct dist_journal *j, bool reused)
{
    pthread_mutex_lock(&j->mu);
    *(reused ? &j->reused : &j->ran) += 1;
    pthread_mutex_unlock(&j->mu);
}

void dist_journal_remove(const char *dir)
{
    static const char *const names[] = {"vox-dist-journal", "vox-dist-blobs", "vox-dist-affinities",
                                        "vox-dist-labels"};
    char path[4200];
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
}
