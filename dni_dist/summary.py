"""summary.json: the run's outcome, from every block's stats and checkpoint.

    summary = summarize(cfg, stats, out=Path("runs/x"), blocks=4, backend="zmq", wall_seconds=31.0,
                        status="finished", run_id="a1b2")   # also writes runs/x/summary.json

The model is assembled from the newest complete checkpoint (dni_dist.manifest) and evaluated on
the test split, so the summary reports what was saved, whichever backend trained it. Written by the launcher, or by
block 0 when there is no launcher (torchrun, containers).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from dni_dist import checkpoint, manifest
from dni_dist.config import TrainConfig
from dni_dist.data import load_dataset
from dni_dist.locking import locking
from dni_dist.models import assemble
from dni_dist.rendezvous import Rendezvous
from dni_dist.topology import Topology, assign_blocks
from dni_dist.trainer import evaluate

log = logging.getLogger(__name__)


def evaluate_checkpoints(cfg: TrainConfig, out: Path, blocks: int) -> tuple[float, float, str, int]:
    """Assemble the model from the newest complete checkpoint; (test loss, test accuracy, data
    source, the checkpoint's step)."""
    man = manifest.latest(out)
    if man is None or man.blocks != blocks:
        raise checkpoint.CheckpointError(f"no complete checkpoint of {blocks} blocks under {out / 'checkpoints'}")
    ds = load_dataset(cfg.data.name, data_dir=cfg.data.data_dir, download=cfg.data.download,
                      mirror=cfg.data.mirror, subset=cfg.data.subset)  # fmt: skip
    topo = Topology.from_config(cfg, input_dim=ds.input_dim, num_classes=ds.num_classes)
    stages = topo.build_stages(cfg, input_dim=ds.input_dim, num_classes=ds.num_classes)
    for k, (first, last) in enumerate(assign_blocks(topo.num_stages, blocks)):
        state = checkpoint.load_block(man.path_of(k))
        for stage, s in zip(stages[first : last + 1], state.stages):
            stage.load_state_dict(s)
    point = evaluate(assemble([s.module for s in stages]), ds.x_test, ds.y_test, cfg.model.loss)  # type: ignore[misc]
    return point.loss, point.accuracy, ds.source, man.step


def summarize(
    cfg: TrainConfig,
    stats: list[dict[str, Any]],
    *,
    out: Path,
    blocks: int,
    backend: str,
    wall_seconds: float,
    status: str,
    run_id: str,
    restarts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Evaluate the checkpoints, write <out>/summary.json and return it. `restarts`: the blocks
    the launcher restarted, one entry per restart with its cause."""
    test_loss, test_acc, source, ckpt_step = evaluate_checkpoints(cfg, out, blocks)
    last = stats[-1]
    train_seconds = max(s["wall_seconds"] for s in stats)
    summary = {
        "backend": backend,
        "lockstep": cfg.runtime.lockstep,
        "run_id": run_id,
        "status": status,
        "dataset": source,
        "wall_seconds": wall_seconds,
        "train_seconds": train_seconds,
        "samples_per_second": last["samples"] / max(train_seconds, 1e-9),
        "steps": last["steps"],
        "final": {
            "test_loss": test_loss,
            "test_accuracy": test_acc,
            "train_loss": last["train_loss"],
            "checkpoint_step": ckpt_step,
        },
        "restarts": restarts or [],
        "blocks": stats,
        "locking": [
            {"stage": i["stage"], "method": i["method"], **locking(i["stage"], i["dependencies"])}
            for s in stats
            for i in s["interfaces"]
        ],
        "runtime": cfg.to_dict()["runtime"],
        "config": cfg.to_dict(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def summary_after_exit(
    cfg: TrainConfig,
    rdv: Rendezvous,
    *,
    out: Path,
    blocks: int,
    status: str,
    started: float,
    run_id: str,
    wait_s: float | None = None,
) -> dict[str, Any] | None:
    """Without a launcher (torchrun, containers), block 0 writes summary.json once every block has
    published its exit (waiting `wait_s`, by default drain_timeout_s + 60 s; RendezvousError past
    it). It reads the other blocks' stats and checkpoints from `out`, so `out` must be shared (one
    machine, or a shared volume); None (and a warning) when a block's stats are missing."""
    wait = cfg.runtime.drain_timeout_s + 60 if wait_s is None else wait_s
    statuses = [status] + [rdv.lookup(f"block{b}/exit", timeout_s=wait) for b in range(1, blocks)]
    stats = []
    for b in range(blocks):
        path = out / "blocks" / f"block{b}.json"
        if not path.is_file():
            log.warning("[block 0] no stats from block %d at %s (is --out shared?); summary.json not written", b, path)
            return None
        stats.append(json.loads(path.read_text()))
    summary = summarize(
        cfg, stats, out=out, blocks=blocks, backend="zmq", wall_seconds=time.monotonic() - started,
        status="finished" if all(s == "finished" for s in statuses) else "stopped", run_id=run_id,
    )  # fmt: skip
    log.info("[block 0] wrote %s: test accuracy %.4f", out / "summary.json", summary["final"]["test_accuracy"])
    return summary
