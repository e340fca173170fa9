"""Fixed random feedback: feedback-alignment layers (FA) and direct feedback matrices (DFA, Kickback).

FA keeps every linear layer's forward pass but sends the error back through a fixed random
matrix B instead of Wᵀ; the layer's own weight gradient stays the exact local one (δᵀx).
DFA projects the output error e = ∂L/∂ŷ straight to a hidden layer: g = e·B (B: [classes, d]);
Kickback is DFA with B = 1.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class _FeedbackLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, feedback: torch.Tensor
    ) -> torch.Tensor:
        ctx.save_for_backward(x, feedback)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, feedback = ctx.saved_tensors
        grad_x = grad_out @ feedback if ctx.needs_input_grad[0] else None
        grad_w = grad_out.T @ x if ctx.needs_input_grad[1] else None
        grad_b = grad_out.sum(dim=0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None


class FeedbackLinear(nn.Linear):
    """nn.Linear whose backward uses the fixed buffer `feedback` (same shape as weight) for ∂/∂x."""

    feedback: torch.Tensor

    @classmethod
    def from_linear(cls, linear: nn.Linear, generator: torch.Generator) -> FeedbackLinear:
        out = cls.__new__(cls)
        nn.Module.__init__(out)
        out.in_features, out.out_features = linear.in_features, linear.out_features
        out.weight = linear.weight  # shared: the trained weights are the model's
        out.bias = linear.bias
        bound = 1.0 / math.sqrt(linear.in_features)
        B = (torch.rand(linear.weight.shape, generator=generator) * 2 - 1) * bound
        out.register_buffer("feedback", B.to(linear.weight.device, linear.weight.dtype))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = _FeedbackLinearFn.apply(x, self.weight, self.bias, self.feedback)  # type: ignore[no-untyped-call]
        return out


def to_feedback_alignment(module: nn.Module, generator: torch.Generator) -> int:
    """Replace every nn.Linear inside `module` by a FeedbackLinear (in place); returns how many."""
    count = 0
    for name, child in list(module.named_children()):
        if type(child) is nn.Linear:
            setattr(module, name, FeedbackLinear.from_linear(child, generator))
            count += 1
        else:
            count += to_feedback_alignment(child, generator)
    return count


def direct_feedback_matrix(
    method: str, *, num_outputs: int, dim: int, generator: torch.Generator, scale: float = 1.0
) -> torch.Tensor:
    """B for DFA (Gaussian, std scale/√num_outputs) or Kickback (all ones): g = e·B."""
    if method == "kb":
        return torch.ones(num_outputs, dim)
    if method == "dfa":
        return torch.randn(num_outputs, dim, generator=generator) * (scale / math.sqrt(num_outputs))
    raise ValueError(f"direct feedback exists for dfa and kb, not {method!r}")
