"""The in-process trainer: every stage in one process, connected by in-memory channels.

    python -m dni_dist train --recipe launch/mnist-sg.toml --steps 300

    from dni_dist import train, load_recipe
    result = train(load_recipe("launch/mnist-sg.toml"))
    print(result.test_accuracy, result.locking())
    result = train(load_recipe("launch/fashion-cnn.toml"), stages=[block1, block2, head])  # your own modules

This is the reference schedule ("lockstep"): step t's batch enters stage 0 and every message it
causes is delivered before step t+1 begins. It is deterministic for a seed, and the ZeroMQ
runtime in lockstep mode must reproduce it exactly.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dni_dist.block import Block
from dni_dist.config import GIVEN_STAGES, ModelConfig, SplitConfig, TrainConfig
from dni_dist.data import BatchStream, Dataset, load_dataset
from dni_dist.locking import locking
from dni_dist.losses import accuracy, get_loss
from dni_dist.models import assemble
from dni_dist.recipes import config_from_dict
from dni_dist.snapshots import Snapshots
from dni_dist.stage import Stage
from dni_dist.stage_stats import StageStats
from dni_dist.topology import Topology

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalPoint:
    step: int
    loss: float
    accuracy: float


@dataclass
class TrainResult:
    config: TrainConfig
    model: nn.Sequential  # the trained stages assembled into one module
    stages: list[Stage]
    topology: Topology
    dataset_source: str
    train_loss: list[float]  # per step, at the last stage
    train_accuracy: list[float]
    evals: list[EvalPoint] = field(default_factory=list)
    samples: int = 0  # training examples seen
    wall_seconds: float = 0.0
    eval_seconds: float = 0.0  # of wall_seconds, spent on the run.eval_every test evaluations
    snapshots: Snapshots | None = None  # the weights every runtime.snapshot_every steps (write(out, 0))

    @property
    def test_loss(self) -> float:
        return self.evals[-1].loss

    @property
    def test_accuracy(self) -> float:
        return self.evals[-1].accuracy

    @property
    def stage_stats(self) -> list[StageStats]:
        return [s.stats for s in self.stages]

    def locking(self) -> list[dict[str, bool]]:
        """Per interface, Table 1's columns derived from the messages the updates of the stage
        below it depended on (dni_dist.locking)."""
        return [locking(stage.spec.index, stage.stats.dependencies) for stage in self.stages[:-1]]

    def summary(self) -> dict[str, object]:
        return {
            "dataset": self.dataset_source,
            "steps": len(self.train_loss),
            "methods": list(self.topology.methods),
            "cuts": list(self.topology.cuts),
            "wall_seconds": self.wall_seconds,
            "eval_seconds": self.eval_seconds,
            "evals": [{"step": e.step, "test_loss": e.loss, "test_accuracy": e.accuracy} for e in self.evals],
            "final": {
                "train_loss": self.train_loss[-1],
                "test_loss": self.test_loss,
                "test_accuracy": self.test_accuracy,
            },
            "stages": [
                {"updates": s.updates, "waits": dict(s.waits), "sg_targets": s.sg.total} for s in self.stage_stats
            ],
            "locking": self.locking(),
        }


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str, batch: int = 1000) -> EvalPoint:
    """Loss and accuracy of `model` (in eval mode) on (x, one-hot y)."""
    fn = get_loss(loss)
    was = model.training
    model.eval()
    total_loss, correct = 0.0, 0.0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            out = model(x[i : i + batch])
            n = out.shape[0]
            total_loss += float(fn(out, y[i : i + batch])) * n
            correct += accuracy(out, y[i : i + batch]) * n
    model.train(was)
    return EvalPoint(step=-1, loss=total_loss / x.shape[0], accuracy=correct / x.shape[0])


def given_stages_config(cfg: TrainConfig, num_stages: int) -> TrainConfig:
    """`cfg` for a model handed in as `num_stages` stage modules: one stage each."""
    model = ModelConfig(factory=GIVEN_STAGES, layers=num_stages, loss=cfg.model.loss)
    split = SplitConfig(placement="every") if num_stages > 1 else SplitConfig(placement="none")
    return dataclasses.replace(cfg, model=model, split=split)


def train(
    cfg: TrainConfig | None = None,
    *,
    stages: Sequence[nn.Module] | None = None,
    overrides: Mapping[str, Any] | None = None,
    dataset: Dataset | None = None,
    progress: Callable[[int, float], None] | None = None,
    monitor: Callable[[int, Sequence[Stage]], None] | None = None,
) -> TrainResult:
    """Train `cfg` (default: the built-in defaults, plus `overrides` such as {"credit.method": "bp"})
    in one process; `progress(step, loss)` is called after every step, and so is
    `monitor(step, stages)` (for analyses that read the live stages and SG modules; it must not
    change them).

    `stages`: your own stage modules, trained in place instead of the config's model (its
    [model] and [split] are then unused, except model.loss). Stage 0 gets N x C x H x W images
    from an image dataset, flat rows otherwise; the last stage must output the logits. To run
    them as one process per block, name a factory that builds them (`model.factory`)."""
    if cfg is None or overrides:
        cfg = config_from_dict(cfg.to_dict() if cfg is not None else {}, overrides)
    if stages is not None:
        if not stages or not all(isinstance(m, nn.Module) for m in stages):
            raise TypeError("train(stages=...) takes a non-empty list of torch.nn.Module, one per stage")
        cfg = given_stages_config(cfg, len(stages))
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    ds = dataset or load_dataset(
        cfg.data.name,
        data_dir=cfg.data.data_dir,
        download=cfg.data.download,
        mirror=cfg.data.mirror,
        subset=cfg.data.subset,
    )
    dim, classes, image = ds.input_dim, ds.num_classes, ds.image_shape
    topo = Topology.from_config(cfg, input_dim=dim, num_classes=classes, image_shape=image, layers=stages)
    built = topo.build_stages(cfg, input_dim=dim, num_classes=classes, image_shape=image, layers=stages)
    pipeline = Block(topo, built, first=0)
    model = assemble([s.module for s in built])  # type: ignore[misc]
    batches = iter(BatchStream(ds.x_train, ds.labels_train, ds.num_classes, cfg.data.batch_size, cfg.run.seed))
    result = TrainResult(cfg, model, built, topo, ds.source, [], [])
    y_test = ds.y_test
    log.info(
        "training %s on %s: %d stages, interfaces %s",
        cfg.model.kind,
        ds.source,
        topo.num_stages,
        ", ".join(f"after layer {c}: {m}" for c, m in zip(topo.cuts, topo.methods)) or "none (plain backprop)",
    )
    result.snapshots = Snapshots(cfg.runtime.snapshot_every)
    start = time.perf_counter()
    last = built[-1].stats.train
    for step in range(cfg.run.steps):
        x, y = next(batches)
        pipeline.feed(step, x, y)
        result.samples += x.shape[0]
        _, loss, acc = last[-1]
        result.train_loss.append(loss)
        result.train_accuracy.append(acc)
        if cfg.run.eval_every and (step + 1) % cfg.run.eval_every == 0 and step + 1 < cfg.run.steps:
            eval_start = time.perf_counter()
            point = evaluate(model, ds.x_test, y_test, cfg.model.loss)
            result.evals.append(EvalPoint(step + 1, point.loss, point.accuracy))
            result.eval_seconds += time.perf_counter() - eval_start
        result.snapshots.take(step, [s.module for s in built])
        if progress is not None:
            progress(step, loss)
        if monitor is not None:
            monitor(step, built)
    result.wall_seconds = time.perf_counter() - start
    point = evaluate(model, ds.x_test, y_test, cfg.model.loss)
    result.evals.append(EvalPoint(cfg.run.steps, point.loss, point.accuracy))
    return result
