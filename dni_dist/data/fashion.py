"""Fashion-MNIST (Xiao et al. 2017): 60,000 training and 10,000 test images of clothing, 10 classes.

    python -c "from dni_dist.data.fashion import load_fashion_mnist; print(load_fashion_mnist().source)"

The four IDX files (the same names and format as MNIST's, plain or .gz) are read from
`data_dir`, by default /usr/share/datasets/fashion-mnist, where Debian's package
`dataset-fashion-mnist` installs them. Nothing is downloaded and there is no fallback: when a
file is missing, the error says how to get it.
"""

from __future__ import annotations

from pathlib import Path

from dni_dist.data import Dataset
from dni_dist.data.mnist import FILES, DataError, find_idx, read_idx, to_dataset

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
UPSTREAM = "https://github.com/zalandoresearch/fashion-mnist"
SIZES = {"train": 60_000, "test": 10_000}


def missing_files(data_dir: str = "") -> list[str]:
    """The IDX files (by stem) that are not in `data_dir` (default: DEFAULT_DIR)."""
    root = Path(data_dir or DEFAULT_DIR).expanduser()
    return [stem for stem in FILES.values() if find_idx(root, stem) is None]


def how_to_get(root: Path, missing: list[str]) -> str:
    return (
        f"Fashion-MNIST: {', '.join(missing)} not found in {root}. Install Debian's package "
        f"(`sudo apt-get install dataset-fashion-mnist`, it puts the files in {DEFAULT_DIR}), or download "
        f"the four .gz files from {UPSTREAM} (folder data/fashion) into a directory and point "
        "data.data_dir at it (--set data.data_dir=DIR)"
    )


def load_fashion_mnist(*, data_dir: str = "") -> Dataset:
    root = Path(data_dir or DEFAULT_DIR).expanduser()
    missing = missing_files(str(root))
    if missing:
        raise DataError(how_to_get(root, missing))
    arrays = {}
    for key, stem in FILES.items():
        path = find_idx(root, stem)
        assert path is not None
        arrays[key] = read_idx(path)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.shape[1:] != (28, 28) or len(images) != len(labels):
            raise DataError(
                f"{root}: {split} images {images.shape} and labels {labels.shape} are not N x 28 x 28 and N "
                f"(Fashion-MNIST has {SIZES[split]:,} {split} images); the files are damaged, fetch them again"
            )
        if labels.max() >= 10:
            raise DataError(f"{root}: {split} labels go up to {labels.max()}, Fashion-MNIST has 10 classes")
    return to_dataset(
        "fashion-mnist",
        arrays["train_images"],
        arrays["train_labels"],
        arrays["test_images"],
        arrays["test_labels"],
        source=f"Fashion-MNIST IDX files in {root}",
    )
