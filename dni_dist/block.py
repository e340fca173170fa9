"""A block: the consecutive stages one process hosts, wired by in-memory channels.

    block = Block(topology, stages[first:last + 1], first=first)
    outbound = block.feed(step, x, y)     # block 0: a training batch enters the first stage
    outbound = block.deliver(msg)         # a message from another block
    # outbound: the messages that leave this block (to the next/previous block or broadcast)

No sockets here: the worker moves `outbound` onto ZeroMQ, the in-process trainer uses one
Block holding every stage. Inside a block, each message is delivered before the next is taken
(a fixed order), so a block is deterministic whatever carries its external messages.
"""

from __future__ import annotations

import time

import torch

from dni_dist.channels import InMemoryChannel
from dni_dist.messages import Kind, Message
from dni_dist.stage import ProtocolError, Stage
from dni_dist.topology import Topology


class Block:
    def __init__(self, topology: Topology, stages: list[Stage], *, first: int) -> None:
        if not stages:
            raise ValueError("a block needs at least one stage")
        self.topology = topology
        self.stages = stages
        self.first = first
        self.last = first + len(stages) - 1
        self.inboxes = [InMemoryChannel() for _ in stages]

    def _local(self, index: int) -> bool:
        return self.first <= index <= self.last

    @property
    def ready(self) -> bool:
        """Whether a new activation (or batch) can enter: no local message in flight and no
        stage holding a locked update."""
        return all(len(i) == 0 for i in self.inboxes) and all(s.ready_for_forward for s in self.stages)

    def feed(self, step: int, x: torch.Tensor, y: torch.Tensor) -> list[Message]:
        return self._run(self.stages[0].forward(step, x, y))

    def deliver(self, msg: Message) -> list[Message]:
        """A message from outside the block. Raises ProtocolError if no local stage takes it."""
        targets = [d for d in self.topology.route(msg) if self._local(d)]
        if msg.kind is Kind.ACTIVATION and targets != [self.first]:
            raise ProtocolError(
                f"activation from stage {msg.sender} is not for this block's first stage", reason="wrong_route"
            )
        if msg.kind is Kind.GRADIENT and targets != [self.last]:
            raise ProtocolError(
                f"gradient from stage {msg.sender} is not for this block's last stage", reason="wrong_route"
            )
        if not targets:
            raise ProtocolError(
                f"no stage of this block ({self.first}-{self.last}) takes {msg.describe()}", reason="wrong_route"
            )
        if msg.kind is Kind.ACTIVATION:
            if msg.labels is None:
                raise ProtocolError(f"{msg.describe()} carries no labels", reason="wrong_shape")
            return self._run(self.stages[0].forward(msg.step, msg.tensor, msg.labels, msg.id))
        outbound: list[Message] = []
        for t in targets:
            outbound += self._run(self.stages[t - self.first].receive(msg))
        return outbound

    def _run(self, produced: list[Message]) -> list[Message]:
        """Route `produced`, deliver local messages until none is left, return what leaves."""
        outbound: list[Message] = []
        self._post(produced, outbound)
        busy = True
        while busy:
            busy = False
            for stage, inbox in zip(self.stages, self.inboxes):
                msg = inbox.recv()
                if msg is None:
                    continue
                busy = True
                if msg.kind is Kind.ACTIVATION:
                    assert msg.labels is not None
                    self._post(stage.forward(msg.step, msg.tensor, msg.labels, msg.id), outbound)
                else:
                    self._post(stage.receive(msg), outbound)
        return outbound

    def _post(self, messages: list[Message], outbound: list[Message]) -> None:
        for msg in messages:
            dests = self.topology.route(msg)
            for d in dests:
                if self._local(d):
                    self.inboxes[d - self.first].send(msg)
            if any(not self._local(d) for d in dests):
                outbound.append(msg)

    # -- what the worker needs to schedule --------------------------------------------------
    def inflight(self) -> int:
        """Most steps any local sg interface has forwarded without receiving their target."""
        return max((len(s.pending) for s in self.stages if s.spec.out_method == "sg"), default=0)

    def drop_oldest_pending(self) -> int:
        """Forget the oldest un-targeted step of every local sg interface (drop-oldest policy)."""
        dropped = 0
        for s in self.stages:
            if s.spec.out_method == "sg" and s.pending:
                s.pending.popitem(last=False)
                dropped += 1
        return dropped

    def oldest_pending_age(self) -> float:
        """Seconds since the oldest step still awaiting its target on a local sg interface was sent."""
        sent = [next(iter(s.pending.values())).sent_at for s in self.stages if s.spec.out_method == "sg" and s.pending]
        return time.monotonic() - min(sent) if sent else 0.0

    def expire(self, older_than_s: float) -> list[int]:
        """Forget every pending step (any method) forwarded more than `older_than_s` ago: its
        gradient, target or output error is not coming (lost with a restarted or cut-off peer)."""
        cutoff = time.monotonic() - older_than_s
        old = {k for s in self.stages for k, p in s.pending.items() if p.sent_at < cutoff}
        return self.forget(old)

    def forget(self, steps: set[int]) -> list[int]:
        """Drop `steps` from every local stage's pending entries; the steps that were pending."""
        gone = set()
        for s in self.stages:
            for step in [k for k in s.pending if k in steps]:
                del s.pending[step]
                gone.add(step)
        return sorted(gone)

    def pending_through(self, step: int) -> bool:
        """Whether any local stage still waits on something for a step <= `step`."""
        return any(k <= step for s in self.stages for k in s.pending)

    def has_pending(self) -> bool:
        return any(s.pending for s in self.stages)

    def awaiting(self) -> Kind | None:
        """What a locked local stage waits for before it can update, if any."""
        for s in self.stages:
            if s.awaiting is not None:
                return s.awaiting
        return None
