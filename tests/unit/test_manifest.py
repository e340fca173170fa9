"""Consistent checkpoints: complete only with a manifest, pruned to N generations, never NaN, and
--resume refuses (naming the file or the field) what does not fit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from dni_dist import checkpoint, config_from_dict, manifest
from dni_dist.checkpoint import BlockState, CheckpointError

TREE = {"model": {"depth": 2, "width": 8}, "split": {"placement": "even", "stages": 2}, "run": {"steps": 100},
        "data": {"name": "mnist", "subset": True}}  # fmt: skip
CFG = config_from_dict(TREE)


def state(block: int, step: int, weight: float = 1.0) -> BlockState:
    return BlockState(block=block, first=block, last=block, step=step, stages=[{"w": torch.full((2,), weight)}],
                      steps=step + 1, samples=8 * (step + 1), restarts=0, config=json.dumps(CFG.to_dict()))  # fmt: skip


def take(out: Path, step: int, blocks: int = 2, keep: int = 3) -> None:
    for k in range(blocks):
        checkpoint.save_block(out, state(k, step))
    manifest.write_manifest(out, step=step, blocks=blocks, config=CFG.to_dict(), keep=keep)


def test_a_complete_checkpoint_round_trips_and_only_n_generations_stay(tmp_path: Path) -> None:
    assert manifest.check_resume(tmp_path, CFG, blocks=2) is None  # nothing there: a fresh start
    for step in (9, 19, 29, 39):
        take(tmp_path, step, keep=2)
    checkpoint.save_block(tmp_path, state(0, 49))  # in progress: block 1 has not saved step 49 yet
    assert [s for s, _ in checkpoint.generations(tmp_path)] == [29, 39, 49]
    man = manifest.check_resume(tmp_path, CFG, blocks=2)
    assert man is not None and man.step == 39 and [f["block"] for f in man.files] == [0, 1]
    loaded = checkpoint.load_block(man.path_of(1))
    assert loaded.step == 39 and torch.equal(loaded.stages[0]["w"], torch.ones(2))
    assert checkpoint.latest_block_file(tmp_path, 0) == checkpoint.block_path(tmp_path, 0, 49)  # a lone restart
    assert manifest.discard_after(tmp_path, 39) == [checkpoint.generation_dir(tmp_path, 49)]


def test_non_finite_state_is_refused_and_the_previous_checkpoint_stays(tmp_path: Path) -> None:
    take(tmp_path, 9)
    bad = state(0, 19, weight=float("nan"))
    with pytest.raises(CheckpointError, match=r"stages\.0\.w holds NaN"):
        checkpoint.save_block(tmp_path, bad)
    assert not checkpoint.block_path(tmp_path, 0, 19).exists()
    assert not list(tmp_path.rglob("*.tmp"))  # no half-written file either
    man = manifest.latest(tmp_path)
    assert man is not None and man.step == 9


def test_a_missing_block_file_is_named(tmp_path: Path) -> None:
    take(tmp_path, 9)
    gone = checkpoint.block_path(tmp_path, 1, 9)
    gone.unlink()
    with pytest.raises(CheckpointError, match=re.escape(f"{gone} is missing")):
        manifest.check_resume(tmp_path, CFG, blocks=2)


def test_a_changed_or_swapped_file_is_refused(tmp_path: Path) -> None:
    take(tmp_path, 9)
    take(tmp_path, 19)
    older, newer = checkpoint.block_path(tmp_path, 0, 9), checkpoint.block_path(tmp_path, 0, 19)
    newer.write_bytes(older.read_bytes())  # a file of another step (mixed steps)
    with pytest.raises(CheckpointError, match=re.escape(f"{newer} differs from what")):
        manifest.check_resume(tmp_path, CFG, blocks=2)


def test_a_changed_model_width_is_named_and_run_steps_may_change(tmp_path: Path) -> None:
    take(tmp_path, 9)
    wider = config_from_dict({**TREE, "model": {"depth": 2, "width": 16}})
    with pytest.raises(CheckpointError, match=r"model\.width: checkpoint 8, now 16"):
        manifest.check_resume(tmp_path, wider, blocks=2)
    longer = config_from_dict({**TREE, "run": {"steps": 500}, "runtime": {"max_inflight": 2}})
    assert manifest.check_resume(tmp_path, longer, blocks=2) is not None
    with pytest.raises(CheckpointError, match="written by 2 blocks, this run has 3"):
        manifest.check_resume(tmp_path, CFG, blocks=3)


def test_without_a_complete_checkpoint_resume_refuses_and_names_what_is_there(tmp_path: Path) -> None:
    checkpoint.save_block(tmp_path, state(0, 9))  # block 1 died before it saved: no manifest
    with pytest.raises(CheckpointError, match=r"no complete checkpoint .*has block0\.pt and no manifest\.json"):
        manifest.check_resume(tmp_path, CFG, blocks=2)


def test_a_manifest_needs_every_file(tmp_path: Path) -> None:
    checkpoint.save_block(tmp_path, state(0, 9))
    with pytest.raises(CheckpointError, match=r"block1\.pt is missing"):
        manifest.write_manifest(tmp_path, step=9, blocks=2, config=CFG.to_dict(), keep=3)
