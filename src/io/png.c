/*
 * png.c: a minimal PNG writer (8-bit RGB, no compression) for previews of slices and
 * segmentations, so vox needs no image library.
 *
 * The image data go in "stored" deflate blocks (RFC 1951 BTYPE=00, at most 65535 bytes each)
 * inside one zlib stream (RFC 1950: header, blocks, Adler-32), inside one IDAT chunk; every
 * chunk carries its CRC-32 (ISO 3309, as in the PNG spec). Files are a few times larger than
 * compressed ones, which does not matter for previews. Written atomically.
 */
#include "vox/io.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8),
    p[3] = (uint8_t)v;
}

/* Writes one chunk: length, type, data, CRC over type and data. */
static bool write_chunk(FILE *f, const char *type, const uint8_t *data, size_t n)
{
    uint8_t hdr[8];
    put32(hdr, (uint32_t)n);
    memcpy(hdr + 4, type, 4);
    uint32_t crc = crc32_update(0, hdr + 4, 4);
    crc = crc32_update(crc, data, n);
    uint8_t tail[4];
    put32(tail, crc);
    return fwrite(hdr, 1, 8, f) == 8 && (n == 0 || fwrite(data, 1, n, f) == n) &&
           fwrite(tail, 1, 4, f) == 4;
}

/* The zlib stream of the filtered rows (filter byte 0 before each row). */
static uint8_t *zlib_stored(struct vox_ctx *ctx, const uint8_t *rgb, int64_t w, int64_t h,
                            size_t *len_out)
{
    size_t raw = (size_t)h * (size_t)(3 * w + 1);
    size_t blocks = raw / 65535 + 1;
    uint8_t *z = vox_alloc(ctx, 2 + raw + 5 * blocks + 4);
    if (!z)
        return NULL;
    size_t k = 0, done = 0;
    z[k++] = 0x78, z[k++] = 0x01;
    uint32_t a = 1, b = 0;
    int64_t row = 0, col = -1; /* col -1: the filter byte */
    while (done < raw) {
        size_t n = raw - done < 65535 ? raw - done : 65535;
        z[k++] = done + n == raw; /* BFINAL on the last block, BTYPE 00 */
        z[k++] = (uint8_t)n, z[k++] = (uint8_t)(n >> 8);
        z[k++] = (uint8_t)~n, z[k++] = (uint8_t)(~n >> 8);
        for (size_t i = 0; i < n; i++) {
            uint8_t v = col < 0 ? 0 : rgb[row * 3 * w + col];
            if (++col == 3 * w)
                col = -1, row++;
            z[k++] = v;
            a = (a + v) % 65521u;
            b = (b + a) % 65521u;
        }
        done += n;
    }
    put32(z + k, (b << 16) | a);
    *len_out = k + 4;
    return z;
}

enum vox_status vox_png_write_rgb(struct vox_ctx *ctx, const char *path, int64_t width,
                                  int64_t height, const uint8_t *rgb)
{
    if (width <= 0 || height <= 0 || width > 1 << 20 || height > 1 << 20)
        return vox_fail(ctx, VOX_INVALID_ARG, "%s: image of %lld x %lld pixels", path,
                        (long long)width, (long long)height);
    size_t zlen;
    uint8_t *z = zlib_stored(ctx, rgb, width, height, &zlen);
    if (!z)
        return VOX_OUT_OF_MEMORY;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp-%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        vox_free(ctx, z);
        return vox_fail(ctx, VOX_IO, "%s: cannot create: %s", path, strerror(errno));
    }
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    uint8_t ihdr[13];
    put32(ihdr, (uint32_t)width);
    put32(ihdr + 4, (uint32_t)height);
    ihdr[8] = 8, ihdr[9] = 2, ihdr[10] = 0, ihdr[11] = 0, ihdr[12] = 0; /* 8-bit RGB */
    bool ok = fwrite(sig, 1, 8, f) == 8 && write_chunk(f, "IHDR", ihdr, 13) &&
              write_chunk(f, "IDAT", z, zlen) && write_chunk(f, "IEND", NULL, 0);
    ok = (fclose(f) == 0) && ok;
    vox_free(ctx, z);
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return vox_fail(ctx, VOX_IO, "%s: cannot write: %s", path, strerror(e));
    }
    return VOX_OK;
}
