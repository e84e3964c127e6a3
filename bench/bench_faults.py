"""Fault injection figures: each fault is injected into a running line and removed (tests/faults.py, the
same functions tests/integration/test_faults.py asserts on), and one row per fault is printed:

* parts        - verdicts of the run (all of them, before, during and after the fault)
* during fault - parts triggered while the fault lasted
* FAILSAFE     - FAILSAFE verdicts (the reference inspector's learning parts excepted); every one was rejected
* lost         - verdicts not in the database after stop (spill file replayed), committed rows gone,
                 MQTT results the subscriber never got
* recovery s   - from the fault's removal (a hang: from the hang) to its alarm cleared and a part inspected again
* alarm        - the components that raised an alarm or warning, and whether it cleared
* result       - "ok", or what broke the contract

Not a test: exits 1 when a row has a problem.

    python bench/bench_faults.py                     # all ten faults (~2 min)
    python bench/bench_faults.py disk_full hot_swaps # some of them
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.faults import FAULTS, table  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("faults", nargs="*", choices=[[], *FAULTS], help="faults to run (default: all)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # the station logs every alarm and failed part; the table says it
    for name in ("pymodbus", "station", "paho"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    rows = []
    for name in args.faults or list(FAULTS):
        t0 = time.monotonic()
        res = FAULTS[name]()
        print(
            f"{name}: {time.monotonic() - t0:.1f} s{'; ' + '; '.join(res.notes) if res.notes else ''}",
            file=sys.stderr,
            flush=True,
        )
        rows.append(res)
    print(table(rows))
    return 1 if any(r.problems for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
