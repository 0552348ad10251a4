/*
 * io/npy.c: NumPy .npy files, read and written without numpy.
 *
 * Format (numpy/lib/format.py, "NEP 1"): the magic "\x93NUMPY", a major and minor version,
 * the header length (uint16 little-endian in version 1.0, uint32 in 2.0 and 3.0), then a
 * Python dict literal {'descr': '<u2', 'fortran_order': False, 'shape': (z, y, x), } padded
 * with spaces and a '\n' so the data starts at a multiple of 64 bytes. The data follows, raw,
 * C order. Key idea: because the layout is raw C order, a box is a set of contiguous runs,
 * read or written with pread/pwrite at computed offsets, so only the box touches memory.
 * Short runs (a thin box's rows) are read a plane at a time instead, one call for the span
 * of the plane's rows, so that a box costs about its bytes and not one call per row.
 * Files are written as version 1.0 (the header of a rank <= 6 array always fits).
 */
#include "io/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the .npy reader assumes a little-endian machine"
#endif

enum { NPY_MAX_HEADER = 1 << 16, NPY_MAX_DIMS = 32 };

static const struct {
    const char *descr;
    enum vox_dtype dtype;
} npy_types[] = {
    {"<u1", VOX_U8}, {"|u1", VOX_U8}, {"<u2", VOX_U16}, {"<u4", VOX_U32},
    {"<u8", VOX_U64}, {"<i4", VOX_I32}, {"<f4", VOX_F32},
};

/* "<f8" -> "float64": names an unsupported descr the way numpy users know it. */
static void npy_type_name(const char *descr, char *out, size_t len)
{
    static const struct {
        char code;
        const char *name;
    } kinds[] = {{'b', "bool"}, {'i', "int"}, {'u', "uint"}, {'f', "float"}, {'c', "complex"}};
    int bytes = strlen(descr) >= 3 ? atoi(descr + 2) : 0;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (bytes > 0 && descr[1] == kinds[i].code) {
            snprintf(out, len, "%s%d%s", kinds[i].name, 8 * bytes,
                     descr[0] == '>' ? " big-endian" : "");
            return;
        }
    }
    snprintf(out, len, "'%s'", descr);
}

/* ---- header parsing -------------------------------------------------------------------- */

struct npy_parser {
    const char *p;
    bool ok;
};

static void skip_ws(struct npy_parser *ps)
{
    while (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')
        ps->p++;
}

static bool eat(struct npy_parser *ps, char c)
{
    skip_ws(ps);
    if (*ps->p != c)
        return false;
    ps->p++;
    return true;
}

/* A quoted string ('...' or "...") into out; latches ps->ok = false on error. */
static void parse_str(struct npy_parser *ps, char *out, size_t len)
{
    skip_ws(ps);
    char q = *ps->p;
    if (q != '\'' && q != '"') {
        ps->ok = false;
        return;
    }
    const char *end = strchr(ps->p + 1, q);
    if (!end || (size_t)(end - ps->p - 1) >= len) {
        ps->ok = false;
        return;
    }
    memcpy(out, ps->p + 1, (size_t)(end - ps->p - 1));
    out[end - ps->p - 1] = '\0';
    ps->p = end + 1;
}

static void parse_shape(struct npy_parser *ps, int *rank, int64_t *shape)
{
    *rank = 0;
    if (!eat(ps, '(')) {
        ps->ok = false;
        return;
    }
    while (ps->ok && !eat(ps, ')')) {
        skip_ws(ps);
        char *end;
        errno = 0;
        long long v = strtoll(ps->p, &end, 10);
        if (end == ps->p || v < 0 || errno || *rank == NPY_MAX_DIMS) {
            ps->ok = false;
            return;
        }
        shape[(*rank)++] = v;
        ps->p = end;
        if (!eat(ps, ',') && *ps->p != ')')
            ps->ok = false;
    }
}

struct npy_header {
    char descr[16];
    bool fortran, has_descr, has_fortran, has_shape;
    int rank;
    int64_t shape[NPY_MAX_DIMS];
};

static bool parse_header(const char *text, struct npy_header *h)
{
    struct npy_parser ps = {text, true};
    memset(h, 0, sizeof *h);
    if (!eat(&ps, '{'))
        return false;
    while (ps.ok && !eat(&ps, '}')) {
        char key[32];
        parse_str(&ps, key, sizeof key);
        if (!ps.ok || !eat(&ps, ':'))
            return false;
        skip_ws(&ps);
        if (strcmp(key, "descr") == 0) {
            parse_str(&ps, h->descr, sizeof h->descr);
            h->has_descr = true;
        } else if (strcmp(key, "fortran_order") == 0) {
            h->fortran = strncmp(ps.p, "True", 4) == 0;
            if (!h->fortran && strncmp(ps.p, "False", 5) != 0)
                return false;
            ps.p += h->fortran ? 4 : 5;
            h->has_fortran = true;
        } else if (strcmp(key, "shape") == 0) {
            parse_shape(&ps, &h->rank, h->shape);
            h->has_shape = true;
        } else {
            return false;
        }
        if (!eat(&ps, ',') && *ps.p != '}')
            return false;
    }
    return ps.ok && h->has_descr && h->has_fortran && h->has_shape;
}

/* ---- reading --------------------------------------------------------------------------- */

/* Reads the preamble and the header text (allocated, NUL-terminated) at the start of fd. */
static enum vox_status read_header_text(struct vox_ctx *ctx, int fd, const char *path,
                                        char **text_out, int64_t *data_start_out)
{
    unsigned char pre[12];
    ssize_t n = pread(fd, pre, sizeof pre, 0);
    if (n < 10 || memcmp(pre, "\x93NUMPY", 6) != 0)
        return vox_fail(ctx, VOX_FORMAT, "'%s' is not a .npy file (bad magic)", path);
    int major = pre[6];
    if (major < 1 || major > 3)
        return vox_fail(ctx, VOX_FORMAT, "'%s': .npy version %d.%d is not supported", path,
                        major, pre[7]);
    size_t pos = major == 1 ? 10 : 12;
    if (n < (ssize_t)pos)
        return vox_fail(ctx, VOX_FORMAT, "'%s': truncated .npy header", path);
    uint32_t hlen = major == 1 ? (uint32_t)pre[8] | (uint32_t)pre[9] << 8
                               : (uint32_t)pre[8] | (uint32_t)pre[9] << 8 |
                                     (uint32_t)pre[10] << 16 | (uint32_t)pre[11] << 24;
    if (hlen > NPY_MAX_HEADER)
        return vox_fail(ctx, VOX_FORMAT, "'%s': .npy header of %" PRIu32 " bytes is too long",
                        path, hlen);
    char *text = vox_alloc(ctx, hlen + 1);
    if (!text)
        return VOX_OUT_OF_MEMORY;
    if (pread(fd, text, hlen, (off_t)pos) != (ssize_t)hlen) {
        vox_free(ctx, text);
        return vox_fail(ctx, VOX_FORMAT, "'%s': truncated .npy header", path);
    }
    text[hlen] = '\0';
    *text_out = text;
    *data_start_out = (int64_t)(pos + hlen);
    return VOX_OK;
}

/* Checks a parsed header against what vox supports and fills info. */
static enum vox_status header_to_info(struct vox_ctx *ctx, const struct npy_header *h,
                                      const char *path, struct vox_volume_info *info)
{
    size_t i = 0, nt = sizeof npy_types / sizeof npy_types[0];
    while (i < nt && strcmp(npy_types[i].descr, h->descr) != 0)
        i++;
    if (i == nt) {
        char name[48];
        npy_type_name(h->descr, name, sizeof name);
        return vox_fail(ctx, VOX_UNSUPPORTED, "'%s': dtype %s is not supported (vox reads "
                        "uint8, uint16, uint32, uint64, int32, float32)", path, name);
    }
    if (h->fortran)
        return vox_fail(ctx, VOX_UNSUPPORTED, "'%s': fortran_order arrays are not supported "
                        "(save a C-order array)", path);
    if (h->rank < 1 || h->rank > VOX_MAX_RANK)
        return vox_fail(ctx, VOX_UNSUPPORTED, "'%s' has rank %d (vox reads 1 to %d "
                        "dimensions)", path, h->rank, VOX_MAX_RANK);
    memset(info, 0, sizeof *info);
    info->dtype = npy_types[i].dtype;
    info->rank = h->rank;
    memcpy(info->shape, h->shape, sizeof info->shape[0] * (size_t)h->rank);
    return VOX_OK;
}

/* The array's size in bytes; false if it overflows. */
static bool data_bytes(const struct vox_volume_info *info, int64_t *out)
{
    int64_t n = (int64_t)vox_dtype_size(info->dtype);
    for (int i = 0; i < info->rank; i++) {
        if (info->shape[i] != 0 && n > INT64_MAX / 2 / info->shape[i])
            return false;
        n *= info->shape[i];
    }
    *out = n;
    return true;
}

static enum vox_status npy_open(struct vox_ctx *ctx, struct vox_volume *vol, const char *path,
                                const char *dataset)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return vox_fail(ctx, VOX_IO, "cannot open '%s': %s", path, strerror(errno));
    char *text = NULL;
    struct npy_header h;
    struct stat st;
    int64_t bytes = 0;
    enum vox_status s = read_header_text(ctx, fd, path, &text, &vol->data_start);
    if (s != VOX_OK)
        goto fail;
    if (!parse_header(text, &h)) {
        s = vox_fail(ctx, VOX_FORMAT, "'%s': cannot parse the .npy header \"%.200s\"", path,
                     text);
        goto fail;
    }
    if ((s = header_to_info(ctx, &h, path, &vol->info)) != VOX_OK)
        goto fail;
    if (!data_bytes(&vol->info, &bytes) || fstat(fd, &st) != 0 ||
        st.st_size - vol->data_start < bytes) {
        s = vox_fail(ctx, VOX_FORMAT, "'%s' is truncated: its header promises %lld bytes of "
                     "data, the file holds %lld", path, (long long)bytes,
                     (long long)(st.st_size - vol->data_start));
        goto fail;
    }
    vox_free(ctx, text);
    vol->fd = fd;
    return VOX_OK;
fail:
    vox_free(ctx, text);
    close(fd);
    return s;
}

/* Short runs (a thin box's rows) are read a plane at a time: one read of the span from the
 * plane's first run to its last, when that wastes little, beats one call per run. */
#define NPY_SHORT_RUN 16384
#define NPY_SPAN_MAX ((int64_t)4 << 20)
/* A read call costs about as much as copying this many bytes more (measured: a 130-byte
 * pread ~0.5 us; the page cache copies at ~10-20 GB/s), so a span that copies up to this much
 * per run besides the runs beats a call per run: a 2048-wide volume's 128-wide boxes 4.5x
 * faster than row by row. */
#define NPY_CALL_BYTES 8192

/* The next index of the box's runs (the axes before k, in C order); false after the last. */
static bool npy_next_run(int k, const int64_t *lo, const int64_t *hi, int64_t *idx)
{
    int i = k - 1;
    while (i >= 0 && ++idx[i] == hi[i]) {
        idx[i] = lo[i];
        i--;
    }
    return i >= 0;
}

/* Reads the box [lo, hi) of runs of `run` bytes along axis k (k >= 1) into buf a span at a
 * time: the runs of every index of axis k - 1 (a plane's rows) with one pread of the bytes
 * from the first to the last, copied out of a buffer. VOX_UNSUPPORTED (nothing read, no
 * message) when a span would be long, or its gaps cost more than a call per run: the caller
 * then reads run by run. */
static enum vox_status npy_read_spans(struct vox_ctx *ctx, struct vox_volume *vol,
                                      const int64_t *lo, const int64_t *hi, int k,
                                      const int64_t *st, size_t run, char *buf)
{
    const int64_t esz = (int64_t)vox_dtype_size(vol->info.dtype), n = hi[k - 1] - lo[k - 1];
    const int64_t stride = st[k - 1] * esz, span = (n - 1) * stride + (int64_t)run;
    if (span > NPY_SPAN_MAX || span > n * ((int64_t)run + NPY_CALL_BYTES))
        return VOX_UNSUPPORTED;
    char *tmp = vox_alloc(ctx, (size_t)span);
    if (!tmp)
        return VOX_OUT_OF_MEMORY;
    int64_t idx[VOX_MAX_RANK];
    memcpy(idx, lo, sizeof idx[0] * (size_t)vol->info.rank);
    enum vox_status s = VOX_OK;
    do {
        int64_t off = 0;
        for (int i = 0; i < k; i++)
            off += idx[i] * st[i];
        off = vol->data_start + (off + lo[k] * st[k]) * esz;
        for (int64_t done = 0; done < span && s == VOX_OK;) {
            ssize_t r = pread(vol->fd, tmp + done, (size_t)(span - done), (off_t)(off + done));
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                s = vox_fail(ctx, VOX_FORMAT, "cannot read '%s': %s", vol->name,
                             r < 0 ? strerror(errno) : "the file is shorter than its header");
            done += r > 0 ? r : 0;
        }
        for (int64_t j = 0; j < n && s == VOX_OK; j++, buf += run)
            memcpy(buf, tmp + j * stride, run);
    } while (s == VOX_OK && npy_next_run(k - 1, lo, hi, idx));
    vox_free(ctx, tmp);
    return s;
}

/* Moves the box [lo, hi) between buf and the file as contiguous runs: the axes after `k` are
 * covered whole, so each index of the axes before k is one run of (hi[k]-lo[k]) rows. */
static enum vox_status npy_box_io(struct vox_ctx *ctx, struct vox_volume *vol, const int64_t *lo,
                                  const int64_t *hi, char *buf, bool writing)
{
    const struct vox_volume_info *in = &vol->info;
    int64_t st[VOX_MAX_RANK], idx[VOX_MAX_RANK];
    size_t esz = vox_dtype_size(in->dtype);
    vox_io_c_strides(in->rank, in->shape, st);
    for (int i = 0; i < in->rank; i++)
        if (hi[i] <= lo[i])
            return VOX_OK;
    int k = in->rank - 1;
    while (k > 0 && lo[k] == 0 && hi[k] == in->shape[k])
        k--;
    size_t run = (size_t)((hi[k] - lo[k]) * st[k]) * esz;
    if (!writing && k > 0 && run < NPY_SHORT_RUN) {
        enum vox_status s = npy_read_spans(ctx, vol, lo, hi, k, st, run, buf);
        if (s != VOX_UNSUPPORTED)
            return s;
    }
    memcpy(idx, lo, sizeof idx[0] * (size_t)in->rank);
    for (;;) {
        int64_t off = 0;
        for (int i = 0; i <= k; i++)
            off += idx[i] * st[i];
        off = vol->data_start + off * (int64_t)esz;
        for (size_t done = 0; done < run;) {
            ssize_t r = writing ? pwrite(vol->fd, buf + done, run - done, (off_t)off + done)
                                : pread(vol->fd, buf + done, run - done, (off_t)off + done);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                return vox_fail(ctx, writing ? VOX_IO : VOX_FORMAT, "cannot %s '%s': %s",
                                writing ? "write" : "read", vol->name,
                                r < 0 ? strerror(errno) : "the file is shorter than its header");
            done += (size_t)r;
        }
        buf += run;
        if (!npy_next_run(k, lo, hi, idx))
            return VOX_OK;
    }
}

static enum vox_status npy_read(struct vox_ctx *ctx, struct vox_volume *vol, const int64_t *lo,
                                const int64_t *hi, void *buf)
{
    return npy_box_io(ctx, vol, lo, hi, buf, false);
}

static enum vox_status npy_write(struct vox_ctx *ctx, struct vox_volume *vol, const int64_t *lo,
                                 const int64_t *hi, const void *buf)
{
    return npy_box_io(ctx, vol, lo, hi, (char *)buf, true);
}

/* .npy files hold no attributes: string attributes are dropped, and none are found. */
static enum vox_status npy_set_attr_str(struct vox_ctx *ctx, struct vox_volume *vol,
                                        const char *name, const char *value)
{
    return VOX_OK;
}

static enum vox_status npy_get_attr_str(struct vox_ctx *ctx, struct vox_volume *vol,
                                        const char *name, char *buf, size_t len)
{
    return vox_fail(ctx, VOX_INVALID_ARG, "'%s': a .npy file has no attribute '%s'", vol->name,
                    name);
}

static void npy_close(struct vox_volume *vol)
{
    if (!vol->out && vol->fd >= 0)
        close(vol->fd);
    vol->fd = -1;
}

/* ---- writing --------------------------------------------------------------------------- */

static enum vox_status npy_out_begin(struct vox_ctx *ctx, struct vox_out_file *f)
{
    f->fd = open(f->tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (f->fd < 0)
        return vox_fail(ctx, VOX_IO, "cannot create '%s': %s", f->tmp, strerror(errno));
    return VOX_OK;
}

/* The version 1.0 preamble and header for info, padded to a multiple of 64 bytes. */
static size_t format_header(const struct vox_volume_info *info, char *out, size_t len)
{
    const char *descr = "";
    for (size_t i = 0; i < sizeof npy_types / sizeof npy_types[0] && !*descr; i++)
        if (npy_types[i].dtype == info->dtype)
            descr = npy_types[i].descr;
    char shape[VOX_MAX_RANK * 24 + 4] = "(";
    for (int i = 0; i < info->rank; i++)
        snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%lld", i ? ", " : "",
                 (long long)info->shape[i]);
    strcat(shape, info->rank == 1 ? ",)" : ")");
    int n = snprintf(out + 10, len - 10, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                     descr, shape);
    size_t total = (10 + (size_t)n + 1 + 63) / 64 * 64;
    memset(out + 10 + n, ' ', total - 10 - (size_t)n - 1);
    out[total - 1] = '\n';
    memcpy(out, "\x93NUMPY\x01\x00", 8);
    out[8] = (char)((total - 10) & 0xff);
    out[9] = (char)((total - 10) >> 8);
    return total;
}

static enum vox_status npy_out_dataset(struct vox_ctx *ctx, struct vox_out_file *f,
                                       const char *dataset, const struct vox_dataset_options *opt,
                                       struct vox_volume *vol)
{
    if (f->nvols > 0)
        return vox_fail(ctx, VOX_INVALID_ARG, "'%s': a .npy file holds one array only", f->path);
    vol->info.dtype = opt->dtype;
    vol->info.rank = opt->rank;
    memcpy(vol->info.shape, opt->shape, sizeof opt->shape);
    int64_t bytes;
    if (!data_bytes(&vol->info, &bytes))
        return vox_fail(ctx, VOX_INVALID_ARG, "'%s': the array is too large", f->path);
    char header[512];
    size_t n = format_header(&vol->info, header, sizeof header);
    if (pwrite(f->fd, header, n, 0) != (ssize_t)n || ftruncate(f->fd, (off_t)(n + bytes)) != 0)
        return vox_fail(ctx, VOX_IO, "cannot write '%s': %s", f->tmp, strerror(errno));
    vol->fd = f->fd;
    vol->data_start = (int64_t)n;
    return VOX_OK;
}

static enum vox_status npy_out_end(struct vox_ctx *ctx, struct vox_out_file *f)
{
    int rc = f->fd >= 0 ? close(f->fd) : 0;
    f->fd = -1;
    if (ctx && f->nvols == 0)
        return vox_fail(ctx, VOX_INVALID_ARG, "'%s': no array was written", f->path);
    if (ctx && rc != 0)
        return vox_fail(ctx, VOX_IO, "cannot write '%s': %s", f->tmp, strerror(errno));
    return VOX_OK;
}

const struct vox_io_format vox_io_npy = {
    .name = ".npy",
    .open = npy_open,
    .read = npy_read,
    .write = npy_write,
    .set_attr_str = npy_set_attr_str,
    .get_attr_str = npy_get_attr_str,
    .close = npy_close,
    .out_begin = npy_out_begin,
    .out_dataset = npy_out_dataset,
    .out_end = npy_out_end,
};
