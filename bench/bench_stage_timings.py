"""Cost of the per-stage latency histograms on the verdict path, side by side with prometheus_client's Histogram.

Run: python bench/bench_stage_timings.py [--parts 20000] [--json]

Each part's ``timings_ms`` (the 8 keys a reference-inspector part carries) is counted two ways, same
values, same process, timed over many parts (mean µs per part, best of 5 repeats):
* ``stage_timings``: :meth:`station.timings.StageTimings.observe`, what the station calls in ``_on_final``;
* ``prometheus_histogram``: the reference, ``Histogram(..., labelnames=["stage"]).labels(stage).observe(s)``
  per stage on a private registry, i.e. feeding prometheus_client directly where the timings are made.
A third figure, ``counters_verdict``, is the per-part ``Counters.verdict`` already on that path.
/metrics builds the exposition from StageTimings.snapshot() at scrape time (``snapshot_us``).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

from station.contracts import Outcome
from station.counters import Counters
from station.timings import BUCKETS_MS, StageTimings

STAGES = ("acquire", "queue", "preprocess", "infer", "postprocess", "inspect", "decide", "total")


def per_part_us(fn: Callable[[Any], None], items: list[Any], repeats: int = 5) -> float:
    """Best-of-``repeats`` mean µs of ``fn(item)`` over ``items``."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for it in items:
            fn(it)
        best = min(best, (time.perf_counter() - t0) / len(items))
    return best * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", type=int, default=20000, help="parts per repeat (default 20000)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    a = ap.parse_args()
    rnd = random.Random(7)
    parts = [
        {s: rnd.lognormvariate(1.5, 1.0) for s in STAGES} | {"deadline_slack_ms": rnd.uniform(-5, 50)}
        for _ in range(a.parts)
    ]
    st = StageTimings()
    hist = Histogram(
        "bench_stage_duration_seconds",
        "bench",
        ["stage"],
        buckets=[b / 1000 for b in BUCKETS_MS],
        registry=CollectorRegistry(),
    )

    def prom(t: dict[str, float]) -> None:
        for k, ms in t.items():
            if k != "deadline_slack_ms":
                hist.labels(k).observe(ms / 1000)

    counters = Counters()
    ours = per_part_us(st.observe, parts)
    ref = per_part_us(prom, parts)
    cnt = per_part_us(lambda _: counters.verdict(Outcome.PASS), parts)
    t0 = time.perf_counter()
    for _ in range(100):
        st.snapshot()
    snap_us = (time.perf_counter() - t0) / 100 * 1e6
    out = {
        "parts": a.parts,
        "stages_per_part": len(STAGES),
        "buckets": len(BUCKETS_MS) + 1,
        "stage_timings_us_per_part": round(ours, 3),
        "prometheus_histogram_us_per_part": round(ref, 3),
        "counters_verdict_us_per_part": round(cnt, 3),
        "stage_timings_over_prometheus": round(ours / ref, 3),
        "snapshot_us": round(snap_us, 2),
    }
    if a.json:
        print(json.dumps(out))
        return
    print(f"{a.parts} parts x {len(STAGES)} stages, {len(BUCKETS_MS) + 1} buckets, mean per part (best of 5)")
    print(f"StageTimings.observe           {ours:7.3f} µs")
    print(f"prometheus_client Histogram    {ref:7.3f} µs   (ratio ours/prometheus {ours / ref:.3f})")
    print(f"Counters.verdict (already)     {cnt:7.3f} µs")
    print(f"StageTimings.snapshot (scrape) {snap_us:7.2f} µs")


if __name__ == "__main__":
    main()
