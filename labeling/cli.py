"""Command line of the labeling tools.

::

    python -m labeling snapshot  --db data/station.db [--name N] [--since T] [--until T] [--all] [--classes a,b]
    [--user U]
    python -m labeling snapshots --db data/station.db
    python -m labeling export    --db data/station.db --images data/images --snapshot ID --format yolo|coco --out DIR
                                 [--val-fraction 0.2] [--seed 0] [--split time|group] [--copy]
    python -m labeling import    --db data/station.db --images data/images --format yolo --data DIR/data.yaml [--user U]
    python -m labeling import    --db data/station.db --images data/images --format coco --coco FILE --images-dir DIR
    [--user U]
    python -m labeling queue     --db data/station.db [--limit 20] [--outcome UNCERTAIN] [--seed 0]
    python -m labeling stats     --db data/station.db [--tz Europe/Berlin]

Times (``--since``/``--until``) are UNIX seconds or ISO 8601 (local time when no offset is
given). ``export --format coco`` writes ``DIR/annotations.json`` and the images in
``DIR/images/``. Results are printed as JSON; errors go to stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from station.cli_common import iso_time
from station.serialize import dumps
from station.store.db import StoreError, open_db
from station.store.images import ImageStore

log = logging.getLogger(__name__)


def _time(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        pass
    return iso_time(s, f"not a time: {s!r} (UNIX seconds or ISO 8601 such as 2024-05-01T06:00)").timestamp()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m labeling", description="QA labels: snapshots, dataset export and import."
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser, images: bool = False) -> None:
        sp.add_argument("--db", required=True, type=Path, help="station database file (store.db_path)")
        if images:
            sp.add_argument("--images", required=True, type=Path, help="image store folder (store.images_dir)")

    s = sub.add_parser("snapshot", help="freeze the current labels into a dataset snapshot")
    common(s)
    s.add_argument("--name", help="snapshot name (default snapshot-<UTC time>)")
    s.add_argument("--since", type=_time, help="only parts triggered at or after this time")
    s.add_argument("--until", type=_time, help="only parts triggered before this time")
    s.add_argument("--all", action="store_true", help="include images nobody reviewed (model labels as they are)")
    s.add_argument(
        "--classes", help="comma-separated class names in class-index order (default: sorted classes present)"
    )
    s.add_argument("--user", default=getpass.getuser(), help="who takes the snapshot (audit)")

    s = sub.add_parser("snapshots", help="list the dataset snapshots")
    common(s)

    s = sub.add_parser("export", help="export a snapshot as a YOLO dataset or COCO JSON")
    common(s, images=True)
    s.add_argument("--snapshot", required=True, type=int, help="snapshot id (see `snapshots`)")
    s.add_argument("--format", required=True, choices=("yolo", "coco"))
    s.add_argument("--out", required=True, type=Path, help="new or empty output folder")
    s.add_argument("--val-fraction", type=float, default=0.2, help="YOLO: fraction of parts in val (default 0.2)")
    s.add_argument("--seed", type=int, default=0, help="YOLO: seed of the group split")
    s.add_argument(
        "--split", choices=("time", "group"), default="time", help="YOLO: latest parts in val (time) or seeded (group)"
    )
    s.add_argument("--copy", action="store_true", help="copy the images instead of hard-linking them")

    s = sub.add_parser("import", help="import labelled images (YOLO data.yaml or COCO JSON)")
    common(s, images=True)
    s.add_argument("--format", required=True, choices=("yolo", "coco"))
    s.add_argument("--data", type=Path, help="YOLO: the dataset's data.yaml")
    s.add_argument("--coco", type=Path, help="COCO: the annotations JSON")
    s.add_argument("--images-dir", type=Path, help="COCO: folder holding the images named in the JSON")
    s.add_argument("--user", default=getpass.getuser(), help="who imports (audit)")

    s = sub.add_parser("queue", help="print the review queue")
    common(s)
    s.add_argument("--limit", type=int, default=20)
    s.add_argument("--offset", type=int, default=0)
    s.add_argument("--outcome", choices=("PASS", "FAIL", "UNCERTAIN", "FAILSAFE"))
    s.add_argument("--seed", type=int, default=0)

    s = sub.add_parser("stats", help="print quality statistics")
    common(s)
    s.add_argument("--tz", help="IANA time zone for hours and shifts (default: this machine's)")
    return p


def _run(args: argparse.Namespace) -> Any:
    from . import export, importer, queue, snapshot, stats

    db = open_db(args.db, synchronous="FULL")
    try:
        if args.cmd == "snapshot":
            classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
            snap = snapshot.create_snapshot(
                db,
                args.user,
                name=args.name,
                since=args.since,
                until=args.until,
                only_reviewed=not args.all,
                class_names=classes,
            )
            return snap.summary()
        if args.cmd == "snapshots":
            return [s.summary() for s in snapshot.list_snapshots(db)]
        if args.cmd == "export":
            store = ImageStore(args.images)
            if args.format == "yolo":
                path = export.export_yolo(
                    db,
                    store,
                    args.snapshot,
                    args.out,
                    args.val_fraction,
                    args.seed,
                    split=args.split,
                    link=not args.copy,
                )
            else:
                args.out.mkdir(parents=True, exist_ok=True)
                path = export.export_coco(db, store, args.snapshot, args.out / "annotations.json", link=not args.copy)
            return {"written": str(path)}
        if args.cmd == "import":
            store = ImageStore(args.images)
            if args.format == "yolo":
                if args.data is None:
                    raise ValueError("import --format yolo needs --data path/to/data.yaml")
                res = importer.import_yolo(db, store, args.data, args.user)
            else:
                if args.coco is None or args.images_dir is None:
                    raise ValueError("import --format coco needs --coco annotations.json and --images-dir folder")
                res = importer.import_coco(db, store, args.coco, args.images_dir, args.user)
            return res
        if args.cmd == "queue":
            return queue.review_queue(db, outcome=args.outcome, limit=args.limit, offset=args.offset, seed=args.seed)
        if args.cmd == "stats":
            return {
                "false_positive_rate": stats.false_positive_rate(db),
                "defect_pareto": stats.defect_pareto(db),
                "yield_by_shift": stats.yield_by_shift(db, tz=args.tz),
            }
        raise ValueError(f"unknown command {args.cmd!r}")
    finally:
        db.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 2 error)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        result = _run(args)
    except (ValueError, LookupError, OSError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(dumps(result, indent=1))
    return 0
