"""dni-bench's default mode runs its contestants and writes bench.json, bench.md and bench.png."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_dni_bench_writes_speed_time_to_target_and_transport(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    cmd = [sys.executable, "-c", "from dni_dist.bench import main; main()", "--rounds", "1", "--steps", "50",
           "--snapshot-every", "25", "--only", "dni-sg-2proc-u2", "--sg-variants", "u2",
           "--transport-sizes", "256K", "--endpoints", "ipc", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "bench.json").read_text())
    assert list(result["table"]) == ["torch-1proc-1thread", "dni-sg-2proc-u2"]
    base = result["table"]["torch-1proc-1thread"]
    assert base["time_to_target_s"] is not None and base["speed_over_baseline"] == 1.0
    assert [p[0] for p in result["runs"][1]["curve"]] == [24, 49]
    assert result["transport"]["ratio_to_raw"]["dni/ipc"]["262144"] > 0
    assert "| dni-sg-2proc-u2 |" in (out / "bench.md").read_text()
    assert (out / "bench.png").stat().st_size > 10_000


def test_dni_bench_rejects_unknown_contestants_and_variants_before_running() -> None:
    for args, message in ((["--only", "nope"], "unknown contestant"), (["--sg-variants", "q3"], "r<rank>")):
        cmd = [sys.executable, "-c", "from dni_dist.bench import main; main()", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
