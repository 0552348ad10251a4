/*
 * bench_h5.c: `vox bench h5-write:ZxYxX` and `h5-read:ZxYxX`: HDF5 bandwidth for a uint8 volume
 * (default 512^3) written chunked and gzip-compressed the way vox writes its outputs, and read
 * back whole. The data are a smooth synthetic pattern with noise, which compresses like EM
 * rather than like zeros. gb_s counts uncompressed bytes.
 */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static enum vox_status parse_shape(struct vox_ctx *ctx, const char *raw, int64_t shape[3])
{
    shape[0] = shape[1] = shape[2] = 512;
    if (!raw[0] || strchr("0123456789", raw[0]) == NULL)
        return VOX_OK;
    long long a, b, c;
    if (sscanf(raw, "%lldx%lldx%lld", &a, &b, &c) != 3 || a < 1 || b < 1 || c < 1)
        return vox_fail(ctx, VOX_INVALID_ARG, "shape '%s': expected ZxYxX", raw);
    shape[0] = a, shape[1] = b, shape[2] = c;
    return VOX_OK;
}

static enum vox_status make_volume(struct vox_ctx *ctx, const int64_t shape[3],
                                   struct vox_tensor *t)
{
    enum vox_status s = vox_tensor_alloc(ctx, t, VOX_U8, 3, shape);
    if (s != VOX_OK)
        return s;
    uint8_t *d = t->data;
    uint64_t r = 0x12345;
    for (int64_t z = 0; z < shape[0]; z++)
        for (int64_t y = 0; y < shape[1]; y++)
            for (int64_t x = 0; x < shape[2]; x++) {
                r = r * 6364136223846793005ull + 1442695040888963407ull;
                int v = (int)((x * 3 + y * 5 + z * 7) % 160) + (int)(r >> 60);
                *d++ = (uint8_t)v;
            }
    return VOX_OK;
}

static enum vox_status run_h5(struct bench_env *env, const struct bench_params *p,
                              struct bench_result *res, bool write)
{
    struct vox_ctx *ctx = env->ctx;
    int64_t shape[3];
    enum vox_status s = parse_shape(ctx, p->raw, shape);
    if (s != VOX_OK)
        return s;
    char path[256];
    snprintf(path, sizeof path, "/tmp/vox-bench-%d.h5", (int)getpid());
    char spec[300];
    snprintf(spec, sizeof spec, "%s:/raw", path);
    struct vox_tensor t = {0}, back = {0};
    s = make_volume(ctx, shape, &t);
    if (s == VOX_OK && !write)
        s = vox_volume_save(ctx, spec, &t, NULL);
    for (int i = 0; i < p->runs && s == VOX_OK; i++) {
        double t0 = vox_time_now();
        if (write) {
            s = vox_volume_save(ctx, spec, &t, NULL);
        } else {
            vox_tensor_free(ctx, &back);
            s = vox_volume_load(ctx, spec, &back, NULL);
        }
        res->times[i] = vox_time_now() - t0;
    }
    if (s == VOX_OK && !write && memcmp(back.data, t.data, vox_tensor_nbytes(&t)) != 0)
        s = vox_fail(ctx, VOX_INTERNAL, "h5-read: the data read back differ");
    unlink(path);
    res->runs = p->runs;
    res->bytes = (double)vox_tensor_nbytes(&t);
    res->voxels = (double)vox_tensor_numel(&t);
    vox_tensor_free(ctx, &t);
    vox_tensor_free(ctx, &back);
    return s;
}

static enum vox_status run_write(struct bench_env *env, const struct bench_params *p,
                                 struct bench_result *res)
{
    return run_h5(env, p, res, true);
}

static enum vox_status run_read(struct bench_env *env, const struct bench_params *p,
                                struct bench_result *res)
{
    return run_h5(env, p, res, false);
}

const struct bench_problem bench_h5_write = {
    "h5-write", "ZxYxX (default 512x512x512): write a uint8 volume as chunked gzip HDF5", 3,
    run_write};
const struct bench_problem bench_h5_read = {
    "h5-read", "ZxYxX (default 512x512x512): read a chunked gzip uint8 HDF5 volume whole", 3,
    run_read};
