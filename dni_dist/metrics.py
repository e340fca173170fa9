"""Prometheus metrics of one worker (prometheus-client's own HTTP server), or none at all.

    m = PrometheusMetrics(block=2, port=9102, addr="0.0.0.0")   # serves /metrics
    m.step(samples=128, seconds=0.01); m.lag(steps=3, seconds=0.04)
    NullMetrics()                                               # same calls, nothing listens

Names follow Prometheus conventions (docs/design.md lists them): prefix `dni_`, base units, counters end in
`_total`, every series carries `block` and nothing carries a step.
"""

from __future__ import annotations

import platform

import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

from dni_dist.version import __version__

LAG_STEP_BUCKETS = (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128)
"""Bounded by --max-inflight (default 8): most observations land in the first buckets."""
LAG_SECOND_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STEP_SECOND_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# Every label value a worker can report, created at zero so each series exists from the first scrape.
WAIT_REASONS = ("gradient", "output_error", "credit", "lockstep", "send", "activation", "drain", "idle")
REJECT_REASONS = (
    "bad_frames", "bad_msgpack", "bad_header", "bad_version", "bad_kind", "wrong_run", "wrong_sender",
    "bad_dtype", "bad_shape", "bad_size", "too_large", "protocol", "control",
    # semantic (worker/screen.py, stage.py): valid on the wire, not usable here
    "wrong_dtype", "wrong_shape", "nonfinite", "step_window", "duplicate_step", "unknown_step", "early_end",
    "bad_marker", "wrong_kind", "wrong_route", "out_of_order", "error",
    # peers ZeroMQ cut off at the handshake (worker/edges.py): no key of the run, or not CURVE at all
    "unauthenticated", "handshake",
)  # fmt: skip
DROP_KINDS = ("pending", "timeout", "stale_target", "gradient_queue", "lost", "nonfinite_checkpoint")
RESTART_CAUSES = ("resume", "killed", "exited", "hung")
"""resume: a whole run resumed (--resume); the others: this block died (signal), exited non-zero,
or was declared hung, and was restarted alone (dni-launch --max-restarts)."""
LINK_EVENTS = ("connected", "disconnected")
DIRECTIONS = ("activation_in", "gradient_in", "error_in", "activation_out", "gradient_out", "error_out")


class NullMetrics:
    """Metrics off: every call is a no-op and no port is opened."""

    url: str | None = None

    def step(self, *, samples: int, seconds: float) -> None: ...
    def wait(self, reason: str, seconds: float) -> None: ...
    def lag(self, *, steps: int, seconds: float) -> None: ...
    def lag_max(self, *, steps: float, seconds: float) -> None: ...
    def sg(self, *, loss: float, cosine: float) -> None: ...
    def queue(self, direction: str, depth: int) -> None: ...
    def messages(self, direction: str, count: int, nbytes: int) -> None: ...
    def rejected(self, reason: str, count: int) -> None: ...
    def dropped(self, what: str, count: int) -> None: ...
    def train(self, *, loss: float, accuracy: float) -> None: ...
    def inflight(self, steps: int) -> None: ...
    def restart(self, cause: str) -> None: ...
    def link(self, event: str) -> None: ...
    def close(self) -> None: ...


class PrometheusMetrics(NullMetrics):
    def __init__(self, *, block: int, port: int, addr: str = "0.0.0.0") -> None:
        self.registry = CollectorRegistry()
        r, b = self.registry, str(block)
        lb = ["block"]
        self._steps = Counter(
            "dni_steps",
            "Training steps this block has forwarded (an sg block has also updated on them)",
            lb,
            registry=r,
        )
        self._samples = Counter("dni_samples", "Training examples this block has processed", lb, registry=r)
        self._step_seconds = Histogram(
            "dni_step_seconds",
            "Compute time of handling one batch or activation (forward, and the update when it is unlocked)",
            lb,
            buckets=STEP_SECOND_BUCKETS,
            registry=r,
        )
        self._wait = Counter(
            "dni_wait_seconds", "Time spent idle, by what the block waited for", [*lb, "reason"], registry=r
        )
        self._lag_steps = Histogram(
            "dni_target_lag_steps",
            "Steps this block had run past a step when its gradient/target arrived",
            lb,
            buckets=LAG_STEP_BUCKETS,
            registry=r,
        )
        self._lag_seconds = Histogram(
            "dni_target_lag_seconds",
            "Seconds between a step's forward and the arrival of its gradient/target",
            lb,
            buckets=LAG_SECOND_BUCKETS,
            registry=r,
        )
        self._lag_max_steps = Gauge(
            "dni_target_lag_max_steps", "Largest target lag (steps) in the last reporting interval", lb, registry=r
        )
        self._lag_max_seconds = Gauge(
            "dni_target_lag_max_seconds", "Largest target lag (seconds) in the last reporting interval", lb, registry=r
        )
        self._sg_loss = Gauge("dni_sg_loss", "Last SG regression loss mse(SG(h, y), N·δ)", lb, registry=r)
        self._sg_cos = Gauge(
            "dni_sg_cosine", "Cosine between the last synthetic gradient and its target", lb, registry=r
        )
        self._queue = Gauge(
            "dni_queue_depth", "Messages waiting in this block's outbox, by direction", [*lb, "direction"], registry=r
        )
        self._inflight = Gauge("dni_inflight_steps", "Steps forwarded whose target has not arrived yet", lb, registry=r)
        self._messages = Counter(
            "dni_messages", "Messages sent and received, by direction", [*lb, "direction"], registry=r
        )
        self._bytes = Counter("dni_bytes", "Bytes sent and received, by direction", [*lb, "direction"], registry=r)
        self._rejected = Counter(
            "dni_rejected_messages", "Received messages dropped as invalid, by reason", [*lb, "reason"], registry=r
        )
        self._dropped = Counter(
            "dni_dropped",
            "Steps and targets given up on (drop-oldest, target timeout, stale targets), by what",
            [*lb, "what"],
            registry=r,
        )
        self._restarts = Counter(
            "dni_restarts", "Times this block started from a checkpoint, by cause", [*lb, "cause"], registry=r
        )
        self._links = Counter(
            "dni_link_events", "Edge connections made and lost (ZeroMQ socket monitor), by event", [*lb, "event"],
            registry=r,
        )  # fmt: skip
        self._loss = Gauge("dni_train_loss", "Training loss of the last step (last block only)", lb, registry=r)
        self._acc = Gauge("dni_train_accuracy", "Training accuracy of the last step (last block only)", lb, registry=r)
        info = Info("dni_build", "dni_dist build", lb, registry=r)
        info.labels(b).info({"version": __version__, "torch": torch.__version__, "python": platform.python_version()})
        self.block = b
        for child in (
            self._steps,
            self._samples,
            self._step_seconds,
            self._lag_steps,
            self._lag_seconds,
        ):
            child.labels(b)  # present from the first scrape
        for reason in WAIT_REASONS:
            self._wait.labels(b, reason)
        for reason in REJECT_REASONS:
            self._rejected.labels(b, reason)
        for what in DROP_KINDS:
            self._dropped.labels(b, what)
        for cause in RESTART_CAUSES:
            self._restarts.labels(b, cause)
        for event in LINK_EVENTS:
            self._links.labels(b, event)
        for d in DIRECTIONS:
            self._messages.labels(b, d)
            self._bytes.labels(b, d)
            if d.endswith("_out"):
                self._queue.labels(b, d)
        for gauge in (self._lag_max_steps, self._lag_max_seconds, self._inflight):
            gauge.labels(b)
        self._last: dict[tuple[str, str], float] = {}
        self._server, self._thread = start_http_server(port, addr=addr, registry=self.registry)
        self.url = f"http://{addr if addr != '0.0.0.0' else '127.0.0.1'}:{port}/metrics"

    def _delta(self, key: tuple[str, str], total: float) -> float:
        """Counters fed from running totals: increment by what is new since the last call."""
        inc = total - self._last.get(key, 0.0)
        self._last[key] = total
        return max(0.0, inc)

    def step(self, *, samples: int, seconds: float) -> None:
        self._steps.labels(self.block).inc()
        self._samples.labels(self.block).inc(samples)
        self._step_seconds.labels(self.block).observe(seconds)

    def wait(self, reason: str, seconds: float) -> None:
        self._wait.labels(self.block, reason).inc(seconds)

    def lag(self, *, steps: int, seconds: float) -> None:
        self._lag_steps.labels(self.block).observe(steps)
        self._lag_seconds.labels(self.block).observe(seconds)

    def lag_max(self, *, steps: float, seconds: float) -> None:
        self._lag_max_steps.labels(self.block).set(steps)
        self._lag_max_seconds.labels(self.block).set(seconds)

    def sg(self, *, loss: float, cosine: float) -> None:
        self._sg_loss.labels(self.block).set(loss)
        self._sg_cos.labels(self.block).set(cosine)

    def queue(self, direction: str, depth: int) -> None:
        self._queue.labels(self.block, direction).set(depth)

    def inflight(self, steps: int) -> None:
        self._inflight.labels(self.block).set(steps)

    def messages(self, direction: str, count: int, nbytes: int) -> None:
        self._messages.labels(self.block, direction).inc(self._delta(("messages", direction), count))
        self._bytes.labels(self.block, direction).inc(self._delta(("bytes", direction), nbytes))

    def rejected(self, reason: str, count: int) -> None:
        self._rejected.labels(self.block, reason).inc(self._delta(("rejected", reason), count))

    def dropped(self, what: str, count: int) -> None:
        self._dropped.labels(self.block, what).inc(self._delta(("dropped", what), count))

    def train(self, *, loss: float, accuracy: float) -> None:
        self._loss.labels(self.block).set(loss)
        self._acc.labels(self.block).set(accuracy)

    def restart(self, cause: str) -> None:
        self._restarts.labels(self.block, cause).inc()

    def link(self, event: str) -> None:
        self._links.labels(self.block, event).inc()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def make_metrics(*, block: int, port: int, addr: str = "0.0.0.0") -> NullMetrics:
    """Metrics on `port` (0 = off: nothing listens)."""
    return PrometheusMetrics(block=block, port=port, addr=addr) if port else NullMetrics()
