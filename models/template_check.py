"""A product's template check, built reproducibly (``models build-default --check-only``).

The check (:mod:`station.inspection.template_check`) is two files beside the product's model:

* ``template.npz``: the golden template, learned from good parts of the synthetic line (no defects, no marks);
* ``verifier.onnx``: a classify model that tells a defect from a harmless difference (the line's ink marks) on a
  crop around each difference the template finds. Its training crops are cut, with the station's own
  :func:`~station.inspection.template_check.blob_crop`, around the differences that template finds on other parts
  of the line, and labelled by the renderer's truth: ``defect`` when the difference touches a drawn defect, else
  ``harmless``. It is trained like any classify model (``models train``, the job runner) and exported to ONNX.

Everything is seeded: the same recipe gives the same template file and the same crops.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from station import serialize
from station.acquire.render import part_rng, render_part
from station.config.camera import SyntheticCameraConfig
from station.config.inspection import ReferenceInspectorConfig, TemplateCheckConfig
from station.contracts import Frame
from station.inspection.postprocess import box_iou
from station.inspection.reference import ReferenceInspector
from station.inspection.template_check import blob_crop

from .golden import sha256_file
from .jobs import JobRunner, JobSpec, JobState, exported_onnx

log = logging.getLogger(__name__)

TEMPLATE_START = 70_000_000  # part ids of the template's good parts (training parts start at 0, tests at 30,000,000)
VERIFIER_START = 80_000_000  # part ids of the verifier's parts


@dataclass(frozen=True)
class TemplateCheckRecipe:
    """Every parameter of a shipped template check (written to its card, ``template_check.json``)."""

    template_seed: int = 4141  # line seed of the good parts the template is learned from
    template_parts: int = 40
    reference: Mapping[str, Any] = field(default_factory=lambda: {"scale": 0.5, "score_scale": 1.4})
    verifier_seed: int = 3001  # line seed of the verifier's training parts (its val parts: seed + 1)
    n_train: int = 3000
    n_val: int = 300
    defect_rate: float = 0.5
    mark_rate: float = 0.5
    arch: str = "yolov8n-cls.yaml"
    imgsz: int = 64
    epochs: int = 30
    batch: int = 64
    hyp: Mapping[str, Any] = field(
        default_factory=lambda: {
            "fliplr": 0.5,
            "flipud": 0.5,
            "scale": 0.1,
            "degrees": 0.0,
            "hsv_h": 0.0,
            "hsv_s": 0.0,
            "hsv_v": 0.2,
            "auto_augment": None,
            "cache": "ram",
        }
    )
    check: Mapping[str, Any] = field(default_factory=dict)  # other TemplateCheckConfig fields

    def config(self, folder: Path) -> TemplateCheckConfig:
        """The line's ``inspector.template_check`` with the files in ``folder``."""
        return TemplateCheckConfig.model_validate(
            {
                **dict(self.check),
                "reference": {**dict(self.reference), "template_path": str(folder / "template.npz")},
                "verifier": str(folder / "verifier.onnx"),
            }
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {k: dict(v) if isinstance(v, Mapping) else v for k, v in asdict(self).items()}


def learn_template(camera: SyntheticCameraConfig, recipe: TemplateCheckRecipe, out: Path) -> ReferenceInspector:
    """Learn the template from ``recipe.template_parts`` good parts of ``camera``'s product and save it to ``out``."""
    good = camera.model_copy(update={"defect_rate": 0.0, "harmless_mark_rate": 0.0, "seed": recipe.template_seed})
    n = recipe.template_parts
    ref = ReferenceInspector(ReferenceInspectorConfig.model_validate({**dict(recipe.reference), "learn_parts": n}))
    for i in range(n):
        part = render_part(part_rng(recipe.template_seed, TEMPLATE_START + i), good)
        ref.learn(Frame(part_id=i, camera_id=camera.id, image=part.image, t_exposure_ns=0))
    ref.save(out)
    return ref


def verifier_crops(
    out: Path, check: TemplateCheckConfig, camera: SyntheticCameraConfig, n: int, seed: int, crop_px: int
) -> dict[str, int]:
    """Crops of the template's differences on ``n`` parts (line ``seed``) in ``out/defect`` and ``out/harmless``."""
    ref = ReferenceInspector(check.reference)
    cam = camera.model_copy(update={"seed": seed})
    counts = {"defect": 0, "harmless": 0}
    for cls in counts:
        (out / cls).mkdir(parents=True, exist_ok=True)
    for k in range(n):
        part = render_part(part_rng(seed, VERIFIER_START + k), cam)
        det = ref.inspect(Frame(part_id=k, camera_id=cam.id, image=part.image, t_exposure_ns=0))
        truth = np.array([d.box_xyxy for d in part.truth], np.float64).reshape(-1, 4)
        touches = np.asarray((box_iou(det.boxes_xyxy, truth) > 0).any(axis=1), bool)  # overlaps a drawn defect
        for j, box in enumerate(det.boxes_xyxy):
            cls = "defect" if touches[j] else "harmless"
            counts[cls] += 1
            crop = blob_crop(part.image, box, crop_px, check.crop_context, check.crop_min_px)
            cv2.imwrite(str(out / cls / f"{k:06d}_{j}.png"), crop)
    return counts


def build_template_check(
    product: str,
    out_dir: Path,
    work: Path,
    recipe: TemplateCheckRecipe,
    *,
    on_event: Callable[[JobState, Mapping[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Learn the template, cut the verifier's crops, train and export the verifier; write ``template.npz``,
    ``verifier.onnx`` and their card ``template_check.json`` into ``out_dir``. Returns the card."""
    out_dir.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    camera = SyntheticCameraConfig(product=product)  # type: ignore[arg-type]
    tpl = learn_template(camera, recipe, work / "template.npz")
    check = recipe.config(work)
    line = camera.model_copy(update={"defect_rate": recipe.defect_rate, "harmless_mark_rate": recipe.mark_rate})
    data = work / "verifier-data"
    shutil.rmtree(data, ignore_errors=True)
    counts = {
        "train": verifier_crops(data / "train", check, line, recipe.n_train, recipe.verifier_seed, recipe.imgsz),
        "val": verifier_crops(data / "val", check, line, recipe.n_val, recipe.verifier_seed + 1, recipe.imgsz),
    }
    log.info("verifier crops: %s", counts)
    spec = JobSpec(
        data_yaml=str(data),
        model=recipe.arch,
        epochs=recipe.epochs,
        imgsz=recipe.imgsz,
        batch=recipe.batch,
        seed=0,
        hyp=dict(recipe.hyp),
        export_path=str(work / "verifier.onnx"),
        lineage={"recipe": "models.template_check.TemplateCheckRecipe"},
        trained_by="models build-default --check-only",
        nice=0,
    )
    runner = JobRunner(work / "jobs")
    state = runner.wait(runner.start(spec, on_event).job_id)
    if state.status != "succeeded" or not state.result:
        raise RuntimeError(f"verifier training {state.status}: {state.error} (log: {state.log_path})")
    src = exported_onnx(state.job_dir, state.result)
    shutil.copyfile(work / "template.npz", out_dir / "template.npz")
    shutil.copyfile(src, out_dir / "verifier.onnx")
    train = state.result.get("train") or {}
    card = {
        "template": {"file": "template.npz", "sha256": sha256_file(out_dir / "template.npz"), "id": tpl.model_id},
        "verifier": {
            "file": "verifier.onnx",
            "sha256": sha256_file(out_dir / "verifier.onnx"),
            "crops": counts,
            "epochs_done": train.get("epochs"),
            "train_seconds": train.get("seconds"),
            "ultralytics_val": train.get("metrics"),
        },
        "recipe": recipe.as_dict(),
    }
    (out_dir / "template_check.json").write_text(serialize.dumps(card, indent=1) + "\n")
    return card


def read_card(folder: Path) -> dict[str, Any] | None:
    """The template check's card in ``folder`` (None when the folder has no template check)."""
    p = folder / "template_check.json"
    return json.loads(p.read_text()) if p.exists() else None
