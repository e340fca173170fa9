"""Fault injection: make one block die, hang or lose its link at a chosen step, on purpose.

    dni-launch --blocks 4 --method sg --steps 600 --checkpoint-every 50 \
        --inject-fault block=2,step=300,kind=kill --out runs/kill2

    faults = parse("block=2,step=300,kind=kill;block=1,step=100,kind=delay,ms=200,seconds=10")
    due(faults, block=2, step=300, attempt=0)      # -> the faults to fire now

A spec is `;`-separated faults, each `key=value` pairs: `block` (index), `step` (fire once the
block has forwarded this step), `kind`, and for link faults `seconds` (how long) and `ms`
(delay). Kinds:

- `kill`: SIGKILL to itself (what `kill -9` does); `exit`: leave at once with exit code 3, no
  cleanup; `hang`: SIGSTOP to itself (the process stops, its heartbeat with it; the launcher's
  SIGKILL still works).
- `partition`: the block's inbound activation edge (from block `block - 1`) carries nothing
  for `seconds`; `delay`: every chunk on that edge is held `ms` milliseconds for `seconds`;
  `drop`: every connection on that edge is closed at once (what was in flight is lost; the
  sender re-dials). They go through a `dni_dist.proxy.FaultProxy` the block puts in front of that socket.

A fault fires only in the block's first attempt, so a restarted block does not kill itself again.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass

from dni_dist.proxy import FaultProxy

log = logging.getLogger(__name__)

PROCESS_KINDS = ("kill", "exit", "hang")
LINK_KINDS = ("partition", "delay", "drop")
KINDS = PROCESS_KINDS + LINK_KINDS
EXIT_CODE = 3  # what kind=exit leaves with


class FaultError(ValueError):
    """A fault spec that cannot be parsed; the message says which part and what is expected."""


@dataclass(frozen=True)
class Fault:
    block: int
    step: int
    kind: str
    seconds: float = 0.0  # link faults: how long
    ms: float = 0.0  # delay: per chunk

    @property
    def is_link(self) -> bool:
        return self.kind in LINK_KINDS

    def describe(self) -> str:
        extra = f" for {self.seconds:g}s" if self.kind in ("partition", "delay") else ""
        extra += f" of {self.ms:g}ms" if self.kind == "delay" else ""
        return f"{self.kind}{extra} at step {self.step} of block {self.block}"


def _number(key: str, value: str, item: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise FaultError(f"{item!r}: {key}={value!r} is not a number") from None


def parse_one(item: str) -> Fault:
    fields: dict[str, str] = {}
    for part in item.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise FaultError(f"{item!r}: expected key=value pairs like block=2,step=300,kind=kill; got {part!r}")
        fields[key.strip()] = value.strip()
    unknown = set(fields) - {"block", "step", "kind", "seconds", "ms"}
    if unknown:
        raise FaultError(
            f"{item!r}: unknown key(s) {', '.join(sorted(unknown))}; known: block, step, kind, seconds, ms"
        )
    missing = [k for k in ("block", "step", "kind") if k not in fields]
    if missing:
        raise FaultError(f"{item!r}: missing {', '.join(missing)}")
    kind = fields["kind"]
    if kind not in KINDS:
        raise FaultError(f"{item!r}: kind={kind!r}, expected one of {', '.join(KINDS)}")
    block, step = _number("block", fields["block"], item), _number("step", fields["step"], item)
    if block != int(block) or block < 0 or step != int(step) or step < 0:
        raise FaultError(f"{item!r}: block and step must be integers >= 0")
    seconds, ms = _number("seconds", fields.get("seconds", "0"), item), _number("ms", fields.get("ms", "0"), item)
    if kind in ("partition", "delay") and seconds <= 0:
        raise FaultError(f"{item!r}: kind={kind} needs seconds=T > 0 (how long the link is impaired)")
    if kind in LINK_KINDS and block == 0:
        raise FaultError(f"{item!r}: block 0 has no inbound activation edge; {kind} block >= 1")
    if kind == "delay" and (ms <= 0 or block == 0):
        raise FaultError(f"{item!r}: kind=delay needs ms=M > 0 and block >= 1 (its inbound activation edge)")
    if kind in (*PROCESS_KINDS, "drop") and (seconds or ms):
        raise FaultError(f"{item!r}: seconds/ms apply to partition and delay only")
    return Fault(int(block), int(step), kind, seconds, ms)


def parse(spec: str) -> tuple[Fault, ...]:
    """Every fault of a `;`-separated spec ('' = none)."""
    return tuple(parse_one(item.strip()) for item in spec.split(";") if item.strip())


def due(faults: tuple[Fault, ...], *, block: int, step: int, attempt: int) -> list[Fault]:
    """The faults of `block` that fire once it has forwarded `step` (first attempt only)."""
    return [f for f in faults if f.block == block and f.step == step and attempt == 0]


def fire(fault: Fault, prefix: str = "", proxy: FaultProxy | None = None) -> None:
    """Kill, stop or end this process as `fault` says (never returns for kill and exit), or
    impair the link through `proxy` (the one in front of the block's inbound activations)."""
    log.warning("%s injected fault: %s", prefix, fault.describe())
    if fault.is_link:
        if proxy is None:
            log.error("%s no fault proxy on this block's inbound activation edge; fault not injected", prefix)
        elif fault.kind == "partition":
            proxy.partition(fault.seconds)
        elif fault.kind == "drop":
            proxy.cut()
        else:
            proxy.delay(fault.ms / 1000, seconds=fault.seconds)
        return
    for handler in logging.getLogger().handlers:  # the log line must reach the file before we go
        handler.flush()
    if fault.kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif fault.kind == "hang":
        os.kill(os.getpid(), signal.SIGSTOP)
    elif fault.kind == "exit":
        os._exit(EXIT_CODE)
