/*
 * vox/vox.h: the whole public API of vox, one header per module.
 */
#ifndef VOX_VOX_H
#define VOX_VOX_H

#include "vox/core.h"
#include "vox/io.h"
#include "vox/nn.h"
#include "vox/synth.h"

#endif
