"""The part renderer and the synthetic camera, on real rendered frames."""

from __future__ import annotations

import time

import numpy as np
import pytest
from pydantic import ValidationError

from station.acquire.base import CAMERAS, CameraDriver, CameraError
from station.acquire.products import product_base
from station.acquire.render import TruthDefect, _plan_marks, part_rng, render_part
from station.acquire.synthetic import SyntheticCamera, iter_parts
from station.config import SyntheticCameraConfig
from station.config.camera import Product
from station.contracts import Trigger

PRODUCTS: tuple[Product, ...] = ("machined", "pcb")


def _trigger(part_id: int) -> Trigger:
    return Trigger(part_id=part_id, seq=part_id, t_trigger_ns=time.monotonic_ns())


def _open(**kw: object) -> SyntheticCamera:
    cam = SyntheticCamera(SyntheticCameraConfig(**kw))  # type: ignore[arg-type]
    cam.open()
    return cam


@pytest.mark.parametrize("product", PRODUCTS)
def test_same_seed_and_part_id_give_the_same_part_in_any_order(product: Product) -> None:
    cam = _open(product=product, seed=123, defect_rate=0.5)
    first = cam.grab(_trigger(7), 1.0)
    for pid in (3, 9, 1):
        cam.grab(_trigger(pid), 1.0)
    again = cam.grab(_trigger(7), 1.0)
    assert np.array_equal(first.image, again.image)
    assert first.meta["truth"] == again.meta["truth"]
    other_cam = _open(product=product, seed=123, defect_rate=0.5)
    assert np.array_equal(other_cam.grab(_trigger(7), 1.0).image, first.image)
    assert not np.array_equal(cam.grab(_trigger(8), 1.0).image, first.image)
    other_seed = _open(product=product, seed=124, defect_rate=0.5)
    assert not np.array_equal(other_seed.grab(_trigger(7), 1.0).image, first.image)


def test_iter_parts_gives_the_cameras_parts() -> None:
    cfg = SyntheticCameraConfig(seed=5, defect_rate=0.5)
    cam = SyntheticCamera(cfg)
    cam.open()
    parts = list(iter_parts(cfg, 40, 3))
    assert [pid for pid, _ in parts] == [40, 41, 42]
    for pid, part in parts:
        frame = cam.grab(_trigger(pid), 1.0)
        assert np.array_equal(frame.image, part.image)
        assert frame.meta["truth"] == tuple(t.as_dict() for t in part.truth)
        assert frame.meta["defective"] == part.defective


@pytest.mark.parametrize("product", PRODUCTS)
def test_frame_follows_the_contract(product: Product) -> None:
    cam = _open(product=product, id="top", seed=1, defect_rate=1.0)
    assert isinstance(cam, CameraDriver)
    t0 = time.monotonic_ns()
    frame = cam.grab(_trigger(11), 1.0)
    t1 = time.monotonic_ns()
    assert frame.part_id == 11 and frame.camera_id == "top"
    assert frame.image.shape == (800, 1280) and frame.image.dtype == np.uint8
    assert t0 <= frame.t_exposure_ns <= t1
    assert frame.meta["product"] == product
    assert frame.meta["defective"] is True and 1 <= len(frame.meta["truth"]) <= 2
    for t in frame.meta["truth"]:
        assert set(t) == {"class_name", "box_xyxy", "area_px"}
        assert t["class_name"] in ("scratch", "spot", "missing")
    assert cam.health()["state"] == "ok"
    cam.close()
    cam.close()
    assert cam.health()["state"] == "warning"


def test_grab_before_open_is_a_camera_error() -> None:
    cam = SyntheticCamera(SyntheticCameraConfig(seed=1))
    with pytest.raises(CameraError, match="before open"):
        cam.grab(_trigger(1), 1.0)


def test_registry_builds_the_synthetic_camera() -> None:
    cam = CAMERAS.create(SyntheticCameraConfig(seed=2))
    assert isinstance(cam, SyntheticCamera)


@pytest.mark.parametrize("product", PRODUCTS)
def test_truth_boxes_lie_in_the_frame_and_cover_every_drawn_pixel(product: Product) -> None:
    cfg = SyntheticCameraConfig(product=product, defect_rate=1.0, harmless_mark_rate=1.0, seed=77)
    H, W = cfg.height, cfg.width
    for pid in range(12):
        dirty = render_part(part_rng(77, pid), cfg)
        clean = render_part(part_rng(77, pid), cfg, draw_defects=False)
        assert dirty.truth == clean.truth and dirty.marks == clean.marks
        assert dirty.pose == clean.pose
        changed = np.abs(dirty.image.astype(np.int16) - clean.image.astype(np.int16)) > 2
        assert changed.any(), f"part {pid}: defects drew nothing"
        inside = np.zeros((H, W), bool)
        for t in dirty.truth + dirty.marks:
            x1, y1, x2, y2 = t.box_xyxy
            assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H, t
            assert t.area_px > 0
            box = (slice(max(int(y1) - 1, 0), int(np.ceil(y2)) + 1), slice(max(int(x1) - 1, 0), int(np.ceil(x2)) + 1))
            # the box holds a real share of the pixels the defect changed
            assert changed[box].sum() >= 0.3 * t.area_px, (pid, t, int(changed[box].sum()))
            inside[box] = True
        outside = changed & ~inside
        assert not outside.any(), f"part {pid}: {int(outside.sum())} changed pixels outside every truth box"


@pytest.mark.parametrize("product", PRODUCTS)
def test_defect_sizes_follow_the_spec(product: Product) -> None:
    cfg = SyntheticCameraConfig(product=product, defect_rate=1.0, seed=3)
    seen: dict[str, list[TruthDefect]] = {"scratch": [], "spot": [], "missing": []}
    for _, part in iter_parts(cfg, 0, 60):
        assert 1 <= len(part.truth) <= 2
        for t in part.truth:
            seen[t.class_name].append(t)
    assert all(seen.values()), {k: len(v) for k, v in seen.items()}
    for t in seen["scratch"]:
        x1, y1, x2, y2 = t.box_xyxy
        # a 30-200 px line, a few px wide, plus antialiasing: its box diagonal
        assert 25 <= np.hypot(x2 - x1, y2 - y1) <= 230, t
    for t in seen["spot"]:
        x1, y1, x2, y2 = t.box_xyxy
        assert 6 <= max(x2 - x1, y2 - y1) <= 52, t  # 8-40 px blob plus its soft edge
    for t in seen["missing"]:
        assert t.area_px >= 100, t


def test_defect_rate_and_classes_follow_the_config() -> None:
    none = [p for _, p in iter_parts(SyntheticCameraConfig(defect_rate=0.0, seed=9), 0, 40)]
    assert not any(p.defective for p in none)
    half = [p for _, p in iter_parts(SyntheticCameraConfig(defect_rate=0.5, seed=9), 0, 200)]
    rate = sum(p.defective for p in half) / len(half)
    assert 0.38 <= rate <= 0.62, rate
    only = [p for _, p in iter_parts(SyntheticCameraConfig(defect_rate=1.0, defect_classes=["scratch"], seed=9), 0, 30)]
    assert {t.class_name for p in only for t in p.truth} == {"scratch"}


@pytest.mark.parametrize("product", PRODUCTS)
def test_defects_on_features_centres_surface_defects_on_bright_fixed_features(product: Product) -> None:
    base = product_base(product, 1280, 800)
    bright = {(int(x), int(y)) for x, y in base.bright}

    def centres(share: float) -> list[tuple[int, int]]:
        cfg = SyntheticCameraConfig(
            product=product, defect_rate=1.0, defect_classes=["scratch", "spot"], defects_on_features=share, seed=3
        )
        marks = [m for pid in range(60) for m in _plan_marks(part_rng(3, pid), cfg, base)]
        return [(int(m.params[0]), int(m.params[1])) for m in marks if m.kind in ("scratch", "spot")]

    on = centres(1.0)
    if product == "machined":  # the flange has no feature brighter than its surface: the setting changes nothing
        assert not bright and on == centres(0.0)
        return
    assert len(on) >= 60 and all(c in bright for c in on)
    assert not any(f.x0 - 4 <= x <= f.x1 + 4 and f.y0 - 4 <= y <= f.y1 + 4 for x, y in on for f in base.features)
    anywhere = centres(0.0)
    assert sum(c in bright for c in anywhere) < len(anywhere) / 3  # bright features are a small part of the surface


def test_harmless_marks_are_not_defects() -> None:
    cam = _open(defect_rate=0.0, harmless_mark_rate=1.0, seed=4)
    for pid in range(10):
        f = cam.grab(_trigger(pid), 1.0)
        assert f.meta["defective"] is False and f.meta["truth"] == ()
        assert len(f.meta["marks"]) == 1 and f.meta["marks"][0]["class_name"] == "mark"
    plain = _open(defect_rate=0.0, seed=4)
    assert all(plain.grab(_trigger(pid), 1.0).meta["marks"] == () for pid in range(10))


def test_parts_vary_in_pose_and_lighting_within_the_config() -> None:
    cfg = SyntheticCameraConfig(defect_rate=0.0, jitter_px=12, rotation_deg=1.0, lighting_variation=0.06, seed=21)
    parts = [p for _, p in iter_parts(cfg, 0, 30)]
    dx = np.array([p.pose[0] for p in parts])
    ang = np.array([p.pose[2] for p in parts])
    gains = np.array([p.gain for p in parts])
    assert np.abs(dx).max() <= 12 and np.abs(ang).max() <= 1.0
    assert dx.std() > 3 and ang.std() > 0.2
    assert gains.min() >= 0.94 and gains.max() <= 1.06 and gains.std() > 0.01
    means = np.array([p.image.mean() for p in parts])
    assert means.std() > 0.5  # lighting really changes the frames
    still = [p for _, p in iter_parts(cfg.model_copy(update={"jitter_px": 0, "rotation_deg": 0.0}), 0, 3)]
    assert all(p.pose == (0.0, 0.0, 0.0) for p in still)


def test_other_frame_sizes_render_with_truth_in_the_frame() -> None:
    cfg = SyntheticCameraConfig(width=640, height=480, defect_rate=1.0, seed=2, product="pcb")
    for _, part in iter_parts(cfg, 0, 10):
        assert part.image.shape == (480, 640)
        for t in part.truth:
            x1, y1, x2, y2 = t.box_xyxy
            assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480


def test_config_refuses_bad_values_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="harmless_mark_rate"):
        SyntheticCameraConfig(harmless_mark_rate=1.5)
    with pytest.raises(ValidationError, match="defect_classes"):
        SyntheticCameraConfig(defect_classes=["crack"])  # type: ignore[list-item]  # the wrong value under test
    with pytest.raises(ValidationError, match="defect_classes"):
        SyntheticCameraConfig(defect_classes=[])
