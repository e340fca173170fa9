"""A real Prometheus scrapes a live 4-block run: every query of the Grafana dashboard returns
data through the HTTP API, promtool accepts config and expositions, and the lag histogram
agrees with summary.json. Skips (saying why) where Debian's prometheus package is missing;
.ci/run installs it."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from bisect import bisect_left
from pathlib import Path
from typing import Any

import pytest

from dni_dist.metrics import LAG_STEP_BUCKETS

from .helpers import free_port, port_open, start_launch

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "dni.json"


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def test_dashboard_starts_with_per_block_lag() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert panels[0]["type"] == "row" and "lag" in panels[0]["title"].lower()
    first_row = [p for p in panels[1:3]]
    assert all("lag" in p["title"].lower() for p in first_row)
    exprs = " ".join(t["expr"] for p in first_row for t in p["targets"])
    for needle in ("0.5", "0.9", "max", "dni_target_lag_steps", "dni_target_lag_seconds"):
        assert needle in exprs
    assert "$" not in " ".join(dashboard_queries()), "queries must be plain PromQL"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing (apt-get install prometheus)")
def test_promtool_accepts_the_scrape_config() -> None:
    proc = subprocess.run(["promtool", "check", "config", str(ROOT / "deploy/prometheus.yml")],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _free_block_of_ports(n: int) -> int:
    for _ in range(50):
        base = free_port()
        if base + n < 65535 and not any(port_open(base + i) for i in range(1, n)):
            return base
    raise RuntimeError("no block of free ports")


def _query(port: int, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    params = {"query": expr} | ({"time": f"{at:.3f}"} if at is not None else {})
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]  # type: ignore[no-any-return]


def _eventually(fn: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


@pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="Prometheus server missing (Debian package `prometheus`; .ci/run installs it)",
)
@pytest.mark.slow
def test_real_prometheus_serves_every_dashboard_query(tmp_path: Path, reaper: list) -> None:  # type: ignore[type-arg]
    base = _free_block_of_ports(4)
    out = tmp_path / "run"
    run = start_launch(["--blocks", "4", "--method", "sg", "--width", "64", "--batch-size", "32",
                        "--steps", "1000000", "--metrics-port", str(base)], out)  # fmt: skip
    reaper.append(run)
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    targets = ", ".join(f'"127.0.0.1:{base + k}"' for k in range(4))
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
        f"scrape_configs:\n  - job_name: dni-test\n    static_configs:\n      - targets: [{targets}]\n"
    )
    prom = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    reaper.append(prom)
    try:
        _eventually(
            lambda: port_open(prom_port) and len([r for r in _query(prom_port, "up == 1")]) == 4,
            90,
            "Prometheus to scrape all 4 blocks",
        )
        for k in range(4):
            with urllib.request.urlopen(f"http://127.0.0.1:{base + k}/metrics", timeout=5) as r:
                exposition = r.read()
            check = subprocess.run(["promtool", "check", "metrics"], input=exposition, capture_output=True, timeout=60)
            assert check.returncode == 0, (k, check.stdout, check.stderr)
        time.sleep(6)  # a few scrapes, so every rate() window has two samples
        missing = [e for e in dashboard_queries() if not _eventually(lambda e=e: _query(prom_port, e), 30, e)]
        assert not missing
        at = time.time()
        p90_prom = _query(
            prom_port, 'histogram_quantile(0.9, sum by (le) (dni_target_lag_steps_bucket{block="0"}))', at
        )
    finally:
        run.send_signal(signal.SIGINT)
        run.communicate(timeout=90)
        prom.terminate()
        prom.wait(timeout=30)
    summary = json.loads((out / "summary.json").read_text())
    p90_summary = summary["blocks"][0]["lag_steps"]["p90"]
    p90_hist = float(p90_prom[0]["value"][1])
    # same histogram bucket, or the next one (the summary also saw the last second of the run)
    print(f"\nblock 0 lag p90: histogram {p90_hist:.2f} steps, summary.json {p90_summary} steps")
    assert abs(bisect_left(LAG_STEP_BUCKETS, p90_hist) - bisect_left(LAG_STEP_BUCKETS, p90_summary)) <= 1, (
        p90_hist,
        p90_summary,
    )
