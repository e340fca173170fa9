"""One stage of a decoupled network: its module, optimizer, outgoing interface and step logic.

    stage = Stage(spec, module, optim=OptimConfig(), synthetic=SyntheticConfig(), total_steps=500)
    out = stage.forward(step, x, y)      # -> [activation, maybe gradient / output error]
    out = stage.receive(gradient_msg)     # -> [maybe gradient upstream]

The stage never touches sockets: it consumes and returns `Message`s, so the in-process
trainer and the ZeroMQ worker drive the very same code (docs/architecture.md).

[Note: what each method of the outgoing interface does]
Let h = f_i(x) be this stage's output, N the batch size, and g the signal that updates θ_i
(h.backward(g)); x.grad = J_iᵀ g is then what goes back upstream as the previous interface's
target, for the methods that want one (bp, fa, sg, sg_beta).
- sg:      g = SG(h, y)/N at once (update-unlocked). When δ = target for this step arrives,
           SG takes one step on mse(SG(h, y), N·δ) (the per-example gradient).
- sg_beta: waits for δ; g = SG(h, y)/N + β·∂mse(SG(h, y), N·δ)/∂h (conspiring SG).
- bp, fa:  waits for δ from the next stage; g = δ. (fa changes how the *next* stage computes
           δ: its linear layers send errors back through fixed random matrices.)
- dfa, kb: waits for the output error e broadcast by the last stage; g = e·B.
- last stage: g = ∂L/∂h from the loss; broadcasts e = g when any interface is dfa/kb.
The Jacobian sent upstream is always taken before this stage's optimizer step.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dni_dist.config import OptimConfig, SyntheticConfig
from dni_dist.feedback import direct_feedback_matrix, to_feedback_alignment
from dni_dist.losses import accuracy, get_loss, output_width
from dni_dist.messages import Kind, Message, MessageId
from dni_dist.optim import lr_factor, make_optimizer
from dni_dist.sg_step import sg_step
from dni_dist.stage_stats import LagRecord, SGRecord, StageStats, UpdateRecord
from dni_dist.synthetic import SyntheticGradient, make_synthetic_gradient

log = logging.getLogger(__name__)

TARGET_METHODS = frozenset({"bp", "fa", "sg", "sg_beta"})
"""Interface methods whose upstream stage needs a gradient back from the downstream stage."""
DIRECT_METHODS = frozenset({"dfa", "kb"})
"""Interface methods driven by the broadcast output error."""


class ProtocolError(ValueError):
    """A message this stage cannot use (wrong kind for its method, unknown or duplicate step,
    wrong shape or dtype). The caller counts it under `reason` and drops it; the stage's state is
    unchanged."""

    def __init__(self, message: str, *, reason: str = "protocol") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, kw_only=True)
class StageSpec:
    index: int
    num_stages: int
    in_method: str | None  # method of the interface above this stage's input (None for stage 0)
    out_method: str | None  # method of the interface on this stage's output (None for the last)
    in_dim: int  # elements of one example's input (the product of in_shape)
    out_dim: int  # elements of one example's output
    num_classes: int
    loss: str = "ce"
    beta: float = 0.0
    feedback_scale: float = 1.0
    broadcast_error: bool = False  # last stage: send e = ∂L/∂ŷ to dfa/kb stages
    in_shape: tuple[int, ...] = ()  # one example's input, e.g. (C, H, W); () means (in_dim,)
    out_shape: tuple[int, ...] = ()  # one example's output; () means (out_dim,)

    def __post_init__(self) -> None:
        for name, dim in (("in_shape", self.in_dim), ("out_shape", self.out_dim)):
            shape = getattr(self, name) or (dim,)
            if math.prod(shape) != dim:
                raise ValueError(f"stage {self.index}: {name} {shape} has {math.prod(shape)} elements, not {dim}")
            object.__setattr__(self, name, tuple(shape))

    @property
    def num_outputs(self) -> int:
        """Width of the network output ŷ (and of the broadcast error e = ∂L/∂ŷ)."""
        return output_width(self.loss, self.num_classes)

    @property
    def is_last(self) -> bool:
        return self.index == self.num_stages - 1

    @property
    def sends_gradient(self) -> bool:
        """Whether this stage returns J_iᵀ g to the previous stage."""
        return self.in_method in TARGET_METHODS


@dataclass
class _Pending:
    """A forward step whose update or SG target has not arrived yet."""

    x: torch.Tensor | None  # input leaf (with grad) when a gradient must go upstream
    h: torch.Tensor  # output; still attached to the graph while the update is pending
    y: torch.Tensor
    sent_at: float  # time.monotonic() of the forward, for lag in seconds
    source: MessageId | None  # the activation it ran on (None at stage 0: data)


class Stage:
    def __init__(
        self,
        spec: StageSpec,
        module: nn.Module,
        *,
        optim: OptimConfig,
        synthetic: SyntheticConfig,
        total_steps: int,
        seed: int,
    ) -> None:
        self.spec = spec
        self.module = module
        self.prefix = f"[stage {spec.index}]"
        generator = torch.Generator().manual_seed(seed * 1009 + spec.index)
        if spec.in_method == "fa" or (spec.index == 0 and spec.out_method == "fa"):
            n = to_feedback_alignment(module, generator)
            log.debug("%s feedback alignment on %d linear layers", self.prefix, n)
        params = [p for p in module.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(params, optim) if params else None
        self.scheduler = (  # none for a constant rate: LambdaLR.step() costs Python time every step
            torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(optim, total_steps, s))
            if self.optimizer is not None and optim.schedule != "constant"
            else None
        )
        self.sg: SyntheticGradient | None = None
        self.sg_optimizer: torch.optim.Optimizer | None = None
        self.sg_every = synthetic.update_every
        if spec.out_method in ("sg", "sg_beta"):
            # an MLP SG's hidden layers are random: seed them from run.seed, never from the global RNG
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed * 1009 + spec.index + 500_009)
                self.sg = make_synthetic_gradient(synthetic, act_shape=spec.out_shape, label_dim=spec.num_classes)
            if spec.out_method == "sg_beta" and synthetic.update_every > 1:
                raise ValueError("synthetic.update_every > 1 applies to sg; sg_beta's update needs the SG every step")
            sg_cfg = OptimConfig(name=synthetic.optimizer, lr=synthetic.lr)
            self.sg_optimizer = make_optimizer(list(self.sg.parameters()), sg_cfg)
        self.feedback: torch.Tensor | None = None
        if spec.out_method in DIRECT_METHODS:
            self.feedback = direct_feedback_matrix(
                spec.out_method,
                num_outputs=spec.num_outputs,
                dim=spec.out_dim,
                generator=generator,
                scale=spec.feedback_scale,
            )
        self.loss_fn = get_loss(spec.loss)
        self.dtype = next((p.dtype for p in module.parameters()), torch.float32)  # what inputs must be
        self.pending: OrderedDict[int, _Pending] = OrderedDict()
        self.last_step = -1  # latest step forwarded
        self.stats = StageStats()

    # -- scheduling -------------------------------------------------------------------------
    @property
    def ready_for_forward(self) -> bool:
        """False while a locked update (bp/fa/sg_beta/dfa/kb) of an earlier step is outstanding:
        the next forward would run on weights that are about to change under a live graph."""
        return self.spec.out_method in (None, "sg") or not self.pending

    @property
    def awaiting(self) -> Kind | None:
        """The message kind this stage needs before it can update, if any."""
        if not self.pending or self.spec.out_method == "sg":
            return None
        return Kind.OUTPUT_ERROR if self.spec.out_method in DIRECT_METHODS else Kind.GRADIENT

    # -- events -----------------------------------------------------------------------------
    def forward(self, step: int, x: torch.Tensor, y: torch.Tensor, source: MessageId | None = None) -> list[Message]:
        """Run the module on a training batch (the data at stage 0, a received activation after,
        named by `source` for the dependency record)."""
        spec = self.spec
        if not self.ready_for_forward:
            raise ProtocolError(
                f"{self.prefix} step {step}: forward while the update of step "
                f"{next(iter(self.pending))} still waits for its {self.awaiting and self.awaiting.value}",
                reason="out_of_order",
            )
        if step <= self.last_step:
            raise ProtocolError(
                f"{self.prefix} step {step}: already forwarded step {self.last_step}", reason="duplicate_step"
            )
        if x.dtype != self.dtype or y.dtype != self.dtype:
            raise ProtocolError(
                f"{self.prefix} step {step}: expected {self.dtype} input and labels, got {x.dtype} and {y.dtype}",
                reason="wrong_dtype",
            )
        if tuple(x.shape[1:]) != spec.in_shape or y.shape != (x.shape[0], spec.num_classes):
            raise ProtocolError(
                f"{self.prefix} step {step}: expected input [N, {', '.join(map(str, spec.in_shape))}] and labels "
                f"[N, {spec.num_classes}], got {tuple(x.shape)} and {tuple(y.shape)}",
                reason="wrong_shape",
            )
        self.last_step = step
        self.module.train()
        needs_x_grad = spec.index > 0 and spec.sends_gradient
        x = x.detach().requires_grad_(needs_x_grad)
        with torch.enable_grad():
            h = self.module(x)
        src = () if source is None else (source,)
        if spec.is_last:
            return self._finish_last(step, x if needs_x_grad else None, h, y, src)
        out = [Message(Kind.ACTIVATION, step, spec.index, h.detach(), y)]
        if spec.out_method == "sg":
            assert self.sg is not None
            with torch.no_grad():
                g = self.sg(h.detach(), y) / h.shape[0]
            out += self._update(step, x if needs_x_grad else None, h, g, waited=None, deps=src)
            self.pending[step] = _Pending(None, h.detach(), y, time.monotonic(), source)
        else:
            self.pending[step] = _Pending(x if needs_x_grad else None, h, y, time.monotonic(), source)
        return out

    def receive(self, msg: Message) -> list[Message]:
        """Apply a gradient (target) or output error for an earlier forward step."""
        spec = self.spec
        expected = self.awaiting if spec.out_method != "sg" else Kind.GRADIENT
        if spec.out_method is None or msg.kind is not expected:
            raise ProtocolError(
                f"{self.prefix} cannot use {msg.describe()}: interface method is {spec.out_method}", reason="wrong_kind"
            )
        entry = self.pending.get(msg.step)
        if entry is None:
            raise ProtocolError(
                f"{self.prefix} {msg.describe()}: no forward pending for that step", reason="unknown_step"
            )
        want = (entry.h.shape[0], spec.num_outputs) if msg.kind is Kind.OUTPUT_ERROR else tuple(entry.h.shape)
        if tuple(msg.tensor.shape) != want:
            raise ProtocolError(
                f"{self.prefix} {msg.describe()}: expected shape {want} for step {msg.step}", reason="wrong_shape"
            )
        if msg.tensor.dtype != entry.h.dtype:
            raise ProtocolError(
                f"{self.prefix} {msg.describe()}: expected {entry.h.dtype}, got {msg.tensor.dtype}",
                reason="wrong_dtype",
            )
        del self.pending[msg.step]
        self.stats.lags.append(LagRecord(msg.step, self.last_step - msg.step, time.monotonic() - entry.sent_at))
        deps = (msg.id,) if entry.source is None else (entry.source, msg.id)
        if msg.kind is Kind.OUTPUT_ERROR:
            assert self.feedback is not None
            g = (msg.tensor @ self.feedback).view(entry.h.shape)  # e·B, one flat row per example
            return self._update(msg.step, entry.x, entry.h, g, waited="output_error", deps=deps)
        if spec.out_method == "sg":
            if msg.step % self.sg_every == 0:  # synthetic.update_every: the other targets only free the step
                self._train_sg(msg.step, entry.h, entry.y, msg.tensor, beta=None)
            return []
        if spec.out_method == "sg_beta":
            g = self._train_sg(msg.step, entry.h, entry.y, msg.tensor, beta=spec.beta)
            return self._update(msg.step, entry.x, entry.h, g, waited="gradient", deps=deps)
        return self._update(msg.step, entry.x, entry.h, msg.tensor, waited="gradient", deps=deps)

    def to(self, device: torch.device) -> Stage:
        """Move the module, SG module and feedback matrix (before the first step)."""
        self.module.to(device)
        if self.sg is not None:
            self.sg.to(device)
        if self.feedback is not None:
            self.feedback = self.feedback.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume this stage (not its in-flight steps, which are lost)."""
        return {
            "module": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "sg": self.sg.state_dict() if self.sg is not None else None,
            "sg_optimizer": self.sg_optimizer.state_dict() if self.sg_optimizer is not None else None,
            "feedback": self.feedback,
            "last_step": self.last_step,
            "updates": self.stats.updates,
            "waits": dict(self.stats.waits),
            "dependencies": dict(self.stats.dependencies),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        for obj, key in (
            (self.optimizer, "optimizer"),
            (self.scheduler, "scheduler"),
            (self.sg, "sg"),
            (self.sg_optimizer, "sg_optimizer"),
        ):
            if (obj is None) != (state[key] is None):
                raise ValueError(f"{self.prefix} checkpoint {key} does not match this stage's configuration")
            if obj is not None:
                obj.load_state_dict(state[key])
        if state["feedback"] is not None:
            self.feedback = state["feedback"]
        self.last_step = int(state["last_step"])
        self.stats.updates = int(state["updates"])
        self.stats.waits = Counter({str(k): int(v) for k, v in state["waits"].items()})
        self.stats.dependencies = Counter({str(k): int(v) for k, v in state.get("dependencies", {}).items()})
        self.pending.clear()

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        self.module.eval()
        return self.module(x)  # type: ignore[no-any-return]

    # -- internals --------------------------------------------------------------------------
    def _finish_last(
        self, step: int, x: torch.Tensor | None, h: torch.Tensor, y: torch.Tensor, deps: tuple[MessageId, ...]
    ) -> list[Message]:
        broadcast = self.spec.broadcast_error
        with torch.enable_grad():
            if not h.requires_grad:  # an empty (identity) last stage whose input needs no grad
                h = h.detach().requires_grad_(broadcast)
            elif broadcast and not h.is_leaf:
                h.retain_grad()  # e = ∂L/∂ŷ comes out of the same backward pass
            loss = self.loss_fn(h, y)
        self.stats.train.append((step, float(loss.detach()), accuracy(h.detach(), y)))
        out = self._update(step, x, loss, None, waited=None, deps=deps)
        if broadcast:
            assert h.grad is not None
            out.append(Message(Kind.OUTPUT_ERROR, step, self.spec.index, h.grad.detach()))
        return out

    def _update(
        self,
        step: int,
        x: torch.Tensor | None,
        h: torch.Tensor,
        g: torch.Tensor | None,
        *,
        waited: str | None,
        deps: tuple[MessageId, ...],
    ) -> list[Message]:
        """Backpropagate g into h (or a scalar loss h when g is None), step the optimizer, and
        return the input gradient for the previous stage when it wants one. `deps`: the received
        messages g and h came from (the dependency record)."""
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
        if h.requires_grad:
            torch.autograd.backward(h, None if g is None else g.detach())
        out: list[Message] = []
        if x is not None:
            grad = x.grad if x.grad is not None else torch.zeros_like(x)
            out.append(Message(Kind.GRADIENT, step, self.spec.index, grad.detach()))
        if self.optimizer is not None:
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.stats.updates += 1
        self.stats.waits[waited or "none"] += 1
        self.stats.record_update(UpdateRecord(step, deps))
        return out

    def _train_sg(
        self, step: int, h: torch.Tensor, y: torch.Tensor, delta: torch.Tensor, *, beta: float | None
    ) -> torch.Tensor:
        """One SG optimizer step towards the per-example target N·δ (dni_dist.sg_step); with
        `beta`, return the conspiring update signal SG/N + β·∂loss/∂h for this stage's module."""
        assert self.sg is not None and self.sg_optimizer is not None
        signal, loss, cos = sg_step(self.sg, self.sg_optimizer, h, y, delta, beta=beta)
        self.stats.sg.append(SGRecord(step, loss, cos))
        return signal
