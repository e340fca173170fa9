"""The command line trains a recipe, writes summary.json and rejects bad flags clearly."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from dni_dist.cli import app

ROOT = Path(__file__).resolve().parents[2]


def test_train_writes_summary(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--recipe",
            str(ROOT / "launch/demo.toml"),
            "--steps",
            "5",
            "--method",
            "dfa",
            "--set",
            "model.width=32",
            "--out",
            str(tmp_path),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["config"]["credit"]["method"] == "dfa"
    assert summary["steps"] == 5 and 0 <= summary["final"]["test_accuracy"] <= 1
    assert [s["waits"] for s in summary["stages"]][:3] == [{"output_error": 5}] * 3


def test_bad_override_is_a_config_error() -> None:
    result = CliRunner().invoke(app, ["train", "--set", "model.depth=-3", "--quiet"])
    assert result.exit_code == 2
    assert "model.depth" in result.output
