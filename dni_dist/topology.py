"""From a config to stages: cut points, interface methods, per-stage specs, message routing.

    topo = Topology.from_config(cfg, input_dim=784, num_classes=10)
    stages = topo.build_stages(cfg)          # Stage objects, initialised from cfg.run.seed
    topo.route(msg)                          # -> stage indices that must receive msg
    assign_blocks(topo.num_stages, blocks=4)  # -> [(first, last) stage of each block]

Shared by the in-process trainer and the distributed worker, so both cut, initialise and
wire the network identically.
"""

from __future__ import annotations

from dataclasses import dataclass

from dni_dist.config import TrainConfig
from dni_dist.messages import Kind, Message
from dni_dist.models import build_layers, split_layers
from dni_dist.stage import DIRECT_METHODS, Stage, StageSpec


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
    def from_config(cls, cfg: TrainConfig, *, input_dim: int, num_classes: int) -> Topology:
        _, widths = build_layers(cfg.model, input_dim=input_dim, num_classes=num_classes, seed=0)
        cuts = cfg.split.resolve(cfg.model.num_layers)
        methods = cfg.credit.methods(len(cuts))
        bounds = [0, *cuts, len(widths)]
        dims = [input_dim, *widths]
        broadcast = any(m in DIRECT_METHODS for m in methods)
        specs = tuple(
            StageSpec(
                index=i,
                num_stages=len(cuts) + 1,
                in_method=methods[i - 1] if i > 0 else None,
                out_method=methods[i] if i < len(cuts) else None,
                in_dim=dims[bounds[i]],
                out_dim=dims[bounds[i + 1]],
                num_classes=num_classes,
                loss=cfg.model.loss,
                beta=cfg.credit.beta if i < len(cuts) and methods[i] == "sg_beta" else 0.0,
                feedback_scale=cfg.credit.feedback_scale,
                broadcast_error=broadcast and i == len(cuts),
            )
            for i in range(len(cuts) + 1)
        )
        return cls(cuts=cuts, methods=methods, specs=specs)

    def build_stages(self, cfg: TrainConfig, *, input_dim: int, num_classes: int) -> list[Stage]:
        layers, _ = build_layers(cfg.model, input_dim=input_dim, num_classes=num_classes, seed=cfg.run.seed)
        blocks = split_layers(layers, self.cuts)
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
