"""The conv synthetic-gradient network, for [N, C, H, W] activations (`synthetic.kind = "conv"`,
or "auto" on a conv net's interfaces).

    python -c "import torch; from dni_dist.synthetic_conv import ConvSGNet; \\
        net = ConvSGNet(act_shape=(8, 7, 7), label_dim=10, use_h=True, use_y=True, channels=16, layers=1, kernel=3); \\
        print(net(torch.randn(4, 8, 7, 7), torch.eye(10)[:4]).abs().sum())"   # 0: a fresh SG predicts zero

`layers` hidden Conv2d(kernel, 'same' padding) + ReLU layers with `channels` channels, then a
Conv2d back to C channels whose weights and bias start at zero, so a fresh module predicts the
zero gradient, as the linear SG does. Label conditioning appends the one-hot label as
constant channels (K extra input channels, each the label's 0/1 over the whole H x W map),
and adds a learned gradient map per label, y·M with M: [K, C·H·W] (zero-initialised, the
linear SG's y·C term): shared conv weights see the same constant label channels everywhere,
so without M the label's contribution could not depend on the position, while the true
gradient does (the layers above weight every position differently).

With `rank` r > 0 it also adds a global low-rank linear term, flat(h)·U·V (U: [C·H·W, r]
random, V: [r, C·H·W] zero, so it too starts at 0): a conv only sees a k x k neighbourhood,
while the true gradient at a conv layer depends on the whole map through the layers above
(the linear head weights every position); the term gives the SG that global view at
2·C·H·W·r multiply-adds per example.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ConvSGNet(nn.Module):
    def __init__(
        self,
        *,
        act_shape: tuple[int, ...],
        label_dim: int,
        use_h: bool,
        use_y: bool,
        channels: int,
        layers: int,
        kernel: int,
        rank: int = 0,
    ) -> None:
        super().__init__()
        if len(act_shape) != 3:
            raise ValueError(f"a conv SG needs [N, C, H, W] activations, got per-example shape {act_shape}")
        if kernel % 2 != 1:
            raise ValueError(f"a conv SG's kernel must be odd (for 'same' padding), got {kernel}")
        self.act_shape = tuple(act_shape)
        self.use_h, self.use_y = use_h, use_y
        in_ch = (act_shape[0] if use_h else 0) + (label_dim if use_y else 0)
        parts: list[nn.Module] = []
        for _ in range(layers):
            parts += [nn.Conv2d(in_ch, channels, kernel, padding=kernel // 2), nn.ReLU()]
            in_ch = channels
        out = nn.Conv2d(in_ch, act_shape[0], kernel, padding=kernel // 2)
        nn.init.zeros_(out.weight)
        assert out.bias is not None
        nn.init.zeros_(out.bias)
        self.net = nn.Sequential(*parts, out)
        self.label_map = nn.Parameter(torch.zeros(label_dim, math.prod(act_shape))) if use_y else None
        dim = math.prod(act_shape)
        self.U = nn.Parameter(torch.randn(dim, rank) / math.sqrt(dim)) if rank and use_h else None
        self.V = nn.Parameter(torch.zeros(rank, dim)) if rank and use_h else None

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _, height, width = self.act_shape
        inputs = [h] if self.use_h else []
        if self.use_y:
            inputs.append(y[:, :, None, None].expand(-1, -1, height, width))
        out: torch.Tensor = self.net(torch.cat(inputs, dim=1))
        if self.label_map is not None:
            out = out + (y @ self.label_map).view(out.shape)
        if self.U is not None and self.V is not None:
            out = out + (h.flatten(1) @ self.U @ self.V).view(out.shape)
        return out
