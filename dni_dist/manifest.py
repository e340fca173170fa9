"""Complete checkpoints: a manifest per consistent cut, resume checks, and how many are kept.

    write_manifest(out, step=199, blocks=4, config=cfg.to_dict(), keep=3)   # by the block saving last
    man = latest(out)                      # newest complete checkpoint (Manifest) or None
    man = check_resume(out, cfg, blocks=4) # what --resume loads; CheckpointError says what is wrong

A checkpoint of a run is one directory `<out>/checkpoints/step-<step>/` holding `block<k>.pt` of
every block, all taken after the same pipeline step (the checkpoint marker, docs/design.md §5),
and `manifest.json`, written (atomically, fsynced) only once every block has saved. It lists each
file with its size and SHA-256 and the run's config. Only directories with a manifest count;
`write_manifest` then deletes all but the newest `keep` complete ones (and incomplete ones older
than the newest complete one).

`check_resume` refuses, naming the file or field: a block file that is missing or differs from
the manifest, a file of another step, another number of blocks, or a config whose fields differ
from the checkpoint's, except those in `MAY_CHANGE` (how long and where a run trains, how it
schedules, not what it trains).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dni_dist.checkpoint import CheckpointError, fsync_dir, generation_dir, generations
from dni_dist.config import TrainConfig

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
MAY_CHANGE = (
    "run.steps", "run.eval_every", "run.device", "run.threads",
    "data.data_dir", "data.download", "data.mirror", "runtime.",
)  # fmt: skip
"""Config fields (a trailing dot: a whole section) a resumed run may set differently."""


@dataclass(frozen=True)
class Manifest:
    step: int
    blocks: int
    files: list[dict[str, Any]]  # per block: block, file (name in the directory), bytes, sha256
    config: dict[str, Any]
    directory: Path

    def path_of(self, block: int) -> Path:
        return self.directory / f"block{block}.pt"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(out: str | Path, *, step: int, blocks: int, config: dict[str, Any], keep: int) -> Path:
    """Record the checkpoint of `step` as complete (every block file must be there), then prune."""
    directory = generation_dir(out, step)
    files = []
    for k in range(blocks):
        path = directory / f"block{k}.pt"
        if not path.is_file():
            raise CheckpointError(f"cannot complete the checkpoint of step {step}: {path} is missing")
        files.append({"block": k, "file": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path)})
    body = {"format": MANIFEST_FORMAT, "step": step, "blocks": blocks, "files": files, "config": config}
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=MANIFEST, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(body, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / MANIFEST)
        fsync_dir(directory)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    prune(out, keep)
    return directory / MANIFEST


def read_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST
    try:
        body = json.loads(path.read_text())
        if body.get("format") != MANIFEST_FORMAT:
            raise CheckpointError(f"{path}: manifest format {body.get('format')!r}, expected {MANIFEST_FORMAT}")
        return Manifest(int(body["step"]), int(body["blocks"]), list(body["files"]), dict(body["config"]), directory)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is not a readable manifest: {e}") from e


def complete(out: str | Path) -> list[Manifest]:
    """Every complete checkpoint, oldest first."""
    return [read_manifest(d) for _, d in generations(out) if (d / MANIFEST).is_file()]


def latest(out: str | Path) -> Manifest | None:
    found = complete(out)
    return found[-1] if found else None


def prune(out: str | Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` complete checkpoints, and incomplete ones older than the
    newest complete one (they can never complete: every block has moved past them)."""
    gens = generations(out)
    done = [d for _, d in gens if (d / MANIFEST).is_file()]
    if not done:
        return []
    keep_dirs = set(done[-keep:])
    newest = max(s for s, d in gens if d in keep_dirs)
    removed = [d for s, d in gens if d not in keep_dirs and s < newest]
    for d in removed:
        shutil.rmtree(d, ignore_errors=True)
    return removed


def config_diff(saved: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(field, checkpoint's value, this run's value) for every field that differs and may not."""
    out: list[tuple[str, Any, Any]] = []
    for key in sorted(set(saved) | set(now)):
        name = f"{prefix}{key}"
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, f"{name}.")
        elif _normal(a) != _normal(b) and not any(name == m or (m.endswith(".") and name.startswith(m))
                                                  for m in MAY_CHANGE):  # fmt: skip
            out.append((name, a, b))
    return out


def _normal(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value  # JSON has lists where the config has tuples


def check_resume(out: str | Path, cfg: TrainConfig, *, blocks: int, only_block: int | None = None) -> Manifest | None:
    """The newest complete checkpoint to resume from, checked against this run; None when `out`
    has no checkpoint at all (a fresh start). CheckpointError names what does not fit. A worker
    checks only its own file's bytes (`only_block`); the launcher checks every file."""
    gens = generations(out)
    man = latest(out)
    if man is None:
        if gens:
            d = gens[-1][1]
            have = sorted(p.name for p in d.glob("block*.pt"))
            raise CheckpointError(
                f"--resume: no complete checkpoint in {d.parent} (newest, {d.name}, has {', '.join(have) or 'no file'} "
                f"and no {MANIFEST}: not every block saved it). Delete {d.parent} to start afresh"
            )
        return None
    if man.blocks != blocks:
        raise CheckpointError(f"--resume: {man.directory / MANIFEST} was written by {man.blocks} blocks, this run has "
                              f"{blocks}; resume with --blocks {man.blocks}")  # fmt: skip
    changed = config_diff(man.config, cfg.to_dict())
    if changed:
        what = "; ".join(f"{f}: checkpoint {a!r}, now {b!r}" for f, a, b in changed)
        where = man.directory / MANIFEST
        raise CheckpointError(f"--resume: the config differs from the checkpoint's ({where}): {what}. Only"
                              " run.steps, run.eval_every, run.device, run.threads, data paths and [runtime] "
                              "may change; start a new --out for a different model")  # fmt: skip
    for entry in man.files:
        if only_block is not None and entry["block"] != only_block:
            continue
        path = man.directory / str(entry["file"])
        if not path.is_file():
            raise CheckpointError(f"--resume: {path} is missing (listed in {man.directory / MANIFEST}); restore it "
                                  f"or delete {man.directory} to resume from the checkpoint before")  # fmt: skip
        if path.stat().st_size != entry["bytes"] or _sha256(path) != entry["sha256"]:
            raise CheckpointError(f"--resume: {path} differs from what {man.directory / MANIFEST} recorded "
                                  "(size or SHA-256); it was changed or damaged after the checkpoint")  # fmt: skip
    return man


def discard_after(out: str | Path, step: int) -> list[Path]:
    """A whole run resumes from `step`: incomplete checkpoints after it belong to the abandoned
    timeline (their files would otherwise mix into a later manifest of the same step)."""
    removed = [d for s, d in generations(out) if s > step and not (d / MANIFEST).is_file()]
    for d in removed:
        shutil.rmtree(d, ignore_errors=True)
    return removed
