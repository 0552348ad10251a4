#!/usr/bin/python3
"""real_data_prep.py: crops and pads of the real FIB-SEM volumes for vox train / infer / eval.

Usage: /usr/bin/python3 scripts/real_data_prep.py DATA_DIR OUT_DIR [MARGIN_Z,MARGIN_Y,MARGIN_X]

Writes to OUT_DIR (raw uint8, labels uint64, as in DATA_DIR):
  flyem_train.h5   flyem_medulla_fib_250.h5 z in [0, 200)   (training)
  flyem_test.h5    flyem_medulla_fib_250.h5 z in [200, 250) (held out)
  and, for each of flyem_train, flyem_test, gala_train, gala_test, NAME_pad.h5: /raw padded by
  the margin on both sides of every axis by mirror reflection (numpy 'reflect'), so that a valid
  net whose field of view is 2 * margin + 1 outputs the volume's full shape (default margin
  14,14,14 for nets/fib_aff.net, field of view 29).
"""
import os
import sys

import h5py
import numpy as np


def write(path, **arrays):
    with h5py.File(path + ".tmp", "w") as f:
        for name, a in arrays.items():
            f.create_dataset(name, data=a, compression="gzip", compression_opts=4)
    os.replace(path + ".tmp", path)


def main():
    data, out = sys.argv[1], sys.argv[2]
    margin = [int(v) for v in (sys.argv[3] if len(sys.argv) > 3 else "14,14,14").split(",")]
    os.makedirs(out, exist_ok=True)
    with h5py.File(os.path.join(data, "flyem_medulla_fib_250.h5"), "r") as f:
        raw, lab = f["raw"][()], f["labels"][()]
    vols = {"flyem_train": (raw[:200], lab[:200]), "flyem_test": (raw[200:], lab[200:])}
    for name in ("train", "test"):
        with h5py.File(os.path.join(data, "gala_fib_%s.h5" % name), "r") as f:
            vols["gala_" + name] = (f["raw"][()], f["labels"][()])
    for name, (r, l) in vols.items():
        if name.startswith("flyem"):
            write(os.path.join(out, name + ".h5"), raw=r, labels=l)
        pad = np.pad(r, [(m, m) for m in margin], mode="reflect")
        write(os.path.join(out, name + "_pad.h5"), raw=pad)
        print(name, r.shape, "->", pad.shape)


if __name__ == "__main__":
    main()
