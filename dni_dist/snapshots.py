"""Weight snapshots for learning curves: every block keeps its weights every K steps
(`runtime.snapshot_every`), and dni_dist.curves evaluates the model of step t afterwards, at the
wall-clock time the last block reached step t.

    dni-launch --blocks 2 --gpus cpu --steps 300 --set runtime.snapshot_every=25 --out runs/x
    ls runs/x/snapshots     # block0.pt block1.pt: steps, wall times and module states

The blocks of a free-running run are at different steps at any moment; "the model of step t" is
every block's weights right after it processed step t, which exists, complete, once the last
block has processed t: that is the time a curve point gets (seconds since block 0 finished its
first step, on the machine's wall clock; blocks on other machines need synchronised clocks). Taking a
snapshot copies the block's module state in memory (no optimizer state, nothing written until
the end), so the timing of the run is barely touched; the copies cost memory, about
(steps / K) x the block's weights: keep K coarse for big models.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from torch import nn

SNAPSHOT_DIR = "snapshots"


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


