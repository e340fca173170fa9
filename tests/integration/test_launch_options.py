"""What dni-launch does with its options before and around training: the placement is checked
before any process starts, the [runtime] section reaches the workers and the summary, and the
progress lines without a terminal say something from the start."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from .helpers import LAUNCH, run_launch


def test_gpus_on_a_machine_without_them_fail_at_once_and_start_nothing(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the CPU-only message cannot be shown here")
    start = time.monotonic()
    proc = subprocess.run([*LAUNCH, "--blocks", "4", "--gpus", "0,1,2,3", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2 and time.monotonic() - start < 30
    said = proc.stdout + proc.stderr
    assert said.count("error:") == 1 and "--gpus cpu" in said and "no usable CUDA" in said, said
    assert "Traceback" not in said
    assert not (tmp_path / "run").exists(), "no worker, no log, no output directory"


def test_too_many_blocks_for_the_model_is_one_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run([*LAUNCH, "--blocks", "9", "--depth", "3", "--gpus", "cpu", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--blocks 9" in proc.stdout + proc.stderr and "--depth" in proc.stdout + proc.stderr
    assert not (tmp_path / "r").exists()


def test_a_recipe_sets_the_runtime_and_the_summary_records_it(tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text("[runtime]\nmax_inflight = 2\ncheckpoint_every = 10\n")
    s = run_launch(["--recipe", str(recipe), "--blocks", "2", "--method", "sg", "--steps", "30", "--width", "32",
                    "--threads", "1"], tmp_path / "run")  # fmt: skip
    assert s["runtime"]["max_inflight"] == 2 and s["config"]["runtime"]["checkpoint_every"] == 10
    assert json.loads((tmp_path / "run" / "config.json").read_text())["runtime"]["max_inflight"] == 2
    assert s["blocks"][0]["lag_steps"]["max"] <= 2, "the workers ran with the recipe's credit window"
    flag = run_launch(["--recipe", str(recipe), "--blocks", "2", "--steps", "10", "--width", "32", "--max-inflight",
                       "5"], tmp_path / "flag")  # fmt: skip
    assert flag["runtime"]["max_inflight"] == 5, "a flag wins over the recipe"
