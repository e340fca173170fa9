"""Checks made before and around a launch, without starting anything: the placement and the
progress line printed when there is no terminal."""

from __future__ import annotations

import pytest

from dni_dist.config import ConfigError
from dni_dist.placement import check_placement
from dni_dist.supervisor import progress_line


def test_placement_names_missing_devices_and_what_to_do() -> None:
    with pytest.raises(ConfigError, match=r"no CUDA device 2, 3 here; this machine shows 2 \(ids 0..1\)"):
        check_placement(("0", "1", "2", "3"), 4, cuda_available=True, device_count=2)
    with pytest.raises(ConfigError, match="--gpus cpu"):
        check_placement(("0",), 1, cuda_available=False)
    with pytest.raises(ConfigError, match="--gpus: takes 'cpu'"):
        check_placement(("gpu0",), 1, cuda_available=True, device_count=8)
    check_placement(("0", "1"), 4, cuda_available=True, device_count=2)  # round-robin is allowed


def test_progress_lines_say_something_useful_from_the_first_report() -> None:
    assert "2/2 blocks starting" in progress_line({}, [0, 1], steps=20, elapsed=0.4, running=2)
    report = {0: {"step": 3, "samples_per_second": 900.0, "lag": 2.0},
              1: {"step": 0, "samples_per_second": 450.0, "lag": 0.0, "loss": 2.25, "accuracy": 0.125}}  # fmt: skip
    line = progress_line(report, [0, 1], steps=20, elapsed=1.0, running=2)
    assert "step 1/20" in line and "loss 2.2500 acc 0.125" in line and "900/450" in line and "None" not in line
