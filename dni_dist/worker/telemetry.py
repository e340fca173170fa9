"""What a block tells the outside while it trains: Prometheus metrics and progress reports.

    tel = Telemetry(metrics, block.stages, is_last=True)
    tel.observe()                       # new lag / SG / loss records of the stages -> metrics
    tel.publish(edges, admission.dropped, inflight=3)   # counters, queues, rejections, drops, lag max
    edges.report(tel.progress("progress", ...)) # one row of the launcher's live table

It reads the stages' records; it never changes them.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from dni_dist.metrics import NullMetrics
from dni_dist.stage import Stage
from dni_dist.stats import percentiles
from dni_dist.worker.edges import Edges


class Telemetry:
    def __init__(self, metrics: NullMetrics, stages: list[Stage], *, is_last: bool) -> None:
        self.metrics = metrics
        self.stages = stages
        self.is_last = is_last
        self._lag_seen = [0] * len(stages)
        self._sg_seen = [0] * len(stages)
        self._window_lag: tuple[int, float] = (0, 0.0)  # largest lag since the last publish

    def observe(self) -> None:
        """Feed new lag and SG records of the local stages to the metrics."""
        for i, stage in enumerate(self.stages):
            lags, sgs = stage.stats.lags, stage.stats.sg
            for rec in lags.since(self._lag_seen[i]):
                self.metrics.lag(steps=rec.steps, seconds=rec.seconds)
                self._window_lag = (max(self._window_lag[0], rec.steps), max(self._window_lag[1], rec.seconds))
            self._lag_seen[i] = lags.total
            if sgs.total > self._sg_seen[i]:
                self.metrics.sg(loss=sgs[-1].loss, cosine=sgs[-1].cosine)
                self._sg_seen[i] = sgs.total
        if self.is_last and self.stages[-1].stats.train:
            _, loss, acc = self.stages[-1].stats.train[-1]
            self.metrics.train(loss=loss, accuracy=acc)

    def publish(self, edges: Edges, dropped: Counter[str], *, inflight: int) -> None:
        for direction, c in edges.counters().items():
            self.metrics.messages(direction, c["messages"], c["bytes"])
        for direction, depth in edges.queues().items():
            self.metrics.queue(direction, depth)
        for reason, n in edges.rejected().items():
            self.metrics.rejected(reason, n)
        for what, n in dropped.items():
            self.metrics.dropped(what, n)
        self.metrics.inflight(inflight)
        self.metrics.lag_max(steps=self._window_lag[0], seconds=self._window_lag[1])
        self._window_lag = (0, 0.0)

    def progress(
        self, kind: str, *, block: int, step: int, steps: int, samples_per_second: float, queue: int, rejected: int
    ) -> dict[str, Any]:
        """One progress report (msgpack-able) for the launcher."""
        lags = [float(r.steps) for s in self.stages for r in s.stats.lags[-200:]]
        sg = [r for s in self.stages for r in s.stats.sg[-1:]]
        train = self.stages[-1].stats.train[-1:] if self.is_last else []
        return {
            "type": kind,
            "block": block,
            "pid": os.getpid(),  # the launcher ignores a dead incarnation's late reports
            "step": step,
            "steps": steps,
            "samples_per_second": samples_per_second,
            "lag": percentiles(lags)["p50"],
            "queue": queue,
            "sg_loss": sg[-1].loss if sg else None,
            "loss": train[-1][1] if train else None,
            "accuracy": train[-1][2] if train else None,
            "rejected": rejected,
        }
