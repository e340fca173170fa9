"""Incarnations of a block in the rendezvous: one counter per block, keys per attempt.

    keys = PeerKeys(rdv, block=2, blocks=4)   # registers: attempt 0 on the first start, 1 after a restart...
    rdv.publish(keys.own("act"), endpoint)    # block2/<attempt>/act
    keys.endpoint(3, "act")                   # block 3's *current* endpoint (waits for it)
    rdv.publish(keys.own("act"), keys.advertise("act", bound))  # a FaultProxy in front if "act" in keys.relayed
    PeerKeys.mark_dead(rdv, 3)                # the launcher: block 3's newest incarnation is gone

Every start of block k adds one to the counter `block<k>/attempts` in the TCPStore; the value
before the add is the start's attempt. Everything an incarnation publishes (endpoints, ready,
resume step) lives under `block<k>/<attempt>/`, so nobody dials a dead incarnation's endpoint:
a lookup takes the newest attempt, and waits while the launcher has marked that one `dead`.
"""

from __future__ import annotations

import time

from dni_dist.config import RuntimeConfig
from dni_dist.proxy import FaultProxy
from dni_dist.rendezvous import Rendezvous, RendezvousError


class PeerKeys:
    def __init__(self, rdv: Rendezvous, *, block: int, blocks: int, timeout_s: float = 120.0) -> None:
        self.rdv, self.k, self.blocks, self.timeout_s = rdv, block, blocks, timeout_s
        self.attempt = rdv.add(f"block{block}/attempts", 1) - 1
        self.dialled: dict[tuple[int, str], tuple[int, str]] = {}  # (block, name) -> (attempt, endpoint)
        self.relayed: set[str] = set()  # own endpoints to advertise through a fault proxy
        self.proxies: dict[str, FaultProxy] = {}
        self.link_delay_s = 0.0  # runtime.link_delay_ms: what every relayed endpoint's proxy holds each chunk

    def relay(self, runtime: RuntimeConfig, *, link_fault: bool) -> None:
        """Which of this block's bound endpoints get a FaultProxy in front: the inbound activations
        when a link fault is injected into this block; every edge (activations, gradients, output
        errors) with `runtime.relay_links` or `link_delay_ms`, each chunk held `link_delay_ms`."""
        if link_fault:
            self.relayed.add("act")
        if runtime.relay_links or runtime.link_delay_ms > 0:
            self.relayed |= {"act", "grad", "errors"}
            self.link_delay_s = runtime.link_delay_ms / 1000

    @staticmethod
    def key(block: int, attempt: int, name: str) -> str:
        return f"block{block}/{attempt}/{name}"

    def own(self, name: str) -> str:
        return self.key(self.k, self.attempt, name)

    def advertise(self, name: str, endpoint: str) -> str:
        """The endpoint to publish for this block's bound socket `name`: itself, or (fault
        injection, see `relayed`) a FaultProxy in front of it."""
        if name not in self.relayed:
            return endpoint
        host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
        proxy = self.proxies[name] = FaultProxy((host, int(port)), (host, 0)).start()
        if self.link_delay_s > 0:
            proxy.delay(self.link_delay_s, seconds=float("inf"))
        return proxy.endpoint

    def current(self, block: int) -> int | None:
        """The newest attempt of `block` that is not marked dead (None: not started, or down)."""
        n = self.rdv.add(f"block{block}/attempts", 0)
        if n == 0 or self.rdv.has(self.key(block, n - 1, "dead")):
            return None
        return n - 1

    def wait_current(self, block: int) -> int:
        deadline = time.monotonic() + self.timeout_s
        while (attempt := self.current(block)) is None:
            if time.monotonic() > deadline:
                raise RendezvousError(f"block {block} did not start (or come back) within {self.timeout_s:.0f}s")
            time.sleep(0.1)
        return attempt

    def endpoint(self, block: int, name: str) -> str:
        """The endpoint `name` of `block`'s current incarnation (waits for it); remembered so it
        can be re-dialled when that block restarts."""
        attempt = self.wait_current(block)
        endpoint = self.rdv.lookup(self.key(block, attempt, name), timeout_s=self.timeout_s)
        self.dialled[(block, name)] = (attempt, endpoint)
        return endpoint

    @staticmethod
    def mark_dead(rdv: Rendezvous, block: int) -> None:
        """The launcher: `block`'s newest incarnation is gone; nobody may dial it any more."""
        n = rdv.add(f"block{block}/attempts", 0)
        if n:
            rdv.publish(PeerKeys.key(block, n - 1, "dead"), "1")
