"""The template check after a detect model (station/inspection/template_check.py) and how it is built
(models/template_check.py): the shipped pcb model's check on boards of the synthetic line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models import SHIPPED_DIRS
from models.default_model import RECIPES
from models.template_check import TemplateCheckRecipe
from station.acquire.render import RenderedPart, part_rng, render_part
from station.config import CalibrationConfig
from station.config.camera import SyntheticCameraConfig
from station.config.inspection import OnnxInspectorConfig, ReferenceInspectorConfig, TemplateCheckConfig
from station.contracts import Frame, Trigger, Verdict
from station.decide import Decider
from station.inspection.base import ModelLoadError
from station.inspection.onnx_backend import OnnxInspector
from station.inspection.template_check import blob_crop

PCB = SHIPPED_DIRS["pcb"]
RULES = RECIPES["pcb"].shipped_rules()
_RECIPE = RECIPES["pcb"].template_check
assert _RECIPE is not None
CHECK: TemplateCheckRecipe = _RECIPE


def test_blob_crop_centres_the_difference_with_its_context() -> None:
    img = np.zeros((200, 300), np.uint8)
    img[90:110, 140:160] = 255  # a 20 px square, centre (150, 100)
    crop = blob_crop(img, np.array([140.0, 90.0, 160.0, 110.0]), 64, 2.0, 16)  # 40 px of frame -> 64 px
    ys, xs = np.nonzero(crop > 127)
    assert crop.shape == (64, 64)
    assert abs(xs.mean() - 31.5) < 1 and abs(ys.mean() - 31.5) < 1
    assert 30 <= xs.max() - xs.min() + 1 <= 34  # 20 px x 64/40
    small = blob_crop(img, np.array([148.0, 98.0, 152.0, 102.0]), 64, 2.0, 64)  # at least min_px of frame
    assert 18 <= np.count_nonzero(small[32] > 127) <= 22  # the square at 1:1


def _decide(insp: OnnxInspector, part: RenderedPart, k: int) -> Verdict:
    frame = Frame(part_id=k, camera_id="cam0", image=part.image, t_exposure_ns=0)
    det = insp.inspect(frame)
    decider = Decider(RULES, CalibrationConfig(), "test")
    return decider.decide(Trigger(part_id=k, seq=k, t_trigger_ns=0, source="test"), [frame], [det], {})


def _verdict(insp: OnnxInspector, part: RenderedPart, k: int) -> str:
    return _decide(insp, part, k).outcome


def _inspector(check: TemplateCheckConfig | None) -> OnnxInspector:
    return OnnxInspector(OnnxInspectorConfig(model=PCB / "model.onnx", keepalive_s=0.0, template_check=check))


def test_the_shipped_check_catches_a_spot_the_pcb_model_misses_and_passes_the_ink_marks() -> None:
    check = CHECK.config(PCB)
    plain, checked = _inspector(None), _inspector(check)
    no_verifier = _inspector(check.model_copy(update={"verifier": None}))
    # board 384 of the development set (line seed 555): a bright solder spot beside a chip's outline that the model
    # scores under 0.06
    dev = SyntheticCameraConfig(product="pcb", defect_rate=0.5, seed=555)
    board = render_part(part_rng(555, 30_000_384), dev)
    assert [t.class_name for t in board.truth] == ["spot"]
    assert _verdict(plain, board, 1) == "PASS"
    v = _decide(checked, board, 1)
    assert v.outcome == "FAIL" and any("template check: conf" in r for r in v.reasons), v.reasons
    frame = Frame(part_id=1, camera_id="cam0", image=board.image, t_exposure_ns=0)
    det, own = checked.inspect(frame), plain.inspect(frame)
    assert "template_check" in det.timings_ms and det.align_shift_px is not None
    assert det.check_from == len(own) < len(det)  # the spot is a row added after the model's own
    assert np.array_equal(det.model_rows().scores, own.scores) and det.model_rows().check_from is None
    band = [RULES.for_class(n).reject_conf for n in det.names]
    assert any(det.scores[i] >= band[det.class_ids[i]] for i in range(len(own), len(det)))
    # good boards with a harmless ink mark: the template sees every mark; the verifier passes them
    marked = SyntheticCameraConfig(product="pcb", defect_rate=0.0, harmless_mark_rate=1.0, seed=4242)
    for k in range(6):
        part = render_part(part_rng(4242, k), marked)
        assert len(part.marks) == 1 and not part.truth
        assert _verdict(no_verifier, part, k) == "FAIL", k
        assert _verdict(checked, part, k) == _verdict(plain, part, k), k
    for insp in (plain, checked, no_verifier):
        insp.close()


def test_a_template_check_that_cannot_run_is_refused_when_the_model_loads(tmp_path: Path) -> None:
    check = CHECK.config(PCB)
    unlearned = check.model_copy(update={"reference": ReferenceInspectorConfig(template_path=tmp_path / "no.npz")})
    with pytest.raises(ModelLoadError, match="template_path"):
        _inspector(unlearned)
    with pytest.raises(ModelLoadError, match="must be a classify model"):  # a detect model as the verifier
        _inspector(check.model_copy(update={"verifier": PCB / "model.onnx"}))
    with pytest.raises(ModelLoadError, match="harmless_classes"):
        _inspector(check.model_copy(update={"harmless_classes": ["ink"]}))
    with pytest.raises(ModelLoadError, match="template_check"):  # after a classify model
        OnnxInspector(OnnxInspectorConfig(model=PCB / "verifier.onnx", keepalive_s=0.0, template_check=check))


def test_the_shipped_check_is_the_recipes_and_its_card_names_its_files() -> None:
    card = json.loads((PCB / "template_check.json").read_text())
    from models.golden import sha256_file

    assert card["template"]["sha256"] == sha256_file(PCB / "template.npz")
    assert card["verifier"]["sha256"] == sha256_file(PCB / "verifier.onnx")
    assert card["recipe"] == CHECK.as_dict()
    assert card["verifier"]["crops"]["train"]["harmless"] > 100 and card["verifier"]["crops"]["train"]["defect"] > 100
    model_card = json.loads((PCB / "model.json").read_text())
    assert model_card["template_check"] == card and model_card["test"]["template_check"] is True


def test_build_template_check_learns_the_template_cuts_labelled_crops_and_trains_the_verifier(tmp_path: Path) -> None:
    """``models build-default --check-only`` in small: a real template and a real (1-epoch) verifier, seeded."""
    from dataclasses import replace

    from models.template_check import build_template_check, learn_template

    recipe = replace(CHECK, template_parts=4, n_train=24, n_val=10, epochs=1, batch=16)
    card = build_template_check("pcb", tmp_path / "out", tmp_path / "work", recipe)
    out = tmp_path / "out"
    assert card == json.loads((out / "template_check.json").read_text())
    crops = card["verifier"]["crops"]
    assert crops["train"]["defect"] > 0 and crops["train"]["harmless"] > 0 and crops["val"]["defect"] > 0
    n_files = sum(1 for _ in (tmp_path / "work" / "verifier-data" / "train").rglob("*.png"))
    assert n_files == crops["train"]["defect"] + crops["train"]["harmless"]
    again = learn_template(SyntheticCameraConfig(product="pcb"), recipe, tmp_path / "again.npz")
    assert again.model_id == card["template"]["id"]  # seeded: the same good parts, the same template
    insp = _inspector(recipe.config(out))  # the files load as a line's template check
    assert insp.template_check is not None and insp.template_check.verifier is not None
    insp.close()
