"""One optimizer step of a synthetic-gradient module towards the target a stage received.

    pred, loss, cos = sg_step(sg, optimizer, h, y, delta, beta=None)   # (SG(h, y)/N, mse, cosine)

The target is the per-example gradient N·δ (δ is the batch-mean gradient that arrived). A
linear SG without β takes the closed-form path (`SyntheticGradient.regression_grads`: no
autograd graph, the hot path of the default cDNI); every other SG goes through autograd.
With β (conspiring SG, `sg_beta`) the result is the update signal SG/N + β·∂mse/∂h instead.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dni_dist.synthetic import SyntheticGradient


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """cos(a, b) over all elements, 0 when either is zero (one host sync, not three)."""
    a, b = a.flatten(), b.flatten()
    ab, aa, bb = torch.stack([torch.dot(a, b), torch.dot(a, a), torch.dot(b, b)]).tolist()
    denom = math.sqrt(aa * bb)
    return ab / denom if denom > 0 else 0.0


def sg_step(
    sg: SyntheticGradient,
    optimizer: torch.optim.Optimizer,
    h: torch.Tensor,
    y: torch.Tensor,
    delta: torch.Tensor,
    *,
    beta: float | None,
) -> tuple[torch.Tensor, float, float]:
    """Train `sg` one step on mse(SG(h, y), N·δ); return (SG(h, y)/N, or the conspiring signal
    SG/N + β·∂mse/∂h when `beta` is given; the mse before the step; cos(SG(h, y), N·δ))."""
    n = h.shape[0]
    target = delta.detach() * n  # the target is a constant: never backprop into it
    h_leaf = h.detach().requires_grad_(beta is not None)
    pred: torch.Tensor
    if beta is None and sg.kind == "linear":
        pred, loss = sg.regression_grads(h_leaf, y, target)
    else:
        with torch.enable_grad():
            pred = sg(h_leaf, y)
            sg_loss = F.mse_loss(pred, target)
            optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(sg_loss)
        loss = float(sg_loss.detach())
    cos = cosine(pred.detach(), target)
    optimizer.step()
    if beta is None:
        return pred.detach() / n, loss, cos
    assert h_leaf.grad is not None
    return pred.detach() / n + beta * h_leaf.grad, loss, cos
