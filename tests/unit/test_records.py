"""Bounded per-step records: a stage's statistics stay the same size however long it trains."""

from __future__ import annotations

import random
import sys

import pytest

from dni_dist.records import RELATIVE_ERROR, Quantiles, Recent
from dni_dist.stage_stats import LagRecord, StageStats
from dni_dist.stats import percentiles


def test_recent_keeps_the_newest_and_counts_all() -> None:
    r: Recent[int] = Recent(capacity=3)
    assert not r and r.since(0) == []
    for v in range(10):
        r.append(v)
    assert list(r) == [7, 8, 9] and len(r) == 3 and r.total == 10 and r[-1] == 9 and r[-2:] == [8, 9]
    assert r.since(8) == [8, 9] and r.since(10) == [] and r.since(0) == [7, 8, 9]  # what was dropped is gone
    with pytest.raises(ValueError, match="capacity"):
        Recent(capacity=0)


def test_quantiles_match_exact_percentiles_on_integers_and_within_one_percent_on_reals() -> None:
    rng = random.Random(0)
    lags = [rng.randint(0, 40) for _ in range(5000)]
    q = Quantiles()
    for v in lags:
        q.add(v)
    assert q.summary() == percentiles(lags)  # small integers each get a bucket: exact
    seconds = [rng.lognormvariate(-3, 1.5) for _ in range(5000)]
    q = Quantiles()
    for v in seconds:
        q.add(v)
    exact, approx = percentiles(seconds), q.summary()
    assert approx["count"] == exact["count"] and approx["max"] == exact["max"]
    for key in ("p50", "p90"):
        assert abs(approx[key] - exact[key]) <= 2 * RELATIVE_ERROR * exact[key], (key, approx, exact)
    merged = Quantiles().merge(q).merge(Quantiles())
    assert merged.summary() == approx
    assert Quantiles().summary() == {"p50": 0.0, "p90": 0.0, "max": 0.0, "count": 0}


def test_stage_stats_stay_bounded_over_many_steps() -> None:
    stats = StageStats()
    for step in range(20_000):
        stats.lags.append(LagRecord(step, step % 7, 0.001 * (step % 13)))
    size = sum(sys.getsizeof(r) for r in stats.lags) + sys.getsizeof(stats.lags.steps._buckets)
    assert len(stats.lags) <= 1024 and stats.lags.total == 20_000
    assert stats.lags.steps.summary()["count"] == 20_000 and stats.lags.steps.summary()["max"] == 6
    assert size < 1024 * 200  # a bounded window, not 20,000 records
