"""Any model as a list of layers with known shapes: the built-in MLPs, the cnn, or a factory's.

    python -c "from dni_dist.config import ModelConfig; from dni_dist.network import model_layout; \\
        print(model_layout(ModelConfig(kind='cnn', depth=2, width=8, pool=(1,)), input_dim=784, num_classes=10, \\
        image_shape=(1, 28, 28)))"

The split cuts between layers (dni_dist/models.py `split_layers`); the topology needs every
layer's output shape (one example's) to size the interfaces, and finds it here: the MLPs and
the cnn by arithmetic, anything else by running one sample batch through the layers.
Datasets deliver flat rows; a model that takes images gets them as N x C x H x W through an
nn.Unflatten at the front of its first stage (`input_adapter`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch import nn

from dni_dist.cnn import build_cnn_layers, cnn_shapes
from dni_dist.config import GIVEN_STAGES, ConfigError, ModelConfig, SplitConfig
from dni_dist.factory import call_factory, file_stamp
from dni_dist.feedback import unmirrorable_layers
from dni_dist.losses import output_width

if TYPE_CHECKING:
    from dni_dist.config import TrainConfig

VECTOR_KINDS = ("linear", "deep-linear", "mlp")


@dataclass(frozen=True)
class Layout:
    """What the topology needs to know about a model's layers, without the layers."""

    shapes: tuple[tuple[int, ...], ...]  # one example's output of every layer
    cuts: tuple[int, ...] | None  # split points the model came with (a factory's), if any
    unmirrorable: tuple[tuple[str, ...], ...]  # per layer: what feedback alignment cannot mirror


def is_vector_model(model: ModelConfig) -> bool:
    """The paper's MLPs (flat inputs, shapes by arithmetic, built by models.build_layers)."""
    return model.kind in VECTOR_KINDS and not model.factory


def model_image_shape(
    model: ModelConfig, *, input_dim: int, image_shape: tuple[int, ...] | None, data_name: str
) -> tuple[int, ...] | None:
    """The (C, H, W) the model's first layer takes, or None when it takes the flat rows.

    The cnn needs image data; a factory's model gets images when the dataset has them."""
    if is_vector_model(model):
        return None
    shape = tuple(image_shape) if image_shape is not None else None
    if shape is not None and math.prod(shape) != input_dim:
        raise ConfigError(f"data: image shape {shape} does not have the {input_dim} elements of a row")
    if shape is None and model.kind == "cnn" and not model.factory:
        raise ConfigError(
            f"model.kind: cnn needs image data (mnist, fashion-mnist); data.name = {data_name!r} gives "
            f"{input_dim}-D vectors. Use mlp, or a factory model"
        )
    return shape


def input_adapter(image_shape: tuple[int, ...] | None) -> list[nn.Module]:
    """The layers that turn the dataset's flat rows into what the model's first layer takes."""
    return [] if image_shape is None else [nn.Unflatten(1, tuple(image_shape))]


def inspect_layers(
    layers: Sequence[nn.Module], input_shape: tuple[int, ...], cuts: tuple[int, ...] | None = None
) -> Layout:
    """Run one sample batch (two zero examples, eval mode, no gradients) through `layers`."""
    shapes: list[tuple[int, ...]] = []
    modes = [layer.training for layer in layers]
    h = torch.zeros(2, *input_shape)
    try:
        with torch.no_grad():
            for i, layer in enumerate(layers):
                layer.eval()
                try:
                    h = layer(h)
                except Exception as e:
                    raise ConfigError(
                        f"model: layer {i + 1} ({type(layer).__name__}) failed on a sample batch of shape "
                        f"{tuple(h.shape)}: {type(e).__name__}: {e}"
                    ) from e
                if not isinstance(h, torch.Tensor) or h.dim() < 2 or not h.is_floating_point():
                    got = f"a {h.dtype} tensor {tuple(h.shape)}" if isinstance(h, torch.Tensor) else type(h).__name__
                    raise ConfigError(
                        f"model: layer {i + 1} ({type(layer).__name__}) returned {got}; every layer must map "
                        "one float tensor [N, ...] to another"
                    )
                shapes.append(tuple(h.shape[1:]))
    finally:
        for layer, mode in zip(layers, modes):
            layer.train(mode)
    return Layout(tuple(shapes), cuts, tuple(tuple(unmirrorable_layers(layer)) for layer in layers))


def _given_stages() -> ConfigError:
    return ConfigError(
        "model.factory: these stages were handed to dni_dist.train(stages=...) and exist only in that "
        "process; name a factory (model.factory = 'file.py:build') to build them elsewhere"
    )


def build_network(
    model: ModelConfig, *, input_dim: int, num_classes: int, image_shape: tuple[int, ...] | None, seed: int
) -> tuple[list[nn.Module], tuple[int, ...] | None]:
    """The layers of a cnn or factory model, initialised from `seed`, and the factory's split points.

    A factory's layers run one sample batch under the same seed, so lazy modules are
    materialised identically in every process before any optimizer sees them."""
    if model.factory == GIVEN_STAGES:
        raise _given_stages()
    if model.factory:
        model_input = image_shape or (input_dim,)
        layers, cuts = call_factory(
            model.factory,
            input_shape=model_input,
            num_classes=num_classes,
            num_outputs=output_width(model.loss, num_classes),
            seed=seed,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            inspect_layers(layers, model_input)
        return layers, cuts
    if model.kind == "cnn":
        assert image_shape is not None
        return build_cnn_layers(model, image_shape=image_shape, num_classes=num_classes, seed=seed), None
    raise ValueError(f"build_network builds cnn and factory models, not {model.kind!r} (models.build_layers does)")


@functools.lru_cache(maxsize=32)
def _factory_layout(
    ref: str,
    stamp: tuple[str, int, int] | None,
    input_dim: int,
    num_classes: int,
    loss: str,
    image_shape: tuple[int, ...] | None,
) -> Layout:
    model = ModelConfig(factory=ref, loss=loss)
    layers, cuts = build_network(model, input_dim=input_dim, num_classes=num_classes, image_shape=image_shape, seed=0)
    return inspect_layers(layers, image_shape or (input_dim,), cuts)


def model_layout(
    model: ModelConfig, *, input_dim: int, num_classes: int, image_shape: tuple[int, ...] | None
) -> Layout:
    """Layer shapes of a cnn (arithmetic) or a factory model (one sample batch, cached per file
    version, so validating a config and building its topology call the factory once)."""
    if model.factory == GIVEN_STAGES:
        raise _given_stages()
    if model.factory:
        stamp = file_stamp(model.factory)
        shape = None if image_shape is None else tuple(image_shape)
        return _factory_layout(model.factory, stamp, input_dim, num_classes, model.loss, shape)
    if model.kind == "cnn":
        assert image_shape is not None
        shapes = [*cnn_shapes(model, image_shape), (output_width(model.loss, num_classes),)]
        return Layout(tuple(shapes), None, tuple(() for _ in shapes))
    raise ValueError(f"model_layout is for cnn and factory models, not {model.kind!r}")


def resolve_factory(cfg: TrainConfig) -> tuple[ModelConfig, SplitConfig]:
    """The config's model with `layers` filled in from its factory, and its split: the factory's
    own split points unless the recipe sets [split] (then that cuts the factory's layers)."""
    from dni_dist.data import dataset_image_shape, dataset_shape

    input_dim, num_classes = dataset_shape(cfg.data.name)
    layout = model_layout(
        cfg.model, input_dim=input_dim, num_classes=num_classes, image_shape=dataset_image_shape(cfg.data.name)
    )
    n = len(layout.shapes)
    if cfg.model.layers not in (0, n):
        raise ConfigError(
            f"model.layers: the config says {cfg.model.layers} but {cfg.model.factory} yields {n} layers; "
            "leave model.layers unset (it is filled in from the factory)"
        )
    split = cfg.split
    if layout.cuts is not None and split == SplitConfig():
        split = SplitConfig(placement="explicit", cuts=layout.cuts) if layout.cuts else SplitConfig(placement="none")
    return replace(cfg.model, layers=n), split
