/*
 * dist/pairs.c: the records stage (a) leaves for stages (b) and (c) (struct dist_pairs).
 *
 * Stages (b) and (c) each read an atomic chunk's affinities and its labels again and scan
 * every face of its box for labels that differ (on the 512^3 bench about 1.2 s and 0.85 s of
 * a 6.5 s one-thread run). Inside the box those faces depend only on the fragment labels and
 * the affinities, which stage (a) has at hand when it labels the chunk. So (a) lists them
 * once, as fragment pairs with face counts, affinity sums and maxima (struct dist_pf), and
 * keeps the box's six faces of fragment labels and the affinities of the faces that cross
 * the box's faces. (b) maps the pairs to basins and (c) to segments; both walk only the
 * box's shell (its own faces and its neighbours' faces next to them, from the neighbours'
 * records) for the crossing faces and the touch bits. Every face is counted once either way
 * (inside: the record; crossing: the shell), and what the stages build from faces is sorted
 * and summed exactly, so the result is the scan's, bit for bit (tests/test_dist.c compares
 * the two).
 *
 * A record: the entries (packed in 12 bytes each, pf_pack; ~11 M on the bench's 512^3
 * volume, about 1 byte a voxel of temporary file), the six faces (u32), the crossing planes
 * (bytes). The workers append them to a file each (one file would take their writes one at a
 * time, on its inode lock), at offsets they take atomically. A file's
 * pages written for the first time cost more than their copy on the VMs here (~0.4-0.5 GB/s),
 * so the entries go packed: fragment ids below 2^24 (a chunk with more fragments keeps no
 * record), sums below 2^24 (counts stop at 65535 faces of at most 255).
 */
#include "dist_internal.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

int64_t dist_planes_size(const struct dist_box *b, const int64_t dims[3], int a, int side)
{
    bool there = side == 0 ? b->lo[a] > 0 : b->hi[a] < dims[a];
    int64_t n = 1;
    for (int k = 0; k < 3; k++)
        n *= k == a ? 1 : b->hi[k] - b->lo[k];
    return there ? n : 0;
}

enum { PF_DISK = 12, PF_MAX_FRAG = 1 << 24 }; /* an entry's bytes in the file */

/* Packs rec's n entries in place (each's 16 bytes read before its 12 are written, and 12 i
 * <= 16 i): fragments a and b (24 bits each) and count (16) in a u64, sum (24) and max (8)
 * in a u32. */
static void pf_pack(struct dist_pf *pf, int64_t n)
{
    uint8_t *d = (uint8_t *)pf;
    for (int64_t i = 0; i < n; i++) {
        const struct dist_pf e = pf[i];
        const uint64_t k = (e.key >> 32) << 40 | (e.key & 0xffffff) << 16 | e.cnt;
        const uint32_t v = e.sum << 8 | e.w;
        memcpy(d + i * PF_DISK, &k, sizeof k);
        memcpy(d + i * PF_DISK + sizeof k, &v, sizeof v);
    }
}

/* The n packed entries at buf + 4 n back into struct dist_pf at buf, in place (entry i's 12
 * bytes are read before its 16 are written, which end at or before entry i + 1's start). */
static void pf_unpack(uint8_t *buf, int64_t n)
{
    const uint8_t *src = buf + n * (int64_t)(sizeof(struct dist_pf) - PF_DISK);
    struct dist_pf *dst = (struct dist_pf *)(void *)buf;
    for (int64_t i = 0; i < n; i++) {
        uint64_t k;
        uint32_t v;
        memcpy(&k, src + i * PF_DISK, sizeof k);
        memcpy(&v, src + i * PF_DISK + sizeof k, sizeof v);
        dst[i] = (struct dist_pf){.key = (k >> 40) << 32 | (k >> 16 & 0xffffff),
                                  .sum = v >> 8,
                                  .cnt = (uint16_t)k,
                                  .w = (uint8_t)v};
    }
}

static int64_t planes_size(const struct dist_box *b, const int64_t dims[3])
{
    int64_t n = 0;
    for (int a = 0; a < 3; a++)
        for (int side = 0; side < 2; side++)
            n += dist_planes_size(b, dims, a, side);
    return n;
}

static void pairs_box(const struct dist_pairs *pp, const int64_t g[3], struct dist_box *b)
{
    for (int a = 0; a < 3; a++) {
        b->lo[a] = g[a] * pp->chunk[a];
        b->hi[a] = b->lo[a] + pp->chunk[a] < pp->dims[a] ? b->lo[a] + pp->chunk[a] : pp->dims[a];
    }
}

enum vox_status dist_pairs_init(struct vox_ctx *ctx, struct dist_pairs *pp, const int *fd, int nfd,
                                const int64_t dims[3], const int64_t chunk[3], double per_voxel)
{
    *pp = (struct dist_pairs){.nfd = nfd, .per_voxel = per_voxel, .n = 1};
    memcpy(pp->fd, fd, (size_t)nfd * sizeof *fd);
    for (int a = 0; a < 3; a++) {
        pp->dims[a] = dims[a];
        pp->chunk[a] = chunk[a] < dims[a] ? chunk[a] : dims[a];
        pp->grid[a] = (dims[a] + pp->chunk[a] - 1) / pp->chunk[a];
        pp->n *= pp->grid[a];
    }
    pp->off = vox_alloc(ctx, (size_t)pp->n * sizeof *pp->off);
    pp->npf = vox_alloc(ctx, (size_t)pp->n * sizeof *pp->npf);
    pp->nfrag = vox_alloc(ctx, (size_t)pp->n * sizeof *pp->nfrag);
    pp->file = vox_alloc(ctx, (size_t)pp->n);
    if (!pp->off || !pp->npf || !pp->nfrag || !pp->file) {
        dist_pairs_fini(ctx, pp);
        return VOX_OUT_OF_MEMORY;
    }
    for (int64_t i = 0; i < pp->n; i++)
        pp->off[i] = -1;
    return VOX_OK;
}

void dist_pairs_fini(struct vox_ctx *ctx, struct dist_pairs *pp)
{
    for (int f = 0; f < pp->nfd; f++)
        close(pp->fd[f]);
    for (int64_t i = 0; pp->fmap_own && pp->fmap && i < pp->n; i++)
        vox_free(ctx, pp->fmap[i]);
    if (pp->fmap_own)
        vox_free(ctx, pp->fmap);
    vox_free(ctx, pp->off);
    vox_free(ctx, pp->npf);
    vox_free(ctx, pp->nfrag);
    vox_free(ctx, pp->file);
    *pp = (struct dist_pairs){.nfd = 0};
}

static enum vox_status pairs_read(struct vox_ctx *ctx, int fd, void *p, int64_t n, int64_t at)
{
    uint8_t *b = p;
    for (int64_t done = 0; done < n;) {
        ssize_t got = pread(fd, b + done, (size_t)(n - done), (off_t)(at + done));
        if (got <= 0)
            return vox_fail(ctx, VOX_IO,
                            "chunked segmentation: cannot read %lld bytes of the face records "
                            "(a temporary file) at %lld: %s",
                            (long long)(n - done), (long long)(at + done),
                            got < 0 ? strerror(errno) : "the file is shorter");
        done += got;
    }
    return VOX_OK;
}

static bool pairs_write(int fd, const void *p, int64_t n, int64_t at)
{
    const uint8_t *b = p;
    for (int64_t done = 0; done < n;) {
        ssize_t got = pwrite(fd, b + done, (size_t)(n - done), (off_t)(at + done));
        if (got <= 0)
            return false;
        done += got;
    }
    return true;
}

static void pairs_count(struct dist_io *io, bool wr, int64_t n)
{
    if (!io)
        return;
    pthread_mutex_lock(&io->mu);
    *(wr ? &io->bytes_written : &io->bytes_read) += n;
    pthread_mutex_unlock(&io->mu);
}

enum vox_status dist_pairs_put(struct vox_ctx *ctx, struct dist_pairs *pp, int64_t i, int64_t nfrag,
                               const struct dist_chunk_rec *rec, struct dist_io *io, int tid)
{
    const int64_t pb = rec->npf * PF_DISK, fb = dist_faces_len(pp->dims, pp->chunk, i) * 4,
                  n = pb + fb + rec->nplanes;
    if (__atomic_load_n(&pp->off_disk, __ATOMIC_RELAXED) || nfrag >= PF_MAX_FRAG)
        return VOX_OK;          /* no record: the chunk is scanned */
    pf_pack(rec->pf, rec->npf); /* (rec's entries are spent) */
    const int f = tid % pp->nfd, fd = pp->fd[f];
    const int64_t at = __atomic_fetch_add(&pp->end[f], n, __ATOMIC_RELAXED);
    bool ok = !pb || pairs_write(fd, rec->pf, pb, at);
    ok = ok && pairs_write(fd, rec->faces, fb, at + pb);
    ok = ok && (!rec->nplanes || pairs_write(fd, rec->planes, rec->nplanes, at + pb + fb));
    if (!ok) { /* a full disk: the records are a shortcut, so the chunks are scanned instead */
        if (!__atomic_exchange_n(&pp->off_disk, true, __ATOMIC_RELAXED))
            vox_log(ctx, VOX_LOG_WARN,
                    "chunked segmentation: cannot write the face records (a temporary file, "
                    "%lld bytes so far): %s; the chunks from here on are scanned instead",
                    (long long)at, strerror(errno));
        return VOX_OK;
    }
    pairs_count(io, true, n);
    pp->npf[i] = rec->npf;
    pp->nfrag[i] = nfrag;
    pp->file[i] = (uint8_t)f;
    pp->off[i] = at;
    return VOX_OK;
}

/* Where face f (dist_faces_extract's order: z lo, z hi, y lo, y hi, x lo, x hi) of box b
 * starts among its faces, and its length. */
static int64_t face_at(const struct dist_box *b, int f, int64_t *len)
{
    const int64_t nz = b->hi[0] - b->lo[0], ny = b->hi[1] - b->lo[1], nx = b->hi[2] - b->lo[2];
    const int64_t n[3] = {ny * nx, nz * nx, nz * ny};
    int64_t at = 0;
    for (int k = 0; k < f; k++)
        at += n[k / 2];
    *len = n[f / 2];
    return at;
}

/* Values v[0 .. n) through the maps into dst with a stride. */
static void shell_put(uint32_t *dst, int64_t step, const uint32_t *v, int64_t n, const uint32_t *fm,
                      const uint32_t *map)
{
    for (int64_t k = 0; k < n; k++)
        dst[k * step] = map ? map[fm[v[k]]] : fm[v[k]];
}

/* Face f of box b (values f_v, fragment map fm) into window w at the plane where the face's
 * voxels lie (`out`: one voxel beyond it, on the other side: a neighbour's face). */
static void shell_face(struct dist_win *w, const struct dist_box *b, int f, const uint32_t *fv,
                       const uint32_t *fm, const uint32_t *map, int64_t at_plane)
{
    const int a = f / 2;
    const int64_t nz = b->hi[0] - b->lo[0], ny = b->hi[1] - b->lo[1], nx = b->hi[2] - b->lo[2];
    const int64_t P = w->n[1] * w->n[2], X = w->n[2];
    const int64_t oz = b->lo[0] - w->lo[0], oy = b->lo[1] - w->lo[1], ox = b->lo[2] - w->lo[2];
    uint32_t *p = (uint32_t *)w->p;
    if (a == 0) {
        for (int64_t y = 0; y < ny; y++)
            shell_put(p + (at_plane - w->lo[0]) * P + (oy + y) * X + ox, 1, fv + y * nx, nx, fm,
                      map);
    } else if (a == 1) {
        for (int64_t z = 0; z < nz; z++)
            shell_put(p + (oz + z) * P + (at_plane - w->lo[1]) * X + ox, 1, fv + z * nx, nx, fm,
                      map);
    } else {
        for (int64_t z = 0; z < nz; z++)
            shell_put(p + (oz + z) * P + (oy)*X + at_plane - w->lo[2], X, fv + z * ny, ny, fm, map);
    }
}

/* rec from a record read into buf (entries first) and its planes. */
static void rec_set(const struct dist_pairs *pp, int64_t i, const struct dist_box *b,
                    const uint8_t *buf, const uint8_t *planes, struct dist_chunk_pf *rec)
{
    rec->pf = (const struct dist_pf *)(const void *)buf;
    rec->npf = pp->npf[i];
    for (int a = 0; a < 3; a++)
        for (int side = 0; side < 2; side++) {
            int64_t k = dist_planes_size(b, pp->dims, a, side);
            rec->plane[a][side] = k ? planes : NULL;
            planes += k;
        }
}

/* Chunk i's record (into sc's slot W5) and the labels of its box's shell through the
 * fragment map and map (NULL: basins) into w (sc's slot WIN): those on the box's faces and
 * those one voxel beyond them (not the window's edges and corners; nothing inside). *found
 * false: no record here or at a neighbour. */
static enum vox_status pairs_get(struct vox_ctx *ctx, const struct dist_pairs *pp, int64_t i,
                                 const uint32_t *map, struct dist_scratch *sc, struct dist_io *io,
                                 bool *found, struct dist_chunk_pf *rec, struct dist_win *w)
{
    *found = false;
    if (!pp || pp->off[i] < 0 || !pp->fmap || !pp->fmap[i])
        return VOX_OK;
    const int64_t g[3] = {i / (pp->grid[1] * pp->grid[2]), (i / pp->grid[2]) % pp->grid[1],
                          i % pp->grid[2]};
    struct dist_box b;
    pairs_box(pp, g, &b);
    /* the neighbours' faces next to the box first: without a record the chunk is scanned */
    int64_t nb[6];
    for (int f = 0; f < 6; f++) {
        const int a = f / 2, side = f % 2;
        int64_t h[3] = {g[0], g[1], g[2]};
        h[a] += side ? 1 : -1;
        nb[f] =
            h[a] < 0 || h[a] >= pp->grid[a] ? -1 : (h[0] * pp->grid[1] + h[1]) * pp->grid[2] + h[2];
        if (nb[f] >= 0 && (pp->off[nb[f]] < 0 || !pp->fmap[nb[f]]))
            return VOX_OK;
    }
    /* pb: the entries' bytes unpacked; the file holds pd (they are read to the end of pb's
     * room and unpacked forward) */
    const int64_t pb = pp->npf[i] * (int64_t)sizeof *rec->pf, pd = pp->npf[i] * PF_DISK,
                  fn = dist_faces_len(pp->dims, pp->chunk, i), np = planes_size(&b, pp->dims);
    int64_t nmax = 0; /* a neighbour's face, read before it goes into the window */
    for (int f = 0; f < 6; f++) {
        int64_t len;
        face_at(&b, f, &len);
        nmax = len > nmax ? len : nmax;
    }
    uint8_t *buf = dist_scratch_get(ctx, sc, DIST_SC_W5, (size_t)(pb + (fn + nmax) * 4 + np + 1));
    if (!buf)
        return VOX_OUT_OF_MEMORY;
    enum vox_status s =
        pairs_read(ctx, pp->fd[pp->file[i]], buf + pb - pd, pd + fn * 4 + np, pp->off[i]);
    int64_t nread = pd + fn * 4 + np;
    if (s == VOX_OK)
        pf_unpack(buf, pp->npf[i]);
    const uint32_t *faces = (const uint32_t *)(void *)(buf + pb);
    uint32_t *tmp = (uint32_t *)(void *)(buf + pb + fn * 4);
    const uint8_t *planes = buf + pb + (fn + nmax) * 4;
    if (s == VOX_OK && np) /* the planes after the neighbour's face room */
        memmove((void *)planes, buf + pb + fn * 4, (size_t)np);
    /* the window: the box grown by one (clamped), only its shell written */
    int64_t n = 1;
    for (int a = 0; a < 3; a++) {
        w->lo[a] = b.lo[a] > 0 ? b.lo[a] - 1 : 0;
        w->n[a] = (b.hi[a] < pp->dims[a] ? b.hi[a] + 1 : pp->dims[a]) - w->lo[a];
        n *= w->n[a];
    }
    w->own = NULL;
    w->p = s == VOX_OK ? dist_scratch_get(ctx, sc, DIST_SC_WIN, (size_t)n * 4) : NULL;
    s = s == VOX_OK && !w->p ? VOX_OUT_OF_MEMORY : s;
    for (int f = 0; s == VOX_OK && f < 6; f++) {
        const int a = f / 2, side = f % 2;
        int64_t len, at = face_at(&b, f, &len);
        shell_face(w, &b, f, faces + at, pp->fmap[i], map, side ? b.hi[a] - 1 : b.lo[a]);
        if (nb[f] < 0)
            continue;
        struct dist_box c; /* the neighbour's box; its face toward this box: f ^ 1 */
        int64_t h[3] = {g[0], g[1], g[2]}, clen;
        h[a] += side ? 1 : -1;
        pairs_box(pp, h, &c);
        const int64_t cat = face_at(&c, f ^ 1, &clen);
        s = pairs_read(ctx, pp->fd[pp->file[nb[f]]], tmp, clen * 4,
                       pp->off[nb[f]] + pp->npf[nb[f]] * PF_DISK + cat * 4);
        nread += clen * 4;
        if (s == VOX_OK)
            shell_face(w, &b, f, tmp, pp->fmap[nb[f]], map, side ? b.hi[a] : b.lo[a] - 1);
    }
    if (s != VOX_OK)
        return s;
    pairs_count(io, false, nread);
    rec_set(pp, i, &b, buf, planes, rec);
    *found = true;
    return VOX_OK;
}

/* Chunk i's entries and planes alone (its window comes from elsewhere). */
static enum vox_status pairs_entries(struct vox_ctx *ctx, const struct dist_pairs *pp, int64_t i,
                                     struct dist_scratch *sc, struct dist_io *io, bool *found,
                                     struct dist_chunk_pf *rec)
{
    *found = false;
    if (!pp || pp->off[i] < 0)
        return VOX_OK;
    const int64_t g[3] = {i / (pp->grid[1] * pp->grid[2]), (i / pp->grid[2]) % pp->grid[1],
                          i % pp->grid[2]};
    struct dist_box b;
    pairs_box(pp, g, &b);
    const int64_t pb = pp->npf[i] * (int64_t)sizeof *rec->pf, pd = pp->npf[i] * PF_DISK,
                  fn = dist_faces_len(pp->dims, pp->chunk, i), np = planes_size(&b, pp->dims);
    uint8_t *buf = dist_scratch_get(ctx, sc, DIST_SC_W5, (size_t)(pb + np + 1));
    if (!buf)
        return VOX_OUT_OF_MEMORY;
    const int fd = pp->fd[pp->file[i]];
    enum vox_status s = pairs_read(ctx, fd, buf + pb - pd, pd, pp->off[i]);
    if (s == VOX_OK)
        pf_unpack(buf, pp->npf[i]);
    if (s == VOX_OK && np)
        s = pairs_read(ctx, fd, buf + pb, np, pp->off[i] + pd + fn * 4);
    if (s != VOX_OK)
        return s;
    pairs_count(io, false, pd + np);
    rec_set(pp, i, &b, buf, buf + pb, rec);
    *found = true;
    return VOX_OK;
}

/* Where chunk i takes its faces from: *found, its record's entries with *fm its fragments'
 * map to l's values (nf fragments; then: a map after fm, or NULL); *loaded: w holds its shell
 * too. */
static enum vox_status pairs_chunk(struct vox_ctx *ctx, const struct dist_vol *vol,
                                   const struct dist_labels *l, int64_t i, struct dist_scratch *sc,
                                   bool *found, struct dist_chunk_pf *rec, const uint32_t **fm,
                                   int64_t *nf, const uint32_t **then, struct dist_win *w,
                                   bool *loaded)
{
    const struct dist_pairs *pp = vol->pairs;
    *found = *loaded = false;
    if (l->given && l->given_fm) { /* a served chunk: its map came with its window */
        *fm = l->given_fm;
        *nf = l->given_nf;
        *then = NULL;
        return pairs_entries(ctx, pp, i, sc, vol->io, found, rec);
    }
    if (l->given || !pp || !pp->fmap || !pp->fmap[i])
        return VOX_OK;
    *fm = pp->fmap[i];
    *nf = pp->nfrag[i];
    *then = l->map;
    if (vol->comm) /* rank 0: the neighbours' records are other ranks' */
        return pairs_entries(ctx, pp, i, sc, vol->io, found, rec);
    enum vox_status s = pairs_get(ctx, pp, i, l->map, sc, vol->io, found, rec, w);
    *loaded = *found;
    return s;
}

enum vox_status dist_chunk_in_load(struct vox_ctx *ctx, const struct dist_vol *vol,
                                   const struct dist_labels *l, const struct dist_box *b, int64_t i,
                                   struct dist_scratch *sc, struct dist_chunk_in *in)
{
    *in = (struct dist_chunk_in){.rec = false};
    for (int a = 0; a < 3; a++)
        in->hi[a] = b->hi[a] < vol->dims[a] ? b->hi[a] + 1 : vol->dims[a];
    bool loaded = false;
    enum vox_status s = pairs_chunk(ctx, vol, l, i, sc, &in->rec, &in->pf, &in->fm, &in->nf,
                                    &in->then, &in->w, &loaded);
    if (s == VOX_OK && !in->rec)
        s = dist_read_q(ctx, vol, b->lo, in->hi, sc, &in->q);
    if (s == VOX_OK && !loaded)
        s = dist_win_load(ctx, l, vol->dims, b, sc, &in->w);
    if (s != VOX_OK)
        dist_chunk_in_fini(ctx, in);
    return s;
}

void dist_chunk_in_fini(struct vox_ctx *ctx, struct dist_chunk_in *in)
{
    dist_win_fini(ctx, &in->w);
    vox_tensor_free(ctx, &in->q);
}
