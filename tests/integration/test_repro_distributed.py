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
    # what each update used, from the dependency record: (message kind, producing stage)
    with open(tmp_path / "unified_updates.csv") as f:
        updates = list(csv.DictReader(f))
    last = max(int(u["producer_stage"]) for u in updates)  # the output stage broadcasts the error
    used: dict[tuple[str, int], set[tuple[str, int]]] = {}
    for u in updates:
        deps = used.setdefault((u["method"], int(u["stage"])), set())
        if u["message"] != "none":
            deps.add((u["message"], int(u["producer_stage"])))
    assert {m for m, _ in used} == set(PAPER)
    for (method, stage), got in used.items():
        below = {("activation", stage - 1)} if stage else set()
        if method == "sg":  # updated at once, on nothing but its own input
            assert got == below, (method, stage, got)
        elif method in ("dfa", "kb"):  # the broadcast output error, never the neighbour's gradient
            assert got == below | {("output_error", last)}, (method, stage, got)
        else:  # bp, fa, sg_beta: the next stage's gradient
            assert got == below | {("gradient", stage + 1)}, (method, stage, got)
