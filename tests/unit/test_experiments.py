"""dni-repro: `all --quick` runs every experiment once (as CI does); each test checks the key
number of one experiment from that run's files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dni_dist.experiments.command import app
from dni_dist.experiments.unified import PAPER

pytestmark = pytest.mark.slow  # one `dni-repro all --quick` run (about a minute) feeds every test here


@pytest.fixture(scope="module")
def repro(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("repro")
    res = CliRunner().invoke(app, ["all", "--quick", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_report_has_every_section(repro: Path) -> None:
    report = (repro / "REPORT.md").read_text()
    sections = ("## Table 2", "## Implied loss", "## Deep nets on full data", "## Representational", "## Weight norms",
                "## Linear probes")  # fmt: skip
    for section in (*sections, "## Critical point", "## Unified view", "## SG conditioning"):
        assert section in report
    bad = CliRunner().invoke(app, ["nope", "--out", str(repro / "x")])
    assert bad.exit_code == 2 and "unknown experiment" in bad.output


def test_table2_mse_reaches_the_optimum_and_log_loss_shows_the_plateau(repro: Path) -> None:
    rows = csv_rows(repro / "table2.csv")
    assert list(rows[0]) == ["dataset", "model", "loss", "sg", "difference", "backprop_difference", "paper_difference"]
    by = {(r["dataset"], r["model"], r["loss"], r["sg"]): r for r in rows}
    zero = {r["dataset"]: r for r in csv_rows(repro / "table2_zero_init.csv")}
    assert all(float(r["difference"]) < 1e-5 for r in rows if r["loss"] == "mse")
    lin, sig = by["linear2", "shallow", "log", "linear"], by["linear2", "shallow", "log", "sigmoid"]
    assert float(lin["difference"]) > float(lin["backprop_difference"]), "linear SG plateaus on separable data"
    assert float(sig["difference"]) < float(lin["difference"]), "the sigmoid SG helps"
    assert float(by["random2", "shallow", "log", "linear"]["difference"]) < 1e-4
    # noisy2: with two logits the linear SG's fixed point is the optimum (no plateau, as derived in
    # table2.py); with one logit (bce) it is not: a plateau far above backprop's, which the sigmoid SG removes
    assert float(by["noisy2", "shallow", "log", "linear"]["difference"]) < 1e-6
    bce, bce_sig = by["noisy2", "shallow", "bce", "linear"], by["noisy2", "shallow", "bce", "sigmoid"]
    assert float(bce["difference"]) > 1e-5 > 100 * max(float(bce["backprop_difference"]), 1e-8)
    assert float(bce_sig["difference"]) < 1e-6
    # the deep model's sigmoid SG, (σ(hA + yC + b) − y)·B, reaches the optimum like the shallow ones
    assert all(float(r["difference"]) < 1e-4 for r in rows if r["model"] == "deep" and r["sg"] == "sigmoid")
    assert {r["dataset"] for r in rows if r["model"] == "deep" and r["sg"] == "sigmoid"} == {"noisy2", "random2"}
    # from all-zero weights: the separable set still plateaus above backprop
    assert set(zero) == {"linear2", "noisy2", "random2"}
    assert float(zero["linear2"]["difference"]) > float(zero["linear2"]["backprop_difference"])


def test_critical_point_sg_stalls_where_backprop_does_not(repro: Path) -> None:
    key = json.loads((repro / "critical_point.json").read_text())
    sg, bp = key["sg_final"], key["backprop_final"]
    assert sg["a"] == key["start"]["a"], "a never moves under the constant SG (symmetric data)"
    assert abs(sg["c"]) < 1e-6 and abs(sg["b"]) < abs(sg["a"]), "stopped on the SG fixed point"
    assert abs(key["true_gradient_at_sg_final"]["da"]) > 1, "which is not a critical point of L"
    assert bp["loss"] < 0.05 and sg["loss"] > 1.0
    assert (repro / "critical_point.png").stat().st_size > 10_000


def test_unified_measures_the_papers_table1(repro: Path) -> None:
    rows = csv_rows(repro / "unified.csv")
    assert list(rows[0]) == ["method", "update_locked", "backward_locked", "direct_error", "test_accuracy"]
    assert [r["method"] for r in rows] == ["bp", "fa", "dfa", "kb", "sg", "sg_beta"]
    for r in rows:
        assert (r["update_locked"], r["backward_locked"], r["direct_error"]) == PAPER[r["method"]]
        assert float(r["test_accuracy"]) > 0.3  # all learn (chance: 0.1)
    # the record behind the columns: every update with the messages it used and who produced them
    updates = csv_rows(repro / "unified_updates.csv")
    for method in PAPER:
        mine = [u for u in updates if u["method"] == method]
        assert mine and all(u["message"] == "none" or u["message_step"] == u["update_step"] for u in mine)
        later = {u["message"] for u in mine if int(u["producer_stage"]) > int(u["stage"])}
        assert later == {"sg": set(), "dfa": {"output_error"}, "kb": {"output_error"}}.get(method, {"gradient"})


def test_mnist_depth_every_regime_learns_and_sg_chains_drift_from_the_true_gradient(repro: Path) -> None:
    rows = csv_rows(repro / "mnist_depth_final.csv")
    assert list(rows[0]) == ["dataset", "depth", "activation", "regime", "seed", "test_accuracy"]
    assert len(rows) == 2 * 2 * 3 * 2  # depths 3 and 6, relu and tanh, three regimes, two seeds
    acc = {(r["depth"], r["activation"], r["regime"], r["seed"]): float(r["test_accuracy"]) for r in rows}
    assert all(a > 0.3 for a in acc.values()), acc  # chance is 0.1
    for act in ("relu", "tanh"):  # one SG in the middle stays well ahead of an SG between every pair of layers
        for seed in ("0", "1"):
            assert acc["6", act, "sg_middle", seed] > acc["6", act, "sg_every", seed] + 0.05
    # the learning rates were chosen on the validation split, one per depth, activation and regime
    sweep = csv_rows(repro / "mnist_depth_lr.csv")
    chosen = [(r["depth"], r["activation"], r["regime"]) for r in sweep if r["chosen"] == "1"]
    assert sorted(chosen) == sorted({(r["depth"], r["activation"], r["regime"]) for r in sweep})
    # SG everywhere: at the end, the SG next to the loss matches the true gradient better than the lowest one
    sg = csv_rows(repro / "mnist_depth_sg.csv")
    every = [r for r in sg if r["regime"] == "sg_every" and r["depth"] == "6" and r["step_from"] == "135"]
    for run in {(r["activation"], r["seed"]) for r in every}:
        cos = {int(r["layer"]): float(r["true_cosine"]) for r in every if (r["activation"], r["seed"]) == run}
        assert sorted(cos) == [1, 2, 3, 4, 5, 6] and cos[6] > cos[1], (run, cos)
    key = json.loads((repro / "mnist_depth.json").read_text())
    cell = key["cells"]["fashion-mnist/6/relu/backprop"]
    assert cell["mean"] == pytest.approx(sum(cell["test_accuracy"]) / 2) and cell["min"] <= cell["max"]
    assert (repro / "mnist_depth.png").stat().st_size > 10_000 and (
        repro / "mnist_depth_sg.png"
    ).stat().st_size > 10_000


def test_rdm_backprop_settles_before_sg_everywhere_and_separates_classes(repro: Path) -> None:
    key = json.loads((repro / "rdm.json").read_text())
    bp, every = key["backprop"]["block_contrast"], key["SG everywhere"]["block_contrast"]
    assert len(bp) == 6 and bp[-1] > bp[0] + 0.1, bp  # classes separate as depth grows
    assert bp[-1] > every[-1] + 0.1, (bp, every)  # far less so when every layer learns from an SG
    assert key["settles_at"]["backprop"] <= key["settles_at"]["SG everywhere"], key["settles_at"]
    assert (repro / "rdm.png").stat().st_size > 10_000


def test_weight_norms_sg_everywhere_leaves_the_output_layer_smaller(repro: Path) -> None:
    key = json.loads((repro / "weight_norms.json").read_text())
    assert set(key) == {"backprop", "one SG", "SG everywhere", "DFA"}
    assert all(len(v) == 7 for v in key.values())
    assert key["SG everywhere"][-1] < key["backprop"][-1], key


def test_probes_backprop_keeps_the_task_linearly_solvable_to_the_top(repro: Path) -> None:
    key = json.loads((repro / "probes.json").read_text())
    bp, every = key["backprop"], key["SG everywhere"]
    assert bp["classifier_train_accuracy"][-1] > every["classifier_train_accuracy"][-1] + 0.05
    assert bp["classifier_train_accuracy"][-1] >= bp["classifier_train_accuracy"][0]
    # deeper layers are further (more non-linear transformations) from the input
    assert bp["input_regression_mse"][-1] > bp["input_regression_mse"][0], bp


def test_loss_surface_top_layer_fits_early_and_fidelity_falls_late(repro: Path) -> None:
    key = json.loads((repro / "loss_surface.json").read_text())
    for loss in ("mse", "log"):
        steps = sorted(key[loss], key=int)
        best_early = max(key[loss][s]["rank_correlation"][-1] for s in steps[:2])
        assert best_early > 0.9, (loss, key[loss])  # the top layer's implied loss ranks points like the true loss
        last = key[loss][steps[-1]]["rank_correlation"]
        assert sum(last) / len(last) < best_early, (loss, key[loss])  # and fidelity degrades late in training
    assert (repro / "loss_surface_mse.png").stat().st_size > 10_000


def test_conditioning_on_activation_and_label_estimates_and_converges_best(repro: Path) -> None:
    key = json.loads((repro / "conditioning.json").read_text())
    for loss in ("mse", "log"):
        full, act, lab = (key[f"{loss}/{c}"] for c in ("activation+label", "activation", "label"))
        assert full["fidelity"] > act["fidelity"], (loss, full, act)  # the label helps estimate the loss
        assert full["final_loss"] < act["final_loss"], (loss, full, act)  # and converge
        assert lab["final_loss"] > 10 * full["final_loss"], (loss, full, lab)  # label only does not converge
