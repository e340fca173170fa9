"""The statistics one block reports at the end of a run: one schema for both backends.

    stats = BlockStats.from_stages(stages, block=0, first=0, last=1, status="finished", steps=500,
                                   samples=64000, last_step=499, wall_seconds=12.0, compute_seconds=9.5)
    json.dumps(stats.to_dict())   # blocks/block0.json and one entry of summary.json's "blocks"

The ZeroMQ worker and the in-process backend both build a BlockStats from their stages; what
exists only between processes (idle time by reason, messages, rejections) is empty in-process.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dni_dist.records import Quantiles
from dni_dist.stage import Stage

RECENT_UPDATES = 16
"""Newest update records per interface kept in a block's stats (with their message ids)."""


def percentiles(values: Iterable[float]) -> dict[str, float | int]:
    """p50, p90, max and count of `values` (nearest-rank; zeros when empty)."""
    ordered = sorted(values)
    if not ordered:
        return {"p50": 0.0, "p90": 0.0, "max": 0.0, "count": 0}

    def pct(q: float) -> float:
        return float(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)])

    return {"p50": pct(0.5), "p90": pct(0.9), "max": float(ordered[-1]), "count": len(ordered)}


@dataclass(kw_only=True)
class BlockStats:
    block: int
    stages: tuple[int, int]  # first and last stage index this block hosts
    status: str  # finished | stopped | failed
    steps: int  # activations (block 0: batches) forwarded
    samples: int
    last_step: int
    wall_seconds: float  # the training loop only
    compute_seconds: float
    samples_per_second: float
    lag_steps: dict[str, float | int]
    lag_seconds: dict[str, float | int]
    waits: dict[str, float]  # idle seconds by what the block waited for (ZeroMQ only)
    update_waits: dict[str, int]  # updates by what they waited for, over the block's stages
    # per outgoing interface: stage, method, update_waits, dependencies (update count by signature,
    # dni_dist.locking) and recent_updates ([step, [[kind, step, producing stage], ...]], newest last)
    interfaces: list[dict[str, Any]]
    rejected: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    restarts: int = 0
    sg_loss: float | None = None
    sg_cosine: float | None = None
    train_loss: float | None = None  # last block only
    train_accuracy: float | None = None
    messages: dict[str, dict[str, int]] = field(default_factory=dict)
    attempt: int = 0  # the incarnation that wrote this (0: never restarted alone)
    pid: int = field(default_factory=os.getpid)  # the process that wrote this
    link_events: dict[str, int] = field(default_factory=dict)  # edge connections made / lost (ZeroMQ monitor)

    @classmethod
    def from_stages(
        cls,
        stages: list[Stage],
        *,
        block: int,
        first: int,
        last: int,
        status: str,
        steps: int,
        samples: int,
        last_step: int,
        wall_seconds: float,
        compute_seconds: float,
        waits: Mapping[str, float] | None = None,
        rejected: Mapping[str, int] | None = None,
        dropped: Mapping[str, int] | None = None,
        restarts: int = 0,
        messages: Mapping[str, dict[str, int]] | None = None,
        attempt: int = 0,
        link_events: Mapping[str, int] | None = None,
    ) -> BlockStats:
        update_waits: Counter[str] = Counter()
        for s in stages:
            update_waits.update(s.stats.waits)
        sg = [s.stats.sg[-1] for s in stages if s.stats.sg]
        train = stages[-1].stats.train if stages[-1].spec.is_last else None
        lag_steps, lag_seconds = Quantiles(), Quantiles()
        for s in stages:
            lag_steps, lag_seconds = lag_steps.merge(s.stats.lags.steps), lag_seconds.merge(s.stats.lags.seconds)
        return cls(
            block=block,
            stages=(first, last),
            status=status,
            steps=steps,
            samples=samples,
            last_step=last_step,
            wall_seconds=wall_seconds,
            compute_seconds=compute_seconds,
            samples_per_second=samples / max(wall_seconds, 1e-9),
            lag_steps=lag_steps.summary(),
            lag_seconds=lag_seconds.summary(),
            waits={k: round(v, 6) for k, v in sorted((waits or {}).items())},
            update_waits=dict(update_waits),
            interfaces=[
                {
                    "stage": s.spec.index,
                    "method": s.spec.out_method,
                    "update_waits": dict(s.stats.waits),
                    "dependencies": dict(s.stats.dependencies),
                    "recent_updates": [r.to_list() for r in s.stats.updates_log[-RECENT_UPDATES:]],
                }
                for s in stages
                if s.spec.out_method is not None
            ],
            rejected=dict(rejected or {}),
            dropped=dict(dropped or {}),
            restarts=restarts,
            sg_loss=sg[-1].loss if sg else None,
            sg_cosine=sg[-1].cosine if sg else None,
            train_loss=train[-1][1] if train else None,
            train_accuracy=train[-1][2] if train else None,
            messages=dict(messages or {}),
            attempt=attempt,
            link_events=dict(link_events or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["stages"] = list(self.stages)
        return out
