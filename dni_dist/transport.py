"""ZeroMQ edges between blocks: configured sockets, a non-blocking sender, a validating receiver.

    ctx = zmq.Context()
    pull = make_socket(ctx, zmq.PULL, TransportConfig()); port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = make_socket(ctx, zmq.PUSH, TransportConfig()); push.connect(f"tcp://127.0.0.1:{port}")
    tx = ZmqSender(push, run="r", block=0); rx = ZmqReceiver(pull, run="r", expect_block=0)
    tx.send(msg); rx.recv()   # -> Message / Marker, or None (nothing waiting, or a rejected frame)

[Note: backpressure and staleness]
Edges are PUSH/PULL with a small high-water mark, so a fast sender stalls instead of queueing
without bound. The sender never blocks the worker's loop: a message that would block waits in
an outbox and is retried while the worker keeps serving its other sockets (no deadlock when
two neighbours both push). HWM counts messages per pipe and TCP buffers hold more, so the
worker bounds staleness itself with a credit window (`max_inflight`), not with HWM.

[Note: zero-copy sends]
Tensor frames at least `track_bytes` (1 MiB) long go out with copy=False and track=True; the
sender keeps the tensor alive until ZeroMQ is done with it. Stages never write to a tensor after
sending it (gradients are reset with set_to_none), so no copy is needed for safety. Smaller
frames are copied: below about 1 MiB a memcpy costs the sender less CPU than pyzmq's zero-copy
bookkeeping (a tracker and a release through its garbage-collector thread per frame), measured
with `python -m dni_dist.bench_transport`.
CUDA tensors are staged through pinned host memory first.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import torch
import zmq

from dni_dist.config import ConfigError
from dni_dist.messages import MAX_HEADER_BYTES, MAX_TENSOR_BYTES, Marker, Message, WireError, decode, encode

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class TransportConfig:
    hwm: int = 4  # messages queued per pipe before a sender stalls
    linger_ms: int = 2000  # how long close() may flush unsent messages
    heartbeat_ivl_ms: int = 1000  # ZMTP heartbeats detect dead TCP peers
    heartbeat_timeout_ms: int = 10000
    reconnect_ivl_ms: int = 100
    reconnect_ivl_max_ms: int = 5000  # exponential reconnect backoff cap
    track_bytes: int = 1 << 20
    max_tensor_bytes: int = MAX_TENSOR_BYTES  # larger tensor frames are rejected (counted as too_large)

    def __post_init__(self) -> None:
        if self.hwm < 1:
            raise ConfigError(f"transport.hwm: must be >= 1, got {self.hwm}")
        if self.max_tensor_bytes < 1:
            raise ConfigError(f"--max-tensor-mb (transport.max_tensor_bytes): must be > 0, got {self.max_tensor_bytes}")

    @property
    def max_message_bytes(self) -> int:
        """The most one legal message can hold: a header, a tensor and its labels. It is also
        ZMQ_MAXMSGSIZE, which libzmq applies per frame: a peer sending a larger frame is cut off
        before the frame is buffered; a smaller frame over the tensor cap reaches the decoder and
        is counted as too_large. (libzmq bounds frames, not the number of frames in a message:
        what keeps a stranger from streaming endless frames is CURVE, see docs/security.md.)"""
        return 2 * self.max_tensor_bytes + MAX_HEADER_BYTES


@dataclass(frozen=True)
class Curve:
    """This process's CURVE keypair (z85). Sockets made with it encrypt and authenticate: a
    binding socket is a CURVE server (its peers are checked by the context's ZAP authenticator),
    a connecting one a client that must name the public key of the server it dials."""

    public: bytes
    secret: bytes


def secure(sock: zmq.Socket[Any], curve: Curve | None, *, server_key: bytes | None = None) -> None:
    """Make `sock` a CURVE server (server_key None) or a client of `server_key`; no-op without keys.
    Must run before bind/connect."""
    if curve is None:
        return
    sock.curve_publickey = curve.public
    sock.curve_secretkey = curve.secret
    if server_key is None:
        sock.curve_server = True
    else:
        sock.curve_serverkey = server_key


def make_socket(
    ctx: zmq.Context[Any],
    kind: int,
    cfg: TransportConfig,
    *,
    curve: Curve | None = None,
    server_key: bytes | None = None,
) -> zmq.Socket[Any]:
    """A socket with the runtime's options; with `curve`, encrypted and authenticated (set before
    bind/connect): a server when `server_key` is None, else a client of that server."""
    sock: zmq.Socket[Any] = ctx.socket(kind)
    secure(sock, curve, server_key=server_key)
    sock.setsockopt(zmq.LINGER, cfg.linger_ms)
    sock.setsockopt(zmq.HEARTBEAT_IVL, cfg.heartbeat_ivl_ms)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, cfg.heartbeat_timeout_ms)
    sock.setsockopt(zmq.HEARTBEAT_TTL, cfg.heartbeat_timeout_ms)
    sock.setsockopt(zmq.RECONNECT_IVL, cfg.reconnect_ivl_ms)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, cfg.reconnect_ivl_max_ms)
    if kind in (zmq.PUSH, zmq.DEALER):
        sock.setsockopt(zmq.SNDHWM, cfg.hwm)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # queue only on live connections
    if kind in (zmq.PULL, zmq.SUB, zmq.ROUTER):
        sock.setsockopt(zmq.RCVHWM, cfg.hwm if kind == zmq.PULL else 1000)
        sock.setsockopt(zmq.MAXMSGSIZE, cfg.max_message_bytes)
    if kind in (zmq.PUB, zmq.XPUB):
        sock.setsockopt(zmq.SNDHWM, 1000)  # output errors are small; dropping one would stall a DFA block
    return sock


def to_host(msg: Message) -> Message:
    """The message with its tensors in (pinned, for CUDA) host memory."""

    def host(t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None or t.device.type == "cpu":
            return t
        pinned = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        pinned.copy_(t)
        return pinned

    if msg.tensor.device.type == "cpu" and (msg.labels is None or msg.labels.device.type == "cpu"):
        return msg
    tensor = host(msg.tensor)
    assert tensor is not None
    return Message(msg.kind, msg.step, msg.sender, tensor, host(msg.labels))


def to_device(msg: Message, device: torch.device) -> Message:
    """A received message with its tensors on `device` (unchanged on the CPU)."""
    if device.type == "cpu":
        return msg
    labels = None if msg.labels is None else msg.labels.to(device, non_blocking=True)
    return Message(msg.kind, msg.step, msg.sender, msg.tensor.to(device, non_blocking=True), labels)


class ZmqSender:
    """Sends Messages/Markers without ever blocking the caller (see [Note: backpressure])."""

    def __init__(self, sock: zmq.Socket[Any], *, run: str, block: int, track_bytes: int = 1 << 20) -> None:
        self.sock = sock
        self.run = run
        self.block = block
        self.track_bytes = track_bytes
        self.outbox: deque[tuple[list[Any], Message | Marker]] = deque()
        self.in_flight: deque[tuple[zmq.MessageTracker, Message | Marker]] = deque()
        self.messages = 0
        self.bytes = 0

    def send(self, item: Message | Marker) -> None:
        if isinstance(item, Message):
            item = to_host(item)
        self.outbox.append((encode(item, run=self.run, block=self.block), item))
        self.flush()

    def flush(self) -> bool:
        """Try to hand queued messages to ZeroMQ; True when none is left waiting."""
        while self.in_flight and self.in_flight[0][0].done:
            self.in_flight.popleft()
        while self.outbox:
            frames, item = self.outbox[0]
            size = sum(len(f) for f in frames)
            big = size >= self.track_bytes
            try:
                tracker = self.sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=not big, track=big)
            except zmq.Again:
                return False
            self.outbox.popleft()
            if big and tracker is not None:
                self.in_flight.append((tracker, item))
            self.messages += 1
            self.bytes += size
        return True

    @property
    def backlog(self) -> int:
        return len(self.outbox)


class ZmqReceiver:
    """Receives and validates; a bad message is counted by reason, logged, and dropped."""

    def __init__(
        self,
        sock: zmq.Socket[Any],
        *,
        run: str,
        expect_block: int | None,
        allowed: frozenset[str],
        prefix: str,
        edge: str,
        max_bytes: int = MAX_TENSOR_BYTES,
        align: bool = True,
    ) -> None:
        self.sock = sock
        self.max_bytes = max_bytes
        self.align = align  # copy tensors whose frame is not 64-byte aligned (messages.decode)
        self.run = run
        self.expect_block = expect_block
        self.allowed = allowed
        self.prefix = prefix
        self.edge = edge
        self.rejected: Counter[str] = Counter()
        self.messages = 0
        self.bytes = 0

    def recv(self) -> Message | Marker | None:
        """The next valid message, or None if none is waiting or the next one was rejected."""
        try:
            frames = self.sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        size = sum(len(f.buffer) for f in frames)
        self.messages += 1
        self.bytes += size
        try:
            return decode(
                [frames[0].bytes, *(f.buffer for f in frames[1:])],
                run=self.run,
                expect_block=self.expect_block,
                allowed=self.allowed,
                max_bytes=self.max_bytes,
                align=self.align,
            )
        except WireError as e:
            self.reject(e.reason, str(e))
            return None

    def reject(self, reason: str, detail: str) -> None:
        self.rejected[reason] += 1
        if self.rejected[reason] <= 5 or self.rejected[reason] % 1000 == 0:
            log.warning(
                "%s dropped a message on the %s edge (expected sender block %s): %s [%d %s so far]",
                self.prefix,
                self.edge,
                self.expect_block,
                detail,
                self.rejected[reason],
                reason,
            )
