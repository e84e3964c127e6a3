"""Helpers for the models web tests: a line of real images with known defects, a golden set, QA labels from the truth.

The line is a folder camera (the real driver) replaying scenes of tests/model_factory.py - bright
squares and discs on a dark noisy background, 64x64 - the domain the cached tiny detectors know:

- ``detecting_model()`` (40 epochs): finds most shapes - the "better" model;
- ``tiny_model("detect")`` (1 epoch): finds almost nothing - the "worse" model.

Their escape rates on the golden set are measured by the tests, not assumed. The truth of every
scene is known (we drew it), so a programmatic QA reviewer can relabel the recorded images through
the same :mod:`labeling` functions the review page calls.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np

import labeling
from labeling.queue import iou
from models import registry
from models.golden import GoldenSet, load_golden, write_manifest
from station.app import Station
from station.config import StationConfig, parse_config
from station.store.db import open_db
from tests.fixtures_floor import trigger_parts, wait_for
from tests.model_factory import DET_NAMES, draw_scene
from tests.station_configs import store_section
from tests.web.helpers import add_users

SIZE = 64
Truth = list[tuple[str, tuple[float, float, float, float]]]


def _scene(rng: np.random.Generator, empty: bool) -> tuple[np.ndarray, Truth]:
    img, shapes = draw_scene(rng, (SIZE, SIZE), 0 if empty else int(rng.integers(1, 4)), max(6, SIZE // 8), SIZE // 3)
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return gray, [(DET_NAMES[s.cls], s.box) for s in shapes]


def pixel_key(img: np.ndarray) -> str:
    """Identity of an image's pixels (a recorded PNG decodes to the same key)."""
    return hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest()


def write_scenes(folder: Path, n: int, seed: int, empty_every: int = 3) -> dict[str, Truth]:
    """``n`` scene PNGs (every ``empty_every``-th without a defect) in ``folder``; returns {pixel key: truth}."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    truth: dict[str, Truth] = {}
    for i in range(n):
        img, t = _scene(rng, empty=i % empty_every == 0)
        cv2.imwrite(str(folder / f"scene_{i:04d}.png"), img)
        truth[pixel_key(img)] = t
    return truth


def write_golden(root: Path, n: int, seed: int) -> GoldenSet:
    """A frozen golden set of ``n`` scenes (about a third good) with YOLO labels."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img, t = _scene(rng, empty=i % 3 == 0)
        stem = f"g{i:04d}"
        cv2.imwrite(str(root / "images" / f"{stem}.png"), img)
        lines = [
            f"{DET_NAMES.index(c)} {(b[0] + b[2]) / 2 / SIZE:.6f} {(b[1] + b[3]) / 2 / SIZE:.6f} "
            f"{(b[2] - b[0]) / SIZE:.6f} {(b[3] - b[1]) / SIZE:.6f}"
            for c, b in t
        ]
        (root / "labels" / f"{stem}.txt").write_text("".join(f"{ln}\n" for ln in lines))
    write_manifest(root, DET_NAMES, {"generator": "tests/fixtures_models_web.py", "seed": seed, "n": n})
    return load_golden(root)


def line_config(tmp: Path, model: Path, scenes: Path, **web: Any) -> StationConfig:
    """A software-triggered line replaying ``scenes`` through ``model``; every image kept (PNG)."""
    return parse_config(
        {
            "name": "models-line",
            "cameras": [{"type": "folder", "id": "cam0", "path": str(scenes), "loop": True, "grayscale": True}],
            "trigger": {"type": "software"},
            "inspector": {"type": "onnx", "model": str(model), "keepalive_s": 0, "intra_op_threads": 1},
            "reject": {"travel_ms": 3000, "safety_margin_ms": 200, "pulse_ms": 10},
            "store": store_section(tmp / "data", keep_pass_every=1, image_format="png"),
            "web": {"port": 0, **web},
        }
    )


class ModelsLine:
    """A running station on a line of ``n_scenes`` scenes (test users added), the scene truth and a golden set.

    ``golden`` is (folder name under the station's ``golden/``, images, seed). Stop it with ``station.stop()``.
    """

    def __init__(self, tmp: Path, model: Path, n_scenes: int, seed: int, *, golden: tuple[str, int, int]):
        self.tmp = tmp
        scenes = tmp / "scenes"
        self.truth = write_scenes(scenes, n_scenes, seed=seed)
        self.cfg = line_config(tmp, model, scenes)
        self.station = Station(self.cfg)
        add_users(self.cfg.store.db_path)
        self.station.start()
        self.data = Path(self.cfg.store.db_path).parent
        folder, n_golden, golden_seed = golden
        self.golden: GoldenSet = write_golden(self.data / "golden" / folder, n_golden, seed=golden_seed)

    def db(self) -> Any:
        return open_db(self.cfg.store.db_path, migrate=False)

    def audit(self, action_prefix: str) -> list[tuple[str, str, str | None]]:
        db = self.db()
        try:
            return [
                tuple(r)
                for r in db.execute(
                    "SELECT user, action, reason FROM audit WHERE action LIKE ? ORDER BY id", [action_prefix + "%"]
                )
            ]
        finally:
            db.close()

    def register(self, path: Path, by: str) -> str:
        """What `models register FILE` does (a model trained elsewhere)."""
        db = self.db()
        try:
            return registry.register(db, path, store_dir=self.data / "models", trained_by=by).sha256
        finally:
            db.close()


def run_parts(st: Station, n: int) -> None:
    """Trigger ``n`` parts one at a time (each waits for its verdict), then wait until all are recorded."""
    trigger_parts(st, n)
    wait_for(
        lambda: (lambda c: c.records_written + c.records_dropped >= c.verdicts)(st.counters.snapshot()), 20, "records"
    )


def review_from_truth(db: Any, user: str, image_id: int, truth: Truth, classes: tuple[str, ...]) -> str:
    """Do what a QA reviewer who sees ``truth`` does, with the review page's functions; returns what was done.

    A model label matching a true defect (same class, IoU >= 0.5) is confirmed, other model labels
    are deleted (false positives), missed defects are added; an image without defect is marked good.
    """
    if not truth:
        labeling.mark_image_good(db, user, image_id, reason="no defect")
        return "good"
    current = labeling.current_labels(db, image_id)
    used: set[int] = set()
    keep: list[int] = []
    for lab in current:
        j = next(
            (k for k, (c, b) in enumerate(truth) if k not in used and c == lab.class_name and iou(lab.box, b) >= 0.5),
            None,
        )
        if j is None:
            labeling.delete_label(db, user, image_id, lab.id, reason="false positive")
        else:
            used.add(j)
            keep.append(lab.id)
    if keep:
        labeling.confirm(db, user, image_id, keep)
    for k, (c, b) in enumerate(truth):
        if k not in used:
            labeling.add_label(db, user, image_id, b, c, classes=classes, reason="missed defect")
    return "labeled"


def review_recorded_images(st: Station, truth: dict[str, Truth], user: str = "qa") -> int:
    """Review every recorded image from the scene truth; returns how many were reviewed."""
    db = open_db(st.cfg.store.db_path, migrate=False)
    try:
        rows = db.execute("SELECT id, sha256, format FROM images WHERE deleted_at IS NULL ORDER BY id").fetchall()
        for image_id, sha, fmt in rows:
            img = cv2.imread(str(st.images.open_path(sha, fmt)), cv2.IMREAD_UNCHANGED)
            assert img is not None
            review_from_truth(db, user, int(image_id), truth[pixel_key(img)], DET_NAMES)
        return len(rows)
    finally:
        db.close()


def snapshot(st: Station, name: str, user: str = "qa") -> int:
    """Freeze the reviewed images as a dataset snapshot (model class order); returns its id."""
    db = open_db(st.cfg.store.db_path, migrate=False)
    try:
        return labeling.create_snapshot(db, user, name=name, class_names=list(DET_NAMES)).id
    finally:
        db.close()
