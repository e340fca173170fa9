"""Datasets: the paper's artificial sets, a 2-D grid for implied-loss plots, MNIST and Fashion-MNIST.

    from dni_dist.data import load_dataset
    ds = load_dataset("noisy100")          # 1,000 points in 100-D, 10 % labels flipped
    ds = load_dataset("mnist", subset=True)  # the bundled 5,000-image subset, 4,000/1,000 split
    ds = load_dataset("fashion-mnist")     # 60,000/10,000 from /usr/share/datasets/fashion-mnist

Every dataset comes as tensors with one-hot float targets (`y_*`) and integer labels
(`labels_*`). Inputs are flat vectors [n, d]; image sets also give `image_shape` (C, H, W), which
a model that takes images (the cnn, most factories) restores with a leading nn.Unflatten.
Artificial data is generated from a fixed seed per name, so every run on "linear2" sees the
same 100 points; the run's seed only drives initialisation and batching.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

ARTIFICIAL_LABELS = ("linear", "noisy", "random")
IMAGE_SETS = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28)}
"""Image datasets and the (channels, height, width) of one image."""


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: torch.Tensor  # [n, d] float32
    labels_train: torch.Tensor  # [n] int64
    x_test: torch.Tensor
    labels_test: torch.Tensor
    num_classes: int
    source: str  # where the data came from, for logs and summaries
    image_shape: tuple[int, ...] | None = None  # (C, H, W) of the flat rows of an image dataset

    @property
    def input_dim(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def y_train(self) -> torch.Tensor:
        return one_hot(self.labels_train, self.num_classes)

    @property
    def y_test(self) -> torch.Tensor:
        return one_hot(self.labels_test, self.num_classes)


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, num_classes).to(torch.float32)


def parse_dataset_name(name: str) -> tuple[str, int]:
    """Split a dataset name into (family, dimension); raises ValueError with the valid names."""
    if name in IMAGE_SETS:
        return (name, math.prod(IMAGE_SETS[name]))
    if name == "grid2":
        return ("grid", 2)
    m = re.fullmatch(r"(linear|noisy|random)(\d+)", name)
    if m is None or int(m.group(2)) < 1:
        raise ValueError(
            f"unknown dataset {name!r}; expected mnist, fashion-mnist, grid2 or an artificial set "
            f"{{{','.join(ARTIFICIAL_LABELS)}}}<dim> such as linear2 or noisy100"
        )
    return (m.group(1), int(m.group(2)))


def dataset_shape(name: str) -> tuple[int, int]:
    """(input dimension, number of classes) of a dataset, without loading it."""
    family, dim = parse_dataset_name(name)
    return (dim, 10) if family in IMAGE_SETS else (dim, 2)


def dataset_image_shape(name: str) -> tuple[int, ...] | None:
    """(C, H, W) of one image of an image dataset, None for vector data (without loading it)."""
    parse_dataset_name(name)
    return IMAGE_SETS.get(name)


def _name_seed(name: str) -> int:
    return zlib.crc32(name.encode())


def artificial(kind: str, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Paper App. C: x ~ N(0, I_d), 100 points for d = 2 and 1,000 otherwise; binary labels from
    a random origin-crossing hyperplane (`linear`), the same with 10 % flipped (`noisy`), or
    uniformly random (`random`)."""
    if kind not in ARTIFICIAL_LABELS:
        raise ValueError(f"artificial labels must be one of {ARTIFICIAL_LABELS}, got {kind!r}")
    g = torch.Generator().manual_seed(_name_seed(f"{kind}{dim}"))
    n = 100 if dim == 2 else 1000
    x = torch.randn(n, dim, generator=g)
    if kind == "random":
        labels = torch.randint(0, 2, (n,), generator=g)
    else:
        normal = torch.randn(dim, generator=g)
        labels = (x @ normal > 0).long()
        if kind == "noisy":
            flip = torch.randperm(n, generator=g)[: n // 10]
            labels[flip] = 1 - labels[flip]
    return x, labels


def grid(points_per_side: int = 20, extent: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A 2-D grid over [-extent, extent]^2 labelled by a ring (inside radius 0.6·extent or not):
    not linearly separable, so the implied-loss surfaces of Figure 2 have structure."""
    axis = torch.linspace(-extent, extent, points_per_side)
    xs, ys = torch.meshgrid(axis, axis, indexing="xy")
    x = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)
    labels = (x.norm(dim=1) < 0.6 * extent).long()
    return x, labels


def load_dataset(
    name: str,
    *,
    data_dir: str = "",
    download: bool = True,
    mirror: str = "https://ossci-datasets.s3.amazonaws.com/mnist/",
    subset: bool = False,
) -> Dataset:
    """Load a dataset by name. Artificial and grid data are trained and tested on the same
    points (the paper's experiments are about optimisation, not generalisation). An empty
    `data_dir` means the dataset's own place (see DataConfig.data_dir)."""
    family, dim = parse_dataset_name(name)
    if family == "mnist":
        from dni_dist.data.mnist import DEFAULT_DIR, load_mnist

        return load_mnist(data_dir=data_dir or DEFAULT_DIR, download=download, mirror=mirror, subset=subset)
    if family == "fashion-mnist":
        from dni_dist.data.fashion import load_fashion_mnist

        if subset:
            raise ValueError("fashion-mnist has no bundled subset (data.subset is for mnist)")
        return load_fashion_mnist(data_dir=data_dir)
    if family == "grid":
        x, labels = grid()
        source = "2-D grid, ring labels"
    else:
        x, labels = artificial(family, dim)
        source = f"artificial: N(0, I_{dim}), {family} labels"
    return Dataset(name, x, labels, x, labels, num_classes=2, source=source)


class BatchStream:
    """Endless shuffled mini-batches (one-hot targets), deterministic for a seed.

    Each epoch is a fresh permutation; the last incomplete batch of an epoch is dropped so every
    step sees `batch_size` examples (0 or >= n means full batch, unshuffled)."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor, num_classes: int, batch_size: int, seed: int):
        if x.shape[0] != labels.shape[0]:
            raise ValueError(f"x has {x.shape[0]} rows but labels has {labels.shape[0]}")
        self.x = x
        self.y = one_hot(labels, num_classes)
        n = x.shape[0]
        self.batch_size = n if batch_size <= 0 or batch_size >= n else batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.x.shape[0]
        if self.batch_size == n:
            while True:
                yield self.x, self.y
        while True:
            order = torch.randperm(n, generator=self.generator)
            for start in range(0, n - self.batch_size + 1, self.batch_size):
                idx = order[start : start + self.batch_size]
                yield self.x[idx], self.y[idx]


__all__ = [
    "ARTIFICIAL_LABELS",
    "IMAGE_SETS",
    "BatchStream",
    "Dataset",
    "artificial",
    "dataset_image_shape",
    "dataset_shape",
    "grid",
    "load_dataset",
    "one_hot",
    "parse_dataset_name",
]
