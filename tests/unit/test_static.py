"""The package stays `mypy --strict` and `ruff` clean (both run from the dev extra)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "cmd",
    [
        [sys.executable, "-m", "mypy", "dni_dist"],
        [sys.executable, "-m", "ruff", "check", "dni_dist", "tests", "tools"],
    ],
    ids=["mypy-strict", "ruff"],
)
def test_static_checks_pass(cmd: list[str]) -> None:
    tool = cmd[2]
    if importlib.util.find_spec(tool) is None:
        pytest.skip(f"{tool} is not installed (pip install -e '.[dev]')")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout + proc.stderr
