"""One worker process: a block of consecutive stages, its ZeroMQ edges, metrics, checkpoints.

    dni-worker --block 1 --blocks 4 --config-json runs/x/config.json --out runs/x   # as dni-launch runs it
    torchrun --nproc-per-node 2 -m dni_dist.worker --recipe launch/demo.toml --out runs/t  # block = RANK

The loop separates I/O from the step logic (which lives in Block/Stage): it flushes outboxes,
takes every gradient / output error that has arrived, then admits one new activation (block 0:
one new batch) when the block is ready, the credit window allows and, in lockstep mode, the
previous step has finished everywhere. When there is nothing to do it polls, and the idle time
is booked to what it waited for — that is how the runtime *measures* locking.

[Note: ending a run]
Block 0 sends `end` after its last batch; every block forwards it at once (its activations
were already sent: the edge is FIFO), then drains: it stops when no local stage still waits
for a target, or after `drain_timeout_s`. SIGINT/SIGTERM or a `stop` from the launcher end the
loop early. Either way the block writes its checkpoint and its stats before it exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import math
import os
import signal
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import msgpack
import torch
import zmq

from dni_dist import checkpoint
from dni_dist.block import Block
from dni_dist.config import TrainConfig
from dni_dist.data import BatchStream, dataset_shape, load_dataset
from dni_dist.messages import Kind, Marker, MarkerKind, Message
from dni_dist.metrics import NullMetrics, make_metrics
from dni_dist.rendezvous import Rendezvous
from dni_dist.stage import ProtocolError
from dni_dist.topology import Topology
from dni_dist.transport import TransportConfig, ZmqReceiver, ZmqSender, make_socket

log = logging.getLogger(__name__)

OVERFLOW_POLICIES = ("block", "drop-oldest")


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    block: int
    blocks: int
    run_id: str
    out: str  # checkpoints/ and blocks/ (stats) go here
    lockstep: bool = False  # follow the in-process schedule exactly (step t+1 after t finished everywhere)
    max_inflight: int = 8  # steps an sg interface may run ahead of the targets it has received
    overflow: str = "block"  # when the window is full: block (wait) | drop-oldest (forget the oldest step)
    queue_limit: int = 16  # gradients waiting to be sent; drop-oldest discards beyond this (block: never)
    target_timeout_s: float = 0.0  # block policy: forget a step whose target is this late (0 = wait forever);
    # lets the run go on when targets were lost with a restarted neighbour
    checkpoint_every: int = 0  # steps between checkpoints (0: only at the end or on stop)
    resume: bool = False  # start from out/checkpoints/block<k>.pt when it exists
    metrics_port: int = 0  # the port this block serves /metrics on (0 = off)
    metrics_addr: str = "127.0.0.1"
    host: str = "127.0.0.1"  # address this worker advertises to its neighbours (and binds, unless `bind`)
    bind: str = ""  # address to bind, e.g. 0.0.0.0 in a container whose name is `host`
    port: int = 0  # fixed ports port, port+1, port+2 (activations, gradients, errors); 0 = any free port
    control: str | None = None  # the launcher's ROUTER endpoint (None under torchrun)
    drain_timeout_s: float = 60.0
    peer_timeout_s: float = 600.0  # give up when nothing arrives for this long while waiting
    progress_every_s: float = 0.5
    transport: TransportConfig = field(default_factory=TransportConfig)

    def __post_init__(self) -> None:
        if not 0 <= self.block < self.blocks:
            raise ValueError(f"block {self.block} is outside 0..{self.blocks - 1}")
        if self.max_inflight < 1:
            raise ValueError(f"max_inflight must be >= 1, got {self.max_inflight}")
        if self.overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, got {self.overflow!r}")


def assign_blocks(num_stages: int, blocks: int) -> list[tuple[int, int]]:
    """Consecutive stage ranges (first, last), as even as possible, one per block."""
    if not 1 <= blocks <= num_stages:
        raise ValueError(
            f"cannot place {num_stages} stages on {blocks} blocks: use at most {num_stages} blocks "
            "or cut the model into more stages (split.placement = 'even', split.stages = N)"
        )
    bounds = [round(i * num_stages / blocks) for i in range(blocks + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(blocks)]


def percentiles(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"p50": 0.0, "p90": 0.0, "max": 0.0, "count": 0}
    ordered = sorted(values)

    def pct(q: float) -> float:
        return float(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)])

    return {"p50": pct(0.5), "p90": pct(0.9), "max": float(ordered[-1]), "count": len(ordered)}


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the launcher dies, so no worker is ever orphaned."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the launcher's stop still works
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Worker:
    def __init__(self, cfg: TrainConfig, wcfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.wcfg = wcfg
        k = wcfg.block
        self.k = k
        self.prefix = f"[block {k}]"
        self.input_dim, self.num_classes = dataset_shape(cfg.data.name)
        self.topology = Topology.from_config(cfg, input_dim=self.input_dim, num_classes=self.num_classes)
        self.ranges = assign_blocks(self.topology.num_stages, wcfg.blocks)
        first, last = self.ranges[k]
        all_stages = self.topology.build_stages(cfg, input_dim=self.input_dim, num_classes=self.num_classes)
        self.device = torch.device(cfg.run.device)
        stages = [s.to(self.device) for s in all_stages[first : last + 1]]
        self.block = Block(self.topology, stages, first=first)
        self.is_first, self.is_last = k == 0, k == wcfg.blocks - 1
        subscribers = self.topology.error_subscribers()
        self.subscribes = any(first <= i <= last for i in subscribers) and not self.is_last
        self.remote_subscriber_blocks = sorted(
            {b for b, (lo, hi) in enumerate(self.ranges) if b != k and any(lo <= i <= hi for i in subscribers)}
        )
        self.metrics: NullMetrics = NullMetrics()
        self.waits: dict[str, float] = {}  # idle seconds by reason
        self.dropped: Counter[str] = Counter()
        self.protocol_rejects: Counter[str] = Counter()
        self.dropped_steps: set[int] = set()
        self.steps = 0  # activations (block 0: batches) this block has forwarded
        self.samples = 0
        self.compute_seconds = 0.0
        self.stop_requested = False
        self.status = "running"
        self.restarts = 0
        self.next_step = 0  # block 0: the next step to feed
        self.end_step: int | None = None  # last step of the run, once known
        self.done_below = -1  # lockstep: every block below has finished this step
        self.done_sent = -1
        self.last_forward = -1
        self._lag_seen = [0] * len(stages)
        self._window_lag: tuple[int, float] = (0, 0.0)  # largest lag since the last metrics publish
        self._sg_seen = [0] * len(stages)

    # -- setup ------------------------------------------------------------------------------
    def _checkpoint_path(self) -> Path:
        return checkpoint.block_path(self.wcfg.out, self.k)

    def _resume(self) -> None:
        path = self._checkpoint_path()
        if not (self.wcfg.resume and path.is_file()):
            return
        state = checkpoint.load(path)
        if (state["first"], state["last"]) != self.ranges[self.k]:
            raise checkpoint.CheckpointError(
                f"{path} holds stages {state['first']}-{state['last']}, this block has {self.ranges[self.k]}"
            )
        for stage, s in zip(self.block.stages, state["stages"]):
            stage.load_state_dict(s)
        self.steps = int(state["steps"])
        self.samples = int(state["samples"])
        self.restarts = int(state.get("restarts", 0)) + 1
        self.last_forward = max(s.last_step for s in self.block.stages)
        self.metrics.restart()
        log.info("%s resumed from %s at step %d (restart %d)", self.prefix, path, self.last_forward, self.restarts)

    def save_checkpoint(self) -> None:
        first, last = self.ranges[self.k]
        checkpoint.save(
            self._checkpoint_path(),
            {
                "block": self.k,
                "first": first,
                "last": last,
                "stages": [s.state_dict() for s in self.block.stages],
                "steps": self.steps,
                "samples": self.samples,
                "restarts": self.restarts,
                "config": json.dumps(self.cfg.to_dict()),
            },
        )

    def _open(self, rdv: Rendezvous) -> None:
        w, k, tcfg = self.wcfg, self.k, self.wcfg.transport
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.act_in = self.grad_in = self.err_sub = None
        self.act_out = self.grad_out = self.err_pub = None
        if not self.is_first:
            sock = make_socket(self.ctx, zmq.PULL, tcfg)
            rdv.publish(f"block{k}/act", self._bind(sock, 0))
            self.act_in = self._receiver(sock, k - 1, {"activation", "end"}, "activation")
        if not self.is_last:
            sock = make_socket(self.ctx, zmq.PULL, tcfg)
            rdv.publish(f"block{k}/grad", self._bind(sock, 1))
            self.grad_in = self._receiver(sock, k + 1, {"gradient", "done"}, "gradient")
        if self.is_last and self.remote_subscriber_blocks:
            self.xpub = make_socket(self.ctx, zmq.XPUB, tcfg)
            self.xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
            rdv.publish("errors", self._bind(self.xpub, 2))
            self.err_pub = ZmqSender(self.xpub, run=w.run_id, block=k, track_bytes=tcfg.track_bytes)
        if not self.is_last:
            sock = make_socket(self.ctx, zmq.PUSH, tcfg)
            sock.connect(rdv.lookup(f"block{k + 1}/act"))
            self.act_out = ZmqSender(sock, run=w.run_id, block=k, track_bytes=tcfg.track_bytes)
        if not self.is_first:
            sock = make_socket(self.ctx, zmq.PUSH, tcfg)
            sock.connect(rdv.lookup(f"block{k - 1}/grad"))
            self.grad_out = ZmqSender(sock, run=w.run_id, block=k, track_bytes=tcfg.track_bytes)
        if self.subscribes:
            sock = make_socket(self.ctx, zmq.SUB, tcfg)
            sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.connect(rdv.lookup("errors"))
            self.err_sub = self._receiver(sock, w.blocks - 1, {"output_error"}, "output-error")
        log.info(
            "%s listening on %s",
            self.prefix,
            ", ".join(
                f"{name} {sock.sock.getsockopt_string(zmq.LAST_ENDPOINT)}"
                for name, sock in (("activations", self.act_in), ("gradients", self.grad_in))
                if sock is not None
            )
            or "nothing (single block)",
        )
        if self.err_pub is not None:  # PUB/SUB drops what is sent before a subscription lands
            self._await_subscriptions(len(self.remote_subscriber_blocks))
        self.control = None
        if w.control:
            self.control = self.ctx.socket(zmq.DEALER)
            self.control.setsockopt(zmq.IDENTITY, f"block-{k}".encode())
            self.control.setsockopt(zmq.LINGER, 1000)
            self.control.connect(w.control)
        rdv.publish(f"block{k}/resume_step", str(self.last_forward))
        rdv.publish(f"block{k}/ready", "1")
        if self.is_first:
            for b in range(w.blocks):
                rdv.lookup(f"block{b}/ready")
            resumed = [int(rdv.lookup(f"block{b}/resume_step")) for b in range(w.blocks)]
            self.next_step = max(resumed) + 1
        self.end_step = self.cfg.run.steps - 1 if self.is_first else None
        if self.is_first and self.next_step > self.cfg.run.steps - 1 and self.act_out is not None:
            log.info(
                "%s nothing left to train (resumed at step %d of %d)", self.prefix, self.next_step, self.cfg.run.steps
            )
            self.act_out.send(Marker(MarkerKind.END, max(self.next_step - 1, 0), self.k))

    def _receiver(self, sock: zmq.Socket[Any], sender: int, kinds: set[str], edge: str) -> ZmqReceiver:
        return ZmqReceiver(
            sock,
            run=self.wcfg.run_id,
            expect_block=sender,
            allowed=frozenset(kinds),
            prefix=self.prefix,
            edge=edge,
            max_bytes=self.wcfg.transport.max_tensor_bytes,
        )

    def _bind(self, sock: zmq.Socket[Any], offset: int) -> str:
        """Bind on --bind (fixed port --port + offset, or a free one) and return the endpoint the
        neighbours should dial: --host with that port."""
        w = self.wcfg
        bind = f"tcp://{w.bind or w.host}"
        if w.port:
            port = w.port + offset
            sock.bind(f"{bind}:{port}")
        else:
            port = sock.bind_to_random_port(bind)
        return f"tcp://{w.host}:{port}"

    def _await_subscriptions(self, expected: int) -> None:
        seen, deadline = 0, time.monotonic() + self.wcfg.peer_timeout_s
        while seen < expected:
            if self.xpub.poll(200):
                if self.xpub.recv()[:1] == b"\x01":
                    seen += 1
            elif time.monotonic() > deadline:
                raise TimeoutError(f"{self.prefix} only {seen} of {expected} output-error subscribers connected")
            if self.stop_requested:
                return

    # -- the loop ---------------------------------------------------------------------------
    def _senders(self) -> list[ZmqSender]:
        return [s for s in (self.act_out, self.grad_out, self.err_pub) if s is not None]

    def _receivers(self) -> list[ZmqReceiver]:
        return [r for r in (self.act_in, self.grad_in, self.err_sub) if r is not None]

    def _dispatch(self, outbound: list[Message]) -> None:
        for msg in outbound:
            if msg.kind is Kind.ACTIVATION:
                assert self.act_out is not None
                self.act_out.send(msg)
            elif msg.kind is Kind.GRADIENT:
                assert self.grad_out is not None
                if self.wcfg.overflow == "drop-oldest" and self.grad_out.backlog >= self.wcfg.queue_limit:
                    self.grad_out.outbox.popleft()  # upstream can only be this far behind by dropping
                    self.dropped["gradient_queue"] += 1
                self.grad_out.send(msg)
            elif self.err_pub is not None:
                self.err_pub.send(msg)

    def _to_device(self, msg: Message) -> Message:
        if self.device.type == "cpu":
            return msg
        labels = None if msg.labels is None else msg.labels.to(self.device, non_blocking=True)
        return Message(msg.kind, msg.step, msg.sender, msg.tensor.to(self.device, non_blocking=True), labels)

    def _handle(self, item: Message | Marker) -> None:
        if isinstance(item, Marker):
            if item.kind is MarkerKind.END:
                self.end_step = item.step
                if self.act_out is not None:
                    self.act_out.send(Marker(MarkerKind.END, item.step, self.k))
            else:
                self.done_below = max(self.done_below, item.step)
            return
        start = time.perf_counter()
        try:
            outbound = self.block.deliver(self._to_device(item))
        except ProtocolError as e:
            if item.kind is not Kind.ACTIVATION and item.step in self.dropped_steps:
                self.dropped_steps.discard(item.step)
                self.dropped["stale_target"] += 1
            else:
                self.protocol_rejects["protocol"] += 1
                log.warning("%s dropped %s: %s", self.prefix, item.describe(), e)
            return
        self._dispatch(outbound)
        if item.kind is Kind.ACTIVATION:
            self._after_forward(item.step, item.tensor.shape[0], time.perf_counter() - start)
        self._observe()

    def _after_forward(self, step: int, samples: int, seconds: float) -> None:
        self.steps += 1
        self.samples += samples
        self.last_forward = step
        self.compute_seconds += seconds
        self.metrics.step(samples=samples, seconds=seconds)
        if self.is_last:
            self.done_below = step
        if self.wcfg.checkpoint_every and self.steps % self.wcfg.checkpoint_every == 0:
            self.save_checkpoint()

    def _observe(self) -> None:
        """Feed new lag and SG records of the local stages to the metrics."""
        for i, stage in enumerate(self.block.stages):
            lags, sgs = stage.stats.lags, stage.stats.sg
            for rec in lags[self._lag_seen[i] :]:
                self.metrics.lag(steps=rec.steps, seconds=rec.seconds)
                self._window_lag = (max(self._window_lag[0], rec.steps), max(self._window_lag[1], rec.seconds))
            self._lag_seen[i] = len(lags)
            if len(sgs) > self._sg_seen[i]:
                self.metrics.sg(loss=sgs[-1].loss, cosine=sgs[-1].cosine)
                self._sg_seen[i] = len(sgs)
        if self.is_last and self.block.stages[-1].stats.train:
            _, loss, acc = self.block.stages[-1].stats.train[-1]
            self.metrics.train(loss=loss, accuracy=acc)

    def _propagate_done(self) -> None:
        if not self.wcfg.lockstep or self.done_below <= self.done_sent:
            return
        if self.block.pending_through(self.done_below):
            return
        self.done_sent = self.done_below
        if self.grad_out is not None:
            self.grad_out.send(Marker(MarkerKind.DONE, self.done_sent, self.k))

    def _credit_ok(self) -> bool:
        if self.block.inflight() < self.wcfg.max_inflight:
            return True
        timeout = self.wcfg.target_timeout_s
        if self.wcfg.overflow == "block" and timeout and self.block.oldest_pending_age() > timeout:
            self.dropped_steps.update(
                next(iter(s.pending)) for s in self.block.stages if s.spec.out_method == "sg" and s.pending
            )
            n = self.block.drop_oldest_pending()
            self.dropped["timeout"] += n
            log.warning("%s gave up on %d target(s) older than %.0fs", self.prefix, n, timeout)
            return True
        if self.wcfg.overflow == "drop-oldest":
            for s in self.block.stages:
                if s.spec.out_method == "sg" and s.pending:
                    self.dropped_steps.add(next(iter(s.pending)))
            self.dropped["pending"] += self.block.drop_oldest_pending()
            if len(self.dropped_steps) > 10 * self.wcfg.max_inflight:
                self.dropped_steps = set(sorted(self.dropped_steps)[-self.wcfg.max_inflight :])
            return True
        return False

    def _lockstep_ok(self) -> bool:
        return not self.wcfg.lockstep or self.wcfg.blocks == 1 or self.done_sent >= self.next_step - 1

    def _admit(self, stream: Any) -> str | None:
        """Let one new activation/batch in if possible; else return why not (the wait reason)."""
        if not self.block.ready:
            aw = self.block.awaiting()
            return aw.value if aw is not None else "local"
        if not self._credit_ok():
            return "credit"
        if self.is_first:
            if self.next_step > (self.end_step if self.end_step is not None else -1):
                return "drain"
            if not self._lockstep_ok():
                return "lockstep"
            if self.act_out is not None and self.act_out.backlog >= self.wcfg.transport.hwm:
                return "send"
            x, y = next(stream)
            step = self.next_step
            start = time.perf_counter()
            self._dispatch(self.block.feed(step, x.to(self.device), y.to(self.device)))
            self._after_forward(step, x.shape[0], time.perf_counter() - start)
            self._observe()
            self.next_step += 1
            if self.next_step > (self.end_step or 0) and self.act_out is not None:
                self.act_out.send(Marker(MarkerKind.END, step, self.k))
            return None
        assert self.act_in is not None
        if self.act_out is not None and self.act_out.backlog >= self.wcfg.transport.hwm:
            return "send"
        item = self.act_in.recv()
        if item is None:
            return "activation"
        self._handle(item)
        return None

    def _finished(self) -> bool:
        if self.end_step is None or (self.last_forward < self.end_step and not self.is_first):
            return False
        if self.is_first and self.next_step <= self.end_step:
            return False
        return not self.block.has_pending()

    def _control_poll(self) -> None:
        if self.control is None:
            return
        while self.control.poll(0):
            try:
                msg = msgpack.unpackb(self.control.recv(), raw=False, max_str_len=64, max_map_len=8, max_array_len=8)
            except Exception:
                self.protocol_rejects["control"] += 1
                continue
            if isinstance(msg, dict) and msg.get("type") == "stop":
                log.info("%s stop requested by the launcher", self.prefix)
                self.stop_requested = True

    def _report(self, kind: str, extra: dict[str, Any] | None = None) -> None:
        if self.control is None:
            return
        elapsed = max(1e-9, time.monotonic() - self.started)
        lags = [r.steps for s in self.block.stages for r in s.stats.lags[-200:]]
        sg = [r for s in self.block.stages for r in s.stats.sg[-1:]]
        train = self.block.stages[-1].stats.train[-1:] if self.is_last else []
        payload = {
            "type": kind,
            "block": self.k,
            "step": self.last_forward,
            "steps": self.steps,
            "samples_per_second": self.samples / elapsed,
            "lag": percentiles([float(v) for v in lags])["p50"] if lags else 0.0,
            "queue": sum(s.backlog for s in self._senders()),
            "sg_loss": sg[-1].loss if sg else None,
            "loss": train[-1][1] if train else None,
            "accuracy": train[-1][2] if train else None,
            "rejected": sum(self.rejected().values()),
            **(extra or {}),
        }
        self.control.send(msgpack.packb(payload))

    def rejected(self) -> Counter[str]:
        total: Counter[str] = Counter(self.protocol_rejects)
        for r in self._receivers():
            total.update(r.rejected)
        return total

    def _publish_counters(self) -> None:
        for name, r in (("activation_in", self.act_in), ("gradient_in", self.grad_in), ("error_in", self.err_sub)):
            if r is not None:
                self.metrics.messages(name, r.messages, r.bytes)
        for name, s in (("activation_out", self.act_out), ("gradient_out", self.grad_out), ("error_out", self.err_pub)):
            if s is not None:
                self.metrics.messages(name, s.messages, s.bytes)
                self.metrics.queue(name, s.backlog)
        for reason, n in self.rejected().items():
            self.metrics.rejected(reason, n)
        for what, n in self.dropped.items():
            self.metrics.dropped(what, n)
        self.metrics.inflight(self.block.inflight())
        self.metrics.lag_max(steps=self._window_lag[0], seconds=self._window_lag[1])
        self._window_lag = (0, 0.0)

    def loop(self, stream: Any) -> None:
        poller = zmq.Poller()
        for r in self._receivers():
            poller.register(r.sock, zmq.POLLIN)
        if self.control is not None:
            poller.register(self.control, zmq.POLLIN)
        last_progress = last_heard = time.monotonic()
        drain_deadline: float | None = None
        while not self.stop_requested:
            for s in self._senders():
                s.flush()
            self._control_poll()
            progressed = False
            for rx in (self.grad_in, self.err_sub):
                while rx is not None:
                    item = rx.recv()
                    if item is None:
                        break
                    self._handle(item)
                    progressed = True
            self._propagate_done()
            why = self._admit(stream)
            progressed = progressed or why is None
            self._propagate_done()
            now = time.monotonic()
            if progressed:
                last_heard = now
            if self._finished():
                break
            if self.end_step is not None and self.last_forward >= self.end_step and why in ("drain", "activation"):
                drain_deadline = drain_deadline or now + self.wcfg.drain_timeout_s
                if now > drain_deadline:
                    log.warning(
                        "%s drain timeout: %d steps never got their target",
                        self.prefix,
                        sum(len(s.pending) for s in self.block.stages),
                    )
                    break
            if now - last_progress >= self.wcfg.progress_every_s:
                self._report("progress")
                self._publish_counters()
                last_progress = now
            if not progressed:
                if now - last_heard > self.wcfg.peer_timeout_s:
                    raise TimeoutError(
                        f"{self.prefix} nothing arrived for {self.wcfg.peer_timeout_s:.0f}s "
                        f"while waiting for {why}; is a neighbour dead?"
                    )
                reason = why or "idle"
                if reason == "local":
                    reason = "activation"
                t0 = time.monotonic()
                backlog = any(s.backlog for s in self._senders())
                poller.poll(5 if backlog else 50)
                waited = time.monotonic() - t0
                if backlog and reason in ("activation", "drain"):
                    reason = "send"
                self.waits[reason] = self.waits.get(reason, 0.0) + waited
                self.metrics.wait(reason, waited)
        if self.stop_requested:
            self.status = "stopped"
        elif self.status == "running":
            self.status = "finished"

    def _flush_all(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while any(not s.flush() for s in self._senders()) and time.monotonic() < deadline:
            time.sleep(0.01)

    def stats(self) -> dict[str, Any]:
        stages = self.block.stages
        update_waits: Counter[str] = Counter()
        for s in stages:
            update_waits.update(s.stats.waits)
        sg = [r for s in stages for r in s.stats.sg]
        train = stages[-1].stats.train if self.is_last else []
        elapsed = time.monotonic() - self.started
        return {
            "block": self.k,
            "stages": list(self.ranges[self.k]),
            "status": self.status,
            "steps": self.steps,
            "samples": self.samples,
            "last_step": self.last_forward,
            "wall_seconds": elapsed,
            "compute_seconds": self.compute_seconds,
            "samples_per_second": self.samples / max(elapsed, 1e-9),
            "lag_steps": percentiles([float(r.steps) for s in stages for r in s.stats.lags]),
            "lag_seconds": percentiles([r.seconds for s in stages for r in s.stats.lags]),
            "waits": {k: round(v, 6) for k, v in sorted(self.waits.items())},
            "update_waits": dict(update_waits),
            "interfaces": [
                {"stage": s.spec.index, "method": s.spec.out_method, "update_waits": dict(s.stats.waits)}
                for s in stages
                if s.spec.out_method is not None
            ],
            "rejected": dict(self.rejected()),
            "dropped": dict(self.dropped),
            "restarts": self.restarts,
            "sg_loss": sg[-1].loss if sg else None,
            "sg_cosine": sg[-1].cosine if sg else None,
            "train_loss": train[-1][1] if train else None,
            "train_accuracy": train[-1][2] if train else None,
            "messages": {
                name: {"messages": e.messages, "bytes": e.bytes}
                for name, e in (
                    ("activation_in", self.act_in),
                    ("gradient_in", self.grad_in),
                    ("error_in", self.err_sub),
                    ("activation_out", self.act_out),
                    ("gradient_out", self.grad_out),
                    ("error_out", self.err_pub),
                )
                if e is not None
            },
        }

    def run(self, rdv: Rendezvous) -> int:
        self.started = time.monotonic()
        self.metrics = make_metrics(block=self.k, port=self.wcfg.metrics_port, addr=self.wcfg.metrics_addr)
        if self.metrics.url:
            log.info("%s metrics at %s", self.prefix, self.metrics.url)
        self._resume()
        stream: Any = None
        if self.is_first:
            ds = load_dataset(
                self.cfg.data.name,
                data_dir=self.cfg.data.data_dir,
                download=self.cfg.data.download,
                mirror=self.cfg.data.mirror,
                subset=self.cfg.data.subset,
            )
            self.data_source = ds.source
        self._open(rdv)
        if self.is_first:
            # a resumed run continues with a fresh shuffle seeded by its first step
            seed = self.cfg.run.seed if self.next_step == 0 else self.cfg.run.seed + self.next_step
            stream = iter(BatchStream(ds.x_train, ds.labels_train, ds.num_classes, self.cfg.data.batch_size, seed))
            log.info("%s feeding steps %d..%d from %s", self.prefix, self.next_step, self.cfg.run.steps - 1, ds.source)
        first, last = self.ranges[self.k]
        log.info(
            "%s stages %d-%d (%s) up",
            self.prefix,
            first,
            last,
            ", ".join(s.spec.out_method or "loss" for s in self.block.stages),
        )
        self.started = time.monotonic()  # throughput and wall_seconds cover the training loop only
        try:
            self.loop(stream)
        finally:
            self._flush_all()
            self.save_checkpoint()
            stats = self.stats()
            out = Path(self.wcfg.out) / "blocks"
            out.mkdir(parents=True, exist_ok=True)
            (out / f"block{self.k}.json").write_text(json.dumps(stats, indent=2))
            self._publish_counters()
            self._report("done", {"status": self.status})
            log.info(
                "%s %s after %d steps (%.1f samples/s); checkpoint %s",
                self.prefix,
                self.status,
                self.steps,
                stats["samples_per_second"],
                self._checkpoint_path(),
            )
            if self.wcfg.control is None and self.is_first:
                try:  # before announcing our own exit: a rendezvous server leaves once all blocks have
                    self._write_summary(rdv)
                except Exception as e:  # the checkpoints and stats are written; only the summary is missing
                    log.error("%s could not write summary.json: %s", self.prefix, e)
            rdv.publish(f"block{self.k}/exit", self.status)
            self.close()
        return 0

    def _write_summary(self, rdv: Rendezvous) -> None:
        """Without a launcher (torchrun, containers), block 0 writes summary.json once every block
        has exited. It reads the other blocks' stats and checkpoints from `out`, so `out` must be
        shared (one machine, or a shared volume)."""
        from dni_dist.launcher import LaunchOptions, summarize

        wait = self.wcfg.drain_timeout_s + 60
        statuses = [self.status] + [rdv.lookup(f"block{b}/exit", timeout_s=wait) for b in range(1, self.wcfg.blocks)]
        out = Path(self.wcfg.out)
        stats = []
        for b in range(self.wcfg.blocks):
            path = out / "blocks" / f"block{b}.json"
            if not path.is_file():
                log.warning(
                    "%s no stats from block %d at %s (is --out shared?); summary.json not written", self.prefix, b, path
                )
                return
            stats.append(json.loads(path.read_text()))
        opts = LaunchOptions(blocks=self.wcfg.blocks, out=out, lockstep=self.wcfg.lockstep)
        status = "finished" if all(s == "finished" for s in statuses) else "stopped"
        summary = summarize(self.cfg, opts, stats, wall_seconds=time.monotonic() - self.started, status=status,
                            run_id=self.wcfg.run_id)  # fmt: skip
        log.info(
            "%s wrote %s: test accuracy %.4f", self.prefix, out / "summary.json", summary["final"]["test_accuracy"]
        )

    def close(self) -> None:
        self.metrics.close()
        self.ctx.destroy(linger=self.wcfg.transport.linger_ms)

    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        log.info("%s got %s; stopping after the current message", self.prefix, signal.Signals(signum).name)
        self.stop_requested = True


def run_worker(cfg: TrainConfig, wcfg: WorkerConfig, rdv: Rendezvous | None = None) -> int:
    _die_with_parent()
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    worker = Worker(cfg, wcfg)
    signal.signal(signal.SIGINT, worker.request_stop)
    signal.signal(signal.SIGTERM, worker.request_stop)
    rdv = rdv or Rendezvous.from_env(run=wcfg.run_id)
    return worker.run(rdv)


def default_run_id() -> str:
    return os.environ.get("DNI_RUN_ID") or os.environ.get("TORCHELASTIC_RUN_ID") or uuid.uuid4().hex[:12]


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    from dni_dist.cli import worker_main

    worker_main()
