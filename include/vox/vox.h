/*
 * vox/vox.h: the whole public API of vox, one header per module.
 */
#ifndef VOX_VOX_H
#define VOX_VOX_H

#include "vox/core.h"
#include "vox/io.h"
#include "vox/nn.h"
#include "vox/synth.h"
#include "vox/loop.h"
#include "vox/jit.h"
#include "vox/metrics.h"
#include "vox/seg.h"
#include "vox/dist.h"
#include "vox/train.h"

#endif
