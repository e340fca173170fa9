"""Write deploy/grafana/dashboards/dni.json, the per-block lag dashboard (run after editing panels).

    python tools/make_dashboard.py

Rows, top to bottom: per-block lag, throughput, synthetic gradients, queues and traffic,
rejected/dropped messages, training. Every query is plain PromQL (no Grafana variables), so
tests/integration/test_prometheus.py can run each one against a real Prometheus.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DS = {"type": "prometheus", "uid": "dni-prometheus"}


def q(expr: str, legend: str) -> dict[str, Any]:
    return {"expr": expr, "legendFormat": legend, "datasource": DS}


def quantiles(metric: str) -> list[dict[str, Any]]:
    base = f"sum by (block, le) (rate({metric}_bucket[1m]))"
    return [
        q(f"histogram_quantile(0.5, {base})", "block {{block}} p50"),
        q(f"histogram_quantile(0.9, {base})", "block {{block}} p90"),
    ]


ROWS: list[tuple[str, list[tuple[str, str, str, list[dict[str, Any]]]]]] = [
    ("Per-block lag of synthetic-gradient targets", [
        ("Target lag (steps): p50 / p90 / max", "How many steps a block had run ahead when a step's target arrived.",
         "none", [*quantiles("dni_target_lag_steps"),
                  q("max by (block) (max_over_time(dni_target_lag_max_steps[1m]))", "block {{block}} max")]),
        ("Target lag (seconds): p50 / p90 / max", "Wall time between a step's forward and its target's arrival.",
         "s", [*quantiles("dni_target_lag_seconds"),
               q("max by (block) (max_over_time(dni_target_lag_max_seconds[1m]))", "block {{block}} max")]),
    ]),
    ("Throughput", [
        ("Samples per second", "Training examples each block processes per second.", "none",
         [q("sum by (block) (rate(dni_samples_total[1m]))", "block {{block}}")]),
        ("Step time p90", "Compute time of one forward + update.", "s",
         [q("histogram_quantile(0.9, sum by (block, le) (rate(dni_step_seconds_bucket[1m])))", "block {{block}}")]),
        ("Idle time by reason", "Seconds per second each block waited, by what it waited for (gradient and "
         "output_error are the locking of bp/fa and dfa/kb; activation means starved by the block above).",
         "percentunit",
         [q("sum by (block, reason) (rate(dni_wait_seconds_total[1m]))", "block {{block}} {{reason}}")]),
    ]),
    ("Synthetic gradients", [
        ("SG regression loss", "mse(SG(h, y), N·δ) of the last target.", "none",
         [q("dni_sg_loss", "block {{block}}")]),
        ("Cosine(SG, target)", "Alignment of the synthetic gradient with its target; 1 is perfect.", "none",
         [q("dni_sg_cosine", "block {{block}}")]),
    ]),
    ("Queues and traffic", [
        ("Outbox depth and steps in flight", "Messages waiting to be sent, and forwarded steps still awaiting "
         "their target (bounded by --max-inflight).", "none",
         [q("max by (block) (dni_queue_depth)", "block {{block}} outbox"),
          q("dni_inflight_steps", "block {{block}} in flight")]),
        ("Bytes per second by direction", "Tensor traffic on each edge.", "Bps",
         [q("sum by (block, direction) (rate(dni_bytes_total[1m]))", "block {{block}} {{direction}}")]),
    ]),
    ("Rejected and dropped messages", [
        ("Rejected messages by reason", "Malformed or unusable messages, counted and dropped (the block keeps "
         "training).", "none",
         [q("sum by (block, reason) (increase(dni_rejected_messages_total[5m]))", "block {{block}} {{reason}}")]),
        ("Dropped by the drop-oldest policy", "Steps forgotten when --overflow drop-oldest hits a limit.", "none",
         [q("sum by (block, what) (increase(dni_dropped_total[5m]))", "block {{block}} {{what}}")]),
    ]),
    ("Training", [
        ("Training loss (last block)", "Loss of the most recent step.", "none", [q("dni_train_loss", "loss")]),
        ("Training accuracy (last block)", "Batch accuracy of the most recent step.", "percentunit",
         [q("dni_train_accuracy", "accuracy")]),
        ("Steps and restarts", "Steps done and restarts from a checkpoint, per block.", "none",
         [q("sum by (block) (dni_steps_total)", "block {{block}} steps"),
          q("sum by (block) (dni_restarts_total)", "block {{block}} restarts")]),
    ]),
]  # fmt: skip


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y, pid = 0, 1
    for title, row in ROWS:
        panels.append({"type": "row", "title": title, "id": pid, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})  # fmt: skip
        pid, y = pid + 1, y + 1
        width = 24 // len(row)
        for i, (ptitle, desc, unit, targets) in enumerate(row):
            for t, ref in zip(targets, "ABCDEFGH"):
                t["refId"] = ref
            panels.append(
                {
                    "type": "timeseries",
                    "id": pid,
                    "title": ptitle,
                    "description": desc,
                    "datasource": DS,
                    "gridPos": {"h": 8, "w": width, "x": i * width, "y": y},
                    "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                    "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                    "targets": targets,
                }
            )
            pid += 1
        y += 8
    return {
        "uid": "dni-lag",
        "title": "dni_dist: per-block lag",
        "description": "Decoupled training, one row per concern; the first row is the staleness of each block.",
        "tags": ["dni_dist"],
        "timezone": "browser",
        "schemaVersion": 38,
        "version": 1,
        "refresh": "5s",
        "time": {"from": "now-15m", "to": "now"},
        "panels": panels,
    }


if __name__ == "__main__":
    out = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "dashboards" / "dni.json"
    out.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(f"wrote {out}")
