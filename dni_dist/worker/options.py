"""The process and placement facts of one worker (how it trains is in TrainConfig.runtime).

WorkerConfig(block=1, blocks=4, run_id="a1b2", out="runs/x", host="127.0.0.1")
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from dni_dist.config import ConfigError
from dni_dist.keys import check_insecure
from dni_dist.transport import TransportConfig


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    block: int
    blocks: int
    run_id: str
    out: str  # checkpoints/ and blocks/ (stats) go here; shared by every block of the run
    resume: bool = False  # start from the newest complete checkpoint under out/checkpoints, if any
    restart_cause: str = ""  # set by dni-launch on a restarted block: killed | exited | hung
    generation: int = 0  # torchrun: how often the whole group was restarted (TORCHELASTIC_RESTART_COUNT)
    metrics_port: int = 0  # the port this block serves /metrics on (0 = off)
    metrics_addr: str = "127.0.0.1"
    host: str = "127.0.0.1"  # address this worker advertises to its neighbours (and binds, unless `bind`)
    bind: str = ""  # address to bind, e.g. 0.0.0.0 in a container whose name is `host`
    port: int = 0  # fixed ports port, port+1, port+2 (activations, gradients, errors); 0 = any free port
    control: str | None = None  # the launcher's ROUTER endpoint (None under torchrun)
    keys: str | None = None  # the run's keys directory (keys.py): CURVE on every socket, signed rendezvous
    insecure: bool = False  # plaintext, unauthenticated: only when every address is loopback
    transport: TransportConfig = field(default_factory=TransportConfig)

    def __post_init__(self) -> None:
        if self.blocks < 1:
            raise ConfigError(f"--blocks (WORLD_SIZE): must be >= 1, got {self.blocks}")
        if not 0 <= self.block < self.blocks:
            raise ConfigError(f"--block (RANK): {self.block} is outside 0..{self.blocks - 1}")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"--metrics-port: {self.metrics_port} is not a port number")
        if not 0 <= self.port <= 65535 - 2:
            raise ConfigError(f"--port: {self.port} leaves no room for port..port+2")
        if self.insecure:
            check_insecure(self.bind or self.host)
        elif self.keys is None:
            raise ConfigError(
                "--keys: a worker needs its run's keys directory (dni-launch makes one; for clusters "
                "`python -m dni_dist keys generate DIR --blocks N`), or --insecure on loopback addresses"
            )


def torchrun_restarts() -> int:
    """How often torchrun (--max-restarts) has restarted this worker group: 0 otherwise."""
    value = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return int(value) if value.isdigit() else 0
