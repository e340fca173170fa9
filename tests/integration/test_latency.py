"""Slow links: every inter-block edge through the fault proxy with a one-way delay; the auto
credit window widens past max_inflight to cover the round trip, and the run's snapshots give a
learning curve whose last point is the final model."""

from __future__ import annotations

from pathlib import Path

import pytest

from dni_dist.snapshots import learning_curve, time_to

from .helpers import run_launch

TINY = ["--width", "64", "--batch-size", "32", "--threads", "1", "--blocks", "2", "--steps", "120"]


@pytest.mark.timeout(120)
def test_a_delayed_link_widens_the_auto_window_and_snapshots_give_the_learning_curve(tmp_path: Path) -> None:
    delay = ["--set", "runtime.link_delay_ms=30", "--set", "runtime.max_inflight=2"]
    summary = run_launch([*TINY, *delay, "--set", "runtime.snapshot_every=40"], tmp_path / "auto")
    block0 = summary["blocks"][0]
    assert block0["lag_seconds"]["p50"] >= 0.06, "a target crosses two 30 ms links"
    assert 4 <= block0["lag_steps"]["max"] <= 64, "the auto window let more than max_inflight=2 steps fly"

    fixed = run_launch([*TINY, *delay, "--set", "runtime.window=fixed"], tmp_path / "fixed")
    assert fixed["blocks"][0]["lag_steps"]["max"] <= 2, "a fixed window holds max_inflight"

    curve = learning_curve(tmp_path / "auto")
    assert [p.step for p in curve] == [39, 79, 119]
    assert 0 < curve[0].seconds < curve[1].seconds < curve[2].seconds
    assert curve[-1].accuracy == pytest.approx(summary["final"]["test_accuracy"], abs=1e-6)
    assert time_to(curve, 0.0) == curve[0].seconds and time_to(curve, 1.01) is None
