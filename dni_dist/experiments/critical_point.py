"""Appendix A / Figure 6: a synthetic gradient can create a critical point backprop does not have.

    dni-repro critical-point --out runs/repro

Data x in {-2, -1, 1, 2}; model h = a·x + b; loss L(a, b) = mean |a·x + b|, minimised only at
a = b = 0. With a constant SG module c (one trainable number, whatever the input), the
block updates with c in place of ∂L/∂h while c regresses onto the per-example gradients
sign(a·x + b). The data are symmetric, so a's update c·mean(x) is always 0, and c is pulled to
mean sign(a·x + b) = 0 as soon as |b| < |a|: (a, 0, c = 0) is a fixed point of the SG system for
every a (more generally wherever |b| < |a|), though ∂L/∂a = mean |x| ≠ 0 there. Backprop from
the same start goes to (0, 0).
"""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from dni_dist.experiments.base import ExperimentOptions, ExperimentResult

X = np.array([-2.0, -1.0, 1.0, 2.0])


def loss(a: float, b: float) -> float:
    return float(np.mean(np.abs(a * X + b)))


def true_grad(a: float, b: float) -> tuple[float, float]:
    s = np.sign(a * X + b)
    return float(np.mean(s * X)), float(np.mean(s))


def train(method: str, steps: int, a: float, b: float, lr: float, sg_lr: float) -> dict[str, list[float]]:
    c = 0.0  # the SG module, zero-initialised as the paper's linear SGs are
    trace: dict[str, list[float]] = {"a": [a], "b": [b], "c": [c], "loss": [loss(a, b)]}
    for t in range(steps):
        step = lr / np.sqrt(1 + t / 100)  # decaying rate: subgradient descent on |·| needs it to settle
        if method == "bp":
            ga, gb = true_grad(a, b)
        else:
            ga, gb = float(np.mean(c * X)), c  # the block follows the synthetic gradient c
            target = np.sign(a * X + b)  # per-example ∂ℓ/∂h, the SG's regression target
            c -= sg_lr * 2 * float(np.mean(c - target))
        a, b = a - step * ga, b - step * gb
        for k, v in (("a", a), ("b", b), ("c", c), ("loss", loss(a, b))):
            trace[k].append(v)
    return trace


def run(opts: ExperimentOptions) -> ExperimentResult:
    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    steps = 400 if opts.quick else 4000
    start = (1.0, 1.5)  # c starts pulling b towards 0, then vanishes once |b| < |a|
    bp = train("bp", steps, *start, lr=0.05, sg_lr=0.1)
    sg = train("sg", steps, *start, lr=0.05, sg_lr=0.1)
    ga, gb = true_grad(sg["a"][-1], sg["b"][-1])
    key = {
        "start": {"a": start[0], "b": start[1]},
        "backprop_final": {"a": bp["a"][-1], "b": bp["b"][-1], "loss": bp["loss"][-1]},
        "sg_final": {"a": sg["a"][-1], "b": sg["b"][-1], "c": sg["c"][-1], "loss": sg["loss"][-1]},
        "true_gradient_at_sg_final": {"da": ga, "db": gb},
    }
    (out / "critical_point.json").write_text(json.dumps(key, indent=2))

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    A, B = np.meshgrid(np.linspace(-1.5, 1.5, 200), np.linspace(-1.5, 1.5, 200))
    Z = np.mean(np.abs(A[..., None] * X + B[..., None]), axis=-1)
    cs = axes[0].contourf(A, B, Z, levels=30, cmap="viridis")
    fig.colorbar(cs, ax=axes[0], label="L(a, b) = mean |a·x + b|")
    axes[0].plot(bp["a"], bp["b"], "w-", lw=2, label="backprop")
    axes[0].plot(sg["a"], sg["b"], "r-", lw=2, label="constant SG")
    axes[0].scatter([start[0]], [start[1]], c="k", zorder=5, label="start")
    axes[0].set(xlabel="a", ylabel="b", title="Trajectories on the true loss")
    axes[0].legend(loc="lower left")
    axes[1].plot(bp["loss"], label="backprop: loss")
    axes[1].plot(sg["loss"], label="SG: loss")
    axes[1].plot(sg["c"], label="SG module output c")
    axes[1].set(xlabel="step", title=f"SG stalls at (a, b) = ({sg['a'][-1]:.2f}, {sg['b'][-1]:.2f}), c = 0")
    axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(out / "critical_point.png", dpi=110)
    plt.close(fig)

    md = f"""## Critical point (Appendix A, Figure 6)

`dni-repro critical-point{" --quick" if opts.quick else ""}`: x ∈ {{-2, -1, 1, 2}}, h = a·x + b,
L = mean |h|, a constant (zero-initialised) SG module c between h and the loss; {steps} steps from
(a, b) = {start}.

| | a | b | c | L(a, b) |
|---|---:|---:|---:|---:|
| backprop | {bp["a"][-1]:.4f} | {bp["b"][-1]:.4f} | – | {bp["loss"][-1]:.4f} |
| constant SG | {sg["a"][-1]:.4f} | {sg["b"][-1]:.4f} | {sg["c"][-1]:.4f} | {sg["loss"][-1]:.4f} |

SG first moves b while c ≠ 0, then stops where the true gradient is (∂L/∂a, ∂L/∂b) =
({ga:.3f}, {gb:.3f}): not a critical point of the original problem, but a fixed point of the SG
system (the symmetric data make a's update c·mean(x) vanish, and c settles at
mean sign(a·x + b) = 0 once |b| < |a|). Backprop has no such point and reaches the unique
minimum a = b = 0. This is the paper's example. Figure: `critical_point.png`.
"""
    return ExperimentResult("critical-point", md, ["critical_point.json", "critical_point.png"], key)
