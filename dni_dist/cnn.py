"""The built-in conv net (`[model] kind = "cnn"`): Conv-BN-ReLU layers with optional 2x2
max-pooling, then a linear head, as a list of layers the split can cut between.

    python -c "from dni_dist.cnn import build_cnn_layers; from dni_dist.config import ModelConfig; \\
        print(build_cnn_layers(ModelConfig(kind='cnn', depth=2, channels=(16, 32), pool=(1, 2)), \\
        image_shape=(1, 28, 28), num_classes=10, seed=0))"

Layer i (1-based, i <= depth) is Conv2d(3x3, 'same' padding) -> BatchNorm2d (model.batch_norm)
-> ReLU/Tanh (model.activation) -> MaxPool2d(2) when i is in model.pool. Layer depth+1 is the
head: Flatten -> Linear to the output width. The layers take N x C x H x W images; the
stage that holds layer 1 gets the dataset's flat rows through a leading nn.Unflatten.
"""

from __future__ import annotations

import torch
from torch import nn

from dni_dist.config import ConfigError, ModelConfig
from dni_dist.losses import output_width


def cnn_shapes(cfg: ModelConfig, image_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Per-example output shape of every layer (the head's is (outputs,) and is left out)."""
    if len(image_shape) != 3:
        raise ConfigError(f"model.kind: cnn needs images (C, H, W), got inputs of shape {image_shape}")
    _, h, w = image_shape
    shapes: list[tuple[int, ...]] = []
    for i, c in enumerate(cfg.channels or (cfg.width,) * cfg.depth, start=1):
        if i in cfg.pool:
            h, w = h // 2, w // 2
            if h < 1 or w < 1:
                raise ConfigError(
                    f"model.pool: pooling after conv layer {i} shrinks a {image_shape[1]}x{image_shape[2]} image "
                    "to nothing; pool fewer times"
                )
        shapes.append((c, h, w))
    return shapes


def build_cnn_layers(
    cfg: ModelConfig, *, image_shape: tuple[int, ...], num_classes: int, seed: int
) -> list[nn.Module]:
    """The cnn's depth + 1 layers, initialised from `seed` (never from the global RNG)."""
    shapes = cnn_shapes(cfg, image_shape)
    layers: list[nn.Module] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        c_in = image_shape[0]
        for i, (c, _, _) in enumerate(shapes, start=1):
            # BatchNorm subtracts the batch mean, so a bias before it would only learn float noise
            parts: list[nn.Module] = [nn.Conv2d(c_in, c, kernel_size=3, padding=1, bias=not cfg.batch_norm)]
            if cfg.batch_norm:
                parts.append(nn.BatchNorm2d(c))
            parts.append(nn.ReLU() if cfg.activation == "relu" else nn.Tanh())
            if i in cfg.pool:
                parts.append(nn.MaxPool2d(2))
            layers.append(nn.Sequential(*parts))
            c_in = c
        c, h, w = shapes[-1]
        layers.append(nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, output_width(cfg.loss, num_classes))))
    return layers
