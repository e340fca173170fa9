"""One worker process: a block of consecutive stages driven by what arrives on its edges.

    worker = Worker(cfg, WorkerConfig(block=1, blocks=4, run_id="r", out="runs/x"))
    worker.run(Rendezvous.from_env(run="r"))    # what `dni-worker` and `python -m dni_dist.worker` do

The loop separates I/O from the step logic (Block/Stage): it flushes outboxes, takes every
gradient / output error that has arrived, then admits one new activation (block 0: one new
batch) when Admission allows. When there is nothing to do it polls, and the idle time is booked
to what it waited for — that is how the runtime *measures* locking.

[Note: ending a run]
Block 0 sends `end` after its last batch; every block forwards it at once (its activations
were already sent: the edge is FIFO), then drains: it stops when no local stage still waits
for a target, or after `runtime.drain_timeout_s`. SIGINT/SIGTERM or a `stop` from the launcher
end the loop early. Either way the block writes its checkpoint and its stats before it exits.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import torch
import zmq

from dni_dist import checkpoint
from dni_dist.block import Block
from dni_dist.config import TrainConfig
from dni_dist.data import BatchStream, dataset_shape, load_dataset
from dni_dist.keys import RunKeys, block_name
from dni_dist.messages import Kind, Marker, MarkerKind, Message
from dni_dist.metrics import NullMetrics, make_metrics
from dni_dist.rendezvous import Rendezvous
from dni_dist.stage import ProtocolError
from dni_dist.stats import BlockStats
from dni_dist.summary import summary_after_exit
from dni_dist.topology import Topology, assign_blocks
from dni_dist.worker.admission import Admission
from dni_dist.worker.edges import Edges
from dni_dist.worker.options import WorkerConfig
from dni_dist.worker.screen import Screen, finite_state
from dni_dist.worker.telemetry import Telemetry

log = logging.getLogger(__name__)

Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]


class Worker:
    def __init__(self, cfg: TrainConfig, wcfg: WorkerConfig) -> None:
        self.cfg, self.wcfg, self.k = cfg, wcfg, wcfg.block
        self.prefix = f"[block {self.k}]"
        input_dim, num_classes = dataset_shape(cfg.data.name)
        topology = Topology.from_config(cfg, input_dim=input_dim, num_classes=num_classes)
        self.ranges = assign_blocks(topology.num_stages, wcfg.blocks)
        self.first, self.last = self.ranges[self.k]
        self.device = torch.device(cfg.run.device)
        stages = topology.build_stages(cfg, input_dim=input_dim, num_classes=num_classes)
        self.block = Block(topology, [s.to(self.device) for s in stages[self.first : self.last + 1]], first=self.first)
        self.is_first, self.is_last = self.k == 0, self.k == wcfg.blocks - 1
        subscribers = topology.error_subscribers()
        remote = {
            b for b, (lo, hi) in enumerate(self.ranges) if b != self.k and any(lo <= i <= hi for i in subscribers)
        }
        self.keys = None if wcfg.insecure or wcfg.keys is None else RunKeys.load(wcfg.keys, me=block_name(self.k))
        self.edges = Edges(
            wcfg,
            keys=self.keys,
            first=self.is_first,
            last=self.is_last,
            subscribes=not self.is_last and any(self.first <= i <= self.last for i in subscribers),
            remote_subscribers=len(remote),
        )
        self.admission = Admission(cfg.runtime, blocks=wcfg.blocks, prefix=self.prefix)
        self.telemetry = Telemetry(NullMetrics(), self.block.stages, is_last=self.is_last)
        self.waits: dict[str, float] = {}  # idle seconds by reason
        self.rejects: Counter[str] = Counter()  # received messages dropped here, by reason
        rt = cfg.runtime
        self.screen = Screen(
            steps=cfg.run.steps, window=4 * (rt.max_inflight + wcfg.transport.hwm) + 2 * rt.checkpoint_every + 64
        )
        self.steps = self.samples = self.restarts = 0  # steps: activations (block 0: batches) forwarded
        self.compute_seconds = 0.0
        self.stop_requested = False
        self.status = "running"
        self.next_step = 0  # block 0: the next step to feed
        self.end_step: int | None = None  # last step of the run, once known
        self.last_forward = -1
        self.started = time.monotonic()

    # -- checkpoints ----------------------------------------------------------------------------
    def _resume(self) -> None:
        path = checkpoint.block_path(self.wcfg.out, self.k)
        if not (self.wcfg.resume and path.is_file()):
            return
        state = checkpoint.load_block(self.wcfg.out, self.k)
        if (state.first, state.last) != (self.first, self.last):
            raise checkpoint.CheckpointError(
                f"{path} holds stages {state.first}-{state.last}, this block has {self.first}-{self.last}"
            )
        for stage, s in zip(self.block.stages, state.stages):
            stage.load_state_dict(s)
        self.steps, self.samples, self.restarts = state.steps, state.samples, state.restarts + 1
        self.last_forward = max(s.last_step for s in self.block.stages)
        self.telemetry.metrics.restart()
        log.info("%s resumed from %s at step %d (restart %d)", self.prefix, path, self.last_forward, self.restarts)

    def save_checkpoint(self) -> Path | None:
        """Write this block's checkpoint, unless a weight is NaN/Inf: then the last good one stays."""
        states = [s.state_dict() for s in self.block.stages]
        path = checkpoint.block_path(self.wcfg.out, self.k)
        if not finite_state(states):
            self.admission.dropped["nonfinite_checkpoint"] += 1
            log.error("%s refusing to write non-finite weights over %s", self.prefix, path)
            return None
        return checkpoint.save_block(
            self.wcfg.out,
            checkpoint.BlockState(
                block=self.k, first=self.first, last=self.last, stages=states,
                steps=self.steps, samples=self.samples, restarts=self.restarts, config=json.dumps(self.cfg.to_dict()),
            ),
        )  # fmt: skip

    # -- messages -------------------------------------------------------------------------------
    def _to_device(self, msg: Message) -> Message:
        if self.device.type == "cpu":
            return msg
        labels = None if msg.labels is None else msg.labels.to(self.device, non_blocking=True)
        return Message(msg.kind, msg.step, msg.sender, msg.tensor.to(self.device, non_blocking=True), labels)

    def _dispatch(self, outbound: list[Message]) -> None:
        self.edges.dispatch(outbound, trim=self.admission.trim_gradient_queue)

    def _handle(self, item: Message | Marker) -> None:
        """Use one received message; whatever is wrong with it is a counted rejection, never a crash."""
        why = self.screen.reason(item, last_forward=self.last_forward)
        if why is not None:
            self._reject(why, item, "not acceptable here")
            return
        try:
            self._use(item)
        except ProtocolError as e:
            if isinstance(item, Marker) or item.kind is Kind.ACTIVATION or not self.admission.stale_target(item.step):
                self._reject(e.reason, item, str(e))
        except Exception as e:  # a peer's message must never end the block
            self._reject("error", item, f"{type(e).__name__}: {e}")

    def _reject(self, reason: str, item: Message | Marker, detail: str) -> None:
        self.rejects[reason] += 1
        if self.rejects[reason] <= 5 or self.rejects[reason] % 1000 == 0:
            log.warning("%s dropped %s (%s: %s) [%d %s so far]", self.prefix, item.describe(), reason, detail,
                        self.rejects[reason], reason)  # fmt: skip

    def _use(self, item: Message | Marker) -> None:
        if isinstance(item, Marker):
            if item.kind is MarkerKind.END:
                self.end_step = item.step
                self.edges.send_downstream(Marker(MarkerKind.END, item.step, self.k))
            else:
                self.admission.finished_below(item.step)
            return
        start = time.perf_counter()
        outbound = self.block.deliver(self._to_device(item))
        self._dispatch(outbound)
        if item.kind is Kind.ACTIVATION:
            self._after_forward(item.step, item.tensor.shape[0], time.perf_counter() - start)
        self.telemetry.observe()

    def _feed(self, batches: Batches) -> None:
        x, y = next(batches)
        step, start = self.next_step, time.perf_counter()
        self._dispatch(self.block.feed(step, x.to(self.device), y.to(self.device)))
        self._after_forward(step, x.shape[0], time.perf_counter() - start)
        self.telemetry.observe()
        self.next_step += 1
        if self.next_step > (self.end_step or 0):
            self.edges.send_downstream(Marker(MarkerKind.END, step, self.k))

    def _after_forward(self, step: int, samples: int, seconds: float) -> None:
        self.steps += 1
        self.samples += samples
        self.last_forward = step
        self.compute_seconds += seconds
        self.telemetry.metrics.step(samples=samples, seconds=seconds)
        if self.is_last:
            self.admission.finished_below(step)
        every = self.cfg.runtime.checkpoint_every
        if every and self.steps % every == 0:
            self.save_checkpoint()

    def _propagate_done(self) -> None:
        step = self.admission.done_to_send(self.block)
        if step is not None:
            self.edges.send_upstream(Marker(MarkerKind.DONE, step, self.k))

    def _admit(self, batches: Batches | None) -> str | None:
        """Start one new step if Admission allows; else return what the block waits for."""
        send_backlog = self.edges.act_out.backlog if self.edges.act_out is not None else 0
        why = self.admission.why_not(
            self.block, next_step=self.next_step if self.is_first else None, end_step=self.end_step,
            send_backlog=send_backlog, hwm=self.wcfg.transport.hwm,
        )  # fmt: skip
        if why is not None:
            return why
        if batches is not None:
            self._feed(batches)
            return None
        assert self.edges.act_in is not None
        item = self.edges.act_in.recv()
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

    # -- the loop -------------------------------------------------------------------------------
    def _report(self, kind: str, **extra: object) -> None:
        elapsed = max(1e-9, time.monotonic() - self.started)
        payload = self.telemetry.progress(
            kind, block=self.k, step=self.last_forward, steps=self.steps, samples_per_second=self.samples / elapsed,
            queue=self.edges.backlog, rejected=sum(self.rejected().values()),
        )  # fmt: skip
        self.edges.report({**payload, **extra})
        self.telemetry.publish(self.edges, self.admission.dropped, inflight=self.block.inflight())

    def rejected(self) -> dict[str, int]:
        return dict(self.edges.rejected() + self.rejects)

    def loop(self, batches: Batches | None) -> None:
        rt = self.cfg.runtime
        poller = self.edges.poller()
        last_progress = last_heard = time.monotonic()
        drain_deadline: float | None = None
        while not self.stop_requested:
            self.edges.flush()
            if self.edges.stop_requested():
                log.info("%s stop requested by the launcher", self.prefix)
                self.stop_requested = True
                break
            progressed = False
            for rx in (self.edges.grad_in, self.edges.err_sub):
                while rx is not None and (item := rx.recv()) is not None:
                    self._handle(item)
                    progressed = True
            self._propagate_done()
            why = self._admit(batches)
            progressed = progressed or why is None
            self._propagate_done()
            now = time.monotonic()
            if progressed:
                last_heard = now
            if self._finished():
                break
            if self.end_step is not None and self.last_forward >= self.end_step and why in ("drain", "activation"):
                drain_deadline = drain_deadline or now + rt.drain_timeout_s
                if now > drain_deadline:
                    pending = sum(len(s.pending) for s in self.block.stages)
                    log.warning("%s drain timeout: %d steps never got their target", self.prefix, pending)
                    break
            if now - last_progress >= rt.progress_every_s:
                self._report("progress")
                last_progress = now
            if not progressed:
                if now - last_heard > rt.peer_timeout_s:
                    raise TimeoutError(
                        f"{self.prefix} nothing arrived for {rt.peer_timeout_s:.0f}s while waiting for {why}; "
                        "is a neighbour dead?"
                    )
                self._idle(poller, "activation" if why == "local" else why or "idle")
        if self.stop_requested:
            self.status = "stopped"
        elif self.status == "running":
            self.status = "finished"

    def _idle(self, poller: zmq.Poller, reason: str) -> None:
        """Poll until something arrives (or briefly, when an outbox waits), booking the time."""
        t0 = time.monotonic()
        backlog = self.edges.backlog > 0
        poller.poll(5 if backlog else 50)
        waited = time.monotonic() - t0
        if backlog and reason in ("activation", "drain"):
            reason = "send"
        self.waits[reason] = self.waits.get(reason, 0.0) + waited
        self.telemetry.metrics.wait(reason, waited)

    # -- a whole run ----------------------------------------------------------------------------
    def stats(self) -> BlockStats:
        return BlockStats.from_stages(
            self.block.stages, block=self.k, first=self.first, last=self.last, status=self.status, steps=self.steps,
            samples=self.samples, last_step=self.last_forward, wall_seconds=time.monotonic() - self.started,
            compute_seconds=self.compute_seconds, waits=self.waits, rejected=self.rejected(),
            dropped=self.admission.dropped, restarts=self.restarts, messages=self.edges.counters(),
        )  # fmt: skip

    def _batches(self) -> Batches | None:
        if not self.is_first:
            return None
        d = self.cfg.data
        ds = load_dataset(d.name, data_dir=d.data_dir, download=d.download, mirror=d.mirror, subset=d.subset)
        # a resumed run continues with a fresh shuffle seeded by its first step
        seed = self.cfg.run.seed if self.next_step == 0 else self.cfg.run.seed + self.next_step
        log.info("%s feeding steps %d..%d from %s", self.prefix, self.next_step, self.cfg.run.steps - 1, ds.source)
        return iter(BatchStream(ds.x_train, ds.labels_train, ds.num_classes, d.batch_size, seed))

    def run(self, rdv: Rendezvous) -> int:
        self.telemetry.metrics = make_metrics(block=self.k, port=self.wcfg.metrics_port, addr=self.wcfg.metrics_addr)
        if self.telemetry.metrics.url:
            log.info("%s metrics at %s", self.prefix, self.telemetry.metrics.url)
        self._resume()
        self.edges.open(rdv, peer_timeout_s=self.cfg.runtime.peer_timeout_s, stopping=lambda: self.stop_requested)
        resume_at = self.edges.announce(rdv, last_forward=self.last_forward)
        if resume_at is not None:
            self.next_step, self.end_step = resume_at, self.cfg.run.steps - 1
            if self.next_step > self.end_step:
                log.info("%s nothing left to train (resumed at step %d of %d)", self.prefix, self.next_step,
                         self.cfg.run.steps)  # fmt: skip
                self.edges.send_downstream(Marker(MarkerKind.END, max(self.next_step - 1, 0), self.k))
        batches = self._batches()
        methods = ", ".join(s.spec.out_method or "loss" for s in self.block.stages)
        log.info("%s stages %d-%d (%s) up", self.prefix, self.first, self.last, methods)
        self.started = time.monotonic()  # throughput and wall_seconds cover the training loop only
        try:
            self.loop(batches)
        except BaseException:
            self.status = "failed"  # the stats and the rendezvous say so; the exception still ends the process
            raise
        finally:
            self._finish(rdv)
        return 0

    def _finish(self, rdv: Rendezvous) -> None:
        """Checkpoint, stats, last report; without a launcher block 0 also writes summary.json."""
        self.edges.flush_all()
        path = self.save_checkpoint()
        stats = self.stats().to_dict()
        out = Path(self.wcfg.out) / "blocks"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"block{self.k}.json").write_text(json.dumps(stats, indent=2))
        self._report("done", status=self.status)
        log.info("%s %s after %d steps (%.1f samples/s); checkpoint %s", self.prefix, self.status, self.steps,
                 stats["samples_per_second"], path)  # fmt: skip
        if self.wcfg.control is None and self.is_first:
            try:  # before announcing our own exit: a rendezvous server leaves once all blocks have
                summary_after_exit(self.cfg, rdv, out=Path(self.wcfg.out), blocks=self.wcfg.blocks, status=self.status,
                                   started=self.started, run_id=self.wcfg.run_id)  # fmt: skip
            except Exception as e:  # the checkpoints and stats are written; only the summary is missing
                log.error("%s could not write summary.json: %s", self.prefix, e)
        rdv.publish(f"block{self.k}/exit", self.status)
        self.telemetry.metrics.close()
        self.edges.close()

    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        log.info("%s got %s; stopping after the current message", self.prefix, signal.Signals(signum).name)
        self.stop_requested = True
