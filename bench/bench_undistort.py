"""Cost of the camera setup on the hot path, side by side with the reference inspector's per-part time.

In one run, on the same 1280x800 Mono8 synthetic parts, interleaved part by part (one OpenCV thread):

1. the reference inspector's ``inspect`` (the budget a part already spends);
2. the undistortion remap (``calibration.undistort``: ``cv2.remap`` on maps precomputed once), and
   the same with OpenCV's fixed-point ``CV_16SC2`` maps (the usual choice, slower with this build);
3. the decision with drawn regions (ROI, 3 ignore zones, 2 named regions) vs without, per part.

Prints medians and the ratio to the inspector; ``--json`` writes them too.

    python bench/bench_undistort.py            # 200 parts
    python bench/bench_undistort.py --n 50 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration.undistort import Undistorter  # noqa: E402
from station.acquire.synthetic import iter_parts  # noqa: E402
from station.camera_setup import CameraSetup, Regions  # noqa: E402
from station.config import CalibrationConfig, ReferenceInspectorConfig, RulesConfig, SyntheticCameraConfig  # noqa: E402
from station.config.regions import CameraRegions, NamedRegion, Zone  # noqa: E402
from station.contracts import Detections, Frame, Trigger  # noqa: E402
from station.decide import Decider  # noqa: E402
from station.inspection.reference import ReferenceInspector  # noqa: E402

K = [[1100.0, 0.0, 640.0], [0.0, 1100.0, 400.0], [0.0, 0.0, 1.0]]
DIST = [-0.18, 0.06, 0.0, 0.0, 0.0]
SPEC = CameraRegions(
    image_size=(1280, 800),
    roi=[(40, 40), (1240, 40), (1240, 760), (40, 760)],
    ignore=[
        Zone(
            name=f"z{i}",
            points=[(100 + 300 * i, 60), (250 + 300 * i, 60), (250 + 300 * i, 200), (100 + 300 * i, 200)],
        )
        for i in range(3)
    ],
    regions=[
        NamedRegion(
            name="seal",
            points=[(400, 300), (880, 300), (880, 500), (400, 500)],
            reject_conf=0.2,
            min_area_mm2=0.0,
        ),
        NamedRegion(
            name="cosmetic",
            points=[(40, 500), (1240, 500), (1240, 760), (40, 760)],
            reject_conf=0.9,
            min_area_mm2=5.0,
        ),
    ],
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="parts")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    cv2.setNumThreads(1)

    cam = SyntheticCameraConfig(product="machined", width=1280, height=800, defect_rate=0.5, seed=7)
    insp = ReferenceInspector(ReferenceInspectorConfig())
    for _, p in iter_parts(cam.model_copy(update={"defect_rate": 0.0}), 0, 20):
        insp.learn(Frame(0, "cam0", p.image, 0, {"defective": False}))
    insp.warmup()
    frames = [Frame(pid, "cam0", p.image, 0) for pid, p in iter_parts(cam, 1000, args.n)]
    t0 = time.perf_counter()
    und = Undistorter(K, DIST, (1280, 800))
    build_ms = (time.perf_counter() - t0) * 1e3
    fx1, fx2 = cv2.initUndistortRectifyMap(np.array(K), np.array(DIST), None, np.array(K), (1280, 800), cv2.CV_16SC2)
    setup = {
        "cam0": CameraSetup(
            "cam0", "cal-bench", 1, 0.05, regions=Regions.of(SPEC), regions_spec=SPEC, regions_version=1
        )
    }
    plain, zoned = (
        Decider(RulesConfig(), CalibrationConfig(), "bench"),
        Decider(RulesConfig(), CalibrationConfig(), "bench", setup),
    )

    t_insp, t_und, t_fix, t_dec, t_dec_zones, n_det = [], [], [], [], [], []
    for f in frames:
        t0 = time.perf_counter()
        det = insp.inspect(f)
        t_insp.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        und(f.image)
        t_und.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        cv2.remap(f.image, fx1, fx2, cv2.INTER_LINEAR)
        t_fix.append(time.perf_counter() - t0)
        if len(det) == 0:  # judge a few detections anyway, so the decision has work
            det = Detections(
                np.array([[600, 380, 640, 420], [120, 90, 160, 130], [200, 600, 260, 650]], np.float32),
                np.array([0.9, 0.6, 0.4], np.float32),
                np.zeros(3, np.int32),
                ("defect",),
                "bench",
            )
        n_det.append(len(det))
        trig = Trigger(f.part_id, f.part_id, 0)
        t0 = time.perf_counter()
        plain.decide(trig, [f], [det], {})
        t_dec.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        zoned.decide(trig, [f], [det], {})
        t_dec_zones.append(time.perf_counter() - t0)

    def med(ts: list[float]) -> float:
        return statistics.median(ts) * 1e3

    out = {
        "parts": len(frames),
        "frame": "1280x800 Mono8",
        "cv2_threads": 1,
        "maps_build_ms": round(build_ms, 2),
        "reference_inspect_ms": round(med(t_insp), 3),
        "undistort_ms": round(med(t_und), 3),
        "undistort_over_inspect": round(med(t_und) / med(t_insp), 3),
        "undistort_fixed_point_maps_ms": round(med(t_fix), 3),
        "decide_ms": round(med(t_dec), 4),
        "decide_with_regions_ms": round(med(t_dec_zones), 4),
        "detections_per_part_median": statistics.median(n_det),
    }
    print(f"{out['parts']} parts, {out['frame']}, one OpenCV thread; maps built once in {build_ms:.1f} ms")
    print(f"reference inspector   median {out['reference_inspect_ms']:7.3f} ms/part  (the reference)")
    print(
        f"undistortion remap    median {out['undistort_ms']:7.3f} ms/part  ratio {out['undistort_over_inspect']:.2f} "
        "of the inspector"
    )
    print(f"  (fixed-point maps   median {out['undistort_fixed_point_maps_ms']:7.3f} ms/part)")
    print(
        f"decide                median {out['decide_ms']:7.4f} ms/part; with regions "
        f"{out['decide_with_regions_ms']:.4f} ms/part "
        f"({out['detections_per_part_median']:g} detections per part)"
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
