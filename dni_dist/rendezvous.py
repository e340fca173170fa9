"""Endpoint exchange through torch.distributed's TCPStore (no home-made rendezvous).

    rdv = Rendezvous.connect("127.0.0.1", 29500, run="r1")   # MASTER_ADDR / MASTER_PORT
    rdv.publish("block1/act", "tcp://127.0.0.1:40123")
    rdv.lookup("block1/act")                                 # waits until published

Under `dni-launch` the launcher hosts the store; under `torchrun` the worker uses the agent's
store at MASTER_ADDR:MASTER_PORT. Keys are namespaced by run id.

[Note: authenticated values]
A TCPStore accepts writes from anyone who can reach it. With the run secret (keys.py), every
value is published as `value \n HMAC-SHA256(secret, run/key \0 value)` and `lookup` refuses a
value whose tag does not verify, naming the key: a forged or replayed-from-elsewhere entry
cannot redirect a block. The launcher's store also listens only on the address it was given.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import socket

from torch.distributed import TCPStore  # type: ignore[attr-defined]


class RendezvousError(RuntimeError):
    pass


def listening_socket(addr: str, port: int = 0) -> socket.socket:
    """A TCP socket listening on `addr` only (TCPStore itself would listen on every interface)."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((addr, port))
    sock.listen(512)
    return sock


class Rendezvous:
    def __init__(self, store: TCPStore, *, run: str, timeout_s: float, secret: bytes | None = None) -> None:
        self.store = store
        self.run = run
        self.timeout = datetime.timedelta(seconds=timeout_s)
        self.secret = secret
        self._listener: socket.socket | None = None

    @classmethod
    def host(cls, addr: str, *, run: str, timeout_s: float = 120.0, secret: bytes | None = None) -> Rendezvous:
        """Start a store server on a free port of `addr` only (the launcher's side)."""
        listener = listening_socket(addr)
        store = TCPStore(addr, listener.getsockname()[1], None, True, timeout=datetime.timedelta(seconds=timeout_s),
                         wait_for_workers=False, master_listen_fd=listener.fileno())  # fmt: skip
        rdv = cls(store, run=run, timeout_s=timeout_s, secret=secret)
        rdv._listener = listener  # keep the listening socket alive as long as the store
        return rdv

    @classmethod
    def connect(
        cls, addr: str, port: int, *, run: str, timeout_s: float = 120.0, secret: bytes | None = None
    ) -> Rendezvous:
        try:
            store = TCPStore(addr, port, None, False, timeout=datetime.timedelta(seconds=timeout_s))
        except Exception as e:
            raise RendezvousError(
                f"cannot reach the rendezvous store at {addr}:{port} ({e}); is the launcher (or torchrun) up, "
                "and are MASTER_ADDR/MASTER_PORT right?"
            ) from e
        return cls(store, run=run, timeout_s=timeout_s, secret=secret)

    @classmethod
    def from_env(cls, *, run: str, timeout_s: float = 120.0, secret: bytes | None = None) -> Rendezvous:
        addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
        if not addr or not port:
            raise RendezvousError("MASTER_ADDR and MASTER_PORT must name the rendezvous store (dni-launch sets them)")
        return cls.connect(addr, int(port), run=run, timeout_s=timeout_s, secret=secret)

    @property
    def port(self) -> int:
        return int(self.store.port)

    def _key(self, key: str) -> str:
        return f"dni/{self.run}/{key}"

    def _tag(self, key: str, value: str) -> str:
        assert self.secret is not None
        message = f"{self._key(key)}\0{value}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def publish(self, key: str, value: str) -> None:
        if "\n" in value:
            raise ValueError(f"rendezvous value for {key!r} must be one line")
        self.store.set(self._key(key), value if self.secret is None else f"{value}\n{self._tag(key, value)}")

    def lookup(self, key: str, timeout_s: float | None = None) -> str:
        """The value published under `key` (waiting for it); RendezvousError if it never comes
        or, with a run secret, if its tag does not verify."""
        timeout = self.timeout if timeout_s is None else datetime.timedelta(seconds=timeout_s)
        try:
            self.store.wait([self._key(key)], timeout)
        except Exception as e:
            raise RendezvousError(f"nobody published {key!r} for run {self.run} within {timeout}") from e
        raw = bytes(self.store.get(self._key(key))).decode(errors="replace")
        if self.secret is None:
            return raw
        value, _, tag = raw.rpartition("\n")
        if not hmac.compare_digest(tag, self._tag(key, value)):
            raise RendezvousError(
                f"rendezvous entry {key!r} of run {self.run} failed authentication (forged, or written by another "
                "run): refusing it. Is something else writing to this store? Check who reaches MASTER_ADDR:MASTER_PORT."
            )
        return value

    def has(self, key: str) -> bool:
        return bool(self.store.check([self._key(key)]))

    def add(self, key: str, amount: int) -> int:
        """Atomically add `amount` to the counter `key` (0 when new) and return its new value."""
        return int(self.store.add(self._key(key), amount))


def serve(port: int, *, run: str, blocks: int, addr: str = "0.0.0.0") -> None:
    """Host the store for workers that have no launcher (containers), until every block of
    `run` has published its exit (or SIGTERM)."""
    import logging
    import signal
    import time

    log = logging.getLogger(__name__)
    listener = listening_socket(addr, port)  # only where asked (--addr)
    store = TCPStore(addr, port, None, True, timeout=datetime.timedelta(seconds=30), wait_for_workers=False,
                     master_listen_fd=listener.fileno())  # fmt: skip
    rdv = Rendezvous(store, run=run, timeout_s=30)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    log.info("rendezvous store on %s:%d for run %s (%d blocks)", addr, port, run, blocks)
    while not stop["now"] and not all(rdv.has(f"block{b}/exit") for b in range(blocks)):
        time.sleep(0.5)
    log.info("every block of run %s has exited", run)


if __name__ == "__main__":
    import argparse
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description="Host the TCPStore that dni-worker processes meet through.")
    parser.add_argument("--port", type=int, default=int(os.environ.get("MASTER_PORT", "29500")))
    parser.add_argument("--addr", default="0.0.0.0")
    parser.add_argument("--run-id", default=os.environ.get("DNI_RUN_ID", "none"))
    parser.add_argument("--blocks", type=int, default=int(os.environ.get("WORLD_SIZE", "1")))
    args = parser.parse_args()
    serve(args.port, run=args.run_id, blocks=args.blocks, addr=args.addr)
