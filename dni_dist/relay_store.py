"""Route torch.distributed's gloo links through our fault proxy, to delay them like dni_dist's own.

    store = RelayStore(dist.TCPStore("127.0.0.1", port, 2, rank == 0), delay_s=0.010)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=2)   # every pair link delayed 10 ms
    ...
    store.close(drain_s=0.5)    # after the last collective: deliver what is still held, stop the proxies

gloo publishes each rank's listening address in the rendezvous store (a sockaddr inside the
value each rank `set`s); its peers dial that address. This store wraps the real one, and when a
rank publishes an IPv4 loopback address it starts a `FaultProxy` in front of it and publishes
the proxy's port instead, so every gloo connection runs through a proxy in the listening rank's
process, both directions delayed `delay_s`. It is meant for benchmarks on one host (127.0.0.0/8);
if gloo's value carries no such address, `set` raises instead of silently measuring an
undelayed link.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import torch.distributed as dist

from dni_dist.proxy import FaultProxy

_Store: Any = getattr(dist, "Store")  # noqa: B009 (not in torch.distributed's typed exports)
AF_INET = b"\x02\x00"  # sockaddr_in.sin_family, little-endian


class RelayError(RuntimeError):
    pass


def _proxy_beside(target: tuple[str, int]) -> FaultProxy:
    """A proxy for `target` listening on a port that sorts next to the target's port: gloo picks
    which side of a pair dials by comparing the two addresses (the port's raw, network-order
    bytes), and each side compares its own real address with the other's published one; with
    the published port one step away in that order, both sides still agree on who dials."""
    host, port = target
    for j in range(1, 64):
        for candidate in (port + 256 * j, port - 256 * j):  # +-256: the raw (byte-swapped) value +-1
            if 1024 <= candidate < 65536:
                try:
                    return FaultProxy(target, (host, candidate))
                except OSError:
                    continue
    raise RelayError(f"no free port next to {host}:{port} for a relay proxy")


def _loopback_address(value: bytes) -> int | None:
    """Offset of the first AF_INET sockaddr for 127.x.x.x in `value` (None: none)."""
    for i in range(len(value) - 8):
        if value[i : i + 2] == AF_INET and value[i + 4] == 127:
            return i
    return None


class RelayStore(_Store):  # type: ignore[misc]
    def __init__(self, base: Any, delay_s: float) -> None:
        super().__init__()
        self.base, self.delay_s = base, delay_s
        self.proxies: list[FaultProxy] = []

    def set(self, key: str, value: Any) -> None:
        raw = value.encode() if isinstance(value, str) else bytes(value)
        if key.rsplit("/", 1)[-1].isdigit() and "//" in key:  # gloo's per-rank address value
            raw = self._relay(key, raw)
        self.base.set(key, raw)

    def _relay(self, key: str, raw: bytes) -> bytes:
        """The rank's listening address (one per rank: gloo tells its pairs apart by a sequence
        number, not by port) behind a proxy."""
        i = _loopback_address(raw)
        if i is None:
            raise RelayError(f"no loopback IPv4 address in gloo's value for {key!r}: cannot relay this link")
        port = int.from_bytes(raw[i + 2 : i + 4], "big")
        host = ".".join(str(b) for b in raw[i + 4 : i + 8])
        proxy = _proxy_beside((host, port)).start()
        if self.delay_s > 0:
            proxy.delay(self.delay_s, seconds=float("inf"))
        self.proxies.append(proxy)
        return raw[: i + 2] + int(proxy.port).to_bytes(2, "big") + raw[i + 4 :]

    def get(self, key: str) -> bytes:
        result: bytes = self.base.get(key)
        return result

    def add(self, key: str, amount: int) -> int:
        result: int = self.base.add(key, amount)
        return result

    def check(self, keys: list[str]) -> bool:
        result: bool = self.base.check(keys)
        return result

    def wait(self, keys: list[str], timeout: timedelta | None = None) -> None:
        if timeout is None:
            self.base.wait(keys)
        else:
            self.base.wait(keys, timeout)

    def compare_set(self, key: str, expected: Any, desired: Any) -> bytes:
        result: bytes = self.base.compare_set(key, expected, desired)
        return result

    def delete_key(self, key: str) -> bool:
        result: bool = self.base.delete_key(key)
        return result

    def num_keys(self) -> int:
        result: int = self.base.num_keys()
        return result

    def set_timeout(self, timeout: timedelta) -> None:
        self.base.set_timeout(timeout)

    def close(self, drain_s: float = 1.0) -> None:
        for proxy in self.proxies:
            proxy.drain(drain_s)
            proxy.close()
