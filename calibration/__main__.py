"""``python -m calibration``: calibrate a camera into the station database, list its versions, roll back.

    python -m calibration calibrate VIEWS... -c line.yaml --camera cam0 --target charuco --cols 8 --rows 6 \\
        --square-mm 18 --marker-mm 13 --user alice --reason "new lens"     # the first view: the board on the belt
    python -m calibration list -c line.yaml --camera cam0
    python -m calibration rollback 3 -c line.yaml --camera cam0 --user alice --reason "v4 was wrong"
    python -m calibration chessboard IMAGES... --pattern 9x6 --square-mm 5 --out cal.json   # the older JSON file

A running station picks a new calibration up at its next start (the admin page applies it at once).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import cv2

from station import serialize

from .chessboard import CalibrationError, calibrate

if TYPE_CHECKING:
    import sqlite_utils

    from station.config import StationConfig


def _read(paths: list[Path]) -> list[tuple[str, cv2.typing.MatLike]] | str:
    out = []
    for path in paths:
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if img is None:
            return f"{path}: not a readable image"
        out.append((path.name, img))
    return out


def _db_and_station(config: str | None) -> tuple[StationConfig, sqlite_utils.Database]:
    from station.config import load_config
    from station.store.db import open_db

    cfg = load_config(config)
    return cfg, open_db(cfg.store.db_path)


def cmd_calibrate(a: argparse.Namespace) -> int:
    """Calibrate, and store the result as the camera's new version (refused: exit 2 with the reasons)."""
    from .camera import CalibrationRefused, Limits, calibrate_camera
    from .records import record
    from .targets import Target

    views = _read(a.views)
    if isinstance(views, str):
        print(views, file=sys.stderr)
        return 2
    try:
        target = Target(a.target, a.cols, a.rows, a.square_mm, a.marker_mm, a.dictionary)
    except ValueError as exc:
        print(f"target: {exc}", file=sys.stderr)
        return 2
    cfg, db = _db_and_station(a.config)
    try:
        if a.camera not in {c.id for c in cfg.cameras}:
            print(
                f"--camera {a.camera}: not a camera of {cfg.name} (cameras: {', '.join(c.id for c in cfg.cameras)})",
                file=sys.stderr,
            )
            return 2
        try:
            cal = calibrate_camera(views, target, Limits(**cfg.calibration.limits.model_dump()), a.plane_view)
        except CalibrationRefused as exc:
            print("calibration refused:\n  " + "\n  ".join(exc.reasons), file=sys.stderr)
            return 2
        v = record(db, cfg.name, a.camera, cal, user=a.user, reason=a.reason or None)
    finally:
        db.close()
    print(
        f"{cfg.name}/{a.camera}: version {v.version} in force, id {cal.id}, reprojection error {cal.rms_px:.3f} px, "
        f"{cal.mm_per_px:.5f} mm/px, coverage {cal.coverage:.0%}, {sum(x.used for x in cal.views)}/{len(cal.views)} "
        "views used"
    )
    return 0


def cmd_list(a: argparse.Namespace) -> int:
    """The camera's calibration versions, newest first; * marks the one in force."""
    from station.store import camera_setup as store

    cfg, db = _db_and_station(a.config)
    try:
        cur = store.in_force(db, "calibration", cfg.name, a.camera)
        rows = store.history(db, "calibration", cfg.name, a.camera)
    finally:
        db.close()
    if a.json:
        print(serialize.dumps({"in_force": cur.version if cur else None, "versions": [r.as_dict() for r in rows]}))
        return 0
    for r in rows:
        when = dt.datetime.fromtimestamp(r.created_at).strftime("%Y-%m-%d %H:%M")
        mark = "*" if cur is not None and cur.id == r.id else " "
        print(
            f"{mark} v{r.version:<3d} {r.ref} {when} {r.created_by:12s} {r.body['rms_px']:.3f} px  "
            f"{r.body['mm_per_px']:.5f} mm/px  {r.reason or ''}"
        )
    if not rows:
        print(f"{cfg.name}/{a.camera}: no calibration stored (the config's calibration applies)")
    return 0


def cmd_rollback(a: argparse.Namespace) -> int:
    """Put an older version back in force (audited)."""
    from station.store.camera_setup import SetupError

    from .records import rollback

    cfg, db = _db_and_station(a.config)
    try:
        v = rollback(db, cfg.name, a.camera, a.version, user=a.user, reason=a.reason or None)
    except SetupError as exc:
        print(f"rollback: {exc}", file=sys.stderr)
        return 2
    finally:
        db.close()
    print(f"{cfg.name}/{a.camera}: calibration version {v.version} ({v.ref}) in force again")
    return 0


def cmd_chessboard(a: argparse.Namespace) -> int:
    """Scale and intrinsics into a JSON file (``calibration.file``)."""
    cols, rows = (int(x) for x in a.pattern.lower().split("x"))
    views = _read(a.images)
    if isinstance(views, str):
        print(views, file=sys.stderr)
        return 2
    try:
        res = calibrate([img for _, img in views], (cols, rows), a.square_mm)
    except CalibrationError as exc:
        print(f"calibration failed: {exc}", file=sys.stderr)
        return 2
    res.save(a.out)
    print(f"{a.out}: id {res.id}, {res.mm_per_px:.5f} mm/px, {res.images_used} image(s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(
        prog="calibration", description="camera calibration, versioned per camera in the station database"
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("-c", "--config", help="station config (its name, cameras, store.db_path, calibration.limits)")
        sp.add_argument("--camera", default="cam0", help="camera id (default cam0)")

    k = sub.add_parser(
        "calibrate", help="intrinsics, distortion and mm/px from board views; stored as the camera's new version"
    )
    k.add_argument(
        "views", nargs="+", type=Path, help="board views; the first (see --plane-view) lies on the inspection plane"
    )
    common(k)
    k.add_argument("--target", choices=["chessboard", "charuco"], default="chessboard")
    k.add_argument("--cols", type=int, required=True, help="chessboard: inner corners across; ChArUco: squares across")
    k.add_argument("--rows", type=int, required=True, help="chessboard: inner corners down; ChArUco: squares down")
    k.add_argument("--square-mm", type=float, required=True)
    k.add_argument("--marker-mm", type=float, default=None, help="ChArUco marker size")
    k.add_argument("--dictionary", default="5x5_100", help="ChArUco ArUco dictionary (4x4_50 ... 6x6_250)")
    k.add_argument(
        "--plane-view", type=int, default=0, help="index of the view with the board lying where parts pass (mm/px)"
    )
    k.add_argument("--user", required=True, help="who calibrates (kept with the version and in the audit trail)")
    k.add_argument("--reason", default="")
    k.set_defaults(func=cmd_calibrate)

    ls = sub.add_parser("list", help="the camera's calibration versions (* = in force)")
    common(ls)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)

    rb = sub.add_parser("rollback", help="put an older calibration version back in force")
    rb.add_argument("version", type=int)
    common(rb)
    rb.add_argument("--user", required=True)
    rb.add_argument("--reason", default="")
    rb.set_defaults(func=cmd_rollback)

    c = sub.add_parser(
        "chessboard",
        help="scale and intrinsics from chessboard images into a JSON file (first image on the part plane)",
    )
    c.add_argument("images", nargs="+", type=Path)
    c.add_argument("--pattern", default="9x6", help="inner corners, COLSxROWS")
    c.add_argument("--square-mm", type=float, required=True)
    c.add_argument("--out", type=Path, required=True)
    c.set_defaults(func=cmd_chessboard)
    a = p.parse_args(argv)
    return int(a.func(a))


if __name__ == "__main__":
    raise SystemExit(main())
