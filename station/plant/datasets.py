"""Dataset snapshots across stations: QA labels of the plant database -> a frozen, content-addressed manifest.

``snapshot`` takes the current labels (newest revision per station and image,
:mod:`station.store.plant_labels`) of the chosen stations reviewed in a time range, gives every
image and part a plant-wide number (station ids overlap), and freezes them as
:class:`labeling.snapshot.SnapshotItem` s. The snapshot id is their content hash
(:func:`labeling.snapshot.content_sha`: class list, image sha256 and boxes), so the same inputs
give the same id, and a later relabel gives another. The manifest (JSON: the items with their
station, image key and labels) goes to the object store under ``datasets/<id>.json``, and a row
into ``dataset_snapshots``.

``fetch`` (on the training host) reads a manifest back, checks its content hash, downloads the
images (cached by content hash, each checked), and writes the project's YOLO dataset layout with
:func:`labeling.export.write_yolo` (split by part, seeded).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labeling.export import write_yolo
from labeling.snapshot import SnapshotItem, SnapshotLabel, content_sha, item_from_row
from station import serialize

from ..store import plant_db, plant_labels

MANIFEST_VERSION = 1


def manifest_key(snapshot_id: str) -> str:
    """Object key of a snapshot's manifest."""
    return f"datasets/{snapshot_id}.json"


def _labels(boxes: Sequence[Sequence[Any]]) -> tuple[SnapshotLabel, ...]:
    """A manifest's or a label row's ``[class, x1, y1, x2, y2]`` boxes as snapshot labels."""
    return tuple(SnapshotLabel(str(c), float(a), float(b), float(x), float(y), label_id=0) for c, a, b, x, y in boxes)


def _items(rows: Sequence[dict[str, Any]]) -> list[SnapshotItem]:
    parts: dict[tuple[str, int], int] = {}
    out = []
    for n, r in enumerate(rows, 1):
        part = parts.setdefault((r["station_id"], int(r["part_id"])), len(parts) + 1)
        labels = _labels(r["boxes"])
        out.append(
            SnapshotItem(
                part,
                f"{r['station_id']}-{r['camera_id']}",
                r["sha256"],
                r["image_key"].rsplit(".", 1)[-1],
                int(r["width"]),
                int(r["height"]),
                image_id=n,
                t_wall=None,
                verdict=r["verdict"],
                labels=labels,
            )
        )
    return out


def snapshot(
    conn: Any,
    s3: Any,
    bucket: str,
    stations: Sequence[str],
    name: str,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    created_by: str = "cli",
) -> dict[str, Any]:
    """Freeze the current labels of ``stations`` reviewed in [since, until); the snapshot row (id = content hash)."""
    stations = sorted(set(stations))
    if not stations:
        raise ValueError("snapshot: name at least one station")
    plant_db.create_schema(conn)
    rows = plant_labels.current_labels(conn, stations, since, until)
    if not rows:
        raise ValueError(f"snapshot: no reviewed images of {', '.join(stations)} in that time range")
    items = _items(rows)
    class_names = sorted({lab.class_name for it in items for lab in it.labels})
    sid = content_sha(class_names, items)
    doc = {
        "version": MANIFEST_VERSION,
        "id": sid,
        "name": name,
        "stations": stations,
        "since": None if since is None else since.isoformat(),
        "until": None if until is None else until.isoformat(),
        "class_names": class_names,
        "items": [
            {
                "image_id": it.image_id,
                "part_id": it.part_id,
                "camera_id": it.camera_id,
                "station": r["station_id"],
                "station_image_id": r["image_id"],
                "station_part_id": r["part_id"],
                "revision": r["revision"],
                "image_key": r["image_key"],
                "sha256": it.sha256,
                "format": it.format,
                "width": it.width,
                "height": it.height,
                "verdict": it.verdict,
                "labels": [list(b) for b in r["boxes"]],
            }
            for it, r in zip(items, rows)
        ],
    }
    key = manifest_key(sid)
    s3.put_object(
        Bucket=bucket, Key=key, Body=serialize.dumps(doc, canonical=True).encode(), ContentType="application/json"
    )
    row = {
        "id": sid,
        "name": name,
        "stations": stations,
        "since": since,
        "until": until,
        "class_names": class_names,
        "n_images": len(items),
        "n_labels": sum(len(it.labels) for it in items),
        "key": key,
        "created_by": created_by,
    }
    created = plant_labels.add_snapshot(conn, row)
    return {**plant_labels.snapshot(conn, sid), "created": created}


def read_manifest(s3: Any, bucket: str, snapshot_id: str) -> tuple[dict[str, Any], list[SnapshotItem]]:
    """The manifest and its items; ValueError when its content does not hash to its id."""
    doc = json.loads(s3.get_object(Bucket=bucket, Key=manifest_key(snapshot_id))["Body"].read())
    items = [item_from_row(d, None, _labels(d["labels"])) for d in doc["items"]]
    got = content_sha(doc["class_names"], items)
    if got != snapshot_id:
        raise ValueError(f"manifest {manifest_key(snapshot_id)} hashes to {got[:12]}, not its id: damaged or altered")
    return doc, items


def fetch(
    s3: Any, bucket: str, snapshot_id: str, out_dir: Path, cache_dir: Path, *, val_fraction: float = 0.2, seed: int = 0
) -> Path:
    """Pull snapshot ``snapshot_id`` (full id) from the object store into a YOLO dataset in ``out_dir``; data.yaml."""
    doc, items = read_manifest(s3, bucket, snapshot_id)
    cache_dir.mkdir(parents=True, exist_ok=True)
    src: dict[int, Path] = {}
    for d, it in zip(doc["items"], items):
        path = cache_dir / f"{it.sha256}.{it.format}"
        if not path.exists():
            body = s3.get_object(Bucket=bucket, Key=d["image_key"])["Body"].read()
            if hashlib.sha256(body).hexdigest() != it.sha256:
                raise ValueError(f"image {d['image_key']} in the object store does not match its sha256")
            tmp = path.with_suffix(".part")
            tmp.write_bytes(body)
            tmp.replace(path)
        src[it.image_id] = path
    title = f"Plant dataset snapshot {snapshot_id} {doc['name']!r} (stations {', '.join(doc['stations'])})"
    lineage = {
        "snapshot": f"plant:{snapshot_id}",
        "snapshot_id": snapshot_id,
        "name": doc["name"],
        "sha256": snapshot_id,
        "stations": doc["stations"],
    }
    return write_yolo(
        items,
        doc["class_names"],
        src,
        out_dir,
        val_fraction,
        seed,
        split="group",
        link=True,
        title=title,
        lineage=lineage,
    )
