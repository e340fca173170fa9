"""Where a run's blocks go, checked before any process starts.

gpus = parse_gpus("0,1,2,3")          # ("0", "1", "2", "3"); "cpu" -> ("cpu",)
check_placement(gpus, blocks=4)       # ConfigError: no CUDA in this torch, an id that does not exist
cfg = fit_blocks(cfg, blocks=4)       # a split with fewer stages than blocks becomes an even split
device_of(gpus, block=5)              # the CUDA_VISIBLE_DEVICES id of block 5 ("" on CPU)
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from dni_dist.config import ConfigError, SplitConfig, TrainConfig
from dni_dist.topology import assign_blocks

log = logging.getLogger(__name__)

CPU = ("cpu",)


def parse_gpus(value: str) -> tuple[str, ...]:
    value = value.strip()
    return CPU if value == "cpu" else tuple(v.strip() for v in value.split(",") if v.strip())


def check_placement(
    gpus: tuple[str, ...], blocks: int, *, cuda_available: bool | None = None, device_count: int | None = None
) -> None:
    """Raise one clear ConfigError if `gpus` cannot hold `blocks` blocks on this machine."""
    if blocks < 1:
        raise ConfigError(f"--blocks: must be >= 1, got {blocks}")
    if gpus == CPU:
        return
    if not gpus or not all(g.isdigit() for g in gpus):
        raise ConfigError(f"--gpus: takes 'cpu' or comma-separated device ids like 0,1,2,3; got {','.join(gpus)!r}")
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    if not available:
        build = (
            "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}, no GPU seen"
        )
        raise ConfigError(
            f"--gpus {','.join(gpus)}: this torch {torch.__version__} has no usable CUDA ({build}). "
            "Run on the CPU with --gpus cpu, or install a CUDA build of torch on a machine with GPUs."
        )
    count = torch.cuda.device_count() if device_count is None else device_count
    missing = [g for g in gpus if int(g) >= count]
    if missing:
        raise ConfigError(
            f"--gpus {','.join(gpus)}: no CUDA device {', '.join(missing)} here; this machine shows {count} "
            f"(ids 0..{count - 1}). Pick ids that exist, or --gpus cpu."
        )
    if len(gpus) < blocks:
        log.info("%d blocks on %d GPUs: block i uses GPU id i mod %d", blocks, len(gpus), len(gpus))


def device_of(gpus: tuple[str, ...], block: int) -> str:
    """The CUDA_VISIBLE_DEVICES value of `block` ("" hides every GPU)."""
    return "" if gpus == CPU else gpus[block % len(gpus)]


def fit_blocks(cfg: TrainConfig, blocks: int) -> TrainConfig:
    """A config with at least `blocks` stages (a split with fewer becomes an even split), placed on
    `blocks` blocks; ConfigError says what to change when the model is too small."""
    stages = len(cfg.split.resolve(cfg.model.num_layers)) + 1
    if stages < blocks:
        if blocks > cfg.model.num_layers:
            raise ConfigError(
                f"--blocks {blocks}: needs a model with at least {blocks} layers; this one has "
                f"{cfg.model.num_layers} (raise --depth, or use fewer blocks)"
            )
        log.info("split %s gives %d stages; cutting evenly into %d for --blocks %d", cfg.split.placement, stages,
                 blocks, blocks)  # fmt: skip
        cfg = dataclasses.replace(cfg, split=SplitConfig(placement="even", stages=blocks))
    try:
        assign_blocks(len(cfg.split.resolve(cfg.model.num_layers)) + 1, blocks)
    except ValueError as e:
        raise ConfigError(f"--blocks {blocks}: {e}") from None
    return cfg
