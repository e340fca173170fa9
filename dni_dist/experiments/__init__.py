"""Reproductions of "Understanding Synthetic Gradients and Decoupled Neural Interfaces"
(Czarnecki et al., ICML 2017): one module per experiment, run by `dni-repro`.

    dni-repro critical-point --out runs/repro --quick
    dni-repro all --out runs/repro --quick          # every experiment, then REPORT.md

Each experiment writes machine-readable results (CSV/JSON), figures (PNG) and returns a short
Markdown section; `all` joins the sections into DIR/REPORT.md.
"""

from __future__ import annotations

from dni_dist.experiments.base import Experiment, ExperimentOptions, ExperimentResult


def registry() -> dict[str, Experiment]:
    from dni_dist.experiments import (
        conditioning,
        critical_point,
        loss_surface,
        mnist_depth,
        representations,
        table2,
        unified,
    )

    return {
        "table2": table2.run,
        "loss-surface": loss_surface.run,
        "mnist-depth": mnist_depth.run,
        "rdm": representations.run_rdm,
        "weight-norms": representations.run_weight_norms,
        "probes": representations.run_probes,
        "critical-point": critical_point.run,
        "unified": unified.run,
        "conditioning": conditioning.run,
    }


__all__ = ["Experiment", "ExperimentOptions", "ExperimentResult", "registry"]
