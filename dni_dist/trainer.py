"""The in-process trainer: every stage in one process, connected by in-memory channels.

    python -m dni_dist train --recipe launch/mnist-sg.toml --steps 300

    from dni_dist import train, load_recipe
    result = train(load_recipe("launch/mnist-sg.toml"))
    print(result.test_accuracy, result.locking())

This is the reference schedule ("lockstep"): step t's batch enters stage 0 and every message it
causes is delivered before step t+1 begins. It is deterministic for a seed, and the ZeroMQ
runtime in lockstep mode must reproduce it exactly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from dni_dist.block import Block
from dni_dist.config import TrainConfig
from dni_dist.data import BatchStream, Dataset, load_dataset
from dni_dist.locking import locking
from dni_dist.losses import accuracy, get_loss
from dni_dist.models import assemble
from dni_dist.stage import Stage, StageStats
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
        """Per interface, Table 1's columns as measured from what the stage above it waited for
        (dni_dist.locking)."""
        return [locking(stage.stats.waits) for stage in self.stages[:-1]]

    def summary(self) -> dict[str, object]:
        return {
            "dataset": self.dataset_source,
            "steps": len(self.train_loss),
            "methods": list(self.topology.methods),
            "cuts": list(self.topology.cuts),
            "wall_seconds": self.wall_seconds,
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


def train(
    cfg: TrainConfig,
    *,
    dataset: Dataset | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train `cfg` in one process; `progress(step, loss)` is called after every step."""
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    ds = dataset or load_dataset(
        cfg.data.name,
        data_dir=cfg.data.data_dir,
        download=cfg.data.download,
        mirror=cfg.data.mirror,
        subset=cfg.data.subset,
    )
    topo = Topology.from_config(cfg, input_dim=ds.input_dim, num_classes=ds.num_classes)
    stages = topo.build_stages(cfg, input_dim=ds.input_dim, num_classes=ds.num_classes)
    pipeline = Block(topo, stages, first=0)
    model = assemble([s.module for s in stages])  # type: ignore[misc]
    batches = iter(BatchStream(ds.x_train, ds.labels_train, ds.num_classes, cfg.data.batch_size, cfg.run.seed))
    result = TrainResult(cfg, model, stages, topo, ds.source, [], [])
    y_test = ds.y_test
    log.info(
        "training %s on %s: %d stages, interfaces %s",
        cfg.model.kind,
        ds.source,
        topo.num_stages,
        ", ".join(f"after layer {c}: {m}" for c, m in zip(topo.cuts, topo.methods)) or "none (plain backprop)",
    )
    start = time.perf_counter()
    last = stages[-1].stats.train
    for step in range(cfg.run.steps):
        x, y = next(batches)
        pipeline.feed(step, x, y)
        result.samples += x.shape[0]
        _, loss, acc = last[-1]
        result.train_loss.append(loss)
        result.train_accuracy.append(acc)
        if cfg.run.eval_every and (step + 1) % cfg.run.eval_every == 0 and step + 1 < cfg.run.steps:
            point = evaluate(model, ds.x_test, y_test, cfg.model.loss)
            result.evals.append(EvalPoint(step + 1, point.loss, point.accuracy))
        if progress is not None:
            progress(step, loss)
    result.wall_seconds = time.perf_counter() - start
    point = evaluate(model, ds.x_test, y_test, cfg.model.loss)
    result.evals.append(EvalPoint(cfg.run.steps, point.loss, point.accuracy))
    return result
