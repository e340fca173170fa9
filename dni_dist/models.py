"""Models as lists of layers, cut into stages at layer boundaries.

    from dni_dist.models import build_layers, split_layers
    layers, widths = build_layers(ModelConfig(kind="mlp", depth=6), input_dim=784, num_classes=10, seed=0)
    blocks = split_layers(layers, cuts=(3,))   # two stages; an interface after hidden layer 3

A "layer" is what the paper counts as one: Linear (+BatchNorm) (+activation) for a hidden
layer, a plain Linear for the output layer. A cut equal to the number of layers adds an empty
last stage, so an interface can sit between the network's output and its loss (Theorem 1).
"""

from __future__ import annotations

import torch
from torch import nn

from dni_dist.config import ModelConfig
from dni_dist.losses import output_width


def build_layers(cfg: ModelConfig, *, input_dim: int, num_classes: int, seed: int) -> tuple[list[nn.Module], list[int]]:
    """The model's layers (initialised from `seed`) and the output width of each."""
    out = output_width(cfg.loss, num_classes)
    widths = [out] if cfg.kind == "linear" else [cfg.width] * cfg.depth + [out]
    layers: list[nn.Module] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fan_in = input_dim
        for i, width in enumerate(widths):
            hidden = i < len(widths) - 1
            # BatchNorm subtracts the batch mean, so a bias before it would only learn float noise
            linear = nn.Linear(fan_in, width, bias=not (cfg.kind == "mlp" and hidden and cfg.batch_norm))
            if cfg.kind == "mlp" and hidden:
                parts: list[nn.Module] = [linear]
                if cfg.batch_norm:
                    parts.append(nn.BatchNorm1d(width))
                parts.append(nn.ReLU() if cfg.activation == "relu" else nn.Tanh())
                layers.append(nn.Sequential(*parts))
            else:
                layers.append(linear)
            fan_in = width
    return layers, widths


def split_layers(layers: list[nn.Module], cuts: tuple[int, ...]) -> list[nn.Sequential]:
    """Cut the layer list after each layer index in `cuts` (1-based, strictly increasing)."""
    n = len(layers)
    bounds = [0, *cuts, n]  # a last cut at n leaves an empty (identity) last stage
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        if not (a < b or (a == b == n and i == len(bounds) - 2)):
            raise ValueError(f"cuts {cuts} must be strictly increasing within 1..{n}")
    return [nn.Sequential(*layers[a:b]) for a, b in zip(bounds, bounds[1:])]


def assemble(blocks: list[nn.Sequential]) -> nn.Sequential:
    """One nn.Module from trained stage blocks (the modules are shared, not copied)."""
    return nn.Sequential(*[layer for block in blocks for layer in block])


def hidden_activations(model: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """Output of every layer of an assembled model, in eval mode and without gradients."""
    outs: list[torch.Tensor] = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        h = x
        for layer in model:
            h = layer(h)
            outs.append(h)
    model.train(was_training)
    return outs
