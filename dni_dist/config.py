"""The one validated configuration tree of a run: keyword-only, frozen dataclasses.

    from dni_dist.config import TrainConfig, RuntimeConfig
    cfg = TrainConfig(runtime=RuntimeConfig(max_inflight=4))

A recipe (dni_dist/recipes.py) has one table per section ([model], [split], [credit],
[synthetic], [optim], [data], [run], [runtime]); every field is optional and falls back to the
defaults below. Each dataclass validates itself and raises ConfigError naming the field.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from typing import Any

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover - exercised on Python 3.10 only
    pass  # type: ignore[import-not-found, unused-ignore]

METHODS = ("bp", "sg", "sg_beta", "fa", "dfa", "kb")
"""Credit-assignment methods of an interface (docs/design.md)."""

MODEL_KINDS = ("linear", "deep-linear", "mlp", "cnn")
PLACEMENTS = ("none", "middle", "every", "even", "output", "explicit")
SG_KINDS = ("auto", "linear", "mlp", "conv", "sigmoid")
CONDITIONINGS = ("activation+label", "activation", "label")
GIVEN_STAGES = "<stages>"
"""`model.factory` of a run whose stage modules were handed to `dni_dist.train(stages=[...])`."""


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and how to fix it."""


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {message}")


def _one_of(value: str, allowed: tuple[str, ...], name: str) -> None:
    _check(value in allowed, name, f"got {value!r}, expected one of {', '.join(allowed)}")


@dataclass(kw_only=True, frozen=True)
class ModelConfig:
    """The network before it is cut into stages. Input/output sizes come from the data.

    Your own network: `factory = "pkg.module:build"` or `"path/to/file.py:build"` names a
    function returning a list of stage modules, an nn.Sequential, or (nn.Sequential, split
    points); `kind` and its fields are then ignored (docs/models.md)."""

    kind: str = "mlp"  # linear | deep-linear | mlp | cnn
    depth: int = 6  # hidden layers (ignored by `linear`); cnn: Conv-BN-ReLU layers
    width: int = 512  # units per hidden layer; cnn: channels of every conv layer unless `channels` is set
    activation: str = "relu"  # relu | tanh (mlp only)
    batch_norm: bool = True  # Linear -> BatchNorm -> activation, as in the paper's MNIST nets
    # ce (softmax cross-entropy) | mse (mean over batch and outputs) | bce (two-class data only: one
    # output logit z, sigmoid cross-entropy; the paper's "single output neuron" variant, App. C)
    loss: str = "ce"
    channels: tuple[int, ...] = ()  # cnn: output channels of each conv layer (one per layer; empty: `width`)
    pool: tuple[int, ...] = ()  # cnn: conv layers (1-based) followed by a 2x2 max-pool
    factory: str = ""  # your own model: "pkg.module:build" or "path/to/file.py:build" (replaces `kind`)
    layers: int = 0  # factory: layers it yields; found by probing it when the TrainConfig is validated

    def __post_init__(self) -> None:
        _one_of(self.kind, MODEL_KINDS, "model.kind")
        _check(self.depth >= 0, "model.depth", f"must be >= 0, got {self.depth}")
        _check(self.kind == "linear" or self.depth >= 1, "model.depth", f"{self.kind} needs depth >= 1")
        _check(self.width >= 1, "model.width", f"must be >= 1, got {self.width}")
        _one_of(self.activation, ("relu", "tanh"), "model.activation")
        _one_of(self.loss, ("ce", "mse", "bce"), "model.loss")
        cnn = self.kind == "cnn"
        _check(not self.channels or cnn, "model.channels", "only model.kind = 'cnn' has conv channels")
        _check(all(c >= 1 for c in self.channels), "model.channels", f"must all be >= 1, got {list(self.channels)}")
        _check(
            not self.channels or len(self.channels) == self.depth,
            "model.channels",
            f"lists {len(self.channels)} conv layers but model.depth = {self.depth}; give one per layer",
        )
        _check(not self.pool or cnn, "model.pool", "only model.kind = 'cnn' pools")
        _check(
            list(self.pool) == sorted(set(self.pool)) and all(1 <= p <= self.depth for p in self.pool),
            "model.pool",
            f"must be strictly increasing conv layer numbers in 1..{self.depth}, got {list(self.pool)}",
        )
        _check(
            not self.factory or self.factory == GIVEN_STAGES or ":" in self.factory.strip(":"),
            "model.factory",
            f"got {self.factory!r}; expected 'pkg.module:function' or 'path/to/file.py:function'",
        )
        _check(self.layers >= 0, "model.layers", f"must be >= 0, got {self.layers}")
        _check(
            not self.layers or bool(self.factory),
            "model.layers",
            "is filled in from model.factory; leave it unset for built-in models (use model.depth)",
        )

    @property
    def num_layers(self) -> int:
        """Layers the model is made of: the hidden ones plus the output layer (cnn: the conv
        layers plus the linear head; factory: what the factory yields)."""
        if self.factory:
            _check(
                self.layers >= 1,
                "model.layers",
                "unknown until the factory is probed; build the whole TrainConfig (load_recipe, config_from_dict)",
            )
            return self.layers
        return 1 if self.kind == "linear" else self.depth + 1


@dataclass(kw_only=True, frozen=True)
class SplitConfig:
    """Where interfaces sit. A cut k is the boundary after layer k (1-based); a cut equal to
    the number of layers puts an interface between the output and the loss."""

    placement: str = "middle"  # none | middle | every | even | output | explicit
    stages: int = 2  # for `even`: number of stages (as `dni-launch --blocks`)
    cuts: tuple[int, ...] = ()  # for `explicit`

    def __post_init__(self) -> None:
        _one_of(self.placement, PLACEMENTS, "split.placement")
        _check(self.stages >= 1, "split.stages", f"must be >= 1, got {self.stages}")
        _check(
            self.placement != "explicit" or len(self.cuts) > 0,
            "split.cuts",
            "placement 'explicit' needs a non-empty list of cuts, e.g. cuts = [2, 4]",
        )
        _check(
            list(self.cuts) == sorted(set(self.cuts)),
            "split.cuts",
            f"must be strictly increasing, got {list(self.cuts)}",
        )

    def resolve(self, num_layers: int) -> tuple[int, ...]:
        """The cut positions for a model of `num_layers` layers."""
        n = num_layers
        if self.placement == "none":
            return ()
        if self.placement == "middle":
            _check(n >= 2, "split.placement", "'middle' needs a model with at least 2 layers")
            return (max(1, (n - 1) // 2),)
        if self.placement == "every":
            return tuple(range(1, n))
        if self.placement == "output":
            return (n,)
        if self.placement == "even":
            _check(
                self.stages <= n,
                "split.stages",
                f"cannot cut a {n}-layer model into {self.stages} stages; lower stages or raise model.depth",
            )
            return tuple(round(i * n / self.stages) for i in range(1, self.stages))
        bad = [c for c in self.cuts if not 1 <= c <= n]
        _check(not bad, "split.cuts", f"cuts {bad} are outside 1..{n} for a {n}-layer model")
        return self.cuts


@dataclass(kw_only=True, frozen=True)
class CreditConfig:
    """Credit-assignment method per interface (docs/design.md)."""

    method: str = "sg"  # used by every interface not named in `per_interface`
    per_interface: tuple[str, ...] = ()  # optional: one method per interface, in order
    beta: float = 1.0  # weight of the SG-loss gradient for sg_beta ("conspiring" SG)
    feedback_scale: float = 1.0  # scale of DFA's fixed random feedback matrices

    def __post_init__(self) -> None:
        _one_of(self.method, METHODS, "credit.method")
        for i, m in enumerate(self.per_interface):
            _one_of(m, METHODS, f"credit.per_interface[{i}]")
        _check(self.beta >= 0, "credit.beta", f"must be >= 0, got {self.beta}")
        _check(self.feedback_scale > 0, "credit.feedback_scale", "must be > 0")

    def methods(self, num_interfaces: int) -> tuple[str, ...]:
        if not self.per_interface:
            return (self.method,) * num_interfaces
        _check(
            len(self.per_interface) == num_interfaces,
            "credit.per_interface",
            f"lists {len(self.per_interface)} methods but the split has {num_interfaces} interfaces",
        )
        return self.per_interface


@dataclass(kw_only=True, frozen=True)
class SyntheticConfig:
    """The synthetic-gradient module of every `sg`/`sg_beta` interface."""

    # auto: conv for [N, C, H, W] activations, linear otherwise | linear (zero-init) | mlp | conv
    # (conv layers, the last zero-init) | sigmoid (σ(linear) − y for log loss; inside the network
    # (σ(linear) − y)·B: the form of a log-loss gradient behind a linear map)
    kind: str = "auto"
    conditioning: str = "activation+label"  # activation+label (cDNI) | activation | label
    hidden: int = 1024  # mlp: units per hidden layer
    layers: int = 2  # mlp: hidden layers; conv: hidden conv layers (0: one zero-init conv)
    channels: int = 64  # conv: channels of each hidden conv layer
    kernel: int = 3  # conv: kernel size (odd: 'same' padding keeps H x W)
    optimizer: str = "adam"
    lr: float = 1e-3
    rank: int = 0  # linear: A = U·V of this inner width (cheaper; 0 = full d x d); conv: add flat(h)·U·V
    update_every: int = 1  # sg: train the SG on every k-th step's target only (1: every target)

    def __post_init__(self) -> None:
        _one_of(self.kind, SG_KINDS, "synthetic.kind")
        _check(self.rank >= 0, "synthetic.rank", f"must be >= 0 (0 = full rank), got {self.rank}")
        _check(self.rank == 0 or self.kind in ("auto", "linear", "conv"), "synthetic.rank", "not for mlp/sigmoid")
        _check(self.update_every >= 1, "synthetic.update_every", f"must be >= 1, got {self.update_every}")
        _one_of(self.conditioning, CONDITIONINGS, "synthetic.conditioning")
        _check(self.hidden >= 1, "synthetic.hidden", "must be >= 1")
        conv = self.kind in ("conv", "auto")
        _check(self.layers >= (0 if conv else 1), "synthetic.layers", f"must be >= {0 if conv else 1}")
        _check(self.channels >= 1, "synthetic.channels", f"must be >= 1, got {self.channels}")
        _check(self.kernel >= 1 and self.kernel % 2 == 1, "synthetic.kernel", f"must be odd, got {self.kernel}")
        _one_of(self.optimizer, ("adam", "sgd"), "synthetic.optimizer")
        _check(self.lr > 0, "synthetic.lr", f"must be > 0, got {self.lr}")
        _check(
            self.kind != "sigmoid" or self.conditioning == "activation+label",
            "synthetic.conditioning",
            "the sigmoid head predicts σ(hA + yC + b) − y and needs activation+label",
        )


@dataclass(kw_only=True, frozen=True)
class OptimConfig:
    """Optimizer of every block (each stage has its own instance)."""

    name: str = "adam"  # adam | sgd
    lr: float = 1e-3
    momentum: float = 0.0  # sgd only
    schedule: str = "constant"  # constant | cosine (decays to lr * min_lr_factor at run.steps)
    min_lr_factor: float = 0.0
    weight_decay: float = 0.0  # L2 penalty coefficient (added to the gradient)

    def __post_init__(self) -> None:
        _one_of(self.name, ("adam", "sgd"), "optim.name")
        _check(self.lr > 0, "optim.lr", f"must be > 0, got {self.lr}")
        _check(0 <= self.momentum < 1, "optim.momentum", "must be in [0, 1)")
        _one_of(self.schedule, ("constant", "cosine"), "optim.schedule")
        _check(0 <= self.min_lr_factor <= 1, "optim.min_lr_factor", "must be in [0, 1]")
        _check(self.weight_decay >= 0, "optim.weight_decay", "must be >= 0")


@dataclass(kw_only=True, frozen=True)
class DataConfig:
    """What to train on. Artificial sets are named <labels><dim>, e.g. linear2, noisy100, random2."""

    name: str = "mnist"  # mnist | fashion-mnist | grid2 | {linear,noisy,random}{2,100,...}
    batch_size: int = 128  # 0 = full batch
    # IDX files; "" = the dataset's own place: ~/.cache/dni_dist/mnist for mnist (the bundled subset is
    # the fallback), /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist) for fashion-mnist
    data_dir: str = ""
    download: bool = True  # mnist: fetch IDX files when missing (and the network allows)
    mirror: str = "https://ossci-datasets.s3.amazonaws.com/mnist/"
    subset: bool = False  # mnist: force the bundled 5,000-image subset even if full MNIST is present

    def __post_init__(self) -> None:
        from dni_dist.data import parse_dataset_name  # late import: data imports config

        try:
            parse_dataset_name(self.name)
        except ValueError as e:
            raise ConfigError(f"data.name: {e}") from None
        _check(self.batch_size >= 0, "data.batch_size", "must be >= 0 (0 = full batch)")
        _check(
            not self.subset or self.name == "mnist",
            "data.subset",
            f"only mnist has a bundled subset; {self.name} is always read in full",
        )


@dataclass(kw_only=True, frozen=True)
class RunConfig:
    steps: int = 500
    seed: int = 0
    eval_every: int = 0  # evaluate on the test split every N steps (0 = only at the end)
    device: str = "cpu"
    threads: int = 0  # torch intra-op threads (0 = leave torch's default)

    def __post_init__(self) -> None:
        _check(self.steps >= 1, "run.steps", f"must be >= 1, got {self.steps}")
        _check(self.eval_every >= 0, "run.eval_every", "must be >= 0")
        _check(self.threads >= 0, "run.threads", "must be >= 0")


OVERFLOW_POLICIES = ("block", "drop-oldest")


@dataclass(kw_only=True, frozen=True)
class RuntimeConfig:
    """How a ZeroMQ block schedules its steps, bounds staleness, checkpoints and gives up. The
    in-process trainer ignores it (its schedule is lockstep by construction)."""

    lockstep: bool = False  # step t+1 enters block 0 only after step t finished everywhere (== in-process)
    max_inflight: int = 8  # steps an sg interface may run ahead of the targets it has received
    # fixed: max_inflight bounds staleness; auto (for slow links): widen the window to cover the
    # link's round trip, ceil(fastest target round trip / own step time) + 1, up to max_window
    window: str = "fixed"
    max_window: int = 64  # the most steps `window = "auto"` lets an sg interface run ahead
    overflow: str = "block"  # window full: block (wait) | drop-oldest (forget the oldest step, never wait)
    queue_limit: int = 16  # drop-oldest: gradients waiting to be sent beyond this are discarded
    target_timeout_s: float = 30.0  # forget a step whose gradient/target/output error is this late (0 = never)
    checkpoint_every: int = 0  # steps between consistent checkpoints (0: only at the end or on stop)
    keep_checkpoints: int = 3  # complete checkpoint generations kept; older ones are deleted
    peer_timeout_s: float = 15.0  # liveness: a block silent this long is hung; a worker alone gives up
    start_timeout_s: float = 120.0  # liveness: a block not reporting this long after its start is hung
    max_restarts: int = 3  # dni-launch: restarts of one block (dead or hung) before the run fails
    inject_fault: str = ""  # tests: block=I,step=S,kind=kill|exit|hang|partition|delay|drop (dni_dist.faults)
    drain_timeout_s: float = 60.0  # after the last step: how long to wait for outstanding targets
    progress_every_s: float = 0.5  # progress reports (the launcher's heartbeat) and metrics refresh
    # keep every block's weights every N steps for a learning curve (dni_dist.snapshots; in-process:
    # TrainResult.snapshots)
    snapshot_every: int = 0
    relay_links: bool = False  # every inter-block edge through a dni_dist.proxy.FaultProxy (benchmarks)
    link_delay_ms: float = 0.0  # > 0: those proxies hold every chunk this long, one way (a slow link)

    @property
    def window_bound(self) -> int:
        """The most steps an sg interface can have in flight under this config."""
        return self.max_window if self.window == "auto" else self.max_inflight

    def __post_init__(self) -> None:
        from dni_dist.faults import FaultError, parse

        _check(self.max_inflight >= 1, "runtime.max_inflight", f"must be >= 1, got {self.max_inflight}")
        _one_of(self.overflow, OVERFLOW_POLICIES, "runtime.overflow")
        _one_of(self.window, ("auto", "fixed"), "runtime.window")
        _check(
            self.max_window >= self.max_inflight,
            "runtime.max_window",
            f"must be >= runtime.max_inflight ({self.max_inflight}), got {self.max_window}",
        )
        _check(self.snapshot_every >= 0, "runtime.snapshot_every", "must be >= 0 (0 = no snapshots)")
        _check(self.link_delay_ms >= 0, "runtime.link_delay_ms", f"must be >= 0, got {self.link_delay_ms}")
        _check(self.queue_limit >= 1, "runtime.queue_limit", f"must be >= 1, got {self.queue_limit}")
        _check(self.target_timeout_s >= 0, "runtime.target_timeout_s", "must be >= 0 (0 = wait forever)")
        _check(self.checkpoint_every >= 0, "runtime.checkpoint_every", "must be >= 0 (0 = at the end only)")
        _check(self.keep_checkpoints >= 1, "runtime.keep_checkpoints", f"must be >= 1, got {self.keep_checkpoints}")
        _check(
            self.max_restarts >= 0, "runtime.max_restarts", f"must be >= 0 (0 = no restart), got {self.max_restarts}"
        )
        for name in ("peer_timeout_s", "start_timeout_s", "drain_timeout_s", "progress_every_s"):
            _check(getattr(self, name) > 0, f"runtime.{name}", f"must be > 0, got {getattr(self, name)}")
        _check(
            self.progress_every_s < self.peer_timeout_s,
            "runtime.progress_every_s",
            f"the heartbeat ({self.progress_every_s}s) must come more often than runtime.peer_timeout_s "
            f"({self.peer_timeout_s}s)",
        )
        try:
            parse(self.inject_fault)
        except FaultError as e:
            raise ConfigError(f"runtime.inject_fault: {e}") from None


@dataclass(kw_only=True, frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    credit: CreditConfig = field(default_factory=CreditConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        """Cross-section checks that need only the config. A model factory is resolved, and a
        cnn or factory model checked on one sample batch, by recipes.config_from_dict (the modules
        that do it import this one); until then the checks that need its layers wait."""
        if self.model.factory and self.model.layers < 1:
            return
        cuts = self.split.resolve(self.model.num_layers)
        self.credit.methods(len(cuts))  # raises when credit.per_interface does not match the cuts
        if self.model.loss == "bce":
            from dni_dist.data import dataset_shape  # late import: data imports config

            classes = dataset_shape(self.data.name)[1]
            _check(
                classes == 2, "model.loss", f"'bce' needs a two-class dataset; {self.data.name} has {classes} classes"
            )
        _check(
            self.synthetic.kind != "conv" or self.model.kind == "cnn" or bool(self.model.factory),
            "synthetic.kind",
            f"'conv' needs [N, C, H, W] activations; model.kind = {self.model.kind} has flat ones (use auto or linear)",
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
