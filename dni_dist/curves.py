"""Learning curves from weight snapshots: the test accuracy of the model of step t, at the
wall-clock time the last block reached step t (dni_dist.snapshots keeps the weights).

    dni-launch --blocks 2 --gpus cpu --steps 300 --set runtime.snapshot_every=25 --out runs/x
    python -c "from pathlib import Path; from dni_dist.curves import learning_curve; \\
        print(learning_curve(Path('runs/x')))"   # [CurvePoint(step=24, seconds=0.61, accuracy=0.71), ...]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dni_dist.data import load_dataset
from dni_dist.models import assemble
from dni_dist.recipes import config_from_dict
from dni_dist.snapshots import SNAPSHOT_DIR
from dni_dist.topology import Topology, assign_blocks
from dni_dist.trainer import evaluate


@dataclass(frozen=True)
class CurvePoint:
    step: int
    seconds: float  # since block 0 finished its first step
    accuracy: float
    loss: float



def _load(path: Path) -> dict[str, Any]:
    raw: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return raw


def learning_curve(out: Path) -> list[CurvePoint]:
    """Test accuracy of the run under `out` at every step every block kept (needs the run's
    summary.json for its config and block count)."""
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
