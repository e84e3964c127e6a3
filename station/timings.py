"""Cumulative per-stage latency histograms, fed with every final verdict's ``timings_ms``.

The station keeps each part's stage times in ``Verdict.timings_ms`` (preprocess, infer,
postprocess, inspect, decide, total, ...; see :func:`station.pipeline.inspect_part`). This
module counts them into fixed buckets since the station started, so /metrics can expose
real Prometheus histograms (``histogram_quantile`` works over any range a dashboard picks).

:meth:`StageTimings.observe` runs on the verdict path: it does no I/O and no allocation
beyond a new stage's first row, only one ``bisect`` and three additions per stage under one
short lock (bench/bench_stage_timings.py measures it against ``prometheus_client``).
Readers take :meth:`snapshot` (a copy) at scrape time.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass

# Upper bounds of the buckets, ms (the +Inf bucket is implicit): 0.5 ms to 10 s.
BUCKETS_MS: tuple[float, ...] = (0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
# keys of timings_ms that are not a duration (deadline slack may be negative)
NOT_DURATIONS = frozenset({"deadline_slack_ms"})


@dataclass(frozen=True)
class StageHistogram:
    """One stage's histogram: cumulative counts per upper bound (ms), the last bound is +Inf."""

    stage: str
    bounds_ms: tuple[float, ...]
    cumulative: tuple[int, ...]
    sum_ms: float
    count: int


class StageTimings:
    """Per-stage bucket counts since the station started (thread-safe)."""

    def __init__(self, buckets_ms: tuple[float, ...] = BUCKETS_MS) -> None:
        if list(buckets_ms) != sorted(set(buckets_ms)) or not buckets_ms:
            raise ValueError(f"buckets_ms must be strictly increasing and not empty, got {buckets_ms}")
        self.bounds_ms = tuple(float(b) for b in buckets_ms)
        self._lock = threading.Lock()
        self._counts: dict[str, list[int]] = {}  # per stage: one count per bucket, +Inf last (not cumulative)
        self._sums: dict[str, float] = {}

    def observe(self, timings_ms: Mapping[str, float]) -> None:
        """Count one part's stage times (non-finite values and :data:`NOT_DURATIONS` are skipped)."""
        bounds, n = self.bounds_ms, len(self.bounds_ms) + 1
        with self._lock:
            for stage, ms in timings_ms.items():
                if stage in NOT_DURATIONS or not math.isfinite(ms):
                    continue
                row = self._counts.get(stage)
                if row is None:
                    row = self._counts[stage] = [0] * n
                    self._sums[stage] = 0.0
                row[bisect.bisect_left(bounds, ms)] += 1
                self._sums[stage] += ms

    def snapshot(self) -> list[StageHistogram]:
        """Every stage's histogram (sorted by stage), copied under the lock."""
        with self._lock:
            rows = {k: list(v) for k, v in self._counts.items()}
            sums = dict(self._sums)
        out = []
        for stage in sorted(rows):
            cum, acc = [], 0
            for c in rows[stage]:
                acc += c
                cum.append(acc)
            out.append(StageHistogram(stage, (*self.bounds_ms, math.inf), tuple(cum), sums[stage], acc))
        return out
