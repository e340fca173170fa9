"""How close each synthetic gradient is to the true gradient of the loss, during training.

    probe = TrueGradientProbe(x, y, every=100)        # a fixed batch, checked every 100 steps
    train(cfg, monitor=probe)                        # dni_dist.trainer.train calls it after each step
    probe.cosines                                    # {step: [cosine per SG interface, bottom up]}

An SG is trained towards a target that is itself bootstrapped from the SG above it; its fit to
that target (StageStats.sg) can be good while the target has drifted away from what backprop
would send. This probe measures the latter: at a step, copies of the stages (train mode, so
BatchNorm uses batch statistics as in training) run the fixed batch through the whole network,
the loss is backpropagated all the way down, and at every interface the SG's output SG(h, y)
is compared with N·∂L/∂h (cosine over the whole batch). The live stages are never modified.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from dni_dist.stage import Stage


def true_gradient_cosines(stages: Sequence[Stage], x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Per SG interface (bottom up): cosine between its prediction and the backpropagated gradient."""
    modules = [copy.deepcopy(s.module).train() for s in stages]
    taps: list[tuple[Stage, torch.Tensor]] = []
    h = x
    with torch.enable_grad():
        for stage, module in zip(stages, modules):
            h = module(h)
            if stage.sg is not None:
                h.retain_grad()
                taps.append((stage, h))
        torch.autograd.backward(stages[-1].loss_fn(h, y))
    out = []
    for stage, tap in taps:
        assert stage.sg is not None and tap.grad is not None
        with torch.no_grad():
            predicted = stage.sg(tap.detach(), y).flatten()
            true = tap.grad.flatten() * tap.shape[0]
            out.append(float(torch.nn.functional.cosine_similarity(predicted, true, dim=0)))
    return out


class TrueGradientProbe:
    """A `monitor` for dni_dist.trainer.train: true-gradient cosines after every `every`-th step."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, every: int) -> None:
        if every < 1:
            raise ValueError(f"TrueGradientProbe: every must be >= 1, got {every}")
        self.x, self.y, self.every = x, y, every
        self.cosines: dict[int, list[float]] = {}

    def __call__(self, step: int, stages: Sequence[Stage]) -> None:
        if (step + 1) % self.every == 0 and any(s.sg is not None for s in stages):
            self.cosines[step] = true_gradient_cosines(stages, self.x, self.y)
