"""Synthetic-gradient modules: predict the per-example gradient ∂ℓ/∂h from (h, y).

    sg = SyntheticGradient(kind="linear", conditioning="activation+label", act_dim=512, label_dim=10)
    s = sg(h, y)            # [N, 512]; zero for a fresh linear module
    sg = make_synthetic_gradient(SyntheticConfig(), act_shape=(32, 14, 14), label_dim=10)  # auto: conv

- linear: SG(h, y) = h·A + y·C + b with A, C, b initialised to zero (the paper's choice: a
  fresh SG predicts 0 and leaves the block below unchanged). With `rank` r > 0, A = U·V with
  U: [d, r] random (seeded by the caller) and V: [r, d] zero, so it still starts at 0 and each
  prediction costs 2·N·d·r multiply-adds instead of N·d² (`synthetic.rank`).
- mlp: ReLU hidden layers, the output layer zero-initialised (also starts at 0).
- sigmoid: SG(z, y) = σ(z·A + y·C + b) − y, for log loss at the output (paper §4). It models
  ∂L/∂logits = p − y, whose linear fit fails on separable data; with one logit and two classes
  (`bce`) it is σ(·) − y₁, y₁ the positive class. Inside the network (dim(h) ≠ dim(y)) it is
  (σ(h·A + y·C + b) − y)·B with B: [classes, dim(h)]: the gradient of a log loss behind a linear
  map, exact for the hidden layers of a deep linear classifier. A, C, b and B start at zero.
- conv: for [N, C, H, W] activations, a few conv layers, the last zero-initialised, with the
  label as constant channels (dni_dist/synthetic_conv.py).
- auto (the config default): conv for [N, C, H, W] activations, linear otherwise.

Conditioning picks the inputs: activation+label (cDNI), activation only, or label only. The
linear, mlp and sigmoid modules see an activation of any rank as a flat vector per example.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dni_dist.config import SyntheticConfig
from dni_dist.synthetic_conv import ConvSGNet


def resolve_kind(kind: str, act_shape: tuple[int, ...]) -> str:
    """The SG kind for an activation of per-example shape `act_shape` ("auto": conv for images)."""
    if kind == "auto":
        return "conv" if len(act_shape) == 3 else "linear"
    if kind == "conv" and len(act_shape) != 3:
        raise ValueError(
            f"'conv' needs [N, C, H, W] activations, this interface carries [N, {', '.join(map(str, act_shape))}]; "
            "use auto, linear or mlp"
        )
    return kind


def make_synthetic_gradient(cfg: SyntheticConfig, *, act_shape: tuple[int, ...], label_dim: int) -> SyntheticGradient:
    """The SG module `cfg` describes for one interface (raises ValueError when the kind does not fit)."""
    return SyntheticGradient(
        kind=resolve_kind(cfg.kind, act_shape),
        conditioning=cfg.conditioning,
        act_dim=math.prod(act_shape),
        label_dim=label_dim,
        hidden=cfg.hidden,
        layers=cfg.layers,
        act_shape=act_shape,
        channels=cfg.channels,
        kernel=cfg.kernel,
        rank=cfg.rank,
    )


class SyntheticGradient(nn.Module):
    def __init__(
        self,
        *,
        kind: str,
        conditioning: str,
        act_dim: int,
        label_dim: int,
        hidden: int = 1024,
        layers: int = 2,
        act_shape: tuple[int, ...] | None = None,  # conv: (C, H, W)
        channels: int = 64,  # conv: hidden channels
        kernel: int = 3,  # conv: kernel size
        rank: int = 0,  # linear: factor A = U·V with inner width `rank` (0: a full d x d matrix)
    ) -> None:
        super().__init__()
        self.kind = kind
        self.use_h = conditioning in ("activation+label", "activation")
        self.use_y = conditioning in ("activation+label", "label")
        self.binary = kind == "sigmoid" and act_dim == 1 and label_dim == 2  # one logit, y₁ = positive class
        # a hidden interface: (σ(·) − y)·B maps the per-class error back to the activation
        self.B: nn.Parameter | None = None
        if kind == "sigmoid" and act_dim != label_dim and not self.binary:
            self.B = nn.Parameter(torch.zeros(label_dim, act_dim))
        if rank and kind not in ("linear", "conv"):
            raise ValueError(f"synthetic.rank={rank} applies to a linear or conv SG, this interface's SG is {kind!r}")
        self.A: nn.Parameter | None = None
        self.U: nn.Parameter | None = None  # rank > 0: A = U·V
        self.V: nn.Parameter | None = None
        self.C: nn.Parameter | None = None
        self.b: nn.Parameter | None = None
        self.mlp: nn.Sequential | None = None
        self.conv: ConvSGNet | None = None
        if kind in ("linear", "sigmoid"):
            out_dim = label_dim if self.B is not None else act_dim
            if rank and self.use_h:
                self.U = nn.Parameter(torch.randn(act_dim, rank) / math.sqrt(act_dim))
                self.V = nn.Parameter(torch.zeros(rank, act_dim))
            elif self.use_h:
                self.A = nn.Parameter(torch.zeros(act_dim, out_dim))
            self.C = nn.Parameter(torch.zeros(label_dim, out_dim)) if self.use_y else None
            self.b = nn.Parameter(torch.zeros(out_dim))
        elif kind == "mlp":
            in_dim = (act_dim if self.use_h else 0) + (label_dim if self.use_y else 0)
            parts: list[nn.Module] = []
            for _ in range(layers):
                parts += [nn.Linear(in_dim, hidden), nn.ReLU()]
                in_dim = hidden
            out = nn.Linear(in_dim, act_dim)
            nn.init.zeros_(out.weight)
            nn.init.zeros_(out.bias)
            self.mlp = nn.Sequential(*parts, out)
        elif kind == "conv":
            if act_shape is None or math.prod(act_shape) != act_dim:
                raise ValueError(f"a conv SG needs act_shape (C, H, W) with {act_dim} elements, got {act_shape}")
            self.conv = ConvSGNet(
                act_shape=act_shape,
                label_dim=label_dim,
                use_h=self.use_h,
                use_y=self.use_y,
                channels=channels,
                layers=layers,
                kernel=kernel,
                rank=rank,
            )
        else:
            raise ValueError(f"unknown SG kind {kind!r}; expected linear, mlp, conv or sigmoid")

    def _linear(self, h: torch.Tensor, y: torch.Tensor, hu: torch.Tensor | None = None) -> torch.Tensor:
        assert self.b is not None
        if self.A is not None:
            out = torch.addmm(self.b, h, self.A)
        elif self.U is not None and self.V is not None:
            out = torch.addmm(self.b, h @ self.U if hu is None else hu, self.V)
        else:
            out = self.b.expand(h.shape[0], -1)
        if self.C is not None:
            out = torch.addmm(out, y, self.C)
        return out

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.conv is not None:
            return self.conv(h, y)  # type: ignore[no-any-return]
        if h.dim() > 2:  # a vector SG on a conv/sequence activation: one flat vector per example
            return self._vector(h.flatten(1), y).view(h.shape)
        return self._vector(h, y)

    def _vector(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.mlp is not None:
            inputs = [t for t, use in ((h, self.use_h), (y, self.use_y)) if use]
            return self.mlp(torch.cat(inputs, dim=1))  # type: ignore[no-any-return]
        if self.kind == "sigmoid":
            error = torch.sigmoid(self._linear(h, y)) - (y[:, 1:] if self.binary else y)
            return error if self.B is None else error @ self.B
        return self._linear(h, y)

    @torch.no_grad()
    def regression_grads(self, h: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Recompute SG(h, y) and set `.grad` of A, C, b to ∂/∂θ mse(SG(h, y), target) in closed
        form; return (the prediction, the loss). Linear modules only.

        The same gradient autograd would give (tests check it), without building a graph: on
        one CPU thread that graph costs about a third of an SG step, and the SG step is what
        makes the block holding it the slowest one of a decoupled pipeline."""
        if self.kind != "linear" or self.b is None:
            raise ValueError(f"closed-form SG gradients exist only for a linear SG module, not {self.kind!r}")
        if h.dim() > 2:
            flat, loss = self.regression_grads(h.flatten(1), y, target.flatten(1))
            return flat.view(h.shape), loss
        hu = h @ self.U if self.U is not None else None  # low rank: keep h·U for V's gradient
        pred = self._linear(h, y, hu)
        residual = pred - target
        scale = 2.0 / residual.numel()  # d mean(r²) / dr = 2r / numel
        grad_out = residual * scale
        if self.A is not None:
            self.A.grad = h.T @ grad_out
        if hu is not None and self.U is not None and self.V is not None:
            self.U.grad = h.T @ (grad_out @ self.V.T)
            self.V.grad = hu.T @ grad_out
        if self.C is not None:
            self.C.grad = y.T @ grad_out
        self.b.grad = grad_out.sum(dim=0)
        loss = float(torch.dot(residual.flatten(), residual.flatten())) / residual.numel()
        return pred, loss

    def linear_terms(self) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        """(A, C, b) of a linear module, detached: the SG is h·A + y·C + b."""
        if self.kind != "linear" or self.b is None:
            raise ValueError(f"implied-loss terms exist only for a linear SG module, not {self.kind!r}")
        A = self.A if self.U is None or self.V is None else self.U @ self.V
        return (
            None if A is None else A.detach(),
            None if self.C is None else self.C.detach(),
            self.b.detach(),
        )

    def implied_loss(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-example loss implied by a linear SG, up to a constant (docs/design.md):
        L̂(h) = ½ h·sym(A)·hᵀ + (b + y·C)·hᵀ, where sym(A) = (A + Aᵀ)/2."""
        A, C, b = self.linear_terms()  # A = U·V for a low-rank SG
        lin = b.expand(h.shape[0], -1)
        if C is not None:
            lin = lin + y @ C
        out = (lin * h).sum(dim=1)
        if A is not None:
            sym = 0.5 * (A + A.T)
            out = out + 0.5 * ((h @ sym) * h).sum(dim=1)
        return out
