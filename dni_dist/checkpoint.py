"""Per-block checkpoints: one schema (BlockState), written atomically (temp file + fsync + rename).

    save_block(out, BlockState(block=1, first=2, last=3, stages=[s.state_dict() for s in stages], ...))
    state = load_block(out, 1)     # BlockState; CheckpointError names the file when it is unusable
    raw = load(block_path(out, 1)) # the plain dict (torch.load(weights_only=True): no pickle)

The ZeroMQ worker and the in-process backend write the same BlockState, so summaries, resumes and
the analyses read either alike.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 2  # 2: a stage's weights are stored under 'module' (was 'block')


class CheckpointError(RuntimeError):
    pass


@dataclass(kw_only=True)
class BlockState:
    block: int
    first: int  # first and last stage index the block hosts
    last: int
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


def block_path(out_dir: str | Path, block: int) -> Path:
    return Path(out_dir) / "checkpoints" / f"block{block}.pt"


def save(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT_VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
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
    path = block_path(out_dir, state.block)
    save(path, dataclasses.asdict(state))
    return path


def load_block(out_dir: str | Path, block: int) -> BlockState:
    path = block_path(out_dir, block)
    return BlockState.from_dict(load(path), path)
