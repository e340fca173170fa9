"""ZeroMQ connection events reach the worker: a socket monitor on each edge socket.

    links = Links("[block 1]")
    links.watch_edges(edges)               # after Edges.open: one monitor per edge socket
    for name, event in links.poll(): ...   # ("activations in", "disconnected") when the peer went away

ZeroMQ hides connections: a PUSH to a dead peer just queues, and the ZMTP heartbeat
(transport.TransportConfig.heartbeat_timeout_ms) drops a silent TCP peer without telling
anyone. The monitor turns those moments into events: counted (`dni_link_events_total`,
`link_events` in the block's stats), logged, and `down` names the edges that have lost their
peer and not regained one, which the worker reports while it waits.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from dni_dist.worker.edges import Edges

log = logging.getLogger(__name__)

_EVENTS = {
    int(zmq.EVENT_CONNECTED): "connected", int(zmq.EVENT_ACCEPTED): "connected",
    int(zmq.EVENT_DISCONNECTED): "disconnected",
}  # fmt: skip
# A peer ZeroMQ cut off before any message: its CURVE key is not the run's (the ZAP handler said
# no), or the handshake failed (e.g. it does not speak CURVE). Counted as rejections.
_REFUSED = {
    int(zmq.EVENT_HANDSHAKE_FAILED_AUTH): "unauthenticated",
    int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL): "handshake", int(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL): "handshake",
}  # fmt: skip


class Links:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.monitors: list[tuple[str, zmq.Socket[Any], zmq.Socket[Any]]] = []
        self.events: Counter[str] = Counter()
        self.peers: Counter[str] = Counter()  # edge -> live connections
        self.lost: Counter[str] = Counter()  # edge -> connections lost
        self.refused: Counter[str] = Counter()  # peers cut off at the handshake, by reason

    def watch(self, name: str, sock: zmq.Socket[Any]) -> None:
        mask = zmq.EVENT_CONNECTED | zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED
        for event in _REFUSED:
            mask |= event
        self.monitors.append((name, sock, sock.get_monitor_socket(mask)))

    def watch_edges(self, edges: Edges) -> None:
        named = (("activations in", edges.act_in), ("gradients in", edges.grad_in),
                 ("activations out", edges.act_out), ("gradients out", edges.grad_out),
                 ("errors out", edges.err_pub))  # fmt: skip
        for name, edge in named:
            if edge is not None:
                self.watch(name, edge.sock)

    def poll(self) -> list[tuple[str, str]]:
        """Every event since the last call, as (edge, 'connected' | 'disconnected')."""
        seen = []
        for name, _, mon in self.monitors:
            while mon.poll(0):
                code = int(recv_monitor_message(mon)["event"])
                if code in _REFUSED:
                    self.refused[_REFUSED[code]] += 1
                    continue
                event = _EVENTS.get(code)
                if event is None:
                    continue
                self.events[event] += 1
                self.peers[name] += 1 if event == "connected" else -1
                if event == "disconnected":
                    self.lost[name] += 1
                    log.warning("%s %s: the peer's connection is gone (ZeroMQ will re-dial)", self.prefix, name)
                seen.append((name, event))
        return seen

    @property
    def down(self) -> list[str]:
        """Edges that lost their peer and have not regained one."""
        return sorted(name for name, _, _ in self.monitors if self.peers[name] <= 0 and self.lost[name])

    def close(self) -> None:
        for _, sock, mon in self.monitors:
            with contextlib.suppress(zmq.ZMQError):
                sock.disable_monitor()
            mon.close(linger=0)
        self.monitors.clear()
