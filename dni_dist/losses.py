"""Losses (batch means of per-example losses) and accuracy.

Every loss here is L = (1/N) Σ_n ℓ_n over a batch of N examples, so the per-example gradient a
synthetic-gradient module predicts is N · ∂L/∂h (DESIGN.md §1).
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


LOSSES: dict[str, LossFn] = {"ce": cross_entropy, "mse": mse}


def get_loss(name: str) -> LossFn:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(LOSSES)}") from None


def accuracy(output: torch.Tensor, target: torch.Tensor) -> float:
    return float((output.argmax(dim=1) == target.argmax(dim=1)).float().mean())
