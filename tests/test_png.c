/*
 * test_png.c: the PNG writer. The file is parsed back independently (chunk CRCs, the stored
 * deflate blocks, Adler-32) and its pixels compared with what was written, at sizes whose rows
 * straddle the 65535-byte block limit.
 */
#include "harness.h"

#include "vox/io.h"

#include <unistd.h>

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t crc_ref(const uint8_t *p, size_t n)
{
    uint32_t table[256];
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        table[i] = c;
    }
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++)
        c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

/* Returns the decoded RGB bytes (caller frees) or NULL if anything is malformed. */
static uint8_t *parse_png(const uint8_t *f, size_t n, int64_t w, int64_t h)
{
    if (n < 8 || memcmp(f, "\x89PNG\r\n\x1a\n", 8) != 0)
        return NULL;
    size_t pos = 8, rowlen = (size_t)(3 * w + 1), raw = (size_t)h * rowlen, got = 0;
    uint8_t *filtered = malloc(raw), *rgb = malloc((size_t)(3 * w * h));
    bool end = false;
    while (pos + 12 <= n && !end) {
        uint32_t len = get32(f + pos);
        const uint8_t *type = f + pos + 4, *data = f + pos + 8;
        if (pos + 12 + len > n || crc_ref(type, len + 4) != get32(data + len))
            goto bad;
        if (memcmp(type, "IHDR", 4) == 0 &&
            (get32(data) != (uint32_t)w || get32(data + 4) != (uint32_t)h || data[9] != 2))
            goto bad;
        if (memcmp(type, "IDAT", 4) == 0) {
            size_t k = 2;
            uint32_t a = 1, b = 0;
            for (bool last = false; !last;) {
                last = data[k] & 1;
                size_t bl = data[k + 1] | (size_t)data[k + 2] << 8;
                if ((uint16_t)~bl != (data[k + 3] | data[k + 4] << 8) || got + bl > raw)
                    goto bad;
                memcpy(filtered + got, data + k + 5, bl);
                for (size_t i = 0; i < bl; i++)
                    a = (a + data[k + 5 + i]) % 65521, b = (b + a) % 65521;
                got += bl;
                k += 5 + bl;
            }
            if (get32(data + k) != (b << 16 | a))
                goto bad;
        }
        end = memcmp(type, "IEND", 4) == 0;
        pos += 12 + len;
    }
    if (!end || got != raw)
        goto bad;
    for (int64_t y = 0; y < h; y++) {
        if (filtered[y * rowlen] != 0)
            goto bad;
        memcpy(rgb + y * 3 * w, filtered + y * rowlen + 1, (size_t)(3 * w));
    }
    free(filtered);
    return rgb;
bad:
    free(filtered);
    free(rgb);
    return NULL;
}

static void test_png_roundtrip(struct vox_ctx *ctx)
{
    const int64_t sizes[][2] = {{1, 1}, {3, 2}, {21845, 1}, {21846, 2}, {300, 257}};
    char dir[] = "/tmp/vox-png-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int64_t w = sizes[s][0], h = sizes[s][1];
        uint8_t *rgb = malloc((size_t)(3 * w * h));
        for (int64_t i = 0; i < 3 * w * h; i++)
            rgb[i] = (uint8_t)(i * 7 + i / 3);
        char path[256];
        snprintf(path, sizeof path, "%s/a.png", dir);
        CHECK_OK(vox_png_write_rgb(ctx, path, w, h, rgb));
        FILE *f = fopen(path, "rb");
        CHECK(f != NULL);
        static uint8_t buf[1 << 20];
        size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
        if (f)
            fclose(f);
        uint8_t *back = parse_png(buf, n, w, h);
        CHECK(back && memcmp(back, rgb, (size_t)(3 * w * h)) == 0);
        free(back);
        free(rgb);
        unlink(path);
    }
    CHECK_STATUS(vox_png_write_rgb(ctx, "/nonexistent-dir/a.png", 2, 2, (const uint8_t *)"abcdefghijkl"),
                 VOX_IO);
    CHECK_ERROR_HAS("/nonexistent-dir/a.png");
    CHECK_STATUS(vox_png_write_rgb(ctx, "x.png", 0, 2, NULL), VOX_INVALID_ARG);
    rmdir(dir);
}

VOX_TEST_MAIN(VOX_TEST(test_png_roundtrip))
