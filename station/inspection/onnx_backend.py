"""The ``onnx`` inspector: an Ultralytics detect/segment/classify export run by onnxruntime or OpenVINO.

Load = read the file once, check it (:mod:`.model_meta`), load those bytes in the configured
runtime (:mod:`.runtime`: OpenVINO, or onnxruntime with its execution providers, CPU always last),
check input/output shapes against the task, warm up, and start the keep-alive thread. Loading
never touches another inspector: swapping a running model is :mod:`.swap`'s job.

Per part: letterbox (or classify center-crop) into a preallocated tensor, one ``session.run``,
decode + per-class NMS, undo the letterbox -> :class:`~station.contracts.Detections` in frame pixels
with ``timings_ms`` {preprocess, infer, postprocess}. Large frames may be tiled (:mod:`.tiling`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any

import numpy as np

from ..config.inspection import OnnxInspectorConfig
from ..contracts import Detections, Frame
from .base import InspectorError, ModelLoadError
from .model_meta import ModelMeta, check_io, parse_model, read_model_bytes
from .postprocess import (
    Candidates,
    SparseMask,
    boxes_to_frame,
    classify_probs,
    decode_end2end,
    decode_yolo,
    masks_to_frame,
    paste_masks,
)
from .preprocess import InputTensor, Letterbox, check_image, letterbox_params
from .runtime import CPU, ModelRuntime, open_runtime, session_options  # noqa: F401 (re-exported)
from .runtime import choose_providers as choose_providers  # re-exported
from .template_check import TemplateCheck
from .tiling import Tile, cluster_boxes, cut_flags, merge_tiled, needs_tiling, tile_grid

log = logging.getLogger(__name__)

WARMUP_RUNS = 3


class OnnxInspector:
    """Ultralytics ONNX model backend (detect, segment, classify); see the module docstring."""

    def __init__(self, cfg: OnnxInspectorConfig, **kwargs: Any):
        if kwargs:
            log.debug("onnx inspector ignores %s", ", ".join(kwargs))
        self.cfg = cfg
        path = cfg.model
        data = read_model_bytes(path)
        self.meta: ModelMeta = parse_model(path, data)
        if self.meta.task == "anomaly":
            raise ModelLoadError(
                f"model {path} is an anomaly model: run it with `inspector: {{type: anomaly, model: {path}}}`"
            )
        self.runtime: ModelRuntime = open_runtime(data, str(path), cfg)
        self.session = getattr(self.runtime, "session", None)  # the onnxruntime session, None under OpenVINO
        del data
        inputs, outputs = self.runtime.inputs, self.runtime.outputs
        check_io(self.meta, inputs, outputs)
        self.model_id: str = self.meta.model_id
        self.names: tuple[str, ...] = self.meta.names
        self.task = self.meta.task
        self.input_hw = self.meta.imgsz
        self.dynamic_batch = not isinstance(inputs[0][1][0], int)
        self._tensor = InputTensor(self.input_hw, self.meta.channels, batch=1)
        self._tile_tensor: InputTensor | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._keepalive: threading.Thread | None = None
        self._closed = False
        self._last_use = time.monotonic()
        self.keepalive_runs = 0
        self.parts = 0
        if cfg.tiling.enabled and self.task == "classify":
            log.warning("model %s is a classifier: tiling does not apply and is ignored", self.model_id)
        self.template_check: TemplateCheck | None = None
        if cfg.template_check is not None:
            if self.task != "detect":
                raise ModelLoadError(
                    f"model {path} is a {self.task} model: inspector.template_check adds boxes to a detect model's "
                    "boxes; remove template_check or use a detect model"
                )
            self.template_check = TemplateCheck(cfg.template_check, self.names, cfg)
        log.info(
            "model %s: %s, %d classes, input %s%s, runs on %s %s (asked %s %s)",
            self.model_id,
            self.task,
            len(self.names),
            list(inputs[0][1]),
            ", end-to-end" if self.meta.end2end else "",
            self.runtime.name,
            self.runtime.devices,
            cfg.runtime,
            list(cfg.providers),
        )
        self.warmup()
        if cfg.keepalive_s > 0:
            self._keepalive = threading.Thread(
                target=self._keepalive_loop, name=f"keepalive-{self.model_id}", daemon=True
            )
            self._keepalive.start()

    # ------------------------------------------------------------------ Inspector protocol

    @property
    def ready(self) -> bool:
        """True until :meth:`close`."""
        return not self._closed

    @property
    def providers(self) -> list[str]:
        """What runs the model: onnxruntime's execution providers in order, or ``openvino:CPU:<precision>``."""
        return self.runtime.devices

    def last_input(self) -> np.ndarray:
        """A copy of the model input (batch 1) that the last untiled :meth:`inspect` prepared (benches replay it)."""
        with self._lock:
            return self._tensor.view(1).copy()

    def learn(self, frame: Frame) -> None:
        """Trained models do not learn on the line."""

    def warmup(self) -> None:
        """A few full runs (preprocess, infer, postprocess) on a plain grey frame of the input size."""
        dummy = np.full(self.input_hw, 114, np.uint8)
        with self._lock:
            for _ in range(WARMUP_RUNS):
                self._inspect_locked(dummy)
            if self.template_check is not None:
                self.template_check.warmup()
            self._last_use = time.monotonic()

    def inspect(self, frame: Frame) -> Detections:
        """Detections on ``frame`` in its own pixels; raises :class:`InspectorError` on bad input or a failed run."""
        try:
            image = check_image(frame.image)
        except ValueError as e:
            raise InspectorError(f"camera {frame.camera_id} part {frame.part_id}: {e}") from e
        with self._lock:
            if self._closed:
                raise InspectorError(f"model {self.model_id} is closed")
            try:
                det = self._inspect_locked(image)
                return det if self.template_check is None else self.template_check.apply(frame, det)
            finally:
                self._last_use = time.monotonic()
                self.parts += 1

    def close(self) -> None:
        """Stop the keep-alive thread and release the session (waits for a part in progress)."""
        self._stop.set()
        if self._keepalive is not None and self._keepalive is not threading.current_thread():
            self._keepalive.join(timeout=10)
        with self._lock:
            self._closed = True
            if self.template_check is not None:
                self.template_check.close()
        log.info("model %s closed after %d parts", self.model_id, self.parts)

    # ------------------------------------------------------------------ internals

    def _run(self, tensor: np.ndarray) -> list[np.ndarray]:
        try:
            return self.runtime.run(tensor)
        except Exception as e:  # onnxruntime's pybind exceptions, OpenVINO's RuntimeError
            raise InspectorError(f"model {self.model_id}: inference failed: {e}") from e

    def _inspect_locked(self, image: np.ndarray) -> Detections:
        frame_hw = (int(image.shape[0]), int(image.shape[1]))
        tcfg = self.cfg.tiling
        if tcfg.enabled and self.task != "classify" and needs_tiling(frame_hw, self.input_hw, tcfg.min_frame_ratio):
            return self._inspect_tiled(image, frame_hw)
        t0 = time.perf_counter()
        if self.task == "classify":
            self._tensor.center_crop(image)
        else:
            lb = self._tensor.letterbox(image)
        t1 = time.perf_counter()
        outs = self._run(self._tensor.view(1))
        t2 = time.perf_counter()
        if self.task == "classify":
            det = self._classify(outs[0][0], frame_hw)
        else:
            cand, masks = self._decode(outs, 0, lb, frame_hw)
            det = self._detections(cand, masks, frame_hw)
        t3 = time.perf_counter()
        return dataclasses.replace(
            det, timings_ms={"preprocess": (t1 - t0) * 1e3, "infer": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3}
        )

    def _decode(
        self, outs: list[np.ndarray], b: int, lb: Letterbox, frame_hw: tuple[int, int]
    ) -> tuple[Candidates, list[SparseMask] | None]:
        cfg = self.cfg
        if self.meta.end2end:
            cand = decode_end2end(outs[0][b], cfg.conf, cfg.max_det)
        else:
            cand = decode_yolo(outs[0][b], len(self.names), cfg.conf, cfg.iou, cfg.max_det)
        boxes_to_frame(cand.boxes, lb, frame_hw)
        if self.task != "segment":
            return cand, None
        coefs = cand.coefs if cand.coefs is not None else np.zeros((0, outs[1].shape[1]), np.float32)
        masks = masks_to_frame(outs[1][b], coefs, cand.boxes, lb, self.input_hw, frame_hw)
        keep = [i for i, m in enumerate(masks) if m.mask.any()]  # as Ultralytics: no empty masks
        if len(keep) < len(masks):
            cand = cand.take(np.asarray(keep, np.int64))
            masks = [masks[i] for i in keep]
        return cand, masks

    def _detections(self, cand: Candidates, masks: list[SparseMask] | None, frame_hw: tuple[int, int]) -> Detections:
        full = areas = None
        if masks is not None:
            full = paste_masks(masks, frame_hw)
            areas = np.array([m.area for m in masks], np.float32)
        return Detections(
            boxes_xyxy=np.ascontiguousarray(cand.boxes, np.float32),
            scores=np.ascontiguousarray(cand.scores, np.float32),
            class_ids=np.ascontiguousarray(cand.class_ids, np.int32),
            names=self.names,
            model_id=self.model_id,
            masks=full,
            areas_px=areas,
        )

    def _classify(self, out: np.ndarray, frame_hw: tuple[int, int]) -> Detections:
        """One full-frame entry per class with its probability, most probable first (the Decider judges each)."""
        probs = classify_probs(out)
        order = np.argsort(-probs, kind="stable")
        h, w = frame_hw
        return Detections(
            boxes_xyxy=np.tile(np.array([[0, 0, w, h]], np.float32), (len(order), 1)),
            scores=np.ascontiguousarray(probs[order], np.float32),
            class_ids=order.astype(np.int32),
            names=self.names,
            model_id=self.model_id,
        )

    def _inspect_tiled(self, image: np.ndarray, frame_hw: tuple[int, int]) -> Detections:
        tcfg = self.cfg.tiling
        jobs: list[tuple[Tile | None, np.ndarray]] = [
            (t, image[t.y : t.y + t.h, t.x : t.x + t.w]) for t in tile_grid(frame_hw, self.input_hw, tcfg.overlap)
        ]
        if tcfg.include_full_frame:
            jobs.append((None, image))
        cap = min(tcfg.max_batch, len(jobs)) if self.dynamic_batch else 1
        if self._tile_tensor is None or self._tile_tensor.batch != cap:
            self._tile_tensor = InputTensor(self.input_hw, self.meta.channels, batch=cap)
        tt = self._tile_tensor
        t_pre = t_inf = t_post = 0.0
        cands: list[Candidates] = []
        cuts: list[np.ndarray] = []
        masks: list[SparseMask] = []
        for start in range(0, len(jobs), cap):
            chunk = jobs[start : start + cap]
            t0 = time.perf_counter()
            lbs = []
            for slot, (tile, img) in enumerate(chunk):
                if tile is None:
                    lbs.append(tt.letterbox(img, slot))
                else:
                    lb = letterbox_params(img.shape[:2], self.input_hw, scaleup=False)
                    tt.place(img, slot, lb.pad_x, lb.pad_y, lb.new_w, lb.new_h)
                    lbs.append(dataclasses.replace(lb, off_x=tile.x, off_y=tile.y))
            t1 = time.perf_counter()
            outs = self._run(tt.view(len(chunk)))
            t2 = time.perf_counter()
            for slot, (tile, _) in enumerate(chunk):
                cand, m = self._decode(outs, slot, lbs[slot], frame_hw)
                cands.append(cand)
                cuts.append(cut_flags(cand.boxes, tile, frame_hw) if tile is not None else np.zeros(len(cand), bool))
                if m is not None:
                    masks += m
            t3 = time.perf_counter()
            t_pre, t_inf, t_post = t_pre + t1 - t0, t_inf + t2 - t1, t_post + t3 - t2
        t0 = time.perf_counter()
        boxes = np.concatenate([c.boxes for c in cands])
        scores = np.concatenate([c.scores for c in cands])
        class_ids = np.concatenate([c.class_ids for c in cands])
        cut = np.concatenate(cuts)
        clusters = merge_tiled(boxes, scores, class_ids, cut, self.cfg.iou, tcfg.merge_ios, self.cfg.max_det)
        firsts = np.array([c[0] for c in clusters], np.int64)
        merged = Candidates(cluster_boxes(boxes, cut, clusters), scores[firsts], class_ids[firsts])
        merged_masks = [_union_mask(masks, c) for c in clusters] if self.task == "segment" else None
        det = self._detections(merged, merged_masks, frame_hw)
        t_post += time.perf_counter() - t0
        log.debug("tiled %s: %d runs, %d candidates -> %d", frame_hw, len(jobs), len(scores), len(clusters))
        return dataclasses.replace(
            det, timings_ms={"preprocess": t_pre * 1e3, "infer": t_inf * 1e3, "postprocess": t_post * 1e3}
        )

    def _keepalive_loop(self) -> None:
        period = self.cfg.keepalive_s
        while True:
            wait = max(0.01, self._last_use + period - time.monotonic())
            if self._stop.wait(wait):
                return
            if time.monotonic() - self._last_use < period:
                continue
            # Never alongside a real part: if one holds the lock, it is not idle anyway.
            if not self._lock.acquire(blocking=False):
                continue
            try:
                if self._closed:
                    return
                self._run(self._tensor.view(1))
                self.keepalive_runs += 1
            except InspectorError as e:
                log.warning("keep-alive run failed: %s", e)
            finally:
                self._last_use = time.monotonic()
                self._lock.release()


def _union_mask(masks: list[SparseMask], members: list[int]) -> SparseMask:
    """OR of the members' masks over the union of their windows."""
    if len(members) == 1:
        return masks[members[0]]
    ms = [masks[i] for i in members]
    x0 = min(m.x0 for m in ms)
    y0 = min(m.y0 for m in ms)
    x1 = max(m.x0 + m.mask.shape[1] for m in ms)
    y1 = max(m.y0 + m.mask.shape[0] for m in ms)
    out = np.zeros((y1 - y0, x1 - x0), bool)
    for m in ms:
        h, w = m.mask.shape
        out[m.y0 - y0 : m.y0 - y0 + h, m.x0 - x0 : m.x0 - x0 + w] |= m.mask
    return SparseMask(x0, y0, out)
