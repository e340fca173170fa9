"""Losses (batch means of per-example losses) and accuracy.

Every loss here is L = (1/N) Σ_n ℓ_n over a batch of N examples, so the per-example gradient a
synthetic-gradient module predicts is N · ∂L/∂h (docs/design.md).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy against one-hot (or soft) targets, averaged over the batch."""
    return F.cross_entropy(logits, target)


def mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error averaged over the batch and the outputs (torch's mse_loss)."""
    return F.mse_loss(output, target)


def binary_cross_entropy(logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sigmoid cross-entropy of one logit per example ([N, 1]) against two-class one-hot targets
    ([N, 2]; class 1 is the positive one), averaged over the batch. Same function class and the
    same optimum as softmax cross-entropy on two logits (only their difference matters)."""
    return F.binary_cross_entropy_with_logits(logit[:, 0], target[:, 1])


LOSSES: dict[str, LossFn] = {"ce": cross_entropy, "mse": mse, "bce": binary_cross_entropy}


def output_width(loss: str, num_classes: int) -> int:
    """Width of the network's output layer: one logit for `bce`, one unit per class otherwise."""
    if loss != "bce":
        return num_classes
    if num_classes != 2:
        raise ValueError(f"model.loss = 'bce' needs a two-class dataset, got {num_classes} classes; use 'ce'")
    return 1


def get_loss(name: str) -> LossFn:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(LOSSES)}") from None


def accuracy(output: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of examples whose predicted class (argmax; logit > 0 for one output) is the target's."""
    predicted = (output[:, 0] > 0).long() if output.shape[1] == 1 else output.argmax(dim=1)
    return float((predicted == target.argmax(dim=1)).float().mean())
