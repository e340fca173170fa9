"""Rejoining a running run: neighbours of a restarted block re-dial it and forget what it lost.

    watch = Neighbours(keys, edges)           # after Edges.open
    watch.heartbeat(block, admission, last_forward=41, end_step=None)   # every heartbeat
    next_step = watch.block0_resume(rdv, 0, max_inflight=8)             # a restarted block 0

A neighbour that sees block j's attempt counter move (dni_dist.worker.attempts) re-dials j's new
endpoint: ZeroMQ `disconnect` then `connect` on the same socket, so unsent messages stay queued
and go to the new incarnation, while those already handed to ZeroMQ went to the dead one. The
upstream neighbour forgets the pending steps of the latter (their targets are not coming) and
re-sends `end` if it had sent it. Block 1 tells a restarted block 0 the newest step it has
forwarded (`block0/<attempt>/downstream_step`); block 0 resumes `max_inflight` steps past it,
beyond anything block 1 may still receive from the old incarnation.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import zmq

from dni_dist.block import Block
from dni_dist.messages import Marker, MarkerKind
from dni_dist.rendezvous import Rendezvous, RendezvousError
from dni_dist.worker.admission import Admission
from dni_dist.worker.attempts import PeerKeys
from dni_dist.worker.edges import Edges

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rejoined:
    """A neighbour came back: `direction` is 'downstream', 'upstream' or 'errors'."""

    block: int
    attempt: int
    direction: str


class Neighbours:
    """Watches the neighbours' attempts and re-dials the ones that restarted."""

    def __init__(self, keys: PeerKeys, edges: Edges) -> None:
        self.keys = keys
        self.edges = edges
        dialled = {(keys.k + 1, "act"): edges.act_out, (keys.k - 1, "grad"): edges.grad_out,
                   (keys.blocks - 1, "errors"): edges.err_sub}  # fmt: skip
        self.sockets: dict[tuple[int, str], zmq.Socket[Any]] = {
            key: e.sock for key, e in dialled.items() if e is not None
        }

    def poll(self) -> list[Rejoined]:
        events = []
        for (block, name), sock in self.sockets.items():
            attempt, endpoint = self.keys.dialled[(block, name)]
            now = self.keys.current(block)
            if now is None or now == attempt:
                continue
            key = self.keys.key(block, now, name)
            if not self.keys.rdv.has(key):
                continue  # its sockets are not bound yet: next time
            new = self.keys.rdv.lookup(key)
            sock.disconnect(endpoint)
            sock.connect(new)
            self.keys.dialled[(block, name)] = (now, new)
            direction = {"act": "downstream", "grad": "upstream"}.get(name, "errors")
            log.warning("[block %d] block %d is back (attempt %d): %s re-dialled at %s", self.keys.k, block, now,
                        name, new)  # fmt: skip
            events.append(Rejoined(block, now, direction))
        return events

    def heartbeat(self, block: Block, admission: Admission, *, last_forward: int, end_step: int | None) -> None:
        """Re-dial restarted neighbours; upstream of one, forget the steps lost with it and re-send
        `end` if it was sent (`end_step`); block 1 answers a restarted block 0."""
        for event in self.poll():
            if event.direction != "downstream":
                continue
            lost = block.forget(self.lost_steps(block))
            if lost:
                admission.remember(lost, "lost")
                log.warning("[block %d] gave up on %d step(s) lost with block %d (%d..%d)", self.keys.k, len(lost),
                            event.block, lost[0], lost[-1])  # fmt: skip
            if end_step is not None:
                self.edges.send_downstream(Marker(MarkerKind.END, end_step, self.keys.k))
        self.tell_block0(last_forward)

    def block0_resume(self, rdv: Rendezvous, resume_at: int, *, max_inflight: int, steps: int) -> int:
        """A restarted block 0: the step to feed next, past anything block 1 has seen or may still
        receive from the old incarnation (at most `max_inflight` steps beyond what it had seen);
        past the end if block 1 has already finished; never beyond `steps` (the run's length)."""
        if self.keys.attempt == 0 or self.keys.blocks == 1:
            return resume_at
        deadline = time.monotonic() + self.keys.timeout_s
        while not rdv.has(self.keys.own("downstream_step")):
            if rdv.has("block1/end_step"):
                return int(rdv.lookup("block1/end_step")) + 1
            if time.monotonic() > deadline:
                raise RendezvousError(f"block 1 did not say how far it got within {self.keys.timeout_s:.0f}s")
            time.sleep(0.1)
        seen = int(rdv.lookup(self.keys.own("downstream_step")))
        return min(max(resume_at, seen + max_inflight + 1), steps)

    def upstream_end(self) -> int | None:
        """The end step of the upstream neighbour if it has finished (published at its exit). A
        restarted block with no activation queued takes it for the `end` its old incarnation got."""
        key = f"block{self.keys.k - 1}/end_step"
        return int(self.keys.rdv.lookup(key)) if self.keys.k > 0 and self.keys.rdv.has(key) else None

    def lost_steps(self, block: Block) -> set[int]:
        """Pending steps of the last local stage whose activation was handed to ZeroMQ (not
        still queued here): they went to the dead downstream incarnation."""
        queued = {item.step for _, item in self.edges.act_out.outbox} if self.edges.act_out is not None else set()
        return {s for s in block.stages[-1].pending if s not in queued}

    def tell_block0(self, last_forward: int) -> None:
        """Block 1: let a restarted block 0 know the newest step it has forwarded."""
        if self.keys.k != 1:
            return
        attempt = self.keys.current(0)
        if attempt:
            key = self.keys.key(0, attempt, "downstream_step")
            if not self.keys.rdv.has(key):
                self.keys.rdv.publish(key, str(last_forward))
