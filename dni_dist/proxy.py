"""A small TCP fault proxy: put it on one edge to delay, partition or cut the traffic on purpose.

    python -m dni_dist.proxy --listen 127.0.0.1:7000 --target 127.0.0.1:5555 \
        --delay-ms 200 --partition-at 20 --partition-for 10     # between two hosts, by hand

    proxy = FaultProxy(("127.0.0.1", 5555)).start()   # in a process: a thread, listening on a free port
    proxy.endpoint                                    # 'tcp://127.0.0.1:<port>': dial this instead
    proxy.delay(0.2, seconds=10); proxy.partition(10); proxy.cut()

It forwards bytes both ways between each accepted connection and its own connection to the
target. `delay(d)` holds every chunk d seconds before passing it on (order kept); `partition(T)`
passes nothing, either way, for T seconds: the connections stay open and the bytes wait, as
in a network partition where packets vanish rather than being refused (ZeroMQ's heartbeat may
then drop the connection on its own); `cut()` closes every connection at once, like a peer
that vanished (ZeroMQ re-dials). `dni-launch --inject-fault block=I,step=S,kind=partition|delay`
puts one in front of block I's inbound activation socket (dni_dist.faults), and the compose
test's network-namespace hosts can run `python -m dni_dist.proxy` as one more host.
"""

from __future__ import annotations

import argparse
import logging
import selectors
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

CHUNK = 1 << 16


@dataclass
class _Pipe:
    """One direction of one connection: bytes read from `src`, waiting to be written to `dst`."""

    src: socket.socket
    dst: socket.socket
    queue: deque[tuple[float, bytes]] = field(default_factory=deque)  # (release time, bytes)
    eof: bool = False  # `src` closed: deliver what is queued, then close


class FaultProxy:
    def __init__(self, target: tuple[str, int], listen: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        self.target = target
        self.server = socket.create_server(listen, reuse_port=False)
        self.server.setblocking(False)
        self.host, self.port = self.server.getsockname()[:2]
        self.pipes: list[_Pipe] = []
        self.lock = threading.Lock()
        self.delay_s = 0.0
        self.delay_until = 0.0
        self.partition_until = 0.0
        self.cut_requested = False
        self.bytes = 0  # forwarded so far
        self.connections = 0
        self.cuts = 0
        self.episodes: list[tuple[str, float, float]] = []  # (kind, start, end) in time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fault-proxy", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def delay(self, seconds_each: float, *, seconds: float) -> None:
        """Hold every chunk `seconds_each` for the next `seconds`."""
        now = time.monotonic()
        with self.lock:
            self.delay_s, self.delay_until = seconds_each, now + seconds
            self.episodes.append(("delay", now, now + seconds))
        log.warning("fault proxy %s -> %s:%d: delaying by %.0f ms for %.1fs", self.endpoint, *self.target,
                    1000 * seconds_each, seconds)  # fmt: skip

    def partition(self, seconds: float) -> None:
        """Pass nothing either way for `seconds`."""
        now = time.monotonic()
        with self.lock:
            self.partition_until = now + seconds
            self.episodes.append(("partition", now, now + seconds))
        log.warning("fault proxy %s -> %s:%d: partitioned for %.1fs", self.endpoint, *self.target, seconds)

    def cut(self) -> None:
        """Close every connection now (the peers see it vanish and re-dial)."""
        with self.lock:
            self.cut_requested = True

    def drain(self, timeout_s: float) -> bool:
        """Wait (at most `timeout_s`) until no delayed bytes are waiting; whether none are."""
        deadline = time.monotonic() + timeout_s
        while any(p.queue for p in list(self.pipes)):
            if time.monotonic() > deadline or not self._thread.is_alive():
                return False
            time.sleep(0.005)
        return True

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._close_all()
        self.server.close()

    # -- the forwarding thread --------------------------------------------------------------------
    def _close_all(self) -> None:
        for s in {s for p in self.pipes for s in (p.src, p.dst)}:
            s.close()
        self.pipes.clear()

    def _accept(self) -> None:
        try:
            client, _ = self.server.accept()
        except BlockingIOError:
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError as e:
            log.warning("fault proxy: cannot reach %s:%d (%s); dropping the connection", *self.target, e)
            client.close()
            return
        for s in (client, upstream):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pipes += [_Pipe(client, upstream), _Pipe(upstream, client)]
        self.connections += 1

    def _drop(self, pipe: _Pipe) -> None:
        """One side closed: close the connection, both directions."""
        gone = {pipe.src, pipe.dst}
        for s in gone:
            s.close()
        self.pipes = [p for p in self.pipes if p.src not in gone]

    def _serve(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            with self.lock:
                partitioned = now < self.partition_until
                if self.cut_requested:
                    self.cut_requested = False
                    self.cuts += 1
                    self._close_all()
            sel = selectors.DefaultSelector()
            if not partitioned:
                sel.register(self.server, selectors.EVENT_READ)
                for p in self.pipes:
                    if not p.eof:
                        sel.register(p.src, selectors.EVENT_READ, p)  # each socket is the source of one pipe
            waiting = [p.queue[0][0] for p in self.pipes if p.queue]
            timeout = 0.05 if not waiting or partitioned else min(0.05, max(0.001, min(waiting) - now))
            ready = sel.select(timeout=timeout)
            sel.close()
            if time.monotonic() < self.partition_until:  # it may have begun while we waited
                continue
            for key, _ in ready:
                if key.fileobj is self.server:
                    self._accept()
                    continue
                pipe: _Pipe = key.data
                try:
                    data = pipe.src.recv(CHUNK)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:  # the sender closed: what it sent before still arrives, then the close
                    pipe.eof = True
                    if not pipe.queue:
                        self._drop(pipe)
                    continue
                read_at = time.monotonic()  # the delay in force now, not when the select began
                pipe.queue.append((read_at + (self.delay_s if read_at < self.delay_until else 0.0), data))
            self._flush(time.monotonic())

    def _flush(self, now: float) -> None:
        for pipe in list(self.pipes):
            while pipe.queue and pipe.queue[0][0] <= now:
                _, data = pipe.queue[0]
                try:
                    sent = pipe.dst.send(data)
                except BlockingIOError:
                    break
                except OSError:
                    self._drop(pipe)
                    break
                self.bytes += sent
                if sent < len(data):
                    pipe.queue[0] = (pipe.queue[0][0], data[sent:])
                    break
                pipe.queue.popleft()
            if pipe.eof and not pipe.queue and pipe in self.pipes:
                self._drop(pipe)


def main() -> None:
    parser = argparse.ArgumentParser(description="Forward one TCP edge, delaying or partitioning it on a schedule.")
    parser.add_argument("--listen", required=True, help="host:port to accept the dialling side on")
    parser.add_argument("--target", required=True, help="host:port of the real endpoint")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="hold every chunk this long (whole run)")
    parser.add_argument("--partition-at", type=float, default=0.0, help="seconds after start to partition")
    parser.add_argument("--partition-for", type=float, default=0.0, help="how long the partition lasts (0 = none)")
    parser.add_argument("--exit-after", type=float, default=0.0, help="leave after this many seconds (0 = never)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    lhost, lport = args.listen.rsplit(":", 1)
    thost, tport = args.target.rsplit(":", 1)
    proxy = FaultProxy((thost, int(tport)), (lhost, int(lport))).start()
    log.info("fault proxy %s -> %s", proxy.endpoint, args.target)
    if args.delay_ms:
        proxy.delay(args.delay_ms / 1000, seconds=float("inf"))
    start = time.monotonic()
    partitioned = False
    while not args.exit_after or time.monotonic() - start < args.exit_after:
        if args.partition_for and not partitioned and time.monotonic() - start >= args.partition_at:
            proxy.partition(args.partition_for)
            partitioned = True
        time.sleep(0.1)
    proxy.close()


if __name__ == "__main__":
    main()
