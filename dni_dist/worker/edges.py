"""The sockets of one block: its edges to the neighbours, the output-error broadcast, the control
channel to the launcher, and what it announces in the rendezvous.

    edges = Edges(wcfg, first=False, last=False, subscribes=False, remote_subscribers=0, align=True)
    edges.open(rdv)                      # bind, publish, connect; block 0 also learns the resume step
    edges.dispatch(outbound, trim=...)   # Messages from Block.feed/deliver onto the right socket
    item = edges.act_in.recv()           # a validated Message/Marker, or None

Per neighbour pair there is one PUSH/PULL edge each way (activations down, gradients up); the
last block publishes output errors on an XPUB that dfa/kb blocks SUBscribe to; a DEALER reports
progress to the launcher's ROUTER and receives `stop`. With the run's keys every socket is CURVE:
binding sockets are servers whose peers pyzmq's ZAP authenticator checks against the run's
public keys; connecting sockets dial with the server's public key (docs/security.md).
Rendezvous keys (per run id), all but exit under this incarnation's attempt
(dni_dist.worker.attempts): block<k>/<a>/act, .../grad, .../errors (endpoints),
.../resume_step, .../ready; and block<k>/exit.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgpack
import zmq
from zmq.auth.thread import ThreadAuthenticator

from dni_dist.keys import RunKeys
from dni_dist.messages import Kind, Marker, Message
from dni_dist.proxy import FaultProxy
from dni_dist.rendezvous import Rendezvous
from dni_dist.transport import Curve, ZmqReceiver, ZmqSender, make_socket, secure
from dni_dist.worker.attempts import PeerKeys
from dni_dist.worker.options import WorkerConfig

log = logging.getLogger(__name__)

DIRECTIONS_IN = ("activation_in", "gradient_in", "error_in")
DIRECTIONS_OUT = ("activation_out", "gradient_out", "error_out")


class Edges:
    def __init__(
        self,
        wcfg: WorkerConfig,
        *,
        first: bool,
        last: bool,
        subscribes: bool,
        remote_subscribers: int,
        keys: RunKeys | None = None,
        align: bool = True,
    ) -> None:
        self.wcfg = wcfg
        self.k = wcfg.block
        self.prefix = f"[block {self.k}]"
        self.first, self.last = first, last
        self.subscribes = subscribes
        self.remote_subscribers = remote_subscribers
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.act_in: ZmqReceiver | None = None
        self.grad_in: ZmqReceiver | None = None
        self.err_sub: ZmqReceiver | None = None
        self.act_out: ZmqSender | None = None
        self.grad_out: ZmqSender | None = None
        self.err_pub: ZmqSender | None = None
        self.control: zmq.Socket[Any] | None = None
        self.control_rejects = 0
        self.proxies: dict[str, FaultProxy] = {}  # in front of this block's relayed endpoints (PeerKeys)
        self.link_delay_s = 0.0
        self.stop_now = False  # the launcher said the run failed: leave without a final checkpoint
        self.keys = keys
        self.align = align  # received tensors copied to 64-byte boundaries (lockstep: == one process)
        self.curve = None if keys is None else Curve(keys.public, keys.secret)
        self.auth: ThreadAuthenticator | None = None
        if keys is not None:  # the ZAP handler of this context: only the run's public keys get in
            self.auth = ThreadAuthenticator(self.ctx)
            self.auth.start()
            self.auth.configure_curve(domain="*", location=str(keys.directory))

    # -- opening -------------------------------------------------------------------------------
    def open(self, rdv: Rendezvous, *, keys: PeerKeys, peer_timeout_s: float, stopping: Callable[[], bool]) -> None:
        """Bind this block's inbound sockets, publish them, connect to the neighbours' (waiting
        for them in the rendezvous) and, on the last block, wait for the error subscribers."""
        w, k = self.wcfg, self.k
        self.proxies, self.link_delay_s = keys.proxies, keys.link_delay_s
        if not self.first:
            sock = self._socket(zmq.PULL)
            rdv.publish(keys.own("act"), keys.advertise("act", self._bind(sock, 0)))
            self.act_in = self._receiver(sock, k - 1, {"activation", "end", "checkpoint"}, "activation")
        if not self.last:
            sock = self._socket(zmq.PULL)
            rdv.publish(keys.own("grad"), keys.advertise("grad", self._bind(sock, 1)))
            self.grad_in = self._receiver(sock, k + 1, {"gradient", "done"}, "gradient")
        xpub: zmq.Socket[Any] | None = None
        if self.last and self.remote_subscribers:
            xpub = self._socket(zmq.XPUB)
            xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
            rdv.publish(keys.own("errors"), keys.advertise("errors", self._bind(xpub, 2)))
            self.err_pub = self._sender(xpub)
        if not self.last:
            sock = self._socket(zmq.PUSH, peer=f"block{k + 1}")
            sock.connect(keys.endpoint(k + 1, "act"))
            self.act_out = self._sender(sock)
        if not self.first:
            sock = self._socket(zmq.PUSH, peer=f"block{k - 1}")
            sock.connect(keys.endpoint(k - 1, "grad"))
            self.grad_out = self._sender(sock)
        if self.subscribes:
            sock = self._socket(zmq.SUB, peer=f"block{w.blocks - 1}")
            sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.connect(keys.endpoint(w.blocks - 1, "errors"))
            self.err_sub = self._receiver(sock, w.blocks - 1, {"output_error"}, "output-error")
        listening = [
            f"{name} {rx.sock.getsockopt_string(zmq.LAST_ENDPOINT)}"
            for name, rx in (("activations", self.act_in), ("gradients", self.grad_in))
            if rx is not None
        ]
        log.info("%s listening on %s", self.prefix, ", ".join(listening) or "nothing (single block)")
        if xpub is not None:  # PUB/SUB drops what is sent before a subscription lands
            self._await_subscriptions(xpub, self.remote_subscribers, peer_timeout_s, stopping)
        if w.control:
            self.control = self.ctx.socket(zmq.DEALER)
            secure(self.control, self.curve, server_key=self._server_key("launcher"))
            self.control.setsockopt(zmq.IDENTITY, f"block-{k}".encode())
            self.control.setsockopt(zmq.LINGER, 1000)
            self.control.connect(w.control)

    def announce(self, rdv: Rendezvous, *, keys: PeerKeys, last_forward: int) -> int | None:
        """Publish this block's resume point and readiness. Block 0 then waits for every block
        and returns the step to feed next (one past the furthest any block had reached)."""
        rdv.publish(keys.own("resume_step"), str(last_forward))
        rdv.publish(keys.own("ready"), "1")
        if not self.first:
            return None
        for b in range(self.wcfg.blocks):
            keys.endpoint(b, "ready")
        return max(int(keys.endpoint(b, "resume_step")) for b in range(self.wcfg.blocks)) + 1

    def _server_key(self, peer: str | None) -> bytes | None:
        return None if self.keys is None or peer is None else self.keys.public_of(peer)

    def _socket(self, kind: int, *, peer: str | None = None) -> zmq.Socket[Any]:
        """An edge socket; with the run's keys CURVE: a server when it binds (peer None), else a
        client of `peer`'s public key. (Peers cut off at the handshake are counted by links.py.)"""
        return make_socket(self.ctx, kind, self.wcfg.transport, curve=self.curve, server_key=self._server_key(peer))

    def _receiver(self, sock: zmq.Socket[Any], sender: int, kinds: set[str], edge: str) -> ZmqReceiver:
        return ZmqReceiver(sock, run=self.wcfg.run_id, expect_block=sender, allowed=frozenset(kinds),
                           prefix=self.prefix, edge=edge, max_bytes=self.wcfg.transport.max_tensor_bytes,
                           align=self.align)  # fmt: skip

    def _sender(self, sock: zmq.Socket[Any]) -> ZmqSender:
        return ZmqSender(sock, run=self.wcfg.run_id, block=self.k, track_bytes=self.wcfg.transport.track_bytes)

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

    def _await_subscriptions(
        self, xpub: zmq.Socket[Any], expected: int, timeout_s: float, stopping: Callable[[], bool]
    ) -> None:
        seen, deadline = 0, time.monotonic() + timeout_s
        while seen < expected and not stopping():
            if xpub.poll(200):
                if xpub.recv()[:1] == b"\x01":
                    seen += 1
            elif time.monotonic() > deadline:
                raise TimeoutError(f"{self.prefix} only {seen} of {expected} output-error subscribers connected")

    # -- traffic -------------------------------------------------------------------------------
    def senders(self) -> list[ZmqSender]:
        return [s for s in (self.act_out, self.grad_out, self.err_pub) if s is not None]

    def receivers(self) -> list[ZmqReceiver]:
        return [r for r in (self.act_in, self.grad_in, self.err_sub) if r is not None]

    def dispatch(self, outbound: list[Message], *, trim: Callable[[int], bool]) -> None:
        """Queue each outbound message on its edge; `trim(backlog)` says whether to discard the
        oldest unsent gradient first (the drop-oldest policy)."""
        for msg in outbound:
            if msg.kind is Kind.ACTIVATION:
                assert self.act_out is not None, "an activation leaves the last block"
                self.act_out.send(msg)
            elif msg.kind is Kind.GRADIENT:
                assert self.grad_out is not None, "a gradient leaves block 0"
                if trim(self.grad_out.backlog):
                    self.grad_out.outbox.popleft()
                self.grad_out.send(msg)
            elif self.err_pub is not None:
                self.err_pub.send(msg)

    def send_upstream(self, marker: Marker) -> None:
        if self.grad_out is not None:
            self.grad_out.send(marker)

    def send_downstream(self, marker: Marker) -> None:
        if self.act_out is not None:
            self.act_out.send(marker)

    def flush(self) -> bool:
        return all([s.flush() for s in self.senders()])

    def flush_all(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.flush() and time.monotonic() < deadline:
            time.sleep(0.01)

    @property
    def backlog(self) -> int:
        return sum(s.backlog for s in self.senders())

    def poller(self) -> zmq.Poller:
        poller = zmq.Poller()
        for r in self.receivers():
            poller.register(r.sock, zmq.POLLIN)
        if self.control is not None:
            poller.register(self.control, zmq.POLLIN)
        return poller

    # -- control and accounting ----------------------------------------------------------------
    def stop_requested(self) -> bool:
        """Drain the control socket; True if the launcher asked this block to stop. `stop_now`
        becomes True if it said the run failed (no final cut can be taken: leave at once)."""
        stop = False
        while self.control is not None and self.control.poll(0):
            try:
                msg = msgpack.unpackb(self.control.recv(), raw=False, max_str_len=64, max_map_len=8, max_array_len=8)
            except Exception:
                self.control_rejects += 1
                continue
            if isinstance(msg, dict) and msg.get("type") == "stop":
                stop, self.stop_now = True, self.stop_now or msg.get("now") is True
        return stop

    def report(self, payload: dict[str, Any]) -> None:
        if self.control is not None:
            self.control.send(msgpack.packb(payload))

    def rejected(self) -> Counter[str]:
        total: Counter[str] = Counter({"control": self.control_rejects} if self.control_rejects else {})
        for r in self.receivers():
            total.update(r.rejected)
        return total

    def counters(self) -> dict[str, dict[str, int]]:
        """Messages and bytes per direction (activation_in, ..., error_out) of the open edges."""
        edges = (self.act_in, self.grad_in, self.err_sub, self.act_out, self.grad_out, self.err_pub)
        return {
            name: {"messages": e.messages, "bytes": e.bytes}
            for name, e in zip(DIRECTIONS_IN + DIRECTIONS_OUT, edges)
            if e is not None
        }

    def queues(self) -> dict[str, int]:
        """Unsent messages per outbound direction."""
        edges = (self.act_out, self.grad_out, self.err_pub)
        return {name: e.backlog for name, e in zip(DIRECTIONS_OUT, edges) if e is not None}

    def close(self) -> None:
        if self.auth is not None:
            self.auth.stop()
        self.ctx.destroy(linger=self.wcfg.transport.linger_ms)
        for proxy in self.proxies.values():  # a delayed link: what is still on it arrives first
            proxy.drain(timeout_s=2 * self.link_delay_s + 0.5)
            proxy.close()
