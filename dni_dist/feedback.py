"""Fixed random feedback: feedback-alignment layers (FA) and direct feedback matrices (DFA, Kickback).

FA keeps every linear layer's forward pass but sends the error back through a fixed random
matrix B instead of Wᵀ; the layer's own weight gradient stays the exact local one (δᵀx).
Conv layers do the same with a fixed random kernel B of the weight's shape (the input gradient
is the transposed convolution with B). Parameter-free layers and normalisation layers keep
their exact backward; any other layer with weights cannot be mirrored (`unmirrorable_layers`).
DFA projects the output error e = ∂L/∂ŷ straight to a hidden layer: g = e·B (B: [classes, d]);
Kickback is DFA with B = 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
import torch.nn.grad
from torch import nn

# the input and weight gradients of conv2d (torch.nn.grad is untyped)
_conv2d_input = cast(Callable[..., torch.Tensor], torch.nn.grad.conv2d_input)
_conv2d_weight = cast(Callable[..., torch.Tensor], torch.nn.grad.conv2d_weight)


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


class _FeedbackConvFn(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        feedback: torch.Tensor,
        conv: nn.Conv2d,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight, feedback)
        ctx.has_bias = bias is not None
        ctx.args = (conv.stride, conv.padding, conv.dilation, conv.groups)
        return F.conv2d(x, weight, bias, *ctx.args)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, feedback = ctx.saved_tensors
        grad_x = _conv2d_input(x.shape, feedback, grad_out, *ctx.args) if ctx.needs_input_grad[0] else None
        grad_w = _conv2d_weight(x, weight.shape, grad_out, *ctx.args) if ctx.needs_input_grad[1] else None
        grad_b = grad_out.sum(dim=(0, 2, 3)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None, None


class FeedbackConv2d(nn.Conv2d):
    """nn.Conv2d (zero padding) whose backward uses the fixed kernel `feedback` for ∂/∂x."""

    feedback: torch.Tensor

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, generator: torch.Generator) -> FeedbackConv2d:
        out = cls.__new__(cls)
        nn.Module.__init__(out)
        for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "transposed",
                     "output_padding", "groups", "padding_mode", "_reversed_padding_repeated_twice"):  # fmt: skip
            setattr(out, attr, getattr(conv, attr))
        out.weight = conv.weight  # shared: the trained weights are the model's
        out.bias = conv.bias
        fan_in = conv.weight[0].numel()
        bound = 1.0 / math.sqrt(fan_in)
        B = (torch.rand(conv.weight.shape, generator=generator) * 2 - 1) * bound
        out.register_buffer("feedback", B.to(conv.weight.device, conv.weight.dtype))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = _FeedbackConvFn.apply(x, self.weight, self.bias, self.feedback, self)  # type: ignore[no-untyped-call]
        return out


_MIRRORED = (nn.Linear, nn.Conv2d)
_EXACT = (  # elementwise affine maps: no matrix to mirror, their exact backward is kept
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm, nn.GroupNorm,
)  # fmt: skip


def _mirrorable_conv(conv: nn.Conv2d) -> bool:
    return conv.padding_mode == "zeros" and not isinstance(conv.padding, str)


def unmirrorable_layers(module: nn.Module) -> list[str]:
    """Names of the layers inside `module` that hold weights feedback alignment cannot replace by
    a fixed random matrix (anything but Linear, Conv2d with numeric zero padding, and norm layers)."""
    bad = []
    for name, child in module.named_modules():
        if not any(True for _ in child.parameters(recurse=False)):
            continue
        if isinstance(child, nn.Conv2d) and not _mirrorable_conv(child):
            what = f"Conv2d with padding={child.padding!r}, padding_mode={child.padding_mode!r}"
            bad.append(f"{name or '<stage>'} ({what})")
        elif not isinstance(child, (*_MIRRORED, *_EXACT)):
            bad.append(f"{name or '<stage>'} ({type(child).__name__})")
    return bad


def to_feedback_alignment(module: nn.Module, generator: torch.Generator) -> int:
    """Replace every nn.Linear and nn.Conv2d inside `module` by a FeedbackLinear / FeedbackConv2d
    (in place); returns how many."""
    count = 0
    for name, child in list(module.named_children()):
        if type(child) is nn.Linear:
            setattr(module, name, FeedbackLinear.from_linear(child, generator))
            count += 1
        elif type(child) is nn.Conv2d and _mirrorable_conv(child):
            setattr(module, name, FeedbackConv2d.from_conv(child, generator))
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
