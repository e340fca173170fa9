"""Per-block checkpoints, written atomically (temp file + fsync + rename).

save(path, state)       # never leaves a truncated file, even on a full disk or a kill
state = load(path)      # torch.load(weights_only=True): tensors and plain containers only
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 2  # 2: a stage's weights are stored under 'module' (was 'block')


class CheckpointError(RuntimeError):
    pass


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
