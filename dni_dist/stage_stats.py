"""What a stage records about its own steps: lags, SG fits, training loss, and what each update
causally depended on.

    stats = StageStats()
    stats.record_update(UpdateRecord(step=7, deps=(MessageId("gradient", 7, 2),)))
    stats.dependencies       # Counter({'gradient@2': 1}): updates by the messages they used
    list(stats.updates_log)  # the newest UpdateRecords, with message ids and steps

The dependency record is what Table 1's locking columns are derived from (dni_dist.locking):
an update's `deps` are the received messages whose content entered its weight change: the
activation it ran on (none at stage 0, whose input is data), and the gradient or output error
it applied, if it had to wait for one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from dni_dist.messages import MessageId
from dni_dist.records import LagLog, Recent

NO_DEPENDENCY = "none"
"""The signature of an update that used no received message (stage 0 under sg)."""


@dataclass(frozen=True)
class LagRecord:
    """Age of a gradient / target / output error when it arrived (the interface's staleness)."""

    step: int
    steps: int  # steps this stage had forwarded past `step` by then
    seconds: float  # wall time since `step` was forwarded


@dataclass(frozen=True)
class SGRecord:
    step: int
    loss: float  # mse(SG(h, y), N·δ) before the SG update
    cosine: float  # between SG(h, y) and N·δ, over the whole batch


@dataclass(frozen=True)
class UpdateRecord:
    """One weight update of a stage: the step it applied and the messages it used."""

    step: int
    deps: tuple[MessageId, ...]

    @property
    def signature(self) -> str:
        """Which kinds of message from which stages it used, e.g. 'activation@0+gradient@2';
        steps left out, so that every update of a steady schedule shares one signature."""
        return "+".join(sorted({f"{d.kind}@{d.stage}" for d in self.deps})) or NO_DEPENDENCY

    def to_list(self) -> list[object]:
        """[step, [[kind, step, stage], ...]]: the JSON form kept in block stats."""
        return [self.step, [[d.kind, d.step, d.stage] for d in self.deps]]


@dataclass
class StageStats:
    updates: int = 0
    waits: Counter[str] = field(default_factory=Counter)  # update count by what the scheduler waited for
    dependencies: Counter[str] = field(default_factory=Counter)  # update count by UpdateRecord.signature
    updates_log: Recent[UpdateRecord] = field(default_factory=lambda: Recent(64))
    # bounded (dni_dist.records): the newest entries plus run-long counts and lag quantiles
    sg: Recent[SGRecord] = field(default_factory=Recent)
    lags: LagLog = field(default_factory=LagLog)
    train: Recent[tuple[int, float, float]] = field(default_factory=Recent)  # last stage: (step, loss, acc)

    def record_update(self, record: UpdateRecord) -> None:
        self.dependencies[record.signature] += 1
        self.updates_log.append(record)
