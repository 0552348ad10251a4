/*
 * io/spec.c: naming volumes and small file helpers.
 *
 * A volume is spelled "file.h5:/path/in/file" or "file.npy". The split is at the last ':'
 * that is followed by '/', so paths that contain ':' elsewhere (Windows-style drive letters,
 * "run:3/x.h5") still work. The format is chosen by the file's extension, through a table.
 */
#include "io/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

enum vox_status vox_volume_spec_split(struct vox_ctx *ctx, const char *spec, char *path,
                                      size_t path_len, char *dataset, size_t dataset_len)
{
    if (!spec || !*spec)
        return vox_fail(ctx, VOX_INVALID_ARG, "empty volume name (expected file.h5:/dataset "
                        "or file.npy)");
    const char *colon = NULL;
    for (const char *p = spec; *p; p++)
        if (p[0] == ':' && p[1] == '/')
            colon = p;
    size_t n = colon ? (size_t)(colon - spec) : strlen(spec);
    const char *ds = colon ? colon + 1 : "";
    if (n == 0)
        return vox_fail(ctx, VOX_INVALID_ARG, "volume '%s' has no file name", spec);
    if (n >= path_len || strlen(ds) >= dataset_len)
        return vox_fail(ctx, VOX_INVALID_ARG, "volume name '%s' is too long", spec);
    memcpy(path, spec, n);
    path[n] = '\0';
    strcpy(dataset, ds);
    return VOX_OK;
}

static const struct {
    const char *ext;
    const struct vox_io_format *fmt;
} formats[] = {
    {".h5", &vox_io_h5}, {".hdf5", &vox_io_h5}, {".hdf", &vox_io_h5}, {".npy", &vox_io_npy},
};

enum vox_status vox_io_format_of(struct vox_ctx *ctx, const char *path,
                                 const struct vox_io_format **fmt_out)
{
    size_t n = strlen(path);
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++) {
        size_t m = strlen(formats[i].ext);
        if (n > m && strcasecmp(path + n - m, formats[i].ext) == 0) {
            *fmt_out = formats[i].fmt;
            return VOX_OK;
        }
    }
    return vox_fail(ctx, VOX_INVALID_ARG, "'%s': unknown volume format (expected a .h5, .hdf5, "
                    ".hdf or .npy file)", path);
}

char *vox_io_strdup(struct vox_ctx *ctx, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = vox_alloc(ctx, n);
    if (d)
        memcpy(d, s, n);
    return d;
}

void vox_io_c_strides(int rank, const int64_t *shape, int64_t *strides)
{
    int64_t s = 1;
    for (int i = rank - 1; i >= 0; i--) {
        strides[i] = s;
        s *= shape[i];
    }
}

/* Writes all of buf to fd, retrying short writes. */
static bool write_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        buf += w;
        n -= (size_t)w;
    }
    return true;
}

enum vox_status vox_io_copy_file(struct vox_ctx *ctx, const char *src, const char *dst)
{
    enum { BUF = 1 << 20 };
    enum vox_status s = VOX_OK;
    int in = -1, out = -1;
    char *buf = vox_alloc(ctx, BUF);
    if (!buf)
        return VOX_OUT_OF_MEMORY;
    if ((in = open(src, O_RDONLY | O_CLOEXEC)) < 0) {
        s = vox_fail(ctx, VOX_IO, "cannot open '%s': %s", src, strerror(errno));
        goto done;
    }
    if ((out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666)) < 0) {
        s = vox_fail(ctx, VOX_IO, "cannot create '%s': %s", dst, strerror(errno));
        goto done;
    }
    /* in the kernel first (no copies through this process; a file system with shared extents
     * shares them), else by hand */
    for (;;) {
        ssize_t r = copy_file_range(in, NULL, out, NULL, (size_t)1 << 30, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r == 0 || lseek(out, 0, SEEK_CUR) == 0)
                break; /* done, or nothing copied yet: read and write from the start */
            s = vox_fail(ctx, VOX_IO, "cannot copy '%s' to '%s': %s", src, dst, strerror(errno));
            goto done;
        }
    }
    for (;;) {
        ssize_t r = read(in, buf, BUF);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            s = vox_fail(ctx, VOX_IO, "cannot read '%s': %s", src, strerror(errno));
            goto done;
        }
        if (r == 0)
            break;
        if (!write_all(out, buf, (size_t)r)) {
            s = vox_fail(ctx, VOX_IO, "cannot write '%s': %s", dst, strerror(errno));
            goto done;
        }
    }
done:
    if (in >= 0)
        close(in);
    if (out >= 0 && close(out) != 0 && s == VOX_OK)
        s = vox_fail(ctx, VOX_IO, "cannot write '%s': %s", dst, strerror(errno));
    vox_free(ctx, buf);
    return s;
}
