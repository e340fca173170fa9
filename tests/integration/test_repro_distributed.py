"""`dni-repro unified --distributed`: the unified table measured on 4 worker processes."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from dni_dist.experiments import ExperimentOptions
from dni_dist.experiments.unified import PAPER, run


@pytest.mark.slow
def test_unified_on_the_zeromq_runtime_matches_table1(tmp_path: Path) -> None:
    result = run(ExperimentOptions(out=tmp_path, quick=True, distributed=True))
    assert result.key["distributed"] and result.key["matches_paper_table1"]
    with open(tmp_path / "unified.csv") as f:
        for r in csv.DictReader(f):
            assert (r["update_locked"], r["backward_locked"], r["direct_error"]) == PAPER[r["method"]]
            assert float(r["test_accuracy"]) > 0.3
