"""The shipped default model: its recipe, and the script that reproduces it (``models build-default``).

The default model is a YOLOv8n detector (scratch, spot, missing) trained from scratch (no
pretrained weights: nothing is downloaded) on frames of the synthetic line, then tested through the
station's production path on parts it never saw (another seed and another part-id range).

Why these numbers (2-core CPU, a training budget of about an hour; all measured on this machine):

- Frames are 1280x800; the model runs on the whole frame letterboxed to 416x640, i.e. at half
  resolution, where a 2-4 px scratch is still 1-2 px wide and clearly visible (at 320 it would be
  under a pixel). The export is 416x640 rather than 640x640: the same scale, no wasted padding,
  about a third less inference time.
- Training images are 160x160 windows cut from the frames at that same half scale (``TrainView``),
  75 % of them around a defect, the rest anywhere on the part and the belt. A step on them costs
  about a tenth of a step on a 640x640 letterboxed frame, and almost every image carries a defect.
  Measured: 384x384 windows around the part (or 256, no focus) reached mAP50 0.1-0.25 in 12-16
  epochs; 160 windows with focus reached 0.59 (val) / 0.81 (full frames) in 12 epochs, 9 minutes.
  The model is fully convolutional and sees the same pixel scale on whole frames at inference.
- Boxes are at least 32 frame px (``MIN_BOX_PX``): Ultralytics' assigner learns only from grid
  points inside a box; a thin scratch's box may contain none.
- No mosaic (it breaks the fixed layout the ``missing`` class depends on), ``nbs`` = batch (one
  optimizer step per batch; Ultralytics' default accumulates to 64 images, too few steps for a
  short run), AdamW lr 0.003.
- Harmless ink marks (10 % of parts) appear unlabelled in training, so the model learns to leave
  them alone.
- 80 epochs: on the card's 300 unseen test parts at the default rules, 20 epochs gave 4.7 %
  escapes, 5.9 % false rejects and scratch recall 0.36 (AP50 0.77); 40 epochs 0 %, 1.3 % and 0.87
  (AP50 0.97); 80 epochs 0 %, 0 % and 0.94 (AP50 0.98), for 60 minutes of training. On 1,000
  other unseen parts, 40 epochs still let 0.8 % of defective parts through, all of them short
  scratches scored 0.1-0.3: more training was the lever that raised their scores (a lower scratch
  threshold could not meet the escape and false-reject limits together; models/README.md).
- Then a second stage (``FinetuneStage``): 40 epochs from those weights on 1,800 fresh windows
  (another line seed) at lr 0.001, no warm-up, for 32 minutes more. On those 1,000 parts scratch
  recall went 0.89 -> 0.95 and escapes 0.4 % -> 0 %, but good parts' false alarms at 0.31-0.46
  raised the false rejects at the generic 0.3 band to 3.1 %; per-class bands chosen on a 600-part
  development set (``station.config.default_model_rules``, the rules it ships with: the card's
  test runs at them) give 0.2 % escapes and 0.6 % false rejects there (models/README.md).
- The ``pcb`` product (``RECIPES["pcb"]``) uses the same two stages on its own frames, then two
  more on full-resolution windows (``FinetuneStage.input_hw``/``crop``), so it ships at 800x1280:
  at half scale one faint solder spot in ten was missed (models/README.md). Its rules: per-class
  bands, and the belt around the board not inspected (:func:`belt_zones`: its seams were false
  "scratches" on 5-7 % of good boards).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from station import serialize
from station.config import RulesConfig, default_model_rules
from station.config.camera import Product, SyntheticCameraConfig
from station.config.inspection import OnnxInspectorConfig

from . import DEFAULT_DIR
from .dataset import GOLDEN_START, NAMES, make_golden_set
from .evaluate import evaluate
from .golden import sha256_file
from .jobs import JobRunner, JobSpec, JobState, exported_onnx
from .template_check import TemplateCheckRecipe, build_template_check, read_card

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneStage:
    """A later training stage: the previous stage's weights trained on fresh parts (another line seed) at a lower
    learning rate, without warm-up; the rest of the first stage's settings unchanged, except the view when
    ``input_hw`` / ``crop`` are given (e.g. full-resolution windows; the model is then exported at ``input_hw``)."""

    epochs: int = 40
    train_seed: int = 2025
    lr0: float = 0.001
    input_hw: tuple[int, int] | None = None  # None: the first stage's
    crop: int | None = None  # None: the first stage's


@dataclass(frozen=True)
class DefaultRecipe:
    """Every parameter of the shipped default model (written to its card)."""

    arch: str = "yolov8n.yaml"
    product: Product = "machined"
    train_seed: int = 2024  # dataset seed (line seed of the training parts)
    n_train: int = 1800
    n_val: int = 100
    defect_rate: float = 0.8
    harmless_mark_rate: float = 0.1
    input_hw: tuple[int, int] = (416, 640)  # export size (h, w): 1280x800 frames at half scale
    crop: int = 160
    focus: float = 0.75
    jitter: float = 0.9
    epochs: int = 80
    batch: int = 16
    seed: int = 0  # training seed (weights init, augmentation order)
    hyp: Mapping[str, Any] = field(
        default_factory=lambda: {
            "cache": "ram",
            "nbs": 16,
            "optimizer": "AdamW",
            "lr0": 0.003,
            "lrf": 0.1,
            "warmup_epochs": 1,
            "close_mosaic": 0,
            "mosaic": 0.0,
            "scale": 0.2,
            "translate": 0.1,
            "degrees": 0.0,
            "fliplr": 0.5,
            "flipud": 0.5,
            "hsv_h": 0.0,
            "hsv_s": 0.0,
            "hsv_v": 0.3,
        }
    )
    test_seed: int = 777  # unseen test parts: another line seed and another part-id range
    n_test: int = 300
    test_defect_rate: float = 0.5
    test_mark_rate: float = 0.1
    nice: int = 0  # build-default runs alone; a job started from the station UI runs niced
    finetune: tuple[FinetuneStage, ...] = ()  # the stages after the first, each from the one before it
    rules: Mapping[str, Any] | None = None  # the shipped rules (a RulesConfig dict) the card's test runs at
    template_check: TemplateCheckRecipe | None = None  # a second look after the model (models/template_check.py)

    def shipped_rules(self) -> RulesConfig:
        """The rules the product's model ships with (``rules``; None: the generic :class:`RulesConfig`)."""
        return RulesConfig.model_validate(dict(self.rules)) if self.rules else RulesConfig()

    def shipped_inspector(self, folder: Path) -> OnnxInspectorConfig:
        """The inspector settings the model ships with, its template check's files in ``folder``."""
        check = self.template_check.config(folder) if self.template_check else None
        return OnnxInspectorConfig(template_check=check)

    def camera(self) -> SyntheticCameraConfig:
        """The synthetic camera of the training parts."""
        return SyntheticCameraConfig(
            product=self.product, defect_rate=self.defect_rate, harmless_mark_rate=self.harmless_mark_rate
        )

    def test_camera(self) -> SyntheticCameraConfig:
        """The synthetic camera of the unseen test parts."""
        return SyntheticCameraConfig(
            product=self.product, defect_rate=self.test_defect_rate, harmless_mark_rate=self.test_mark_rate
        )

    def job_specs(self, work: Path) -> list[JobSpec]:
        """The training jobs that make the model, in order; the last one exports ``work/model.onnx``.

        Stage 1 trains the architecture from its yaml; each :class:`FinetuneStage` then starts from the stage
        before it (``work/stage<k>.pt``, next to its export).
        """
        n = 1 + len(self.finetune)
        specs = [self._spec(work / ("model.onnx" if n == 1 else "stage1.onnx"))]
        for k, ft in enumerate(self.finetune, start=2):
            prev = specs[-1]
            hw, crop = ft.input_hw or self.input_hw, ft.crop or self.crop
            view = {**dict((prev.synthetic or {})["view"]), "input_hw": list(hw), "crop": crop}
            specs.append(
                replace(
                    prev,
                    synthetic={**dict(prev.synthetic or {}), "seed": ft.train_seed, "view": view},
                    model=str(work / f"stage{k - 1}.pt"),
                    epochs=ft.epochs,
                    imgsz=crop,
                    hyp={**dict(self.hyp), "lr0": ft.lr0, "warmup_epochs": 0},
                    export_imgsz=hw,
                    export_path=str(work / ("model.onnx" if k == n else f"stage{k}.onnx")),
                    lineage={"recipe": "models.default_model.DefaultRecipe", "stage": k},
                )
            )
        return specs

    @property
    def deploy_hw(self) -> tuple[int, int]:
        """The input size (h, w) of the shipped model: the last stage's view."""
        last = self.finetune[-1].input_hw if self.finetune else None
        return last or self.input_hw  # a stage without its own view trains (and exports) at the first stage's

    def _spec(self, export_path: Path) -> JobSpec:
        return JobSpec(
            synthetic={
                "n_train": self.n_train,
                "n_val": self.n_val,
                "seed": self.train_seed,
                "camera": self.camera().model_dump(mode="json"),
                "view": {
                    "input_hw": list(self.input_hw),
                    "crop": self.crop,
                    "focus": self.focus,
                    "jitter": self.jitter,
                },
            },
            model=self.arch,
            epochs=self.epochs,
            imgsz=self.crop,
            batch=self.batch,
            seed=self.seed,
            hyp=dict(self.hyp),
            export_imgsz=self.input_hw,
            export_path=str(export_path),
            lineage={"recipe": "models.default_model.DefaultRecipe"},
            trained_by="models build-default",
            nice=self.nice,
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        d = asdict(self)
        d["hyp"] = dict(self.hyp)
        d["input_hw"] = list(self.input_hw)
        d["finetune"] = [{**asdict(ft), "input_hw": list(ft.input_hw) if ft.input_hw else None} for ft in self.finetune]
        d["template_check"] = self.template_check.as_dict() if self.template_check else None
        return d


def part_extent(camera: SyntheticCameraConfig) -> tuple[float, float, float, float]:
    """The widest the part can reach in the frame (x1, y1, x2, y2, frame px) under the camera's jitter and rotation:
    the corners of the part's mask placed by the renderer's own warp (``part_to_frame``) at the extremes."""
    import numpy as np

    from station.acquire.products import product_base
    from station.acquire.render import part_to_frame

    base = product_base(camera.product, camera.width, camera.height)
    ys, xs = np.nonzero(base.mask)
    corners = np.array([[x, y] for x in (xs.min() - 0.5, xs.max() + 0.5) for y in (ys.min() - 0.5, ys.max() + 0.5)])
    j = float(camera.jitter_px)
    placed = []
    for ang in np.linspace(-camera.rotation_deg, camera.rotation_deg, 41):
        M = part_to_frame(base.mask.shape, (camera.width, camera.height), float(ang), 0.0, 0.0)
        placed.append(corners @ M[:, :2].T + M[:, 2])
    xy = np.concatenate(placed)
    (x1, y1), (x2, y2) = xy.min(0) - j, xy.max(0) + j
    return float(x1), float(y1), float(x2), float(y2)


def belt_zones(camera: SyntheticCameraConfig) -> list[dict[str, float]]:
    """Ignore zones (RulesConfig ``ignore_zones``) covering the belt around the part: everything outside the
    widest the part reaches (:func:`part_extent`), whole frame pixels, so nothing on the part is ever ignored."""
    import math

    x1, y1, x2, y2 = part_extent(camera)
    w, h = float(camera.width), float(camera.height)
    left, top, right, bottom = float(math.floor(x1)), float(math.floor(y1)), float(math.ceil(x2)), float(math.ceil(y2))
    return [
        {"x1": 0.0, "y1": 0.0, "x2": left, "y2": h},
        {"x1": right, "y1": 0.0, "x2": w, "y2": h},
        {"x1": 0.0, "y1": 0.0, "x2": w, "y2": top},
        {"x1": 0.0, "y1": bottom, "x2": w, "y2": h},
    ]


_STAGE2 = FinetuneStage()
RECIPES: Mapping[Product, DefaultRecipe] = {
    # ships as models/default/, decided by the embedded default's rules
    "machined": DefaultRecipe(finetune=(_STAGE2,), rules=default_model_rules().model_dump(mode="json")),
    "pcb": DefaultRecipe(  # ships as models/pcb/, with deploy/config/synthetic-pcb.yaml's rules
        product="pcb",
        finetune=(
            replace(_STAGE2, train_seed=2026),
            # then at full resolution: the faint solder spots the half-scale model missed (models/README.md)
            FinetuneStage(epochs=15, train_seed=2027, lr0=0.001, input_hw=(800, 1280), crop=192),
            FinetuneStage(epochs=25, train_seed=2028, lr0=0.001, input_hw=(800, 1280), crop=192),
        ),
        rules={
            "default": {"reject_conf": 0.5, "uncertain_conf": 0.3},
            # bands chosen on a 600-board development set (line seed 555), checked on 1,000 others
            "classes": {
                "scratch": {"reject_conf": 0.55, "uncertain_conf": 0.55},
                "spot": {"reject_conf": 0.65, "uncertain_conf": 0.65},
            },
            "ignore_zones": belt_zones(SyntheticCameraConfig(product="pcb")),
        },
        # then the golden template's differences the model missed, ink marks told apart by a verifier
        template_check=TemplateCheckRecipe(),
    ),
}
"""The recipe of each product's shipped model (``models build-default --product``)."""


QUICK = DefaultRecipe(
    n_train=24, n_val=8, epochs=1, n_test=20, finetune=(FinetuneStage(epochs=1),)
)  # a smoke run of the whole script (minutes, a useless model)


def build_default(
    out_dir: Path = DEFAULT_DIR,
    work_dir: Path | None = None,
    recipe: DefaultRecipe = DefaultRecipe(),
    *,
    on_event: Callable[[JobState, Mapping[str, Any]], None] | None = None,
    command: str = "models build-default",
) -> dict[str, Any]:
    """Train, export, test and write the default model into ``out_dir`` (model.onnx, model.pt, model.json, and the
    recipe's template check: template.npz, verifier.onnx, template_check.json).

    Training runs as a job (subprocess) under ``work_dir/jobs`` (default ``data/build-default``); the
    unseen test set is frozen under ``work_dir/test-golden-*``. Returns the card (also written to
    ``model.json``).
    """
    work = _work(work_dir)
    runner = JobRunner(work / "jobs")
    specs = recipe.job_specs(work)
    for n, spec in enumerate(specs, 1):
        state = runner.start(spec, on_event)
        runner.wait(state.job_id)
        if state.status != "succeeded":
            raise RuntimeError(
                f"default model training (stage {n} of {len(specs)}) {state.status}: {state.error} "
                f"(log: {state.log_path})"
            )
    if recipe.template_check is not None:
        build_template_check(recipe.product, Path(out_dir), work / "template-check", recipe.template_check)
    return finish_default(state.job_dir, out_dir, work, recipe, command=command)


def finish_default(
    job_dir: Path,
    out_dir: Path = DEFAULT_DIR,
    work_dir: Path | None = None,
    recipe: DefaultRecipe = DefaultRecipe(),
    *,
    command: str = "models build-default",
) -> dict[str, Any]:
    """Test the model of a finished build job on unseen parts and write it with its card into ``out_dir``.

    ``models build-default --from-job JOB_DIR`` uses it to complete a build whose training finished
    (the job's ``spec.json`` must be the recipe's).
    """
    job_dir = Path(job_dir).resolve()
    out_dir = Path(out_dir)
    work = _work(work_dir)
    state = JobState.from_dict(json.loads((job_dir / "state.json").read_text()))
    if state.status != "succeeded" or not state.result:
        raise RuntimeError(f"job {job_dir} did not succeed ({state.status}: {state.error})")
    differs = recipe_differs(json.loads((job_dir / "spec.json").read_text()), recipe)
    if differs:
        raise RuntimeError(f"job {job_dir} was not made with this recipe (differs in: {', '.join(differs)})")
    result = state.result
    src_onnx = exported_onnx(job_dir, result)
    out_dir.mkdir(parents=True, exist_ok=True)
    test = card_test(src_onnx, work, recipe, out_dir)
    onnx_dst, pt_dst = out_dir / "model.onnx", out_dir / "model.pt"
    shutil.copyfile(src_onnx, onnx_dst)
    shutil.copyfile(src_onnx.with_suffix(".pt"), pt_dst)
    card: dict[str, Any] = {
        "file": "model.onnx",
        "weights": "model.pt",
        "sha256": sha256_file(onnx_dst),
        "size_bytes": onnx_dst.stat().st_size,
        "task": "detect",
        "classes": list(NAMES),
        "imgsz": list(recipe.deploy_hw),
        "arch": recipe.arch,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.finished_at or time.time())),
        "training": {
            "command": command,
            "recipe": recipe.as_dict(),
            "dataset_snapshot": (result.get("lineage") or {}).get("dataset_snapshot"),
            "parent_sha": (result.get("lineage") or {}).get("parent_sha"),  # the first stage's model, if fine-tuned
            "epochs_done": (result.get("train") or {}).get("epochs"),
            "train_seconds": (result.get("train") or {}).get("seconds"),
            "job_seconds": round((state.finished_at or 0.0) - state.started_at, 1),
            "ultralytics_val_on_crops": (result.get("train") or {}).get("metrics"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU (CPU training)",
            "versions": _versions(job_dir),
        },
        "test": test,
        "template_check": read_card(out_dir) if recipe.template_check else None,
    }
    (out_dir / "model.json").write_text(serialize.dumps(card, indent=1) + "\n")
    log.info("default model written to %s (sha256 %s)", out_dir, card["sha256"][:12])
    return card


def recipe_differs(spec: Mapping[str, Any], recipe: DefaultRecipe) -> list[str]:
    """What a finished job's ``spec.json`` sets otherwise than the recipe's last stage (empty: made by it)."""
    want = recipe.job_specs(Path("x"))[-1].as_dict()  # the last stage's job; its parent's folder may differ

    def camera_read(synthetic: Any) -> Any:  # as the camera reads it: a setting added since is at its default
        if not isinstance(synthetic, Mapping) or not isinstance(synthetic.get("camera"), Mapping):
            return synthetic
        return {
            **synthetic,
            "camera": SyntheticCameraConfig.model_validate(synthetic["camera"]).model_dump(mode="json"),
        }

    def same(k: str) -> bool:
        if k == "model" and recipe.finetune:  # the previous stage's weights, wherever they were kept
            return Path(str(spec.get(k))).suffix == ".pt"
        if k == "synthetic":
            return bool(camera_read(spec.get(k)) == camera_read(want.get(k)))
        return bool(spec.get(k) == want.get(k))

    return sorted(
        k for k in ("synthetic", "model", "epochs", "imgsz", "batch", "seed", "hyp", "export_imgsz") if not same(k)
    )


def card_test(onnx: Path, work: Path, recipe: DefaultRecipe, folder: Path) -> dict[str, Any]:
    """The card's ``test`` section: ``onnx`` on the recipe's unseen test parts (frozen under ``work``) through the
    production path at the rules and inspector settings the model ships with (its template check in ``folder``)."""
    golden = make_golden_set(
        work / f"test-golden-{recipe.test_seed}-{recipe.n_test}",
        recipe.n_test,
        recipe.test_seed,
        recipe.test_camera(),
        start_id=GOLDEN_START,
    )
    rules = recipe.shipped_rules()
    res = evaluate(onnx, golden, rules=rules, inspector_cfg=recipe.shipped_inspector(folder))
    print(res.table(), flush=True)
    return {
        "what": "unseen synthetic parts (other seed, part ids from 30,000,000) as full 1280x800 frames through the "
        "station's production path (OnnxInspector + Decider) at the rules the model ships with (`rules`)",
        "golden_id": golden.golden_id,
        "seed": recipe.test_seed,
        "n": recipe.n_test,
        "camera": recipe.test_camera().model_dump(mode="json"),
        "metrics": res.summary(),
        "rules": rules.model_dump(mode="json"),
        "template_check": recipe.template_check is not None,
    }


def retest_default(
    out_dir: Path, work_dir: Path | None = None, recipe: DefaultRecipe = DefaultRecipe()
) -> dict[str, Any]:
    """Test a shipped model again at its recipe's rules as they are now (``models build-default --retest``).

    For a change of the shipped rules only: the model file is the same (its sha256 is checked against the
    card), the card's ``test`` section and the recipe's ``rules`` are rewritten, the rest of the card is kept.
    """
    out_dir = Path(out_dir)
    card = json.loads((out_dir / "model.json").read_text())
    onnx = out_dir / "model.onnx"
    if sha256_file(onnx) != card["sha256"]:
        raise RuntimeError(f"{onnx} is not the model its card describes (sha256 differs): rebuild it")
    card["test"] = card_test(onnx, _work(work_dir), recipe, out_dir)
    card["training"]["recipe"]["rules"] = recipe.as_dict()["rules"]
    card["training"]["recipe"]["template_check"] = recipe.as_dict()["template_check"]
    card["template_check"] = read_card(out_dir) if recipe.template_check else None
    (out_dir / "model.json").write_text(serialize.dumps(card, indent=1) + "\n")
    log.info("card of %s re-tested at the shipped rules", out_dir)
    return card


def rebuild_template_check(
    out_dir: Path,
    work_dir: Path | None = None,
    recipe: DefaultRecipe = DefaultRecipe(),
    *,
    on_event: Callable[[JobState, Mapping[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Rebuild the recipe's template check beside the shipped model in ``out_dir``, then test the two together
    (``models build-default --check-only``): the detector is not retrained."""
    if recipe.template_check is None:
        raise ValueError(f"the {recipe.product} recipe has no template check (models.default_model.RECIPES)")
    build_template_check(
        recipe.product, Path(out_dir), _work(work_dir) / "template-check", recipe.template_check, on_event=on_event
    )
    return retest_default(out_dir, work_dir, recipe)


def _work(work_dir: Path | None) -> Path:
    """The build's working folder (dataset, jobs, test set): ``work_dir`` or ``data/build-default``."""
    return Path(work_dir or Path("data") / "build-default").resolve()


def _versions(job_dir: Path) -> dict[str, str]:
    """Ultralytics and torch versions the worker logged (no torch import here)."""
    import re

    text = (job_dir / "job.log").read_text(errors="replace") if (job_dir / "job.log").exists() else ""
    m = re.search(r"Ultralytics ([0-9][^ ]*) .*?torch-([0-9][^ ]*)", text)
    return {"ultralytics": m.group(1), "torch": m.group(2)} if m else {}
