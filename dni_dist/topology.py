"""From a config to stages: cut points, interface methods, per-stage specs, message routing.

    topo = Topology.from_config(cfg, input_dim=784, num_classes=10)
    stages = topo.build_stages(cfg, input_dim=784, num_classes=10)  # Stage objects, initialised from cfg.run.seed
    topo.route(msg)                          # -> stage indices that must receive msg
    assign_blocks(topo.num_stages, blocks=4)  # -> [(first, last) stage of each block]

Shared by the in-process trainer and the distributed worker, so both cut, initialise and
wire the network identically. Any model works: the MLPs, the cnn, a factory's layers, or
stage modules handed in (`layers=`); `from_config` raises ConfigError when an interface's
method cannot apply to the model (e.g. feedback alignment into a stage with weights it
cannot mirror). Image models get their inputs through dni_dist.network.input_adapter, so
every stage 0 still receives the dataset's flat rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from dni_dist.config import ConfigError, TrainConfig
from dni_dist.losses import output_width
from dni_dist.messages import Kind, Message
from dni_dist.models import build_layers, split_layers
from dni_dist.network import (
    Layout,
    build_network,
    input_adapter,
    inspect_layers,
    is_vector_model,
    model_image_shape,
    model_layout,
)
from dni_dist.stage import DIRECT_METHODS, Stage, StageSpec
from dni_dist.synthetic import resolve_kind


def _image_shape(
    cfg: TrainConfig, input_dim: int, image_shape: tuple[int, ...] | None
) -> tuple[int, ...] | None:
    """The model's input image shape: the given one, else the dataset's (by name) when it fits."""
    if image_shape is None:
        from dni_dist.data import dataset_image_shape

        named = dataset_image_shape(cfg.data.name)
        image_shape = named if named is not None and math.prod(named) == input_dim else None
    return model_image_shape(cfg.model, input_dim=input_dim, image_shape=image_shape, data_name=cfg.data.name)


def _check_methods(
    cfg: TrainConfig, cuts: tuple[int, ...], methods: tuple[str, ...], layout: Layout, num_outputs: int
) -> None:
    """ConfigError naming the field when the model cannot take a method where the config puts it."""
    last = layout.shapes[-1]
    if last != (num_outputs,):
        raise ConfigError(
            f"model: the last layer gives [N, {', '.join(map(str, last))}] per batch; the loss "
            f"({cfg.model.loss}) needs [N, {num_outputs}] (one output per class; 1 for bce)"
        )
    bounds = [0, *cuts, len(layout.shapes)]
    for i, (cut, method) in enumerate(zip(cuts, methods)):
        field = f"credit.per_interface[{i}]" if cfg.credit.per_interface else "credit.method"
        if method == "fa":
            below = [name for layer in layout.unmirrorable[bounds[i + 1] : bounds[i + 2]] for name in layer]
            if below:
                raise ConfigError(
                    f"{field}: fa at interface {i} (after layer {cut}) cannot apply: stage {i + 1} has layers with "
                    f"weights feedback alignment cannot mirror ({', '.join(below)}); FA replaces the transposed "
                    "weights of nn.Linear and nn.Conv2d (zero padding) only. Use bp, sg or dfa there"
                )
        if method in ("sg", "sg_beta"):
            try:
                resolve_kind(cfg.synthetic.kind, layout.shapes[cut - 1])
            except ValueError as e:
                raise ConfigError(f"synthetic.kind: at interface {i} (after layer {cut}): {e}") from None


def assign_blocks(num_stages: int, blocks: int) -> list[tuple[int, int]]:
    """Consecutive stage ranges (first, last), as even as possible, one per block."""
    if not 1 <= blocks <= num_stages:
        raise ValueError(
            f"cannot place {num_stages} stages on {blocks} blocks: use at most {num_stages} blocks "
            "or cut the model into more stages (split.placement = 'even', split.stages = N)"
        )
    bounds = [round(i * num_stages / blocks) for i in range(blocks + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(blocks)]


@dataclass(frozen=True)
class Topology:
    cuts: tuple[int, ...]
    methods: tuple[str, ...]  # one per interface (len(cuts))
    specs: tuple[StageSpec, ...]

    @property
    def num_stages(self) -> int:
        return len(self.specs)

    @classmethod
    def from_config(
        cls,
        cfg: TrainConfig,
        *,
        input_dim: int,
        num_classes: int,
        image_shape: tuple[int, ...] | None = None,
        layers: Sequence[nn.Module] | None = None,
    ) -> Topology:
        """`image_shape`: the (C, H, W) of the data's rows (default: the named dataset's);
        `layers`: the model's layers when they are given rather than built from the config."""
        cuts = cfg.split.resolve(cfg.model.num_layers)
        methods = cfg.credit.methods(len(cuts))
        if layers is None and is_vector_model(cfg.model):
            _, widths = build_layers(cfg.model, input_dim=input_dim, num_classes=num_classes, seed=0)
            shapes: list[tuple[int, ...]] = [(w,) for w in widths]
        else:
            image = _image_shape(cfg, input_dim, image_shape)
            if layers is not None:
                if len(layers) != cfg.model.num_layers:
                    raise ConfigError(f"model.layers: {cfg.model.num_layers} in the config, {len(layers)} given")
                layout = inspect_layers(layers, image or (input_dim,))
            else:
                layout = model_layout(cfg.model, input_dim=input_dim, num_classes=num_classes, image_shape=image)
            _check_methods(cfg, cuts, methods, layout, output_width(cfg.model.loss, num_classes))
            shapes = list(layout.shapes)
        bounds = [0, *cuts, len(shapes)]
        dims = [(input_dim,), *shapes]
        broadcast = any(m in DIRECT_METHODS for m in methods)
        specs = tuple(
            StageSpec(
                index=i,
                num_stages=len(cuts) + 1,
                in_method=methods[i - 1] if i > 0 else None,
                out_method=methods[i] if i < len(cuts) else None,
                in_dim=math.prod(dims[bounds[i]]),
                out_dim=math.prod(dims[bounds[i + 1]]),
                num_classes=num_classes,
                loss=cfg.model.loss,
                beta=cfg.credit.beta if i < len(cuts) and methods[i] == "sg_beta" else 0.0,
                feedback_scale=cfg.credit.feedback_scale,
                broadcast_error=broadcast and i == len(cuts),
                in_shape=dims[bounds[i]],
                out_shape=dims[bounds[i + 1]],
            )
            for i in range(len(cuts) + 1)
        )
        return cls(cuts=cuts, methods=methods, specs=specs)

    @classmethod
    def for_data(cls, cfg: TrainConfig) -> Topology:
        """The topology for the dataset `cfg.data.name` names (its shapes, without loading it)."""
        from dni_dist.data import dataset_shape

        input_dim, num_classes = dataset_shape(cfg.data.name)
        return cls.from_config(cfg, input_dim=input_dim, num_classes=num_classes)

    def build_stages(
        self,
        cfg: TrainConfig,
        *,
        input_dim: int,
        num_classes: int,
        image_shape: tuple[int, ...] | None = None,
        layers: Sequence[nn.Module] | None = None,
    ) -> list[Stage]:
        """Every stage, initialised from cfg.run.seed (or around the given `layers`, used in place)."""
        adapter: list[nn.Module] = []
        if layers is None and is_vector_model(cfg.model):
            layers, _ = build_layers(cfg.model, input_dim=input_dim, num_classes=num_classes, seed=cfg.run.seed)
        else:
            image = _image_shape(cfg, input_dim, image_shape)
            adapter = input_adapter(image)
            if layers is None:
                layers, _ = build_network(
                    cfg.model, input_dim=input_dim, num_classes=num_classes, image_shape=image, seed=cfg.run.seed
                )
        blocks = split_layers(list(layers), self.cuts)
        if adapter:
            blocks[0] = nn.Sequential(*adapter, *blocks[0])
        return [
            Stage(
                spec,
                block,
                optim=cfg.optim,
                synthetic=cfg.synthetic,
                total_steps=cfg.run.steps,
                seed=cfg.run.seed,
            )
            for spec, block in zip(self.specs, blocks)
        ]

    def error_subscribers(self) -> list[int]:
        """Stages whose update is driven by the broadcast output error."""
        return [i for i, m in enumerate(self.methods) if m in DIRECT_METHODS]

    def route(self, msg: Message) -> list[int]:
        if msg.kind is Kind.ACTIVATION:
            return [msg.sender + 1]
        if msg.kind is Kind.GRADIENT:
            return [msg.sender - 1]
        return self.error_subscribers()
