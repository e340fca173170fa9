"""Block 0's training batches: the run's dataset in a seeded stream.

    batches = training_batches(cfg, first_step=0)    # iterator of (x, one-hot y)

A fresh run shuffles with run.seed; a resumed one with run.seed + its first step, so the same
recipe and seed give the same stream every time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch

from dni_dist.config import TrainConfig
from dni_dist.data import BatchStream, load_dataset

log = logging.getLogger(__name__)

Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]


def training_batches(cfg: TrainConfig, *, first_step: int, prefix: str = "[block 0]") -> Batches:
    d = cfg.data
    ds = load_dataset(d.name, data_dir=d.data_dir, download=d.download, mirror=d.mirror, subset=d.subset)
    seed = cfg.run.seed if first_step == 0 else cfg.run.seed + first_step
    log.info("%s feeding steps %d..%d from %s", prefix, first_step, cfg.run.steps - 1, ds.source)
    return iter(BatchStream(ds.x_train, ds.labels_train, ds.num_classes, d.batch_size, seed))
