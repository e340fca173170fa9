"""Slow links: every inter-block edge through the fault proxy with a one-way delay; the auto
credit window widens past max_inflight to cover the round trip, and the run's snapshots give a
learning curve whose last point is the final model."""

from __future__ import annotations

from pathlib import Path

import pytest

from dni_dist.curves import learning_curve, time_to

from .helpers import run_launch

TINY = ["--width", "64", "--batch-size", "32", "--threads", "1", "--blocks", "2", "--steps", "120"]


@pytest.mark.timeout(120)
def test_a_delayed_link_widens_the_auto_window_and_snapshots_give_the_learning_curve(tmp_path: Path) -> None:
    delay = ["--set", "runtime.link_delay_ms=30", "--set", "runtime.max_inflight=2"]
    auto = ["--set", "runtime.window=auto", "--set", "runtime.snapshot_every=40"]
    summary = run_launch([*TINY, *delay, *auto], tmp_path / "auto")
    block0 = summary["blocks"][0]
    assert block0["lag_seconds"]["p50"] >= 0.06, "a target crosses two 30 ms links"
    assert 4 <= block0["lag_steps"]["max"] <= 64, "the auto window let more than max_inflight=2 steps fly"

    fixed = run_launch([*TINY, *delay], tmp_path / "fixed")
    assert fixed["blocks"][0]["lag_steps"]["max"] <= 2, "the default, fixed window holds max_inflight"

    curve = learning_curve(tmp_path / "auto")
    assert [p.step for p in curve] == [39, 79, 119]
    assert 0 < curve[0].seconds < curve[1].seconds < curve[2].seconds
    assert curve[-1].accuracy == pytest.approx(summary["final"]["test_accuracy"], abs=1e-6)
    assert time_to(curve, 0.0) == curve[0].seconds and time_to(curve, 1.01) is None


@pytest.mark.timeout(120)
def test_gloo_links_of_the_pipelining_contestant_go_through_the_delaying_proxy(tmp_path: Path) -> None:
    """RelayStore: every step of 1F1B on 4 stages crosses each 30 ms link at least twice
    (activations forward, gradients back), so 20 steps take >= 20 x 6 x 0.03 = 3.6 s."""
    from dni_dist.bench_runs import BATCH, even_cuts, run_pipelining

    steps = 20
    delayed = run_pipelining("1f1b", 4, steps, tmp_path / "slow", even_cuts(4), delay_ms=30, snapshot_every=10)
    assert steps * BATCH / delayed >= 3.6
    curve = learning_curve(tmp_path / "slow")
    assert [p.step for p in curve] == [9, 19] and curve[-1].accuracy > 0.5, "weights (and BN statistics) usable"


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_dni_bench_latency_mode_runs_and_writes_its_json_and_figure(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    out = tmp_path / "bench"
    cmd = [sys.executable, "-c", "from dni_dist.bench import main; main()", "--link-delay-ms", "5",
           "--rounds", "1", "--steps", "50", "--snapshot-every", "25", "--schedules", "1f1b", "--microbatches", "2",
           "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=380)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "latency.json").read_text())
    assert set(result["table"]) == {"torch-1proc@none"} | {
        f"{c}@5" for c in ("sg-2proc", "sg-2proc-w8", "bp-2proc", "pp-1f1b-m2-2proc")
    }
    assert result["ratios"]["2proc@5"]["best_pipelining"] == "pp-1f1b-m2-2proc"
    assert all(0 < row["final_accuracy"] <= 1 for row in result["table"].values())
    assert (out / "latency.png").stat().st_size > 10_000
