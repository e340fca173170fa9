"""Per-block checkpoints: one schema (BlockState), written atomically (temp file + fsync + rename,
then the directory fsynced), refused when any tensor is not finite.

    path = save_block(out, BlockState(block=1, first=2, last=3, step=199, stages=[...], ...))
    # -> <out>/checkpoints/step-000000199/block1.pt (one directory per consistent cut, see manifest.py)
    state = load_block(path)       # BlockState; CheckpointError names the file when it is unusable
    raw = load(path)               # the plain dict (torch.load(weights_only=True): no pickle)

Every block saves the same `step` (a checkpoint marker flows down the pipeline), and the block that
saves last writes `manifest.json` into that directory (dni_dist/manifest.py): only a directory
with a manifest is a complete checkpoint. The ZeroMQ worker and the in-process backend write the
same BlockState, so summaries, resumes and the analyses read either alike.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 3  # 3: one directory per step (`step` added); 2: a stage's weights under 'module'
GENERATION_PREFIX = "step-"


class CheckpointError(RuntimeError):
    pass


@dataclass(kw_only=True)
class BlockState:
    block: int
    first: int  # first and last stage index the block hosts
    last: int
    step: int  # the consistent cut: the state after the pipeline's step `step` (-1: before any)
    stages: list[dict[str, Any]]  # Stage.state_dict() of each, in order
    steps: int  # activations (block 0: batches) the block had forwarded
    samples: int
    restarts: int
    config: str  # the run's TrainConfig as JSON

    @classmethod
    def from_dict(cls, state: dict[str, Any], where: Path) -> BlockState:
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in state]
        if missing:
            raise CheckpointError(f"{where} lacks {', '.join(missing)}; it was not written by this version")
        return cls(**{n: state[n] for n in names})


def checkpoints_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def generation_dir(out_dir: str | Path, step: int) -> Path:
    """The directory of the consistent checkpoint taken after `step`."""
    return checkpoints_dir(out_dir) / f"{GENERATION_PREFIX}{step:09d}"


def block_path(out_dir: str | Path, block: int, step: int) -> Path:
    return generation_dir(out_dir, step) / f"block{block}.pt"


def generation_step(path: Path) -> int | None:
    """The step of a generation directory's name, or None if it is not one."""
    name = path.name
    if not name.startswith(GENERATION_PREFIX) or not name[len(GENERATION_PREFIX) :].isdigit():
        return None
    return int(name[len(GENERATION_PREFIX) :])


def generations(out_dir: str | Path) -> list[tuple[int, Path]]:
    """Every generation directory, oldest first."""
    root = checkpoints_dir(out_dir)
    if not root.is_dir():
        return []
    found = [(step, p) for p in root.iterdir() if p.is_dir() and (step := generation_step(p)) is not None]
    return sorted(found)


def latest_block_file(out_dir: str | Path, block: int) -> Path | None:
    """The newest checkpoint file this block wrote, complete generation or not (a lone restart)."""
    for _, d in reversed(generations(out_dir)):
        if (d / f"block{block}.pt").is_file():
            return d / f"block{block}.pt"
    return None


def non_finite(state: Any, where: str = "") -> str | None:
    """The key path of the first tensor in `state` holding NaN or infinity, if any."""
    if isinstance(state, torch.Tensor):
        return where or "<tensor>" if state.is_floating_point() and not bool(torch.isfinite(state).all()) else None
    if isinstance(state, dict):
        items: Any = state.items()
    elif isinstance(state, (list, tuple)):
        items = enumerate(state)
    else:
        return None
    for key, value in items:
        if (found := non_finite(value, f"{where}.{key}" if where else str(key))) is not None:
            return found
    return None


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in `path` durable (POSIX: fsync the directory itself)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(path: Path, state: dict[str, Any]) -> None:
    """Write `state` atomically and durably; refuse (CheckpointError) a non-finite tensor."""
    bad = non_finite(state)
    if bad is not None:
        raise CheckpointError(f"refusing to write {path}: {bad} holds NaN or infinity (the previous checkpoint stays)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT_VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable checkpoint: {e}") from e
    if state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {state.get('format')!r}, expected {FORMAT_VERSION}")
    return state


def save_block(out_dir: str | Path, state: BlockState) -> Path:
    path = block_path(out_dir, state.block, state.step)
    save(path, dataclasses.asdict(state))
    return path


def load_block(path: Path) -> BlockState:
    return BlockState.from_dict(load(path), path)
