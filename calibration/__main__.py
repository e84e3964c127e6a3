"""``python -m calibration chessboard IMAGES... --pattern 9x6 --square-mm 5 --out cal.json``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2

from .chessboard import CalibrationError, calibrate


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(prog="calibration")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("chessboard", help="scale and intrinsics from chessboard images (first image on the part plane)")
    c.add_argument("images", nargs="+", type=Path)
    c.add_argument("--pattern", default="9x6", help="inner corners, COLSxROWS")
    c.add_argument("--square-mm", type=float, required=True)
    c.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    cols, rows = (int(x) for x in a.pattern.lower().split("x"))
    imgs = []
    for path in a.images:
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if img is None:
            print(f"{path}: not a readable image", file=sys.stderr)
            return 2
        imgs.append(img)
    try:
        res = calibrate(imgs, (cols, rows), a.square_mm)
    except CalibrationError as exc:
        print(f"calibration failed: {exc}", file=sys.stderr)
        return 2
    res.save(a.out)
    print(f"{a.out}: id {res.id}, {res.mm_per_px:.5f} mm/px, {res.images_used} image(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
