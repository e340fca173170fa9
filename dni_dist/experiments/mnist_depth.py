"""Figure 4: deep ReLU+BN MLPs on MNIST, backprop vs one SG in the middle vs SG between every
pair of layers.

    dni-repro mnist-depth --out runs/repro                  # depths 6, 20, 50 (512 units)
    dni-repro mnist-depth --out runs/repro --distributed    # the same on 4 ZeroMQ worker processes
    dni-repro mnist-depth --out runs/repro --quick          # depths 3 and 6, 64 units

Trains on the bundled MNIST subset (full MNIST when its IDX files are present and the recipe
asks for it). Writes mnist_depth.csv (per-step training loss of every run), mnist_depth.json
(final test accuracy per depth and regime) and mnist_depth.png (the training curves).
"""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from dni_dist.config import TrainConfig
from dni_dist.experiments.base import ExperimentOptions, ExperimentResult
from dni_dist.recipes import config_from_dict

REGIMES = {"backprop": ("none", "bp"), "one SG (middle)": ("middle", "sg"), "SG every layer": ("every", "sg")}


def config(depth: int, placement: str, method: str, opts: ExperimentOptions) -> TrainConfig:
    return config_from_dict(
        {
            "model": {"kind": "mlp", "depth": depth, "width": 64 if opts.quick else 512, "batch_norm": True},
            "split": {"placement": placement},
            "credit": {"method": method},
            "data": {"name": "mnist", "subset": True, "batch_size": 128},
            "run": {"steps": 150 if opts.quick else 1000, "seed": opts.seed},
        }
    )


def train_one(cfg: TrainConfig, distributed: bool) -> dict[str, Any]:
    if distributed and cfg.split.placement != "none":
        from dni_dist.launcher import LaunchOptions, launch

        stages = len(cfg.split.resolve(cfg.model.num_layers)) + 1
        with tempfile.TemporaryDirectory() as tmp:
            s = launch(cfg, LaunchOptions(blocks=min(4, stages), out=Path(tmp), live=False))
        return {"curve": [], "test_accuracy": s["final"]["test_accuracy"], "train_loss": s["final"]["train_loss"]}
    from dni_dist.trainer import train

    r = train(cfg)
    return {"curve": r.train_loss, "test_accuracy": r.test_accuracy, "train_loss": r.train_loss[-1]}


def run(opts: ExperimentOptions) -> ExperimentResult:
    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    depths = (3, 6) if opts.quick else (6, 20, 50)
    results: dict[str, dict[str, Any]] = {}
    for depth in depths:
        for regime, (placement, method) in REGIMES.items():
            cfg = config(depth, placement, method, opts)
            local = train_one(cfg, distributed=False)
            entry = {"depth": depth, "regime": regime, **local}
            if opts.distributed and placement != "none":  # one stage: nothing to distribute
                entry["distributed"] = train_one(cfg, distributed=True)
            results[f"{depth}/{regime}"] = entry
    with open(out / "mnist_depth.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["depth", "regime", "step", "train_loss"])
        for e in results.values():
            for step, loss in enumerate(e["curve"]):
                w.writerow([e["depth"], e["regime"], step, f"{loss:.6f}"])
    fig, axes = plt.subplots(1, len(depths), figsize=(5 * len(depths), 4), squeeze=False)
    for ax, depth in zip(axes[0], depths):
        for regime in REGIMES:
            curve = results[f"{depth}/{regime}"]["curve"]
            smooth = [
                sum(curve[max(0, i - 19) : i + 1]) / len(curve[max(0, i - 19) : i + 1]) for i in range(len(curve))
            ]
            ax.plot(smooth, label=regime)
        ax.set(title=f"{depth} hidden layers", xlabel="step", ylabel="training loss (20-step mean)", yscale="log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "mnist_depth.png", dpi=100)
    plt.close(fig)
    key = {k: {kk: vv for kk, vv in e.items() if kk != "curve"} for k, e in results.items()}
    (out / "mnist_depth.json").write_text(json.dumps(key, indent=2))
    files = ["mnist_depth.csv", "mnist_depth.json", "mnist_depth.png"]
    return ExperimentResult("mnist-depth", markdown(key, opts), files, key)


def markdown(key: dict[str, dict[str, Any]], opts: ExperimentOptions) -> str:
    """The report section, from the content of mnist_depth.json."""
    width = 64 if opts.quick else 512
    steps = config(6, "none", "bp", opts).run.steps
    lines = [
        "## Deep MNIST nets (Figure 4)",
        "",
        f"`dni-repro mnist-depth{' --quick' if opts.quick else ''}{' --distributed' if opts.distributed else ''}`: "
        f"ReLU+BN MLPs of {width} units, {steps} steps of batch 128 on the bundled MNIST subset (4,000 train / "
        "1,000 test), Adam 1e-3, cDNI linear SGs (Adam 1e-3). Curves: `mnist_depth.png`.",
        "",
        "| hidden layers | regime | final train loss | test accuracy"
        + (" | test accuracy, 4 processes free-running |" if opts.distributed else " |"),
        "|---:|---|---:|---:|" + ("---:|" if opts.distributed else ""),
    ]
    for e in key.values():
        dist = e.get("distributed")
        extra = f" {dist['test_accuracy']:.4f} |" if dist else (" – |" if opts.distributed else "")
        lines.append(f"| {e['depth']} | {e['regime']} | {e['train_loss']:.4f} | {e['test_accuracy']:.4f} |{extra}")
    lines.append("")
    return "\n".join(lines)
