"""Figure 4's figures and report section, from the results of dni_dist.experiments.mnist_depth.

figures(out, results, key)   # mnist_depth.png (curves), mnist_depth_sg.png (SG cosine per layer)
print(markdown(key))         # the section of REPORT.md, from mnist_depth.json's content
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

NAMES = {"backprop": "backprop", "sg_middle": "one SG (middle)", "sg_every": "SG every layer"}


def _pct(c: dict[str, Any]) -> str:
    spread = f" ({100 * c['min']:.1f}–{100 * c['max']:.1f})" if len(c["test_accuracy"]) > 1 else ""
    return f"{100 * c['mean']:.1f} ± {100 * c['std']:.1f}{spread}"


def markdown(key: dict[str, Any]) -> str:
    cells = key["cells"]
    depths = sorted({c["depth"] for c in cells.values()})
    b0 = key["budgets"][str(depths[0])]
    seeds = len(next(iter(cells.values()))["seeds"])
    steps = "; ".join(f"{d} layers: {key['budgets'][str(d)]['steps']} steps" for d in depths)
    lrs = ", ".join(f"{lr:g}" for lr in b0["lrs"])
    lines = [
        "## Deep nets on full data (Figure 4)",
        "",
        f"`dni-repro mnist-depth{' --quick' if key['quick'] else ''}`: MLPs of {b0['width']} units per hidden "
        f"layer (Linear → BatchNorm → ReLU or tanh), batch {key['batch_size']} ({steps}); Adam, its learning "
        f"rate decayed to 0 with a cosine schedule; linear cDNI SGs (Adam {b0['sg_lr']:g}, constant). Test "
        "accuracy (%) in evaluation mode (BatchNorm's running statistics), mean ± sample standard deviation "
        f"over {seeds} seeds (min–max). Every net: `mnist_depth_final.csv`; curves: `mnist_depth.png`.",
        "",
        f"Learning rates, chosen per depth, activation and regime from {{{lrs}}} by accuracy on a validation "
        f"split (the last {key['validation_images']:,} training images, first seed; every run in "
        "`mnist_depth_lr.csv`), then used for every seed:",
        "",
        "| dataset | hidden layers | activation | backprop | one SG (middle) | SG every layer |",
        "|---|---:|---|---|---|---|",
    ]
    activations = sorted({c["activation"] for c in cells.values()}, key=["relu", "tanh"].index)
    for dataset in sorted({c["dataset"] for c in cells.values()}):
        for depth, act in ((d, a) for d in depths for a in activations):
            chosen = [key["lr_chosen"][f"{dataset}/{depth}/{act}/{r}"] for r in NAMES]
            lines.append(
                f"| {dataset} | {depth} | {act} | "
                + " | ".join(f"{c['lr']:g} (val. {100 * c['validation_accuracy']:.1f})" for c in chosen)
                + " |"
            )
    lines.append("")
    for dataset in sorted({c["dataset"] for c in cells.values()}):
        lines += [
            f"**{dataset}**",
            "",
            "| hidden layers | activation | backprop | one SG (middle) | SG every layer | one SG − backprop (mean) |",
            "|---:|---|---:|---:|---:|---:|",
        ]
        for depth in depths:
            for act in activations:
                row = {r: cells[f"{dataset}/{depth}/{act}/{r}"] for r in NAMES}
                gap = 100 * (row["sg_middle"]["mean"] - row["backprop"]["mean"])
                lines.append(f"| {depth} | {act} | " + " | ".join(_pct(row[r]) for r in NAMES) + f" | {gap:+.1f} |")
        lines.append("")
    dist = [c for c in cells.values() if "distributed_test_accuracy" in c]
    if dist:
        lines += [
            f"The SG nets of seed {min(dist[0]['seeds'])} (ReLU) again on 4 free-running ZeroMQ processes:",
            "",
            "| dataset | hidden layers | regime | one process | 4 processes |",
            "|---|---:|---|---:|---:|",
        ]
        for c in dist:
            lines.append(
                f"| {c['dataset']} | {c['depth']} | {NAMES[c['regime']]} | {100 * c['test_accuracy'][0]:.1f} | "
                f"{100 * c['distributed_test_accuracy']:.1f} |"
            )
        lines.append("")
    lines += [
        "SG every layer, why it does or does not train. Each SG is trained towards a target that is "
        "bootstrapped from the SG above it; *fit* is the cosine between its output and that target, *true* "
        "the cosine between its output and the gradient that backprop through the whole network would give "
        "(a fixed batch of 512 training images, measured at the end of each tenth of training). Averaged "
        "over seeds; median and lowest over the layers, first and last tenth of training; *SG loss*: the "
        "median over the layers of its regression loss in the last tenth (`mnist_depth_sg.csv`, "
        "`mnist_depth_sg.png`).",
        "",
        "| dataset | hidden layers | activation | fit, first | fit, last | true, first | true, last "
        "| true, last, lowest layer | true, last, worst layer | SG loss, last |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k, prof in key["sg_every"].items():
        dataset, depth, act = k.split("/")

        def med(field: str, p: dict[str, dict[str, float]] = prof) -> str:
            return f"{statistics.median(v[field] for v in p.values()):.3f}"

        low = prof[min(prof, key=int)]["true_cosine_last"]
        worst = min(prof, key=lambda layer: prof[layer]["true_cosine_last"])
        sg_loss = statistics.median(v["sg_loss_last"] for v in prof.values())
        lines.append(
            f"| {dataset} | {depth} | {act} | {med('cosine_first')} | {med('cosine_last')} | "
            f"{med('true_cosine_first')} | {med('true_cosine_last')} | {low:.3f} | "
            f"{prof[worst]['true_cosine_last']:.3f} (layer {worst}) | {sg_loss:.3g} |"
        )
    lines.append("")
    return "\n".join(lines)


def figures(out: Path, results: list[dict[str, Any]], key: dict[str, Any]) -> None:
    _curves(out / "mnist_depth.png", results)
    _sg_heatmaps(out / "mnist_depth_sg.png", results)


def _curves(path: Path, results: list[dict[str, Any]]) -> None:
    rows = sorted({(e["dataset"], e["activation"]) for e in results})
    depths = sorted({e["depth"] for e in results})
    fig, axes = plt.subplots(len(rows), len(depths), figsize=(4.5 * len(depths), 3.4 * len(rows)), squeeze=False)
    for (dataset, act), line in zip(rows, axes):
        for depth, ax in zip(depths, line):
            for regime, name in NAMES.items():
                runs = [e["curve"] for e in results if (e["dataset"], e["activation"], e["depth"], e["regime"])
                        == (dataset, act, depth, regime)]  # fmt: skip
                a = np.array(runs)
                steps = np.arange(a.shape[1]) * 10
                ax.plot(steps, a.mean(axis=0), label=f"{name} ({len(runs)} seeds)")
                ax.fill_between(steps, a.min(axis=0), a.max(axis=0), alpha=0.2)
            ax.set(title=f"{dataset}, {depth} layers, {act}", xlabel="step", ylabel="training loss", yscale="log")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _sg_heatmaps(path: Path, results: list[dict[str, Any]]) -> None:
    """SG every layer, first dataset: per layer (rows) and tenth of training (columns), the cosine
    of each SG to its bootstrapped target (top) and to the true gradient (bottom), mean over seeds;
    one column of panels per depth and activation."""
    every = [e for e in results if e["regime"] == "sg_every"]
    dataset = min(e["dataset"] for e in every)
    panels = sorted({(e["depth"], e["activation"]) for e in every if e["dataset"] == dataset})
    fig, axes = plt.subplots(2, len(panels), figsize=(3.6 * len(panels), 7.6), squeeze=False)
    for col, (depth, act) in enumerate(panels):
        runs = [e["sg"] for e in every if (e["dataset"], e["depth"], e["activation"]) == (dataset, depth, act)]
        layers = sorted({int(r[0]) for r in runs[0]})
        starts = sorted({int(r[1]) for r in runs[0]})
        for row, (field, what) in enumerate(((4, "its target"), (5, "the true gradient"))):
            grid = np.full((len(runs), len(layers), len(starts)), np.nan)
            for k, rows in enumerate(runs):
                for r in rows:
                    grid[k, layers.index(int(r[0])), starts.index(int(r[1]))] = r[field]
            ax = axes[row][col]
            img = ax.imshow(
                np.nanmean(grid, axis=0),
                aspect="auto",
                origin="lower",
                cmap="RdBu",
                vmin=-1,
                vmax=1,
                extent=(0, len(starts), 0.5, len(layers) + 0.5),
            )
            ax.set(title=f"{depth} layers, {act}", xlabel="tenth of training", ylabel="SG after hidden layer")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            fig.colorbar(img, ax=ax, label=f"cosine(SG, {what})")
    fig.suptitle(f"SG every layer on {dataset}: each SG against its target (top) and the true gradient (bottom)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
