"""The anomaly inspector: a model learned from good parts only, run by onnxruntime (no torch here).

The model (an ONNX file written by :mod:`models.anomaly`, ``task: anomaly`` in its metadata) maps
the preprocessed frame to a map at 1/8 of the working size: per 8x8 cell, the distance of its
features (pretrained CNN or filter bank, fixed when learned) to the nearest good part's at that
cell or a neighbour. Per frame:

1. grey, resize to the model's working size (``INTER_AREA``), divide by the frame's mean
   brightness (:func:`preprocess`, shared with the learner so both see the same input);
2. one onnxruntime run -> distance map; a 3x3 Gaussian, then divided by the threshold (set
   from the good parts' leave-one-out scores at a target false-reject rate, times
   ``threshold_scale`` and per-region scales): the map is in *threshold units*, 1.0 = at the
   threshold;
3. ``image_score`` = the map's maximum; ``anomaly_map`` = ``clip(128 x map)`` as uint8 (128 at
   the threshold) for the screens;
4. blobs of ``map >= blob_level`` (connected components on the small map) become detections of
   class ``anomaly``: box in frame pixels, area from the blob's cells, score ``1 - 0.5^peak``
   (0.5 at the threshold), so ``decide.py``, rules, ignore zones, the uncertain band and the
   reject path work unchanged.

With no model file the inspector learns: from ``learn_from`` at start (blocking, like the
reference inspector), or from the first ``learn_parts`` good parts of the line (kept as PNG files
next to the model, then learned in a ``python -m models.anomaly`` subprocess at low CPU priority;
the parts are FAILSAFE meanwhile). Learning takes seconds; the learner builds and exports the
graph with torch (the ``train`` extra); the station process never imports it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort

from station import serialize

from ..config.inspection import AnomalyInspectorConfig
from ..contracts import Detections, Frame
from .base import InspectorError, ModelLoadError
from .model_meta import ModelMeta, check_io, parse_model, read_model_bytes
from .preprocess import to_gray

log = logging.getLogger(__name__)

STRIDE = 8  # the map is 1/8 of the working size (one value per 8x8 cell)
NAMES: tuple[str, ...] = ("anomaly",)
_REPO_ROOT = Path(__file__).resolve().parents[2]


def work_size(frame_size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(w, h) of the working image: ``long_side`` on the frame's long side, both multiples of 8."""
    W, H = frame_size
    f = long_side / max(W, H)
    return max(8, int(round(W * f / 8)) * 8), max(8, int(round(H * f / 8)) * 8)


def gray(image: np.ndarray) -> np.ndarray:
    """Mono8 view of a Mono8 or BGR frame."""
    return to_gray(image, "anomaly inspector")


def preprocess(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The model's input for one frame: (h, w) float32, resized and brightness-normalised (mean 0.5)."""
    x = cv2.resize(gray(image), size, interpolation=cv2.INTER_AREA).astype(np.float32)
    return x * np.float32(0.5 / max(float(x.mean()), 5.0))


def smooth(prob: np.ndarray) -> np.ndarray:
    """The map as scored: a 3x3 Gaussian over the model's output (one noisy cell is not a defect)."""
    return cv2.GaussianBlur(prob.astype(np.float32), (3, 3), 0)


def image_score_of(prob: np.ndarray) -> float:
    """Image score of a raw map (before the threshold): the maximum of the smoothed map."""
    return float(smooth(prob).max())


def anomaly_meta(size: tuple[int, int], info: dict[str, Any]) -> dict[str, str]:
    """metadata_props of an anomaly model of working size ``size`` (w, h)."""
    w, h = size
    return {
        "task": "anomaly",
        "names": "{0: 'anomaly'}",
        "imgsz": f"[{h}, {w}]",
        "stride": str(STRIDE),
        "channels": "1",
        "batch": "1",
        "description": "anomaly model learned from good parts (station models.anomaly)",
        "anomaly": serialize.dumps(info, canonical=True),
    }


def read_anomaly_info(meta: ModelMeta) -> dict[str, Any]:
    """The ``anomaly`` metadata of a model (threshold, frame size, ...); ModelLoadError if absent or bad."""
    if meta.task != "anomaly":
        raise ModelLoadError(
            f"model {meta.path} is a {meta.task} model, not an anomaly model (use inspector type onnx for it)"
        )
    try:
        info: dict[str, Any] = json.loads(meta.raw["anomaly"])
        float(info["threshold"])
        W, H = (int(v) for v in info["frame_size"])
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelLoadError(
            f"model {meta.path}: anomaly metadata missing or corrupt ({exc}); relearn it with `python -m "
            "models.anomaly`"
        ) from None
    if float(info["threshold"]) <= 0 or W <= 0 or H <= 0:
        raise ModelLoadError(f"model {meta.path}: anomaly threshold/frame size must be positive; relearn it")
    return info


class _Model:
    """One loaded anomaly model: session, sizes, threshold map."""

    def __init__(self, path: Path, cfg: AnomalyInspectorConfig):
        data = read_model_bytes(path)
        self.meta = parse_model(path, data)
        self.info = read_anomaly_info(self.meta)
        from .runtime import base_session_options, choose_providers

        so = base_session_options(cfg.intra_op_threads)
        try:
            self.session = ort.InferenceSession(data, sess_options=so, providers=choose_providers(list(cfg.providers)))
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise ModelLoadError(f"model {path}: onnxruntime cannot load it: {exc}") from exc
        inputs = [(i.name, i.shape) for i in self.session.get_inputs()]
        outputs = [(o.name, o.shape) for o in self.session.get_outputs()]
        check_io(self.meta, inputs, outputs)
        self.input_name = inputs[0][0]
        h, w = self.meta.imgsz
        self.size = (w, h)
        self.map_size = (w // STRIDE, h // STRIDE)
        W, H = (int(v) for v in self.info["frame_size"])
        self.frame_size = (W, H)
        self.model_id = self.meta.model_id
        thr = float(self.info["threshold"]) * cfg.threshold_scale
        inv = np.full((self.map_size[1], self.map_size[0]), 1.0 / thr, np.float32)
        mw, mh = self.map_size
        for r in cfg.regions:  # later regions win where they overlap
            x0, x1 = sorted((int(math.floor(r.x1 * mw / W)), int(math.ceil(r.x2 * mw / W))))
            y0, y1 = sorted((int(math.floor(r.y1 * mh / H)), int(math.ceil(r.y2 * mh / H))))
            inv[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = 1.0 / (thr * r.threshold_scale)
        self.inv_thr = inv
        self.cell_px = (W / mw) * (H / mh)

    def run(self, x: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self.input_name: x[None, None]})[0]
        return np.asarray(out, np.float32).reshape(self.map_size[1], self.map_size[0])


class AnomalyInspector:
    """An :class:`~station.inspection.base.Inspector` for anomaly models (see the module docstring)."""

    names: tuple[str, ...] = NAMES

    def __init__(self, cfg: AnomalyInspectorConfig, **_: Any):
        self.cfg = cfg
        self.model_id = "anomaly:learning"
        self._model: _Model | None = None
        self._frames: list[np.ndarray] = []
        self._learner: threading.Thread | None = None
        self.learn_error: str | None = None
        self.skipped = 0
        path = Path(cfg.model)
        if path.exists():
            self._set(_Model(path, cfg))
        elif cfg.learn_from is not None:
            self._learn_subprocess(Path(cfg.learn_from))
            self._set(_Model(path, cfg))

    # ------------------------------------------------------------------ Inspector protocol

    @property
    def ready(self) -> bool:
        """True once a model is loaded."""
        return self._model is not None

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """(W, H) of the frames the running model was learned on."""
        return self._model.frame_size if self._model is not None else None

    @property
    def threshold(self) -> float:
        """The learned image-score threshold (before threshold_scale)."""
        if self._model is None:
            raise InspectorError("anomaly inspector: no model yet")
        return float(self._model.info["threshold"])

    def learn(self, frame: Frame) -> None:
        """Keep good frames of the line; after ``learn_parts`` of them, learn in a subprocess."""
        if self._model is not None or self._learner is not None:
            return
        if self.cfg.learn_only_good and frame.meta.get("defective") is True:
            self.skipped += 1
            return
        img = gray(frame.image)
        if self._frames and img.shape != self._frames[0].shape:
            raise InspectorError(
                f"learning frame is {img.shape[1]}x{img.shape[0]}, earlier ones "
                f"{self._frames[0].shape[1]}x{self._frames[0].shape[0]}"
            )
        self._frames.append(img.copy())
        if len(self._frames) >= self.cfg.learn_parts:
            frames, self._frames = self._frames, []
            self._learner = threading.Thread(
                target=self._learn_from_line, args=(frames,), name="anomaly-learn", daemon=True
            )
            self._learner.start()

    def inspect(self, frame: Frame) -> Detections:
        """Heat map, image score and blobs of one frame; boxes in frame pixels."""
        model = self._model
        if model is None:
            raise InspectorError(
                f"anomaly inspector is still learning ({len(self._frames)}/{self.cfg.learn_parts} good parts)"
            )
        t0 = time.perf_counter()
        img = gray(frame.image)
        H, W = img.shape
        if model.frame_size != (W, H):
            raise InspectorError(
                f"frame of camera {frame.camera_id} is {W}x{H} but the anomaly model {model.meta.path.name} was "
                "learned on "
                f"{model.frame_size[0]}x{model.frame_size[1]} frames (learn a model from this camera's images)"
            )
        x = preprocess(img, model.size)
        t1 = time.perf_counter()
        prob = model.run(x)
        t2 = time.perf_counter()
        m = cv2.multiply(smooth(prob), model.inv_thr)
        boxes, scores, areas = self._blobs(model, m)
        t3 = time.perf_counter()
        timings = {"preprocess": (t1 - t0) * 1e3, "infer": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3}
        heat = np.clip(m * 128.0, 0, 255).astype(np.uint8)
        return Detections(
            boxes,
            scores,
            np.zeros(len(scores), np.int32),
            NAMES,
            model.model_id,
            areas_px=areas,
            timings_ms=timings,
            anomaly_map=heat,
            image_score=float(m.max()),
        )

    def warmup(self) -> None:
        """One run on a grey frame (allocations, code paths)."""
        model = self._model
        if model is not None:
            model.run(np.full((model.size[1], model.size[0]), 0.5, np.float32))

    def close(self) -> None:
        """Drop the onnxruntime session (the inspector is not ready afterwards)."""
        self._model = None

    # ------------------------------------------------------------------ internals

    def _set(self, model: _Model) -> None:
        self._model = model
        self.model_id = model.model_id
        log.info(
            "anomaly model %s: frames %dx%d, working size %dx%d, threshold %.4f x %.2f",
            model.model_id,
            *model.frame_size,
            *model.size,
            float(model.info["threshold"]),
            self.cfg.threshold_scale,
        )

    def _blobs(self, model: _Model, m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (frame pixels), scores and areas of the map's blobs above ``blob_level``, strongest first."""
        cfg = self.cfg
        mask = (m >= cfg.blob_level).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        W, H = model.frame_size
        sx, sy = W / m.shape[1], H / m.shape[0]
        rows = []
        for i in range(1, n):
            x, y, w, h, cells = (int(v) for v in stats[i])
            area = cells * model.cell_px
            if area < cfg.min_blob_px:
                continue
            peak = float(m[y : y + h, x : x + w][labels[y : y + h, x : x + w] == i].max())
            rows.append((1.0 - 0.5**peak, (x * sx, y * sy, (x + w) * sx, (y + h) * sy), area))
        rows.sort(key=lambda r: -r[0])
        rows = rows[: cfg.max_blobs]
        boxes = np.asarray([r[1] for r in rows], np.float32).reshape(-1, 4)
        scores = np.asarray([r[0] for r in rows], np.float32)
        return boxes, scores, np.asarray([r[2] for r in rows], np.float32)

    def _learn_subprocess(self, folder: Path) -> None:
        """Run ``python -m models.anomaly folder model`` (nice 10); ModelLoadError with its message on failure."""
        cfg = self.cfg
        cmd = [
            sys.executable,
            "-m",
            "models.anomaly",
            str(folder),
            str(cfg.model),
            "--long-side",
            str(cfg.long_side),
            "--target-frr",
            str(cfg.target_frr),
            "--features",
            cfg.features,
        ]
        log.info("learning the anomaly model from %s: %s", folder, " ".join(cmd))
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(_REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
        )
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, preexec_fn=lambda: os.nice(10), check=False)
        if proc.returncode != 0:
            lines = [ln for ln in (proc.stdout + proc.stderr).strip().splitlines() if ln.strip()]
            last = next((ln for ln in reversed(lines) if ln.startswith("error:")), lines[-1] if lines else "no output")
            if "No module named 'torch'" in proc.stderr:
                last = (
                    "learning needs torch: install the train extra (pip install -e '.[train]') or learn on another "
                    "machine"
                )
            raise ModelLoadError(f"anomaly inspector: learning from {folder} failed: {last.removeprefix('error: ')}")

    def _learn_from_line(self, frames: list[np.ndarray]) -> None:
        folder = Path(self.cfg.model).with_suffix(".learn")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for old in folder.glob("*.png"):
                old.unlink()
            for i, img in enumerate(frames):
                cv2.imwrite(str(folder / f"good_{i:05d}.png"), img)
            self._learn_subprocess(folder)
            self._set(_Model(Path(self.cfg.model), self.cfg))
        except (ModelLoadError, OSError) as exc:
            self.learn_error = str(exc)
            log.error("%s", exc)
