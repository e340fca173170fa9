"""Learning curves of a ZeroMQ run: every block keeps its weights every K steps, and the model of
step t is evaluated afterwards, at the wall-clock time the last block reached step t.

    dni-launch --blocks 2 --gpus cpu --steps 300 --set runtime.snapshot_every=25 --out runs/x
    python -c "from pathlib import Path; from dni_dist.snapshots import learning_curve; \\
        print(learning_curve(Path('runs/x')))"   # [CurvePoint(step=24, seconds=0.61, accuracy=0.71), ...]

The blocks of a free-running run are at different steps at any moment; "the model of step t" is
every block's weights right after it processed step t, which exists, complete, once the last
block has processed t: that is the time a curve point gets (seconds since block 0 finished its
first step, on the machine's wall clock; blocks on other machines need synchronised clocks). Taking a
snapshot copies the block's module state in memory (no optimizer state, nothing written until
the end), so the timing of the run is barely touched; the copies cost memory, about
(steps / K) x the block's weights: keep K coarse for big models.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

SNAPSHOT_DIR = "snapshots"


@dataclass(frozen=True)
class CurvePoint:
    step: int
    seconds: float  # since block 0 finished its first step
    accuracy: float
    loss: float


class Snapshots:
    """One block's weights every `every` steps (0: none), in memory until `write`."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.started: float | None = None  # time.time() of this block's first step
        self.steps: list[int] = []
        self.times: list[float] = []
        self.states: list[list[dict[str, torch.Tensor]]] = []

    def take(self, step: int, modules: list[nn.Module]) -> None:
        """After this block processed `step`: keep its modules' state if `step` is on the grid."""
        if not self.every:
            return
        now = time.time()
        self.started = self.started if self.started is not None else now
        if (step + 1) % self.every:
            return
        self.steps.append(step)
        self.times.append(now)
        self.states.append([{k: v.detach().to("cpu", copy=True) for k, v in m.state_dict().items()} for m in modules])

    def write(self, out: Path, block: int) -> Path | None:
        """<out>/snapshots/block<k>.pt (atomic); None when nothing was taken."""
        if not self.every or not self.steps:
            return None
        folder = out / SNAPSHOT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"block{block}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save({"block": block, "started": self.started, "steps": self.steps, "times": self.times,
                    "states": self.states}, tmp)  # fmt: skip
        os.replace(tmp, path)
        return path


def _load(path: Path) -> dict[str, Any]:
    raw: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return raw


def learning_curve(out: Path) -> list[CurvePoint]:
    """Test accuracy of the run under `out` at every step every block kept (needs the run's
    summary.json for its config and block count)."""
    from dni_dist.data import load_dataset
    from dni_dist.models import assemble
    from dni_dist.recipes import config_from_dict
    from dni_dist.topology import Topology, assign_blocks
    from dni_dist.trainer import evaluate

    summary = json.loads((out / "summary.json").read_text())
    cfg = config_from_dict(summary["config"])
    blocks = len(summary["blocks"])
    files = [out / SNAPSHOT_DIR / f"block{k}.pt" for k in range(blocks)]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise FileNotFoundError(f"no snapshots {', '.join(missing)}: run with --set runtime.snapshot_every=K")
    snaps = [_load(f) for f in files]
    ds = load_dataset(cfg.data.name, data_dir=cfg.data.data_dir, download=cfg.data.download,
                      mirror=cfg.data.mirror, subset=cfg.data.subset)  # fmt: skip
    topo = Topology.from_config(cfg, input_dim=ds.input_dim, num_classes=ds.num_classes)
    stages = topo.build_stages(cfg, input_dim=ds.input_dim, num_classes=ds.num_classes)
    ranges = assign_blocks(topo.num_stages, blocks)
    model = assemble([s.module for s in stages])  # type: ignore[misc]
    start = snaps[0]["started"]
    common = sorted(set.intersection(*(set(s["steps"]) for s in snaps)))
    curve: list[CurvePoint] = []
    for step in common:
        reached = 0.0
        for (first, last), snap in zip(ranges, snaps):
            i = snap["steps"].index(step)
            reached = max(reached, snap["times"][i])
            for stage, state in zip(stages[first : last + 1], snap["states"][i]):
                stage.module.load_state_dict(state)
        point = evaluate(model, ds.x_test, ds.y_test, cfg.model.loss)
        curve.append(CurvePoint(step=step, seconds=reached - start, accuracy=point.accuracy, loss=point.loss))
    return curve


def time_to(curve: list[CurvePoint], accuracy: float) -> float | None:
    """Seconds until the curve first reaches `accuracy` (None: never)."""
    return next((p.seconds for p in curve if p.accuracy >= accuracy), None)
