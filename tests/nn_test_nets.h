/*
 * nn_test_nets.h: loading the shipped nets (nets/NAME beside the tests directory) in the nn
 * tests, so every test finds them from any build directory.
 */
#ifndef VOX_NN_TEST_NETS_H
#define VOX_NN_TEST_NETS_H

#include "harness.h"
#include "vox/nn.h"

/* nets/NAME next to this file's directory; a failed load is a failed check (NULL). */
static inline struct vox_net *shipped(struct vox_ctx *ctx, const char *name)
{
    char path[1024];
    const char *f = __FILE__, *slash = strrchr(f, '/');
    int dir = slash ? (int)(slash - f) : 0;
    snprintf(path, sizeof path, "%.*s%snets/%s", dir, f, dir ? "/../" : "../", name);
    struct vox_net *net = NULL;
    CHECK_OK(vox_net_load(ctx, path, &net));
    return net;
}

#endif
