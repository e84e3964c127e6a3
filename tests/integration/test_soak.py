"""Soak, CI size (issue 12): 20,000 parts through the real Station, counted exactly.

The 1,000,000-part version is ``bench/bench_soak.py`` (docs/storage.md, "Figures").
Frames are pre-rendered (a pool the camera cycles), small (320x200) so that the
station, not the inspector, is what runs 20,000 times in about 100 s. The frame queue is
32 deep instead of 4: on a shared CI host a scheduling hiccup of more than 4 parts
(20 ms at 200/s) would otherwise drop parts (FAILSAFE "frame queue full", correctly
counted); this test is about counting and memory, the drop-new policy has its own tests.

RSS bound: 4 % from 10 % to 100 % of the parts. Measured here 0.9-1.9 % (1.5-3 MiB
on ~150 MiB): SQLite's page cache (2 MB per connection) filling as the database grows
to ~14 MB, and the bounded histories (the scheduler's last 100,000 fired rejects, the
simulated output's edges) filling at ~200 B per reject. A leak of 400 B per part
(one PartResult, or one frame in 300 parts, kept) would exceed it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from bench_soak import soak  # noqa: E402

pytestmark = pytest.mark.slow

PARTS = 20_000
RATE = 200.0  # parts/s: 2/3 of what this 2-core machine holds at 320x200 (~300/s), 100 s


@pytest.mark.timeout(240)
def test_soak_20k_parts_reconcile_exactly(tmp_path):
    r = soak(
        PARTS,
        RATE,
        width=320,
        height=200,
        pool=64,
        learn=10,
        keep_pass_every=1000,
        data=tmp_path / "soak",
        frame_queue=32,
    )
    print(json.dumps(r))  # the figures, with -s
    c = r["counters"]
    # every part triggered has a verdict, every verdict a row, every reject scheduled fired
    assert r["problems"] == [] and r["reconciled"], r["problems"]
    assert c["triggers"] == c["verdicts"] == r["db_rows"] == c["records_written"] == PARTS
    assert c["records_dropped"] == 0
    assert c["rejects_fired"] == c["rejects_scheduled"] > 0
    # FAILSAFE parts: the reference inspector's learning parts, and at most a few drop-new parts when
    # the shared CI host takes the CPU away; nothing else (no deadline missed, no stall, no error)
    assert r["failsafe_unexplained"] == 0, r["failsafe"]
    assert r["failsafe_overload"] <= PARTS // 100, r["failsafe"]
    assert 0 < r["failsafe_learning"] <= 40
    # no queue ever filled (drop-new would have made FAILSAFE parts)
    assert r["max_depth"]["recorder_queue"] < r["queue_limits"]["recorder_queue"] // 2
    assert r["rate_achieved"] >= 0.9 * RATE
    assert r["rss_growth_after_warmup"] < 0.04, r["rss_mib"]
