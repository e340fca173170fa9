"""dni-bench's arithmetic and plumbing: SG variant names, time to target, ratios, the transport
line and the GPU check's transport part (on CPU). The benchmark itself is a program
(`dni-bench`); tests only check that it runs and writes what it promises."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from dni_dist.bench_speed import BASELINE, Options, summarize, variant_sets
from dni_dist.bench_transport import burst_for, bursts_for, measure, parse_size, schedule


def test_sg_variant_names_map_to_synthetic_settings() -> None:
    assert variant_sets("r64") == {"synthetic.rank": 64}
    assert variant_sets("u4") == {"synthetic.update_every": 4}
    assert variant_sets("r32u2") == {"synthetic.rank": 32, "synthetic.update_every": 2}
    assert variant_sets("k1u4") == {"synthetic.update_every": 4, "synthetic.kernel": 1}
    for bad in ("", "x", "u", "64", "u2r4"):
        with pytest.raises(ValueError, match="r<rank>"):
            variant_sets(bad)
    with pytest.raises(ValueError, match="multiple of --snapshot-every"):
        Options(steps=100, snapshot_every=30)
    with pytest.raises(ValueError, match="--model"):
        Options(model="resnet")


def _run(name: str, rnd: int, sps: float, curve: list[tuple[float, float]]) -> dict[str, object]:
    points = [[25 * (i + 1) - 1, t, a] for i, (t, a) in enumerate(curve)]
    return {"contestant": name, "round": rnd, "sps": sps, "final_accuracy": curve[-1][1], "curve": points}


def test_summary_gives_time_to_target_and_ratios_against_the_baseline() -> None:
    """Target = 0.97 x the baseline's median final accuracy; time = first curve point at or
    above it; a contestant that gets there in fewer than half its rounds has no time."""
    runs = [
        _run(BASELINE, 0, 1000, [(1.0, 0.80), (2.0, 0.95), (3.0, 1.00)]),
        _run(BASELINE, 1, 1000, [(1.0, 0.80), (2.0, 0.96), (3.0, 1.00)]),
        _run("dni-sg-2proc", 0, 1600, [(0.5, 0.70), (1.0, 0.90), (1.5, 0.975)]),
        _run("dni-sg-2proc", 1, 1400, [(0.5, 0.70), (1.0, 0.98), (1.5, 0.99)]),
        _run("pp-1f1b-m2", 0, 900, [(1.0, 0.5), (2.0, 0.6), (3.0, 0.9)]),
        _run("pp-1f1b-m2", 1, 900, [(1.0, 0.5), (2.0, 0.6), (3.0, 0.97)]),
    ]
    r = summarize(runs, [], Options(steps=75, rounds=2, snapshot_every=25))
    assert r["target_accuracy"] == pytest.approx(0.97)
    t = r["table"]
    assert t[BASELINE]["time_to_target_s"] == 3.0
    assert t["dni-sg-2proc"]["time_to_target_s"] == pytest.approx(1.25)  # median of 1.5 and 1.0
    assert t["dni-sg-2proc"]["samples_per_second"] == 1500
    assert t["pp-1f1b-m2"]["time_to_target_s"] is None  # reached in 1 of 2 rounds
    assert r["ratios"]["dni_sg_over_torch_1proc"] == pytest.approx(1.5)
    assert r["ratios"]["time_to_target_sg_over_torch_1proc"] == pytest.approx(1.25 / 3.0)
    assert r["ratios"]["best_pipelining"] == "pp-1f1b-m2"
    assert r["ratios"]["dni_sg_over_best_pipelining"] == pytest.approx(1500 / 900)


def test_transport_sizes_and_a_real_measurement() -> None:
    assert parse_size("64K") == 65536 and parse_size("4M") == 4 << 20 and parse_size("1024") == 1024
    with pytest.raises(ValueError, match="multiple of 512"):
        parse_size("100")
    assert burst_for(256 << 10) == 128 and burst_for(64 << 20) == 8 and bursts_for(4 << 20) == 12
    order = schedule([1024, 2048], ["raw", "dni"])  # both processes walk this; modes alternate direction
    assert order[:4] == [(1024, 0, "raw"), (1024, 0, "dni"), (1024, 1, "dni"), (1024, 1, "raw")]
    got = measure("ipc", [64 << 10], ("raw", "dni"))
    assert set(got["mb_per_s"]) == {"raw/ipc", "dni/ipc"} and got["mb_per_s"]["dni/ipc"][str(64 << 10)] > 1.0  # MB/s
    assert 0 < got["burst_ratio"]["dni/ipc"][str(64 << 10)] < 10


def test_gpu_check_moves_a_tensor_through_the_transport_unchanged(tmp_path: Path) -> None:
    """tools/gpu_check.py's transport part, on the CPU (the CUDA path adds the pinned copies)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
    try:
        import gpu_check
    finally:
        sys.path.pop(0)
    r = gpu_check.transport(torch.device("cpu"), 256 << 10, 5, tmp_path)
    assert r["equal"] == 1.0 and r["message_s"] > 0 and r["mb_per_s"] > 0
