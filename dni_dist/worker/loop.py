"""One worker process: a block of consecutive stages driven by what arrives on its edges.

    worker = Worker(cfg, WorkerConfig(block=1, blocks=4, run_id="r", out="runs/x"))
    worker.run(Rendezvous.from_env(run="r"))    # what `dni-worker` and `python -m dni_dist.worker` do

The loop separates I/O from the step logic (Block/Stage): it flushes outboxes, takes every
gradient / output error that has arrived, then admits one new activation (block 0: one new
batch) when Admission allows. When there is nothing to do it polls, and the idle time is booked
to what it waited for — that is how the runtime *measures* locking.

[Note: ending a run]
Block 0 sends `end` after its last batch; every block forwards it at once (the edge is FIFO),
drains (no local stage waits for a target, or `runtime.drain_timeout_s` passed) and saves the
state after that step: the final checkpoint is a consistent cut. A stop (SIGINT/SIGTERM, or the
launcher's `stop`) ends the run so, early: block 0 sends `end` after the last batch it fed, the
others wait for it (at most `drain_timeout_s`); a second stop leaves at once, without saving.
`checkpoint` markers travel the same way (worker/saving.py); restarts: worker/rejoin.py.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from pathlib import Path
from types import FrameType

import torch
import zmq

from dni_dist import faults
from dni_dist.block import Block
from dni_dist.config import TrainConfig
from dni_dist.data import dataset_shape
from dni_dist.keys import RunKeys, block_name
from dni_dist.messages import Kind, Marker, MarkerKind, Message
from dni_dist.metrics import NullMetrics, make_metrics
from dni_dist.rendezvous import Rendezvous
from dni_dist.stage import ProtocolError
from dni_dist.stats import BlockStats
from dni_dist.summary import summary_after_exit
from dni_dist.topology import Topology, assign_blocks
from dni_dist.transport import to_device
from dni_dist.worker.admission import Admission
from dni_dist.worker.attempts import PeerKeys
from dni_dist.worker.edges import Edges
from dni_dist.worker.feed import Batches, training_batches
from dni_dist.worker.links import Links
from dni_dist.worker.options import WorkerConfig
from dni_dist.worker.rejoin import Neighbours
from dni_dist.worker.saving import Saver
from dni_dist.worker.screen import Screen
from dni_dist.worker.stopping import Stopping
from dni_dist.worker.telemetry import Telemetry

log = logging.getLogger(__name__)


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
        subscribes = not self.is_last and any(self.first <= i <= self.last for i in subscribers)
        self.run_keys = None if wcfg.insecure or wcfg.keys is None else RunKeys.load(wcfg.keys, me=block_name(self.k))
        self.edges = Edges(wcfg, first=self.is_first, last=self.is_last, subscribes=subscribes,
                           remote_subscribers=len(remote), keys=self.run_keys, align=cfg.runtime.lockstep)  # fmt: skip
        self.admission = Admission(cfg.runtime, blocks=wcfg.blocks, prefix=self.prefix)
        self.telemetry = Telemetry(NullMetrics(), self.block.stages, is_last=self.is_last)
        self.waits: dict[str, float] = {}  # idle seconds by reason
        rt = cfg.runtime
        window = 4 * (rt.window_bound + wcfg.transport.hwm) + 2 * rt.checkpoint_every + 64
        self.screen = Screen(steps=cfg.run.steps, window=window, prefix=self.prefix)
        self.steps = self.samples = self.restarts = 0  # steps: activations (block 0: batches) forwarded
        self.compute_seconds = 0.0
        self.stop = Stopping(cfg.runtime.drain_timeout_s)
        self.status = "running"
        self.next_step = 0  # block 0: the next step to feed
        self.end_step: int | None = None  # last step of the run, once known
        self.ended = False  # `end` fed (block 0) or received and passed on (the others)
        self.last_forward = -1
        self.started = self.active_at = time.monotonic()  # active_at: when the loop last did something
        self.waiting: str | None = None  # what the loop waits for now (None: it is working)
        self.saver = Saver(cfg, wcfg, first=self.first, last=self.last)
        self.links = Links(self.prefix)
        self.faults = faults.parse(cfg.runtime.inject_fault)
        self.attempt = 0
        self.neighbours: Neighbours | None = None
        self.keys: PeerKeys | None = None
        self.rdv: Rendezvous | None = None

    # -- checkpoints ----------------------------------------------------------------------------
    def _resume(self) -> None:
        state = self.saver.restore(self.block.stages, attempt=self.attempt)
        if state is not None:
            self.steps, self.samples, self.restarts, self.last_forward = (
                state.steps, state.samples, state.restarts + 1, state.step)  # fmt: skip
            self.telemetry.metrics.restart("resume" if self.attempt == 0 else self.wcfg.restart_cause or "exited")

    def _checkpoint(self, step: int) -> None:
        assert self.rdv is not None, "checkpoints are taken in run()"
        self.saver.checkpoint(self.rdv, step, self.block.stages, steps=self.steps, samples=self.samples,
                              restarts=self.restarts)  # fmt: skip

    # -- messages -------------------------------------------------------------------------------
    def _dispatch(self, outbound: list[Message]) -> None:
        self.edges.dispatch(outbound, trim=self.admission.trim_gradient_queue)

    def _handle(self, item: Message | Marker) -> None:
        """Use one received message; whatever is wrong with it is a counted rejection, never a crash."""
        why = self.screen.reason(item, last_forward=self.last_forward)
        if why == "early_end" and self.stop.requests:  # a stop ends the run early, at block 0's cut
            why = None
        if why is not None:
            self.screen.reject(why, item, "not acceptable here")
            return
        try:
            self._use(item)
        except ProtocolError as e:
            if isinstance(item, Marker) or item.kind is Kind.ACTIVATION or not self.admission.stale_target(item.step):
                self.screen.reject(e.reason, item, str(e))
        except Exception as e:  # a peer's message must never end the block
            self.screen.reject("error", item, f"{type(e).__name__}: {e}")

    def _use(self, item: Message | Marker) -> None:
        if isinstance(item, Marker):
            if item.kind is MarkerKind.END:
                self.end_step, self.ended = item.step, True
                self.edges.send_downstream(Marker(MarkerKind.END, item.step, self.k))
            elif item.kind is MarkerKind.CHECKPOINT:
                self._checkpoint(item.step)
                self.edges.send_downstream(Marker(MarkerKind.CHECKPOINT, item.step, self.k))
            else:
                self.admission.finished_below(item.step)
            return
        start = time.perf_counter()
        outbound = self.block.deliver(to_device(item, self.device))
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
        every = self.cfg.runtime.checkpoint_every
        if every and (step + 1) % every == 0 and step != self.end_step:  # the end is checkpointed anyway
            self._checkpoint(step)
            self.edges.send_downstream(Marker(MarkerKind.CHECKPOINT, step, self.k))
        if self.next_step > (self.end_step or 0):
            self._send_end(step)

    def _send_end(self, step: int) -> None:
        self.end_step, self.ended = step, True
        self.edges.send_downstream(Marker(MarkerKind.END, step, self.k))

    def _after_forward(self, step: int, samples: int, seconds: float) -> None:
        self.steps += 1
        self.samples += samples
        self.last_forward = step
        self.admission.forwarded(step, seconds)
        self.saver.snapshots.take(step, [s.module for s in self.block.stages])
        self.compute_seconds += seconds
        self.telemetry.metrics.step(samples=samples, seconds=seconds)
        if self.is_last:
            self.admission.finished_below(step)
        for fault in faults.due(self.faults, block=self.k, step=step, attempt=self.attempt + self.wcfg.generation):
            faults.fire(fault, self.prefix, self.keys.proxies.get("act") if self.keys else None)

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
        return self.ended and not self.block.has_pending()

    def _on_stop(self) -> None:
        """The first stop request (see [Note: ending a run]): end the run after the last step fed."""
        if self.is_first and not self.ended:
            if self.next_step == 0:
                self.stop.now = True  # nothing trained yet: nothing to save
            else:
                self._send_end(self.next_step - 1)

    def _heartbeat(self) -> None:
        """Every progress_every_s: report (the launcher's liveness signal), link events, restarted
        neighbours, targets past their timeout."""
        self._report("progress")
        for _, event in self.links.poll():
            self.telemetry.metrics.link(event)
        self.stop.neighbour_gone(self.links.down, ended=self.ended, pending=self.block.has_pending())
        if self.neighbours is not None:
            self.neighbours.heartbeat(self.block, self.admission, last_forward=self.last_forward,
                                      end_step=self.end_step if self.ended else None)  # fmt: skip
            idle_in = self.edges.act_in is not None and not self.edges.act_in.sock.poll(0)
            if self.attempt and not self.ended and idle_in and (end := self.neighbours.upstream_end()) is not None:
                self._handle(Marker(MarkerKind.END, end, self.k - 1))  # restarted after `end` went by
        self.admission.expire(self.block)

    # -- the loop -------------------------------------------------------------------------------
    def _report(self, kind: str, **extra: object) -> None:
        elapsed = max(1e-9, time.monotonic() - self.started)
        payload = self.telemetry.progress(
            kind, block=self.k, step=self.last_forward, steps=self.steps, samples_per_second=self.samples / elapsed,
            queue=self.edges.backlog, rejected=sum(self.rejected().values()),
        )  # fmt: skip
        payload.update(idle_s=round(time.monotonic() - self.active_at, 2), waiting=self.waiting)
        self.edges.report({**payload, **extra})
        self.telemetry.publish(self.edges, self.admission.dropped, inflight=self.block.inflight())

    def rejected(self) -> dict[str, int]:
        return dict(self.edges.rejected() + self.screen.rejects + self.links.refused)

    def loop(self, batches: Batches | None) -> None:
        rt = self.cfg.runtime
        poller = self.edges.poller()
        last_progress = last_heard = time.monotonic()
        drain_deadline: float | None = None
        while True:
            self.edges.flush()
            if self.edges.stop_requested():
                log.info("%s stop requested by the launcher%s", self.prefix, " (the run failed)" * self.edges.stop_now)
                self.stop.request()
                self.stop.now = self.stop.now or self.edges.stop_now
            if self.stop.take_first():
                self._on_stop()
            if self.stop.now:
                log.info("%s stopping now, without a checkpoint", self.prefix)
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
                last_heard = self.active_at = now
            self.waiting = None if progressed else why or "idle"
            if self._finished():
                break
            if self.ended and why in ("drain", "activation"):
                drain_deadline = drain_deadline or now + rt.drain_timeout_s
                if now > drain_deadline:
                    pending = sum(len(s.pending) for s in self.block.stages)
                    log.warning("%s drain timeout: %d steps never got their target", self.prefix, pending)
                    break
            if self.stop.overdue(ended=self.ended):
                log.warning("%s stopping: no end marker after %.0fs, no checkpoint", self.prefix, rt.drain_timeout_s)
                self.stop.now = True
                break
            if now - last_progress >= rt.progress_every_s:
                self._heartbeat()
                last_progress = now
            if not progressed:
                if now - last_heard > rt.peer_timeout_s:
                    message = f"{self.prefix} nothing arrived for {rt.peer_timeout_s:.0f}s while waiting for {why}"
                    if self.wcfg.control is None:  # alone: give up (torchrun / compose restart the run)
                        raise TimeoutError(f"{message}; is a neighbour dead?")
                    down = ", ".join(self.links.down) or "none known"
                    log.warning("%s; edges without a peer: %s (the launcher restarts dead or hung blocks)", message,
                                down)  # fmt: skip
                    last_heard = now
                self._idle(poller, "activation" if why == "local" else why or "idle")
        self.status = "stopped" if self.stop.requested or self.stop.now else "finished"

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
            attempt=self.attempt, link_events=self.links.events,
        )  # fmt: skip

    def run(self, rdv: Rendezvous) -> int:
        self.rdv = rdv
        self.telemetry.metrics = make_metrics(block=self.k, port=self.wcfg.metrics_port, addr=self.wcfg.metrics_addr)
        if self.telemetry.metrics.url:
            log.info("%s metrics at %s", self.prefix, self.telemetry.metrics.url)
        self.keys = keys = PeerKeys(rdv, block=self.k, blocks=self.wcfg.blocks)
        self.attempt = keys.attempt
        link_fault = self.attempt == 0 and any(f.is_link and f.block == self.k for f in self.faults)
        keys.relay(self.cfg.runtime, link_fault=link_fault)  # FaultProxy in front of faulty or delayed links
        self.admission.restarted = self.attempt > 0
        if self.attempt:
            log.warning("%s restarted (attempt %d): rejoining the running blocks", self.prefix, self.attempt)
        self._resume()
        self.edges.open(
            rdv, keys=keys, peer_timeout_s=self.cfg.runtime.peer_timeout_s, stopping=lambda: self.stop.requests > 0
        )
        self.links.watch_edges(self.edges)
        self.neighbours = Neighbours(keys, self.edges)
        resume_at = self.edges.announce(rdv, keys=keys, last_forward=self.last_forward)
        if resume_at is not None:
            rt, steps = self.cfg.runtime, self.cfg.run.steps
            resume_at = self.neighbours.block0_resume(rdv, resume_at, max_inflight=rt.window_bound, steps=steps)
            self.next_step, self.end_step = resume_at, self.cfg.run.steps - 1
            if self.next_step > self.end_step:
                log.info("%s nothing left to train (resumed at step %d of %d)", self.prefix, self.next_step,
                         self.cfg.run.steps)  # fmt: skip
                self._send_end(max(self.next_step - 1, 0))
        batches = training_batches(self.cfg, first_step=self.next_step, prefix=self.prefix) if self.is_first else None
        methods = ", ".join(s.spec.out_method or "loss" for s in self.block.stages)
        log.info("%s stages %d-%d (%s) up", self.prefix, self.first, self.last, methods)
        self.started = time.monotonic()  # throughput and wall_seconds cover the training loop only
        try:
            self._report("progress")  # the first heartbeat, before any step: liveness is watched from here
            self.loop(batches)
        except BaseException:
            self.status = "failed"  # the stats and the rendezvous say so; the exception still ends the process
            raise
        finally:
            self._finish(rdv)
        return 0

    def _finish(self, rdv: Rendezvous) -> None:
        """Checkpoint, stats, last report; without a launcher block 0 also writes summary.json."""
        self.edges.flush_all(timeout_s=0.5 if self.stop.now else 10.0)  # leaving now: no waiting on a dead peer
        if self.status != "failed" and not self.stop.now and self.ended and self.end_step is not None:
            self._checkpoint(self.end_step)  # the consistent final cut: every block ended at end_step
        path = f"of step {self.end_step}" if self.saver.saved[-1:] == [self.end_step] else "not written"
        stats = self.stats().to_dict()
        out = Path(self.wcfg.out) / "blocks"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"block{self.k}.json").write_text(json.dumps(stats, indent=2))
        self.saver.snapshots.write(Path(self.wcfg.out), self.k)
        self._report("done", status=self.status)
        log.info("%s %s after %d steps (%.1f samples/s); checkpoint %s", self.prefix, self.status, self.steps,
                 stats["samples_per_second"], path)  # fmt: skip
        if self.ended and self.end_step is not None:  # a neighbour restarted late learns the end here
            rdv.publish(f"block{self.k}/end_step", str(self.end_step))
        if self.wcfg.control is None and self.is_first:
            try:  # before announcing our own exit (a rendezvous server leaves once all blocks have); leaving
                # now (a neighbour is dead, it may never announce its exit): 2 s
                summary_after_exit(self.cfg, rdv, out=Path(self.wcfg.out), blocks=self.wcfg.blocks, status=self.status,
                                   started=self.started, run_id=self.wcfg.run_id,
                                   wait_s=2.0 if self.stop.now else None)  # fmt: skip
            except Exception as e:  # the checkpoints and stats are written; only the summary is missing
                log.error("%s could not write summary.json: %s", self.prefix, e)
        rdv.publish(f"block{self.k}/exit", self.status)
        self.telemetry.metrics.close()
        self.links.close()
        self.edges.close()

    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        """Signal handler: only counts (the loop acts on it, outside any socket call)."""
        self.stop.request()
        log.info("%s got %s (stop request %d)", self.prefix, signal.Signals(signum).name, self.stop.requests)
