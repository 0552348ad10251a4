#!/usr/bin/python3
"""pad_volume.py: mirror-pads a (Z,Y,X) dataset (or one channel of a (C,Z,Y,X) one) so that a
valid net, whose output is smaller than its input by the field of view less one, outputs the
volume's full shape.

Usage: /usr/bin/python3 scripts/pad_volume.py IN.h5:/ds OUT.h5:/ds MZ,MY,MX [CHANNEL]

Pads MZ, MY, MX voxels on both sides of z, y, x by reflection (numpy 'reflect', the edge voxel
not repeated); a margin of (fov - 1) / 2 per axis. With CHANNEL, reads channel CHANNEL of a
4-d dataset (e.g. the boundary channel 0 of a softmax net's `vox infer` output). With margin
0,0,0 it only extracts. OUT keeps its other datasets; the dtype is kept.
"""
import sys

import h5py
import numpy as np


def split(spec):
    path, ds = spec.split(":", 1)
    return path, ds


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    (ipath, ids), (opath, ods) = split(sys.argv[1]), split(sys.argv[2])
    margin = [int(v) for v in sys.argv[3].split(",")]
    with h5py.File(ipath, "r") as f:
        a = f[ids][int(sys.argv[4])] if len(sys.argv) == 5 else f[ids][()]
    if a.ndim != 3:
        sys.exit("pad_volume: %s:%s is %d-d, expected (Z,Y,X) or a CHANNEL" % (ipath, ids, a.ndim))
    a = np.pad(a, [(m, m) for m in margin], mode="reflect")
    with h5py.File(opath, "a") as f:
        if ods in f:
            del f[ods]
        f.create_dataset(ods, data=a, compression="gzip", compression_opts=4)
    print("%s:%s -> %s:%s %s" % (ipath, ids, opath, ods, a.shape))


if __name__ == "__main__":
    main()
