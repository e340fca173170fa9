"""The credit window of an sg block: block (wait), drop-oldest (never wait), and block with a
target timeout (wait, then give up on a target that is not coming)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dni_dist import config_from_dict
from dni_dist.worker import Worker, WorkerConfig, assign_blocks

X, Y = torch.rand(4, 784), F.one_hot(torch.arange(4) % 10, 10).float()


def worker(tmp_path: Path, **kw: object) -> Worker:
    cfg = config_from_dict({"model": {"depth": 2, "width": 8}, "split": {"placement": "even", "stages": 2},
                            "credit": {"method": "sg"}, "data": {"name": "mnist", "subset": True}})  # fmt: skip
    return Worker(cfg, WorkerConfig(block=0, blocks=2, run_id="t", out=str(tmp_path), max_inflight=2, **kw))  # type: ignore[arg-type]


def fill(w: Worker) -> None:
    for step in range(2):
        w.block.feed(step, X, Y)
    assert w.block.inflight() == 2


def test_block_policy_waits_when_the_window_is_full(tmp_path: Path) -> None:
    w = worker(tmp_path)
    fill(w)
    assert not w._credit_ok() and w.block.inflight() == 2 and not w.dropped


def test_drop_oldest_forgets_the_oldest_step_at_once(tmp_path: Path) -> None:
    w = worker(tmp_path, overflow="drop-oldest")
    fill(w)
    assert w._credit_ok() and w.dropped["pending"] == 1
    assert list(w.block.stages[0].pending) == [1]


def test_target_timeout_waits_then_gives_up_on_a_late_target(tmp_path: Path) -> None:
    w = worker(tmp_path, target_timeout_s=0.2)
    fill(w)
    assert not w._credit_ok()  # not late yet: wait like the block policy
    time.sleep(0.25)
    assert w._credit_ok() and w.dropped["timeout"] == 1
    assert list(w.block.stages[0].pending) == [1]


def test_blocks_get_consecutive_stages_and_bad_counts_are_explained() -> None:
    for stages, blocks in ((7, 4), (51, 4), (4, 4), (9, 2)):
        ranges = assign_blocks(stages, blocks)
        assert ranges[0][0] == 0 and ranges[-1][1] == stages - 1 and len(ranges) == blocks
        assert all(a[1] + 1 == b[0] for a, b in zip(ranges, ranges[1:])), "consecutive, no gaps"
        sizes = [hi - lo + 1 for lo, hi in ranges]
        assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1, sizes
    with pytest.raises(ValueError, match="cannot place 3 stages on 4 blocks"):
        assign_blocks(3, 4)
