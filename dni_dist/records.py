"""Bounded per-step records: the newest few kept exactly, the whole run summarised in fixed space.

    recent = Recent[float](capacity=4)
    for v in range(10):
        recent.append(float(v))
    list(recent), recent.total, recent[-1]     # [6.0, 7.0, 8.0, 9.0], 10, 9.0
    q = Quantiles(); q.add(3.0); q.add(5.0); q.summary()   # {'p50': 3.0, 'p90': 5.0, 'max': 5.0, 'count': 2}

A stage records one lag, SG and training entry per step. Lists of them grew by ~400 bytes per
step and stage pair, without bound (~390 MiB per million steps). `Recent` keeps the newest
`capacity` entries (what the progress reports and the last-value gauges read) plus a running
count; `Quantiles` is a fixed-size log histogram for the run-long p50/p90/max of `BlockStats`:
values in one bucket differ by at most `RELATIVE_ERROR`, and each bucket remembers the largest
value it saw, so a percentile is a value that occurred (exact for small integers such as lags in
steps), never an interpolation.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar, overload

T = TypeVar("T")

RECENT = 1024  # newest records a stage keeps of each kind
RELATIVE_ERROR = 0.01  # values sharing a histogram bucket differ by at most this fraction
_LOG_GAMMA = math.log1p(2 * RELATIVE_ERROR)
_MAX_BUCKETS = 4096  # with 1 % buckets: values from 1e-9 to 1e9 fit; beyond, the end buckets absorb them


class _Lag(Protocol):
    """What LagLog reads of a record (stage_stats.LagRecord)."""

    @property
    def steps(self) -> int: ...
    @property
    def seconds(self) -> float: ...


class Recent(Generic[T]):
    """The newest `capacity` entries of an append-only stream, and how many were ever appended."""

    def __init__(self, capacity: int = RECENT) -> None:
        if capacity < 1:
            raise ValueError(f"Recent: capacity must be >= 1, got {capacity}")
        self._items: deque[T] = deque(maxlen=capacity)
        self.total = 0  # entries ever appended, including those no longer kept

    def append(self, item: T) -> None:
        self._items.append(item)
        self.total += 1

    def __len__(self) -> int:
        """Entries still kept (at most `capacity`); `total` counts every one ever appended."""
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(self._items)

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> list[T]: ...
    def __getitem__(self, index: int | slice) -> T | list[T]:
        if isinstance(index, slice):
            return list(self._items)[index]
        return self._items[index]

    def since(self, total_seen: int) -> list[T]:
        """The entries appended after the first `total_seen`, as far as they are still kept."""
        new = min(self.total - total_seen, len(self._items))
        return [] if new <= 0 else list(self._items)[-new:]


class Quantiles:
    """Streaming p50 / p90 / max / count of non-negative values in bounded memory."""

    def __init__(self) -> None:
        self._buckets: dict[int, list[float]] = {}  # bucket -> [count, largest value seen in it]
        self.count = 0
        self.max = 0.0

    @staticmethod
    def _bucket(value: float) -> int:
        if value <= 0:
            return -_MAX_BUCKETS // 2 - 1  # zero (and anything below) has a bucket of its own
        key = math.floor(math.log(value) / _LOG_GAMMA)
        return max(-_MAX_BUCKETS // 2, min(_MAX_BUCKETS // 2, key))

    def add(self, value: float) -> None:
        value = float(value)
        if math.isnan(value):
            return
        entry = self._buckets.setdefault(self._bucket(value), [0, value])
        entry[0] += 1
        entry[1] = max(entry[1], value)
        self.count += 1
        self.max = value if self.count == 1 else max(self.max, value)

    def merge(self, other: Quantiles) -> Quantiles:
        """A new histogram holding the values of both."""
        out = Quantiles()
        for src in (self, other):
            for key, (n, top) in src._buckets.items():
                entry = out._buckets.setdefault(key, [0, top])
                entry[0] += n
                entry[1] = max(entry[1], top)
            out.count += src.count
            out.max = max(out.max, src.max) if out.count else 0.0
        return out

    def quantile(self, q: float) -> float:
        """Nearest-rank quantile: the largest value seen in the bucket holding rank ceil(q·count)."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for key in sorted(self._buckets):
            n, top = self._buckets[key]
            seen += int(n)
            if seen >= rank:
                return top
        return self.max

    def summary(self) -> dict[str, float | int]:
        """The same keys as stats.percentiles: p50, p90, max and count (zeros when empty)."""
        if not self.count:
            return {"p50": 0.0, "p90": 0.0, "max": 0.0, "count": 0}
        return {"p50": self.quantile(0.5), "p90": self.quantile(0.9), "max": self.max, "count": self.count}


class LagLog:
    """A stage's gradient/target lags: the newest records, and run-long quantiles of both lags."""

    def __init__(self, capacity: int = RECENT) -> None:
        self.recent: Recent[_Lag] = Recent(capacity)
        self.steps = Quantiles()
        self.seconds = Quantiles()
        self.min_seconds = math.inf  # the fastest round trip seen: the link's, without queueing

    def append(self, record: _Lag) -> None:
        self.recent.append(record)
        self.min_seconds = min(self.min_seconds, record.seconds)
        self.steps.add(float(record.steps))
        self.seconds.add(record.seconds)

    @property
    def total(self) -> int:
        return self.recent.total

    def since(self, total_seen: int) -> list[_Lag]:
        return self.recent.since(total_seen)

    def __len__(self) -> int:
        return len(self.recent)

    def __iter__(self) -> Iterator[_Lag]:
        return iter(self.recent)

    def __getitem__(self, index: slice) -> list[_Lag]:
        return self.recent[index]
