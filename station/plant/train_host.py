"""``plant train``: train on a designated host (a GPU server in production) from a central dataset snapshot.

1. the snapshot is pulled from the object store into a local folder (:func:`station.plant.datasets.fetch`:
   manifest checked against its content hash, images cached and checked by sha256, the project's YOLO layout);
2. the project's own training entry point trains on it (:func:`models.train.train`, Ultralytics);
3. the best weights are exported to ONNX (:func:`models.export.export_onnx`, parity-checked, lineage in the
   file's metadata: ``dataset_snapshot`` = ``plant:<snapshot id>``, ``train_host``);
4. the ONNX file goes to the object store under its sha256 and into the central registry (``models``) with
   its lineage (snapshot id, host, metrics), from where ``plant promote --sha`` rolls it out.

Torch and Ultralytics are imported only here, on the training host; a station never imports this module.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.train import TrainRun

from ..store import plant_db, plant_labels, plant_models
from . import datasets
from .controller import upload_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSpec(TrainRun):
    """How to train (:class:`models.train.TrainRun`) and the share of the snapshot that validates."""

    val_fraction: float = 0.2


def train_snapshot(
    conn: Any,
    s3: Any,
    bucket: str,
    snapshot_id: str,
    host: str,
    work_dir: Path,
    spec: TrainSpec = TrainSpec(),
    *,
    version: str | None = None,
) -> dict[str, Any]:
    """Pull, train, export, upload, register; the registry row of the new model."""
    from models.export import export_onnx
    from models.train import train

    plant_db.create_schema(conn)
    snap = plant_labels.snapshot(conn, snapshot_id)
    sid = snap["id"]
    work = Path(work_dir) / sid[:16]
    data_dir = work / "dataset"
    if data_dir.exists():
        shutil.rmtree(data_dir)  # a fresh export each time: the snapshot is the truth, the folder a copy
    data_yaml = datasets.fetch(
        s3, bucket, sid, data_dir, Path(work_dir) / "image-cache", val_fraction=spec.val_fraction, seed=spec.seed
    )
    log.info("training %s on snapshot %s (%d images) on host %s", spec.model, sid[:12], snap["n_images"], host)
    res = train(data_yaml, work / "run", **spec.train_args())
    onnx_path = export_onnx(
        res.best_pt,
        work / "model.onnx",
        spec.imgsz,
        lineage={"dataset_snapshot": f"plant:{sid}", "train_host": host, "train_seed": spec.seed, "parent_sha": None},
    )
    body = onnx_path.read_bytes()
    sha, key = upload_model(s3, bucket, body)
    metrics = {k: float(v) for k, v in res.metrics.items()}
    plant_models.register_model(
        conn,
        sha,
        version or f"{snap['name']}-{sha[:8]}",
        key,
        len(body),
        snapshot_id=sid,
        trained_on=host,
        metrics=metrics,
    )
    log.info("model %s registered (snapshot %s, host %s, %s)", sha[:12], sid[:12], host, metrics)
    return plant_models.find_model(conn, sha)
