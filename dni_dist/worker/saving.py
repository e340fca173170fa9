"""A worker's checkpoints: where it resumes from, saving a consistent cut, completing a manifest.

    saver = Saver(cfg, wcfg, first=2, last=3)
    state = saver.restore(stages, attempt=0)   # --resume: the newest complete manifest's file (checked)
    state = saver.restore(stages, attempt=1)   # a lone restart: this block's newest file, any generation
    saver.checkpoint(rdv, 199, stages, steps=200, samples=25600, restarts=0)
    # -> <out>/checkpoints/step-000000199/block<k>.pt; the block that saves last writes manifest.json

A whole run resumes only from a complete checkpoint (dni_dist.manifest.check_resume: every block
file there and unchanged, one step, a compatible config). A block restarted alone
(`dni-launch --max-restarts`) rejoins neighbours that kept training, so it takes its own newest
file, complete generation or not; the config stored in it must still match.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from dni_dist import checkpoint, manifest
from dni_dist.config import TrainConfig
from dni_dist.rendezvous import Rendezvous
from dni_dist.snapshots import Snapshots
from dni_dist.stage import Stage
from dni_dist.worker.options import WorkerConfig

log = logging.getLogger(__name__)


class Saver:
    def __init__(self, cfg: TrainConfig, wcfg: WorkerConfig, *, first: int, last: int) -> None:
        self.cfg, self.wcfg, self.k = cfg, wcfg, wcfg.block
        self.first, self.last = first, last
        self.prefix = f"[block {self.k}]"
        self.loaded_from: Path | None = None
        self.saved: list[int] = []  # steps this incarnation checkpointed
        self.snapshots = Snapshots(cfg.runtime.snapshot_every)  # in-memory weights for a learning curve

    def resume(self, *, attempt: int) -> checkpoint.BlockState | None:
        """The state to start from, or None (fresh weights)."""
        if attempt == 0 and not self.wcfg.resume:
            return None
        if attempt == 0:
            man = manifest.check_resume(self.wcfg.out, self.cfg, blocks=self.wcfg.blocks, only_block=self.k)
            if man is None:
                log.info("%s --resume: no checkpoint under %s yet; starting afresh", self.prefix, self.wcfg.out)
                return None
            path = man.path_of(self.k)
            state = checkpoint.load_block(path)
            if state.step != man.step:
                raise checkpoint.CheckpointError(
                    f"{path} holds step {state.step}, its manifest step {man.step}: mixed steps; restore the file"
                )
        else:
            found = checkpoint.latest_block_file(self.wcfg.out, self.k)
            if found is None:
                log.warning("%s restarted (attempt %d) with no checkpoint of its own under %s: fresh weights "
                            "(use --checkpoint-every to keep restarts from losing training)", self.prefix, attempt,
                            self.wcfg.out)  # fmt: skip
                return None
            path, state = found, checkpoint.load_block(found)
            changed = manifest.config_diff(json.loads(state.config), self.cfg.to_dict())
            if changed:
                raise checkpoint.CheckpointError(f"{path}: the config differs from this run's in "
                                                 f"{', '.join(f for f, _, _ in changed)}")  # fmt: skip
        if (state.first, state.last) != (self.first, self.last):
            raise checkpoint.CheckpointError(
                f"{path} holds stages {state.first}-{state.last}, this block has {self.first}-{self.last}"
            )
        self.loaded_from = path
        return state

    def restore(self, stages: list[Stage], *, attempt: int) -> checkpoint.BlockState | None:
        """Load the state to start from into `stages` (see `resume`); None: fresh weights."""
        state = self.resume(attempt=attempt)
        if state is None:
            return None
        for stage, s in zip(stages, state.stages):
            stage.load_state_dict(s)
        log.info("%s resumed from %s at step %d (restart %d)", self.prefix, self.loaded_from, state.step,
                 state.restarts + 1)  # fmt: skip
        return state

    def checkpoint(self, rdv: Rendezvous, step: int, stages: list[Stage], *, steps: int, samples: int,
                   restarts: int) -> None:  # fmt: skip
        """Save the state after `step` and count it towards that step's manifest."""
        if self.save(step, [s.state_dict() for s in stages], steps=steps, samples=samples, restarts=restarts):
            self.complete(rdv, step)

    def save(self, step: int, stages: list[dict[str, Any]], *, steps: int, samples: int, restarts: int) -> Path | None:
        """Write this block's state after `step`; None (and an error in the log) when refused,
        or when that step's checkpoint is complete already (a block restarted at the end)."""
        if step in self.saved:  # a stop's cut can fall on a periodic checkpoint's step: count it once
            return None
        if (checkpoint.generation_dir(self.wcfg.out, step) / manifest.MANIFEST).is_file():
            log.info("%s the checkpoint of step %d is complete already; not rewriting it", self.prefix, step)
            return None
        state = checkpoint.BlockState(
            block=self.k, first=self.first, last=self.last, step=step, stages=stages, steps=steps, samples=samples,
            restarts=restarts, config=json.dumps(self.cfg.to_dict()),
        )  # fmt: skip
        try:
            path = checkpoint.save_block(self.wcfg.out, state)
        except checkpoint.CheckpointError as e:
            log.error("%s %s", self.prefix, e)
            return None
        self.saved.append(step)
        return path

    def complete(self, rdv: Rendezvous, step: int) -> None:
        """Count this block's save of `step`; the last of all blocks writes the manifest."""
        if rdv.add(f"checkpoint/{step}", 1) != self.wcfg.blocks:
            return
        try:
            keep = self.cfg.runtime.keep_checkpoints
            path = manifest.write_manifest(self.wcfg.out, step=step, blocks=self.wcfg.blocks,
                                           config=self.cfg.to_dict(), keep=keep)  # fmt: skip
        except (checkpoint.CheckpointError, OSError) as e:
            log.error("%s checkpoint of step %d not completed: %s", self.prefix, step, e)
            return
        log.info("%s checkpoint of step %d complete: %s", self.prefix, step, path)
