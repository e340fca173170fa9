"""dni-repro: every experiment's --quick variant runs and shows its key number."""

from __future__ import annotations

import csv
from pathlib import Path

from typer.testing import CliRunner

from dni_dist.experiments import ExperimentOptions
from dni_dist.experiments.cli import app
from dni_dist.experiments.critical_point import run as critical_point
from dni_dist.experiments.unified import PAPER
from dni_dist.experiments.unified import run as unified


def test_critical_point_sg_stalls_where_backprop_does_not(tmp_path: Path) -> None:
    key = critical_point(ExperimentOptions(out=tmp_path, quick=True)).key
    sg, bp = key["sg_final"], key["backprop_final"]
    assert sg["a"] == key["start"]["a"], "a never moves under the constant SG (symmetric data)"
    assert abs(sg["c"]) < 1e-6 and abs(sg["b"]) < abs(sg["a"]), "stopped on the SG fixed point"
    assert abs(key["true_gradient_at_sg_final"]["da"]) > 1, "which is not a critical point of L"
    assert bp["loss"] < 0.05 and sg["loss"] > 1.0
    assert (tmp_path / "critical_point.png").stat().st_size > 10_000


def test_unified_measures_the_papers_table1(tmp_path: Path) -> None:
    result = unified(ExperimentOptions(out=tmp_path, quick=True))
    with open(tmp_path / "unified.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["method", "update_locked", "backward_locked", "direct_error", "test_accuracy"]
    assert [r["method"] for r in rows] == ["bp", "fa", "dfa", "kb", "sg", "sg_beta"]
    for r in rows:
        assert (r["update_locked"], r["backward_locked"], r["direct_error"]) == PAPER[r["method"]]
        assert float(r["test_accuracy"]) > 0.3  # all learn (chance: 0.1)
    assert result.key["matches_paper_table1"]


def test_repro_all_quick_writes_the_report(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["all", "--quick", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    report = (tmp_path / "REPORT.md").read_text()
    assert "## Critical point" in report and "## Unified view" in report
    bad = CliRunner().invoke(app, ["nope", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "unknown experiment" in bad.output
