/*
 * cli.c: helpers shared by the subcommands: strict number and shape parsing (the whole
 * string must parse, within range), one-line errors, and the common options.
 */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_usage(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "vox %s: error: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see 'vox %s --help')\n", cmd);
    va_end(ap);
    return 2;
}

int cli_fail(const char *cmd, struct vox_ctx *ctx, enum vox_status s)
{
    const char *msg = vox_ctx_error(ctx);
    fprintf(stderr, "vox %s: error: %s%s%s\n", cmd, *msg ? "" : vox_status_str(s), msg,
            "");
    return 1;
}

bool cli_parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    if (!s || !*s)
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

bool cli_parse_f64(const char *s, double *out)
{
    if (!s || !*s)
        return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v))
        return false;
    *out = v;
    return true;
}

bool cli_parse_shape(const char *s, int n, int64_t lo, int64_t hi, int64_t *out)
{
    char buf[256];
    if (!s || strlen(s) >= sizeof buf)
        return false;
    strcpy(buf, s);
    int k = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",x", &save); tok; tok = strtok_r(NULL, ",x", &save)) {
        if (k >= n || !cli_parse_i64(tok, lo, hi, &out[k]))
            return false;
        k++;
    }
    return k == n;
}

bool cli_parse_bytes(const char *s, int64_t *out)
{
    if (!s || !*s)
        return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    double mult = 1;
    if (*end == 'k' || *end == 'K')
        mult = 1024.0, end++;
    else if (*end == 'M' || *end == 'm')
        mult = 1024.0 * 1024, end++;
    else if (*end == 'G' || *end == 'g')
        mult = 1024.0 * 1024 * 1024, end++;
    if (*end == 'B' || *end == 'b')
        end++;
    if (errno || *end || !(v > 0) || v * mult > 9e18)
        return false;
    *out = (int64_t)(v * mult);
    return true;
}

const char *cli_value(const char *cmd, int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) {
        cli_usage(cmd, "option %s needs a value", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

int cli_common_option(const char *cmd, int argc, char **argv, int *i, struct cli_common *c)
{
    const char *a = argv[*i];
    if (strcmp(a, "--quiet") == 0 || strcmp(a, "-q") == 0) {
        c->quiet = true;
        return 0;
    }
    if (strcmp(a, "--threads") == 0 || strcmp(a, "-j") == 0) {
        const char *v = cli_value(cmd, argc, argv, i);
        int64_t n;
        if (!v)
            return 2;
        if (!cli_parse_i64(v, 1, 1024, &n))
            return cli_usage(cmd, "--threads %s: expected a whole number from 1 to 1024", v);
        c->threads = (int)n;
        return 0;
    }
    return 1;
}

struct vox_ctx *cli_ctx_create(const char *cmd, const struct cli_common *c)
{
    struct vox_ctx *ctx;
    const char *log = getenv("VOX_LOG"); /* VOX_LOG=debug: the library's debug lines too */
    struct vox_ctx_options opt = {.threads = c->threads,
                                  .log_level = log && strcmp(log, "debug") == 0 ? VOX_LOG_DEBUG
                                                                                : VOX_LOG_WARN};
    enum vox_status s = vox_ctx_create(&opt, &ctx);
    if (s != VOX_OK) {
        fprintf(stderr, "vox %s: error: cannot set up: %s\n", cmd, vox_status_str(s));
        return NULL;
    }
    return ctx;
}

int cli_parse_options(const char *cmd, int argc, char **argv, const char *help,
                      struct cli_common *common, cli_option_fn one, void *arg)
{
    for (int i = 1; i < argc; i++) {
        int r = cli_common_option(cmd, argc, argv, &i, common);
        if (r == 0)
            continue;
        if (r == 2)
            return 2;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(help, stdout);
            return -1;
        }
        if (strncmp(argv[i], "--", 2) != 0)
            return cli_usage(cmd, "unexpected argument '%s'", argv[i]);
        if ((r = one(argc, argv, &i, arg)) != 0)
            return r;
    }
    return 0;
}
