/*
 * cmd_show.c: `vox show LOG.jsonl --out curves.png`: the learning curves of a `vox train` log
 * (JSON lines {"iter": N, "loss": X, ...} and {"iter": N, "val_loss": X, "val_rand_error": E,
 * ...}) as a PNG line plot.
 *
 * Drawn into an RGB buffer and written with vox_png_write_rgb: axes, "nice" tick marks (steps
 * of 1, 2 or 5 times a power of ten, about 6 per axis) with their numbers in a built-in 5x7
 * bitmap font, the training loss in blue, the validation loss in red and the validation's
 * adapted Rand error in green (each with a dot at each validation; the error is in [0, 1], on
 * the same axis), a legend. Lines are Bresenham segments between successive points.
 */
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char help[] =
    "usage: vox show LOG.jsonl --out CURVES.png [options]\n\n"
    "Plots the learning curves of a `vox train` JSON-lines log: loss per iteration (blue),\n"
    "val_loss (red) and val_rand_error (green; dots at each validation), with axes, tick\n"
    "marks and their values.\n\n"
    "  --out FILE.png          the plot (required)\n"
    "  --size W,H              image size in pixels (default 800,500; each 200 to 8000)\n"
    "  --threads N             worker threads (default: VOX_THREADS, else all CPUs)\n"
    "  --quiet                 no progress lines\n";

struct show_opts {
    struct cli_common common;
    const char *log, *out;
    int64_t size[2];
};

static int parse_one(int argc, char **argv, int *i, void *arg)
{
    struct show_opts *o = arg;
    const char *a = argv[*i], *v;
    if (!(v = cli_value("show", argc, argv, i)))
        return 2;
    if (strcmp(a, "--out") == 0) {
        o->out = v;
    } else if (strcmp(a, "--size") == 0) {
        if (!cli_parse_shape(v, 2, 200, 8000, o->size))
            return cli_usage("show", "--size %s: expected W,H, each 200 to 8000", v);
    } else {
        return cli_usage("show", "unknown option '%s'", a);
    }
    return 0;
}

/* One curve: points (x, y) in log order. */
struct curve {
    double *x, *y;
    int64_t n, cap;
};

static enum vox_status curve_add(struct vox_ctx *ctx, struct curve *c, double x, double y)
{
    if (c->n == c->cap) {
        int64_t cap = c->cap ? 2 * c->cap : 256;
        size_t ob = (size_t)c->cap * sizeof(double), nb = (size_t)cap * sizeof(double);
        double *nx = vox_realloc(ctx, c->x, ob, nb);
        if (nx)
            c->x = nx;
        double *ny = nx ? vox_realloc(ctx, c->y, ob, nb) : NULL;
        if (!ny)
            return vox_fail(ctx, VOX_OUT_OF_MEMORY, "show: out of memory at point %lld",
                            (long long)c->n);
        c->y = ny;
        c->cap = cap;
    }
    c->x[c->n] = x;
    c->y[c->n++] = y;
    return VOX_OK;
}

/* Reads "iter" with "loss", or with "val_loss" and "val_rand_error" (older logs: without it),
 * from each line; other lines are skipped. */
static enum vox_status read_log(struct vox_ctx *ctx, const char *path, struct curve c[3])
{
    FILE *f = fopen(path, "r");
    if (!f)
        return vox_fail(ctx, VOX_IO, "%s: cannot open the log", path);
    char line[1024];
    enum vox_status s = VOX_OK;
    while (s == VOX_OK && fgets(line, sizeof line, f)) {
        const char *it = strstr(line, "\"iter\":"), *l = strstr(line, "\"loss\":");
        const char *vl = strstr(line, "\"val_loss\":"), *vr = strstr(line, "\"val_rand_error\":");
        double x, y;
        if (!it || sscanf(it + 7, "%lf", &x) != 1)
            continue;
        if (l && sscanf(l + 7, "%lf", &y) == 1 && isfinite(y))
            s = curve_add(ctx, &c[0], x, y);
        else if (vl && sscanf(vl + 11, "%lf", &y) == 1 && isfinite(y))
            s = curve_add(ctx, &c[1], x, y);
        if (s == VOX_OK && !l && vl && vr && sscanf(vr + 17, "%lf", &y) == 1 && isfinite(y))
            s = curve_add(ctx, &c[2], x, y);
    }
    fclose(f);
    if (s == VOX_OK && c[0].n + c[1].n == 0)
        return vox_fail(ctx, VOX_FORMAT,
                        "%s: no lines with \"iter\" and \"loss\" or \"val_loss\" "
                        "(expected a `vox train` JSON-lines log)",
                        path);
    return s;
}

/* ---- drawing ------------------------------------------------------------------------------ */

struct canvas {
    uint8_t *rgb;
    int64_t w, h;
};

static void plot(struct canvas *cv, int64_t x, int64_t y, const uint8_t col[3])
{
    if (x >= 0 && y >= 0 && x < cv->w && y < cv->h)
        memcpy(cv->rgb + 3 * (y * cv->w + x), col, 3);
}

static void line(struct canvas *cv, int64_t x0, int64_t y0, int64_t x1, int64_t y1,
                 const uint8_t col[3])
{
    int64_t dx = llabs(x1 - x0), dy = -llabs(y1 - y0), e = dx + dy;
    int64_t sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    for (;;) {
        plot(cv, x0, y0, col);
        if (x0 == x1 && y0 == y1)
            return;
        int64_t e2 = 2 * e;
        if (e2 >= dy)
            e += dy, x0 += sx;
        if (e2 <= dx)
            e += dx, y0 += sy;
    }
}

/* 5x7 glyphs, one byte per row, bit 4 the leftmost column. */
static const char font_chars[] = "0123456789.-+elosvau_rnd";
static const uint8_t font[][7] = {
    {14, 17, 19, 21, 25, 17, 14}, {4, 12, 4, 4, 4, 4, 14},    {14, 17, 1, 2, 4, 8, 31},
    {31, 2, 4, 2, 1, 17, 14},     {2, 6, 10, 18, 31, 2, 2},   {31, 16, 30, 1, 1, 17, 14},
    {6, 8, 16, 30, 17, 17, 14},   {31, 1, 2, 4, 8, 8, 8},     {14, 17, 17, 14, 17, 17, 14},
    {14, 17, 17, 15, 1, 2, 12},   {0, 0, 0, 0, 0, 12, 12},    {0, 0, 0, 31, 0, 0, 0},
    {0, 4, 4, 31, 4, 4, 0},       {0, 0, 14, 17, 31, 16, 14}, {12, 4, 4, 4, 4, 4, 14},
    {0, 0, 14, 17, 17, 17, 14},   {0, 0, 15, 16, 14, 1, 30},  {0, 0, 17, 17, 17, 10, 4},
    {0, 0, 14, 1, 15, 17, 15},    {0, 0, 17, 17, 17, 19, 13}, {0, 0, 0, 0, 0, 0, 31},
    {0, 0, 22, 25, 16, 16, 16},   {0, 0, 22, 25, 17, 17, 17}, {1, 1, 13, 19, 17, 17, 15}};

/* Draws text with its top-left corner at (x, y); characters without a glyph are blanks. */
static void text(struct canvas *cv, int64_t x, int64_t y, const char *s, const uint8_t col[3])
{
    for (; *s; s++, x += 6) {
        const char *p = strchr(font_chars, *s);
        if (!p || !*s)
            continue;
        for (int r = 0; r < 7; r++)
            for (int b = 0; b < 5; b++)
                if (font[p - font_chars][r] >> (4 - b) & 1)
                    plot(cv, x + b, y + r, col);
    }
}

/* A tick step of 1, 2 or 5 times a power of ten giving about 6 ticks over [lo, hi]. */
static double tick_step(double lo, double hi)
{
    double raw = (hi - lo) / 6, p = pow(10, floor(log10(raw))), m = raw / p;
    return p * (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10);
}

/* The plot area and the data ranges it maps. */
struct frame {
    int64_t x0, y0, x1, y1; /* pixels: left, top, right, bottom */
    double lo[2], hi[2];    /* data: x, y */
};

static int64_t px(const struct frame *f, double x)
{
    return f->x0 +
           (int64_t)lround((x - f->lo[0]) / (f->hi[0] - f->lo[0]) * (double)(f->x1 - f->x0));
}

static int64_t py(const struct frame *f, double y)
{
    return f->y1 -
           (int64_t)lround((y - f->lo[1]) / (f->hi[1] - f->lo[1]) * (double)(f->y1 - f->y0));
}

/* Axes, ticks and their numbers. */
static void axes(struct canvas *cv, const struct frame *f)
{
    static const uint8_t black[3] = {0, 0, 0}, grid[3] = {225, 225, 225};
    char s[32];
    for (int a = 0; a < 2; a++) {
        double st = tick_step(f->lo[a], f->hi[a]);
        for (double t = ceil(f->lo[a] / st) * st; t <= f->hi[a] + 1e-9 * st; t += st) {
            snprintf(s, sizeof s, "%.4g", fabs(t) < 1e-12 * st ? 0.0 : t);
            if (a == 0) {
                int64_t x = px(f, t);
                line(cv, x, f->y0, x, f->y1 - 1, grid);
                line(cv, x, f->y1, x, f->y1 + 5, black);
                text(cv, x - 3 * (int64_t)strlen(s), f->y1 + 9, s, black);
            } else {
                int64_t y = py(f, t);
                line(cv, f->x0 + 1, y, f->x1, y, grid);
                line(cv, f->x0 - 5, y, f->x0, y, black);
                text(cv, f->x0 - 8 - 6 * (int64_t)strlen(s), y - 3, s, black);
            }
        }
    }
    line(cv, f->x0, f->y0, f->x0, f->y1, black);
    line(cv, f->x0, f->y1, f->x1, f->y1, black);
}

static void draw_curve(struct canvas *cv, const struct frame *f, const struct curve *c,
                       const uint8_t col[3], bool dots)
{
    for (int64_t i = 0; i < c->n; i++) {
        int64_t x = px(f, c->x[i]), y = py(f, c->y[i]);
        if (i > 0)
            line(cv, px(f, c->x[i - 1]), py(f, c->y[i - 1]), x, y, col);
        for (int64_t d = -2; dots && d <= 2; d++)
            line(cv, x - 2, y + d, x + 2, y + d, col);
    }
}

/* The data ranges over the curves, y padded by 5%. */
static void ranges(const struct curve c[3], struct frame *f)
{
    f->lo[0] = f->lo[1] = INFINITY;
    f->hi[0] = f->hi[1] = -INFINITY;
    for (int k = 0; k < 3; k++)
        for (int64_t i = 0; i < c[k].n; i++) {
            f->lo[0] = fmin(f->lo[0], c[k].x[i]), f->hi[0] = fmax(f->hi[0], c[k].x[i]);
            f->lo[1] = fmin(f->lo[1], c[k].y[i]), f->hi[1] = fmax(f->hi[1], c[k].y[i]);
        }
    for (int a = 0; a < 2; a++)
        if (f->hi[a] - f->lo[a] < 1e-12 * fmax(1, fabs(f->hi[a])))
            f->lo[a] -= 1, f->hi[a] += 1;
    double pad = 0.05 * (f->hi[1] - f->lo[1]);
    f->lo[1] -= pad, f->hi[1] += pad;
}

static enum vox_status render(struct vox_ctx *ctx, const struct show_opts *o,
                              const struct curve c[3])
{
    static const uint8_t blue[3] = {31, 92, 200}, red[3] = {214, 39, 40}, green[3] = {44, 160, 44},
                         black[3] = {0, 0, 0};
    struct canvas cv = {vox_alloc(ctx, (size_t)(3 * o->size[0] * o->size[1])), o->size[0],
                        o->size[1]};
    if (!cv.rgb)
        return vox_fail(ctx, VOX_OUT_OF_MEMORY, "show: out of memory for a %lldx%lld image",
                        (long long)cv.w, (long long)cv.h);
    memset(cv.rgb, 255, (size_t)(3 * cv.w * cv.h));
    struct frame f = {.x0 = 90, .y0 = 30, .x1 = cv.w - 30, .y1 = cv.h - 40};
    ranges(c, &f);
    axes(&cv, &f);
    draw_curve(&cv, &f, &c[0], blue, false);
    draw_curve(&cv, &f, &c[1], red, true);
    draw_curve(&cv, &f, &c[2], green, true);
    line(&cv, f.x1 - 170, 14, f.x1 - 150, 14, blue);
    text(&cv, f.x1 - 144, 11, "loss", black);
    line(&cv, f.x1 - 110, 14, f.x1 - 90, 14, red);
    text(&cv, f.x1 - 84, 11, "val", black);
    if (c[2].n) {
        line(&cv, f.x1 - 60, 14, f.x1 - 40, 14, green);
        text(&cv, f.x1 - 34, 11, "rand", black);
    }
    enum vox_status s = vox_png_write_rgb(ctx, o->out, cv.w, cv.h, cv.rgb);
    vox_free(ctx, cv.rgb);
    return s;
}

int vox_cmd_show(int argc, char **argv)
{
    struct show_opts o = {.size = {800, 500}};
    bool has_log = argc > 1 && argv[1][0] != '-';
    if (has_log)
        o.log = argv[1];
    int r =
        cli_parse_options("show", argc - has_log, argv + has_log, help, &o.common, parse_one, &o);
    if (r)
        return r < 0 ? 0 : r;
    if (!o.log)
        return cli_usage("show", "LOG.jsonl is required (the first argument)");
    const char *dot = o.out ? strrchr(o.out, '.') : NULL;
    if (!o.out)
        return cli_usage("show", "--out FILE.png is required");
    if (!dot || strcmp(dot, ".png") != 0)
        return cli_usage("show", "--out %s: expected a .png file", o.out);
    struct vox_ctx *ctx = cli_ctx_create("show", &o.common);
    if (!ctx)
        return 1;
    struct curve c[3] = {{0}};
    enum vox_status s = read_log(ctx, o.log, c);
    if (s == VOX_OK)
        s = render(ctx, &o, c);
    for (int k = 0; k < 3; k++)
        vox_free(ctx, c[k].x), vox_free(ctx, c[k].y);
    int rc = s == VOX_OK ? 0 : cli_fail("show", ctx, s);
    if (s == VOX_OK && !o.common.quiet)
        fprintf(stderr, "vox show: %lld loss, %lld val_loss and %lld val_rand_error points -> %s\n",
                (long long)c[0].n, (long long)c[1].n, (long long)c[2].n, o.out);
    vox_ctx_destroy(ctx);
    return rc;
}
