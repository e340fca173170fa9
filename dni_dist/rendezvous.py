"""Endpoint exchange through torch.distributed's TCPStore (no home-made rendezvous).

    rdv = Rendezvous.connect("127.0.0.1", 29500, run="r1")   # MASTER_ADDR / MASTER_PORT
    rdv.publish("block1/act", "tcp://127.0.0.1:40123")
    rdv.lookup("block1/act")                                 # waits until published

Under `dni-launch` the launcher hosts the store; under `torchrun` the worker uses the agent's
store at MASTER_ADDR:MASTER_PORT. Keys are namespaced by run id.
"""

from __future__ import annotations

import datetime
import os

from torch.distributed import TCPStore  # type: ignore[attr-defined]


class RendezvousError(RuntimeError):
    pass


class Rendezvous:
    def __init__(self, store: TCPStore, *, run: str, timeout_s: float) -> None:
        self.store = store
        self.run = run
        self.timeout = datetime.timedelta(seconds=timeout_s)

    @classmethod
    def host(cls, addr: str, *, run: str, timeout_s: float = 120.0) -> Rendezvous:
        """Start a store server on a free port (the launcher's side)."""
        store = TCPStore(addr, 0, None, True, timeout=datetime.timedelta(seconds=timeout_s), wait_for_workers=False)
        return cls(store, run=run, timeout_s=timeout_s)

    @classmethod
    def connect(cls, addr: str, port: int, *, run: str, timeout_s: float = 120.0) -> Rendezvous:
        try:
            store = TCPStore(addr, port, None, False, timeout=datetime.timedelta(seconds=timeout_s))
        except Exception as e:
            raise RendezvousError(
                f"cannot reach the rendezvous store at {addr}:{port} ({e}); is the launcher (or torchrun) up, "
                "and are MASTER_ADDR/MASTER_PORT right?"
            ) from e
        return cls(store, run=run, timeout_s=timeout_s)

    @classmethod
    def from_env(cls, *, run: str, timeout_s: float = 120.0) -> Rendezvous:
        addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
        if not addr or not port:
            raise RendezvousError("MASTER_ADDR and MASTER_PORT must name the rendezvous store (dni-launch sets them)")
        return cls.connect(addr, int(port), run=run, timeout_s=timeout_s)

    @property
    def port(self) -> int:
        return int(self.store.port)

    def _key(self, key: str) -> str:
        return f"dni/{self.run}/{key}"

    def publish(self, key: str, value: str) -> None:
        self.store.set(self._key(key), value)

    def lookup(self, key: str, timeout_s: float | None = None) -> str:
        timeout = self.timeout if timeout_s is None else datetime.timedelta(seconds=timeout_s)
        try:
            self.store.wait([self._key(key)], timeout)
        except Exception as e:
            raise RendezvousError(f"nobody published {key!r} for run {self.run} within {timeout}") from e
        return bytes(self.store.get(self._key(key))).decode()

    def has(self, key: str) -> bool:
        return bool(self.store.check([self._key(key)]))
