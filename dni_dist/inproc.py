"""`dni-launch --backend inproc`: the same config trained in this process (the reference
schedule), written out like a ZeroMQ run: per-block checkpoints (one complete, manifested checkpoint of
the last step) and stats, then summary.json.

    summary = launch_inproc(cfg, out=Path("runs/ref"), blocks=4, threads=1)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from dni_dist import checkpoint
from dni_dist.config import TrainConfig
from dni_dist.manifest import write_manifest
from dni_dist.stats import BlockStats
from dni_dist.summary import summarize
from dni_dist.topology import assign_blocks
from dni_dist.trainer import train


def launch_inproc(cfg: TrainConfig, *, out: Path, blocks: int, threads: int = 0) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    start = time.monotonic()
    result = train(cfg)
    wall = time.monotonic() - start
    stats = []
    (out / "blocks").mkdir(exist_ok=True)
    for k, (first, last) in enumerate(assign_blocks(result.topology.num_stages, blocks)):
        stages = result.stages[first : last + 1]
        checkpoint.save_block(
            out,
            checkpoint.BlockState(
                block=k,
                first=first,
                last=last,
                step=cfg.run.steps - 1,
                stages=[s.state_dict() for s in stages],
                steps=cfg.run.steps,
                samples=result.samples,
                restarts=0,
                config=json.dumps(cfg.to_dict()),
            ),
        )
        entry = BlockStats.from_stages(
            stages, block=k, first=first, last=last, status="finished", steps=cfg.run.steps, samples=result.samples,
            last_step=cfg.run.steps - 1, wall_seconds=result.wall_seconds, compute_seconds=result.wall_seconds,
        ).to_dict()  # fmt: skip
        (out / "blocks" / f"block{k}.json").write_text(json.dumps(entry, indent=2))
        stats.append(entry)
    write_manifest(out, step=cfg.run.steps - 1, blocks=blocks, config=cfg.to_dict(), keep=cfg.runtime.keep_checkpoints)
    return summarize(cfg, stats, out=out, blocks=blocks, backend="inproc", wall_seconds=wall, status="finished",
                     run_id="inproc")  # fmt: skip
